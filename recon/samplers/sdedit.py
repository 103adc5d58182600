"""SDEdit: image-to-image sampling from a noised image (Meng et al., ICLR 2022), on the DDIM loop (``loop.ddim``).

Images x_0 are noised to sigma = ``strength``, x = x_0 + strength z, then brought back by DDIM steps over the
levels of a ``steps``-level "auto" schedule below ``strength``, down to the clean estimate at 0:

    x0 = D(x, sigma),  x0' = dc(x0, sigma),  x' = x0' + sqrt(sigma'^2 - s~^2) (x - x0) / sigma + s~ z,

s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma (eta 0: deterministic, 1: ancestral). A small strength keeps
the layout and redraws the texture; a large one keeps little of the input. ``dc``, bound to a run, makes each
step's Tweedie estimate consistent: ``dc.HeldPixels`` keeps the known pixels of an image (lesion insertion,
inpainting from a classical fill). The second stage of a cascade (cascaded diffusion, Ho et al., JMLR 2022) is
SDEdit of the upsampled base sample at a small level with eta = 1.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .base import noise_like
from .loop import ddim


def sdedit_levels(prior, strength: float, steps: int) -> list:
    """``strength``, the levels of the prior's ``steps``-level "auto" schedule below it (its smallest level,
    sigma_min, if none is), then 0."""
    below = [s for s in prior.sigmas(steps, "auto").tolist() if s < strength] or [float(prior.sigma_min)]
    return [strength] + below + [0.0]


@torch.no_grad()
def sdedit(x: torch.Tensor, prior, strength: float, steps: int, generator: torch.Generator, eta: float = 0.0,
           dc=None, name: str = "sdedit", callback: Optional[Callable] = None) -> torch.Tensor:
    """SDEdit of the batch of images ``x`` (n, ...) in the prior's range from sigma = ``strength``; returns the
    clean estimates (n, ...)."""
    if isinstance(strength, bool) or not (isinstance(strength, (int, float)) and math.isfinite(strength)
                                          and strength > 0):
        raise ValueError(f"strength must be a noise level > 0, got {strength!r}")
    x = x + strength * noise_like(x, generator)
    x, _ = ddim(x, sdedit_levels(prior, strength, steps), prior.denoise, eta=eta, generator=generator, dc=dc,
                name=name, callback=callback)
    return x
