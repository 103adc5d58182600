"""DiffPIR: Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al., CVPR 2023 Workshops, NTIRE).

Half-quadratic splitting of min_x ||y - A x||^2 / (2 sigma_n^2) + lam_reg P(x) with the diffusion model as the prior's
proximal operator: at each level sigma_t (the VE noise level, the paper's sigma-bar_t = sqrt((1 - abar_t)/abar_t))

    x0      = D(x_t, sigma_t)                                                (the prior step: Tweedie's estimate)
    x0^     = argmin_x ||y - A x||^2 + rho_t ||x - x0||^2,   rho_t = lam sigma_n^2 / sigma_t^2   (the data step)
    eps^    = (x_t - x0^) / sigma_t                                          (the effective noise)
    x_{t-1} = x0^ + sigma_{t-1} (sqrt(1 - zeta) eps^ + sqrt(zeta) z),   z ~ N(0, I)

(the paper's Alg. 1, written in its VP coordinates x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; here in VE
coordinates, x_ve = x_vp / sqrt(abar)). The data step weighs the Tweedie estimate like data of noise std
sigma_t / sqrt(lam): the data rule early, the prior late. ``zeta`` in [0, 1] mixes the effective noise with fresh
noise (0: deterministic, DDIM-like; 1: all fresh). The last step, to sigma = 0, returns the data-consistent x0^.

**The data step** is ``dc.ConjugateGradient(cg_iter, lam=lam)``, CG warm-started at x0 on its normal equations
(I + gamma_t A^H A) x = x0 + gamma_t A^H y with gamma_t = 1 / rho_t = sigma_t^2 / (lam sigma_n^2): the paper's
closed-form solutions (FFT for deblurring and super-resolution, the pixelwise one for inpainting) for a general
operator; CG stops where the residual reaches rounding level, so for a mask (A^H A a projector) it is exact after
two iterations. ``dc=`` takes any other ``dc.DataConsistency`` (bound to the same noise). sigma_n is the noise std per real component of
the normalised measurement (``base``): sigma_y / sqrt(2) for complex data with E|n|^2 = sigma_y^2, sigma_y for
real data, so that ``lam`` is the paper's lambda for either.

**Noise level** (``sigma_y``, in the measurement's units, E|n|^2 = sigma_y^2 per measured sample): a number;
"auto": the operator's estimate ``A.noise_std`` (the k-space periphery for MRI), with a warning where it cannot
tell; "default" (the default): "auto" without the warning. **Noiseless data** (None, 0, or no estimate): the data
step is its limit rho_t -> 0, the projection x0^ = x0 + A^+ (y - A x0) of the estimate onto {x : A x = y} (CG on
A^H A x = A^H y warm-started at x0), instead of the code's floor sigma_n = 0.001 (of a [0, 1] image), which is
the same projection up to that floor.

**Preset "reference"** (``DiffPIR.from_preset("reference")``), the DiffPIR code (``main_ddpir.py`` with
``configs/deblur.yaml`` and its experiment loop: Gaussian deblurring) step for step: 100 levels at the timesteps
t_i = 999 - floor(sqrt(i / 99) 1000) (``skip_type="quad"``, the last moved from -1 to 0; ``schedule="quad"``),
zeta = 0.3, the code's lambda = 7 (its experiment loop: 7 times the config's 1), the code's eta = 0 (no third
noise term), the start from the measurement's image, x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z in VP
coordinates, i.e. A^+ y + sigma_T z here (``start="pinv"``; the code's blurred image, masked image or bicubic
upsampling, here the operator's ``pinv``), and the result the iterate at t = 0 (``end="iterate"``): the code's
last step evaluates the network and discards the estimate. Units of lambda: the code measures the noise
sigma_n on [0, 1] images and sigma_t on the network's [-1, 1] images, so its rho_t = lam_code sigma_n^2 /
sigma_t^2 is the paper's with lam = lam_code / 4 in consistent units; the preset's ``lam`` is 7 / 4. Other tasks of
the code: inpainting lambda 1 (0.25 here), zeta 1 and 20 levels; super-resolution a sweep of lambda 2 ... 12 at
zeta 0.25. Not reproduced: the code's eta term uses beta_t of the current timestep for a skip of many (it is 0
in every config), and its start for noisy data treats y as an iterate at the timestep of its noise level (a change
of order sqrt(abar_T) ~ 0.006 of the start).

**Defaults, deliberately different from the code**: the prior's own schedule ("auto": evenly spaced levels of a
discrete ladder, else Karras'; "quad" is for ladders of 1000 timesteps and offered), lam = 1 (the weight of a
Tweedie estimate whose error is sigma_t per component), zeta = 1 (the code's setting for inpainting: undersampled
k-space and sparse views are missing data, as inpainting is), the start sigma_T z (``start="sigma"``), the last
step to sigma = 0 returning the data-consistent estimate (``end="clean"``), the noise level from the operator
where the caller gives none, and the projection for noiseless data.

Every operator the contract describes runs (the data step needs only A, A^H and A^H A); nothing is refused by
operator.
"""
from __future__ import annotations

