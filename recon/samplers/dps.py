"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023; chapter 7 Eq. 7.33).

Ancestral (DDPM) steps, each followed by a gradient step on the measurement error of the Tweedie estimate,
taken through the network by autograd. In the network's VP coordinates (x_t = sqrt(abar_t) v_t, v the network's
image, eps the network's noise prediction), as in the DPS code (``condition_methods.PosteriorSampling``):

    x0  = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t))                      (clip only with ``clip``)
    x'  = mean of q(x_{t-1} | x_t, x0) + s~_t z                                   (the DDPM step)
    x_{t-1} = x' - zeta grad_{x_t} ||y - A x0||^p

with p = 1 (the norm, as in the DPS code; default) or p = 2 (``squared``: the squared norm of the paper's
Alg. 1, whose step zeta_i = zeta' / ||y - A x0|| makes it the norm again).

**Units of zeta.** The toolkit works with the unit-norm operator A_n = A / ||A|| and the measurement y_n in the
prior's range (``base``); a prior's image u maps to the network's image v = lo + g u (``Normalization.affine``;
a "range" prior in [0, 1] with a network in [-1, 1]: lo = -1, g = 2; otherwise lo = 0, g = 1), and its noise
level sigma to the network's S = g sigma. zeta is the DPS code's ``scale`` for the residual measured on the
network's image with the unit-norm operator,

    r = A_n v_true - A_n x0_net = g (y_n - A_n x0(u)),

and the step taken on the network's VP variable x_t as above. In the prior's VE coordinates u (abar = 1/(1 + S^2))
this is

    u_{t-1} = u' - zeta g^(p - 2) sqrt((1 + S_t^2)(1 + S_{t-1}^2)) grad_u ||y_n - A_n x0(u)||^p,

so a run is the DPS code's whether the prior is in the network's units (g = 1) or in [0, 1] (g = 2). A DPS
config whose operator has norm ||A_dps|| (the code applies its operator unnormalised) corresponds to
zeta = scale ||A_dps||^p; for its inpainting mask (norm 1) zeta is the config's scale.

**Preset "reference"** (``DPS.from_preset("reference", zeta=...)``), the DPS code step for step
(configs/diffusion_config.yaml: 1000 steps, linear betas, learned_range variance, clip_denoised True):
the timesteps 999, 998, ..., 0 (``schedule="auto"``; for other ``steps`` the same rounding of an even spacing
as guided-diffusion's ``space_timesteps``, with the respaced betas); x0 clipped to the network's [-1, 1]
(``clip=(-1, 1)``, the gradient taken through the clip); the noise std the network learned
(``variance="learned"``, ``DiffusionPrior.denoise_with_variance``); the gradient step also at t = 0, so the result
is clip(x0) - zeta grad (``final_gradient=True``); the start x_T ~ N(0, I) in the network's VP coordinates
(``start="vp"``). zeta stays the caller's: the configs use 0.3 (super-resolution, deblurring), 0.5 (inpainting)
and 1.0 (phase retrieval).

Not reproduced from the code: its residual norm is taken over the whole batch (one norm for all samples, so each
sample's step depends on the others); here each sample has its own norm (the same for one sample, as the code
runs). The code also draws a noisy copy of the measurement at every step that the "ps" method does not use.

**Defaults, deliberately different from the paper and code**: no clipping (``clip=None``: the prior's range is
not assumed), the DDPM posterior variance beta~_t (``variance="fixed"``: every prior has it), the last step
returns the Tweedie estimate without a gradient step (``final_gradient=False``), and the start is sigma_T z in
VE coordinates (``start="sigma"``). 1000 steps and zeta = 1.0 as the code's defaults; for projection data
(``for_problem``, ``A.sampling == "projection"``) ``PROJECTION_STEPS``. The gradient through the network is not a
data-consistency object, and the step runs on ``loop.run``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .base import Sampler, check_int, check_positive, noise_like
from .loop import run
from .steps import ddim_update, vp_start

PROJECTION_STEPS = 250  # the toolkit's CT setting
VARIANCES = ("fixed", "learned")
STARTS = ("sigma", "vp")


def _check_clip(clip) -> Optional[tuple]:
    if clip is None:
        return None
    try:
        a, b = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be None or an interval (lo, hi) of the network's image, got {clip!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"clip must be a finite interval lo < hi, got {clip!r}")
    return (a, b)


class DPS(Sampler):
    name = "dps"
    PRESETS = {"reference": {"steps": 1000, "schedule": "auto", "squared": False, "clip": (-1.0, 1.0),
                             "variance": "learned", "final_gradient": True, "start": "vp"}}

    def __init__(self, steps: int = 1000, zeta: float = 1.0, squared: bool = False, schedule: str = "auto",
                 clip: Optional[tuple] = None, variance: str = "fixed", final_gradient: bool = False,
                 start: str = "sigma", **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        check_positive("zeta", zeta, allow_zero=True)
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        self.steps, self.zeta, self.squared, self.schedule = steps, zeta, squared, schedule
        self.clip, self.variance, self.final_gradient, self.start = _check_clip(clip), variance, final_gradient, start

    def steps_total(self) -> int:
        return self.steps

    @classmethod
    def problem_settings(cls, A, prior, stated: dict) -> dict:
        if A is not None and A.sampling == "projection":
            return {"steps": PROJECTION_STEPS, **stated}
        return dict(stated)

    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, self.schedule).tolist() + [0.0]
        y, A = data.y, data.A
        lo, gain = prior.normalization.affine
        p = 2 if self.squared else 1
        bounds = None if self.clip is None else tuple((c - lo) / gain for c in self.clip)
        if bounds is not None and x.is_complex():
            raise ValueError("dps: clip applies to real images; a complex prior has no interval to clip to")

        def weight(s, sn):
            """zeta g^(p-2) sqrt((1 + S^2)(1 + S'^2)) with the network's levels S = g sigma."""
            return self.zeta * gain ** (p - 2) * math.sqrt((1 + (gain * s) ** 2) * (1 + (gain * sn) ** 2))

        def step(x, s, sn, i):
            last = sn == 0
            if last and not self.final_gradient:  # the Tweedie estimate; no gradient needed
                x0 = prior.denoise(x, s)
                x0 = x0 if bounds is None else x0.clamp(*bounds)
                return x0, {"denoised": x0}
            std = None
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                if self.variance == "learned":
                    x0, std = prior.denoise_with_variance(xr, s, sn)
                    std = std.detach()
                else:
                    x0 = prior.denoise(xr, s)
                if bounds is not None:
                    x0 = x0.clamp(*bounds)
                r = (y - A(x0)).abs().square().flatten(1).sum(1)
                loss = r if self.squared else r.sqrt()
                (grad,) = torch.autograd.grad(loss.sum(), xr)
            x0 = x0.detach()
            eps = (x - x0) / s
            if last:
                x_next = x0
            elif std is None:
                x_next = ddim_update(x0, eps, s, sn, 1.0, noise_like(x, g))
            else:  # the DDPM posterior mean, with the network's noise std
                x_next = ddim_update(x0, eps, s, sn, 1.0, None) + std * noise_like(x, g)
            return x_next - weight(s, sn) * grad, {"denoised": x0}

        z = noise_like(x, g)
        x = vp_start(z, sig[0], (lo, gain)) if self.start == "vp" else z * sig[0]
        x, _ = run(x, sig, step, self.name, callback, bar)
        return x
