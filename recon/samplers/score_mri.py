"""Score-MRI (Chung & Ye, Med. Image Anal. 2022; chapter 7 Algs. 7.1 and 7.2).

VE predictor-corrector sampling over a geometric sigma ladder (score_sde's discretisation), each predictor
and corrector step followed by the projection x <- x + A^H (y - A x):

    predictor:  x <- x + (s_i^2 - s_{i+1}^2) score(x, s_i) + sqrt(s_i^2 - s_{i+1}^2) z
    corrector:  x <- x + e score(x, s_{i+1}) + sqrt(2 e) z,  e = 2 (snr ||z|| / ||score||)^2   (``n_corrector`` times)

Variants follow from the prior and the operator, not from separate code: a complex prior denoises the
complex image; a magnitude prior is applied to Re and Im as two parallel streams (Alg. 7.1); with
``MultiCoilMRI`` the image is the SENSE image; with ``CoilwiseMRI`` every coil image is sampled (all coils
as one batch) and the result is combined by root-sum-of-squares (Alg. 7.2; ``combine="rss"``). The hybrid
variant adds, every ``sense_every`` steps, a SENSE step that ties the coil images to the sensitivity ``maps``:
x_c <- S_c sum_k conj(S_k) x_k (the coil images of the SENSE-combined image), followed by the projection.
Defaults from its code: snr 0.16, 1 corrector step, 2000 steps single-coil, 500 multi-coil.
The returned image is the noise-free mean of the last step.
"""
from __future__ import annotations

from typing import Optional

from operators.mri import CoilwiseMRI

from .base import Sampler, check_finite, noise_like
from .dc import project
from .steps import langevin, reverse_diffusion


class ScoreMRI(Sampler):
    name = "score-mri"

    def __init__(self, steps: int = 2000, snr: float = 0.16, n_corrector: int = 1, combine: Optional[str] = "auto",
                 maps=None, sense_every: int = 0, **kw):
        super().__init__(**kw)
        if steps < 2 or n_corrector < 0 or snr <= 0:
            raise ValueError(f"need steps >= 2, n_corrector >= 0 and snr > 0, got {steps}, {n_corrector}, {snr}")
        if sense_every and maps is None:
            raise ValueError("the hybrid variant (sense_every > 0) needs the coil sensitivity maps")
        self.steps, self.snr, self.n_corrector, self.combine = steps, snr, n_corrector, combine
        self.maps, self.sense_every = maps, sense_every

    def steps_total(self) -> int:
        return self.steps

    def nfe(self) -> int:
        return (self.steps - 1) * (1 + self.n_corrector)

    def _run(self, y, A, prior, g, callback, bar):
        sig = [float(s) for s in prior.sigmas(self.steps, "geometric")]
        x = noise_like(A.H(y), g) * sig[0]
        mean = x
        for i in range(len(sig) - 1):
            s, sn = sig[i], sig[i + 1]
            x, mean = reverse_diffusion(x, prior.score(x, s), s, sn, noise_like(x, g))
            x, mean = project(x, y, A), project(mean, y, A)
            for _ in range(self.n_corrector):
                x, mean = langevin(x, prior.score(x, sn), self.snr, noise_like(x, g))
                x, mean = project(x, y, A), project(mean, y, A)
            if self.sense_every and (i + 1) % self.sense_every == 0:
                x, mean = (project(self._sense(v), y, A) for v in (x, mean))
            check_finite(x, i, s, self.name)
            if callback is not None:
                callback(i, sn, x, mean)
            bar.update(1)
        bar.update(1)
        return mean

    def _sense(self, coils):
        """Coil images of the SENSE-combined image: S_c sum_k conj(S_k) x_k."""
        maps = self.maps.to(coils.device)
        return maps * (maps.conj() * coils).sum(dim=-3, keepdim=True)

    def _finalize(self, x, A):
        if isinstance(A, CoilwiseMRI) and self.combine in ("auto", "rss"):
            return x.abs().square().sum(dim=-3).sqrt().to(x.dtype)
        return super()._finalize(x, A)
