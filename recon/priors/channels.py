"""Channel conventions: how a prior's images map to its network's channels and back.

- "complex": a complex image (..., H, W) as 2 channels (Re, Im);
- "magnitude": a 1-channel real network applied to the real and imaginary parts of a complex image separately
  (Score-MRI's trick, chapter 7 Alg. 7.1); a real image goes to it as one channel;
- "real": a real image as 1 channel;
- "rgb": a real (..., 3, H, W) image as 3 channels (natural-image priors such as DPS's FFHQ/ImageNet models).

``ChannelConvention.apply`` takes a batch of images (B, *image), calls a denoiser on network channels
(B, C, H, W) and returns the estimate as images again.
"""
from __future__ import annotations

import torch

CHANNELS = ("complex", "magnitude", "real", "rgb")


class ChannelConvention:
    """One of ``CHANNELS``: the image's trailing dimensions and its map to and from network channels."""

    def __init__(self, name: str):
        if name not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {name!r}")
        self.name = name

    @property
    def image_ndim(self) -> int:
        """Trailing dimensions of one image: 3 for rgb (3, H, W), else 2 (H, W)."""
        return 3 if self.name == "rgb" else 2

    def check(self, x: torch.Tensor) -> None:
        """Refuse a batch whose trailing dimensions are not images of this convention."""
        if self.image_ndim == 3 and (x.dim() < 3 or x.shape[-3] != 3):
            raise ValueError(f"an rgb prior denoises (..., 3, H, W) images, got shape {tuple(x.shape)}")

    def apply(self, fn, xb: torch.Tensor, sig: torch.Tensor, variance: bool = False):
        """``fn(u, sig)`` (a denoiser on network channels (B, C, H, W), noise per item (B,)) applied to the
        images ``xb`` (B, *image): the estimate as (B, *image) images. With ``variance`` (real and rgb only),
        ``fn(u, sig, True)`` returns (estimate, variance channels) on network channels, and so does this, each
        in the shape of network channels (the caller reshapes them to the images')."""
        if self.name == "complex":
            if variance:
                raise ValueError("a learned variance is available for real or rgb priors, not channels='complex'")
            if not xb.is_complex():
                xb = xb.to(torch.complex64)
            net_in = torch.view_as_real(xb).permute(0, 3, 1, 2)
            out = fn(net_in.contiguous(), sig)
            return torch.complex(out[:, 0], out[:, 1])
        if self.name == "magnitude" and xb.is_complex():
            if variance:
                raise ValueError("a learned variance is available for real or rgb priors, not channels='magnitude'")
            parts = torch.cat([xb.real, xb.imag])[:, None]
            out = fn(parts, sig.repeat(2))[:, 0]
            n = xb.shape[0]
            return torch.complex(out[:n], out[n:])
        if xb.is_complex():
            raise ValueError("a real-valued prior cannot denoise a complex image; pass a real image")
        rgb = self.image_ndim == 3
        if variance:
            return fn(xb if rgb else xb[:, None], sig, True)
        return fn(xb, sig) if rgb else fn(xb[:, None], sig)[:, 0]


_CONVENTIONS = {name: ChannelConvention(name) for name in CHANNELS}


def convention(name: str) -> ChannelConvention:
    """The ``ChannelConvention`` called ``name`` (ValueError for a name not in ``CHANNELS``)."""
    if not isinstance(name, str) or name not in _CONVENTIONS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {name!r}")
    return _CONVENTIONS[name]
