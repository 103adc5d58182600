"""``DiffusionPrior``: one interface for every score network, in variance-exploding coordinates.

For a noisy image x_sigma = x_0 + sigma z the prior answers three equivalent questions
(Tweedie's formula, chapter 7 Lemma 7.1):

    denoise(x, sigma) = E[x_0 | x_sigma]
    score(x, sigma)   = (denoise(x, sigma) - x) / sigma^2
    eps(x, sigma)     = (x - denoise(x, sigma)) / sigma

Images are (..., H, W), complex for MRI or real. The channel convention maps them to the network:
"complex" -> 2 channels (Re, Im); "magnitude" -> a 1-channel real network applied to Re and Im
separately (Score-MRI's trick, chapter 7 Alg. 7.1); "real" -> 1 channel. ``Normalization`` records how the
training data were scaled, so that samplers never hard-code a scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch
from torch import nn

from . import schedules
from .parametrizations import Denoiser

CHANNELS = ("complex", "magnitude", "real")


@dataclass
class Normalization:
    """How training images were scaled: x_train = x / scale, with scale from the image itself.

    kind "percentile": scale = the q-th percentile of |x| (per image); "max": scale = max |x|;
    "fixed": scale = ``value`` (data in physical units, e.g. CT in mu / mu_water); "none": scale = 1.
    At reconstruction the scale is taken from the operator's pseudo-inverse image A^+ y (``Linop.pinv``:
    SENSE-combined zero-filled for MRI, FBP for CT), which does not change when (y, A) becomes (c y, c A)."""

    kind: str = "percentile"
    q: float = 99.0
    value: float = 1.0

    def __post_init__(self):
        if self.kind not in ("percentile", "max", "fixed", "none"):
            raise ValueError(f"normalization kind must be percentile, max, fixed or none, got {self.kind!r}")
        if not 0 < self.q <= 100:
            raise ValueError(f"percentile q must be in (0, 100], got {self.q}")

    def scale(self, ref: torch.Tensor, ndim: int = 2) -> torch.Tensor:
        """Scale of ``ref`` over its last ``ndim`` dimensions (one image: 2; a stack or coil images taken as
        one image: 3), shaped ``ref.shape[:-ndim] + (1,) * ndim``."""
        if ref.dim() < ndim:
            raise ValueError(f"the reference image needs at least {ndim} dimensions, got shape {tuple(ref.shape)}")
        lead = ref.shape[: ref.dim() - ndim]
        ones = (1,) * ndim
        if self.kind in ("fixed", "none"):
            v = self.value if self.kind == "fixed" else 1.0
            return torch.full(lead + ones, v, dtype=ref.real.dtype, device=ref.device)
        mag = ref.abs().reshape(lead + (-1,)).float()
        s = mag.amax(-1) if self.kind == "max" else torch.quantile(mag, self.q / 100, dim=-1)
        return s.clamp_min(torch.finfo(s.dtype).tiny).reshape(lead + ones).to(ref.real.dtype)


class DiffusionPrior(nn.Module):
    """A denoiser in VE coordinates plus its channel convention, noise range and data normalisation."""

    def __init__(self, denoiser: Denoiser, channels: str = "complex", image_size: Optional[tuple] = None,
                 normalization: Optional[Normalization] = None, name: str = ""):
        super().__init__()
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
        self.denoiser = denoiser
        self.channels = channels
        self.image_size = tuple(image_size) if image_size is not None else None
        self.normalization = normalization or Normalization("none")
        self.name = name

    # --- noise range and schedules ---------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return self.denoiser.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.denoiser.sigma_max

    def sigmas(self, n: int, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
        """A decreasing schedule of n levels over the prior's trained range: "karras" (EDM's rho-schedule),
        "geometric", or "auto": for a network with discrete timesteps (DDPM/ADM) ``n`` evenly spaced levels of
        its own ladder (DDIM's spacing), otherwise "karras"."""
        if n < 1:
            raise ValueError(f"a schedule needs at least 1 level, got {n}")
        ladder = self.denoiser.discrete_sigmas
        if kind == "auto" and ladder is not None:
            idx = torch.linspace(len(ladder) - 1, 0, n).round().long()
            return ladder[idx].double()
        if kind in ("karras", "auto"):
            return schedules.karras_sigmas(self.sigma_min, self.sigma_max, n, rho)
        if kind == "geometric":
            return schedules.geometric_sigmas(self.sigma_min, self.sigma_max, n)
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'auto', 'karras' or 'geometric'")

    # --- the three questions -----------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        """Tweedie estimate E[x_0 | x] for x = x_0 + sigma z, for a batch (..., H, W)."""
        lead, hw = x.shape[:-2], x.shape[-2:]
        sig = self._sigma(sigma, lead, x.device)
        xb = x.reshape((-1,) + tuple(hw))
        if self.channels == "complex":
            if not x.is_complex():
                xb = xb.to(torch.complex64)
            net_in = torch.view_as_real(xb).permute(0, 3, 1, 2)
            out = self.denoiser(net_in.contiguous(), sig)
            d = torch.complex(out[:, 0], out[:, 1])
        elif self.channels == "magnitude" and x.is_complex():
            parts = torch.cat([xb.real, xb.imag])[:, None]
            out = self.denoiser(parts, sig.repeat(2))[:, 0]
            n = xb.shape[0]
            d = torch.complex(out[:n], out[n:])
        else:
            if x.is_complex():
                raise ValueError("a real-valued prior cannot denoise a complex image; pass a real image")
            d = self.denoiser(xb[:, None], sig)[:, 0]
        return d.reshape(x.shape).to(x.dtype)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = self._sigma_b(sigma, x)
        return (self.denoise(x, sigma) - x) / s ** 2

    def eps(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = self._sigma_b(sigma, x)
        return (x - self.denoise(x, sigma)) / s

    forward = denoise

    # --- data scaling --------------------------------------------------------------------------
    def data_scale(self, y: torch.Tensor, A) -> torch.Tensor:
        """The scale that maps measured data to the training range, from the pseudo-inverse image A^+ y over
        the operator's whole input (shaped ``batch + (1,) * len(A.ishape)``)."""
        return self.normalization.scale(A.pinv(y), ndim=len(A.ishape))

    def normalize(self, x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        return x / self.data_scale(y, A)

    def denormalize(self, x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        return x * self.data_scale(y, A)

    # --- helpers -------------------------------------------------------------------------------
    def _sigma(self, sigma, lead, device) -> torch.Tensor:
        n = 1
        for d in lead:
            n *= d
        s = torch.as_tensor(sigma, dtype=torch.float32, device=device)
        if s.numel() == 1:
            return s.reshape(1).expand(n)
        if tuple(s.shape) != tuple(lead):
            raise ValueError(f"sigma must be a scalar or have the batch shape {tuple(lead)}, got {tuple(s.shape)}")
        return s.reshape(n)

    def _sigma_b(self, sigma, x) -> torch.Tensor:
        s = torch.as_tensor(sigma, device=x.device, dtype=x.real.dtype)
        return s.reshape(s.shape + (1, 1)) if s.dim() else s

    def config(self) -> dict:
        return {"channels": self.channels, "image_size": list(self.image_size) if self.image_size else None,
                "normalization": asdict(self.normalization), "parametrization": self.denoiser.config(),
                "name": self.name}
