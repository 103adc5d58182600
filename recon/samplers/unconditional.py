"""Unconditional sampling from a prior (synthesis), called like every other sampler but without data:

    x = samplers.Heun(steps=30)(prior=prior, n_samples=16, generator=g)      # shape from prior.image_size
    x = samplers.DDIM(steps=50, eta=0.0)(prior=prior, n_samples=4, shape=(128, 128))

- ``DDIM``: DDIM with stochasticity eta on the prior's "auto" schedule (``loop.ddim``; Song, Meng & Ermon, ICLR
  2021): x' = x0 + sqrt(sigma'^2 - s~^2) eps + s~ z, s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma; eta = 0
  deterministic, eta = 1 ancestral.
- ``Heun``: EDM's deterministic second-order sampler (Karras et al. 2022, Alg. 1) on the Karras schedule:
  d = (x - D(x, sigma)) / sigma, x~ = x + (sigma' - sigma) d, x' = x + (sigma' - sigma) (d + d~) / 2 with d~ the
  same slope at (x~, sigma'); its own step on ``loop.run``.
- ``PredictorCorrector``: Langevin corrector at sigma, then the reverse-diffusion predictor from sigma to sigma'
  (Song et al., ICLR 2021; ``loop.predictor_corrector``, corrector first) on the geometric schedule.
Each ends with the prior's Tweedie estimate at the last noise level (the schedule's final step to sigma 0)
and returns images in the prior's own range.
"""
from __future__ import annotations

from .base import Sampler, check_int, check_positive, noise_like
from .loop import ddim, pc_levels, predictor_corrector, run


class _Unconditional(Sampler):
    posterior = False
    schedule = "karras"

    def __init__(self, steps: int = 30, **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        self.steps = steps

    def steps_total(self) -> int:
        return self.steps

    def _sigmas(self, prior) -> list:
        return prior.sigmas(self.steps, self.schedule).tolist() + [0.0]


class DDIM(_Unconditional):
    name = "ddim"
    schedule = "auto"

    def __init__(self, steps: int = 50, eta: float = 0.0, **kw):
        super().__init__(steps, **kw)
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.eta = eta

    def _run(self, x, data, prior, g, callback, bar):
        sig = self._sigmas(prior)
        x, _ = ddim(noise_like(x, g) * sig[0], sig, prior.denoise, eta=self.eta, generator=g, name=self.name,
                    callback=callback, bar=bar)
        return x


class Heun(_Unconditional):
    name = "heun"

    def nfe(self) -> int:
        return 2 * self.steps - 1

    def _run(self, x, data, prior, g, callback, bar):
        def step(x, s, sn, i):
            den = prior.denoise(x, s)
            d = (x - den) / s
            x_e = x + (sn - s) * d
            if sn == 0:  # the last step: Euler to sigma 0 is the Tweedie estimate
                return x_e, {"denoised": den}
            d2 = (x_e - prior.denoise(x_e, sn)) / sn
            return x + (sn - s) * (d + d2) / 2, {"denoised": den}

        sig = self._sigmas(prior)
        x, _ = run(noise_like(x, g) * sig[0], sig, step, self.name, callback, bar)
        return x


class PredictorCorrector(_Unconditional):
    name = "pc"
    schedule = "geometric"

    def __init__(self, steps: int = 30, snr: float = 0.16, n_corrector: int = 1, **kw):
        super().__init__(steps, **kw)
        check_positive("snr", snr)
        check_int("n_corrector", n_corrector, 0)
        self.snr, self.n_corrector = snr, n_corrector

    def nfe(self) -> int:
        return (self.steps - 1) * (1 + self.n_corrector) + 1

    def _run(self, x, data, prior, g, callback, bar):
        levels = pc_levels(self._sigmas(prior), "corrector-first")
        x, _ = predictor_corrector(noise_like(x, g) * levels.schedule[0], levels, prior, g, snr=self.snr,
                                   n_corrector=self.n_corrector, order="corrector-first", denoise_last=True,
                                   name=self.name, callback=callback, bar=bar)
        return x
