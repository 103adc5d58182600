"""Non-Cartesian k-space trajectories and their density compensation.

A trajectory is a real tensor ``(..., K, 2)`` of frequencies in radians per sample, each in [-pi, pi), the last
axis the (row, column) frequency matching an image's (H, W) axes (``operators.noncartesian``). The generators
here return ``(readouts, samples, 2)`` float32: spokes or interleaves, then the samples of each readout. One grid
cell of ``fft2c`` is 2 pi / H radians along the rows and 2 pi / W along the columns. Frequencies are 2 pi periodic
on the pixel grid, so a point that lands on +pi is stored as -pi (the same measurement).

- ``radial``: full spokes through DC (Lauterbur 1973) at angles theta_s = theta_0 + s pi / n_spokes (uniform) or
  theta_0 + s * 111.25 deg (the golden angle pi (sqrt 5 - 1) / 2, Winkelmann et al., IEEE TMI 26:68, 2007),
  samples t_j = -pi + 2 pi j / n at (t sin theta, t cos theta); the default n = 2 max(H, W) is the scanner's
  two-fold readout oversampling (DC at j = n / 2). Nyquist needs about pi/2 max(H, W) spokes.
- ``spiral``: variable-density spirals (Kim, Adalsteinsson & Spielman, MRM 49:1070, 2003),
  k(tau) = pi tau^alpha exp(i (2 pi T tau + 2 pi m / n_interleaves)), tau in [0, 1], row = Im k, column = Re k:
  alpha = 1 is Archimedean, alpha > 1 samples the centre more densely. With T turns per interleaf the ring
  spacing at the edge is alpha N / (2 n T) grid cells (N = max(H, W)), so the default T = alpha N / (2 n)
  samples the edge at Nyquist; fix ``turns`` and vary ``n_interleaves`` to sweep the undersampling.
- ``density_compensation``: Pipe & Menon's iteration (MRM 41:179, 1999), w <- w / (C w), where (C w)_i =
  sum_j w_j c(k_i - k_j) is the weighted sampling density seen through a smooth kernel c of unit integral (here
  a separable Kaiser-Bessel kernel of half-width ``width`` cells, applied by spreading onto a two-fold
  oversampled grid and interpolating back). At the fixed point C w = 1: the weighted density is flat, and
  w_i is the k-space area (in grid cells) that sample i stands for, so a fully sampled Cartesian grid gets
  w = 1 and the density-compensated adjoint (gridding) has the image's scale.

Each family is a class called like a mask, ``traj_fn(shape, seed=None)`` with the image shape (..., H, W); a
seed turns the pattern by a random angle theta_0 (None: theta_0 = 0). ``get(name, **params)`` builds one by name
(``available()`` lists them) so that sweeps can vary spokes and interleaves.
"""
from __future__ import annotations

import inspect
import math
from typing import Optional, Sequence

import numpy as np
import torch

from . import checks
from .masks import GOLDEN_ANGLE

__all__ = ["radial", "spiral", "density_compensation", "check_trajectory", "check_density", "Radial",
           "GoldenAngleRadial", "Spiral", "get", "available", "GOLDEN_ANGLE"]


def _wrap(points: torch.Tensor) -> torch.Tensor:
    """float32 points with +pi (and anything rounded onto it) moved to -pi: the same frequency on the grid."""
    points = points.to(torch.float32)
    return torch.where(points >= math.pi, points - 2 * math.pi, points)


def radial(n_spokes: int, n_samples: int, golden_angle: bool = False, rotation: float = 0.0) -> torch.Tensor:
    """Radial spokes ``(n_spokes, n_samples, 2)``, see the module docstring."""
    checks.check_int("n_spokes", n_spokes, 1, 100_000)
    checks.check_int("n_samples", n_samples, 2, 1_000_000)
    checks.check_real("rotation", rotation)
    step = GOLDEN_ANGLE if golden_angle else math.pi / n_spokes
    theta = torch.remainder(rotation + step * torch.arange(n_spokes, dtype=torch.float64), math.pi)
    t = -math.pi + 2 * math.pi * torch.arange(n_samples, dtype=torch.float64) / n_samples
    rows, cols = torch.outer(torch.sin(theta), t), torch.outer(torch.cos(theta), t)
    return _wrap(torch.stack([rows, cols], dim=-1))


