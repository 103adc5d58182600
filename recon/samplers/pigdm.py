"""PiGDM: pseudoinverse-guided diffusion models (Song, Vahdat, Mardani & Kautz, ICLR 2023).

DDIM steps whose iterate is pushed, after each step, along the vector-Jacobian product of the Tweedie estimate
with a pseudo-inverse residual. The paper approximates p(x_0 | x_t) by N(x0(x_t), r_t^2 I), so that, for
y = A x_0 + n with noise of variance s_y^2,

    p_t(y | x_t) ~ N(A x0, r_t^2 A A^H + s_y^2 I)                                                     (L)
    grad log p_t(y | x_t) ~ ((y - A x0)^H (r_t^2 A A^H + s_y^2 I)^{-1} A  d x0 / d x_t)^H               (N)
                          = r_t^-2 ((A^+ y - A^+ A x0)^H  d x0 / d x_t)^H   for s_y = 0                  (P)

with r_t^2 = sigma_t^2 / (1 + sigma_t^2), the variance of x_0 given x_t for data of unit variance. Its DDIM
algorithm adds the pseudo-inverse guidance g = r_t^2 grad log p_t(y | x_t) (the vector-Jacobian product of (P))
to the DDIM step; in the network's VP coordinates x_t = sqrt(abar_t) (x_0 + sigma_t z), as the authors' code
implements it (NVlabs/RED-diff, ``algos/pgdm.py``),

    x_{t-1} = sqrt(abar_{t-1}) x0 + c1 z + c2 eps + w sqrt(abar_{t-1}) sqrt(abar_t) g_vp,

with c1 = eta sqrt((1 - abar_t / abar_{t-1}) (1 - abar_{t-1}) / (1 - abar_t)), c2 = sqrt(1 - abar_{t-1} - c1^2)
and g_vp the product taken with respect to the VP iterate. Since d x_vp = sqrt(abar_t) d x_ve, the weight
sqrt(abar_{t-1}) sqrt(abar_t) is exactly what brings the step back to variance-exploding coordinates, where
this module runs it (``steps.ddim_update``, ``convention="ddim"``):

    x0  = D(x, sigma)                                                    (the prior's Tweedie estimate)
    v   = A^H (A A^H + lam_t I)^{-1} (y - A x0),    lam_t = s_y^2 / r_t^2
    x'  = x0 + sqrt(sigma'^2 - s~^2) (x - x0) / sigma + s~ z + w (d x0 / d x)^H v,

s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma, and the last step (sigma' = 0) returns x0 + w (d x0/d x)^H v.
The product (d x0/d x)^H v is one backward pass through the network (autograd of Re <v, x0>, v held fixed). For
s_y = 0, v = A^+ (y - A x0), the noiseless guidance (P); for s_y > 0, v gives the noisy form (N) times r_t^2, the
weight the algorithm puts on the noiseless guidance, and tends to (P) as s_y -> 0.

**The pseudo-inverse and the noisy system for any operator.** The paper applies A^+ through the SVD of its
operators; here v comes from the push-through identity A^H (A A^H + lam I)^{-1} = (A^H A + lam I)^{-1} A^H as
``cg_iter`` conjugate-gradient iterations on (A^H A + lam_t I) v = A^H (y - A x0) from v = 0 (``A.normal``,
``operators.cg``), so it needs only A, A^H and A^H A. For lam = 0, CG from 0 stays in the range of A^H and tends
to the minimum-norm least-squares solution, the Moore-Penrose A^+ r; a Cartesian mask (A A^H a projector) is
solved in one iteration, and the noise's lam_t > 0 makes the system better posed (SENSE, non-Cartesian, CT).

**Units.** As every sampler, PiGDM runs with the unit-norm operator A_n and the data y_n in the prior's range
(``base``), so the guidance weight w is independent of the operator's scale. For a prior whose network sees
v = lo + g u (``Normalization.affine``), r_t^2 is the paper's in the network's units, S^2 / (1 + S^2) with
S = g sigma, i.e. sigma^2 / (1 + g^2 sigma^2) in the prior's, and the run is the paper's whatever g. The
noise s_y^2 in lam_t is the noise variance per real component: sigma_y^2 for real data and sigma_y^2 / 2 for
complex data (E|n|^2 = sigma_y^2, the toolkit's convention), against r_t^2 per real component of the image.

**The noise** ``sigma_y`` (noise-aware by default): "auto" (the default) takes the operator's estimate from the
data (``A.noise_std``, the k-space periphery for Cartesian and non-Cartesian MRI) and, where the operator cannot
tell, the noiseless guidance; a number is the noise std in the measurement's units (E|n|^2 = sigma_y^2), converted
like the measurement; None or 0: the noiseless guidance (P).

**Starts** (``start``): "sigma" (the default) x_T = sigma_T z in VE coordinates; "vp" x_T ~ N(0, I) in the
network's VP coordinates (``steps.vp_start``); "pinv" x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z in VP
coordinates, the initialisation of the RED-diff repository's PiGDM (NVlabs/RED-diff, ``algos/pgdm.py``), which
is A^+ y + sigma_T z in VE coordinates (A^+ the operator's pseudo-inverse, ``A.pinv``, taken in the network's
image units: ``network_pinv``).

**Defaults**: the paper's 100 steps and eta = 1.0, guidance weight w = 1 (``scale``, the repository's
``grad_term_weight``), the schedule "auto" (for a network with discrete timesteps: 100 evenly spaced timesteps
from T - 1 to 0), the start sigma_T z, ``cg_iter`` = 10. Deliberately different from the paper: the noise taken
into account by default (the paper's noisy form (N) with the operator's estimate of the noise), CG in place
of an SVD, the timesteps 999, 989, ..., 0 of "auto" (the repository's: 990, 980, ..., 0) and the start
sigma_T z (every prior has it, VP or VE).

**Preset "reference"**: the RED-diff repository's PiGDM (by the paper's authors; the paper has no code of its
own) with the paper's eta = 1.0 and 100 steps: the timesteps 990, 980, ..., 0 (``schedule="leading"``: the
code's ``range(0, 1000, 10)``), the guidance also at the last step (t = 0 to abar = 1: x0 + w g), the start
"pinv", w = 1, the noiseless guidance (the repository's ``sigma_y`` only noises the data). Not reproduced: the
paper's super-resolution runs that start from the data noised to t = 500 (its Appendix B.1), and its
non-linear and JPEG pseudo-inverses (every operator here is linear).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from operators.cg import conjugate_gradient

from .base import Sampler, check_int, check_positive, noise_like, noise_variance
from .loop import run
from .steps import ddim_update, vp_start

STARTS = ("sigma", "vp", "pinv")
CG_ITER = 10  # CG iterations for v = (A^H A + lam_t I)^{-1} A^H r per step


def check_sigma_y(who: str, sigma_y) -> Union[None, float, str]:
    """A sampler's ``sigma_y``: None, a noise std >= 0 in the measurement's units, or "auto"."""
    if sigma_y is None or (isinstance(sigma_y, str) and sigma_y == "auto"):
        return sigma_y
    if isinstance(sigma_y, str) or isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not (
            math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"{who}: sigma_y must be None, a noise std >= 0 in the measurement's units or 'auto', "
                         f"got {sigma_y!r}")
    return float(sigma_y)


def component_noise(sigma_y, data, x) -> Optional[torch.Tensor]:
    """The noise variance per real component of the normalised data, one value per image shaped to broadcast
    against the images ``x`` (sigma_y^2 for real data, sigma_y^2 / 2 for complex data), or None for noiseless
    data (no sigma_y, 0, or 'auto' where the operator cannot estimate it)."""
    if sigma_y is None or sigma_y == 0:
        return None
    var = noise_variance(sigma_y, data, x)
    if var is None or not bool(var.isfinite().all()) or not bool((var > 0).all()):
        return None
    return var / 2 if data.y.is_complex() else var


def check_real_prior(who: str, prior, x: torch.Tensor, A) -> None:
    """Refuse a real-valued prior on an operator whose images are complex (MRI)."""
    if x.is_complex() and prior.channels in ("real", "rgb"):
        raise ValueError(f"{who}: the prior is {prior.channels!r} (real images) but {A.name} has complex images; "
                         f"use a complex or magnitude prior")


def network_pinv(A, y: torch.Tensor, like: torch.Tensor, affine: tuple) -> torch.Tensor:
    """The operator's pseudo-inverse A^+ taken in the network's image units v = lo + g u (``affine``) and brought
    back to the prior's: A^+(y + A(c)) - c with c = lo / g, i.e. (A^+ y_net - lo) / g for y_net = A(lo) + g y.
    The pseudo-inverse does not commute with the offset: a pixel no measurement sees is 0 in the network's units
    (the code's A^+ y), -c in the prior's; A^+ y itself where lo = 0."""
    lo, gain = affine
    if lo == 0:
        return A.pinv(y).to(like.dtype)
    c = lo / gain
    return A.pinv(y + A(torch.full_like(like, c))).to(like.dtype) - c


def guidance_residual(A, r: torch.Tensor, lam, cg_iter: int) -> torch.Tensor:
    """v = A^H (A A^H + lam I)^{-1} r = (A^H A + lam I)^{-1} A^H r by ``cg_iter`` CG iterations from 0; lam None
    or 0: the minimum-norm least-squares A^+ r. ``lam`` may be one value per image (broadcast to the images)."""
    if lam is None:
        apply = A.normal
    else:
        def apply(u):
            return A.normal(u) + lam * u
    return conjugate_gradient(apply, A.H(r), max_iter=cg_iter, ndim=len(A.ishape))


class PiGDM(Sampler):
    name = "pigdm"
    PRESETS = {"reference": {"steps": 100, "eta": 1.0, "scale": 1.0, "schedule": "leading", "sigma_y": None,
                             "start": "pinv"}}

    def __init__(self, steps: int = 100, eta: float = 1.0, scale: float = 1.0,
                 sigma_y: Union[None, float, str] = "auto", cg_iter: int = CG_ITER, schedule: str = "auto",
                 start: str = "sigma", **kw):
        super().__init__(**kw)
        check_int("steps", steps, 1)
        check_int("cg_iter", cg_iter, 1)
        check_positive("scale", scale, allow_zero=True)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        self.steps, self.eta, self.scale, self.cg_iter = steps, float(eta), float(scale), cg_iter
        self.sigma_y, self.schedule, self.start = check_sigma_y(self.name, sigma_y), schedule, start

    def steps_total(self) -> int:
        return self.steps

    def _run(self, x, data, prior, g, callback, bar):
        y, A = data.y, data.A
        check_real_prior(self.name, prior, x, A)
        sig = prior.sigmas(self.steps, self.schedule).tolist() + [0.0]
        lo, gain = prior.normalization.affine
        noise = component_noise(self.sigma_y, data, x)

        def step(x, s, sn, i):
            r2 = s * s / (1 + (gain * s) ** 2)  # r_t^2 in the prior's units
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                x0 = prior.denoise(xr, s)
                v = guidance_residual(A, y - A(x0.detach()), None if noise is None else noise / r2, self.cg_iter)
                inner = (v.conj() * x0).real.sum() if x0.is_complex() else (v * x0).sum()
                (grad,) = torch.autograd.grad(inner, xr)
            x0 = x0.detach()
            z = noise_like(x, g) if self.eta > 0 and sn > 0 else None
            x_next = ddim_update(x0, (x - x0) / s, s, sn, self.eta, z)
            return x_next + self.scale * grad, {"denoised": x0}

        z = noise_like(x, g)
        if self.start == "vp":
            x = vp_start(z, sig[0], (lo, gain))
        elif self.start == "pinv":
            x = network_pinv(A, y, x, (lo, gain)) + sig[0] * z
        else:
            x = sig[0] * z
        x, _ = run(x, sig, step, self.name, callback, bar)
        return x
