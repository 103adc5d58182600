"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023; chapter 7 Eq. 7.33).

Ancestral (DDPM) steps, each followed by a gradient step on the measurement error of the Tweedie estimate,
taken through the network by autograd:

    x0 = D(x, sigma);  x' = ancestral step from (x, x0);  x' <- x' - zeta * grad_x ||y - A x0||^(p)

with p = 1 (the norm, as in the DPS code; default) or p = 2 (the squared norm of the paper's Alg. 1).
The step is the VP update of the code written in VE coordinates: with abar = 1/(1 + sigma^2),
x_vp = sqrt(abar) x_ve, so x'_ve <- x'_ve - zeta grad_{x_ve} / (sqrt(abar_t) sqrt(abar_{t-1})).
The last step returns the Tweedie estimate. Defaults: 1000 steps, zeta = 1.0 (the DPS configs use 0.3-1.0
depending on the task; zeta is relative to the unit-norm operator and the prior's data range, ``base``).
"""
from __future__ import annotations

import torch

from .base import Sampler, check_int, check_positive, noise_like
from .loop import run
from .steps import ddim_update


class DPS(Sampler):
    name = "dps"

    def __init__(self, steps: int = 1000, zeta: float = 1.0, squared: bool = False, schedule: str = "auto", **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        check_positive("zeta", zeta, allow_zero=True)
        self.steps, self.zeta, self.squared, self.schedule = steps, zeta, squared, schedule

    def steps_total(self) -> int:
        return self.steps

    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, self.schedule).tolist() + [0.0]
        y, A = data.y, data.A

        def step(x, s, sn, i):
            if sn == 0:  # the last step returns the Tweedie estimate; no gradient needed
                x0 = prior.denoise(x, s)
                return x0, {"denoised": x0}
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                x0 = prior.denoise(xr, s)
                r = (y - A(x0)).abs().square().flatten(1).sum(1)
                loss = r if self.squared else r.sqrt()
                (grad,) = torch.autograd.grad(loss.sum(), xr)
            x0 = x0.detach()
            x_next = ddim_update(x0, (x - x0) / s, s, sn, 1.0, noise_like(x, g))
            return x_next - self.zeta * ((1 + s * s) * (1 + sn * sn)) ** 0.5 * grad, {"denoised": x0}

        x, _ = run(noise_like(x, g) * sig[0], sig, step, self.name, callback, bar)
        return x
