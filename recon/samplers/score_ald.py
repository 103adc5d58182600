"""Score-ALD: annealed Langevin dynamics for posterior sampling (Jalal et al., NeurIPS 2021; chapter 7 Eq. 7.31).

Over a geometric ladder sigma_1 > ... > sigma_L, starting at ``sigma_start``, ``steps_each`` Langevin steps per
level with step size eta_i = ``step_lr`` (sigma_i / sigma_L)^2:

    x <- x + eta_i [ score(x, sigma_i) - A^H (A x - y) / (sigma_y^2 + gamma_i^2) ] + sqrt(2 eta_i) z,
    gamma_i = ``gamma_scale`` * sigma_i.

Defaults from csgm-mri-langevin: a ladder with csgm's density (2311 levels from 232 to 0.0066, i.e. log-spacing
0.00453), starting at sigma 1.232 (its level 1156), 3 steps per level, step_lr 5e-5. Those ~3500 network
evaluations are for the paper's setting; ``n_levels`` shortens the ladder between ``sigma_start`` and
``sigma_end``. csgm rescales the likelihood gradient to a fixed ratio of the score's norm; this sampler uses the
paper's weighting 1/(sigma_y^2 + gamma^2).
"""
from __future__ import annotations

import math
from typing import Optional

from recon.priors.schedules import geometric_sigmas

from .base import Sampler, check_finite, noise_like
from .dc import likelihood_gradient

CSGM_LOG_SPACING = math.log(232.0 / 0.0066) / 2310


class ScoreALD(Sampler):
    name = "score-ald"

    def __init__(self, sigma_start: float = 1.232, sigma_end: float = 0.0066, n_levels: Optional[int] = None,
                 steps_each: int = 3, step_lr: float = 5e-5, sigma_y: float = 0.0, gamma_scale: float = 1.0,
                 denoise_last: bool = False, **kw):
        super().__init__(**kw)
        if not 0 < sigma_end < sigma_start:
            raise ValueError(f"need 0 < sigma_end < sigma_start, got {sigma_end}, {sigma_start}")
        self.n_levels = n_levels or int(round(math.log(sigma_start / sigma_end) / CSGM_LOG_SPACING)) + 1
        self.sigma_start, self.sigma_end, self.steps_each, self.step_lr = sigma_start, sigma_end, steps_each, step_lr
        self.sigma_y, self.gamma_scale, self.denoise_last = sigma_y, gamma_scale, denoise_last

    def steps_total(self) -> int:
        return self.n_levels * self.steps_each

    def nfe(self) -> int:
        return self.steps_total() + int(self.denoise_last)

    def _run(self, y, A, prior, g, callback, bar):
        ladder = [float(s) for s in geometric_sigmas(self.sigma_end, self.sigma_start, self.n_levels)]
        x = noise_like(A.H(y), g) * ladder[0]
        for i, s in enumerate(ladder):
            eta = self.step_lr * (s / ladder[-1]) ** 2
            for _ in range(self.steps_each):
                score = prior.score(x, s)
                if callback is not None:
                    callback(i, s, x, x + s * s * score)  # Tweedie: D(x) = x + sigma^2 score
                grad = score - likelihood_gradient(x, y, A, self.sigma_y, self.gamma_scale * s)
                x = x + eta * grad + (2 * eta) ** 0.5 * noise_like(x, g)
                bar.update(1)
            check_finite(x, i, s, self.name)
        return prior.denoise(x, ladder[-1]) if self.denoise_last else x
