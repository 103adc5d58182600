"""Cartesian k-space sampling masks.

A mask is a real float32 tensor broadcastable to centred k-space ``(..., H, W)`` (DC at ``H//2, W//2``),
and masking is ``kspace * mask``. Line masks sample phase-encode columns along the last axis and have
shape ``(1, W)``; point masks have shape ``(H, W)``. Every mask function is called as
``mask_fn(shape, seed=None)`` with a k-space shape; with ``seed`` the mask is a pure function of it,
without one the object's own generator (seeded by the constructor's ``seed``) advances.

Families:

* fastMRI line masks (``RandomMask``, ``EquispacedMask``, ``EquispacedFractionMask``, ``MagicMask``,
  ``MagicFractionMask``): the same columns as the ``fastmri`` package's ``RandomMaskFunc`` etc.
  (Zbontar et al. 2018, arXiv:1811.08839) for the same shape, parameters and seed.
* variable-density masks (``Gaussian1DMask``, ``Gaussian2DMask``, ``UniformRandom2DMask``,
  ``PoissonDiskMask``, ``RadialMask``), each with a fully sampled centred calibration region.

``acceleration(mask)`` and ``calibration_size(mask)`` report what a mask actually samples;
``get(name, **params)`` builds a mask function by name and ``available()`` lists the names.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import checks

Seed = Optional[Union[int, Sequence[int]]]
Calib = Union[int, Tuple[int, int]]

GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0  # 180 deg / golden ratio = 111.25 deg


def _kspace_size(shape: Sequence[int]) -> Tuple[int, int]:
    """(H, W) of a k-space shape ``(..., H, W)``."""
    if not all(checks.is_int(s) for s in shape):
        raise ValueError(f"k-space shape must be a sequence of integers (..., H, W), got {tuple(shape)}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"k-space shape must have at least 2 dimensions (..., H, W), got {shape}")
    if min(shape[-2:]) < 1:
        raise ValueError(f"k-space shape must have H, W >= 1, got {shape}")
    return shape[-2], shape[-1]


def _check_acceleration(acceleration: float, integer: bool = False, above_one: bool = False) -> None:
    ok = isinstance(acceleration, numbers.Real) and not isinstance(acceleration, bool) and \
        math.isfinite(acceleration) and (acceleration > 1 if above_one else acceleration >= 1)
    if not ok:
        bound = "> 1" if above_one else ">= 1"
        raise ValueError(f"acceleration must be a finite number {bound} (sampled fraction 1/acceleration), "
                         f"got {acceleration!r}")
    if integer and acceleration != int(acceleration):
        raise ValueError(f"acceleration must be an integer line spacing for this mask, got {acceleration}")


def _check_fraction(center_fraction: float) -> None:
    ok = isinstance(center_fraction, numbers.Real) and not isinstance(center_fraction, bool) and \
        0 < center_fraction < 1
    if not ok:
        raise ValueError(f"center fraction must be in (0, 1) (fraction of columns fully sampled), "
                         f"got {center_fraction!r}")


def _centered(n: int, size: int) -> slice:
    """The ``size`` indices of ``range(n)`` centred on DC as fastMRI places them: start ``(n - size + 1) // 2``."""
    start = (n - size + 1) // 2
    return slice(start, start + size)


def _center_line(num_cols: int, num_low: int) -> np.ndarray:
    line = np.zeros(num_cols, dtype=bool)
    line[_centered(num_cols, num_low)] = True
    return line


