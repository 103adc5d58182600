"""Score-MRI (Chung & Ye, Med. Image Anal. 2022; chapter 7 Algs. 7.1 and 7.2).

VE predictor-corrector sampling (score_sde's reverse-diffusion predictor and Langevin corrector, Song et al.
2021; ``loop.predictor_corrector``), each predictor and corrector step followed, on the iterate and on its
noise-free mean, by the data consistency ``dc`` (default ``dc.Projection``: the projection onto the measured
data, Eq. 7.27)

    x <- x + A^H (y - A x),

    predictor:  x <- x + (a_i^2 - b_i^2) score(x, p_i) + sqrt(a_i^2 - b_i^2) z                 (Eq. 7.26)
    corrector:  x <- x + e score(x, c_i) + sqrt(2 e) z,  e = 2 (snr ||z|| / ||score||)^2      (Eq. 7.28)

(the corrector ``n_corrector`` times per step).

Default (Alg. 7.1's order): ``steps`` = N geometric levels s_0 = sigma_max > ... > s_{N-1} = sigma_min of the
prior, N - 1 steps; step i is the predictor from s_i to s_{i+1} (p_i = a_i = s_i, b_i = s_{i+1}), then the
corrector at the new level c_i = s_{i+1}. The start is x ~ N(0, sigma_max^2) (in Re and Im), the result the last
corrector's noise-free mean. (N - 1)(1 + ``n_corrector``) network evaluations.

Variants follow from the prior and the operator, not from separate code: a complex prior denoises the complex
image; a magnitude prior is applied to Re and Im as two parallel real streams (Alg. 7.1), and the Langevin
step e is then computed for each stream from its own score and noise norms; with ``MultiCoilMRI`` the image is
the SENSE image; with ``CoilwiseMRI`` every coil image is sampled (all coils as one batch, each coil with its own
corrector step) and the result is the operator's ``combine``, the root-sum-of-squares (Alg. 7.2; pass
``combine=False`` for the coil images). The hybrid variant adds, every ``sense_every`` steps, a SENSE step that
ties the coil images to the sensitivity ``maps``: x_c <- S_c sum_k conj(S_k) x_k (the coil images of the
SENSE-combined image), followed by the projection.

Settings that express the published code (``PRESETS``):

- ``schedule="score-sde"``: score_sde's discretisation as its code computes it, in float32, N steps:
  t_i = linspace(1, 1e-5, N); predictor and corrector evaluate the network at the continuous
  p_i = c_i = sigma(t_i) = sigma_min (sigma_max / sigma_min)^t_i; the predictor's pair comes from the discrete
  ladder d_k = exp(linspace(log sigma_min, log sigma_max, N))_k at k = floor(t_i (N - 1)): a_i = d_k,
  b_i = d_{k-1}, and b_i = 0 at k = 0 (the last step: a final denoising step). N (1 + ``n_corrector``) network
  evaluations. The start is at sigma_max.
- ``order``: "predictor-first" (the default; Algs. 7.1/7.2; the coil-wise code ``get_pc_fouriercs_RI_PI_SSOS``,
  whose corrector at t_i follows the predictor at t_i) or "corrector-first" (score_sde's ``pc_sampler`` and the
  single-coil code ``get_pc_fouriercs_RI``: the corrector at t_i, then the predictor at t_i, whose mean is
  returned). On the default schedule the corrector is at the level the iterate is at.
- ``start``: "gaussian" (x ~ N(0, sigma_max^2) in Re and Im) or "real" (real N(0, sigma_max^2) noise: the
  single-coil code's ``sde.prior_sampling`` of the image's shape); ``project_start``: project the start onto the
  data (the single-coil code: ifft2(Fy + fft2(x) (1 - mask))).

Presets: "reference" is the single-coil code (``inference_single-coil.py``: N = 2000, snr 0.16, one corrector
step, corrector first, score-sde schedule, real start noise projected); "reference-coilwise" is the coil-wise
code (``inference_multi-coil_SSOS.py``: N = 500, predictor first, score-sde schedule, complex start noise
unprojected; its corrector runs at sigma(t_i), the level the predictor has just left, where Alg. 7.2 puts it at the
new level). Both take one Langevin step size per image (per coil, per Re/Im stream), where the code averages the
norms over its batch; its batches hold one image (one coil, one stream), so this is the same rule, and several
samples stay independent chains whatever ``max_batch`` is. Data scale: the prior's normalisation of A^+ y
(``base``; the published prior's is |x| / max |x|, which the code applies to the fully sampled image).

The defaults differ from the paper's code deliberately in: N levels and N - 1 predictor steps, without the code's
first corrector at sigma_max and its final denoising step to sigma = 0 (the result is the last corrector's mean at
sigma_min, which holds a sigma_min-sized share of noise in unmeasured k-space); the network is evaluated at the
levels the predictor moves between, not at the continuous sigma(t_i) next to a floored discrete level; the
start is N(0, sigma_max^2) in Re and Im, unprojected (the single-coil code draws real noise, so the Im stream
starts near 0 in the unmeasured k-space); N = 2000 for every variant (the coil-wise code uses 500).

Bugs of the published code that are not reproduced: the coil-wise and hybrid samplers loop over a hard-coded
15 coils and use coil 0's mask for every coil (here: any number of coils, each with its own mask); the hybrid's
SENSE step adds lambda A_S^H (y - A_S x) to every coil image with A_S x = P F (S * x) taken of the coil images
themselves (a SENSE operator applied to coil images, one correction for all coils; every 50 steps from step 0,
lambda from 1 to 0.2) - here it is replaced by the SENSE projection above; the real-valued sampler
(``get_pc_fouriercs_fast``, ``inference_real.py``) recomputes x_mean from the noisy x in its data-consistency step,
so it returns the noisy iterate (not offered here: a real prior on complex k-space data keeps the complex image).
"""
from __future__ import annotations

