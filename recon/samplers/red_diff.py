"""RED-diff: regularisation by denoising diffusion (Mardani, Song, Kautz & Vahdat, ICLR 2024).

A variational method: the posterior is approximated by q = N(mu, s^2 I) with s -> 0, and minimising
KL(q || p(x_0 | y)) becomes an optimisation of the mean mu alone,

    min_mu  ||y - A mu||^2 / (2 s_v^2)  +  E_{t, eps}[ lam_t || eps_theta(x_t; t) - eps ||^2 ],
            x_t = alpha_t mu + sigma_t eps,

whose regulariser's gradient, with the network's Jacobian dropped (the paper's stop-gradient), is
lam_t (eps_theta(x_t; t) - eps). Its Algorithm 1 runs the timesteps from T down to 0, one fresh eps per
step, and takes one Adam step on

    loss(mu) = data(mu) + lam_t Re < sg[eps_theta(x_t; t) - eps], mu >,     lam_t = lam sigma_t / alpha_t

(the inverse square root of the signal-to-noise ratio). sigma_t / alpha_t is the variance-exploding level of
the timestep in the network's units, S_t, and x_t / alpha_t = mu + S_t eps, so in the prior's VE coordinates
one step at level sigma reads

    eps ~ N(0, I),  eps_hat = (x - D(x, sigma)) / sigma  at  x = mu + sigma eps   (``prior.eps``, no gradient)
    G   = g (A^H (A mu - y) / m  +  lam sigma (eps_hat - eps) / d)          (the loss's gradient with respect to
                                                                           the network's image g mu + lo)
    mu <- Adam(mu, G; lr / g, betas)                                               (``torch.optim.Adam``)

with g the prior's gain to the network's image (``Normalization.affine``; 1 unless "range"), so that the Adam
steps are the code's in the network's units (Adam is invariant to the scale of its gradient, and lr / g on the
prior's image is lr on the network's). The regulariser's expected gradient is lam g (mu - E D(mu + sigma eps,
sigma)) / d: regularisation by denoising (RED) with the prior's denoiser at every level. The network is called
without gradients: the prior's weights get none and never change; Adam holds mu only. Each of the
``n_samples`` runs draws its own eps sequence from the generator, so the same seed gives the same result.

**What it returns.** mu after the last step: one estimate per sample, an optimiser's result and not a
posterior sample; the spread of several runs is the optimiser's jitter from the random eps, not a posterior
uncertainty. On a Gaussian prior N(m0, C) with noiseless data the estimates average towards the posterior mean
(there also the MAP, the most probable image consistent with the data) as the steps grow: the regulariser's
expected gradient at level sigma is proportional to sigma^2 (C + sigma^2)^-1 (mu - m0), whose component in the
null space of A vanishes at the last, small levels where C^-1 (mu - m0) is orthogonal to that null space (the
posterior mean's condition), while the data pin A mu.

**Normalisation of the two terms** (m, d): "sum" (the default) m = d = 1, the data term 1/2 ||y - A mu||^2
and the regulariser summed over the image, so their balance does not depend on how many entries the
measurement has; "mean" m = the number of real entries of y and d = that of mu, per image (the code's
``(e_obs**2).mean() / 2`` and ``(...).mean()``, which weigh the data by d / m relative to "sum"). The operator is
the unit-norm A_n and the data y_n in the prior's range (``base``), so lam and lr do not depend on the scale of
the operator or the data.

**The noise** (noise-aware by default): ``sigma_y`` "auto" (the default) takes the operator's estimate from the
data (``A.noise_std``; noiseless where the operator cannot tell), a number is the noise std in the measurement's
units (E|n|^2 = sigma_y^2), None or 0 noiseless. With a noise of std s_c per real component (in the prior's units,
sigma_y / sqrt(2) for complex data), the levels stop descending at s_c: sigma_t <- max(sigma_t, s_c). The
regulariser's weight lam sigma_t vanishes with sigma_t, so below the data's noise level the last steps would fit
the noise; at the noise level the data and the denoiser still balance. The data term keeps its weight:
weighting it by 1 / sigma_y^2 would only trust noisy data more at the end, where the regulariser has vanished.

**Defaults** (the paper's and its code's, NVlabs/RED-diff ``algos/reddiff.py``, ``_configs/algo/reddiff.yaml``):
1000 steps, lam = 0.25, linear weighting (lam_t = lam sigma_t / alpha_t), Adam with lr = 0.1 and betas
(0.9, 0.99), mu initialised at the pseudo-inverse A^+ y (``A.pinv``: the operator's own, FBP for CT, the
zero-filled image for Cartesian MRI; taken in the network's image units as the code does,
``pigdm.network_pinv``), the schedule "auto" (for a network with discrete timesteps and 1000 steps: every
timestep from T - 1 to 0). Deliberately different: the "sum" normalisation (the code's "mean" makes the balance
depend on the entries of the measurement's representation, e.g. the number of coils) and the noise floor of the
levels.

**Preset "reference"**: the code step for step, noiseless (its ``sigma_y`` only noises the data): the timesteps
of ``range(0, 1000, 1000 // steps)`` from the last (``schedule="leading"``), the "mean" normalisation, lam 0.25,
lr 0.1, betas (0.9, 0.99), mu from A^+ y. Not reproduced: the code returns mu as it was before its last Adam
step (the estimate of the last step's start, so its last network evaluation is unused); here mu after it. The
code's means also run over its batch, which only rescales the gradient (the same for its batch of one); here
they run per image. The code averages the data term over the entries of its compact measurement; here over
those of A's output: the same where that output holds only measured entries (CT, non-Cartesian MRI), a smaller
data weight where it keeps the unmeasured entries as zeros (inpainting masks, Cartesian MRI).
"""
from __future__ import annotations

