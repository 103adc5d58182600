"""DDNM and DDNM+: Denoising Diffusion Null-space Model (Wang, Yu & Zhang, ICLR 2023).

**Range-null-space decomposition.** For a linear A with pseudo-inverse A^+ (A A^+ A = A), every image splits as
x = A^+ A x + (I - A^+ A) x; any x with the null-space part of a guess x0 and the range part A^+ y satisfies
A x = y. DDNM keeps the diffusion model's null space and replaces its range space at every step (x_{0|t}
is the paper's Eq. 12; here in VE coordinates x_ve = x_vp / sqrt(abar)):

    x0  = D(x_t, sigma_t)                                    (Tweedie's estimate, the paper's x_{0|t})
    x0^ = x0 - A^+ (A x0 - y) = A^+ y + (I - A^+ A) x0       (the range-null-space correction)
    x_{t-1} = x0^ + sqrt(sigma'^2 - s~^2) eps + s~ z,   eps = (x_t - x0) / sigma_t

the DDIM step (``steps.ddim_update``) with stochasticity ``eta``; the DDNM code's convention is s~ = eta sigma'
(``eta_convention="dds"``: x_vp' = sqrt(abar') x0^ + sqrt(1 - abar') (eta z + sqrt(1 - eta^2) eps)), "ddim" takes
DDIM's s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma. The last step, to sigma = 0, returns x0^: A x = y.

**DDNM+ (noisy data: the correction of the paper's Eq. 17, the scaling of its Eq. 19).** With y = A x + n, n ~ N(0, sigma_n^2 I), the
correction carries A^+ n into x0^; DDNM+ scales the correction, x0^ = x0 - Sigma_t A^+ (A x0 - y), and the noise
the step adds, so that the data's noise takes the place of the step's noise where the levels fall below it and
the total noise of x_{t-1} stays sigma'. The noise A^+ n has the std sigma_n / s_i along the right singular vector
of each singular value s_i of A, and the paper's rule is per singular value (its SVD form). Two rules
(``noise_rule``):

- "spectral" (the default): Sigma_t = A^H A (A^H A + delta_t I)^{-1}, delta_t = sigma_n^2 / sigma'^2, i.e. the
  filter s_i^2 / (s_i^2 + delta_t) in place of the paper's min(1, s_i sigma' / sigma_n): the same limits (1 where
  s_i >> sigma_n / sigma', the data's noise at most sigma' / 2 in every direction), computed by CG on
  (A^H A + delta_t I) d = A^H (y - A x0) without an SVD; x0^ is then the minimiser of
  ||y - A x||^2 / sigma_n^2 + ||x - x0||^2 / sigma'^2. The step adds its noise with
  gamma_t = sqrt(sigma'^2 - c_t^2), c_t = sigma_n sigma'^2 / (sigma'^2 + sigma_n^2) the data's noise along a unit
  singular value (exact where A A^H = I on the range; elsewhere directions with smaller s_i carry up to
  sigma' / 2, so they end with at most a quarter more variance);
- "scalar": the paper's simplified rule (its code's ``simplified_ddnm_plus``), Sigma_t = lam_t I,
  lam_t = min(1, sigma' / sigma_n), gamma_t = sqrt(sigma'^2 - (lam_t sigma_n)^2). It takes A^+ n to have the std
  sigma_n in every direction of the range, which holds when the unit-norm operator has A A^H = I there (a mask,
  Cartesian single-coil and coil-wise MRI, block averaging, inpainting, the identity); where the singular values
  spread (SENSE, non-Cartesian MRI, CT, blur) the exact A^+ amplifies the noise along the small ones without
  this rule seeing it. The only rule for ``pinv="operator"``.

Either way the step is x_{t-1} = x0^ + (gamma_t / sigma') (sqrt(sigma'^2 - s~^2) eps + s~ z), and at the last
step (sigma' = 0) no correction enters: the result is the prior's estimate from the last iterate. sigma_n is per
real component of the normalised measurement (``base``): sigma_y / sqrt(2) for complex data with
E|n|^2 = sigma_y^2, sigma_y for real data.

**Noise level** (``sigma_y``, in the measurement's units, E|n|^2 = sigma_y^2 per sample): None or 0: DDNM; a
number: DDNM+; "auto": the operator's estimate ``A.noise_std`` (k-space periphery for MRI), with a warning and
DDNM where it cannot tell; "default" (the default): "auto" without the warning.

**The pseudo-inverse** (``pinv``): "cg" (default) A^+ r by CG on the minimum-norm least-squares problem
A^H A d = A^H r from d = 0 (its iterates stay in the range of A^H, so it converges to the Moore-Penrose A^+ r),
``cg_iter`` iterations at most, stopped at a relative residual of ``PINV_TOL`` or at rounding level: exact after
one iteration where A A^H = I on the range (a Cartesian mask with the orthonormal FFT: A^+ = A^H = F^H P), to
tolerance where CG converges (SENSE with maps, non-Cartesian MRI), and regularised by the iteration count where
A^H A is ill-conditioned (sparse-view and limited-angle CT, strong blur), where an exact A^+ would amplify
noise and rounding without bound. "operator": the operator's own cheap pseudo-inverse ``A.pinv`` (FBP for CT, the
SENSE-combined zero-filled image for MRI, gridding or CG for non-Cartesian MRI, exact for masks and block
averaging): the DDNM code's ``Ap`` for each degradation; where it is not the Moore-Penrose inverse (FBP, the
SENSE-combined image, gridding) the correction is approximate and A x = y holds only approximately. No operator
is refused: both pseudo-inverses exist for every operator of the contract.

**Time travel** (the paper's Sec. 3.3, RePaint's resampling): with ``travel_repeat`` r > 1, after every
l-th level (l = ``travel_length``) the iterate is noised forward l levels, x <- x + sqrt(sigma_hi^2 -
sigma_lo^2) z (q(x_{t+l} | x_t)), and those l levels are run again, r - 1 times (the code's
``get_schedule_jump``); r = 1 (the default, and the code's configs) is no travel.

**Preset "reference"** (``DDNM.from_preset("reference")``), the DDNM code's SVD-based DDNM (``svd_ddnm.py``
with ``main.py``'s defaults and its configs' ``time_travel``) step for step: 100 steps at the timesteps
990, 980, ..., 10, 0 (``schedule="leading"``: ``T_sampling`` 100, skip 10), eta = 0.85 in its convention
(``eta_convention="dds"``), the start x_T ~ N(0, I) in the network's VP coordinates (``start="vp"``), no time
travel, noiseless data (``sigma_y`` 0, the code's default; a stated ``sigma_y`` selects DDNM+, with the scalar
rule), the last step from t = 0 returning x0^. The code's A^+ is exact through an SVD of each degradation; here
the "cg" pseudo-inverse (exact for masks and block averaging in one iteration). Not reproduced: the code's DDNM+
for noisy data applies the rule per singular value through that SVD (lam_i = s_i sigma' sqrt(1 - eta^2) /
sigma_n where sigma' < sigma_n / s_i, and only fresh noise in the range), which the operators here do not offer;
the preset's scalar rule is the paper's simplified DDNM+ (its code's ``simplified_ddnm_plus``), written without
that code's sigma_t = sqrt(1 - abar'^2) (for sqrt(1 - abar')) and its noise scaled twice by sqrt(1 - abar')
(gamma_t times c1, c2), which are errors. The code's time travel re-noises the last uncorrected estimate x0 instead of the
iterate (``x0_preds[-1]``); here the paper's forward noising of the iterate.

**Defaults, deliberately different from the code**: the prior's own schedule ("auto": evenly spaced levels of a
discrete ladder from its last timestep, else Karras'), the start sigma_T z (``start="sigma"``), the noise level
from the operator where the caller states none (DDNM+ wherever the data carry a measurable noise) and the
spectral DDNM+ rule, which needs no SVD and holds the noise the pseudo-inverse amplifies.
"""
from __future__ import annotations

