"""ESPIRiT coil sensitivity maps (Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating
parallel MRI: where SENSE meets GRAPPA", MRM 71:990-1001, 2014).

From the fully sampled calibration region (the central ``calib_width`` x ``calib_width`` of k-space):

1. Calibration matrix A: every ``kernel_width`` x ``kernel_width`` patch of the calibration region, all
   coils stacked, is one row (length C k^2). Its SVD A = U S V^H; the rows of V^H with singular value
   s > threshold * s_max span the signal subspace and serve as k-space kernels v_j.
2. Each kernel, zero-padded to the image size and inverse-FFT'd, gives image-space kernels a_j(r) in C^C.
   The per-pixel C x C matrix  G(r) = (N / k^2) sum_j a_j(r) a_j(r)^H  (N = H W) has the coil
   sensitivities s(r) as eigenvector with eigenvalue ~1 inside the object.
3. The maps are the top eigenvector of G(r) (power iteration from the all-ones vector, ``max_iter``
   steps), phase-normalised so coil 0 is real and positive, and set to zero where the top eigenvalue
   is not above ``crop``. Each non-zero map pixel has sum_c |S_c|^2 = 1.

Two backends give the same maps: ``"sigpy"`` wraps ``sigpy.mri.app.EspiritCalib`` (CPU, one slice at a
time; sigpy's centered orthonormal FFT is the one of ``operators.fft``), and ``"torch"`` is a batched
implementation that runs on the input's device. The torch backend takes V from the eigendecomposition
of A^H A (eigenvalues s^2) in double precision, and forms G(r) without the C x k^2 image-space kernels: a_j(r) a_j(r)^H is, entry by entry, the inverse FFT of the cross-correlation of the
k-space kernels, which has support (2k-1)^2, so one inverse FFT per coil pair suffices.
"""
import math

import numpy as np
import torch

from . import checks

__all__ = ["maps"]

_CHUNK_ELEMENTS = 2**27  # complex entries of G(r) (C^2 H W per slice) processed at once: 1 GiB


