"""Partial Fourier completion by projection onto convex sets (POCS; Haacke et al., JMR 1991).

An asymmetric acquisition (partial Fourier in the phase encoding, asymmetric echo in the readout) measures one half
of k-space and a band around its centre. For an image with a smooth phase phi, k-space is conjugate symmetric up to
that phase, so the missing part follows from the measured one:

    phi  = angle(F^H (w k))               w: a Hann window over the symmetrically sampled centre
    repeat: x = |F^H k| e^{i phi};  k_new = F x;  k = measured samples where acquired, k_new elsewhere

per coil, with the toolkit's centred orthonormal FFT. Only the positions whose conjugate partner (the point
mirrored through the k-space centre, index N // 2 of each axis) was measured are filled; everything else stays
as it was. This is the completion Gadgetron's GenericReconPartialFourierHandlingPOCSGadget and BART's ``pocs``
style tools apply; zero-filling (leaving the missing samples to the reconstruction, as a prospective mask does
for every sampler and classical method here) is the other choice.
"""
from __future__ import annotations

import torch

from operators.fft import fft2c, ifft2c


def mirrored(acquired: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: whether the point mirrored through the centre (2 (N // 2) - i along each axis) is acquired."""
    out = acquired
    for dim in (0, 1):
        n = out.shape[dim]
        flipped = out.flip(dim)
        if n % 2 == 0:  # mirror of i is n - i: index 0 has none
            shifted = torch.zeros_like(flipped)
            shifted.narrow(dim, 1, n - 1).copy_(flipped.narrow(dim, 0, n - 1))
            flipped = shifted
        out = flipped
    return out


def _window(acquired_1d: torch.Tensor) -> torch.Tensor:
    """A Hann window over the centred run of symmetric samples along one axis (zero outside it)."""
    n = acquired_1d.shape[0]
    c = n // 2
    d = 0
    while c - d - 1 >= 0 and c + d + 1 < n and acquired_1d[c - d - 1] and acquired_1d[c + d + 1]:
        d += 1
    w = torch.zeros(n, dtype=torch.float32)
    if acquired_1d[c]:
        w[c - d:c + d + 1] = torch.hann_window(2 * d + 3, periodic=False)[1:-1]
    return w


def pocs(kspace: torch.Tensor, acquired: torch.Tensor, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete ``kspace`` (C, H, W) measured where ``acquired`` (H, W) is True; returns (k-space, filled (H, W)),
    filled = acquired | mirrored(acquired)."""
    acquired = acquired.bool()
    symmetric = acquired & mirrored(acquired)
    window = _window(symmetric.any(1)).to(kspace.device)[:, None] * _window(symmetric.any(0)).to(kspace.device)[None]
    phase = torch.exp(1j * torch.angle(ifft2c(kspace * (window * symmetric).to(kspace.dtype))))
    filled = acquired | mirrored(acquired)
    k = kspace.clone()
    for _ in range(iterations):
        x = ifft2c(k).abs() * phase
        k = torch.where(acquired, kspace, torch.where(filled, fft2c(x.to(kspace.dtype)), torch.zeros_like(k)))
    return k, filled
