"""Forward operators: what the scanner measures (y = A x + n).

Never imports ``recon``; kernels are used through dispatch where present, never required.
"""
from .linop import Linop, Identity, Scaled, Multiply, ShapeError, adjoint_error, inner
from .fft import fft2c, ifft2c
from .mri import SingleCoilMRI, MultiCoilMRI, CoilwiseMRI
from .cg import conjugate_gradient, solve_normal
from .ct import ParallelBeamCT, FanBeamCT, fbp
from .noncartesian import NonCartesianMRI
from . import masks, espirit, trajectories, nufft

__all__ = [
    "Linop", "Identity", "Scaled", "Multiply", "ShapeError", "adjoint_error", "inner",
    "fft2c", "ifft2c", "SingleCoilMRI", "MultiCoilMRI", "CoilwiseMRI",
    "conjugate_gradient", "solve_normal", "masks", "espirit", "ParallelBeamCT", "FanBeamCT", "fbp",
    "NonCartesianMRI", "trajectories", "nufft",
]
