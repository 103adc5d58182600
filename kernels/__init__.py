"""Optional custom CuPy CUDA kernels for the hot loops (never required for correctness).

- ``sense.normal``: the SENSE normal operator A^H A x (coil expansion, mask and coil combination fused around
  cuFFT, the fftshifts folded into the indices);
- ``cg.conjugate_gradient``: batched CG on (A + lam I) x = b with fused vector updates and reductions;
- ``radon.project`` / ``radon.backproject``: Joseph's ray-driven projector of the CT operators and its exact
  adjoint.

The operators call these for CUDA tensors and use their torch implementations (in ``operators``) otherwise;
``RECON_KERNELS=auto|cupy|torch`` or ``set_backend(...)`` forces a path (``dispatch``). Tensors cross to CuPy
by DLPack without copies and the kernels run on torch's current stream (``runtime``). ``cupy_usable()`` tells
whether CuPy can use a CUDA device here; without one every operator runs its pure-torch implementation.
This package imports neither ``operators`` nor ``recon``, and CuPy only when a kernel runs.
"""
from __future__ import annotations

from . import cg, dispatch, radon, sense
from .dispatch import BACKENDS, ENV, KernelsUnavailable, backend, describe, requested, set_backend, use_kernels
from .runtime import cupy_status

__all__ = ["cupy_usable", "cupy_status", "set_backend", "backend", "describe", "requested", "use_kernels", "BACKENDS", "ENV",
           "KernelsUnavailable", "dispatch", "sense", "cg", "radon"]


def cupy_usable() -> bool:
    """True when CuPy imports, can talk to at least one CUDA device and can compile kernels (cached)."""
    return cupy_status()[0]
