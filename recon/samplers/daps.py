"""DAPS: Decoupled Annealing Posterior Sampling (Zhang, Chu, Berner, Meng, Anandkumar & Song, CVPR 2025, Alg. 1).

DAPS anneals a noise level sigma_0 > sigma_1 > ... > sigma_{K-1} > sigma_K = 0 (the "annealing steps") and, at
each level, decouples the next iterate from the current one:

1. **ODE to x0.** x0_hat = x0_hat(x_t): the probability-flow ODE of the prior integrated from x_t at sigma_t down
   to 0 with ``ode_steps`` Euler steps (``loop.ddim`` with eta = 0, whose step from sigma to sigma' is the ODE's
   Euler step x' = x + (sigma' - sigma) (x - D(x, sigma)) / sigma) on EDM's rho = 7 levels from sigma_t to
   ``ode_sigma_min``, the last step going to 0 (the Tweedie estimate there).
2. **Langevin on x0.** p(x0 | x_t, y) is approximated by N(x0_hat, r_t^2 I) times the likelihood, r_t = sigma_t,
   and sampled by ``langevin_steps`` steps of Langevin dynamics from x0 = x0_hat,

       x0 <- x0 - eta_t [ (x0 - x0_hat) / r_t^2 + A^H (A x0 - y) / beta_y^2 ] + sqrt(2 eta_t) z,

   the bracket being -grad log of exp(-||x0 - x0_hat||^2 / (2 r_t^2) - ||A x0 - y||^2 / (2 beta_y^2)) (in the
   real coordinates (Re, Im) of a complex image; z ~ N(0, I) in each). The step size decays linearly over the
   annealing, lr_k = ``lr`` (1 + k / (K - 1) (``lr_min_ratio`` - 1)) at the k-th level; the default takes it
   relative to the curvature of the Langevin target (the largest eigenvalue 1 / beta_y^2 + 1 / r_t^2 of its
   precision with the unit-norm operator),

       eta_t = lr_k / (sigma_y_min^2 (1 / beta_y^2 + 1 / r_t^2)),

   which is the paper's lr_k (to within a factor 1 - sigma_y_min^2 / r_t^2) for data weighed at the floor
   beta_y = ``sigma_y_min`` and grows with the noise, so that noisy data move the sample on the measured
   directions as fast as the paper's nearly noiseless data do (with the fixed step a large beta_y leaves the data
   almost unused within the ``langevin_steps``). With ``tau`` the step is the paper's lr_k.
3. **Re-noise.** x_{t-1} = x0 + sigma_{t-1} z (x0 itself after the last level).

The start is x_T = sigma_0 z. The annealing levels are EDM's rho = 7 schedule (Karras et al. 2022) from
``sigma_max`` to ``sigma_min`` with ``annealing_steps`` levels, then 0; there are ``annealing_steps`` x ``ode_steps``
network evaluations.

**Units.** As every sampler, DAPS works with the unit-norm operator A_n and the data y_n in the prior's range
(``base``). The noise levels (``sigma_max``, ``sigma_min``, ``ode_sigma_min``), the step size ``lr``, ``tau`` and
the floor ``sigma_y_min`` are in the network's units, as in the DAPS code: for a prior whose network sees
v = lo + g u (``Normalization.affine``; g = 2 for images in [0, 1] and a network in [-1, 1]) the levels and the
stds are divided by g and the step size by g^2, so a run is the same whether the prior is stated in the network's
units or in [0, 1]. The defaults keep the levels inside the prior's trained range.

**The likelihood's noise** beta_y (a std per real component of y_n, so E|n|^2 = 2 beta_y^2 for complex data):

- ``sigma_y`` (default "auto"): the measurement's noise std in its own units (E|n|^2 = sigma_y^2 for complex
  noise, as ``Linop.noise_std``), converted to y_n like the measurement; "auto" takes the operator's estimate
  from the data (``A.noise_std``: the k-space periphery for Cartesian and non-Cartesian MRI); None or 0:
  noiseless;
- ``sigma_y_min``: the floor, beta_y >= ``sigma_y_min``. Noiseless data, data whose operator cannot estimate
  their noise (CT, image-domain operators under "auto") and data with less noise than the floor are weighed as
  data with noise ``sigma_y_min``: the Gaussian N(x0_hat, r_t^2) times a likelihood of vanishing width is a
  constraint Langevin dynamics with a finite step cannot follow. The default floor, 0.01, is the DAPS code's tau.
  The iteration is stable when eta_t (1 / beta_y^2 + 1 / r_t^2) <= 2, i.e. lr <= 2 sigma_y_min^2 (checked);
- ``tau``: instead of the noise, the DAPS code's fixed weight: its loss ||A x0 - y||^2 / tau^2, i.e.
  beta_y = tau / sqrt(2) (with ``sigma_y`` left at "auto"; giving both is refused).

**Preset "reference"**, the DAPS code (``sampler.py``, ``cores/scheduler.py``, ``cores/mcmc.py``,
configs/sampler/edm_daps.yaml, configs/task/*.yaml "pixel", commands/pixel_*.sh: "DAPS-1K") step for step: 200
annealing steps, 5 ODE steps, 100 Langevin steps with lr 1e-4 (the pixel configs of super-resolution, Gaussian
deblurring and random inpainting; 5e-5 for box inpainting and motion deblurring), lr_min_ratio 0.01, tau 0.01,
sigma from 100 to 0.1, the ODE to 0.01, and the code's discretisation (``convention="code"``): its annealing
scheduler builds 201 rho = 7 levels from 100 to 0.1 and uses the first 200, then 0 (so the last level is above
0.1); the step size at the k-th level is lr (1 + k / 201 (lr_min_ratio - 1)); the ODE takes its 5 Euler steps over
6 rho = 7 levels from sigma_t to 0.01 and returns the iterate at 0.01 (no step to 0); the likelihood weight is
tau's, whatever the noise. Not reproduced: the code returns zeros for a Langevin run that reaches NaN; here that
is a ``SamplingError``.

**Preset "daps-4k"**: the paper's DAPS-4K budget, 400 annealing steps of 10 ODE steps each, with the other
defaults.

**Defaults, deliberately different from the code**: the noise-aware likelihood (beta_y from ``sigma_y``, floored)
instead of the fixed tau, with the Langevin step relative to the target's curvature; ``annealing_steps`` levels
from exactly ``sigma_max`` to ``sigma_min`` with the step size decaying over k / (K - 1) (the last level at
lr x lr_min_ratio); the ODE ends with its Euler step to 0 (its Tweedie estimate) instead of stopping at 0.01, with
the same number of network evaluations; the levels clipped to the prior's trained range.

**Where it applies.** Any linear operator of the contract (``A.normal``, ``A.H``): Cartesian and non-Cartesian
MRI, parallel and fan-beam CT, image-domain operators. A real-valued prior (channels "real" or "rgb") cannot
model complex images (MRI) and a complex prior cannot model real ones (CT, real image-domain data): both are
refused by name; a magnitude prior serves both. DAPS is an approximate posterior sampler (p(x0 | x_t) is a
Gaussian of variance r_t^2 there); its samples are not claimed to have the posterior's variance.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from recon.priors.schedules import karras_sigmas

from .base import Measurement, Sampler, check_int, check_positive, noise_like
from .loop import ddim, run

CONVENTIONS = ("paper", "code")
SIGMA_Y_MIN = 0.01  # the likelihood's std floor (network units): the DAPS code's tau


# --- shared with PnP-DM: the images a prior can model, the likelihood's noise ---------------------------------

def check_images(prior, x: torch.Tensor, who: str) -> None:
    """Refuse a prior whose images are not the operator's: a real-valued prior on complex images, a complex prior
    on real images (a magnitude prior models both)."""
    if x.is_complex() and prior.channels in ("real", "rgb"):
        raise ValueError(f"{who}: a real-valued prior (channels={prior.channels!r}) cannot model the complex images "
                         f"of this operator; use a complex or magnitude prior")
    if not x.is_complex() and prior.channels == "complex":
        raise ValueError(f"{who}: a complex prior (channels='complex') cannot model the real images of this "
                         f"operator; use a real or magnitude prior")


def check_sigma_y(sigma_y) -> Union[None, float, str]:
    """A noise setting: "auto", None (noiseless) or a std >= 0 in the measurement's units."""
    if isinstance(sigma_y, str):
        if sigma_y != "auto":
            raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units or 'auto', "
                             f"got {sigma_y!r}")
        return sigma_y
    if sigma_y is None:
        return None
    try:
        return check_positive("sigma_y", sigma_y, allow_zero=True)
    except ValueError:
        raise ValueError(f"sigma_y must be None, a noise std >= 0 in the measurement's units or 'auto', "
                         f"got {sigma_y!r}") from None


