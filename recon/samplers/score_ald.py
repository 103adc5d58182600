"""Score-ALD: annealed Langevin dynamics for posterior sampling (Jalal et al., NeurIPS 2021; chapter 7 Eq. 7.31).

Over a geometric ladder sigma_1 > ... > sigma_L, starting at ``sigma_start``, ``steps_each`` Langevin steps per
level with step size eta_i = ``step_lr`` (sigma_i / sigma_L)^2:

    x <- x + eta_i [ score(x, sigma_i) - g(x) ] + sqrt(2 eta_i) z,

with the likelihood gradient g of Eq. 7.31 (the paper's weighting, the default)

    g(x) = A^H (A x - y) / (sigma_y^2 + gamma_i^2),    gamma_i = ``gamma_scale`` * sigma_i,

or, with ``likelihood_ratio`` = r (the code's normalisation, csgm's ``mse``), the same direction rescaled to r
times the score's norm, per image:

    g(x) = r ||score(x, sigma_i)|| d / ||d||,    d = A^H (A x - y).

The gradient is the data-consistency object ``dc.GradientStep(gamma_scale, ratio=likelihood_ratio)``; ``dc=``
takes another one with a ``gradient(x, sigma, reference)`` method. The Langevin ladder with the gradient inside
the step fits neither shared loop; it runs its own step on ``loop.run``.

``sigma_y`` is the measurement's noise std in its own units, E|n|^2 = sigma_y^2 per sample as for every sampler
(converted to the normalised data like the measurement, ``base``; for complex data each of Re and Im carries
sigma_y^2 / 2, the variance the likelihood gradient above uses); ``sigma_y="auto"`` estimates it from the data (``A.noise_std``, the k-space periphery for
MRI; 0 with a warning where the operator cannot). With ``likelihood_ratio`` the weight is fixed by r, and
``sigma_y`` and ``gamma_scale`` do not enter (setting them is refused). ``start``: "gaussian" starts at
x ~ N(0, sigma_1^2) (per Re and Im for complex images), "uniform" at x ~ U[0, 1) (per Re and Im), as csgm's
code does. ``denoise_last`` adds one Tweedie step at sigma_L.

Defaults from csgm-mri-langevin: a ladder with csgm's density (2311 levels from 232 to 0.0066, i.e. log-spacing
0.00453), starting at sigma 1.232 (its level 1156, rounded), 3 steps per level, step_lr 5e-5. Those ~3500
network evaluations are for the paper's setting; ``n_levels`` shortens the ladder between ``sigma_start`` and
``sigma_end`` (``for_problem``'s ``steps``). For projection data (``for_problem``, ``A.sampling ==
"projection"``) the defaults are ``PROJECTION``: a shorter ladder from a higher start, a larger step and a final
denoising step (the toolkit's CT settings).

The "reference" preset follows csgm's ``main.py`` (``LangevinOptimizer._sample``, configs/file/*.yaml) step for
step: the levels 1156 to 2310 of its ladder (it skips ``c <= start_iter`` = 1155), 3 steps each, step_lr 5e-5,
the start U[0, 1) in both channels of the complex image, the likelihood gradient rescaled to ``mse`` = 5 times the
score's norm, the last Langevin iterate returned (no denoising step). The noise is drawn before the network is
evaluated there and after it here; the draws are independent of the network, so this changes nothing. The data
scale is the 99th percentile of |A^+ y| (csgm: of its estimated MVUE), the prior's normalisation (``base``).

The defaults differ from csgm's code deliberately in: the paper's likelihood weight 1/(sigma_y^2 + gamma^2)
instead of the code's fixed ratio to the score's norm; the start N(0, sigma_1^2) instead of U[0, 1); sigma_start
1.232 and the ladder's count from csgm's spacing instead of csgm's level values themselves.

Bugs of the published code that are not reproduced: the norms that rescale the likelihood gradient, and the
99th percentile that scales the data, are taken over the whole batch (several slices or ``repeat`` samples share
one likelihood weight and one scale) - here per image; its MVUE divides by sqrt(sum_c |S_c|^2) where the
pseudo-inverse divides by sum_c |S_c|^2 (the same for maps normalised to 1, as ESPIRiT's are inside the object;
0/0 = NaN where the maps vanish) - here A^+ y, 0 where no coil sees; on a NaN it returns the current iterate as
the result - here a ``SamplingError``.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch

from recon.priors.schedules import geometric_sigmas

from .base import Sampler, check_int, check_positive, noise_like, noise_variance
from .dc import GradientStep, check_dc
from .loop import run

CSGM_LADDER = (232.0, 0.0066, 2311)  # csgm's langevin_config: sigma_begin, sigma_end, num_classes
CSGM_START_ITER = 1155               # csgm's configs: levels c <= start_iter are skipped
CSGM_LOG_SPACING = math.log(CSGM_LADDER[0] / CSGM_LADDER[1]) / (CSGM_LADDER[2] - 1)
# csgm's first level, sigma_c for c = start_iter + 1 of its geometric ladder
CSGM_SIGMA_START = CSGM_LADDER[0] * math.exp(-(CSGM_START_ITER + 1) * CSGM_LOG_SPACING)
STARTS = ("gaussian", "uniform")
PROJECTION = {"sigma_start": 2.0, "sigma_end": 0.01, "n_levels": 150, "steps_each": 3, "step_lr": 1e-4,
              "denoise_last": True}


def uniform_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U[0, 1) noise shaped like x (complex: independently in Re and Im), drawn as ``noise_like`` draws."""
    if x.is_complex():
        u = torch.rand(x.shape + (2,), generator=generator, dtype=x.real.dtype)
        return torch.view_as_complex(u).to(x.device)
    return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)