def spiral(n_interleaves: int, n_samples: int, turns: float, alpha: float = 1.5, rotation: float = 0.0) -> torch.Tensor:
    """Variable-density spiral interleaves ``(n_interleaves, n_samples, 2)``, see the module docstring."""
    checks.check_int("n_interleaves", n_interleaves, 1, 100_000)
    checks.check_int("n_samples", n_samples, 2, 10_000_000)
    checks.check_real("turns", turns, above=0.0, maximum=100_000.0)
    checks.check_real("alpha", alpha, minimum=0.5, maximum=10.0)
    checks.check_real("rotation", rotation)
    tau = torch.linspace(0, 1, n_samples, dtype=torch.float64)
    radius = math.pi * tau ** alpha
    phase = (2 * math.pi * turns * tau[None, :] + rotation
             + 2 * math.pi * torch.arange(n_interleaves, dtype=torch.float64)[:, None] / n_interleaves)
    return _wrap(torch.stack([radius * torch.sin(phase), radius * torch.cos(phase)], dim=-1))


def check_trajectory(trajectory, name: str = "trajectory") -> torch.Tensor:
    """A real float tensor ``(..., K, 2)``, K >= 1, finite, every frequency in [-pi, pi) radians per sample
    (-pi as rounded to single precision included); NumPy arrays are converted."""
    t = checks.as_tensor(name, trajectory)
    if t.dim() < 2 or t.shape[-1] != 2 or t.shape[-2] < 1:
        raise ValueError(f"{name} must have shape (..., K, 2): K >= 1 points of (row, column) frequencies in "
                         f"radians per sample, got shape {tuple(t.shape)}")
    return checks.check_tensor_range(name, t, minimum=_MINUS_PI_SINGLE, below=math.pi,
                                     allowed="[-pi, pi) radians per sample (scale k-space in cycles/FOV by 2 pi / N)")


# -pi rounded to single precision lies just below -pi: accepted, so a float32 trajectory stays valid in double
_MINUS_PI_SINGLE = float(torch.tensor(-math.pi, dtype=torch.float32))


def check_density(weights, trajectory: torch.Tensor, name: str = "density weights") -> torch.Tensor:
    """Density weights with one finite, non-negative entry per trajectory point: shape ``trajectory.shape[:-1]``
    or the flat ``(K,)``; returned flat (K,) as float."""
    w = checks.as_tensor(name, weights)
    lead = tuple(trajectory.shape[:-1])
    k = math.prod(lead)
    if tuple(w.shape) not in (lead, (k,)):
        raise ValueError(f"{name} must have one entry per trajectory point: shape {lead} or ({k},), "
                         f"got {tuple(w.shape)}")
    checks.check_tensor_range(name, w, minimum=0.0, allowed=">= 0 (finite)")
    return w.reshape(k)


# --------------------------------------------------------------------------- density compensation


def _kaiser_bessel(d: torch.Tensor, half_width: float, beta: float) -> torch.Tensor:
    """I0(beta sqrt(1 - (d / half_width)^2)) inside |d| < half_width, 0 outside (unnormalised)."""
    arg = (1 - (d / half_width).clamp(-1, 1).square()).clamp_min(0).sqrt()
    return torch.where(d.abs() < half_width, torch.special.i0(beta * arg), torch.zeros_like(d))


