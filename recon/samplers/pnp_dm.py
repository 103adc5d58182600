"""PnP-DM: diffusion models as plug-and-play priors by split Gibbs sampling (Wu, Sun, Chen, Zhang, Yue & Bouman,
NeurIPS 2024, Alg. 1).

The posterior p(x | y) ∝ exp(-f(x; y)) p(x), f(x; y) = ||y - A x||^2 / (2 beta_y^2), is relaxed to the joint

    pi_rho(x, z) ∝ exp(-f(z; y) - ||x - z||^2 / (2 rho^2)) p(x),

whose x-marginal is the posterior for data with noise covariance beta_y^2 I + rho^2 A A^H and tends to p(x | y) as
rho -> 0. Split Gibbs sampling alternates its two conditionals, with the coupling rho annealed,
rho_k = max(``rho_start`` ``rho_decay``^k, ``rho_min``), k = 0, ..., ``iterations`` - 1:

1. **Likelihood step**, z ~ pi(z | x) ∝ exp(-||y - A z||^2 / (2 beta_y^2) - ||z - x||^2 / (2 rho_k^2)): a Gaussian
   with precision A^H A / beta_y^2 + I / rho_k^2, drawn exactly by perturb-and-optimise: with n1, n2 ~ N(0, I)
   (in each real component), z solves

       (I + gamma A^H A) z = (x + rho_k n2) + gamma A^H (y + beta_y n1),    gamma = rho_k^2 / beta_y^2,

   solved as z = w + d, w = x + rho_k n2, (I + gamma A^H A) d = gamma A^H (y + beta_y n1 - A w) (the large weight
   gamma of an early rho_k then multiplies a residual and not the data, which single precision needs), by
   conjugate gradients (``cg_iter`` iterations at most from d = 0, stopping at the relative residual ``cg_tol``;
   ``A.normal`` and the Hermitian inner product). The paper samples this Gaussian through the SVD of its linear
   operators; the solve is the same draw for any operator of the contract once CG has converged (two iterations
   when A^H A is a projector, as for a Cartesian single-coil mask or inpainting).
2. **Prior step**, x ~ pi(x | z) ∝ p(x) exp(-||x - z||^2 / (2 rho_k^2)): the posterior of a clean image given the
   noisy image z = x + rho_k n, i.e. the prior's reverse diffusion started from z at noise level rho_k. It runs on
   EDM's rho = 7 levels (``edm_steps`` levels over EDM's [0.002, 80] within the prior's trained range, Karras et
   al. 2022), from rho_k through those below it to 0, by the reverse-diffusion predictor of the toolkit's
   predictor-corrector loop without corrector (``loop.predictor_corrector``; Song et al., ICLR 2021): the
   Euler-Maruyama step of the reverse VE SDE in sigma^2,

       x' = x + (sigma^2 - sigma'^2) s(x, sigma) + sqrt(sigma^2 - sigma'^2) n,    s = (D(x, sigma) - x) / sigma^2,

   with D the prior's Tweedie estimate; the last step, to 0, returns D. Its mean given D is the exact one, and
   where the image is unknown at the scale sigma (Cov(x0 | x) close to sigma^2 I, the regime of the small rho the
   chain ends at) so is its variance; DDPM's ancestral step, whose variance misses (1 - sigma'^2 / sigma^2)^2
   Cov(x0 | x) per step, draws too narrow a conditional at the same number of levels.

The chain starts at x_0 = A^+ y (``Linop.pinv``: zero-filled for MRI, FBP for CT) and each sample is its last
iterate x_K. Per iteration: one CG solve and as many network evaluations as EDM levels below rho_k, plus one.

**Units.** The sampler works with the unit-norm operator A_n and y_n in the prior's range (``base``); ``rho_start``,
``rho_min``, ``sigma_y_min`` and EDM's range are in the network's units and divided by the gain g of the prior's
affine map (``Normalization.affine``; g = 2 for images in [0, 1] and a network in [-1, 1]), as in ``daps``.

**Noise** (beta_y, a std per real component of y_n): from ``sigma_y`` (default "auto": the operator's estimate
``A.noise_std``; a number: the measurement's noise std in its own units, E|n|^2 = sigma_y^2 for complex noise;
None or 0: noiseless), at least ``sigma_y_min`` (``daps.likelihood_variance``). The paper's code takes the known
noise std and divides by it; noiseless data and operators that cannot estimate their noise (CT, image-domain
operators under "auto") are weighed with the floor, which keeps the likelihood step's Gaussian proper and the
condition number of its system, 1 + rho_k^2 / beta_y^2, finite.

**Preset "reference"**, the PnP-DM code (``pnp_edm.py``, ``denoiser_edm.py``, configs/sampler/pnp_edm.yaml,
commands.sh for the linear tasks) step for step: 100 iterations, rho_k = max(10 x 0.9^k, 0.3), the prior step in
its "edm_sde" mode (``convention="code"``; the commands also run its VP, VE and iDDPM discretisations): 100 EDM
levels (rho = 7 over [0.002, 80] within the network's range), started from z at the first level below rho_k (the
code treats z as an image at that level), with the Euler-Maruyama steps of its reverse SDE,

    x' = x + 2 (sigma' - sigma) (x - D(x, sigma)) / sigma + sqrt(2 sigma (sigma - sigma')) n,

without noise on the last step to 0, which returns 2 D - x. The likelihood step is the exact Gaussian draw above.
Not reproduced: the code keeps 20 iterates of one chain after 40 burn-in iterations as its samples, here each of
``n_samples`` independent chains returns its last iterate; the code divides by the stated noise std even when it
is 0, here the floor applies.

**Defaults, deliberately different from the code**: the prior step starts at rho_k itself and takes the
Euler-Maruyama steps in sigma^2 above, whose mean given the Tweedie estimate is exact (the code's steps in sigma,
from a level below rho_k, bias the conditional's mean), and ends with the Tweedie estimate D instead of 2 D - x;
rho_k is at most the prior's largest trained level; the noise is estimated ("auto") and floored.

**Where it applies.** Any linear operator of the contract: Cartesian and non-Cartesian MRI, parallel and fan-beam
CT, image-domain operators. As in ``daps``, a real-valued prior on complex images and a complex prior on real
images are refused by name. PnP-DM samples the posterior (exactly as rho_min -> 0 and with exact conditionals):
its samples carry the posterior's spread, not only its mean.
"""
from __future__ import annotations

