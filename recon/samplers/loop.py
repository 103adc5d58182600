"""The reverse-diffusion loop that every sampler and task runs (in the style of k-diffusion's samplers).

    x, info = run(x, sigmas, step, name="dds", callback=cb, bar=bar)

For each consecutive pair (sigma_i, sigma_{i+1}) of the schedule, ``step(x, sigma_i, sigma_{i+1}, i)``
returns the next iterate and a dict holding at least ``denoised`` (the step's Tweedie estimate, after data
consistency where the sampler has it). The loop checks the iterate for NaN/Inf, calls
``callback({"i", "sigma", "sigma_next", "x", "denoised", ...})`` with the iterate the step started from, and
advances the progress bar. A schedule that ends in 0 makes the last step return the clean estimate; a
schedule may also increase (DDIM inversion). Returns the last iterate and the last step's dict.

The steps themselves:
- ``ddim_step``: x0 = D(x, sigma) (the prior's denoiser, or any function), an optional data-consistency hook on
  x0 (DDS's CG, SDEdit's held pixels), then the DDIM update with stochasticity ``eta``
  (``steps.ddim_update``; eta = 0: deterministic DDIM = probability-flow Euler, eta = 1: ancestral DDPM;
  ``convention="dds"``: DDS's scaling of eta).
The predictor-corrector and Langevin samplers write their step next to their class.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .base import check_finite, noise_like
from .steps import ddim_update


def run(x: torch.Tensor, sigmas: Sequence[float], step: Callable, name: str, callback: Optional[Callable] = None,
        bar=None):
    sig = [float(s) for s in sigmas]
    if len(sig) < 2:
        raise ValueError(f"{name}: a schedule needs at least 2 noise levels, got {len(sig)}")
    info: dict = {}
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        x_next, info = step(x, s, sn, i)
        check_finite(x_next, i, s, name)
        if callback is not None:
            callback({"i": i, "sigma": s, "sigma_next": sn, "x": x, **info})
        if bar is not None:
            bar.update(1)
        x = x_next
    return x, info


def ddim_step(denoise: Callable, eta: float, generator: Optional[torch.Generator],
              dc: Optional[Callable] = None, convention: str = "ddim") -> Callable:
    """A DDIM step: x0 = denoise(x, sigma); x0' = dc(x0, sigma) (if given); x' = DDIM(x0', eps = (x - x0) / sigma).
    Noise is drawn from ``generator`` only where the step injects some (eta > 0, sigma' > 0)."""
    def step(x, s, sn, i):
        x0 = denoise(x, s)
        x0c = x0 if dc is None else dc(x0, s)
        z = noise_like(x, generator) if eta > 0 and sn > 0 else None
        return ddim_update(x0c, (x - x0) / s, s, sn, eta, z, convention), {"denoised": x0c}
    return step