class _Spreader:
    """Spreading of point weights onto a grid of spacing 1/os cells with a separable kernel, and its transpose
    (interpolation); ``density(w)`` is C w, normalised so that unit weights on a Cartesian grid give ~1."""

    def __init__(self, cells: torch.Tensor, half_width: float, os: int = 2):
        beta = 2.34 * 2 * half_width  # Jackson et al. (IEEE TMI 1991) for two-fold oversampling
        g = cells * os
        m = int(math.floor(2 * half_width * os)) + 1
        start = torch.ceil(g - half_width * os)
        nodes = start[:, :, None] + torch.arange(m, dtype=g.dtype)  # (K, 2, m)
        phi = _kaiser_bessel((g[:, :, None] - nodes) / os, half_width, beta)
        lo = nodes.min(dim=0).values.min(dim=-1).values  # (2,)
        n = (nodes.max(dim=0).values.max(dim=-1).values - lo + 1).long()
        rows, cols = (nodes[:, 0] - lo[0]).long(), (nodes[:, 1] - lo[1]).long()
        self.index = (rows[:, :, None] * int(n[1]) + cols[:, None, :]).reshape(len(cells), -1)
        self.weight = (phi[:, 0, :, None] * phi[:, 1, None, :]).reshape(len(cells), -1)
        self.size = int(n[0] * n[1])
        t = torch.linspace(-half_width, half_width, 4001, dtype=torch.float64)
        c1 = float(torch.trapezoid(_kaiser_bessel(t, half_width, beta), t))
        self.norm = os ** 2 * c1 ** 4

    def density(self, w: torch.Tensor) -> torch.Tensor:
        grid = torch.zeros(self.size, dtype=w.dtype).index_add_(0, self.index.reshape(-1),
                                                                 (w[:, None] * self.weight).reshape(-1))
        return (grid[self.index] * self.weight).sum(-1) / self.norm


def density_compensation(trajectory, shape: Sequence[int], n_iter: int = 30, width: float = 2.0) -> torch.Tensor:
    """Pipe-Menon density weights (module docstring) shaped like ``trajectory.shape[:-1]``, float32, in units of
    grid-cell area for an image of ``shape`` (..., H, W)."""
    t = check_trajectory(trajectory)
    h, w = _image_size(shape)
    checks.check_int("n_iter", n_iter, 1, 10_000)
    checks.check_real("width", width, minimum=0.5, maximum=8.0)
    cells = t.reshape(-1, 2).to(torch.float64) / (2 * math.pi) * torch.tensor([h, w], dtype=torch.float64)
    spread = _Spreader(cells, width)
    weights = torch.ones(len(cells), dtype=torch.float64)
    for _ in range(n_iter):
        weights = weights / spread.density(weights).clamp_min(1e-12)
    return weights.to(torch.float32).reshape(t.shape[:-1])