def noise_std(sigma_y, data: Measurement) -> Optional[torch.Tensor]:
    """sigma_y in y_n's units (E|n|^2 = sigma_y^2), one value per measurement of the batch, shaped like the
    batch's trailing dimensions (it broadcasts from the right): a std stated in the measurement's units converted
    like the measurement (sigma_y / (||A|| s)), "auto" the operator's estimate from y_n (once for a batch of
    samples that repeats one measurement), None: 0. None where "auto" finds no estimate."""
    A, y = data.A, data.y
    lead = tuple(y.shape[: y.dim() - len(A.oshape)])
    if sigma_y == "auto":
        repeated = len(lead) > 0 and y.shape[0] > 1 and y.stride(0) == 0
        est = A.noise_std(y[0] if repeated else y)
        if est is None:
            return None
        est = torch.as_tensor(est, device=y.device).to(y.real.dtype)
        return est.expand(lead) if repeated else est
    unit = torch.as_tensor(data.unit, device=y.device).abs().to(y.real.dtype)
    return (sigma_y or 0.0) / unit.reshape(unit.shape[: max(unit.dim() - len(A.oshape), 0)])


def likelihood_variance(sigma_y, floor: float, data: Measurement) -> torch.Tensor:
    """The likelihood's variance beta_y^2 per real component of y_n, one value per measurement (``noise_std``'s
    shape): sigma_y^2 halved for complex data (E|n|^2 = sigma_y^2 splits evenly over Re and Im), at least
    ``floor``^2 (``floor`` in y_n's units)."""
    std = noise_std(sigma_y, data)
    dtype = data.y.real.dtype
    if std is None:
        return torch.tensor(floor * floor, dtype=dtype, device=data.y.device)
    var = std.square() / (2.0 if data.y.is_complex() else 1.0)
    return var.clamp_min(floor * floor).to(dtype)


