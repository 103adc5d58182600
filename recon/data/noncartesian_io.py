"""Non-Cartesian multi-coil MRI in HDF5: lazy reading and atomic writing.

The layout (``layout`` attribute ``noncartesian-v1``) keeps ISMRMRD's names for what an acquisition holds
(an ISMRMRD acquisition is one readout: ``data`` (channels x samples) and ``traj`` (samples x dimensions)),
stacked over readouts, and fastMRI's for the rest:

    data                 (slices, coils, readouts, samples) complex64   the measured samples y_c
    traj                 (readouts, samples, 2) float32   frequencies in radians per sample, (row, column) as the
                         image's (H, W) axes, in [-pi, pi) (``operators.trajectories``); ISMRMRD's convention
                         (cycles per field of view, [-N/2, N/2)) is traj * N / (2 pi)
    density_weights      (readouts, samples) float32      density compensation (optional; Pipe-Menon, grid cells)
    reconstruction_rss   (slices, H, W) float32           reference image (optional)
    ismrmrd_header       ISMRMRD XML: encoding/trajectory (radial, spiral or other), encodedSpace and reconSpace
                         matrixSize (x = H, y = W, z = 1): the image grid the trajectory's radians refer to
    attributes           layout, trajectory (the ``operators.trajectories`` family), trajectory_params (JSON),
                         number_of_samples, active_channels, trajectory_dimensions (= 2), matrix_size (H, W),
                         max (of the reference), acquisition, patient_id, snr_db (simulations)

The samples of a slice are read as ``(coils, K)`` with K = readouts * samples, readout by readout: the shape
``operators.NonCartesianMRI`` takes with the trajectory ``(readouts, samples, 2)``.

Sizes are the file's word: a volume of more than ``fastmri.MAX_SLICES`` slices is refused, the declared shapes of
``traj`` and ``density_weights`` are checked against ``data`` and the memory budget (``recon.memory``) before they
are read, and a slice's samples are read only after what reconstructing it needs (``IMAGE_COPIES`` coil images of
the header's matrix, ``SAMPLE_COPIES`` copies of its samples) is within the budget.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from operators import trajectories
from recon import memory
from recon.atomic import atomic_path

from .errors import DataError
from .fastmri import ISMRMRD_NS, MAX_SLICES, check_header_dataset, open_readonly

LAYOUT = "noncartesian-v1"
KINDS = {"radial": "radial", "golden-angle": "radial", "spiral": "spiral"}  # family -> ISMRMRD trajectory type
# What reconstructing one slice holds at its peak: the peak resident memory of ``recon reconstruct`` (zero-filled,
# 8 coils, radial on 384 x 384 with 96 and 576 spokes of 768 samples), less that of a 32 x 32 file, grew by 26
# complex64 coil images (calibration maps, density compensation, the NUFFT's oversampled grids) plus 4.3 copies of
# the slice's samples; rounded up to 32 and 8 for a margin (cg-sense peaked lower).
IMAGE_COPIES = 32
SAMPLE_COPIES = 8


def is_noncartesian(path) -> bool:
    """Whether ``path`` is an HDF5 file in this layout (it has a ``traj`` dataset next to ``data``)."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return isinstance(f.get("traj"), h5py.Dataset) and isinstance(f.get("data"), h5py.Dataset)
    except OSError:
        return False


def _numpy(x) -> np.ndarray:
    return x.detach().resolve_conj().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _header_xml(matrix: tuple, kind: str) -> str:
    root = ET.Element(f"{{{ISMRMRD_NS}}}ismrmrdHeader")
    enc = ET.SubElement(root, f"{{{ISMRMRD_NS}}}encoding")
    for space in ("encodedSpace", "reconSpace"):
        size = ET.SubElement(ET.SubElement(enc, f"{{{ISMRMRD_NS}}}{space}"), f"{{{ISMRMRD_NS}}}matrixSize")
        for axis, v in zip("xyz", (*matrix, 1)):
            ET.SubElement(size, f"{{{ISMRMRD_NS}}}{axis}").text = str(int(v))
    ET.SubElement(enc, f"{{{ISMRMRD_NS}}}trajectory").text = kind
    return ET.tostring(root, encoding="unicode", default_namespace=ISMRMRD_NS)


def _matrix_from_xml(xml) -> Optional[tuple]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    ns = f"{{{ISMRMRD_NS}}}"
    size = root.find(f"{ns}encoding/{ns}reconSpace/{ns}matrixSize")
    try:
        return int(size.find(f"{ns}x").text), int(size.find(f"{ns}y").text)
    except (AttributeError, TypeError, ValueError):
        return None