def _as_line(columns: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(columns.astype(np.float32)).reshape(1, -1)


# --------------------------------------------------------------------------- fastMRI line masks


class FastMRIMask:
    """Base of the fastMRI line masks: a centre of ``round(W * center_fraction)`` columns plus outer lines.

    Each call draws one ``(center_fraction, acceleration)`` pair (the i-th of each list, or, with
    ``allow_any_combination``, any of each), exactly as ``fastmri.data.subsample.MaskFunc`` does,
    from a legacy ``numpy.random.RandomState``: with ``seed`` given the draw comes from a fresh
    ``RandomState(seed)`` and the object's stream is not advanced; without, the object's stream advances.
    """

    name = ""
    integer_acceleration = False  # equispaced lines need an integer spacing

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed = None,
    ):
        center_fractions, accelerations = list(center_fractions), list(accelerations)
        if not center_fractions or not accelerations:
            raise ValueError("need at least one center fraction and one acceleration")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"got {len(center_fractions)} center fractions and {len(accelerations)} accelerations; "
                "expected lists of equal length (one pair each) or allow_any_combination=True"
            )
        for fraction in center_fractions:
            _check_fraction(fraction)
        for accel in accelerations:
            _check_acceleration(accel, integer=self.integer_acceleration)
        if self.integer_acceleration:
            accelerations = [int(a) for a in accelerations]
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __call__(self, shape: Sequence[int], seed: Seed = None, offset: Optional[int] = None) -> torch.Tensor:
        """A ``(1, W)`` float32 mask for k-space of ``shape`` ``(..., H, W)``; ``offset`` fixes the first line."""
        _, num_cols = _kspace_size(shape)
        rng = self.rng if seed is None else np.random.RandomState(seed)
        if self.allow_any_combination:
            center_fraction, accel = rng.choice(self.center_fractions), rng.choice(self.accelerations)
        else:
            i = rng.randint(len(self.center_fractions))
            center_fraction, accel = self.center_fractions[i], self.accelerations[i]
        return _as_line(self._columns(rng, num_cols, round(num_cols * center_fraction), accel, offset))

    def _columns(self, rng, num_cols, num_low, accel, offset) -> np.ndarray:
        raise NotImplementedError


class RandomMask(FastMRIMask):
    """fastMRI ``RandomMaskFunc``: the centre plus each outer column with probability
    ``(W / R - n_low) / (W - n_low)``, so that W / R columns are sampled on average.
    If the centre alone exceeds W / R, only the centre is sampled (as in fastMRI)."""

    name = "random"

    def _columns(self, rng, num_cols, num_low, accel, offset):
        prob = (num_cols / accel - num_low) / (num_cols - num_low)
        return _center_line(num_cols, num_low) | (rng.uniform(size=num_cols) < prob)


class EquispacedMask(FastMRIMask):
    """fastMRI ``EquiSpacedMaskFunc``: the centre plus every R-th column from a random ``offset`` in
    ``[0, R)`` (GRAPPA-style); the true acceleration is below R because of the centre."""

    name = "equispaced"
    integer_acceleration = True

    def _columns(self, rng, num_cols, num_low, accel, offset):
        if offset is None:
            offset = rng.randint(0, high=round(accel))
        lines = np.zeros(num_cols, dtype=bool)
        lines[offset::accel] = True
        return _center_line(num_cols, num_low) | lines


class EquispacedFractionMask(FastMRIMask):
    """fastMRI ``EquispacedMaskFractionFunc`` (the masks of the public multi-coil data): outer lines at the
    rounded positions ``offset + k s`` (``< W - 1``) with the fractional spacing
    ``s = R (W - n_low) / (W - R n_low)`` that makes W / R columns in total; rounding can make the
    spacing uneven (fastMRI issue #54). Needs ``n_low * R < W``."""

    name = "equispaced_fraction"

    def _columns(self, rng, num_cols, num_low, accel, offset):
        if num_low * accel >= num_cols:
            raise ValueError(
                f"center of {num_low} columns leaves no outer lines at acceleration {accel} for {num_cols} "
                "columns; expected center_fraction < 1 / acceleration"
            )
        spacing = accel * (num_cols - num_low) / (num_cols - num_low * accel)
        if offset is None:
            offset = rng.randint(0, high=round(spacing))
        lines = np.zeros(num_cols, dtype=bool)
        lines[np.around(np.arange(offset, num_cols - 1, spacing)).astype(int)] = True
        return _center_line(num_cols, num_low) | lines


def _offset_lines(rng, num_cols: int, spacing: int, offset: Optional[int]) -> np.ndarray:
    """Defazio's offset sampling: equispaced lines on each half of the (uncentred) k-space line, the
    negative half starting at a different offset so that it interleaves with the conjugate of the
    positive half; returned centred (fftshifted)."""
    if offset is None:
        offset = rng.randint(0, high=spacing)
    start_pos, start_neg = (offset + 1, offset + 2) if offset % 2 == 0 else (offset + 2, offset - 1)
    num_pos = (num_cols + 1) // 2
    positive = np.zeros(num_pos, dtype=bool)
    negative = np.zeros(num_cols - num_pos, dtype=bool)
    positive[start_pos::spacing] = True
    negative[start_neg::spacing] = True
    return np.fft.fftshift(np.concatenate([positive, negative[::-1]]))


