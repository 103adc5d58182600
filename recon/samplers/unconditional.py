"""Unconditional sampling from a prior (synthesis), written once in sigma-space.

- ``ddim``: DDIM with stochasticity eta (``steps.ddim_update``); eta = 0 deterministic, eta = 1 ancestral.
- ``heun``: EDM's deterministic second-order sampler (Karras et al. 2022, Alg. 1).
- ``predictor_corrector``: reverse-diffusion predictor + Langevin corrector (Song et al., ICLR 2021).
All take the prior, a shape (..., H, W), a decreasing sigma schedule and a ``torch.Generator``, and end with
the prior's Tweedie estimate at the last noise level.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .base import check_finite, noise_like
from .steps import ddim_update, langevin, reverse_diffusion


def _start(prior, shape, sigma0, generator, complex_valued, device):
    cplx = prior.channels != "real" if complex_valued is None else complex_valued
    x = torch.zeros(shape, dtype=torch.complex64 if cplx else torch.float32, device=device)
    return noise_like(x, generator) * sigma0


@torch.no_grad()
def ddim(prior, shape, sigmas: torch.Tensor, eta: float = 0.0, generator: Optional[torch.Generator] = None,
         complex_valued: Optional[bool] = None, device=None, callback: Optional[Callable] = None) -> torch.Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    sig = [float(s) for s in sigmas]
    x = _start(prior, shape, sig[0], g, complex_valued, device)
    for i, s in enumerate(sig):
        d = prior.denoise(x, s)
        if callback is not None:
            callback(i, s, x, d)
        if i == len(sig) - 1:
            return d
        x = ddim_update(d, (x - d) / s, s, sig[i + 1], eta, noise_like(x, g) if eta > 0 else None)
        check_finite(x, i, s, "ddim")
    return x


@torch.no_grad()
def heun(prior, shape, sigmas: torch.Tensor, generator: Optional[torch.Generator] = None,
         complex_valued: Optional[bool] = None, device=None) -> torch.Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    sig = [float(s) for s in sigmas]
    x = _start(prior, shape, sig[0], g, complex_valued, device)
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        d = (x - prior.denoise(x, s)) / s
        x_e = x + (sn - s) * d
        d2 = (x_e - prior.denoise(x_e, sn)) / sn
        x = x + (sn - s) * (d + d2) / 2
        check_finite(x, i, s, "heun")
    return prior.denoise(x, sig[-1])


@torch.no_grad()
def predictor_corrector(prior, shape, sigmas: torch.Tensor, snr: float = 0.16, n_corrector: int = 1,
                        generator: Optional[torch.Generator] = None, complex_valued: Optional[bool] = None,
                        device=None) -> torch.Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    sig = [float(s) for s in sigmas]
    x = _start(prior, shape, sig[0], g, complex_valued, device)
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        for _ in range(n_corrector):
            x, _ = langevin(x, prior.score(x, s), snr, noise_like(x, g))
        x, _ = reverse_diffusion(x, prior.score(x, s), s, sn, noise_like(x, g))
        check_finite(x, i, s, "predictor_corrector")
    return prior.denoise(x, sig[-1])
