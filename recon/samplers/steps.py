"""Single reverse-diffusion steps in variance-exploding coordinates, shared by all samplers.

- ``ddim_update`` (Song, Meng & Ermon 2021; chapter 7 Eq. 7.21 with x_vp = sqrt(abar) x_ve):
      x' = x0 + sqrt(sigma'^2 - s~^2) eps + s~ z,   s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma,
  eta = 0 deterministic DDIM, eta = 1 ancestral DDPM sampling (``convention="ddim"``). DDS's code
  (Chung, Lee & Ye 2024) scales its eta differently: x_vp' = sqrt(abar') x0 + sqrt(1 - abar') (eta z +
  sqrt(1 - eta^2) eps), i.e. s~ = eta sigma' (``convention="dds"``; eta = 1 then re-noises x0 with fresh noise).
- ``vp_start``: the start x_T ~ N(0, I) of a VP sampler, drawn in the network's VP coordinates.
- ``reverse_diffusion`` predictor (Euler-Maruyama of the reverse VE SDE, Eq. 7.26):
      x' = x + (sigma^2 - sigma'^2) score + sqrt(sigma^2 - sigma'^2) z.
- ``langevin`` corrector (Song et al. 2021, Alg. 4): eps = 2 (snr ||z|| / ||score||)^2 per image,
      x' = x + eps score + sqrt(2 eps) z;
  with ``split_complex`` a complex image is two real streams, Re and Im, each with its own eps from its own
  score and noise norms (a magnitude prior applied to Re and Im, Score-MRI / chapter 7 Alg. 7.1).
Each returns (x', x'_mean), the mean being the step without the injected noise.
"""
from __future__ import annotations

import torch


CONVENTIONS = ("ddim", "dds")


def ddim_noise(sigma: float, sigma_next: float, eta: float, convention: str = "ddim") -> float:
    """The std s~ of the noise a DDIM step injects: eta sigma' sqrt(sigma^2 - sigma'^2) / sigma ("ddim"), or
    eta sigma' ("dds")."""
    if convention == "dds":
        return eta * sigma_next
    if convention != "ddim":
        raise ValueError(f"unknown eta convention {convention!r}; expected one of {CONVENTIONS}")
    return eta * sigma_next * max(sigma ** 2 - sigma_next ** 2, 0.0) ** 0.5 / sigma


def vp_start(z: torch.Tensor, sigma: float, affine: tuple = (0.0, 1.0)) -> torch.Tensor:
    """The start of a VP sampler at level ``sigma`` (prior's units) from the draw z: x_T = z in the network's VP
    coordinates, i.e. the network's VE image sqrt(1 + S^2) z with S = g sigma, in the prior's coordinates
    u = (sqrt(1 + S^2) z - lo) / g (``affine`` = (lo, g), ``Normalization.affine``). The VE start sigma z
    differs from it by the offset and a factor sqrt(1 + 1/S^2)."""
    lo, g = affine
    big = g * float(sigma)
    return ((1 + big * big) ** 0.5 * z - lo) / g


def ddim_update(x0: torch.Tensor, eps: torch.Tensor, sigma: float, sigma_next: float, eta: float,
                z: torch.Tensor | None, convention: str = "ddim") -> torch.Tensor:
    s_tilde = ddim_noise(sigma, sigma_next, eta, convention)
    out = x0 + max(sigma_next ** 2 - s_tilde ** 2, 0.0) ** 0.5 * eps
    return out + s_tilde * z if (s_tilde > 0 and z is not None) else out


def reverse_diffusion(x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_next: float, z: torch.Tensor):
    var = sigma ** 2 - sigma_next ** 2
    mean = x + var * score
    return mean + var ** 0.5 * z, mean


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm over the last two dims, shaped for broadcasting."""
    return v.abs().square().sum(dim=(-2, -1), keepdim=True).sqrt()


def langevin(x: torch.Tensor, score: torch.Tensor, snr: float, z: torch.Tensor, split_complex: bool = False):
    if split_complex and x.is_complex():
        re = langevin(x.real, score.real, snr, z.real)
        im = langevin(x.imag, score.imag, snr, z.imag)
        return torch.complex(re[0], im[0]), torch.complex(re[1], im[1])
    step = 2 * (snr * _norm(z) / _norm(score).clamp_min(1e-12)) ** 2
    mean = x + step * score
    return mean + (2 * step).sqrt() * z, mean
