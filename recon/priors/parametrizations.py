"""Network parametrisations, each turned into one denoiser D(x, sigma) = E[x_0 | x_sigma] in
variance-exploding coordinates x_sigma = x_0 + sigma z (as k-diffusion's ``external`` wrappers do).

Every class here is an ``nn.Module`` taking ``x`` of shape (B, C, H, W) in the network's channels and
``sigma`` of shape (B,), and returning the Tweedie estimate.

- ``VEScore``: the network returns the score s(x, sigma) (NCSN++ with scale_by_sigma, NCSNv2):
  D = x + sigma^2 s. Conditioning by sigma itself ("sigma", score_sde continuous VE), by log sigma
  ("log_sigma"), or by the index of the nearest level of a discrete geometric ladder ("index", NCSNv2).
- ``VPModel``: a DDPM/ADM network on x_vp = sqrt(abar) x_ve at timestep t(sigma), predicting eps, x0 or v.
  With a learned variance (2C output channels) the first C channels are the prediction and the last C the
  interpolation coefficient of Nichol & Dhariwal's "learned_range" variance (``forward_variance``,
  ``learned_range_std``).
  eps:  D = x - sigma eps;   x0: D = x0;   v: x0 = sqrt(abar) x_vp - sqrt(1 - abar) v.
  t(sigma) is the fractional timestep, log-linear between the discrete levels (``timesteps="interp"``),
  or the nearest integer timestep (``"round"``).
- ``EDM``: Karras et al. (2022) preconditioning D = c_skip x + c_out F(c_in x, c_noise) with
  c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1/sqrt(sigma^2 + sd^2),
  c_noise = log(sigma)/4.
- ``PhaseEquivariant``: wraps any of the above for complex (2-channel) images and makes it exactly
  equivariant to a global phase, D(e^{it} x) = e^{it} D(x): the input is multiplied by e^{-i phi(x)},
  denoised, and multiplied back by e^{i phi(x)}. With ``smooth = 0`` phi is the phase of the sum of the
  pixels (one number per image); with ``smooth = s > 0`` it is the phase of x low-passed by a Gaussian of
  s pixels, a smooth phase map, so that the network sees images that are close to real and positive. The
  distribution of MR images does not change under a global phase, so the exact denoiser has this symmetry;
  building it in lets the network spend its capacity on anatomy instead of on phase.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import schedules


class Denoiser(nn.Module):
    """Base: ``forward(x, sigma) -> D(x, sigma)``; ``sigma_min``/``sigma_max`` bound the trained range."""

    sigma_min: float
    sigma_max: float
    discrete_sigmas = None  # the network's own ladder of noise levels where it has discrete timesteps

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_variance(self, x, sigma):
        """(B, 2C, H, W): the Tweedie estimate stacked with the network's learned-variance output, for
        parametrisations that have one (``VPModel`` with ``learned_sigma``); refused otherwise."""
        raise ValueError(f"the parametrisation {type(self).__name__} has no learned variance")


class VEScore(Denoiser):
    def __init__(self, net: nn.Module, sigma_min: float = 0.01, sigma_max: float = 50.0,
                 conditioning: str = "sigma", n_levels: int = 0):
        super().__init__(net)
        if conditioning not in ("sigma", "log_sigma", "index"):
            raise ValueError(f"conditioning must be 'sigma', 'log_sigma' or 'index', got {conditioning!r}")
        if conditioning == "index" and n_levels < 2:
            raise ValueError("index conditioning needs n_levels >= 2 (the size of the sigma ladder)")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.conditioning, self.n_levels = conditioning, int(n_levels)
        if conditioning == "index":
            # NCSNv2 ladder: index 0 is sigma_max
            self.register_buffer("ladder", schedules.geometric_sigmas(sigma_min, sigma_max, n_levels), persistent=False)

    def cond(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "sigma":
            return sigma
        if self.conditioning == "log_sigma":
            return sigma.log()
        return (self.ladder.log()[None, :].to(sigma.device) - sigma.double().log()[:, None]).abs().argmin(dim=1)

    def forward(self, x, sigma):
        score = self.net(x, self.cond(sigma))
        return x + sigma.reshape(-1, 1, 1, 1).to(x.dtype) ** 2 * score

    def config(self) -> dict:
        return {"type": "ve_score", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "conditioning": self.conditioning, "n_levels": self.n_levels}


class VPModel(Denoiser):
    def __init__(self, net: nn.Module, betas="linear", n_timesteps: int = 1000, prediction: str = "eps",
                 learned_sigma: bool = False, timesteps: str = "interp"):
        super().__init__(net)
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")
        if timesteps not in ("interp", "round"):
            raise ValueError(f"timesteps must be 'interp' or 'round', got {timesteps!r}")
        self.schedule = betas if isinstance(betas, str) else "custom"
        b = schedules.betas_by_name(betas, n_timesteps) if isinstance(betas, str) else torch.as_tensor(betas)
        self.register_buffer("sigmas", schedules.abar_to_sigma(schedules.alphas_cumprod(b)), persistent=False)
        self.prediction, self.learned_sigma, self.timesteps = prediction, learned_sigma, timesteps
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])

    @property
    def discrete_sigmas(self) -> torch.Tensor:
        return self.sigmas

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        t = schedules.sigma_to_t(sigma, self.sigmas)
        return t.round() if self.timesteps == "round" else t

    def forward(self, x, sigma):
        return self._predict(x, sigma)[0]

    def forward_variance(self, x, sigma):
        """The Tweedie estimate (C channels) stacked with the raw variance channels v (C channels) of a network
        with a learned variance: log var_t = (v + 1)/2 log beta_t + (1 - v)/2 log beta~_t (``learned_range_std``)."""
        if not self.learned_sigma:
            return super().forward_variance(x, sigma)
        d, v = self._predict(x, sigma)
        return torch.cat([d, v.to(d.dtype)], dim=1)

    def _predict(self, x, sigma):
        s = sigma.reshape(-1, 1, 1, 1).to(torch.float64)
        abar = schedules.sigma_to_abar(s)
        x_vp = (abar.sqrt() * x).to(x.dtype)
        out = self.net(x_vp, self.t_of_sigma(sigma).to(x.dtype))
        var = None
        if self.learned_sigma:
            out, var = out[:, : x.shape[1]], out[:, x.shape[1]:]
        s, abar = s.to(x.dtype), abar.to(x.dtype)
        if self.prediction == "eps":
            return x - s * out, var
        if self.prediction == "x0":
            return out, var
        return abar.sqrt() * x_vp - (1 - abar).sqrt() * out, var

    def config(self) -> dict:
        return {"type": "vp", "betas": self.schedule, "n_timesteps": len(self.sigmas), "prediction": self.prediction,
                "learned_sigma": self.learned_sigma, "timesteps": self.timesteps}


class EDM(Denoiser):
    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__(net)
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)

    def forward(self, x, sigma):
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (s ** 2 + sd2)
        c_out = s * self.sigma_data / (s ** 2 + sd2).sqrt()
        c_in = 1 / (s ** 2 + sd2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, sigma.log().to(x.dtype) / 4)

    def config(self) -> dict:
        return {"type": "edm", "sigma_data": self.sigma_data, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class PhaseEquivariant(Denoiser):
    def __init__(self, inner: Denoiser, smooth: float = 0.0):
        nn.Module.__init__(self)
        if isinstance(inner, PhaseEquivariant):
            raise ValueError("the denoiser is already phase-equivariant")
        if not smooth >= 0:
            raise ValueError(f"smooth must be a width in pixels >= 0 (0: one global phase), got {smooth}")
        self.inner, self.smooth = inner, float(smooth)

    @property
    def net(self) -> nn.Module:
        return self.inner.net

    @property
    def sigma_min(self) -> float:
        return self.inner.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.inner.sigma_max

    @property
    def discrete_sigmas(self):
        return self.inner.discrete_sigmas

    @staticmethod
    def _turn(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Multiply the complex image (Re, Im) = x[:, 0], x[:, 1] by c + i s (per item, or per pixel)."""
        re, im = x[:, 0], x[:, 1]
        return torch.stack([c * re - s * im, s * re + c * im], dim=1)

    def _lowpass(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 2, H, W) blurred by a Gaussian of ``smooth`` pixels (zero padding, separable)."""
        r = max(1, int(3 * self.smooth + 0.5))
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-t ** 2 / (2 * self.smooth ** 2))
        k = k / k.sum()
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        y = nn.functional.conv2d(y, k.reshape(1, 1, 1, -1), padding=(0, r))
        y = nn.functional.conv2d(y, k.reshape(1, 1, -1, 1), padding=(r, 0))
        return y.reshape(b, c, h, w)

    def phase(self, x: torch.Tensor):
        """cos phi and sin phi, (B, 1, 1) for a global phase or (B, H, W) for a smooth phase map."""
        xf = x.float()
        if self.smooth > 0:
            lp = self._lowpass(xf)
            re, im = lp[:, 0], lp[:, 1]
        else:
            total = xf.sum(dim=(-2, -1))
            re, im = total[:, 0, None, None], total[:, 1, None, None]
        mag = torch.sqrt(re ** 2 + im ** 2)
        ok = mag > 1e-20
        safe = torch.where(ok, mag, torch.ones_like(mag))
        c = torch.where(ok, re / safe, torch.ones_like(mag))
        s = torch.where(ok, im / safe, torch.zeros_like(mag))
        return c.to(x.dtype), s.to(x.dtype)

    def forward(self, x, sigma):
        if x.dim() != 4 or x.shape[1] != 2:
            raise ValueError(f"a phase-equivariant denoiser needs complex images as (B, 2, H, W), got {tuple(x.shape)}")
        c, s = self.phase(x)
        d = self.inner(self._turn(x, c, -s), sigma)
        return self._turn(d, c.to(d.dtype), s.to(d.dtype))

    def config(self) -> dict:
        return {"type": "phase_equivariant", "smooth": self.smooth, "inner": self.inner.config()}


def build(net: nn.Module, config: dict) -> Denoiser:
    """Rebuild a parametrisation from its ``config()``."""
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == "phase_equivariant":
        if "inner" not in cfg:
            raise ValueError("a phase_equivariant parametrisation needs the config of its inner denoiser ('inner')")
        return PhaseEquivariant(build(net, cfg["inner"]), float(cfg.get("smooth", 0.0)))
    if kind == "ve_score":
        return VEScore(net, **cfg)
    if kind == "vp":
        return VPModel(net, **cfg)
    if kind == "edm":
        return EDM(net, **cfg)
    raise ValueError(f"unknown parametrisation {kind!r}; expected 've_score', 'vp', 'edm' or 'phase_equivariant'")


def learned_range_std(v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """The noise std, in VE units, of the ancestral step from level ``sigma`` to ``sigma_next`` under a learned
    "learned_range" variance (Nichol & Dhariwal 2021, Eq. 15): with abar = 1/(1 + sigma^2), abar' = 1/(1 + sigma'^2)
    and the step's beta = 1 - abar/abar', beta~ = beta (1 - abar')/(1 - abar) (guided-diffusion's respaced
    process: the step from one kept timestep to the next),

        log var = (v + 1)/2 log beta + (1 - v)/2 log beta~,

    the variance of x_vp'; x_ve' = x_vp' / sqrt(abar') has std sqrt(var (1 + sigma'^2)). For sigma' = 0 (the last
    step, which adds no noise) the std is 0. ``v`` is the network's variance output (nominally in [-1, 1])."""
    s2, n2 = float(sigma) ** 2, float(sigma_next) ** 2
    if not 0 <= n2 < s2:
        raise ValueError(f"an ancestral step needs 0 <= sigma_next < sigma, got {sigma_next}, {sigma}")
    if n2 == 0:
        return torch.zeros_like(v)
    log_beta = math.log((s2 - n2) / (1 + s2))
    log_tilde = math.log((s2 - n2) * n2 / (s2 * (1 + n2)))
    frac = (v + 1) / 2
    log_var = frac * log_beta + (1 - frac) * log_tilde
    return (0.5 * log_var).exp() * math.sqrt(1 + n2)


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (unit effective weight)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


__all__ = ["Denoiser", "VEScore", "VPModel", "EDM", "PhaseEquivariant", "build", "edm_loss_weight",
           "learned_range_std"]
