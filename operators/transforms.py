"""Sparsifying transforms used as regularisers: finite differences and an orthonormal wavelet transform.

``FiniteDifference``: x -> (D_h x, D_w x) with periodic boundaries, stacked on a new dimension -3;
its normal operator is the periodic Laplacian (||D|| <= sqrt(8)).

``Wavelet``: a multi-level orthonormal 2-D discrete wavelet transform with periodic extension
(Mallat's algorithm), W^H W = W W^H = I. Input sides must be divisible by 2^levels; ``pad_to_wavelet``
gives the padded shape. Coefficients are returned in one tensor of the input's shape (the usual
"packed" layout: approximation in the top-left corner, details around it).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .linop import Linop, ShapeError


class FiniteDifference(Linop):
    """Periodic forward differences along the last two dims: (..., H, W) -> (..., 2, H, W)."""

    def __init__(self, shape: tuple = (None, None)):
        super().__init__(tuple(shape), (2,) + tuple(shape))

    def _apply(self, x):
        dh = torch.roll(x, -1, dims=-2) - x
        dw = torch.roll(x, -1, dims=-1) - x
        return torch.stack((dh, dw), dim=-3)

    def _adjoint(self, y):
        dh, dw = y.unbind(dim=-3)
        return (torch.roll(dh, 1, dims=-2) - dh) + (torch.roll(dw, 1, dims=-1) - dw)


def group_soft_threshold(v: torch.Tensor, t: float, dim: int = -3) -> torch.Tensor:
    """The proximal map of t ||.||_{2,1}: shrink the magnitude over ``dim`` (the gradient directions of
    ``FiniteDifference``) by t, keeping the direction (isotropic TV)."""
    mag = v.abs().square().sum(dim=dim, keepdim=True).sqrt()
    return v * torch.clamp(mag - t, min=0) / mag.clamp_min(1e-30)


# Daubechies scaling filters (decomposition low-pass), orthonormal: sum h = sqrt(2).
_FILTERS = {
    "haar": (1 / math.sqrt(2), 1 / math.sqrt(2)),
    "db2": (0.48296291314469025, 0.836516303737469, 0.22414386804185735, -0.12940952255092145),
    "db4": (0.23037781330885523, 0.7148465705525415, 0.6308807679295904, -0.02798376941698385,
            -0.18703481171888114, 0.030841381835986965, 0.032883011666982945, -0.010597401784997278),
}


@lru_cache(maxsize=None)
def _filters(name: str):
    if name not in _FILTERS:
        raise ValueError(f"unknown wavelet {name!r}; known: {sorted(_FILTERS)}")
    lo = torch.tensor(_FILTERS[name], dtype=torch.float64)
    n = lo.numel()
    hi = torch.tensor([(-1) ** k * _FILTERS[name][n - 1 - k] for k in range(n)], dtype=torch.float64)
    return lo, hi


def pad_to_wavelet(shape: tuple, levels: int) -> tuple:
    """Smallest (H', W') >= (H, W) with both sides divisible by 2^levels."""
    m = 2 ** levels
    return tuple(-(-s // m) * m for s in shape)


class Wavelet(Linop):
    """Orthonormal periodic 2-D DWT with ``levels`` levels (default 'db4', 4 levels)."""

    def __init__(self, shape: tuple, wavelet: str = "db4", levels: int = 4):
        shape = tuple(shape)
        if len(shape) != 2 or any(s % 2 ** levels for s in shape):
            raise ShapeError(f"Wavelet needs (H, W) divisible by 2^levels={2 ** levels}, got {shape}; "
                             f"pad to {pad_to_wavelet(shape[-2:], levels)} first")
        super().__init__(shape, shape)
        self.wavelet, self.levels = wavelet, levels
        _filters(wavelet)

    def _bank(self, x):
        lo, hi = _filters(self.wavelet)
        dtype = x.real.dtype if x.is_complex() else x.dtype
        return lo.to(x.device, dtype), hi.to(x.device, dtype)

    @staticmethod
    def _analyze_axis(x, f, dim):
        # y[k] = sum_j f[j] x[(2k + j) mod n]  (periodic, downsampled correlation)
        n, L = x.shape[dim], f.numel()
        idx = (2 * torch.arange(n // 2, device=x.device)[:, None] + torch.arange(L, device=x.device)[None]) % n
        xt = x.movedim(dim, -1)
        y = (xt[..., idx] * f).sum(-1)
        return y.movedim(-1, dim)

    @staticmethod
    def _synthesize_axis(c, f, dim):
        # adjoint of _analyze_axis: x[(2k + j) mod n] += f[j] c[k]
        m, L = c.shape[dim], f.numel()
        n = 2 * m
        idx = (2 * torch.arange(m, device=c.device)[:, None] + torch.arange(L, device=c.device)[None]) % n
        ct = c.movedim(dim, -1)
        contrib = ct[..., :, None] * f  # (..., m, L)
        out = torch.zeros(ct.shape[:-1] + (n,), dtype=ct.dtype, device=ct.device)
        out.index_add_(-1, idx.reshape(-1), contrib.reshape(ct.shape[:-1] + (m * L,)))
        return out.movedim(-1, dim)

    def _level(self, x, forward: bool):
        lo, hi = self._bank(x)
        if forward:
            a = self._analyze_axis(x, lo, -2)
            d = self._analyze_axis(x, hi, -2)
            return torch.cat([torch.cat([self._analyze_axis(a, lo, -1), self._analyze_axis(a, hi, -1)], -1),
                              torch.cat([self._analyze_axis(d, lo, -1), self._analyze_axis(d, hi, -1)], -1)], -2)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        ll, lh, hl, hh = x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]
        a = self._synthesize_axis(ll, lo, -1) + self._synthesize_axis(lh, hi, -1)
        d = self._synthesize_axis(hl, lo, -1) + self._synthesize_axis(hh, hi, -1)
        return self._synthesize_axis(a, lo, -2) + self._synthesize_axis(d, hi, -2)

    def _apply(self, x):
        out = x.clone()
        h, w = x.shape[-2:]
        for _ in range(self.levels):
            out[..., :h, :w] = self._level(out[..., :h, :w], True)
            h, w = h // 2, w // 2
        return out

    def _adjoint(self, y):
        out = y.clone()
        for lev in reversed(range(self.levels)):
            h, w = y.shape[-2] >> lev, y.shape[-1] >> lev
            out[..., :h, :w] = self._level(out[..., :h, :w], False)
        return out

    def _normal(self, x):
        return x


class CenterPad(Linop):
    """Zero-pad the last two dims from ``shape`` to ``padded`` (centred); the adjoint crops."""

    def __init__(self, shape: tuple, padded: tuple):
        shape, padded = tuple(shape), tuple(padded)
        if any(p < s for p, s in zip(padded, shape)):
            raise ShapeError(f"padded shape {padded} is smaller than {shape}")
        super().__init__(shape, padded)
        self.offsets = tuple((p - s) // 2 for p, s in zip(padded, shape))

    def _apply(self, x):
        (oh, ow), (ph, pw), (h, w) = self.offsets, self.oshape, self.ishape
        return F.pad(x, (ow, pw - w - ow, oh, ph - h - oh)) if not x.is_complex() else \
            torch.complex(F.pad(x.real, (ow, pw - w - ow, oh, ph - h - oh)),
                          F.pad(x.imag, (ow, pw - w - ow, oh, ph - h - oh)))

    def _adjoint(self, y):
        (oh, ow), (h, w) = self.offsets, self.ishape
        return y[..., oh:oh + h, ow:ow + w]

    def _normal(self, x):
        return x
