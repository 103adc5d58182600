"""Non-Cartesian multi-coil MRI: SENSE with a non-uniform Fourier transform.

For an image x (H, W) with centred pixel coordinates r = (i - H//2, j - W//2), coil maps S_c and a trajectory of
K frequencies omega_k (radians per sample, (row, column), in [-pi, pi); ``operators.trajectories``):

    y_ck = (A x)_ck = 1/sqrt(H W) sum_r exp(-i omega_k . r) S_c(r) x(r)                       (forward)
    (A^H y)(r)      = 1/sqrt(H W) sum_c conj(S_c(r)) sum_k exp(+i omega_k . r) y_ck          (adjoint)

the non-uniform analogue of ``fft2c`` (centred, e^{-i k.r}, orthonormal): on the grid frequencies
omega = 2 pi (u - H//2) / H it is exactly ``MultiCoilMRI`` with a full mask. The transforms run through a NUFFT
library (``operators.nufft``: finufft on the CPU, torchkbnufft on other devices; ``backend=`` swaps them).

**Normal operator by Toeplitz embedding** (Wajer & Pruessmann, ISMRM 2001; Fessler et al., IEEE TSP 53:3393,
2005). A^H A is a sum over coils of conj(S_c) T (S_c x) with T the convolution

    (T v)(r) = 1/(H W) sum_r' P(r - r') v(r'),    P(d) = sum_k exp(+i omega_k . d),  |d_row| < H, |d_col| < W,

which is a circular convolution on the twice-oversampled grid (2H, 2W): zero-pad v, FFT, multiply by the FFT of
P (computed once, by one adjoint NUFFT of ones onto the 2H x 2W grid, in double precision), inverse FFT, crop.
Only FFTs remain, on any device. P is Hermitian (P(-d) = conj P(d)); its lag -H row and -W column, which no
pair of pixels uses, are set to 0, so the kernel's spectrum is real and the operator exactly Hermitian.

Shapes: maps ``(..., C, H, W)`` (leading dims, e.g. slices, share the trajectory), x ``(..., H, W)``, y
``(..., C, K)`` with the trajectory's leading dims (spokes, samples) flattened into K in C order (readout by
readout). Any further leading dims of x and y are batch dims (posterior samples).

The operator contract (``operators.linop``): ``norm()`` by power iteration on the Toeplitz normal operator;
``pinv(y)`` is ``pinv_iter`` CG steps on A^H A x = A^H y (``pinv_method="cg"``, the default) or the
density-compensated gridding image sum_c conj(S_c) A_c^H (w y_c) / sum_c |S_c|^2 (``"gridding"``, needs ``dcf``);
``support`` is where sum_c |S_c|^2 > 0. Density weights ``dcf`` (one per trajectory point) enter only the
gridding pseudo-inverse and the calibration of coil maps; A itself is the unweighted model of the data.

``calibration_maps`` estimates ESPIRiT maps from non-Cartesian data as the field does for radial and spiral scans
(BART: an inverse NUFFT of each coil, ``nufft -i``, then ``ecalib``; sigpy's examples grid with density
compensation before ``EspiritCalib``): Cartesian k-space of each coil from a few density-preconditioned CG
steps of the inverse NUFFT (``coil_images``; plain gridding leaves ~10% errors in the centre of k-space, from the
density weights' smoothing near DC, and ESPIRiT then crops nothing), then ESPIRiT (``operators.espirit``) on the
centred box whose every grid cell holds a trajectory point (radial: inside the disc where neighbouring spokes are
at most a cell apart, about n_spokes / pi cells in radius).
"""
from __future__ import annotations

import math

import torch

from . import checks, espirit, trajectories
from .fft import fft2c
from .linop import Linop, ShapeError, check_shape
from .nufft import BACKENDS, Plan

__all__ = ["NonCartesianMRI", "calibration_maps", "coil_images", "calibration_width", "toeplitz_spectrum"]

PINV_METHODS = ("cg", "gridding")