import math

import torch

from .base import Sampler, check_int, check_positive, noise_like
from .dc import Projection, check_dc
from .loop import ORDERS, PCLevels, pc_levels, predictor_corrector

SCHEDULES = ("ladder", "score-sde")
STARTS = ("gaussian", "real")
SCORE_SDE_EPS = 1e-5  # score_sde / Score-MRI: the reverse SDE is integrated to t = eps


def score_sde_schedule(sigma_min: float, sigma_max: float, n: int) -> tuple:
    """score_sde's VE discretisation for N = n steps, in float32 as its code computes it: the network's sigma
    at each step, sigma(t_i) = sigma_min (sigma_max / sigma_min)^t_i with t_i = linspace(1, eps, n), and the
    predictor's pair (d_k, d_{k-1}) of the ladder d = exp(linspace(log sigma_min, log sigma_max, n)) at
    k = floor(t_i (n - 1)), with d_{-1} = 0. Returns three lists of floats."""
    t = torch.linspace(1.0, SCORE_SDE_EPS, n, dtype=torch.float32)
    net = sigma_min * (sigma_max / sigma_min) ** t
    ladder = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), n, dtype=torch.float32))
    k = (t * (n - 1)).long()
    hi = ladder[k]
    lo = torch.where(k == 0, torch.zeros_like(hi), ladder[(k - 1).clamp_min(0)])
    return net.tolist(), hi.tolist(), lo.tolist()


class ScoreMRI(Sampler):
    name = "score-mri"
    PRESETS = {
        "reference": dict(steps=2000, snr=0.16, n_corrector=1, order="corrector-first", schedule="score-sde",
                          start="real", project_start=True),
        "reference-coilwise": dict(steps=500, snr=0.16, n_corrector=1, order="predictor-first",
                                   schedule="score-sde", start="gaussian", project_start=False),
    }

    def __init__(self, steps: int = 2000, snr: float = 0.16, n_corrector: int = 1, maps=None, sense_every: int = 0,
                 order: str = "predictor-first", schedule: str = "ladder", start: str = "gaussian",
                 project_start: bool = False, dc=None, **kw):
        super().__init__(**kw)
        check_int("steps", steps, 2)
        check_int("n_corrector", n_corrector, 0)
        check_positive("snr", snr)
        check_int("sense_every", sense_every, 0)
        if sense_every and maps is None:
            raise ValueError("the hybrid variant (sense_every > 0) needs the coil sensitivity maps")
        for what, value, known in (("order", order, ORDERS), ("schedule", schedule, SCHEDULES),
                                   ("start", start, STARTS)):
            if value not in known:
                raise ValueError(f"{what} must be one of {', '.join(known)}, got {value!r}")
        self.steps, self.snr, self.n_corrector = steps, snr, n_corrector
        self.maps, self.sense_every = maps, sense_every
        self.order, self.schedule, self.start, self.project_start = order, schedule, start, bool(project_start)
        self.dc = check_dc(dc, self.name)

    def steps_total(self) -> int:
        return self.steps if self.schedule == "score-sde" else self.steps - 1

    def nfe(self) -> int:
        return self.steps_total() * (1 + self.n_corrector)

    def levels(self, prior) -> PCLevels:
        """Per step i: the predictor's network sigma p_i, its pair (a_i, b_i), and the corrector's sigma c_i, and
        the schedule the loop reports (p_0, p_1, ..., then the level the last step ends at)."""
        if self.schedule == "score-sde":
            net, hi, lo = score_sde_schedule(prior.sigma_min, prior.sigma_max, self.steps)
            return PCLevels(net, hi, lo, net, net + [0.0])
        return pc_levels(prior.sigmas(self.steps, "geometric").tolist(), self.order)

    def _run(self, x, data, prior, g, callback, bar):
        levels = self.levels(prior)
        dc = (self.dc if self.dc is not None else Projection()).bind(data.y, data.A, None, g)

        def hybrid(x, mean, i):  # every sense_every steps: the coil images of the SENSE image, made consistent
            if (i + 1) % self.sense_every:
                return x, mean
            return tuple(dc(self._sense(v), levels.lo[i]) for v in (x, mean))

        top = prior.sigma_max if self.schedule == "score-sde" else levels.schedule[0]  # the code: sde.sigma_max
        x0 = (noise_like(x.real, g) * top).to(x.dtype) if self.start == "real" else noise_like(x, g) * top
        if self.project_start:
            x0 = dc(x0, top)
        split = prior.channels == "magnitude" and x.is_complex()  # Re and Im as two streams (Alg. 7.1)
        _, info = predictor_corrector(x0, levels, prior, g, snr=self.snr, n_corrector=self.n_corrector,
                                      order=self.order, dc=dc, split_complex=split,
                                      after=hybrid if self.sense_every else None, name=self.name,
                                      callback=callback, bar=bar)
        return info["mean"]

    def _sense(self, coils):
        """Coil images of the SENSE-combined image: S_c sum_k conj(S_k) x_k."""
        maps = self.maps.to(coils.device)
        return maps * (maps.conj() * coils).sum(dim=-3, keepdim=True)
