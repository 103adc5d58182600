"""DDS: Decomposed Diffusion Sampler (Chung, Lee & Ye, ICLR 2024; chapter 7 Eqs. 7.39-7.40).

At each of ``steps`` DDIM steps: the Tweedie estimate x0 = D(x, sigma) is moved by ``cg_iter`` conjugate-gradient
iterations on (I + gamma A^H A) x = x0 + gamma A^H y (or A^H A x = A^H y when ``gamma`` is None),
warm-started at x0; then x' = x0' + sqrt(sigma'^2 - s~^2) eps + s~ z with eps = (x - x0)/sigma the network's
noise estimate (DDIM with stochasticity ``eta``). The last step returns the data-consistent x0'.
``eta_convention`` says how eta scales the injected noise: "ddim" (default) s~ = eta sigma' sqrt(sigma^2 -
sigma'^2)/sigma, DDIM's (Song et al. 2021, Eq. 16; eta = 1 is ancestral DDPM sampling); "dds" s~ = eta sigma',
the DDS code's, which in its VP coordinates reads x_vp' = sqrt(abar') x0' + sqrt(1 - abar') (eta z +
sqrt(1 - eta^2) eps). The two agree at eta = 0 only; the DDS code's eta = 0.85 (main.py's default and its
evaluation scripts) is in the "dds" convention, the chapter's DDIM formula (Eq. 7.21) in the "ddim" one.
Defaults: 50 steps, eta = 1 in the DDIM convention, and the data weighed by the measurement's
noise (``sigma_y="auto"``, ``lam`` = 0.5, 10 CG iterations; below), with an in-plane TV of weight 3e-4 in the
data-consistency step (``tv_xy``, below). Where the operator cannot estimate its noise (CT, image-domain
operators) or ``gamma`` or ``tv_z`` is given, the CG is the paper's: 5 iterations, noiseless unless ``gamma``
(``gamma`` and ``tv_z`` turn the TV off). The sample spread: on an exact
Gaussian posterior 0.8-1.0 of the true variance, on real data too narrow at every setting (see
``recon.uncertainty`` and the calibration study). The CG uses the Hermitian inner product.

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
evenly spaced over the whole ladder), eta = 1 in the DDIM convention (the paper: 0.85 in its own; at the same cost
eta = 1 gave a higher PSNR on every MRI test set and on sparse-view CT, and -0.1 to 0 dB at CT 0-120 degrees),
the noise-weighted CG with 10 iterations and the in-plane TV (below), and the start sigma_T z in VE coordinates
(``start="sigma"``).
Like every sampler, DDS works with the unit-norm operator and data in the prior's range (``base``), so
``gamma`` weighs the data against the Tweedie estimate independently of the operator's scale.

**Noisy data** (``sigma_y``). The noiseless CG fits the measurement's noise. With ``sigma_y`` (the noise std
per measured sample in the measurement's units, E|n|^2 = sigma_y^2) or ``sigma_y="auto"`` (estimated from the
data by the operator, ``A.noise_std``: the k-space periphery for Cartesian and non-Cartesian MRI; where the
operator cannot tell, the noiseless CG, with a warning if 'auto' was asked for by name), each step weighs the data as DiffPIR does (Zhu et al., CVPR 2023): the
Tweedie estimate is trusted like data of variance sigma_t^2 / lam, so the CG runs on
(I + gamma_t A^H A) x = x0 + gamma_t A^H y with gamma_t = sigma_t^2 / (lam sigma_y^2), large early (the data
rule), small late (the prior denoises what the data cannot resolve). ``lam`` is DiffPIR's lambda: with an exact
prior the Tweedie error is well below sigma_t and lam > 1 is right; with a learned prior on data it never saw a
smaller lam, trusting the data more, does better: on the MRI validation slices (template held-out slices and
synthetic random contrasts at 1.0 and 1.4 mm; ``experiments/dds_settings_check.py``) lam = 0.5 with 10 CG
iterations gave 36.52 dB against 34.72 for the noiseless CG with 5 (lam 0.25 with 10 iterations: 36.38; with 20
iterations lam 0.25 / 0.5 / 1: 35.66 / 36.31 / 36.53). More CG iterations need a larger lam: they converge
further towards the data.

For a stack of slices (measurement (..., S, ...), images (..., S, H, W)), ``tv_z`` > 0 couples the slices: the
CG step becomes one ADMM iteration of 1/2 ||A x - y||^2 + tv_z L ||D_z x||_1 per diffusion step (DDS's 3-D
variant; ``dc.TVzConsistency``, L the largest eigenvalue of A^H A, ADMM penalty ``tv_rho`` L); the network
still sees single slices. The ADMM variables persist across diffusion steps, so keep ``tv_rho`` small (0.01):
at 0.1 the iteration drifts (experiments/RESULTS.md).

``tv_xy`` > 0 (the default, 3e-4) puts an in-plane total variation into the same step: one ADMM iteration of
1/2 ||A x - y||^2 + tv_xy max|A^H y| ||D x||_{2,1} per diffusion step, plus ||x - x0||^2 / (2 gamma_t) with a noise
weight (``dc.TVConsistency``; ``tv_xy`` has the meaning of ``recon.classical.tv``'s weight; 0 for the plain CG).
The learned prior is confidently wrong where the data leave the image open and fills that null space with
texture it invents; a small TV weight removes most of it. 3e-4 was chosen on validation slices only:
- MRI (``experiments/dds_settings_check.py``: template held-out slices and synthetic random contrasts, 4x):
  36.52 dB without, 36.80 / 37.20 / 37.32 / 35.90 dB at 3e-5 / 1e-4 / 3e-4 / 1e-3;
- CT (``anatomy-val``, noiseless, ``ct-phantom-128``): 32.25 -> 34.45 dB at 30 views, 28.96 -> 29.50 dB at
  0-120 degrees, SSIM higher (``ct-anatomy-128`` does best at 1e-4).
The held-out results are in experiments/RESULTS.md. Operators may state another default (``Linop.tv_default``):
``NonCartesianMRI`` turns it off, as it cost 0.1-3 dB on golden-angle radial data. The TV is not part of the
paper's posterior: on an exact Gaussian prior it biases the samples (pass ``tv_xy=0`` there).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch

from .base import Sampler, check_int, noise_like
from .dc import TVConsistency, TVzConsistency, cg_consistency
from .loop import ddim_step, run
from .steps import CONVENTIONS, vp_start


CG_ITER = 5          # the paper's CG iterations per step (noiseless CG, fixed gamma, TV-z)
CG_ITER_NOISY = 10   # with a noise weight: the system is better posed and more iterations pay
TV_XY = 3e-4         # the default in-plane TV weight (chosen on the MRI and CT validation slices)
_WARNED = set()


class _Auto(str):
    """The default of ``sigma_y``: 'auto' unless a fixed ``gamma`` or ``tv_z`` is given."""


_AUTO = _Auto("auto")


class _AutoTV(float):
    """The default of ``tv_xy``: ``TV_XY`` unless a fixed ``gamma`` or ``tv_z`` is given (then 0)."""


_AUTO_TV = _AutoTV(TV_XY)


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

    def __init__(self, steps: int = 50, eta: float = 1.0, cg_iter: Optional[int] = None, gamma: Optional[float] = None,
                 schedule: str = "auto", tv_z: float = 0.0, tv_rho: float = 0.01,
                 sigma_y: Union[None, float, str] = _AUTO, lam: float = 0.5, tv_xy: float = _AUTO_TV,
                 eta_convention: str = "ddim", start: str = "sigma", **kw):
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
        self._tv_auto = tv_xy is _AUTO_TV and gamma is None and tv_z == 0  # the operator may override the default
        if tv_xy is _AUTO_TV:
            tv_xy = 0.0 if (gamma is not None or tv_z > 0) else TV_XY
        if isinstance(tv_xy, bool) or not isinstance(tv_xy, (int, float)) or not (math.isfinite(tv_xy) and tv_xy >= 0):
            raise ValueError(f"tv_xy must be a number >= 0 (the in-plane TV weight, 0 for none), got {tv_xy!r}")
        if tv_xy > 0 and tv_z > 0:
            raise ValueError("tv_xy and tv_z cannot be combined; give one of them")
        self._stated = sigma_y is not _AUTO  # a fallback from an 'auto' the user asked for is warned about
        if sigma_y is _AUTO:
            sigma_y = None if (gamma is not None or tv_z > 0) else "auto"
        if isinstance(sigma_y, str):
            if sigma_y != "auto":
                raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units or 'auto', "
                                 f"got {sigma_y!r}")
        elif sigma_y is not None:
            if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not (
                    math.isfinite(sigma_y) and sigma_y >= 0):
                raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units or 'auto', "
                                 f"got {sigma_y!r}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be > 0, got {lam}")
        if sigma_y is not None and (gamma is not None or tv_z > 0):
            raise ValueError("give the data weight one way: sigma_y (a weight per step from the noise) or gamma "
                             "(one fixed weight) or tv_z, not several")
        if gamma is not None and tv_xy > 0:
            raise ValueError("gamma and tv_xy cannot be combined; give one of them")
        self.steps, self.eta, self.cg_iter, self.gamma, self.schedule = steps, eta, cg_iter, gamma, schedule
        self.tv_z, self.tv_rho = tv_z, tv_rho
        self.sigma_y, self.lam, self.tv_xy = sigma_y, lam, float(tv_xy)

    def steps_total(self) -> int:
        return self.steps

    def _run(self, x, data, prior, g, callback, bar):
        sig = prior.sigmas(self.steps, self.schedule).tolist() + [0.0]
        y, A = data.y, data.A
        syn = self._noise(data, x)
        cg = self.cg_iter if self.cg_iter is not None else (CG_ITER_NOISY if syn is not None else CG_ITER)
        tv_w = self.tv_xy
        if self._tv_auto and getattr(A, "tv_default", None) is not None:
            tv_w = float(A.tv_default)
        if syn is not None and tv_w > 0:
            tv = TVConsistency(tv_w, cg_iter=max(cg, 1))
            dc = lambda v, s: tv(v, y, A, s * s / (self.lam * syn))  # noqa: E731
        elif syn is not None:
            # DiffPIR's weight: the Tweedie estimate is trusted like data of noise sigma_t^2 / lam
            dc = lambda v, s: cg_consistency(v, y, A, cg, s * s / (self.lam * syn))  # noqa: E731
        elif self.tv_z > 0:
            tvz = TVzConsistency(self.tv_z, self.tv_rho, max(cg, 1))
            dc = lambda v, s: tvz(v, y, A)  # noqa: E731
        elif tv_w > 0:
            tv = TVConsistency(tv_w, cg_iter=max(cg, 1))
            dc = lambda v, s: tv(v, y, A)  # noqa: E731
        else:
            dc = lambda v, s: cg_consistency(v, y, A, cg, self.gamma)  # noqa: E731
        z = noise_like(x, g)
        x = vp_start(z, sig[0], prior.normalization.affine) if self.start == "vp" else z * sig[0]
        x, _ = run(x, sig, ddim_step(prior.denoise, self.eta, g, dc, self.eta_convention), self.name, callback, bar)
        return x

    def _noise(self, data, x):
        """sigma_y^2 in the normalised data's units, shaped to broadcast against the images, or None for the
        noiseless normal equations (no sigma_y, sigma_y = 0, or 'auto' where the operator cannot estimate it)."""
        if self.sigma_y is None:
            return None
        if self.sigma_y == "auto":
            yv = data.y
            if yv.dim() > len(data.A.oshape) and yv.shape[0] > 1 and yv.stride(0) == 0:
                est = data.A.noise_std(yv[0])  # the samples' batch repeats one measurement: estimate it once
                est = None if est is None else est.expand((yv.shape[0],) + tuple(est.shape))
            else:
                est = data.A.noise_std(yv)
            if est is None:
                if self._stated:
                    _warn_no_estimate(data.A.name)
                return None
        else:
            if self.sigma_y == 0:
                return None
            unit = torch.as_tensor(data.unit).abs()
            est = self.sigma_y / unit.reshape(unit.shape[: max(unit.dim() - len(data.A.oshape), 0)])
        # one value per image (for a stack of slices, per slice); the image plane broadcasts
        est = torch.as_tensor(est).to(x.real.dtype)
        s = est.reshape(tuple(est.shape) + (1,) * (x.dim() - est.dim()))
        s2 = torch.as_tensor(s).square()
        if not bool(torch.isfinite(s2).all()) or not bool((s2 > 0).all()):
            return None
        return s2