def _as_maps(maps) -> torch.Tensor:
    maps = checks.as_tensor("maps", maps)
    if maps.dim() < 3:
        raise ShapeError(f"maps must have shape (..., C, H, W), got {tuple(maps.shape)}")
    if not maps.is_complex():
        maps = maps.to(torch.complex64)
    checks.check_finite_tensor("maps", maps)
    return maps


class NonCartesianMRI(Linop):
    """y_ck = NUFFT(S_c x)(omega_k) (module docstring) with a Toeplitz normal operator.

    ``maps`` (..., C, H, W) complex; ``trajectory`` (..., K, 2) radians per sample in [-pi, pi); ``dcf`` density
    weights shaped like the trajectory's leading dims or flat (K,); ``backend`` "auto", "finufft" or
    "torchkbnufft"; ``eps`` the NUFFT's requested accuracy (finufft); ``toeplitz=False`` computes A^H A as
    adjoint-of-forward; ``pinv_method`` "cg" or "gridding"."""

    sampling = "non-cartesian"

    def __init__(self, maps, trajectory, dcf=None, backend: str = "auto", eps: float = 1e-6, toeplitz: bool = True,
                 pinv_method: str = "cg", pinv_iter: int = 30):
        self.maps = _as_maps(maps)
        self.trajectory = trajectories.check_trajectory(trajectory)
        self.dcf = None if dcf is None else trajectories.check_density(dcf, self.trajectory).to(torch.float32)
        checks.check_choice("NUFFT backend", backend, ("auto",) + tuple(BACKENDS))
        checks.check_real("eps", eps, minimum=1e-14, maximum=1e-1)
        checks.check_choice("pinv_method", pinv_method, PINV_METHODS)
        if pinv_method == "gridding" and self.dcf is None:
            raise ValueError("pinv_method='gridding' needs the density weights (dcf=...; "
                             "operators.trajectories.density_compensation computes them)")
        self.pinv_method = pinv_method
        self.pinv_iter = checks.check_int("pinv_iter", pinv_iter, 1, 100_000)
        self.backend, self.eps, self.toeplitz = backend, eps, bool(toeplitz)
        lead, (c, h, w) = tuple(self.maps.shape[:-3]), tuple(self.maps.shape[-3:])
        self.n_points = math.prod(self.trajectory.shape[:-1])
        super().__init__(lead + (h, w), lead + (c, self.n_points))
        omega = self.trajectory.detach().reshape(-1, 2).to("cpu", torch.float64)
        self._plan = Plan(omega, (h, w), backend, eps)
        self._kernels: dict = {}

    # --- shapes ------------------------------------------------------------------------------
    @property
    def n_coils(self) -> int:
        return self.maps.shape[-3]

    @property
    def image_shape(self) -> tuple:
        return tuple(self.maps.shape[-2:])

    def backend_for(self, device="cpu") -> str:
        """The NUFFT library this operator uses for tensors on ``device``."""
        return self._plan.backend_for(device)

    # --- applications ------------------------------------------------------------------------
    def _scale(self) -> float:
        return 1.0 / math.sqrt(math.prod(self.image_shape))

    def _coil_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.to(x.device) * x.unsqueeze(-3)

    def _nufft(self, v: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., K) for every leading index (coils included)."""
        flat = v.reshape((-1,) + tuple(v.shape[-2:]))
        return (self._plan.forward(flat) * self._scale()).reshape(tuple(v.shape[:-2]) + (self.n_points,))

    def _nufft_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., H, W) for every leading index."""
        flat = y.reshape(-1, y.shape[-1])
        return (self._plan.adjoint(flat) * self._scale()).reshape(tuple(y.shape[:-1]) + self.image_shape)

    def _apply(self, x):
        return self._nufft(self._coil_images(x))

    def _adjoint(self, y):
        maps = self.maps.to(y.device)
        return (maps.conj() * self._nufft_adjoint(y)).sum(dim=-3)

    def noise_std(self, y):
        """Noise std of the samples ``y`` (..., C, K) per batch element, from the rings of |omega| with the
        least energy (``operators.mri.grouped_noise_std``: 8 rings of equal width out to the largest |omega|,
        halves by the parity of the sample index, all coils together)."""
        from .mri import NOISE_BLOCKS, grouped_noise_std
        y = checks.as_tensor(f"the input of {self.name}.noise_std", y)
        check_shape(y, self.oshape, f"{self.name}.noise_std")
        radius = self.trajectory.detach().reshape(-1, 2).to(y.device, torch.float64).norm(dim=-1)
        top = float(radius.max()) * (1 + 1e-9) or 1.0
        idx = torch.arange(radius.numel(), device=y.device)

        def rings(n):
            return (radius / top * n).long().clamp_max(n - 1), n
        e = y.abs().square()
        return grouped_noise_std(e, torch.ones_like(e, dtype=torch.bool), rings, (idx % 2).bool(), NOISE_BLOCKS)

    def _normal(self, x):
        if not self.toeplitz:
            return self._adjoint(self._apply(x))
        maps = self.maps.to(x.device)
        v = maps * x.unsqueeze(-3)
        return (maps.conj() * embedded_convolution(v, self.toeplitz_kernel(v.device, v.dtype))).sum(dim=-3)

    def toeplitz_kernel(self, device="cpu", dtype=torch.complex64) -> torch.Tensor:
        """The real spectrum (2H, 2W) of the embedded convolution T (module docstring), scaled by 1/(H W)."""
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        key = (torch.device(device), real)
        if key not in self._kernels:
            if "double" not in self._kernels:
                self._kernels["double"] = toeplitz_spectrum(self._plan.omega, self.image_shape, self.backend)
            self._kernels[key] = self._kernels["double"].to(device, real)
        return self._kernels[key]

    # --- the operator contract ----------------------------------------------------------------
    @property
    def support(self) -> torch.Tensor:
        return self.maps.abs().square().sum(dim=-3) > 0

    def gridding(self, y: torch.Tensor) -> torch.Tensor:
        """Density-compensated SENSE-combined adjoint sum_c conj(S_c) A_c^H (w y_c) / sum_c |S_c|^2."""
        if self.dcf is None:
            raise ValueError(f"{self.name}: gridding needs the density weights (dcf=...)")
        y = checks.as_tensor(f"the input of {self.name}.gridding", y)
        check_shape(y, self.oshape, f"{self.name}.gridding")
        maps = self.maps.to(y.device)
        coils = self._nufft_adjoint(y * self.dcf.to(y.device))
        wsum = maps.abs().square().sum(dim=-3)
        inv = torch.where(wsum > 0, 1 / torch.where(wsum > 0, wsum, torch.ones_like(wsum)), torch.zeros_like(wsum))
        return (maps.conj() * coils).sum(dim=-3) * inv

    def _pinv(self, y):
        if self.pinv_method == "gridding":
            return self.gridding(y)
        return super()._pinv(y)

    def to(self, *args, **kwargs) -> "NonCartesianMRI":
        new = super().to(*args, **kwargs)
        new._kernels = self._kernels  # the kernel spectrum depends on the trajectory only
        return new


