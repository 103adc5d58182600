"""DDS: Decomposed Diffusion Sampler (Chung, Lee & Ye, ICLR 2024; chapter 7 Eqs. 7.39-7.40).

At each of ``steps`` DDIM steps (``loop.ddim``) the Tweedie estimate x0 = D(x, sigma) is made consistent with the
data by a few conjugate-gradient iterations warm-started at x0 (``dc``, a ``dc.DataConsistency``), then

    x' = x0' + sqrt(sigma'^2 - s~^2) eps + s~ z,    eps = (x - x0) / sigma

(DDIM with stochasticity ``eta``); the last step returns the data-consistent x0'. ``eta_convention`` says how
eta scales the injected noise: "ddim" (default) s~ = eta sigma' sqrt(sigma^2 - sigma'^2)/sigma, DDIM's (Song et
al. 2021, Eq. 16; eta = 1 is ancestral DDPM sampling); "dds" s~ = eta sigma', the DDS code's, which in its VP
coordinates reads x_vp' = sqrt(abar') x0' + sqrt(1 - abar') (eta z + sqrt(1 - eta^2) eps). The two agree at
eta = 0 only; the DDS code's eta = 0.85 is in the "dds" convention, the chapter's DDIM formula (Eq. 7.21) in the
"ddim" one. Like every sampler, DDS works with the unit-norm operator and data in the prior's range (``base``),
so its weights are independent of the operator's scale.

**Data consistency** (``dc=``: any ``dc.DataConsistency``; None: the rule below, ``DDS.default_dc``, from the
settings and the run). The measurement's noise ``sigma_y`` (the noise std per measured sample in the
measurement's units, E|n|^2 = sigma_y^2) is bound to the step as sigma_y^2 in the normalised units:

- a number; 0 or None: noiseless;
- "auto": the operator's estimate from the data (``A.noise_std``, the k-space periphery for Cartesian and
  non-Cartesian MRI); where the operator cannot tell, noiseless, with a warning;
- "default" (the default): "auto" without the warning, unless a fixed ``gamma`` or ``tv_z`` gives the data
  weight (then None). After construction ``sigma_y`` holds what this resolved to.

The rule (``default_dc``), given the bound noise:

1. ``tv_z`` > 0 (a stack of slices): ``dc.TVz(tv_z, tv_rho)``, one ADMM iteration per step of
   1/2 ||A x - y||^2 + tv_z L ||D_z x||_1 (DDS's 3-D variant; L the largest eigenvalue of A^H A); the network
   still sees single slices. The ADMM variables persist across diffusion steps, so ``tv_rho`` stays small
   (experiments/RESULTS.md, "Slice stacks: TV coupling along z").
2. a noise (stated or estimated) and an in-plane TV: ``dc.TV(tv_xy, lam=lam)``, one ADMM iteration of
   1/2 ||A x - y||^2 + tv_xy max|A^H y| ||D x||_{2,1} plus ||x - x0||^2 / (2 gamma_t) per step;
3. a noise and no TV: ``dc.ConjugateGradient(lam=lam)``, CG on (I + gamma_t A^H A) x = x0 + gamma_t A^H y
   with DiffPIR's weight gamma_t = sigma_t^2 / (lam sigma_y^2) (Zhu et al., CVPR 2023): the Tweedie estimate is
   trusted like data of variance sigma_t^2 / lam, so the data rule early and the prior denoises late what the
   data cannot resolve. ``lam`` is DiffPIR's lambda; with a learned prior on data it never saw, lam < 1
   (trusting the data more) does better than the exact-prior choice lam > 1, and more CG iterations need a
   larger lam (experiments/RESULTS.md, "DDS with the data weighed by its noise");
4. no noise and an in-plane TV: ``dc.TV(tv_xy)`` without the proximal term;
5. otherwise the paper's CG: ``dc.ConjugateGradient(gamma=gamma)``, noiseless (A^H A x = A^H y) unless a fixed
   ``gamma``.

CG iterations: ``cg_iter``, else ``CG_ITER_NOISY`` with a noise weight (the system is better posed) and the paper's
``CG_ITER`` otherwise. The in-plane TV weight ``tv_xy`` has the meaning of ``recon.classical.tv``'s weight; unless
stated it is ``TV_XY``, 0 with a fixed ``gamma`` or ``tv_z``, and 0 where the operator samples non-Cartesian
k-space (``A.sampling``), on which it cost PSNR (experiments/RESULTS.md, "DDS with an in-plane TV in its data
consistency" and "DDS against gridding, CG-SENSE and TV at 48 golden-angle spokes"). The learned prior
is confidently wrong where the data leave the image open and fills that null space with texture it invents; a
small TV weight removes most of it. The TV is not part of the paper's posterior: on an exact Gaussian prior it
biases the samples (pass ``tv_xy=0`` there); the sample spread is discussed in ``recon.uncertainty``.

**For a problem** (``DDS.for_problem(A, prior, **settings)``): on projection data the steps follow the views
(``steps_for``): ``STEPS_LIMITED`` when they cover less than ``LIMITED_BELOW`` degrees, else the paper's
``STEPS`` times the sparsity of the views for the grid (the grid side over the views, relative to ``STEPS``'s
case of ``SPARSE_VIEWS_PER_PIXEL``), at most ``STEPS_SPARSE_MAX``: a missing wedge, or views far apart for the
grid, leave the prior a large null space, and more steps give the TV's split variables more iterations to
settle it. ``tv_z`` > 0 makes the slice coupling the data consistency: a stated ``sigma_y`` and ``tv_xy`` are
set aside.

**Preset "reference"** (``DDS.from_preset("reference")``), the DDS code (``solver_2d.py``, main.py's defaults)
step for step: 50 steps at the timesteps 980, 960, ..., 20, 0 (``schedule="leading"``: ``range(0, 1000, 20)``),
eta = 0.85 in the "dds" convention, noiseless data consistency (main.py's ``sigma_y`` 0: 5 CG iterations on
A^H A x = A^H y warm-started at x0; its evaluation scripts' ``sigma_y`` 0.01 selects the weighted CG with the
code's ``gamma`` 1.0: pass ``gamma=...``, in the units of the unit-norm operator), no TV, no clipping of x0 and the
fixed DDIM variance (the code uses neither a clip nor the learned variance), the start x_T ~ N(0, I) in the
network's VP coordinates (``start="vp"``), and the last step, at t = 0, returning the data-consistent x0'.
Not reproduced, because they are errors of the code: its CG for complex data uses sum r^2 instead of
sum |r|^2 (not the Hermitian inner product); its noisy MRI branch builds the right-hand side as
x0 + gamma (1 + i) A^H y (A^H y, already complex, is added to both the real and imaginary channels); its
noiseless MRI branch converts A^H y to complex a second time, which leaves an empty tensor and fails; and its loop
``if j != 0`` is off by one: the step from t = 20 to t = 0 returns the clean estimate instead of a DDIM step, and
the last network evaluation, at t = 0, is spent on that clean image. The code's CG also runs over the whole
batch with one step size (per sample here; the same for its batch of 1) and stops at an absolute residual of
1e-5 (here all ``cg_iter`` iterations run unless the residual reaches rounding level).

**Defaults, deliberately different from the paper and code**: the schedule "auto" (timesteps 999, 979, ..., 0,
evenly spaced over the whole ladder), eta = 1 in the DDIM convention (the paper: 0.85 in its own), the data
weighed by the noise with ``CG_ITER_NOISY`` iterations and lam = 0.5, the in-plane TV, and the start sigma_T z in
VE coordinates (``start="sigma"``); each was chosen on validation data (experiments/RESULTS.md).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

from .base import Sampler, check_int, noise_like, noise_variance
from .dc import TV, ConjugateGradient, TVz, check_dc
from .loop import ddim
from .steps import CONVENTIONS, vp_start


CG_ITER = 5          # the paper's CG iterations per step (noiseless CG, fixed gamma, TV-z)
CG_ITER_NOISY = 10   # with a noise weight: the system is better posed and more iterations pay
TV_XY = 3e-4         # the default in-plane TV weight (chosen on the MRI and CT validation slices)
STEPS = 50           # the paper's steps; for projection data with full coverage and views dense for the grid
STEPS_LIMITED = 200  # for projection data covering a limited angle (experiments/RESULTS.md, "Limited angle: 200
#                       DDS steps on every grid")
LIMITED_BELOW = 170.0  # an angular coverage (degrees, ``Linop.angular_coverage``) below this is a limited angle
SPARSE_VIEWS_PER_PIXEL = 30 / 128  # views per pixel of grid side of the case ``STEPS`` was chosen on
STEPS_SPARSE_MAX = 200  # the most steps for sparse views (experiments/RESULTS.md, "DDS's steps for sparse views
#                         on large grids")
SIGMA_Y = ("default", "auto")  # the named noise settings (a number or None otherwise)
_WARNED = set()


def _warn_no_estimate(name: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"DDS(sigma_y='auto'): the operator {name} cannot estimate its noise from the data; using "
                      f"the noiseless normal equations (give sigma_y in the measurement's units instead)",
                      stacklevel=3)


class DDS(Sampler):
    name = "dds"
    PRESETS = {"reference": {"steps": 50, "schedule": "leading", "eta": 0.85, "eta_convention": "dds",
                             "cg_iter": 5, "sigma_y": None, "tv_xy": 0.0, "start": "vp"}}

    def __init__(self, steps: int = STEPS, eta: float = 1.0, cg_iter: Optional[int] = None,
                 gamma: Optional[float] = None, schedule: str = "auto", tv_z: float = 0.0, tv_rho: float = 0.01,
                 sigma_y: Union[None, float, str] = "default", lam: float = 0.5, tv_xy: Optional[float] = None,
                 eta_convention: str = "ddim", start: str = "sigma", dc=None, **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        if cg_iter is not None:
            check_int("cg_iter", cg_iter, 0)
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if eta_convention not in CONVENTIONS:
            raise ValueError(f"eta_convention must be one of {CONVENTIONS}, got {eta_convention!r}")
        if start not in ("sigma", "vp"):
            raise ValueError(f"start must be 'sigma' or 'vp', got {start!r}")
        self.eta_convention, self.start = eta_convention, start
        if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be > 0 (or None for the noiseless normal equations), got {gamma}")
        if not (math.isfinite(tv_z) and tv_z >= 0):
            raise ValueError(f"tv_z must be >= 0, got {tv_z}")
        weighted = gamma is not None or tv_z > 0  # the data weight is given otherwise than by the noise
        self._tv_stated = tv_xy is not None
        if tv_xy is None:
            tv_xy = 0.0 if weighted else TV_XY
        if isinstance(tv_xy, bool) or not isinstance(tv_xy, (int, float)) or not (math.isfinite(tv_xy) and tv_xy >= 0):
            raise ValueError(f"tv_xy must be a number >= 0 (the in-plane TV weight, 0 for none), got {tv_xy!r}")
        if tv_xy > 0 and tv_z > 0:
            raise ValueError("tv_xy and tv_z cannot be combined; give one of them")
        if isinstance(sigma_y, str):
            if sigma_y not in SIGMA_Y:
                raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units, 'auto' or "
                                 f"'default', got {sigma_y!r}")
        elif sigma_y is not None:
            if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not (
                    math.isfinite(sigma_y) and sigma_y >= 0):
                raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units, 'auto' or "
                                 f"'default', got {sigma_y!r}")
        self._warn_auto = sigma_y == "auto"  # a fallback from an 'auto' asked for by name is warned about
        if sigma_y == "default":
            sigma_y = None if weighted else "auto"
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be > 0, got {lam}")
        if sigma_y is not None and weighted:
            raise ValueError("give the data weight one way: sigma_y (a weight per step from the noise) or gamma "
                             "(one fixed weight) or tv_z, not several")
        if gamma is not None and tv_xy > 0:
            raise ValueError("gamma and tv_xy cannot be combined; give one of them")
        self.dc = check_dc(dc, self.name)
        if dc is not None and (gamma is not None or tv_z > 0 or cg_iter is not None or self._tv_stated):
            raise ValueError("dc= is the data-consistency step itself: give it, or gamma / tv_z / tv_xy / cg_iter "
                             "for the default one, not both")
        self.steps, self.eta, self.cg_iter, self.gamma, self.schedule = steps, eta, cg_iter, gamma, schedule
        self.tv_z, self.tv_rho = tv_z, tv_rho
        self.sigma_y, self.lam, self.tv_xy = sigma_y, lam, float(tv_xy)

    def steps_total(self) -> int:
        return self.steps

    # --- defaults --------------------------------------------------------------------------------------------
    @classmethod
    def steps_for(cls, A) -> Optional[int]:
        """The steps for the views of projection data (module docstring); None for other measurements (the
        constructor's default)."""
        coverage = None if A is None else A.angular_coverage
        if coverage is None:
            return None
        if coverage < LIMITED_BELOW:
            return STEPS_LIMITED
        ratio = SPARSE_VIEWS_PER_PIXEL * max(A.ishape[-2:]) / max(1, A.n_views or 0)
        return int(min(STEPS_SPARSE_MAX, max(STEPS, round(STEPS * ratio))))

    @classmethod
    def problem_settings(cls, A, prior, stated: dict) -> dict:
        settings = dict(stated)
        if settings.get("tv_z", 0) > 0:  # the slice coupling is the data consistency
            settings.pop("tv_xy", None)
            settings["sigma_y"] = None
        if "steps" not in settings:
            steps = cls.steps_for(A)
            if steps is not None:
                settings["steps"] = steps
        return settings

    def default_dc(self, A, noise_var):
        """The data-consistency step when none is given (module docstring, "the rule"): from the settings, the
        bound noise ``noise_var`` (sigma_y^2 in the normalised units, or None) and what ``A`` samples."""
        cg = self.cg_iter if self.cg_iter is not None else (CG_ITER_NOISY if noise_var is not None else CG_ITER)
        tv_xy = self.tv_xy
        if not self._tv_stated and A.sampling == "non-cartesian":
            tv_xy = 0.0
        if self.tv_z > 0:
            return TVz(self.tv_z, self.tv_rho, max(cg, 1))
        if noise_var is not None:
            return TV(tv_xy, cg_iter=max(cg, 1), lam=self.lam) if tv_xy > 0 else ConjugateGradient(cg, lam=self.lam)
        if tv_xy > 0:
            return TV(tv_xy, cg_iter=max(cg, 1))
        return ConjugateGradient(cg, gamma=self.gamma)

    # --- the run ---------------------------------------------------------------------------------------------
    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, self.schedule).tolist() + [0.0]
        noise_var = self._noise(data, x)
        dc = self.dc if self.dc is not None else self.default_dc(data.A, noise_var)
        dc = dc.bind(data.y, data.A, noise_var, g)
        z = noise_like(x, g)
        x = vp_start(z, sig[0], prior.normalization.affine) if self.start == "vp" else z * sig[0]
        x, _ = ddim(x, sig, prior.denoise, eta=self.eta, generator=g, dc=dc, convention=self.eta_convention,
                    name=self.name, callback=callback, bar=bar)
        return x

    def _noise(self, data, x):
        """sigma_y^2 in the normalised data's units, shaped to broadcast against the images, or None for the
        noiseless normal equations (no sigma_y, sigma_y = 0, or 'auto' where the operator cannot estimate it)."""
        if self.sigma_y is None or self.sigma_y == 0:
            return None
        var = noise_variance(self.sigma_y, data, x)
        if var is None:
            if self._warn_auto:
                _warn_no_estimate(data.A.name)
            return None
        if not bool(var.isfinite().all()) or not bool((var > 0).all()):
            return None
        return var
