"""Unconditional sampling from a prior, written once in sigma-space (Karras et al. 2022; Song et al. 2021).

- ``ddim``: DDIM with stochasticity eta in VE form (see ``ddim_step``); eta = 0 is the deterministic DDIM
  (the Euler step of the probability-flow ODE), eta = 1 ancestral (DDPM) sampling.
- ``heun``: EDM's deterministic second-order sampler.
- ``predictor_corrector``: reverse-diffusion predictor + Langevin corrector (Song et al., ICLR 2021).

All functions take the prior, a shape (..., H, W), a decreasing sigma schedule and a ``torch.Generator``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


def _noise(shape, like_complex: bool, generator: torch.Generator, device) -> torch.Tensor:
    dtype = torch.complex64 if like_complex else torch.float32
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def _check(x: torch.Tensor, i: int, sigma: float) -> None:
    if not torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all():
        raise FloatingPointError(f"non-finite values in the iterate at step {i} (sigma={sigma:.4g})")


def ddim_step(x, denoised, sigma, sigma_next, eta: float, noise: Optional[torch.Tensor]):
    """One DDIM step in VE coordinates (Song, Meng & Ermon 2021, Eq. 12 with x_vp = sqrt(abar) x_ve).

    sigma_tilde^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 is the injected noise; the remaining
    sqrt(sigma_next^2 - sigma_tilde^2) follows the predicted noise direction."""
    eps = (x - denoised) / sigma
    s_tilde = eta * sigma_next * (max(sigma ** 2 - sigma_next ** 2, 0.0)) ** 0.5 / sigma
    out = denoised + (max(sigma_next ** 2 - s_tilde ** 2, 0.0)) ** 0.5 * eps
    if s_tilde > 0 and noise is not None:
        out = out + s_tilde * noise
    return out


@torch.no_grad()
def ddim(prior, shape, sigmas: torch.Tensor, eta: float = 0.0, generator: Optional[torch.Generator] = None,
         complex_valued: Optional[bool] = None, device=None, callback: Optional[Callable] = None) -> torch.Tensor:
    """DDIM / ancestral sampling over ``sigmas`` (decreasing); the last step returns the Tweedie estimate."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    cplx = prior.channels != "real" if complex_valued is None else complex_valued
    sig = [float(s) for s in sigmas]
    x = _noise(shape, cplx, g, device) * sig[0]
    for i, s in enumerate(sig):
        d = prior.denoise(x, s)
        if callback is not None:
            callback(i, s, x, d)
        if i == len(sig) - 1:
            return d
        z = _noise(shape, cplx, g, device) if eta > 0 else None
        x = ddim_step(x, d, s, sig[i + 1], eta, z)
        _check(x, i, s)
    return x


@torch.no_grad()
def heun(prior, shape, sigmas: torch.Tensor, generator: Optional[torch.Generator] = None,
         complex_valued: Optional[bool] = None, device=None) -> torch.Tensor:
    """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1), ending with a denoising step."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    cplx = prior.channels != "real" if complex_valued is None else complex_valued
    sig = [float(s) for s in sigmas]
    x = _noise(shape, cplx, g, device) * sig[0]
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        d = (x - prior.denoise(x, s)) / s
        x_e = x + (sn - s) * d
        d2 = (x_e - prior.denoise(x_e, sn)) / sn
        x = x + (sn - s) * (d + d2) / 2
        _check(x, i, s)
    return prior.denoise(x, sig[-1])


@torch.no_grad()
def predictor_corrector(prior, shape, sigmas: torch.Tensor, snr: float = 0.16, n_corrector: int = 1,
                        generator: Optional[torch.Generator] = None, complex_valued: Optional[bool] = None,
                        device=None) -> torch.Tensor:
    """VE reverse-diffusion predictor + Langevin corrector (Song et al. 2021, Alg. 2 / Score-SDE code).

    Corrector step size eps = 2 (snr ||z|| / ||score||)^2 per image."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    cplx = prior.channels != "real" if complex_valued is None else complex_valued
    sig = [float(s) for s in sigmas]
    x = _noise(shape, cplx, g, device) * sig[0]
    dims = (-2, -1)
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        for _ in range(n_corrector):
            sc = prior.score(x, s)
            z = _noise(shape, cplx, g, device)
            step = 2 * (snr * z.abs().square().sum(dims).sqrt() / sc.abs().square().sum(dims).sqrt().clamp_min(1e-12)) ** 2
            x = x + step[..., None, None] * sc + (2 * step[..., None, None]).sqrt() * z
        var = s ** 2 - sn ** 2
        x = x + var * prior.score(x, s) + var ** 0.5 * _noise(shape, cplx, g, device)
        _check(x, i, s)
    return prior.denoise(x, sig[-1])
