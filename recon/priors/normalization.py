"""``Normalization``: how a prior's training images were scaled, and the affine map into the network's range.

The prior works on u = x / scale. A "range" normalisation also records an affine map into the network's range,
v = lo + (hi - lo) u (DPS: v = 2u - 1 in [-1, 1]). Noise maps with it, v_sigma = v + (hi - lo) sigma z, so
denoise(u, sigma) = (D_net(lo + g u, g sigma) - lo) / g with g = hi - lo (``network_call``), and the prior's noise
range is the network's divided by g; samplers see only u.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("percentile", "max", "fixed", "none", "range")


@dataclass
class Normalization:
    """How training images were scaled: x_train = x / scale, with scale from the image itself.

    kind "percentile": scale = the q-th percentile of |x| (per image); "max": scale = max |x|;
    "fixed": scale = ``value`` (data in physical units, e.g. CT in mu / mu_water); "none": scale = 1;
    "range": scale = ``value`` (data in [0, value]), and the network's input is lo + (hi - lo) x / scale
    (``affine``; DPS: [0, 1] images to [-1, 1] with lo = -1, hi = 1).
    At reconstruction the scale is taken from the operator's pseudo-inverse image A^+ y (``Linop.pinv``:
    SENSE-combined zero-filled for MRI, FBP for CT), which does not change when (y, A) becomes (c y, c A)."""

    kind: str = "percentile"
    q: float = 99.0
    value: float = 1.0
    lo: float = -1.0
    hi: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"normalization kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 < self.q <= 100:
            raise ValueError(f"percentile q must be in (0, 100], got {self.q}")
        if self.kind == "range" and not (self.hi > self.lo and self.value > 0):
            raise ValueError(f"a range normalization needs hi > lo and value > 0, got lo={self.lo}, hi={self.hi}, "
                             f"value={self.value}")

    @property
    def affine(self) -> tuple:
        """(offset, gain) of the map from the prior's coordinates u = x / scale to the network's, lo + (hi - lo) u
        for kind "range", (0, 1) otherwise."""
        return (float(self.lo), float(self.hi - self.lo)) if self.kind == "range" else (0.0, 1.0)

    def scale(self, ref: torch.Tensor, ndim: int = 2) -> torch.Tensor:
        """Scale of ``ref`` over its last ``ndim`` dimensions (one image: 2; a stack or coil images taken as
        one image: 3), shaped ``ref.shape[:-ndim] + (1,) * ndim``."""
        if ref.dim() < ndim:
            raise ValueError(f"the reference image needs at least {ndim} dimensions, got shape {tuple(ref.shape)}")
        lead = ref.shape[: ref.dim() - ndim]
        ones = (1,) * ndim
        if self.kind in ("fixed", "none", "range"):
            v = 1.0 if self.kind == "none" else self.value
            return torch.full(lead + ones, v, dtype=ref.real.dtype, device=ref.device)
        mag = ref.abs().reshape(lead + (-1,)).float()
        s = mag.amax(-1) if self.kind == "max" else torch.quantile(mag, self.q / 100, dim=-1)
        return s.clamp_min(torch.finfo(s.dtype).tiny).reshape(lead + ones).to(ref.real.dtype)

    def network_call(self, fn, u: torch.Tensor, sig: torch.Tensor, variance: bool = False):
        """``fn(v, s)``, a denoiser on network channels in the network's range, evaluated for ``u`` (B, C, H, W)
        at noise ``sig`` in the prior's coordinates: v = off + gain u, s = gain sig, and the estimate mapped back
        by (D - off) / gain (``affine``; the identity, and ``fn`` called on ``u`` itself, unless "range").
        With ``variance``, ``fn(v, s, True)`` returns the estimate stacked with its variance channels, and the
        result is (estimate, variance channels), the latter as ``fn`` gave them."""
        off, gain = self.affine
        if variance:
            out = fn(off + gain * u, gain * sig, True)
            c = u.shape[1]
            return (out[:, :c] - off) / gain, out[:, c:]
        if (off, gain) == (0.0, 1.0):
            return fn(u, sig)
        return (fn(off + gain * u, gain * sig) - off) / gain
