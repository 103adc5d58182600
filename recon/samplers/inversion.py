"""DDIM inversion and generation: the deterministic DDIM map between images and latents at sigma_max (Song, Meng
& Ermon, ICLR 2021), both on the DDIM loop (``loop.ddim`` with eta = 0).

- ``generate``: x' = x0 + sigma' eps(x, sigma) over a decreasing schedule, i.e. Euler steps of the
  probability-flow ODE dx/dsigma = eps(x, sigma), from a latent to an image.
- ``invert``: the same steps over the increasing schedule, x' = x + (sigma' - sigma) eps(x, sigma), from an image
  to its latent. That evaluates the network at x instead of x', so the round trip is not exact; ``refine`` > 0
  solves the exact inverse of each generating step, x' = x + (sigma' - sigma) eps(x', sigma'), by that many
  fixed-point iterations started from the plain step (the fixed-point inversion of Pan et al., ICCV 2023).
"""
from __future__ import annotations

import torch

from .loop import ddim


@torch.no_grad()
def invert(x: torch.Tensor, prior, steps: int = 50, refine: int = 0) -> torch.Tensor:
    """The latents at sigma_max whose DDIM samples (the prior's ``steps``-level schedule) are the images ``x``
    (n, ...), in the prior's range."""
    z, _ = ddim(x, prior.sigmas(steps).flip(0).tolist(), prior.denoise, refine=refine, name="invert")
    return z


@torch.no_grad()
def generate(z: torch.Tensor, prior, steps: int = 50) -> torch.Tensor:
    """The deterministic DDIM samples of the latents ``z`` (n, ...) at sigma_max (the inverse of ``invert``)."""
    x, _ = ddim(z, prior.sigmas(steps).tolist(), prior.denoise, name="generate")
    return x