class MagicMask(FastMRIMask):
    """fastMRI ``MagicMaskFunc``: the centre plus offset equispaced lines with spacing R (Defazio 2019,
    "Offset sampling improves deep learning based accelerated MRI reconstructions by exploiting
    symmetry", arXiv:1912.01101)."""

    name = "magic"
    integer_acceleration = True

    def _columns(self, rng, num_cols, num_low, accel, offset):
        return _center_line(num_cols, num_low) | _offset_lines(rng, num_cols, accel, offset)


class MagicFractionMask(FastMRIMask):
    """fastMRI ``MagicMaskFractionFunc``: offset sampling whose spacing ``round(W / (round(W / R) - n_low))``
    targets W / R columns in total; the centre is clipped to ``[1, round(W / R)]`` columns."""

    name = "magic_fraction"

    def _columns(self, rng, num_cols, num_low, accel, offset):
        target = round(num_cols / accel)
        num_low = max(min(num_low, target), 1)
        if target <= num_low:
            raise ValueError(
                f"center of {num_low} columns uses the whole budget of {target} columns at acceleration "
                f"{accel}; expected center_fraction < 1 / acceleration"
            )
        spacing = round(num_cols / (target - num_low))
        return _center_line(num_cols, num_low) | _offset_lines(rng, num_cols, spacing, offset)


# --------------------------------------------------------------------------- variable-density masks


def _draw(rng: np.random.Generator, weight: np.ndarray, fixed: np.ndarray, total: int) -> np.ndarray:
    """``fixed`` plus ``total - fixed.sum()`` other positions drawn without replacement with probability
    proportional to ``weight`` (Efraimidis & Spirakis 2006: keep the smallest keys ``Exp(1) / weight``)."""
    mask = fixed.ravel().copy()
    free = np.flatnonzero(~mask)
    n = total - int(mask.sum())
    if n > 0:
        keys = rng.standard_exponential(free.size) / weight.ravel()[free]
        mask[free[np.argpartition(keys, n - 1)[:n]]] = True
    return mask.reshape(fixed.shape)


class _SeededMask:
    """Base of the variable-density masks: ``numpy.random.default_rng`` seeding, fastMRI-like semantics."""

    name = ""
    accel_above_one = False

    def __init__(self, acceleration: float, seed: Seed = None):
        _check_acceleration(acceleration, above_one=self.accel_above_one)
        self.acceleration = acceleration
        self.rng = np.random.default_rng(seed)

    def _rng(self, seed: Seed) -> np.random.Generator:
        return self.rng if seed is None else np.random.default_rng(seed)


class Gaussian1DMask(_SeededMask):
    """Line mask: the fastMRI-placed centre of ``round(W * center_fraction)`` columns plus outer columns drawn
    without replacement with Gaussian density ``exp(-k^2 / 2 (std_fraction W)^2)`` around DC, ``round(W / R)``
    columns in all (variable-density random undersampling, Lustig et al. 2007; Score-MRI's ``gaussian1d``)."""

    name = "gaussian1d"

    def __init__(self, acceleration: float, center_fraction: float = 0.08, std_fraction: float = 0.25, seed: Seed = None):
        super().__init__(acceleration, seed)
        _check_fraction(center_fraction)
        checks.check_positive("std_fraction", std_fraction)
        self.center_fraction = center_fraction
        self.std_fraction = std_fraction

    def __call__(self, shape: Sequence[int], seed: Seed = None) -> torch.Tensor:
        _, num_cols = _kspace_size(shape)
        total, num_low = round(num_cols / self.acceleration), round(num_cols * self.center_fraction)
        if num_low > total:
            raise ValueError(
                f"center of {num_low} columns exceeds the {total} columns of acceleration {self.acceleration}; "
                "expected center_fraction <= 1 / acceleration"
            )
        k = np.arange(num_cols) - num_cols // 2
        weight = np.exp(-0.5 * (k / (self.std_fraction * num_cols)) ** 2)
        return _as_line(_draw(self._rng(seed), weight, _center_line(num_cols, num_low), total))


