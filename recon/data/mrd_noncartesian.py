"""Non-Cartesian 2-D MRD data (radial, golden-angle, spiral, other) as ``MRDNonCartesianVolume``.

The volume has the interface of ``recon.data.noncartesian_io.NonCartesianVolume`` (``samples(i)`` (C, R N),
``trajectory`` (R, N, 2) in radians per sample, ``density``, ``matrix``), so ``operators.NonCartesianMRI`` and the
non-Cartesian reconstruction take it unchanged. ISMRMRD trajectories are in cycles per encoded field of view,
[-N/2, N/2] (BART's convention, and the one ``noncartesian_io`` documents), converted by 2 pi k / N with N the
encoded matrix along that axis; a trajectory whose largest |k| is at most 0.5 is in the normalised convention
(cycles per sample, as Gadgetron's spiral and radial tools write it) and converted by 2 pi k. A third trajectory
dimension of a 2-D encoding holds density weights (Gadgetron's spiral convention). Samples outside [discard_pre,
N - discard_post) are dropped with their trajectory points; readouts of a slice with identical trajectories are
averages of one readout and are averaged. A trajectory beyond +-N/2 is refused by name.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from operators import trajectories
from recon import memory

from .errors import DataError
from .mrd_file import GROUP, MRDFile, complex_rows, read_payload, recon_size_of

NONCARTESIAN = ("radial", "goldenangle", "spiral", "other")
FAMILY = {"radial": "radial", "goldenangle": "golden-angle", "spiral": "spiral", "other": "other"}
NORMALISED_MAX = 0.5    # a trajectory within +-0.5 is in cycles per sample


class MRDNonCartesianVolume(MRDFile):
    """A non-Cartesian 2-D MRD file with the interface of ``noncartesian_io.NonCartesianVolume`` (module
    docstring): ``samples(i)`` (C, R N) complex64, ``trajectory`` (R, N, 2) radians per sample, ``density``
    (R, N) or None, ``matrix`` (H, W) the encoded grid, ``recon_size``, ``noise_std``."""

    cartesian = False  # samples along a trajectory (``samples(i)``)

    kind = "noncartesian"

    def __init__(self, path, **kw):
        super().__init__(path, **kw)
        mrd = self.mrd
        if mrd.trajectory not in NONCARTESIAN:
            raise DataError(f"{self.path}: encoding[{mrd.encoding}]/trajectory = {mrd.trajectory!r} is not a "
                            f"non-Cartesian trajectory ({list(NONCARTESIAN)})")
        self.matrix = (mrd.encoded_matrix[0], mrd.encoded_matrix[1])
        self.recon_size = (*recon_size_of(mrd), 1)
        rows = np.concatenate(list(self.imaging_rows.values()))
        dims = np.unique(self.heads["trajectory_dimensions"][rows])
        where = f"encoding[{mrd.encoding}]/trajectory = {mrd.trajectory!r}"
        if len(dims) != 1 or dims[0] < 2:
            raise DataError(f"{self.path}: {where}, but the acquisitions carry trajectory_dimensions "
                            f"{dims.tolist()}; expected 2 (kx, ky) or 3 (kx, ky, density weight) on every readout")
        if dims[0] > 3 or (dims[0] == 3 and mrd.encoded_matrix[2] > 1):
            raise DataError(f"{self.path}: trajectory_dimensions = {int(dims[0])} with encodedSpace matrixSize z = "
                            f"{mrd.encoded_matrix[2]}: a 3-D trajectory; expected a 2-D one")
        self.trajectory_dimensions = int(dims[0])
        self.family = FAMILY[mrd.trajectory]
        traj, self._groups0 = self._trajectory(0)
        self.trajectory = torch.from_numpy(traj[..., :2].copy())
        self.density = torch.from_numpy(traj[..., 2].copy()) if self.trajectory_dimensions == 3 else None
        self.shape = (self.num_slices, self.channels, *self.trajectory.shape[:2])

    def _slice_rows(self, i: int) -> np.ndarray:
        return self.imaging_rows[int(self.slice_counters[i])]

    def _trajectory(self, i: int) -> tuple[np.ndarray, list]:
        """(R, N, D) float32 trajectory (radians for the first two dimensions) of slice ``i`` and the readout rows of
        each of its R distinct readouts (readouts with identical trajectories are averages of one)."""
        rows = self._slice_rows(i)
        h = self.heads[rows]
        n = h["number_of_samples"].astype(np.int64)
        lo, hi = h["discard_pre"].astype(np.int64), n - h["discard_post"].astype(np.int64)
        layouts = np.unique(np.stack([n, lo, hi], axis=1), axis=0)
        if len(layouts) != 1 or layouts[0, 2] <= layouts[0, 1]:
            raise DataError(f"{self.path}: the readouts of slice {i} have (number_of_samples, discard_pre, kept end) "
                            f"{layouts.tolist()}; expected one readout layout keeping at least one sample")
        memory.check_allocation(memory.nbytes((len(rows), int(n.max()), self.trajectory_dimensions), 12),
                                f"{self.path}: the trajectory of slice {i}")
        with self._open() as f:
            values = read_payload(f[GROUP]["data"], rows, self.heads, "traj", self.path)
        d = self.trajectory_dimensions
        t = np.stack([np.asarray(v, np.float32).reshape(-1, d)[a:b] for v, a, b in zip(values, lo, hi)])
        groups: dict = {}
        for j, tr in enumerate(t):
            groups.setdefault(tr.tobytes(), []).append(j)
        order = list(groups.values())
        t = np.stack([t[g[0]] for g in order])
        k = t[..., :2].astype(np.float64)
        scale = np.array([1.0, 1.0]) if np.abs(k).max() <= NORMALISED_MAX else 1.0 / np.array(self.matrix, float)
        limit = 0.5 * (1 + 1e-4)
        if (np.abs(k * scale) > limit).any():
            axis = int(np.argmax(np.abs(k * scale).max(axis=(0, 1))))
            raise DataError(f"{self.path}: the trajectory ('traj') reaches {np.abs(k[..., axis]).max():g} along "
                            f"k{'xy'[axis]}, beyond the +-{self.matrix[axis] / 2:g} cycles per field of view of the "
                            f"encodedSpace matrixSize {'xy'[axis]} = {self.matrix[axis]}")
        rad = 2 * np.pi * k * scale
        rad = np.where(rad >= np.pi, rad - 2 * np.pi, rad)  # +pi is the same frequency as -pi on the pixel grid
        t = t.copy()
        t[..., :2] = rad.astype(np.float32)
        try:
            trajectories.check_trajectory(torch.from_numpy(np.ascontiguousarray(t[..., :2])), "'traj'")
        except ValueError as e:
            raise DataError(f"{self.path}: {e}") from None
        return t, [rows[g] for g in order]

    @property
    def noise_std(self) -> Optional[float]:
        """Noise std per complex sample of ``samples`` (prewhitened data; None without noise acquisitions)."""
        if self.prewhitener is None:
            return None
        counts = np.array([len(g) for g in self._groups0], dtype=np.float64)
        return float(self.prewhitener.noise_std * math.sqrt((1.0 / counts).mean()))

    def trajectory_of(self, i: int) -> torch.Tensor:
        """(R, N, 2) radians per sample: the trajectory of slice ``i``."""
        return torch.from_numpy(self._trajectory(self._index(i))[0][..., :2].copy())

    def samples(self, i) -> torch.Tensor:
        """Slice ``i`` as (C, R N) complex64, readout by readout along ``trajectory`` (averages combined). Raises
        DataError when the slice's trajectory differs from ``trajectory`` (slice 0's)."""
        i = self._index(i)
        traj, groups = self._trajectory(i) if i else (None, self._groups0)
        if traj is not None and (traj.shape[:2] != tuple(self.trajectory.shape[:2]) or
                                 not np.array_equal(traj[..., :2], self.trajectory.numpy())):
            raise DataError(f"{self.path}: slice {i} was acquired along another trajectory than slice 0; read it "
                            f"with trajectory_of({i})")
        rows = np.concatenate(groups)
        memory.check_allocation(4 * memory.nbytes((len(rows), self.channels, int(
            self.heads["number_of_samples"][rows].max())), 8), f"{self.path}: the samples of slice {i}")
        ordered = np.sort(rows)
        with self._open() as f:
            values = read_payload(f[GROUP]["data"], ordered, self.heads, "data", self.path)
        lo = int(self.heads["discard_pre"][ordered[0]])
        data = self._whiten(complex_rows(values, self.heads[ordered])[..., lo:lo + self.shape[3]], ordered)
        position = {int(r): j for j, r in enumerate(ordered)}
        out = np.stack([data[[position[int(r)] for r in g]].mean(0) for g in groups]).astype(np.complex64)
        if not np.isfinite(out).all():
            raise DataError(f"{self.path}: the samples of slice {i} contain NaN or Inf")
        return torch.from_numpy(np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(self.channels, -1))

    def __repr__(self) -> str:
        return (f"MRDNonCartesianVolume({str(self.path)!r}, slices={self.num_slices}, coils={self.num_coils}, "
                f"readouts={self.shape[2]}, samples={self.shape[3]}, matrix={self.matrix}, trajectory={self.family}, "
                f"prewhitened={self.prewhitened})")
