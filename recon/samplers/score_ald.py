"""Score-ALD: annealed Langevin dynamics for posterior sampling (Jalal et al., NeurIPS 2021; chapter 7 Eq. 7.31).

Over a geometric ladder sigma_1 > ... > sigma_L, starting at ``sigma_start``, ``steps_each`` Langevin steps per
level with step size eta_i = ``step_lr`` (sigma_i / sigma_L)^2:

    x <- x + eta_i [ score(x, sigma_i) - A^H (A x - y) / (sigma_y^2 + gamma_i^2) ] + sqrt(2 eta_i) z,
    gamma_i = ``gamma_scale`` * sigma_i.

Defaults from csgm-mri-langevin: a ladder with csgm's density (2311 levels from 232 to 0.0066, i.e. log-spacing
0.00453), starting at sigma 1.232 (its level 1156), 3 steps per level, step_lr 5e-5. Those ~3500 network
evaluations are for the paper's setting; ``n_levels`` shortens the ladder between ``sigma_start`` and
``sigma_end``. ``sigma_y`` is the measurement's noise std in its own units (converted to the normalised
data like the measurement, ``base``); ``sigma_y="auto"`` estimates it from the data (``A.noise_std``, the
k-space periphery for MRI; 0 with a warning where the operator cannot). csgm rescales the likelihood gradient to a fixed ratio of the score's norm; this sampler uses the
paper's weighting 1/(sigma_y^2 + gamma^2).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

from recon.priors.schedules import geometric_sigmas

from .base import Sampler, check_int, check_positive, noise_like
from .dc import likelihood_gradient
from .loop import run

CSGM_LOG_SPACING = math.log(232.0 / 0.0066) / 2310


class ScoreALD(Sampler):
    name = "score-ald"

    def __init__(self, sigma_start: float = 1.232, sigma_end: float = 0.0066, n_levels: Optional[int] = None,
                 steps_each: int = 3, step_lr: float = 5e-5, sigma_y: Union[float, str] = 0.0,
                 gamma_scale: float = 1.0,
                 denoise_last: bool = False, **kw):
        super().__init__(**kw)
        check_positive("sigma_end", sigma_end)
        check_positive("sigma_start", sigma_start)
        if not sigma_end < sigma_start:
            raise ValueError(f"need sigma_end < sigma_start, got {sigma_end}, {sigma_start}")
        if n_levels is not None:
            check_int("n_levels", n_levels, 2)
        check_int("steps_each", steps_each, 1)
        check_positive("step_lr", step_lr)
        if not (isinstance(sigma_y, str) and sigma_y == "auto"):
            if isinstance(sigma_y, str):
                raise ValueError(f"sigma_y must be a noise std >= 0 in the measurement's units or 'auto', "
                                 f"got {sigma_y!r}")
            check_positive("sigma_y", sigma_y, allow_zero=True)
        check_positive("gamma_scale", gamma_scale, allow_zero=True)
        self.n_levels = n_levels or int(round(math.log(sigma_start / sigma_end) / CSGM_LOG_SPACING)) + 1
        self.sigma_start, self.sigma_end, self.steps_each, self.step_lr = sigma_start, sigma_end, steps_each, step_lr
        self.sigma_y, self.gamma_scale, self.denoise_last = sigma_y, gamma_scale, denoise_last

    def steps_total(self) -> int:
        return self.n_levels

    def nfe(self) -> int:
        return self.n_levels * self.steps_each + int(self.denoise_last)

    def _run(self, x, data, prior, g, callback, bar):
        ladder = [float(s) for s in geometric_sigmas(self.sigma_end, self.sigma_start, self.n_levels)]
        y, A = data.y, data.A
        if self.sigma_y == "auto":
            est = A.noise_std(y)
            if est is None:
                warnings.warn(f"ScoreALD(sigma_y='auto'): the operator {A.name} cannot estimate its noise from the "
                              f"data; using sigma_y = 0", stacklevel=3)
                sigma_y = 0.0
            else:
                sigma_y = est.reshape(tuple(est.shape) + (1,) * (y.dim() - est.dim()))
        else:
            sigma_y = self.sigma_y / data.unit  # the measurement's noise std in y_n's units

        def step(x, s, sn, i):  # steps_each Langevin steps at level s; sn only ends the level
            eta = self.step_lr * (s / ladder[-1]) ** 2
            for _ in range(self.steps_each):
                score = prior.score(x, s)
                den = x + s * s * score  # Tweedie: D(x) = x + sigma^2 score
                grad = score - likelihood_gradient(x, y, A, sigma_y, self.gamma_scale * s)
                x = x + eta * grad + (2 * eta) ** 0.5 * noise_like(x, g)
            return x, {"denoised": den}

        x, _ = run(noise_like(x, g) * ladder[0], ladder + [0.0], step, self.name, callback, bar)
        return prior.denoise(x, ladder[-1]) if self.denoise_last else x