class _PointMask(_SeededMask):
    """Base of the 2-D masks with a fully sampled centred ``calib`` box (int: square)."""

    def __init__(self, acceleration: float, calib: Calib = 24, seed: Seed = None):
        super().__init__(acceleration, seed)
        calib = (calib,) * 2 if np.ndim(calib) == 0 else tuple(calib)
        if len(calib) != 2 or not all(checks.is_int(c) and c >= 0 for c in calib):
            raise ValueError(f"calib must be an int or a pair (h, w) of ints >= 0, got {calib}")
        self.calib = tuple(int(c) for c in calib)

    def _calib_box(self, height: int, width: int) -> np.ndarray:
        h, w = self.calib
        if h > height or w > width:
            raise ValueError(f"calib {self.calib} does not fit in k-space of size {(height, width)}")
        box = np.zeros((height, width), dtype=bool)
        box[_centered(height, h), _centered(width, w)] = True
        return box

    def _total(self, height: int, width: int) -> int:
        total = round(height * width / self.acceleration)
        if self.calib[0] * self.calib[1] > total:
            raise ValueError(
                f"calib {self.calib} holds more than the {total} points of acceleration {self.acceleration}; "
                "expected a smaller calib or acceleration"
            )
        return total


class _RandomPointMask(_PointMask):
    def __call__(self, shape: Sequence[int], seed: Seed = None) -> torch.Tensor:
        height, width = _kspace_size(shape)
        mask = _draw(self._rng(seed), self._weight(height, width), self._calib_box(height, width),
                     self._total(height, width))
        return torch.from_numpy(mask.astype(np.float32))