import math
from typing import Optional, Union

from operators.cg import conjugate_gradient

from .base import Sampler, check_int, noise_like
from .diffpir import check_prior_images, check_sigma_y, component_noise_var, schedule_sigmas, start_iterate
from .loop import run
from .steps import CONVENTIONS, ddim_noise

PINVS = ("cg", "operator")
NOISE_RULES = ("spectral", "scalar")
SCHEDULES = ("auto", "leading", "quad", "karras", "geometric")
STARTS = ("sigma", "vp")
CG_ITER = 30       # CG iterations of the "cg" pseudo-inverse at most
PINV_TOL = 1e-5    # its relative residual ||A^H A d - A^H r|| / ||A^H r|| to stop at


def travel_indices(n: int, length: int, repeat: int) -> list:
    """The order of the level indices n - 1, ..., 0, -1 (-1: sigma = 0) with time travel: after index j (j = 0,
    l, 2 l, ... below n - l) the indices go up again by ``length``, ``repeat`` - 1 times (the DDNM code's and
    RePaint's ``get_schedule_jump``)."""
    jumps = {j: repeat - 1 for j in range(0, n - length, length)}
    t, out = n, []
    while t >= 1:
        t -= 1
        out.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(length):
                t += 1
                out.append(t)
    out.append(-1)
    return out


