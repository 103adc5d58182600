"""Score-SDE projection (Song, Shen, Xing & Ermon, ICLR 2022: "Solving inverse problems in medical imaging
with score-based generative models"), the sampler that paper uses for sparse-view CT and undersampled MRI.

VE predictor-corrector sampling (``loop.predictor_corrector``) on a geometric sigma ladder. Before every predictor
and corrector step the iterate is pulled towards a *noised* measurement, drawn from the forward process of the
data (the default ``dc.NoisedProjection(lam, inverse, cg_iter)``),

    y_i = y + sigma_i A z,      z ~ N(0, I)          (A x_i given A x_0 = y, the measurement's own marginal)
    x  <- x + lam A^+ (y_i - A x)                    (lam in [0, 1]; lam = 1 replaces the measured part)

at the level the step starts from (the predictor's sigma_i, the corrector's sigma_{i+1}):

    predictor:  x <- x + (sigma_i^2 - sigma_{i+1}^2) score(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z
    corrector:  x <- x + e score(x, sigma_{i+1}) + sqrt(2 e) z,   e = 2 (snr ||z|| / ||score||)^2

The pseudo-inverse ``inverse`` is "adjoint", "cg" (``cg_iter`` CG steps), "pinv", "fbp" or a callable
(``dc.NoisedProjection``). The last step's noise-free mean is pulled with the clean measurement (sigma = 0).
Defaults: 1000 steps, 1 corrector step, snr 0.16, lam = 1 (the paper's CT settings use lam around 1 for
noiseless data; lower it for noisy measurements). ``dc=`` replaces the pull (and ``lam``, ``inverse``,
``cg_iter`` with it). For projection data (``for_problem``, ``A.sampling == "projection"``) the defaults are
``PROJECTION`` (fewer steps, the CG inverse).
"""
from __future__ import annotations

from typing import Callable, Union

from .base import Sampler, check_int, check_positive, noise_like
from .dc import INVERSES, NoisedProjection, check_dc
from .loop import pc_levels, predictor_corrector

PROJECTION = {"steps": 300, "inverse": "cg", "cg_iter": 10}  # the toolkit's CT settings


class ScoreSDE(Sampler):
    name = "score-sde"

    def __init__(self, steps: int = 1000, snr: float = 0.16, n_corrector: int = 1, lam: float = 1.0,
                 inverse: Union[str, Callable] = "cg", cg_iter: int = 10, dc=None, **kw):
        super().__init__(**kw)
        check_int("steps", steps, 2)
        check_int("n_corrector", n_corrector, 0)
        check_positive("snr", snr)
        if not 0 <= lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if not callable(inverse) and inverse not in INVERSES:
            raise ValueError(f"inverse must be one of {INVERSES} or a callable, got {inverse!r}")
        check_int("cg_iter", cg_iter, 1)
        self.steps, self.snr, self.n_corrector, self.lam = steps, snr, n_corrector, lam
        self.inverse, self.cg_iter = inverse, cg_iter
        self.dc = check_dc(dc, self.name)

    def steps_total(self) -> int:
        return self.steps - 1

    def nfe(self) -> int:
        return (self.steps - 1) * (1 + self.n_corrector)

    @classmethod
    def problem_settings(cls, A, prior, stated: dict) -> dict:
        if A is not None and A.sampling == "projection":
            return {**PROJECTION, **stated}
        return dict(stated)

    def _run(self, x, data, prior, g, callback, bar):
        levels = pc_levels(prior.sigmas(self.steps, "geometric").tolist())
        dc = self.dc if self.dc is not None else NoisedProjection(self.lam, self.inverse, self.cg_iter)
        dc = dc.bind(data.y, data.A, None, g)
        _, info = predictor_corrector(noise_like(x, g) * levels.schedule[0], levels, prior, g, snr=self.snr,
                                      n_corrector=self.n_corrector, dc=dc, dc_before=True, name=self.name,
                                      callback=callback, bar=bar)
        return dc(info["mean"], 0.0)
