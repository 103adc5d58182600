"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023; chapter 7 Eq. 7.33).

Ancestral (DDPM) steps, each followed by a gradient step on the measurement error of the Tweedie estimate,
taken through the network by autograd:

    x0 = D(x, sigma);  x' = ancestral step from (x, x0);  x' <- x' - zeta * grad_x ||y - A x0||^(p)

with p = 1 (the norm, as in the DPS code; default) or p = 2 (the squared norm of the paper's Alg. 1).
The step is the VP update of the code written in VE coordinates: with abar = 1/(1 + sigma^2),
x_vp = sqrt(abar) x_ve, so x'_ve <- x'_ve - zeta grad_{x_ve} / (sqrt(abar_t) sqrt(abar_{t-1})).
Defaults: 1000 steps, zeta = 1.0 (the DPS configs use 0.3-1.0 depending on the task).
"""
from __future__ import annotations

import torch

from .base import Sampler, check_finite, default_sigmas, noise_like
from .steps import ddim_update


class DPS(Sampler):
    name = "dps"

    def __init__(self, steps: int = 1000, zeta: float = 1.0, squared: bool = False, schedule: str = "auto", **kw):
        super().__init__(**kw)
        if steps < 1 or zeta < 0:
            raise ValueError(f"need steps >= 1 and zeta >= 0, got {steps}, {zeta}")
        self.steps, self.zeta, self.squared, self.schedule = steps, zeta, squared, schedule

    def steps_total(self) -> int:
        return self.steps

    def _run(self, y, A, prior, g, callback, bar):
        sig = [float(s) for s in default_sigmas(prior, self.steps, self.schedule)]
        x = noise_like(A.H(y), g) * sig[0]
        for i, s in enumerate(sig):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                x0 = prior.denoise(xr, s)
                r = (y - A(x0)).abs().square().flatten(1).sum(1)
                loss = r if self.squared else r.sqrt()
                (grad,) = torch.autograd.grad(loss.sum(), xr)
            x0 = x0.detach()
            if callback is not None:
                callback(i, s, x, x0)
            bar.update(1)
            if i == len(sig) - 1:
                return x0
            sn = sig[i + 1]
            x_next = ddim_update(x0, (x - x0) / s, s, sn, 1.0, noise_like(x, g))
            x = x_next - self.zeta * ((1 + s * s) * (1 + sn * sn)) ** 0.5 * grad
            check_finite(x, i, s, self.name)
