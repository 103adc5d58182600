"""Centered orthonormal 2-D FFTs in fastMRI's convention.

    F x     = fftshift(fft2(ifftshift(x), norm="ortho"))
    F^H k   = fftshift(ifft2(ifftshift(k), norm="ortho"))

over the last two dimensions; F is unitary, so F^H = F^{-1}.
"""
import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2-D FFT over the last two dimensions."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal inverse 2-D FFT over the last two dimensions."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)
