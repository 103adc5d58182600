"""Coil combination, cropping and zero-filled reconstruction.

FFTs follow the toolkit's centered orthonormal convention (``operators.fft``):
    F^H k = fftshift(ifft2(ifftshift(k), norm="ortho")) over the last two dimensions.
"""
from __future__ import annotations

import torch

from operators.fft import ifft2c


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares combination: sqrt(sum_c |x_c|^2) over `dim` (real output)."""
    return coil_images.abs().square().sum(dim).sqrt()


def sense_combine(coil_images: torch.Tensor, maps: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """SENSE combination (the "MVUE" of Jalal et al. 2021): sum_c conj(S_c) x_c / sqrt(sum_c |S_c|^2).

    For maps normalised to sum_c |S_c|^2 = 1 this is the least-squares image x of x_c = S_c x.
    Pixels where all maps vanish give 0.
    """
    numerator = (maps.conj() * coil_images).sum(dim)
    norm = maps.abs().square().sum(dim).sqrt()
    return numerator / torch.where(norm > 0, norm, torch.ones_like(norm))


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The central `shape` = (h, w) of the last two dims (fastMRI's offsets: (H - h) // 2, (W - w) // 2)."""
    h, w = shape
    H, W = x.shape[-2:]
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"center_crop: cannot crop an image of size {(H, W)} to {(h, w)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def zero_filled(kspace: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-filled reconstruction of (..., C, H, W) k-space: F^H per coil, then RSS (real) or, given maps,
    SENSE combination (complex)."""
    images = ifft2c(kspace)
    return rss(images) if maps is None else sense_combine(images, maps)