def per_item(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A value per batch item, shaped to broadcast against tensors with ``ndim`` trailing item dimensions."""
    return v.reshape(tuple(v.shape) + (1,) * ndim)


# --- DAPS --------------------------------------------------------------------------------------------------

class DAPS(Sampler):
    name = "daps"
    LENGTH = "annealing_steps"
    PRESETS = {
        "reference": dict(annealing_steps=200, ode_steps=5, langevin_steps=100, lr=1e-4, lr_min_ratio=0.01,
                          sigma_max=100.0, sigma_min=0.1, ode_sigma_min=0.01, tau=0.01, convention="code"),
        "daps-4k": dict(annealing_steps=400, ode_steps=10),
    }

    def __init__(self, annealing_steps: int = 200, ode_steps: int = 5, langevin_steps: int = 100, lr: float = 1e-4,
                 lr_min_ratio: float = 0.01, sigma_max: float = 100.0, sigma_min: float = 0.1,
                 ode_sigma_min: float = 0.01, sigma_y: Union[None, float, str] = "auto",
                 sigma_y_min: float = SIGMA_Y_MIN, tau: Optional[float] = None, convention: str = "paper", **kw):
        super().__init__(**kw)
        self.annealing_steps = check_int("annealing_steps", annealing_steps, 1)
        self.ode_steps = check_int("ode_steps", ode_steps, 1)
        self.langevin_steps = check_int("langevin_steps", langevin_steps, 0)
        self.lr = check_positive("lr", lr)
        self.lr_min_ratio = check_positive("lr_min_ratio", lr_min_ratio)
        if self.lr_min_ratio > 1:
            raise ValueError(f"lr_min_ratio must be in (0, 1] (the step size decays to lr * lr_min_ratio), "
                             f"got {lr_min_ratio!r}")
        self.sigma_max = check_positive("sigma_max", sigma_max)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.ode_sigma_min = check_positive("ode_sigma_min", ode_sigma_min)
        if not self.ode_sigma_min < self.sigma_min < self.sigma_max:
            raise ValueError(f"need ode_sigma_min < sigma_min < sigma_max, got {ode_sigma_min}, {sigma_min}, "
                             f"{sigma_max}")
        self.sigma_y = check_sigma_y(sigma_y)
        self.sigma_y_min = check_positive("sigma_y_min", sigma_y_min)
        if tau is not None:
            check_positive("tau", tau)
            if self.sigma_y != "auto":
                raise ValueError("give the likelihood's weight one way: tau (the DAPS code's fixed weight) or "
                                 "sigma_y (the measurement's noise), not both")
        self.tau = tau
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.convention = convention
        if tau is None and self.lr > 2 * self.sigma_y_min ** 2:
            raise ValueError(f"lr = {lr} is too large for sigma_y_min = {sigma_y_min}: the Langevin steps diverge "
                             f"unless lr <= 2 sigma_y_min^2")

    def steps_total(self) -> int:
        return self.annealing_steps

    def nfe(self) -> int:
        return self.annealing_steps * self.ode_steps

    # --- the schedules -------------------------------------------------------------------------------------
    def annealing_levels(self, prior) -> list:
        """The annealing levels sigma_0 > ... > sigma_{K-1} and the final 0, in the prior's units."""
        gain = prior.normalization.affine[1]
        k = self.annealing_steps
        if self.convention == "code":
            levels = karras_sigmas(self.sigma_min / gain, self.sigma_max / gain, k + 1)[:k]
        else:
            lo = max(self.sigma_min / gain, prior.sigma_min)
            hi = min(self.sigma_max / gain, prior.sigma_max)
            if not lo < hi:
                raise ValueError(f"daps: the annealing range [{self.sigma_min}, {self.sigma_max}] (network units) "
                                 f"lies outside the prior's trained range [{prior.sigma_min}, {prior.sigma_max}]")
            levels = karras_sigmas(lo, hi, k)
        return [float(s) for s in levels] + [0.0]

    def ode_levels(self, sigma: float, prior) -> list:
        """The ODE's levels from ``sigma`` (prior units): ``ode_steps`` rho = 7 levels down to ``ode_sigma_min``
        and 0; the code's: ``ode_steps`` + 1 levels ending at ``ode_sigma_min``."""
        gain = prior.normalization.affine[1]
        if self.convention == "code":
            return [float(s) for s in karras_sigmas(self.ode_sigma_min / gain, sigma, self.ode_steps + 1)]
        floor = max(self.ode_sigma_min / gain, prior.sigma_min)
        if sigma <= floor:
            return [sigma, 0.0]
        return [float(s) for s in karras_sigmas(floor, sigma, self.ode_steps)] + [0.0]

    def step_size(self, k: int, gain: float) -> float:
        """The Langevin step size at the k-th annealing level (prior units)."""
        n = self.annealing_steps
        frac = k / (n + 1) if self.convention == "code" else (k / (n - 1) if n > 1 else 0.0)
        return self.lr / gain ** 2 * (1 + frac * (self.lr_min_ratio - 1))

    def likelihood_var(self, data: Measurement, gain: float) -> torch.Tensor:
        """beta_y^2 per real component of y_n, one value per measurement (module docstring)."""
        if self.tau is not None:
            return torch.tensor((self.tau / gain) ** 2 / 2, dtype=data.y.real.dtype, device=data.y.device)
        return likelihood_variance(self.sigma_y, self.sigma_y_min / gain, data)

    # --- the run -------------------------------------------------------------------------------------------
    def _run(self, x, data, prior, g, callback, bar):
        check_images(prior, x, self.name)
        A, y = data.A, data.y
        gain = prior.normalization.affine[1]
        var = per_item(self.likelihood_var(data, gain), len(A.ishape))
        floor2 = (self.sigma_y_min / gain) ** 2
        aty = A.H(y)
        levels = self.annealing_levels(prior)

        def langevin(x0_hat, r, lr):
            x0 = x0_hat
            eta = lr if self.tau is not None else lr / (floor2 * (1 / var + 1 / (r * r)))
            for _ in range(self.langevin_steps):
                grad = (x0 - x0_hat) / (r * r) + (A.normal(x0) - aty) / var
                x0 = x0 - eta * grad + (2 * eta) ** 0.5 * noise_like(x0, g)
            return x0

        def step(xt, s, sn, k):
            x0_hat, _ = ddim(xt, self.ode_levels(s, prior), prior.denoise, name=self.name)
            x0 = langevin(x0_hat, s, self.step_size(k, gain))
            nxt = x0 + sn * noise_like(x0, g) if sn > 0 else x0
            return nxt, {"denoised": x0, "x0_hat": x0_hat}

        x, _ = run(noise_like(x, g) * levels[0], levels, step, self.name, callback, bar)
        return x
