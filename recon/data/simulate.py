"""Simulated MRI data: phantoms, coil sensitivity maps and noisy (multi-coil) k-space.

Forward model (operators.fft convention, F the centered orthonormal 2-D FFT):
    single coil:  y   = F x + n
    multi coil:   y_c = F (S_c x) + n_c,          c = 1..C
with n i.i.d. circular complex Gaussian, E|n|^2 = noise_std^2 (real and imaginary parts each with
variance noise_std^2 / 2). A signal-to-noise ratio is defined per slice over all of its samples as

    SNR_dB = 20 log10( ||F S x||_2 / ||n||_2 ),

and ``snr_db`` sets noise_std = ||F S x||_2 / sqrt(M) * 10^(-SNR_dB / 20), M = number of samples per slice,
so the stated SNR holds in expectation (to ~1/sqrt(M) relative in any one draw).
Randomness comes only from an explicit ``generator`` (torch.Generator) or ``seed``.
"""
import math

import numpy as np
import torch

from operators.fft import fft2c

__all__ = ["coil_maps", "phantom", "simulate_multicoil", "simulate_singlecoil", "snr_to_noise_std"]


def coil_maps(n_coils, shape, kind="birdcage", radius=1.5, device=None):
    """Smooth complex coil sensitivities ``(n_coils, H, W)`` complex64 with sum_c |S_c|^2 = 1 at every pixel.

    ``kind="birdcage"``: sigpy's birdcage model, coil c at angle 2 pi c / C on a circle of ``radius``
    (relative to the half field of view), magnitude 1/distance and phase rotating with the coil angle.
    """
    if kind != "birdcage":
        raise ValueError(f"unknown coil map kind {kind!r}; available: 'birdcage'")
    if n_coils < 1 or len(shape) != 2:
        raise ValueError(f"need n_coils >= 1 and a 2-D shape, got n_coils={n_coils}, shape={shape}")
    import sigpy.mri

    s = torch.from_numpy(sigpy.mri.birdcage_maps((n_coils, *shape), r=radius, dtype=np.complex128))
    s = s / s.abs().square().sum(0).sqrt()
    return s.to(torch.complex64).to(device)


def phantom(shape, kind="shepp_logan", phase=True, seed=0, max_phase=math.pi, device=None):
    """Complex image ``(H, W)`` complex64 with magnitude in [0, 1].

    ``kind="shepp_logan"``: the modified Shepp-Logan phantom. With ``phase=True`` the image is multiplied by
    exp(i phi), phi(u, v) = sum_{i+j<=2} c_ij u^i v^j on u, v in [-1, 1], a smooth quadratic phase whose
    coefficients c_ij ~ U(-1, 1) come from ``seed`` and are scaled so max |phi| = ``max_phase``.
    """
    if kind != "shepp_logan":
        raise ValueError(f"unknown phantom kind {kind!r}; available: 'shepp_logan'")
    if len(shape) != 2:
        raise ValueError(f"phantom shape must be (H, W), got {shape}")
    import sigpy

    img = torch.from_numpy(np.abs(sigpy.shepp_logan(tuple(shape)))).to(torch.float64)
    if phase:
        g = torch.Generator().manual_seed(seed)
        c = torch.rand(6, generator=g, dtype=torch.float64) * 2 - 1
        u, v = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape), indexing="ij")
        phi = c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v
        phi = phi * (max_phase / phi.abs().max())
        img = img * torch.polar(torch.ones_like(phi), phi)
    return img.to(torch.complex64).to(device)


def snr_to_noise_std(kspace, snr_db, ndim):
    """Per-slice noise std (shape ``kspace.shape[:-ndim]``) giving ``snr_db`` over the last ``ndim`` dims."""
    signal = torch.linalg.vector_norm(kspace.flatten(-ndim), dim=-1)
    return signal / math.sqrt(math.prod(kspace.shape[-ndim:])) * 10 ** (-snr_db / 20)


def simulate_multicoil(image, maps, snr_db=None, noise_std=None, generator=None, seed=None):
    """Multi-coil k-space ``(..., C, H, W)`` = F(S x) + n from ``image (..., H, W)`` and ``maps (..., C, H, W)``.

    Give at most one of ``snr_db`` (per slice, see module docstring) and ``noise_std``; neither is noiseless.
    Noise needs ``generator`` (a torch.Generator on the image's device) or ``seed``.
    """
    return _add_noise(fft2c(maps * image.unsqueeze(-3)), 3, snr_db, noise_std, generator, seed)


def simulate_singlecoil(image, snr_db=None, noise_std=None, generator=None, seed=None):
    """Single-coil k-space ``(..., H, W)`` = F x + n; arguments as in :func:`simulate_multicoil`."""
    return _add_noise(fft2c(image), 2, snr_db, noise_std, generator, seed)