import math
import warnings
from typing import Union

import numpy as np

from .base import Sampler, check_int, check_positive, noise_like, noise_variance
from .dc import ConjugateGradient, check_dc
from .loop import run
from .steps import vp_start

SIGMA_Y = ("default", "auto")  # the named noise settings (a number or None otherwise)
SCHEDULES = ("auto", "quad", "leading", "karras", "geometric")
STARTS = ("sigma", "pinv", "vp")
ENDS = ("clean", "iterate")
QUAD_T = 1000  # DiffPIR's num_train_timesteps: the "quad" spacing is over this many positions of the ladder
CG_ITER = 20   # CG iterations of the data step (it stops early at rounding level)
_WARNED = set()


def check_sigma_y(sigma_y, who: str):
    """A sampler's ``sigma_y`` setting: None, a std >= 0 in the measurement's units, 'auto' or 'default'."""
    msg = (f"{who}: sigma_y must be None, a noise std >= 0 in the measurement's units, 'auto' or 'default', "
           f"got {sigma_y!r}")
    if isinstance(sigma_y, str):
        if sigma_y not in SIGMA_Y:
            raise ValueError(msg)
    elif sigma_y is not None:
        if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not (
                math.isfinite(sigma_y) and sigma_y >= 0):
            raise ValueError(msg)
    return sigma_y


def component_noise_var(sigma_y, data, x, who: str, warn: bool):
    """The measurement's noise variance per real component in the normalised units, one value per image shaped
    to broadcast against the images ``x`` (E|n|^2 / 2 for complex data, E|n|^2 for real), or None: noiseless
    (``sigma_y`` None or 0), or 'auto'/'default' where the operator cannot estimate it (a warning for 'auto'
    when ``warn``), or an estimate that is 0 or not finite."""
    if sigma_y is None or (not isinstance(sigma_y, str) and sigma_y == 0):
        return None
    var = noise_variance("auto" if sigma_y == "default" else sigma_y, data, x)
    if var is None:
        if warn and (who, data.A.name) not in _WARNED:
            _WARNED.add((who, data.A.name))
            warnings.warn(f"{who}(sigma_y='auto'): the operator {data.A.name} cannot estimate its noise from the "
                          f"data; the data are taken as noiseless (give sigma_y in the measurement's units "
                          f"instead)", stacklevel=4)
        return None
    if not bool(var.isfinite().all()) or not bool((var > 0).all()):
        return None
    return var / 2 if data.y.is_complex() else var


def check_prior_images(prior, x, A, who: str) -> None:
    """Refuse a prior that cannot denoise the operator's images: a complex prior on real images (CT, real
    image-domain data) or a real-valued one on complex images (MRI); a magnitude prior takes both."""
    if prior.channels == "complex" and not x.is_complex():
        raise ValueError(f"{who}: a complex prior (channels='complex') denoises complex images; the images of "
                         f"{A.name} are real (use a real or magnitude prior)")
    if prior.channels in ("real", "rgb") and x.is_complex():
        raise ValueError(f"{who}: a real-valued prior (channels={prior.channels!r}) cannot denoise the complex "
                         f"images of {A.name} (use a complex or magnitude prior)")