class ScoreALD(Sampler):
    name = "score-ald"
    LENGTH = "n_levels"
    PRESETS = {
        "reference": dict(sigma_start=CSGM_SIGMA_START, sigma_end=CSGM_LADDER[1],
                          n_levels=CSGM_LADDER[2] - 1 - CSGM_START_ITER, steps_each=3, step_lr=5e-5,
                          start="uniform", likelihood_ratio=5.0, denoise_last=False),
    }

    def __init__(self, sigma_start: float = 1.232, sigma_end: float = 0.0066, n_levels: Optional[int] = None,
                 steps_each: int = 3, step_lr: float = 5e-5, sigma_y: Union[float, str] = 0.0,
                 gamma_scale: float = 1.0, denoise_last: bool = False, start: str = "gaussian",
                 likelihood_ratio: Optional[float] = None, dc=None, **kw):
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
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        if likelihood_ratio is not None:
            check_positive("likelihood_ratio", likelihood_ratio)
            if sigma_y != 0.0 or gamma_scale != 1.0:
                raise ValueError("likelihood_ratio fixes the likelihood gradient's weight (a multiple of the score's "
                                 "norm); sigma_y and gamma_scale do not enter, leave them unset")
        self.n_levels = n_levels or int(round(math.log(sigma_start / sigma_end) / CSGM_LOG_SPACING)) + 1
        self.sigma_start, self.sigma_end, self.steps_each, self.step_lr = sigma_start, sigma_end, steps_each, step_lr
        self.sigma_y, self.gamma_scale, self.denoise_last = sigma_y, gamma_scale, denoise_last
        self.start, self.likelihood_ratio = start, likelihood_ratio
        self.dc = check_dc(dc, self.name)
        if dc is not None and not callable(getattr(dc, "gradient", None)):
            raise TypeError(f"score-ald: dc must offer gradient(x, sigma, reference) (e.g. dc.GradientStep), got "
                            f"{type(dc).__name__}")

    def steps_total(self) -> int:
        return self.n_levels

    def nfe(self) -> int:
        return self.n_levels * self.steps_each + int(self.denoise_last)

    @classmethod
    def problem_settings(cls, A, prior, stated: dict) -> dict:
        if A is not None and A.sampling == "projection":
            return {**PROJECTION, **stated}
        return dict(stated)

    def _noise(self, data, x):
        """The likelihood's noise variance per real component in y_n's units (one value per image): sigma_y^2,
        halved for complex data, whose Re and Im each carry half of E|n|^2 = sigma_y^2; 0 where 'auto' finds no
        estimate."""
        var = noise_variance(self.sigma_y, data, x)
        if var is None:
            warnings.warn(f"ScoreALD(sigma_y='auto'): the operator {data.A.name} cannot estimate its noise from the "
                          f"data; using sigma_y = 0", stacklevel=4)
            return 0.0
        return var / 2 if data.y.is_complex() else var

    def _run(self, x, data, prior, g, callback, bar):
        ladder = [float(s) for s in geometric_sigmas(self.sigma_end, self.sigma_start, self.n_levels)]
        ratio = self.likelihood_ratio
        dc = self.dc if self.dc is not None else GradientStep(self.gamma_scale, ratio)
        dc = dc.bind(data.y, data.A, None if ratio is not None else self._noise(data, x), g)

        def step(x, s, sn, i):  # steps_each Langevin steps at level s; sn only ends the level
            eta = self.step_lr * (s / ladder[-1]) ** 2
            for _ in range(self.steps_each):
                score = prior.score(x, s)
                den = x + s * s * score  # Tweedie: D(x) = x + sigma^2 score
                x = x + eta * (score - dc.gradient(x, s, score)) + (2 * eta) ** 0.5 * noise_like(x, g)
            return x, {"denoised": den}

        x0 = uniform_like(x, g) if self.start == "uniform" else noise_like(x, g) * ladder[0]
        x, _ = run(x0, ladder + [0.0], step, self.name, callback, bar)
        return prior.denoise(x, ladder[-1]) if self.denoise_last else x