def write_noncartesian(path, data, trajectory, matrix, density=None, target=None, family: str = "other",
                       params: Optional[dict] = None, attrs: Optional[dict] = None) -> Path:
    """Write the layout above atomically (``recon.atomic``). ``data`` (S, C, R, N) complex, ``trajectory``
    (R, N, 2), ``matrix`` (H, W), ``density`` (R, N), ``target`` (S, H, W) real. Bad input is a DataError."""
    path = Path(path)
    d = _numpy(data)
    if d.ndim != 4 or not np.iscomplexobj(d) or 0 in d.shape:
        raise DataError(f"{path}: samples must be complex (slices, coils, readouts, samples), got shape {d.shape} "
                        f"dtype {d.dtype}")
    if not np.isfinite(d).all():
        raise DataError(f"{path}: the samples contain NaN or Inf")
    t = _numpy(trajectory).astype(np.float32)
    if t.shape != (*d.shape[2:], 2):
        raise DataError(f"{path}: trajectory has shape {t.shape}, expected (readouts, samples, 2) = "
                        f"{(*d.shape[2:], 2)}")
    try:
        trajectories.check_trajectory(torch.from_numpy(t))
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    w = None if density is None else _numpy(density).astype(np.float32)
    if w is not None and w.shape != d.shape[2:]:
        raise DataError(f"{path}: density weights have shape {w.shape}, expected (readouts, samples) = {d.shape[2:]}")
    h, wd = (int(v) for v in matrix)
    ref = None if target is None else _numpy(target).astype(np.float32)
    if ref is not None and ref.shape != (d.shape[0], h, wd):
        raise DataError(f"{path}: target has shape {ref.shape}, expected ({d.shape[0]}, {h}, {wd})")
    if not path.parent.is_dir():
        raise DataError(f"{path}: directory {path.parent} does not exist")
    a = {"layout": LAYOUT, "trajectory": family, "trajectory_params": json.dumps(params or {}),
         "number_of_samples": int(d.shape[3]), "active_channels": int(d.shape[1]), "trajectory_dimensions": 2,
         "matrix_size": np.asarray([h, wd], dtype=np.int64)}
    if ref is not None:
        a["max"] = float(ref.max())
    a.update(attrs or {})
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=d.astype(np.complex64, copy=False))
            f.create_dataset("traj", data=t)
            if w is not None:
                f.create_dataset("density_weights", data=w)
            if ref is not None:
                f.create_dataset("reconstruction_rss", data=ref)
            f.create_dataset("ismrmrd_header", data=_header_xml((h, wd), KINDS.get(family, "other")))
            for k, v in a.items():
                f.attrs[k] = v
    return path