def quad_sigmas(prior, n: int) -> list:
    """DiffPIR's "quad" levels: n positions seq_i = floor(sqrt(i T^2 / (n - 1))) (the last one less 1) of the
    prior's ladder of T = 1000 levels from high to low noise (``prior.sigmas(1000, "auto")``: the network's own
    timesteps for a 1000-step ladder), i.e. the timesteps t_i = 999 - seq_i; consecutive repeats (a ladder of
    fewer levels) dropped."""
    if n < 2 or n > QUAD_T:
        raise ValueError(f"a 'quad' schedule needs 2 <= steps <= {QUAD_T}, got {n}")
    ladder = prior.sigmas(QUAD_T, "auto").tolist()
    seq = [int(s) for s in np.sqrt(np.linspace(0, QUAD_T ** 2, n))]
    seq[-1] -= 1
    out = []
    for k in seq:
        if not out or ladder[k] != out[-1]:
            out.append(ladder[k])
    return out


def schedule_sigmas(prior, n: int, schedule: str) -> list:
    """The n decreasing levels of ``schedule``: "quad" (``quad_sigmas``) or one of the prior's kinds."""
    if schedule == "quad":
        return quad_sigmas(prior, n)
    return prior.sigmas(n, schedule).tolist()


def start_iterate(z, sigma: float, start: str, data, prior):
    """x_T from the draw z: sigma z ("sigma"), A^+ y + sigma z ("pinv", the measurement's image noised to
    sigma: VP x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z in VE coordinates) or z in the network's VP
    coordinates ("vp", ``steps.vp_start``)."""
    if start == "pinv":
        return data.A.pinv(data.y) + sigma * z
    if start == "vp":
        return vp_start(z, sigma, prior.normalization.affine)
    return sigma * z


class DiffPIR(Sampler):
    name = "diffpir"
    PRESETS = {"reference": {"steps": 100, "schedule": "quad", "lam": 7.0 / 4, "zeta": 0.3, "start": "pinv",
                             "end": "iterate"}}

    def __init__(self, steps: int = 100, lam: float = 1.0, zeta: float = 1.0, schedule: str = "auto",
                 sigma_y: Union[None, float, str] = "default", cg_iter: int = CG_ITER, start: str = "sigma",
                 end: str = "clean", dc=None, **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        check_positive("lam", lam)
        if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 <= zeta <= 1:
            raise ValueError(f"zeta must be in [0, 1], got {zeta!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if end not in ENDS:
            raise ValueError(f"end must be one of {ENDS}, got {end!r}")
        if end == "iterate" and steps < 2:
            raise ValueError("end='iterate' returns the iterate at the last level: it needs steps >= 2")
        check_int("cg_iter", cg_iter, 0)
        self._warn_auto = sigma_y == "auto"
        self.steps, self.lam, self.zeta, self.schedule = steps, float(lam), float(zeta), schedule
        self.sigma_y, self.cg_iter, self.start, self.end = check_sigma_y(sigma_y, self.name), cg_iter, start, end
        self.dc = check_dc(dc, self.name)

    def steps_total(self) -> int:
        return self.steps if self.end == "clean" else self.steps - 1

    def levels(self, prior) -> list:
        """The levels the loop runs over: the schedule, then 0 with ``end="clean"``."""
        sig = schedule_sigmas(prior, self.steps, self.schedule)
        return sig + [0.0] if self.end == "clean" else sig

    def _run(self, x, data, prior, g, callback, bar):
        check_prior_images(prior, x, data.A, self.name)
        sig = self.levels(prior)
        noise_var = component_noise_var(self.sigma_y, data, x, self.name, self._warn_auto)
        dc = self.dc if self.dc is not None else ConjugateGradient(self.cg_iter, lam=self.lam)
        dc = dc.bind(data.y, data.A, noise_var, g)
        a, b = math.sqrt(1 - self.zeta), math.sqrt(self.zeta)

        def step(x, s, sn, i):
            x0 = dc(prior.denoise(x, s), s)
            if sn == 0:
                return x0, {"denoised": x0}
            eps = (x - x0) / s
            nxt = x0 + sn * a * eps
            if b > 0:
                nxt = nxt + sn * b * noise_like(x, g)
            return nxt, {"denoised": x0}

        x = start_iterate(noise_like(x, g), sig[0], self.start, data, prior)
        x, _ = run(x, sig, step, self.name, callback, bar)
        return x