class Gaussian2DMask(_RandomPointMask):
    """2-D variable-density random points, density ``exp(-(ky^2 / sy^2 + kx^2 / sx^2) / 2)`` with
    ``s = std_fraction * size``, drawn without replacement, ``round(H W / R)`` points including the
    calibration box (the kind of mask of Score-MRI's ``gaussian2d``, Chung & Ye 2022; not the same draws)."""

    name = "gaussian2d"

    def __init__(self, acceleration: float, calib: Calib = 24, std_fraction: float = 0.25, seed: Seed = None):
        super().__init__(acceleration, calib, seed)
        checks.check_positive("std_fraction", std_fraction)
        self.std_fraction = std_fraction

    def _weight(self, height, width):
        ky = (np.arange(height) - height // 2) / (self.std_fraction * height)
        kx = (np.arange(width) - width // 2) / (self.std_fraction * width)
        return np.exp(-0.5 * (ky[:, None] ** 2 + kx[None, :] ** 2))


class UniformRandom2DMask(_RandomPointMask):
    """2-D uniform random points without replacement, ``round(H W / R)`` including the calibration box
    (the kind of mask of Score-MRI's ``uniformrandom2d``; not the same draws)."""

    name = "uniform2d"

    def _weight(self, height, width):
        return np.ones((height, width))


class PoissonDiskMask(_PointMask):
    """Variable-density Poisson-disc points (Bridson 2007; density ``1 / (1 + s |k|)``) from
    ``sigpy.mri.poisson``, whose slope search stops within 0.1 of the acceleration. A given ``seed`` is
    sigpy's seed (an int), so the mask is sigpy's, with this module's centred calibration box added
    (sigpy places odd-size boxes one index off for some sizes). sigpy fails for some seeds; then up to
    ``max_attempts - 1`` seeds in ``[2^31, 2^32)`` drawn from ``default_rng(seed)`` are tried.
    ``acceleration`` must be > 1."""

    name = "poisson"
    accel_above_one = True
    max_attempts = 10

    def __init__(self, acceleration: float, calib: Calib = 24, crop_corner: bool = True, seed: Seed = None):
        super().__init__(acceleration, calib, seed)
        self.crop_corner = crop_corner

    def __call__(self, shape: Sequence[int], seed: Optional[int] = None) -> torch.Tensor:
        height, width = _kspace_size(shape)
        box = self._calib_box(height, width)
        self._total(height, width)  # checks that the calibration box fits the budget
        if seed is None:
            seed = int(self.rng.integers(2**31))  # sigpy's seed must be an int < 2^32
        # sigpy's slope search fails for some seeds; retry with seeds derived from this one
        retries = np.random.default_rng(seed).integers(2**31, 2**32, size=self.max_attempts - 1)
        for attempt in [seed, *retries.tolist()]:
            try:
                mask = _sigpy_poisson((height, width), self.acceleration, self.calib, self.crop_corner, attempt)
                break
            except ValueError as e:
                last = e
                continue
        else:
            raise ValueError(
                f"sigpy could not reach acceleration {self.acceleration} for {(height, width)} in "
                f"{self.max_attempts} attempts ({last}); expected a lower acceleration or smaller calib"
            )
        return torch.from_numpy(np.maximum(mask, box).astype(np.float32))


def _sigpy_poisson(shape, accel: float, calib, crop_corner: bool, seed: int, tol: float = 0.1,
                   max_iter: int = 64) -> np.ndarray:
    """``sigpy.mri.poisson`` (same slope bisection, same kernel, same masks), with the bisection bounded: sigpy's
    loops forever when the acceleration is out of reach (its float bisection stops moving), so an unreachable
    acceleration is refused up front (below the density of a full disc, above the sparsest pattern) and the
    search stops after ``max_iter`` halvings (ValueError, like sigpy's own failure)."""
    from sigpy.mri.samp import _poisson  # imported here: sigpy (numba) is slow to import

    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    x = np.maximum(abs(x - nx / 2) - calib[-1] / 2, 0)
    x /= max(x.max(), 1e-12)
    y = np.maximum(abs(y - ny / 2) - calib[-2] / 2, 0)
    y /= max(y.max(), 1e-12)
    r = np.sqrt(x**2 + y**2)
    keep = (r < 1) if crop_corner else np.ones_like(r, dtype=bool)
    state = np.random.get_state()
    try:
        def accel_at(slope):
            radius_x = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
            radius_y = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
            mask = _poisson(nx, ny, 30, radius_x, radius_y, calib, seed)
            if crop_corner:
                mask *= r < 1
            return mask, nx * ny / max(np.sum(mask), 1)

        densest = nx * ny / max(int(keep.sum()), 1)
        if accel < densest - tol:
            raise ValueError(f"acceleration {accel} is below the densest Poisson-disc pattern ({densest:.2f}) of "
                             f"{(ny, nx)}{' with cropped corners' if crop_corner else ''}")
        slope_min, slope_max = 0.0, float(max(nx, ny))
        _, sparsest = accel_at(slope_max)
        if accel > sparsest + tol:
            raise ValueError(f"acceleration {accel} is beyond the sparsest Poisson-disc pattern ({sparsest:.2f}) "
                             f"of {(ny, nx)}")
        for _ in range(max_iter):
            slope = (slope_max + slope_min) / 2
            mask, actual = accel_at(slope)
            if abs(actual - accel) < tol:
                return mask.reshape(shape).astype(np.float32)
            if actual < accel:
                slope_min = slope
            else:
                slope_max = slope
        raise ValueError(f"cannot generate a Poisson-disc mask with acceleration {accel}")
    finally:
        np.random.set_state(state)


class RadialMask(_PointMask):
    """Radial spokes through DC rasterised to the nearest Cartesian grid points (pseudo-radial sampling), plus
    an optional centred ``calib`` box. Angles ``theta_0 + k * d`` with a random rotation ``theta_0`` and
    ``d`` the golden angle 111.25 deg (Winkelmann et al. 2007) or ``pi / n_spokes``. Give ``n_spokes``, or
    ``acceleration`` to pick the number of spokes whose actual acceleration is closest to it."""

    name = "radial"

    def __init__(self, n_spokes: Optional[int] = None, acceleration: Optional[float] = None,
                 golden_angle: bool = True, calib: Calib = 0, seed: Seed = None):
        if (n_spokes is None) == (acceleration is None):
            raise ValueError("give exactly one of n_spokes and acceleration")
        if n_spokes is not None:
            checks.check_int("n_spokes", n_spokes, 1)
        super().__init__(1 if acceleration is None else acceleration, calib, seed)
        self.acceleration = acceleration
        self.n_spokes = n_spokes
        self.golden_angle = golden_angle

    def _spokes(self, theta0: float, n: int, height: int, width: int) -> np.ndarray:
        step = GOLDEN_ANGLE if self.golden_angle else math.pi / n
        angles = theta0 + step * np.arange(n)
        radius = max(height, width)
        t = np.arange(-radius, radius + 0.5, 0.5)  # half-pixel steps: no grid point on a spoke is skipped
        y = np.rint(height // 2 + np.outer(np.sin(angles), t)).astype(int)
        x = np.rint(width // 2 + np.outer(np.cos(angles), t)).astype(int)
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        mask = self._calib_box(height, width)
        mask[y[inside], x[inside]] = True
        return mask

    def __call__(self, shape: Sequence[int], seed: Seed = None) -> torch.Tensor:
        height, width = _kspace_size(shape)
        theta0 = self._rng(seed).uniform(0, math.pi)
        if self.n_spokes is not None:
            return torch.from_numpy(self._spokes(theta0, self.n_spokes, height, width).astype(np.float32))
        target = height * width / self.acceleration
        # bisection for the fewest spokes sampling >= target points, then the closer of it and one fewer
        lo, hi = 1, 4 * max(height, width)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._spokes(theta0, mid, height, width).sum() >= target:
                hi = mid
            else:
                lo = mid + 1
        candidates = [self._spokes(theta0, n, height, width) for n in sorted({max(lo - 1, 1), lo})]
        best = min(candidates, key=lambda m: abs(height * width / m.sum() - self.acceleration))
        return torch.from_numpy(best.astype(np.float32))


# --------------------------------------------------------------------------- reporting


def acceleration(mask: torch.Tensor, shape: Optional[Sequence[int]] = None) -> float:
    """Actual acceleration: number of k-space positions / number sampled (nonzero), with the mask broadcast to
    ``shape`` if given (for a ``(1, W)`` line mask without ``shape``: W / sampled columns)."""
    mask = torch.as_tensor(mask)
    if shape is not None:
        mask = torch.broadcast_to(mask, tuple(shape))
    sampled = int(torch.count_nonzero(mask))
    return mask.numel() / sampled if sampled else math.inf


def calibration_size(mask: torch.Tensor) -> tuple:
    """Size of the fully sampled centred calibration region of a ``(1, W)`` or ``(H, W)`` mask.

    Line mask ``(1, W)``: ``(w,)``, the length of the run of sampled columns containing the centre column
    ``W // 2`` (0 if it is not sampled). 2-D mask: ``(h, w)``, the largest-area fully sampled box
    ``rows _centered(H, h) x cols _centered(W, w)``, centred as fastMRI centres its calibration lines
    (start ``(n - size + 1) // 2``); ties go to the squarer box. This is what was actually sampled, so
    it can exceed the requested region when neighbouring lines/points happen to be sampled.
    """
    mask = torch.as_tensor(mask)
    if mask.dim() != 2:
        raise ValueError(f"expected a (1, W) or (H, W) mask, got shape {tuple(mask.shape)}")
    sampled = mask.detach().cpu().numpy() != 0
    height, width = sampled.shape
    if height == 1:
        line, left, right = sampled[0], width // 2, width // 2
        if not line[left]:
            return (0,)
        while left > 0 and line[left - 1]:
            left -= 1
        while right < width - 1 and line[right + 1]:
            right += 1
        return (right - left + 1,)
    # boxes are nested as h or w grows, so the widest box for h rows is no wider than for h - 1 rows
    best, w = (0, 0), width
    for h in range(1, height + 1):
        rows = sampled[_centered(height, h)].all(axis=0)  # columns sampled in all h centred rows
        while w > 0 and not rows[_centered(width, w)].all():
            w -= 1
        if w == 0:
            break
        if (h * w, -abs(h - w)) > (best[0] * best[1], -abs(best[0] - best[1])):
            best = (h, w)
    return best


# --------------------------------------------------------------------------- registry

_MASKS = {cls.name: cls for cls in (
    RandomMask, EquispacedMask, EquispacedFractionMask, MagicMask, MagicFractionMask,
    Gaussian1DMask, Gaussian2DMask, UniformRandom2DMask, PoissonDiskMask, RadialMask,
)}


def available() -> list:
    """Names accepted by :func:`get`."""
    return sorted(_MASKS)


def get(name: str, **params):
    """The mask function ``name`` built with ``params``. fastMRI masks also take scalar ``acceleration`` and
    ``center_fraction`` for one-element ``accelerations`` / ``center_fractions``."""
    if name not in _MASKS:
        raise ValueError(f"unknown mask {name!r}; known masks: {', '.join(available())}")
    cls = _MASKS[name]
    if issubclass(cls, FastMRIMask):
        for single, plural in (("acceleration", "accelerations"), ("center_fraction", "center_fractions")):
            if single in params:
                if plural in params:
                    raise ValueError(f"give {single} or {plural}, not both")
                params[plural] = [params.pop(single)]
    sig = inspect.signature(cls.__init__)
    accepted = [k for k in sig.parameters if k != "self"]
    checks.check_keys(f"the parameters of mask {name!r}", params, accepted)
    missing = [k for k, p in sig.parameters.items()
               if k != "self" and p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"mask {name!r} needs the parameter(s) {', '.join(missing)}")
    return cls(**params)