class NonCartesianVolume:
    """A file of the layout above, opened lazily: metadata, trajectory and weights once, samples per slice.

    ``trajectory`` (R, N, 2) and ``density`` (R, N) or None are tensors; ``matrix`` is (H, W); ``samples(i)``
    is (C, R N) complex64; ``target(i)`` (H, W) float32 or None."""

    cartesian = False  # samples along a trajectory (``samples(i)``)
    noise_std = None  # the file states no noise level (it is estimated from the samples)
    whitening_inverse = None  # the samples are not prewhitened

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file() or not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path}: not an HDF5 file")
        with self._open() as f:
            if not isinstance(f.get("data"), h5py.Dataset) or not isinstance(f.get("traj"), h5py.Dataset):
                raise DataError(f"{self.path}: not a non-Cartesian file (needs the 'data' and 'traj' datasets; "
                                f"present: {', '.join(f.keys()) or 'none'})")
            d = f["data"]
            if d.ndim != 4 or d.dtype.kind != "c" or 0 in d.shape:
                raise DataError(f"{self.path}: 'data' has shape {d.shape} dtype {d.dtype}; expected complex "
                                f"(slices, coils, readouts, samples)")
            self.shape = tuple(d.shape)
            if self.shape[0] > MAX_SLICES:
                raise DataError(f"{self.path}: 'data' declares {self.shape[0]} slices (shape {self.shape}); expected "
                                f"at most {MAX_SLICES}")
            traj = f["traj"]
            if traj.shape != (*self.shape[2:], 2) or traj.dtype.kind != "f":
                raise DataError(f"{self.path}: 'traj' has shape {traj.shape} dtype {traj.dtype}; expected float "
                                f"(readouts, samples, 2) = {(*self.shape[2:], 2)} to match 'data' {self.shape}")
            # as stored, as float32, and the checks' working copies
            memory.check_allocation(memory.nbytes(traj.shape, traj.dtype.itemsize + 12),
                                    f"{self.path}: the trajectory 'traj' of {self.shape[2]} readouts x "
                                    f"{self.shape[3]} samples")
            traj = np.asarray(traj)
            try:
                self.trajectory = trajectories.check_trajectory(torch.from_numpy(traj.astype(np.float32)), "'traj'")
            except ValueError as e:
                raise DataError(f"{self.path}: {e}") from None
            self.density = None
            if "density_weights" in f:
                w = f["density_weights"]
                if not isinstance(w, h5py.Dataset) or w.dtype.kind != "f":
                    raise DataError(f"{self.path}: 'density_weights' has dtype {getattr(w, 'dtype', None)}; "
                                    f"expected float")
                if w.size != self.shape[2] * self.shape[3]:
                    raise DataError(f"{self.path}: 'density_weights' has shape {w.shape}; expected (readouts, "
                                    f"samples) = {self.shape[2:]} to match 'data' {self.shape}")
                w = np.asarray(w)
                try:
                    self.density = trajectories.check_density(torch.from_numpy(w.astype(np.float32)),
                                                              self.trajectory, "'density_weights'")
                except ValueError as e:
                    raise DataError(f"{self.path}: {e}") from None
                self.density = self.density.reshape(self.shape[2:])
            self.attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic)
                              else v) for k, v in f.attrs.items()}
            matrix = None
            if isinstance(f.get("ismrmrd_header"), h5py.Dataset):
                check_header_dataset(f["ismrmrd_header"], self.path)
                matrix = _matrix_from_xml(f["ismrmrd_header"][()])
            if matrix is None and "matrix_size" in self.attrs:
                matrix = tuple(int(v) for v in self.attrs["matrix_size"])
            if matrix is None or len(matrix) != 2 or min(matrix) < 1:
                raise DataError(f"{self.path}: the image matrix is unknown (no ismrmrd_header reconSpace matrixSize "
                                f"and no 'matrix_size' attribute)")
            self.matrix = tuple(matrix)
            self.has_target = "reconstruction_rss" in f
            if self.has_target:
                t = f["reconstruction_rss"]
                if t.shape != (self.shape[0], *self.matrix) or t.dtype.kind not in "fiu":
                    raise DataError(f"{self.path}: reconstruction_rss has shape {t.shape}, expected real "
                                    f"{(self.shape[0], *self.matrix)}")
            if "max" in self.attrs and not (isinstance(self.attrs["max"], (int, float)) and
                                            math.isfinite(self.attrs["max"]) and self.attrs["max"] > 0):
                raise DataError(f"{self.path}: attribute 'max' must be a finite number > 0, got {self.attrs['max']!r}")

    def _open(self):
        return open_readonly(self.path)

    @property
    def num_slices(self) -> int:
        return self.shape[0]

    @property
    def num_coils(self) -> int:
        return self.shape[1]

    @property
    def family(self) -> str:
        return str(self.attrs.get("trajectory", "other"))

    def __len__(self) -> int:
        return self.num_slices

    def memory_needed(self) -> int:
        """Bytes to read one slice and reconstruct it: ``IMAGE_COPIES`` complex64 coil images of the matrix and
        ``SAMPLE_COPIES`` copies of the slice's samples."""
        coils, readouts, samples = self.shape[1:]
        return (IMAGE_COPIES * memory.nbytes((coils, *self.matrix), 8)
                + SAMPLE_COPIES * memory.nbytes((coils, readouts, samples), 8))

    def check_memory(self) -> None:
        """Refuse (one line naming the file, the sizes and the budget) when ``memory_needed()`` is above the
        memory budget (``recon.memory``)."""
        coils, readouts, samples = self.shape[1:]
        memory.check_allocation(self.memory_needed(),
                                f"{self.path}: reconstructing a slice of {coils} coil{'s' if coils != 1 else ''} x "
                                f"{readouts} readouts x {samples} samples on the {self.matrix[0]} x "
                                f"{self.matrix[1]} matrix (about {IMAGE_COPIES} coil images and {SAMPLE_COPIES} "
                                f"copies of the samples)")

    def _index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self.num_slices <= i < self.num_slices:
            raise IndexError(f"{self.path}: slice {i!r} out of range (the file has {self.num_slices})")
        return int(i) % self.num_slices

    def samples(self, i) -> torch.Tensor:
        """Slice ``i`` as (C, K) complex64, K = readouts * samples."""
        i = self._index(i)
        self.check_memory()
        with self._open() as f:
            d = np.asarray(f["data"][i], dtype=np.complex64)
        if not np.isfinite(d).all():
            raise DataError(f"{self.path}: the samples of slice {i} contain NaN or Inf")
        return torch.from_numpy(d.reshape(d.shape[0], -1))

    def target(self, i) -> Optional[torch.Tensor]:
        if not self.has_target:
            return None
        i = self._index(i)
        memory.check_allocation(memory.nbytes(self.matrix, 8), f"{self.path}: reconstruction_rss of "
                                f"{self.matrix[0]} x {self.matrix[1]}")
        with self._open() as f:
            t = np.asarray(f["reconstruction_rss"][i], dtype=np.float32)
        if not np.isfinite(t).all():
            raise DataError(f"{self.path}: reconstruction_rss of slice {i} contains NaN or Inf")
        return torch.from_numpy(t)

    def __repr__(self) -> str:
        return (f"NonCartesianVolume({str(self.path)!r}, slices={self.num_slices}, coils={self.num_coils}, "
                f"readouts={self.shape[2]}, samples={self.shape[3]}, matrix={self.matrix}, trajectory={self.family})")


def load_noncartesian(path) -> NonCartesianVolume:
    """Open a non-Cartesian file lazily (``NonCartesianVolume``); a DataError names the file and the problem."""
    return NonCartesianVolume(path)