def sampled_cells(trajectory, shape: Sequence[int]) -> torch.Tensor:
    """Boolean (H, W) map of the Cartesian grid cells (centred as ``fft2c``'s k-space) holding at least one
    trajectory point: the nearest grid frequency of each point."""
    t = check_trajectory(trajectory)
    h, w = _image_size(shape)
    cells = t.reshape(-1, 2).to(torch.float64) / (2 * math.pi) * torch.tensor([h, w], dtype=torch.float64)
    r = (torch.round(cells[:, 0]).long() + h // 2) % h
    c = (torch.round(cells[:, 1]).long() + w // 2) % w
    hit = torch.zeros(h * w, dtype=torch.bool)
    hit[r * w + c] = True
    return hit.reshape(h, w)


def _image_size(shape) -> tuple:
    shape = tuple(shape)
    if len(shape) < 2 or not all(checks.is_int(s) and s >= 1 for s in shape[-2:]):
        raise ValueError(f"image shape must be a sequence (..., H, W) of integers >= 1, got {shape}")
    return int(shape[-2]), int(shape[-1])


# --------------------------------------------------------------------------- families and registry


class _Family:
    name = ""

    def _theta0(self, seed, period: float) -> float:
        if seed is None:
            return 0.0
        return float(np.random.default_rng(seed).uniform(0, period))


class Radial(_Family):
    """``n_spokes`` full spokes at uniform angles pi / n_spokes; ``n_samples`` per spoke (default 2 max(H, W))."""

    name = "radial"
    golden_angle = False

    def __init__(self, n_spokes: int, n_samples: Optional[int] = None):
        checks.check_int("n_spokes", n_spokes, 1, 100_000)
        if n_samples is not None:
            checks.check_int("n_samples", n_samples, 2, 1_000_000)
        self.n_spokes, self.n_samples = n_spokes, n_samples

    def __call__(self, shape: Sequence[int], seed=None) -> torch.Tensor:
        h, w = _image_size(shape)
        n = self.n_samples or 2 * max(h, w)
        period = math.pi if self.golden_angle else math.pi / self.n_spokes
        return radial(self.n_spokes, n, self.golden_angle, self._theta0(seed, period))

    @staticmethod
    def nyquist_spokes(shape: Sequence[int]) -> int:
        """Spokes that sample the edge of k-space at Nyquist: ceil(pi/2 max(H, W))."""
        return math.ceil(math.pi / 2 * max(_image_size(shape)))


class GoldenAngleRadial(Radial):
    """``n_spokes`` full spokes advancing by the golden angle 111.25 deg (any prefix covers k-space evenly)."""

    name = "golden-angle"
    golden_angle = True


class Spiral(_Family):
    """``n_interleaves`` variable-density spirals (density exponent ``alpha``), ``turns`` per interleaf (default:
    Nyquist at the edge, alpha max(H, W) / (2 n_interleaves)), ``n_samples`` per interleaf (default: at most half a
    grid cell between samples)."""

    name = "spiral"

    def __init__(self, n_interleaves: int, turns: Optional[float] = None, alpha: float = 1.5,
                 n_samples: Optional[int] = None):
        checks.check_int("n_interleaves", n_interleaves, 1, 100_000)
        if turns is not None:
            checks.check_real("turns", turns, above=0.0, maximum=100_000.0)
        checks.check_real("alpha", alpha, minimum=0.5, maximum=10.0)
        if n_samples is not None:
            checks.check_int("n_samples", n_samples, 2, 10_000_000)
        self.n_interleaves, self.turns, self.alpha, self.n_samples = n_interleaves, turns, alpha, n_samples

    def design(self, shape: Sequence[int]) -> tuple:
        """(turns, samples per interleaf) for an image of ``shape``."""
        n = max(_image_size(shape))
        turns = self.turns or self.alpha * n / (2 * self.n_interleaves)
        # the fastest point is the edge: |dk/dtau| = (n/2) sqrt(alpha^2 + (2 pi T)^2) cells; half a cell per step
        samples = self.n_samples or math.ceil(n * math.hypot(self.alpha, 2 * math.pi * turns)) + 1
        return turns, samples

    def __call__(self, shape: Sequence[int], seed=None) -> torch.Tensor:
        turns, samples = self.design(shape)
        return spiral(self.n_interleaves, samples, turns, self.alpha,
                      self._theta0(seed, 2 * math.pi / self.n_interleaves))


_FAMILIES = {cls.name: cls for cls in (Radial, GoldenAngleRadial, Spiral)}


def available() -> list:
    """Names accepted by :func:`get`."""
    return sorted(_FAMILIES)


def get(name: str, **params):
    """The trajectory family ``name`` built with ``params`` (e.g. ``get("golden-angle", n_spokes=48)``)."""
    checks.check_choice("trajectory", name, available())
    cls = _FAMILIES[name]
    sig = inspect.signature(cls.__init__)
    checks.check_keys(f"the parameters of trajectory {name!r}", params, [k for k in sig.parameters if k != "self"])
    missing = [k for k, p in sig.parameters.items()
               if k != "self" and p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"trajectory {name!r} needs the parameter(s) {', '.join(missing)}")
    return cls(**params)
