"""Noise schedules, all expressed as noise levels sigma of the variance-exploding (VE) process
x_sigma = x_0 + sigma z.

- VE (Song & Ermon 2019/2020; Song et al. 2021): a geometric ladder sigma_i between sigma_min and sigma_max.
- VP / DDPM (Ho et al. 2020; Nichol & Dhariwal 2021): betas (linear or cosine) give
  abar_t = prod_{s<=t} (1 - beta_s); the VP variable x_vp = sqrt(abar) x_0 + sqrt(1 - abar) z equals
  sqrt(abar) x_ve with sigma_t = sqrt((1 - abar_t) / abar_t). The conversions are exact.
- Karras et al. (EDM, 2022) rho-schedule for samplers: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho.
"""
from __future__ import annotations

import math

import torch


def geometric_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """n noise levels from sigma_max down to sigma_min, equally spaced in log sigma (float64)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if n < 2:
        raise ValueError(f"need at least 2 noise levels, got {n}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """The EDM rho-schedule from sigma_max down to sigma_min (float64)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + ramp * (b - a)) ** rho


def linear_betas(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """DDPM's linear schedule; for n != 1000 the endpoints are scaled by 1000/n as in improved DDPM."""
    scale = 1000 / n
    return torch.linspace(scale * beta_start, scale * beta_end, n, dtype=torch.float64)


def cosine_betas(n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: abar(t) = cos^2(((t/n + s)/(1 + s)) pi/2), betas clipped at max_beta."""
    f = lambda t: math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(n)], dtype=torch.float64)


def betas_by_name(name: str, n: int = 1000) -> torch.Tensor:
    if name == "linear":
        return linear_betas(n)
    if name == "cosine":
        return cosine_betas(n)
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear' or 'cosine'")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas.to(torch.float64), dim=0)


def abar_to_sigma(abar: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar) / abar)."""
    return ((1 - abar) / abar).sqrt()


def sigma_to_abar(sigma: torch.Tensor) -> torch.Tensor:
    """abar = 1 / (1 + sigma^2)."""
    return 1 / (1 + sigma * sigma)


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional timestep of ``sigma`` on an increasing discrete ladder ``sigmas`` (index t <-> sigmas[t]),
    linear in log sigma between neighbours and clamped at both ends (as k-diffusion's DiscreteSchedule)."""
    log_s = sigmas.to(torch.float64).log()
    x = sigma.to(torch.float64).clamp(sigmas[0], sigmas[-1]).log().reshape(-1)
    hi = torch.searchsorted(log_s, x).clamp(1, len(log_s) - 1)
    lo = hi - 1
    w = (x - log_s[lo]) / (log_s[hi] - log_s[lo])
    return (lo + w).reshape(sigma.shape)


def t_to_sigma(t: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sigma_to_t``: log-linear interpolation of the ladder at fractional index t."""
    t = t.to(torch.float64).clamp(0, len(sigmas) - 1)
    lo = t.floor().long().clamp(max=len(sigmas) - 2)
    w = t - lo
    log_s = sigmas.to(torch.float64).log()
    return ((1 - w) * log_s[lo] + w * log_s[lo + 1]).exp()