def toeplitz_spectrum(omega: torch.Tensor, shape: tuple, backend: str = "auto", weights=None) -> torch.Tensor:
    """float64 (2H, 2W) real spectrum of T_w v = 1/(H W) sum_r' P_w(r - r') v(r'), P_w(d) = sum_k w_k e^{+i omega_k.d}
    (w = 1 without ``weights``), computed by one adjoint NUFFT onto the 2H x 2W grid in double precision."""
    h, w = shape
    plan = Plan(omega, (2 * h, 2 * w), backend, 1e-9)
    ones = torch.ones(1, len(omega), dtype=torch.complex128) if weights is None else \
        weights.reshape(1, -1).to("cpu", torch.complex128)
    psf = plan.adjoint(ones)[0]  # P_w(d) at index d + (H, W)
    psf[0, :] = 0  # lag -H (and -W): no pair of pixels is that far apart
    psf[:, 0] = 0
    return torch.fft.fft2(torch.fft.ifftshift(psf)).real / (h * w)


def embedded_convolution(v: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """T v for images v (..., H, W): zero-pad to the spectrum's (2H, 2W), multiply in Fourier space, crop."""
    h, w = v.shape[-2:]
    return torch.fft.ifft2(torch.fft.fft2(v, s=tuple(spectrum.shape)) * spectrum)[..., :h, :w]


# --------------------------------------------------------------------------- coil maps


def coil_images(y, trajectory, shape, dcf, n_iter: int = 10) -> torch.Tensor:
    """Coil images (..., C, H, W) from samples (..., C, K): ``n_iter`` CG steps on the density-weighted normal
    equations F^H W F x_c = F^H W y_c (an inverse NUFFT preconditioned by the density weights W, in the manner of
    BART's ``nufft -i``); ``n_iter=0`` is plain gridding, F^H W y_c. Where the trajectory samples k-space densely
    (the centre) the result's Fourier transform converges to the coil's Cartesian k-space within a few steps;
    gridding alone leaves errors of ~10% there, from the smoothing of the density weights near DC."""
    from .cg import conjugate_gradient

    y = checks.as_tensor("the samples", y, complex_only=True)
    h, w = trajectories._image_size(shape)
    checks.check_int("n_iter", n_iter, 0, 10_000)
    op = NonCartesianMRI(torch.ones((1, h, w), dtype=torch.complex64), trajectory, dcf=dcf)
    if y.shape[-1] != op.n_points:
        raise ShapeError(f"the samples must have K={op.n_points} points per coil (the trajectory's), got shape "
                         f"{tuple(y.shape)}")
    weights = op.dcf.to(y.device)
    b = op._nufft_adjoint(y * weights)
    if n_iter == 0:
        return b
    spectrum = toeplitz_spectrum(op._plan.omega, (h, w), weights=op.dcf).to(y.device, y.real.dtype)
    return conjugate_gradient(lambda v: embedded_convolution(v, spectrum), b, max_iter=n_iter, ndim=2)


def calibration_width(trajectory, shape, max_calib: int = 24) -> int:
    """Side of the largest centred square (at most ``max_calib``) of the (H, W) grid whose every cell holds a
    trajectory point (``trajectories.sampled_cells``); 0 if not even the DC cell does."""
    hit = trajectories.sampled_cells(trajectory, shape)
    h, w = hit.shape
    for width in range(min(max_calib, h, w), 0, -1):
        r0, c0 = h // 2 - width // 2, w // 2 - width // 2  # the box ESPIRiT calibrates on
        if hit[r0:r0 + width, c0:c0 + width].all():
            return width
    return 0


def calibration_maps(y, trajectory, shape, dcf=None, max_calib: int = 24, crop: float = 0.95, n_iter: int = 10,
                     **kw) -> torch.Tensor:
    """ESPIRiT maps (..., C, H, W) from non-Cartesian samples (..., C, K) (module docstring): the Cartesian k-space
    of every coil (``coil_images`` with ``n_iter`` CG steps, then ``fft2c``), calibrated on the fully sampled
    centred box (``calibration_width``, at least 4 x 4) with a kernel width that scales with it, as
    ``espirit.maps_for_mask`` does. ``dcf`` defaults to ``trajectories.density_compensation``."""
    t = trajectories.check_trajectory(trajectory)
    if dcf is None:
        dcf = trajectories.density_compensation(t, shape)
    width = calibration_width(t, shape, max_calib)
    if width < 4:
        raise ValueError(f"the trajectory fully samples a centred box of only {width} x {width} grid cells of the "
                         f"{tuple(shape)[-2:]} image; ESPIRiT needs at least 4 x 4 (more spokes or interleaves)")
    kspace = fft2c(coil_images(y, t, shape, dcf, n_iter))
    return espirit.maps(kspace, calib_width=width, kernel_width=min(6, max(3, width // 3 + 1)), crop=crop, **kw)