def maps(kspace, calib_width=24, threshold=0.02, kernel_width=6, crop=0.95, max_iter=100, backend="auto"):
    """ESPIRiT sensitivity maps ``(..., C, H, W)`` complex64 from k-space ``(..., C, H, W)``.

    Only the central ``calib_width`` x ``calib_width`` region of k-space is used; it must be fully sampled.
    ``backend``: ``"torch"`` (batched, on the input's device), ``"sigpy"`` (CPU, slice by slice) or
    ``"auto"``, which is ``"torch"`` everywhere: it matches sigpy to ~1e-5 and is faster, also on the CPU
    (15 x 320 x 320 on 2 cores: 1.7 s against sigpy's 8.7 s).
    The result is on the input's device. k-space must be complex (a real image is refused; NumPy arrays are
    converted, complex128 is computed in complex64 like every map).
    """
    kspace = checks.as_tensor("ESPIRiT k-space", kspace, complex_only=True)
    _check(kspace, calib_width, threshold, kernel_width, crop, max_iter, backend)
    kspace = kspace.to(torch.complex64)
    lead, (C, H, W) = kspace.shape[:-3], kspace.shape[-3:]
    flat = kspace.reshape(-1, C, H, W)
    args = (calib_width, threshold, kernel_width, crop, max_iter)
    if backend == "sigpy":
        out = torch.stack([_sigpy_maps(k, *args) for k in flat]).to(kspace.device)
    else:
        per_chunk = max(1, _CHUNK_ELEMENTS // (C * C * H * W))
        out = torch.cat([_torch_maps(k, *args) for k in flat.split(per_chunk)])
    return out.reshape(*lead, C, H, W)


def _check(kspace, calib_width, threshold, kernel_width, crop, max_iter, backend):
    if backend not in ("auto", "sigpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'sigpy' or 'torch', got {backend!r}")
    if kspace.ndim < 3:
        raise ValueError(f"k-space must have shape (..., C, H, W) with rank >= 3, got shape {tuple(kspace.shape)}")
    checks.check_real("threshold", threshold, above=0.0, below=1.0)
    checks.check_real("crop", crop, minimum=0.0, below=1.0)
    checks.check_int("max_iter", max_iter, 1, 10_000)
    H, W = kspace.shape[-2:]
    if not (checks.is_int(calib_width) and 1 <= calib_width <= min(H, W)):
        raise ValueError(f"calib_width={calib_width!r} must be an integer between 1 and the k-space size {H}x{W}")
    if not (checks.is_int(kernel_width) and 1 <= kernel_width <= calib_width):
        raise ValueError(f"kernel_width={kernel_width!r} must be an integer between 1 and calib_width={calib_width}")
    if not torch.isfinite(torch.view_as_real(kspace.to(torch.complex64))).all():
        raise ValueError("k-space contains NaN or Inf")
    calib = _calibration_region(kspace, calib_width)
    empty = (calib == 0).flatten(-3).all(-1)
    if empty.any():
        raise ValueError(
            f"calibration region (central {calib_width}x{calib_width}) is not sampled (all zeros) "
            f"in {int(empty.sum())} of {empty.numel()} slice(s); pass fully sampled centre k-space"
        )


def _calibration_region(kspace, width):
    """Central width x width of k-space, the same crop as sigpy.resize (starting at n//2 - width//2)."""
    H, W = kspace.shape[-2:]
    r0, c0 = H // 2 - width // 2, W // 2 - width // 2
    return kspace[..., r0:r0 + width, c0:c0 + width]


def _sigpy_maps(kspace, calib_width, threshold, kernel_width, crop, max_iter):
    from sigpy.mri.app import EspiritCalib

    ksp = kspace.detach().cpu().numpy().astype(np.complex64)
    mps = EspiritCalib(ksp, calib_width=calib_width, thresh=threshold, kernel_width=kernel_width,
                       crop=crop, max_iter=max_iter, show_pbar=False).run()
    return torch.from_numpy(np.nan_to_num(mps).astype(np.complex64))


def _torch_maps(kspace, calib_width, threshold, kernel_width, crop, max_iter):
    """Batched ESPIRiT on ``(B, C, H, W)``, steps as in the module docstring."""
    B, C, H, W = kspace.shape
    k = kernel_width
    # 1. calibration matrix (B, patches, C k^2) and its signal-subspace kernels (B, n_kernels, C, k, k)
    calib = _calibration_region(kspace, calib_width)
    patches = calib.unfold(-2, k, 1).unfold(-2, k, 1)  # (B, C, P, P, k, k)
    mat = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, C * k * k)
    # right singular vectors of mat = eigenvectors of mat^H mat (eigenvalues s^2, ascending), in double
    s2, v = torch.linalg.eigh(mat.mH.to(torch.complex128) @ mat.to(torch.complex128))
    keep = s2 > threshold**2 * s2[:, -1:]  # per slice; dropped kernels get weight 0 so slices batch together
    kernels = (v.mH * keep[..., None]).to(kspace.dtype).reshape(B, -1, C, k, k)
    # 2. G(r) = sqrt(N)/k^2 * ifft2c(g), with g_cd(t) = sum_j sum_q v_jc(q + t) conj(v_jd(q)), |t| < k.
    #    ifftshift(g) puts lag t at index t mod n, so G is computed in fftshift'ed pixel order and the
    #    per-pixel step 3 is followed by one fftshift of the maps.
    L = 2 * k - 1
    kf = torch.fft.fft2(kernels, s=(L, L))
    g = torch.fft.ifft2(torch.einsum("bjcxy,bjdxy->bcdxy", kf, kf.conj()))  # lag t at index t mod L
    g = g * (math.sqrt(H * W) / k**2)
    lags = torch.arange(L, device=g.device)
    lags = torch.where(lags < k, lags, lags - L)
    g = g.new_zeros(B, C, C, H, L).index_add_(-2, lags % H, g)  # wraps if 2k - 1 > H or W
    g = g.new_zeros(B, C, C, H, W).index_add_(-1, lags % W, g)
    gram = torch.fft.ifft2(g, norm="ortho").permute(0, 3, 4, 1, 2).contiguous()  # (B, H, W, C, C)
    # 3. top eigenvector by power iteration from ones, as sigpy.alg.PowerMethod
    x = torch.ones(B, H, W, C, 1, dtype=gram.dtype, device=gram.device)
    for _ in range(int(max_iter)):
        y = gram @ x
        eig = torch.view_as_real(y).square().sum((-3, -2, -1)).sqrt()[..., None, None]
        x = y / eig.clamp_min(torch.finfo(torch.float32).tiny)
    x = torch.fft.fftshift(x[..., 0].permute(0, 3, 1, 2), dim=(-2, -1))  # (B, C, H, W)
    eig = torch.fft.fftshift(eig[..., 0, 0], dim=(-2, -1))
    x = x * torch.sgn(x[:, :1]).conj()
    return x * (eig > crop)[:, None]


def maps_for_mask(kspace, mask, crop=0.95, max_calib=24, **kw):
    """ESPIRiT maps from undersampled k-space, sized to the mask's fully sampled calibration region.

    The calibration width is the mask's calibration size (at most ``max_calib``, at least 4); the kernel
    width scales with it (width // 3 + 1, between 3 and 6), so small calibration regions (e.g. 10 lines)
    still give well-conditioned kernels."""
    from .masks import calibration_size

    calib = [c for c in calibration_size(torch.as_tensor(mask).cpu()) if c]
    if not calib or min(calib) < 4:
        raise ValueError(f"the mask has no fully sampled calibration region of at least 4 lines "
                         f"(found {tuple(calib)}); ESPIRiT needs one")
    width = min(max_calib, min(calib))
    return maps(kspace, calib_width=width, kernel_width=min(6, max(3, width // 3 + 1)), crop=crop, **kw)
