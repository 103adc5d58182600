"""Image-domain forward operators for the generative tasks (inpainting, super-resolution, deblurring, denoising).

- ``Inpainting(mask)``: y = m x, m = 1 where the pixel is observed (a ``Multiply`` by a 0/1 mask).
- ``Downsample(factor, dims)``: block averaging by ``factor`` along the last ``dims`` dimensions (2: in-plane;
  1 or 3 with a slice axis: through-plane super-resolution); the adjoint spreads each value over its block
  divided by the block size.
- ``Blur(kernel)``: 2-D convolution with zero padding ("same" size); the adjoint correlates with the kernel.
- ``Identity``: denoising.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .linop import Identity, Linop, Multiply, ShapeError

__all__ = ["Inpainting", "Downsample", "Blur", "Identity"]


class Inpainting(Multiply):
    """y = m x with a 0/1 mask m (1 = observed)."""

    def __init__(self, mask: torch.Tensor):
        mask = torch.as_tensor(mask)
        if mask.dim() < 2:
            raise ShapeError(f"inpainting mask must be (..., H, W), got shape {tuple(mask.shape)}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("inpainting mask must contain only 0 (missing) and 1 (observed)")
        super().__init__(mask.float())

    @property
    def mask(self) -> torch.Tensor:
        return self.w


class Downsample(Linop):
    """Average over non-overlapping blocks of ``factor`` along the last ``len(shape)`` dims."""

    def __init__(self, shape: Sequence[int], factor):
        shape = tuple(shape)
        factor = (factor,) * len(shape) if isinstance(factor, int) else tuple(factor)
        if len(factor) != len(shape) or any(f < 1 for f in factor):
            raise ValueError(f"factor must be a positive int or one per dimension of {shape}, got {factor}")
        if any(s % f for s, f in zip(shape, factor)):
            raise ShapeError(f"shape {shape} is not divisible by the factor {factor}")
        super().__init__(shape, tuple(s // f for s, f in zip(shape, factor)))
        self.factor = factor

    def _blocks(self, x):
        lead = x.shape[: x.dim() - len(self.ishape)]
        dims = []
        for o, f in zip(self.oshape, self.factor):
            dims += [o, f]
        return x.reshape(lead + tuple(dims)), len(lead)

    def _apply(self, x):
        xb, nl = self._blocks(x)
        return xb.mean(dim=tuple(nl + 2 * i + 1 for i in range(len(self.factor))))

    def _adjoint(self, y):
        n = 1
        for f in self.factor:
            n *= f
        out = y
        for i, f in enumerate(self.factor):
            out = out.repeat_interleave(f, dim=y.dim() - len(self.factor) + i)
        return out / n

    def norm(self, like=None) -> float:
        """Block averaging: A A^H = I / n (n pixels per block), so ||A|| = 1 / sqrt(n)."""
        return 1.0 / math.sqrt(math.prod(self.factor))

    def _pinv(self, y):
        """The exact pseudo-inverse n A^H: every pixel of a block takes the block's value."""
        return self._adjoint(y) * math.prod(self.factor)

    pinv_method = "replicate"


class Blur(Linop):
    """2-D convolution with a (kh, kw) kernel, zero padding, output of the input's size (odd kernel sides)."""

    def __init__(self, kernel: torch.Tensor, shape: Sequence = (None, None)):
        k = torch.as_tensor(kernel, dtype=torch.float32)
        if k.dim() != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"kernel must be 2-D with odd sides, got shape {tuple(k.shape)}")
        super().__init__(tuple(shape), tuple(shape))
        self.kernel = k

    def _conv(self, x, k):
        lead, (h, w) = x.shape[:-2], x.shape[-2:]
        flat = x.reshape(-1, 1, h, w)
        if flat.is_complex():
            re = F.conv2d(flat.real, k.to(flat.real.dtype)[None, None], padding="same")
            im = F.conv2d(flat.imag, k.to(flat.real.dtype)[None, None], padding="same")
            out = torch.complex(re, im)
        else:
            out = F.conv2d(flat, k.to(flat.dtype)[None, None], padding="same")
        return out.reshape(lead + (h, w))

    def _apply(self, x):  # conv2d is a correlation; the flipped kernel makes it a convolution
        return self._conv(x, self.kernel.flip(0, 1).to(x.device))

    def _adjoint(self, y):
        return self._conv(y, self.kernel.to(y.device))

    @staticmethod
    def gaussian(sigma: float, size: int = 0) -> torch.Tensor:
        size = size or 2 * int(3 * sigma) + 1
        r = torch.arange(size, dtype=torch.float32) - size // 2
        g = torch.exp(-r ** 2 / (2 * sigma ** 2))
        k = g[:, None] * g[None, :]
        return k / k.sum()