import math
from typing import Union

import torch

from .base import Sampler, check_int, check_positive, noise_like
from .loop import run
from .pigdm import check_real_prior, check_sigma_y, component_noise, network_pinv

NORMALIZATIONS = ("sum", "mean")


def _entries(shape: tuple, complex_: bool) -> int:
    """Real entries of one image or measurement of ``shape``."""
    return math.prod(shape) * (2 if complex_ else 1)


class REDDiff(Sampler):
    name = "red-diff"
    PRESETS = {"reference": {"steps": 1000, "lam": 0.25, "lr": 0.1, "betas": (0.9, 0.99), "schedule": "leading",
                             "normalization": "mean", "sigma_y": None}}

    def __init__(self, steps: int = 1000, lam: float = 0.25, lr: float = 0.1, betas: tuple = (0.9, 0.99),
                 sigma_y: Union[None, float, str] = "auto", normalization: str = "sum", schedule: str = "auto",
                 **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        check_positive("lam", lam, allow_zero=True)
        check_positive("lr", lr)
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.steps, self.lam, self.lr, self.betas = steps, float(lam), float(lr), (b1, b2)
        self.sigma_y, self.normalization = check_sigma_y(self.name, sigma_y), normalization
        self.schedule = schedule

    def steps_total(self) -> int:
        return self.steps

    def _run(self, x, data, prior, g, callback, bar):
        y, A = data.y, data.A
        check_real_prior(self.name, prior, x, A)
        sig = prior.sigmas(self.steps, self.schedule).tolist()
        gain, nd = prior.normalization.affine[1], prior.image_ndim
        lead = tuple(x.shape[: x.dim() - nd])
        noise = component_noise(self.sigma_y, data, x)
        # per image: the levels stop descending at the data's noise level
        floor = None if noise is None else torch.broadcast_to(noise.sqrt(), lead + (1,) * nd)
        if self.normalization == "mean":
            m, d = _entries(tuple(y.shape[1:]), y.is_complex()), _entries(tuple(x.shape[1:]), x.is_complex())
        else:
            m = d = 1

        mu = network_pinv(A, y, x, prior.normalization.affine).detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([mu], lr=self.lr / gain, betas=self.betas)

        def step(_, s, sn, i):
            lev = s if floor is None else floor.clamp(min=s)
            e = noise_like(mu, g)
            xt = mu.detach() + lev * e
            eps_hat = prior.eps(xt, lev if floor is None else lev.reshape(lead))
            grad = (gain / m) * A.H(A(mu.detach()) - y) + (self.lam * gain / d) * lev * (eps_hat - e)
            mu.grad = grad
            opt.step()
            return mu.detach().clone(), {"denoised": xt - lev * eps_hat}

        start = mu.detach().clone()
        out, _ = run(start, sig + [0.0], step, self.name, callback, bar)
        return out