from typing import Union

from operators.cg import conjugate_gradient
from recon.priors.schedules import karras_sigmas

from .base import Sampler, check_int, check_positive, noise_like
from .daps import SIGMA_Y_MIN, check_images, check_sigma_y, likelihood_variance, per_item
from .loop import pc_levels, predictor_corrector, run

CONVENTIONS = ("paper", "code")
EDM_RANGE = (0.002, 80.0)  # EDM's noise range (network units), the paper's prior-step discretisation


class PnPDM(Sampler):
    name = "pnp-dm"
    LENGTH = "iterations"
    PRESETS = {"reference": dict(iterations=100, rho_start=10.0, rho_decay=0.9, rho_min=0.3, edm_steps=100,
                                 convention="code")}

    def __init__(self, iterations: int = 100, rho_start: float = 10.0, rho_decay: float = 0.9, rho_min: float = 0.3,
                 edm_steps: int = 100, sigma_y: Union[None, float, str] = "auto", sigma_y_min: float = SIGMA_Y_MIN,
                 cg_iter: int = 50, cg_tol: float = 1e-5, convention: str = "paper", **kw):
        super().__init__(**kw)
        self.iterations = check_int("iterations", iterations, 1)
        self.rho_start = check_positive("rho_start", rho_start)
        self.rho_decay = check_positive("rho_decay", rho_decay)
        if self.rho_decay > 1:
            raise ValueError(f"rho_decay must be in (0, 1] (rho is annealed down), got {rho_decay!r}")
        self.rho_min = check_positive("rho_min", rho_min)
        if self.rho_min > self.rho_start:
            raise ValueError(f"need rho_min <= rho_start, got {rho_min}, {rho_start}")
        self.edm_steps = check_int("edm_steps", edm_steps, 2)
        self.sigma_y = check_sigma_y(sigma_y)
        self.sigma_y_min = check_positive("sigma_y_min", sigma_y_min)
        self.cg_iter = check_int("cg_iter", cg_iter, 1)
        self.cg_tol = check_positive("cg_tol", cg_tol, allow_zero=True)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.convention = convention

    def steps_total(self) -> int:
        return self.iterations

    def nfe(self) -> int:
        """Network evaluations per sample for a prior whose range covers EDM's (in the network's units)."""
        levels = self._edm_levels(EDM_RANGE[0], EDM_RANGE[1])
        total = 0
        for rho in self.rhos():
            below = sum(1 for s in levels if s < rho)
            total += below + (0 if self.convention == "code" else 1)
        return total

    # --- the schedules -------------------------------------------------------------------------------------
    def rhos(self, gain: float = 1.0) -> list:
        """rho_k = max(rho_start rho_decay^k, rho_min), k = 0, ..., iterations - 1 (divided by ``gain``)."""
        return [max(self.rho_start * self.rho_decay ** k, self.rho_min) / gain for k in range(self.iterations)]

    def _edm_levels(self, lo: float, hi: float) -> list:
        return [float(s) for s in karras_sigmas(lo, hi, self.edm_steps)]

    def edm_levels(self, prior) -> list:
        """The prior step's EDM levels (decreasing, prior units): EDM's range within the prior's trained one."""
        gain = prior.normalization.affine[1]
        lo, hi = max(EDM_RANGE[0] / gain, prior.sigma_min), min(EDM_RANGE[1] / gain, prior.sigma_max)
        if not lo < hi:
            raise ValueError(f"pnp-dm: EDM's noise range {EDM_RANGE} (network units) and the prior's trained range "
                             f"[{prior.sigma_min}, {prior.sigma_max}] do not overlap")
        return self._edm_levels(lo, hi)

    # --- the two conditionals ------------------------------------------------------------------------------
    def likelihood_step(self, x, rho, var, data, g):
        """z ~ N((A^H A / beta^2 + I / rho^2)^-1 (A^H y / beta^2 + x / rho^2), (A^H A / beta^2 + I / rho^2)^-1) by
        perturb-and-optimise (module docstring); ``var`` = beta^2 per measurement (``daps.likelihood_variance``)."""
        A, y = data.A, data.y
        n1 = noise_like(y, g)
        n2 = noise_like(x, g)
        gamma = per_item(rho * rho / var, len(A.ishape))
        w = x + rho * n2
        residual = y + per_item(var.sqrt(), len(A.oshape)) * n1 - A(w)
        d = conjugate_gradient(lambda v: v + gamma * A.normal(v), gamma * A.H(residual), max_iter=self.cg_iter,
                               tol=self.cg_tol, ndim=len(A.ishape))
        return w + d

    def prior_step(self, z, rho, levels, prior, g):
        """x ~ p(x | z), z an image at noise level ``rho`` (module docstring)."""
        below = [s for s in levels if s < rho]
        if self.convention == "code":
            if not below:
                return z

            def em(x, s, sn, i):
                den = prior.denoise(x, s)
                nxt = x + 2 * (sn - s) * (x - den) / s
                if sn > 0:
                    nxt = nxt + (2 * s * (s - sn)) ** 0.5 * noise_like(x, g)
                return nxt, {"denoised": den}

            x, _ = run(z, below + [0.0], em, self.name)
            return x
        x, _ = predictor_corrector(z, pc_levels([rho] + below + [0.0]), prior, g, snr=1.0, n_corrector=0,
                                   denoise_last=True, name=self.name)
        return x

    # --- the run -------------------------------------------------------------------------------------------
    def _run(self, x, data, prior, g, callback, bar):
        check_images(prior, x, self.name)
        gain = prior.normalization.affine[1]
        var = likelihood_variance(self.sigma_y, self.sigma_y_min / gain, data)
        levels = self.edm_levels(prior)
        rhos = self.rhos(gain)
        if self.convention != "code":
            rhos = [min(r, prior.sigma_max) for r in rhos]

        def step(x, rho, _next, k):
            z = self.likelihood_step(x, rho, var, data, g)
            nxt = self.prior_step(z, rho, levels, prior, g)
            return nxt, {"denoised": nxt, "z": z}

        x, _ = run(data.A.pinv(data.y).to(x.dtype), rhos + [0.0], step, self.name, callback, bar)
        return x
