"""Score-SDE projection (Song, Shen, Xing & Ermon, ICLR 2022: "Solving inverse problems in medical imaging
with score-based generative models"), the sampler that paper uses for sparse-view CT and undersampled MRI.

VE predictor-corrector sampling on a geometric sigma ladder. Before every predictor and corrector step the
iterate is pulled towards a *noised* measurement, drawn from the forward process of the data,

    y_i = y + sigma_i A z,      z ~ N(0, I)          (A x_i given A x_0 = y, the measurement's own marginal)
    x  <- x + lam A^+ (y_i - A x)                    (lam in [0, 1]; lam = 1 replaces the measured part)

which is the paper's x' = T^-1[lam L P^-1(L) y_i + (1 - lam) L T x + (I - L) T x] with A = P(L) T. The
pseudo-inverse ``inverse`` can be "adjoint" (A^H; exact when A A^H = I, as for a Cartesian mask), "cg"
(``cg_iter`` conjugate-gradient steps on the minimum-norm least-squares problem A^H A d = A^H r from d = 0),
"pinv" (the operator's own ``pinv``: FBP for CT, zero-filled for MRI), "fbp" (the same, refused unless the
operator's pseudo-inverse is filtered backprojection: the paper's CT choice) or a callable r -> d.
The last step projects the noise-free mean with the clean measurement (sigma = 0). Defaults: 1000 steps,
1 corrector step, snr 0.16 (the paper's CT settings use lam around 1 for noiseless data; lower it for noisy
measurements).
"""
from __future__ import annotations

from typing import Callable, Union

from operators.cg import conjugate_gradient

from .base import Sampler, check_int, check_positive, noise_like
from .loop import run
from .steps import langevin, reverse_diffusion

INVERSES = ("adjoint", "cg", "pinv", "fbp")


class ScoreSDE(Sampler):
    name = "score-sde"

    def __init__(self, steps: int = 1000, snr: float = 0.16, n_corrector: int = 1, lam: float = 1.0,
                 inverse: Union[str, Callable] = "cg", cg_iter: int = 10, **kw):
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

    def steps_total(self) -> int:
        return self.steps - 1

    def nfe(self) -> int:
        return (self.steps - 1) * (1 + self.n_corrector)

    def _pinv(self, A) -> Callable:
        if callable(self.inverse):
            return self.inverse
        if self.inverse == "adjoint":
            return A.H
        if self.inverse == "fbp" and A.pinv_method != "fbp":
            raise ValueError(f"inverse='fbp' needs an operator whose pseudo-inverse is filtered backprojection "
                             f"(CT); {A.name}'s is {A.pinv_method!r} (use inverse='pinv' or 'cg')")
        if self.inverse in ("pinv", "fbp"):
            return A.pinv
        ndim = len(A.ishape)
        return lambda r: conjugate_gradient(A.normal, A.H(r), max_iter=self.cg_iter, ndim=ndim)

    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, "geometric").tolist()
        y, A = data.y, data.A
        pinv = self._pinv(A)

        def pull(v, s):
            y_s = y + s * A(noise_like(v, g)) if s > 0 else y
            return v + self.lam * pinv(y_s - A(v))

        def step(x, s, sn, i):
            x = pull(x, s)
            score = prior.score(x, s)
            den = x + s * s * score
            x, mean = reverse_diffusion(x, score, s, sn, noise_like(x, g))
            for _ in range(self.n_corrector):
                x = pull(x, sn)
                x, mean = langevin(x, prior.score(x, sn), self.snr, noise_like(x, g))
            return x, {"denoised": den, "mean": mean}

        _, info = run(noise_like(x, g) * sig[0], sig, step, self.name, callback, bar)
        return pull(info["mean"], 0.0)