class DDNM(Sampler):
    name = "ddnm"
    PRESETS = {"reference": {"steps": 100, "schedule": "leading", "eta": 0.85, "eta_convention": "dds",
                             "sigma_y": None, "noise_rule": "scalar", "pinv": "cg", "travel_length": 1,
                             "travel_repeat": 1, "start": "vp"}}

    def __init__(self, steps: int = 100, eta: float = 0.85, eta_convention: str = "dds", schedule: str = "auto",
                 sigma_y: Union[None, float, str] = "default", noise_rule: Optional[str] = None, pinv: str = "cg",
                 cg_iter: int = CG_ITER, travel_length: int = 1, travel_repeat: int = 1, start: str = "sigma", **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if eta_convention not in CONVENTIONS:
            raise ValueError(f"eta_convention must be one of {CONVENTIONS}, got {eta_convention!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if pinv not in PINVS:
            raise ValueError(f"pinv must be one of {PINVS} (the pseudo-inverse of the correction), got {pinv!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if noise_rule is None:
            noise_rule = "spectral" if pinv == "cg" else "scalar"
        if noise_rule not in NOISE_RULES:
            raise ValueError(f"noise_rule must be one of {NOISE_RULES} (or None), got {noise_rule!r}")
        if noise_rule == "spectral" and pinv != "cg":
            raise ValueError("noise_rule='spectral' filters the Moore-Penrose pseudo-inverse by CG: it needs "
                             "pinv='cg'; the operator's own pseudo-inverse takes noise_rule='scalar'")
        check_int("cg_iter", cg_iter, 1)
        check_int("travel_length", travel_length, 1)
        check_int("travel_repeat", travel_repeat, 1)
        if travel_length > steps:
            raise ValueError(f"travel_length ({travel_length}) cannot exceed steps ({steps})")
        self._warn_auto = sigma_y == "auto"
        self.steps, self.eta, self.eta_convention, self.schedule = steps, float(eta), eta_convention, schedule
        self.sigma_y, self.noise_rule = check_sigma_y(sigma_y, self.name), noise_rule
        self.pinv, self.cg_iter = pinv, cg_iter
        self.travel_length, self.travel_repeat, self.start = travel_length, travel_repeat, start

    def _order(self) -> list:
        return travel_indices(self.steps, self.travel_length, self.travel_repeat)

    def steps_total(self) -> int:
        return len(self._order()) - 1

    def nfe(self) -> int:
        order = self._order()
        return sum(1 for a, b in zip(order, order[1:]) if b < a)

    def levels(self, prior) -> list:
        """The levels the loop visits, time travel included, ending at 0."""
        base = schedule_sigmas(prior, self.steps, self.schedule)
        n = len(base)
        return [0.0 if k < 0 else base[n - 1 - k] for k in travel_indices(n, self.travel_length,
                                                                           self.travel_repeat)]

    def correction(self, x0, data, delta=None):
        """A^+ (y - A x0) with the pseudo-inverse ``pinv``; with ``delta`` (DDNM+'s spectral rule, a number or one
        per image) the filtered (A^H A + delta I)^{-1} A^H (y - A x0)."""
        A, r = data.A, data.y - data.A(x0)
        if self.pinv == "operator":
            return A.pinv(r)
        normal = A.normal if delta is None else (lambda v: A.normal(v) + delta * v)
        return conjugate_gradient(normal, A.H(r), max_iter=self.cg_iter, tol=PINV_TOL, ndim=len(A.ishape))

    def _corrected(self, x0, data, sn, var):
        """(x0^, the factor gamma_t / sigma' of the step's noise) for the bound noise variance ``var`` per real
        component (None: noiseless)."""
        if var is None:
            return x0 + self.correction(x0, data), 1.0
        if sn == 0:  # no noise budget left: the estimate itself
            return x0, 0.0
        std = var.sqrt()
        if self.noise_rule == "scalar":
            lam = (sn / std).clamp(max=1.0)
            carried = lam * std
            x0c = x0 + lam * self.correction(x0, data)
        else:
            carried = std * sn * sn / (sn * sn + var)
            x0c = x0 + self.correction(x0, data, var / (sn * sn))
        return x0c, (sn * sn - carried.square()).clamp(min=0).sqrt() / sn

    def _run(self, x, data, prior, g, callback, bar):
        check_prior_images(prior, x, data.A, self.name)
        sig = self.levels(prior)
        var = component_noise_var(self.sigma_y, data, x, self.name, self._warn_auto)
        last = {}

        def step(x, s, sn, i):
            if sn > s:  # time travel: forward diffusion q(x_sn | x_s)
                return x + math.sqrt(sn * sn - s * s) * noise_like(x, g), {"denoised": last.get("denoised", x)}
            x0 = prior.denoise(x, s)
            x0c, gain = self._corrected(x0, data, sn, var)
            last["denoised"] = x0c
            if sn == 0:
                return x0c, {"denoised": x0c}
            st = ddim_noise(s, sn, self.eta, self.eta_convention)
            noise = math.sqrt(max(sn * sn - st * st, 0.0)) * (x - x0) / s
            if st > 0:
                noise = noise + st * noise_like(x, g)
            return x0c + gain * noise, {"denoised": x0c}

        x = start_iterate(noise_like(x, g), sig[0], self.start, data, prior)
        x, _ = run(x, sig, step, self.name, callback, bar)
        return x
