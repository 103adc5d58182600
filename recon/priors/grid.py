"""A prior's grid policy: how its network is run on an image grid, and which policy a grid gets.

- **Padding.** A network's input sides must be multiples of its ``size_multiple``; other grids are padded by
  reflection to it and the estimate cropped back (``padding``, ``pad``, ``crop``). A network that records
  ``any_size = False`` runs only on its training grid (``check_grid``).
- **Coarse denoising at high noise.** ``GridPolicy.coarse`` is a list of ``(above, factor)`` pairs: a noise level
  above ``above`` is denoised on the image average-pooled ``factor`` x ``factor`` (noise sigma / factor there) and
  the estimate brought back by bilinear upsampling (``pool``, ``unpool``, ``pool_factors``).
- **Attention within tiles.** ``GridPolicy.attention_window``: a network that offers it (``has_attention_window``)
  attends within tiles of that many image pixels per side on larger grids, scoped to the calls of one prior
  (``windowed``: the network's modules are not changed).

``policy_for_grid`` is the rule that gives a grid its policy (``DiffusionPrior.for_grid``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# Coarse denoising at high noise on grids larger than the training grid (experiments/RESULTS.md, "Coarse denoising
# at high noise"): on a grid at least ``factor`` times the training side (its shorter side, per side), noise above
# ``COARSE_ABOVE[factor]`` is denoised on the image pooled ``factor`` x ``factor`` ...
COARSE_ABOVE = {4: 2.0, 2: 0.5}
# ... and, when the measurements cover a limited angle (a missing wedge), further down the noise.
COARSE_ABOVE_LIMITED = {4: 1.0, 2: 0.2}


def check_coarse(levels: Optional[Sequence]) -> Optional[tuple]:
    """``levels`` as a tuple of ``(above, factor)`` pairs (float, int), largest factor first, or None for None or
    []. Factors must be integers >= 2, each appearing once, and thresholds finite sigmas > 0 (ValueError)."""
    if not levels:
        return None
    out = []
    for item in levels:
        try:
            above, factor = item
        except (TypeError, ValueError):
            raise ValueError(f"coarse levels are (above, factor) pairs, got {item!r}") from None
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ValueError(f"a coarse factor must be an int >= 2, got {factor!r}")
        if isinstance(above, bool) or not isinstance(above, (int, float)) or not math.isfinite(above) \
                or above <= 0:
            raise ValueError(f"a coarse threshold must be a finite sigma > 0, got {above!r}")
        out.append((float(above), int(factor)))
    if len({f for _, f in out}) != len(out):
        raise ValueError(f"each coarse factor may appear once, got {levels!r}")
    return tuple(sorted(out, key=lambda t: -t[1]))


@dataclass(frozen=True)
class GridPolicy:
    """How a prior runs its network on a grid: ``attention_window`` (image pixels per side of the tiles within
    which attention runs on larger grids; None: the whole image) and ``coarse`` (``check_coarse`` levels; None:
    every noise level on the image's own grid). Checked by the prior that holds it."""

    attention_window: Optional[int] = None
    coarse: Optional[tuple] = None

    def replace(self, **changes) -> "GridPolicy":
        return replace(self, **changes)


# --- what the network offers ---------------------------------------------------------------------------------
def size_multiple(net) -> int:
    """The network's input sides must be multiples of this: its ``size_multiple``, else 2^(levels - 1) from the
    ``ch_mult``/``channel_mult`` of its config, else 1."""
    m = getattr(net, "size_multiple", None)
    if m is None:
        cfg = getattr(net, "config", {}) or {}
        mult = cfg.get("ch_mult", cfg.get("channel_mult"))
        m = 2 ** (len(mult) - 1) if mult else 1
    return int(m)


def any_size(net) -> bool:
    """Whether the network runs on grids other than its training grid (fully convolutional): False only for a
    network that records ``any_size = False``."""
    return getattr(net, "any_size", True) is not False


def has_attention_window(net) -> bool:
    """Whether the network offers attention within tiles (``set_attention_window``, ``windowed``)."""
    return hasattr(net, "set_attention_window")


def check_window(net, pixels, name: str = "") -> Optional[int]:
    """``pixels`` if the network can attend within tiles of that many pixels per side (None always can); a
    ValueError naming the prior ``name`` otherwise."""
    if pixels is None:
        return None
    if not has_attention_window(net):
        raise ValueError(f"the network of prior {name!r} ({type(net).__name__}) has no windowed attention; "
                         f"attention_window must be None")
    check = getattr(net, "check_attention_window", None)
    if check is not None:
        check(pixels)
    return pixels


def windowed(net, pixels):
    """A context in which the calls of ``net`` attend within tiles of ``pixels`` (None: over the whole image)
    without changing its modules (``net.windowed``); a null context for a network without windows."""
    scope = getattr(net, "windowed", None) if has_attention_window(net) else None
    return scope(pixels) if scope is not None else contextlib.nullcontext()


def check_grid(net, shape, image_size, name: str = "") -> None:
    """Refuse, by name, a grid (H, W) the network cannot run on: one that records ``any_size = False`` runs only
    on its training grid ``image_size``."""
    h, w = (int(v) for v in tuple(shape)[-2:])
    if not any_size(net) and image_size and (h, w) != tuple(image_size):
        raise ValueError(f"the prior {name or type(net).__name__!r} ({type(net).__name__}) runs only on its "
                         f"training grid {tuple(image_size)}, not on {(h, w)}; use a protocol that crops "
                         f"to it (--protocol image-crop or kspace-crop)")


# --- padding and pooling ---------------------------------------------------------------------------------------
def padding(hw, multiple: int) -> Optional[tuple]:
    """The padding (left, right, top, bottom) that brings a grid (H, W) to multiples of ``multiple``, split
    evenly (the extra pixel after); None when it already is."""
    h, w = hw
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return None
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


def pad(u: torch.Tensor, pads: tuple) -> torch.Tensor:
    """(B, C, H, W) padded by ``pads`` (``padding``): by reflection, which keeps the noise statistics at the border
    (zeros would be a noise-free region the network never saw), or by replication where a pad is not smaller than
    the side."""
    h, w = u.shape[-2:]
    ph, pw = pads[2] + pads[3], pads[0] + pads[1]
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(u, pads, mode=mode)


def crop(out: torch.Tensor, pads: tuple, hw) -> torch.Tensor:
    """The (..., H, W) part of a padded result (``pad``) that the unpadded grid ``hw`` covers."""
    h, w = hw
    return out[..., pads[2]:pads[2] + h, pads[0]:pads[0] + w]


def pool(u: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) average-pooled ``factor`` x ``factor``, a side that is not a multiple of the factor padded by
    replication first."""
    h, w = u.shape[-2:]
    ph, pw = -h % factor, -w % factor
    up = F.pad(u, (0, pw, 0, ph), mode="replicate") if ph or pw else u
    return F.avg_pool2d(up, factor)


def unpool(d: torch.Tensor, factor: int, hw) -> torch.Tensor:
    """A pooled estimate (``pool``) upsampled bilinearly by ``factor`` and cut to the grid ``hw``."""
    h, w = hw
    big = F.interpolate(d, scale_factor=factor, mode="bilinear", align_corners=False)
    return big[..., :h, :w]


def pool_factors(levels: Optional[Sequence], sig: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """The pooling factor (1: none) for each noise level of ``sig`` (network units; the levels' thresholds are in
    the prior's, network units / ``gain``): the largest factor whose threshold the level exceeds."""
    f = torch.ones(sig.shape, dtype=torch.long)
    if levels:
        s = sig.detach().cpu().double() / gain
        for above, factor in reversed(levels):  # smallest factor first; larger ones overwrite
            f[s > above] = factor
    return f


# --- the policy for a grid -------------------------------------------------------------------------------------
def policy_for_grid(recorded: GridPolicy, training_grid, windows: bool, shape, limited_angle: bool = False,
                    coarse: bool = False) -> GridPolicy:
    """The policy of a prior whose own policy is ``recorded``, trained on ``training_grid`` (H, W; None: not
    recorded), whose network offers attention windows (``windows``), on the grid ``shape`` (..., H, W; None: no
    grid, the recorded policy).

    - Attention window: the recorded one if there is one; otherwise, for a network that offers windows and a
      grid larger than the training grid (its larger side beyond the training grid's larger side), the training
      grid's larger side, unless ``limited_angle`` (measurements with a missing wedge, which the network fills
      better seeing the whole image; experiments/RESULTS.md, "Attention within tiles"); else None.
    - Coarse levels: the recorded ones if there are any; otherwise, with ``coarse``, each factor of
      ``COARSE_ABOVE`` (``COARSE_ABOVE_LIMITED`` with ``limited_angle``) whose pooled grid (the shorter side over
      the factor) is still at least the training grid's larger side, above its threshold; else None."""
    window, levels = recorded.attention_window, recorded.coarse
    if shape is None or not training_grid:
        return recorded
    side = max(int(v) for v in tuple(training_grid)[-2:])
    hw = [int(v) for v in tuple(shape)[-2:]]
    if window is None and windows and max(hw) > side and not limited_angle:
        window = side
    if not levels and coarse:
        table = COARSE_ABOVE_LIMITED if limited_angle else COARSE_ABOVE
        levels = check_coarse([(above, f) for f, above in table.items() if min(hw) >= f * side])
    return GridPolicy(window, levels)