def _add_noise(kspace, ndim, snr_db, noise_std, generator, seed):
    if snr_db is not None and noise_std is not None:
        raise ValueError("give snr_db or noise_std, not both")
    if snr_db is None and noise_std is None:
        return kspace
    if (generator is None) == (seed is None):
        raise ValueError("noise needs exactly one of generator= (torch.Generator) or seed=")
    if generator is None:
        generator = torch.Generator(device=kspace.device).manual_seed(seed)
    if snr_db is not None:
        std = snr_to_noise_std(kspace, snr_db, ndim).reshape(*kspace.shape[:-ndim], *[1] * ndim)
    else:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        std = noise_std
    noise = torch.randn(kspace.shape, dtype=kspace.dtype, device=kspace.device, generator=generator)
    return kspace + std * noise


def raw_fastmri_slices(images, n_coils: int = 15, encoded=(640, 372), recon=(320, 320), dead=(2, 2),
                       snr_db: float = 30.0, seed: int = 0):
    """Multi-coil k-space at fastMRI's raw geometry from complex images (S, h, w) placed in the middle of the
    encoded field: readout (H) oversampled (the object lies inside the central ``recon[0]`` rows), phase-encode
    width ``encoded[1]`` with ``dead`` = (left, right) lines exactly zero, birdcage coils, noise at ``snr_db``.

    Returns (kspace (S, C, H, W) complex64, target (S, *recon) float32: the RSS of the fully sampled data centre-
    cropped as fastMRI computes ``reconstruction_rss``, encoding limits (center, maximum) for the header)."""
    from operators.fft import ifft2c
    from recon.data.coils import center_crop, rss

    images = torch.as_tensor(images).to(torch.complex64)
    s, h, w = images.shape
    H, W = encoded
    if h > H or w > W:
        raise ValueError(f"images of {(h, w)} do not fit in the encoded field {tuple(encoded)}")
    canvas = torch.zeros(s, H, W, dtype=torch.complex64)
    top, left = H // 2 - h // 2, W // 2 - w // 2
    canvas[:, top:top + h, left:left + w] = images
    maps = coil_maps(n_coils, (H, W))
    k = simulate_multicoil(canvas, maps, snr_db=snr_db, seed=seed)
    lo, hi = dead
    if lo:
        k[..., :lo] = 0
    if hi:
        k[..., W - hi:] = 0
    target = center_crop(rss(ifft2c(k)), tuple(recon))
    acquired = W - lo - hi
    return k, target.float(), (W // 2 - lo, acquired - 1)


def write_raw_fastmri(path, images, n_coils: int = 15, encoded=(640, 372), recon=(320, 320), dead=(2, 2),
                      mask=None, sizes: bool = True, snr_db: float = 30.0, seed: int = 0, acquisition="CORPD_FBK"):
    """Write a file laid out as fastMRI's converter writes them, with plain h5py (not ``write_fastmri``), from
    complex images (S, h, w) at raw geometry (``raw_fastmri_slices``): ``kspace``, ``reconstruction_rss`` and
    the ``max`` attribute, or, with a (1, W) ``mask``, a test file holding only the acquired lines, its ``mask``
    and no target; the ISMRMRD header names the encoded and recon matrices (omitted with ``sizes=False``) and
    the encoding limits. Returns the path."""
    import h5py

    k, target, (center, maximum) = raw_fastmri_slices(images, n_coils, encoded, recon, dead, snr_db, seed)
    ns = "http://www.ismrm.org/ISMRMRD"
    space = "".join(f"<{tag}><matrixSize><x>{m[0]}</x><y>{m[1]}</y><z>1</z></matrixSize></{tag}>"
                    for tag, m in (("encodedSpace", encoded), ("reconSpace", recon))) if sizes else ""
    xml = (f'<?xml version="1.0"?><ismrmrdHeader xmlns="{ns}"><encoding>{space}<encodingLimits>'
           f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
           f"</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>")
    with h5py.File(path, "w") as f:
        if mask is None:
            f.create_dataset("kspace", data=k.numpy().astype(np.complex64))
            f.create_dataset("reconstruction_rss", data=target.numpy())
            f.attrs["max"] = float(target.max())
        else:
            m = torch.as_tensor(mask, dtype=torch.float32).reshape(1, -1)
            f.create_dataset("kspace", data=(k * m).numpy().astype(np.complex64))
            f.create_dataset("mask", data=m.numpy().reshape(-1))
        f.create_dataset("ismrmrd_header", data=xml)
        f.attrs["acquisition"] = acquisition
    return path
