"""Score-MRI (Chung & Ye, Med. Image Anal. 2022; chapter 7 Algs. 7.1 and 7.2).

VE predictor-corrector sampling over a geometric sigma ladder (score_sde's discretisation), each predictor
and corrector step followed by the projection x <- x + A^H (y - A x):

    predictor:  x <- x + (s_i^2 - s_{i+1}^2) score(x, s_i) + sqrt(s_i^2 - s_{i+1}^2) z
    corrector:  x <- x + e score(x, s_{i+1}) + sqrt(2 e) z,  e = 2 (snr ||z|| / ||score||)^2   (``n_corrector`` times)

Variants follow from the prior and the operator, not from separate code: a complex prior denoises the
complex image; a magnitude prior is applied to Re and Im as two parallel streams (Alg. 7.1); with
``MultiCoilMRI`` the image is the SENSE image; with ``CoilwiseMRI`` every coil image is sampled (all coils
as one batch) and the result is the operator's ``combine``, the root-sum-of-squares (Alg. 7.2; pass
``combine=False`` for the coil images). The hybrid
variant adds, every ``sense_every`` steps, a SENSE step that ties the coil images to the sensitivity ``maps``:
x_c <- S_c sum_k conj(S_k) x_k (the coil images of the SENSE-combined image), followed by the projection.
Defaults from its code: snr 0.16, 1 corrector step, 2000 steps single-coil, 500 multi-coil.
The returned image is the noise-free mean of the last step.
"""
from __future__ import annotations

from .base import Sampler, check_int, check_positive, noise_like
from .dc import project
from .loop import run
from .steps import langevin, reverse_diffusion


class ScoreMRI(Sampler):
    name = "score-mri"

    def __init__(self, steps: int = 2000, snr: float = 0.16, n_corrector: int = 1, maps=None, sense_every: int = 0,
                 **kw):
        super().__init__(**kw)
        check_int("steps", steps, 2)
        check_int("n_corrector", n_corrector, 0)
        check_positive("snr", snr)
        check_int("sense_every", sense_every, 0)
        if sense_every and maps is None:
            raise ValueError("the hybrid variant (sense_every > 0) needs the coil sensitivity maps")
        self.steps, self.snr, self.n_corrector = steps, snr, n_corrector
        self.maps, self.sense_every = maps, sense_every

    def steps_total(self) -> int:
        return self.steps - 1

    def nfe(self) -> int:
        return (self.steps - 1) * (1 + self.n_corrector)

    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, "geometric").tolist()
        y, A = data.y, data.A

        def step(x, s, sn, i):
            score = prior.score(x, s)
            den = x + s * s * score
            x, mean = reverse_diffusion(x, score, s, sn, noise_like(x, g))
            x, mean = project(x, y, A), project(mean, y, A)
            for _ in range(self.n_corrector):
                x, mean = langevin(x, prior.score(x, sn), self.snr, noise_like(x, g))
                x, mean = project(x, y, A), project(mean, y, A)
            if self.sense_every and (i + 1) % self.sense_every == 0:
                x, mean = (project(self._sense(v), y, A) for v in (x, mean))
            return x, {"denoised": den, "mean": mean}

        _, info = run(noise_like(x, g) * sig[0], sig, step, self.name, callback, bar)
        return info["mean"]

    def _sense(self, coils):
        """Coil images of the SENSE-combined image: S_c sum_k conj(S_k) x_k."""
        maps = self.maps.to(coils.device)
        return maps * (maps.conj() * coils).sum(dim=-3, keepdim=True)
