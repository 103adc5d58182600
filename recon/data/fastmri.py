"""fastMRI HDF5 volumes: lazy reading and atomic writing.

The layout of the fastMRI files (Zbontar et al. 2018, https://github.com/facebookresearch/fastMRI):

    kspace               (slices, coils, H, W) complex64 multi-coil, (slices, H, W) single-coil
    reconstruction_rss   (slices, h, w) float32 target of multi-coil files (root-sum-of-squares)
    reconstruction_esc   (slices, h, w) float32 target of single-coil files (emulated single coil)
    mask                 (W,) sampling mask of the test/challenge files
    ismrmrd_header       ISMRMRD XML: encodedSpace/reconSpace matrixSize (x, y, z) and
                         encodingLimits/kspace_encoding_step_1 (center, maximum)
    attributes           acquisition, max, norm, patient_id, acceleration, num_low_frequencies, ...

Single-coil k-space is presented with one coil, so every k-space read is (..., C, H, W).

Sizes are the file's word, and a header can declare any (k-space of 100000 x 100000, 10^6 coils) at no cost to the
file. Nothing is read before what it will take is checked against the memory budget (``recon.memory``): every
k-space read is checked with the working copies reconstructing a slice needs (``WORKING_COPIES``), every target,
mask and header read with its own size. A volume declaring more than ``MAX_SLICES`` slices is refused when it is
opened.
"""
from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from recon import memory
from recon.atomic import atomic_path

from .errors import DataError

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"
_ENC = ("encoding", "encodedSpace", "matrixSize")
_REC = ("encoding", "reconSpace", "matrixSize")
_LIM = ("encoding", "encodingLimits", "kspace_encoding_step_1")
# target dataset by preference: the challenge's own key first, the other one if that is all the file has
_TARGET_KEYS = {True: ("reconstruction_rss", "reconstruction_esc"), False: ("reconstruction_esc", "reconstruction_rss")}
# What reconstructing one slice holds at its peak, in units of the slice's complex64 k-space: the peak resident
# memory of ``recon reconstruct`` on one 8-coil slice, less that of the same command on a 32 x 32 file, was 26x
# the slice for zero-filled and cg-sense (512^2 and 768^2: ESPIRiT's calibration and maps, coil images, the
# operator's copies) and 42x for dds (2 steps, 512^2); 48 leaves a margin above the largest.
WORKING_COPIES = 48
# an ISMRMRD XML header is a few kB; a declared header dataset larger than this is not one
MAX_HEADER_BYTES = 64 << 20
# the commands list a volume's slices and hold a result per slice; an MRI volume has tens to hundreds (fastMRI: at
# most 50, a 3-D acquisition's partitions a few hundred), so a declared count above this is not a volume
MAX_SLICES = 100_000


def _element(root: ET.Element, path: tuple[str, ...], create: bool = False) -> ET.Element | None:
    """The element at `path` (ISMRMRD-namespaced child tags) below `root`; created when missing if `create`."""
    el = root
    for tag in path:
        child = el.find(f"{{{ISMRMRD_NS}}}{tag}")
        if child is None:
            if not create:
                return None
            child = ET.SubElement(el, f"{{{ISMRMRD_NS}}}{tag}")
        el = child
    return el


def _find_int(root: ET.Element, path: tuple[str, ...]) -> int | None:
    el = _element(root, path)
    try:
        return int(el.text)
    except (AttributeError, TypeError, ValueError):
        return None


def check_header_dataset(ds: h5py.Dataset, path) -> None:
    """Refuse, before reading it, an ``ismrmrd_header`` dataset whose declared size is not that of an XML text."""
    size = memory.nbytes(ds.shape, ds.dtype.itemsize)
    if size > MAX_HEADER_BYTES:
        raise DataError(f"{path}: ismrmrd_header declares {memory.describe(size)} (shape {ds.shape}, dtype "
                        f"{ds.dtype}); an ISMRMRD XML header is at most {memory.describe(MAX_HEADER_BYTES)}")


@contextmanager
def open_readonly(path):
    """An HDF5 file opened read-only; h5py's errors become one-line DataErrors naming ``path``."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open, the HDF5 file is truncated or corrupt "
                        f"({str(e).splitlines()[0]})") from None
    try:
        with f:
            yield f
    except (OSError, KeyError, RuntimeError) as e:
        raise DataError(f"{path}: cannot read, the HDF5 file is corrupt ({str(e).splitlines()[0]})") from None


@dataclass(frozen=True)
class FastMRIHeader:
    """Sizes from a file's ISMRMRD XML header.

    encoding_size, recon_size: encodedSpace / reconSpace matrixSize (x, y, z); x is the readout (k-space H),
    y the phase encoding (k-space W). encoding_limits: (center, maximum) of kspace_encoding_step_1 as stored,
    or None; fastMRI derives padding_left = encoding_size[1] // 2 - center, padding_right = padding_left + maximum + 1.
    xml: the original document, so that writing a loaded header keeps everything else in it.
    """

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    encoding_limits: tuple[int, int] | None = None
    xml: str | None = None
    sizes_given: bool = True  # False: the XML names no encodedSpace/reconSpace matrixSize (fallbacks used)

    @classmethod
    def from_xml(cls, xml: str | bytes, encoding_size: tuple[int, int, int],
                 recon_size: tuple[int, int, int]) -> FastMRIHeader:
        """Parse `xml`; a size missing from it takes the given fallback. Raises ET.ParseError on malformed XML."""
        root = ET.fromstring(xml)

        def size(path, fallback):
            xyz = tuple(_find_int(root, path + (a,)) for a in "xyz")
            return fallback if None in xyz else xyz

        limits = (_find_int(root, _LIM + ("center",)), _find_int(root, _LIM + ("maximum",)))
        given = all(None not in tuple(_find_int(root, p + (a,)) for a in "xyz") for p in (_ENC, _REC))
        return cls(size(_ENC, encoding_size), size(_REC, recon_size), None if None in limits else limits,
                   xml.decode() if isinstance(xml, bytes) else xml, given)

    def to_xml(self) -> str:
        """ISMRMRD XML: `xml` (or an empty ismrmrdHeader) with this header's sizes and limits written into it."""
        root = ET.fromstring(self.xml) if self.xml else ET.Element(f"{{{ISMRMRD_NS}}}ismrmrdHeader")
        for path, xyz in ((_ENC, self.encoding_size), (_REC, self.recon_size)):
            for axis, v in zip("xyz", xyz):
                _element(root, path + (axis,), create=True).text = str(int(v))
        if self.encoding_limits is not None:
            minimum = _element(root, _LIM + ("minimum",), create=True)
            minimum.text = minimum.text or "0"
            center, maximum = self.encoding_limits
            _element(root, _LIM + ("maximum",), create=True).text = str(int(maximum))
            _element(root, _LIM + ("center",), create=True).text = str(int(center))
        return ET.tostring(root, encoding="unicode", default_namespace=ISMRMRD_NS)


def _plain(value):
    """An HDF5 attribute value as a Python scalar/str where it is one."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def _nonfinite_slices(x: np.ndarray, indices) -> list[int]:
    """Slice numbers (from `indices`, one per leading entry of `x`) whose values contain NaN or Inf."""
    finite = np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
    return [indices[i] for i in np.flatnonzero(~finite)]


def _read(ds: h5py.Dataset, rows: range) -> np.ndarray:
    """Rows `rows` of `ds` along axis 0, reading only those (h5py needs increasing selections)."""
    if len(rows) == 0:
        return np.zeros((0, *ds.shape[1:]), ds.dtype)
    if rows.step > 0:
        return ds[rows.start:rows[-1] + 1:rows.step]
    return np.ascontiguousarray(ds[rows[-1]:rows[0] + 1:-rows.step][::-1])


def slice_rows(path, n: int, idx) -> tuple[range, bool]:
    """``idx`` (int, slice or range) of a volume of ``n`` slices as a range of slice numbers, and whether it was a
    single int; out-of-range indices are a DataError naming ``path``."""
    valid = f"the volume has {n} slices (valid indices 0..{n - 1})"
    if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
        if not -n <= idx < n:
            raise DataError(f"{path}: slice index {idx} out of range; {valid}")
        i = int(idx) % n
        return range(i, i + 1), True
    if isinstance(idx, slice):
        for bound in (idx.start, idx.stop):
            if bound is not None and not -n <= bound <= n:
                raise DataError(f"{path}: slice bound {bound} out of range; {valid}")
        return range(*idx.indices(n)), False
    if isinstance(idx, range):
        if len(idx) and not (min(idx) >= 0 and max(idx) < n):
            raise DataError(f"{path}: slice range {idx} out of range; {valid}")
        return idx, False
    raise TypeError(f"slice index must be an int, slice or range, got {type(idx).__name__}")


class FastMRIVolume:
    """A fastMRI HDF5 file opened lazily: metadata is read once, k-space and targets only for the requested slices.

    The file is opened per access and closed after it, so a volume holds no handle and can be pickled.
    """

    cartesian = True  # k-space on the grid (``kspace(i)``), not samples along a trajectory

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, expected a fastMRI .h5 file")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path}: not an HDF5 file")
        with self._open() as f:
            if not isinstance(f.get("kspace"), h5py.Dataset):
                present = ", ".join(f.keys()) or "none"
                raise DataError(f"{self.path}: no 'kspace' dataset (present: {present})")
            ks = f["kspace"]
            if ks.ndim not in (3, 4):
                raise DataError(f"{self.path}: k-space has {ks.ndim} dims {ks.shape}, "
                                "expected 3 (slices, H, W) or 4 (slices, coils, H, W)")
            if ks.dtype.kind != "c":
                raise DataError(f"{self.path}: k-space is not complex (dtype {ks.dtype})")
            if 0 in ks.shape:
                raise DataError(f"{self.path}: k-space has shape {ks.shape}; expected no empty dimension")
            if ks.shape[0] > MAX_SLICES:
                raise DataError(f"{self.path}: k-space declares {ks.shape[0]} slices (shape {ks.shape}); expected at "
                                f"most {MAX_SLICES}")
            self.is_multicoil = ks.ndim == 4
            self.shape = ks.shape if self.is_multicoil else (ks.shape[0], 1, *ks.shape[1:])
            self._itemsize = ks.dtype.itemsize
            self.target_key = next((k for k in _TARGET_KEYS[self.is_multicoil] if k in f), None)
            self._check_target(f)
            self.mask = self._read_mask(f)
            self.attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if "max" in self.attrs and not (isinstance(self.attrs["max"], (int, float)) and
                                            not isinstance(self.attrs["max"], bool) and
                                            np.isfinite(self.attrs["max"]) and self.attrs["max"] > 0):
                raise DataError(f"{self.path}: attribute 'max' (the data range of the reference) must be a finite "
                                f"number > 0, got {self.attrs['max']!r}")
            encoding = (*self.shape[-2:], 1)
            recon = (*f[self.target_key].shape[-2:], 1) if self.target_key else encoding
            self.header = self._read_header(f, encoding, recon)
        self.encoding_size = self.header.encoding_size if self.header else encoding
        self.recon_size = self.header.recon_size if self.header else recon

    def _open(self):
        return open_readonly(self.path)

    def _check_target(self, f: h5py.File) -> None:
        if self.target_key is None:
            return
        t = f[self.target_key]
        if not isinstance(t, h5py.Dataset) or t.ndim != 3 or t.shape[0] != self.num_slices or t.dtype.kind not in "fiu":
            raise DataError(f"{self.path}: {self.target_key} has shape {getattr(t, 'shape', None)} "
                            f"dtype {getattr(t, 'dtype', None)}, expected real ({self.num_slices}, h, w)")

    def _read_mask(self, f: h5py.File) -> torch.Tensor | None:
        if "mask" not in f:
            return None
        if not isinstance(f["mask"], h5py.Dataset) or f["mask"].dtype.kind not in "biuf":
            raise DataError(f"{self.path}: mask must be a real array of {self.shape[-1]} entries (k-space W)")
        if f["mask"].size != self.shape[-1]:
            raise DataError(f"{self.path}: mask has shape {f['mask'].shape}, expected {self.shape[-1]} entries "
                            f"(k-space W)")
        memory.check_allocation(f["mask"].size * (f["mask"].dtype.itemsize + 4), f"{self.path}: the mask")
        m = np.asarray(f["mask"], dtype=np.float32)
        if not np.isfinite(m).all() or (m < 0).any() or not (m > 0).any():
            raise DataError(f"{self.path}: mask must be finite, non-negative and sample at least one line")
        return torch.from_numpy(m.reshape(1, -1))

    def _read_header(self, f: h5py.File, encoding, recon) -> FastMRIHeader | None:
        if "ismrmrd_header" not in f:
            return None
        check_header_dataset(f["ismrmrd_header"], self.path)
        try:
            return FastMRIHeader.from_xml(f["ismrmrd_header"][()], encoding, recon)
        except (ET.ParseError, TypeError, ValueError) as e:
            warnings.warn(f"{self.path}: unreadable ismrmrd_header ({e}); sizes inferred from the arrays",
                          stacklevel=3)
            return None

    @property
    def num_slices(self) -> int:
        return self.shape[0]

    def mask_of(self, i: int) -> torch.Tensor | None:
        """The sampling mask of slice ``i``: the file's one mask for every slice (None: fully sampled)."""
        return self.mask

    @property
    def noise_std(self) -> float | None:
        """The k-space noise std per complex sample the file states (attribute ``noise_std``, as ``recon convert``
        writes for prewhitened data), or None."""
        v = self.attrs.get("noise_std")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0 \
            else None

    @property
    def whitening_inverse(self) -> torch.Tensor | None:
        """W^{-1} (C, C) of prewhitened k-space (dataset ``prewhitening_inverse``, as ``recon convert`` writes it),
        for coil maps that keep the unwhitened intensity (``recon.data.prewhiten.intensity_preserving_maps``)."""
        with self._open() as f:
            if "prewhitening_inverse" not in f:
                return None
            d = f["prewhitening_inverse"]
            c = self.num_coils
            if not isinstance(d, h5py.Dataset) or d.shape != (c, c) or d.dtype.kind not in "fc":
                raise DataError(f"{self.path}: 'prewhitening_inverse' must be a ({c}, {c}) matrix (the inverse "
                                f"whitener of the {c} coils), got {getattr(d, 'shape', None)}")
            w = torch.from_numpy(np.asarray(d[()], dtype=np.complex64))
        if not torch.isfinite(torch.view_as_real(w)).all():
            raise DataError(f"{self.path}: 'prewhitening_inverse' contains NaN or Inf")
        return w

    @property
    def num_coils(self) -> int:
        return self.shape[1]

    @property
    def has_target(self) -> bool:
        return self.target_key is not None

    @property
    def slice_nbytes(self) -> int:
        """Bytes of one slice of k-space as it is returned (complex64, coils x H x W)."""
        return memory.nbytes(self.shape[1:], 8)

    def memory_needed(self, slices: int = 1) -> int:
        """Bytes to read ``slices`` slices of k-space (as stored, then as complex64) and reconstruct one of them
        (``WORKING_COPIES`` of a slice): what a command asks for before it reads anything."""
        elements = memory.nbytes(self.shape[1:], 1)
        read = slices * elements * (self._itemsize + (0 if self._itemsize == 8 else 8))
        return read + WORKING_COPIES * elements * 8

    def check_memory(self, slices: int = 1) -> None:
        """Refuse (one line naming the file, the sizes and the budget) when ``memory_needed(slices)`` is above
        the memory budget (``recon.memory``)."""
        c, h, w = self.shape[1:]
        memory.check_allocation(self.memory_needed(slices),
                                f"{self.path}: reading {slices} k-space slice{'s' if slices != 1 else ''} of "
                                f"{c} coil{'s' if c != 1 else ''} x {h} x {w} and reconstructing "
                                f"{'one' if slices != 1 else 'it'} (about {WORKING_COPIES} copies of a slice)")

    def __len__(self) -> int:
        return self.num_slices

    def __repr__(self) -> str:
        return f"FastMRIVolume({str(self.path)!r}, shape={tuple(self.shape)}, target={self.target_key})"

    def _rows(self, idx) -> tuple[range, bool]:
        return slice_rows(self.path, self.num_slices, idx)

    def kspace(self, idx) -> torch.Tensor:
        """k-space of slice `idx`: complex64 (C, H, W) for an int, (S, C, H, W) for a slice or range.

        Raises DataError if a selected slice contains NaN or Inf.
        """
        rows, single = self._rows(idx)
        self.check_memory(len(rows))
        with self._open() as f:
            k = _read(f["kspace"], rows)
        if not self.is_multicoil:
            k = k[:, None]
        bad = _nonfinite_slices(k, rows)
        if bad:
            raise DataError(f"{self.path}: k-space slice(s) {bad} contain NaN or Inf")
        k = torch.from_numpy(k.astype(np.complex64, copy=False))
        return k[0] if single else k

    def target(self, idx) -> torch.Tensor | None:
        """float32 target of slice `idx` ((h, w) for an int, (S, h, w) otherwise), or None when the file has none."""
        rows, single = self._rows(idx)
        if not self.has_target:
            return None
        with self._open() as f:
            ds = f[self.target_key]
            h, w = ds.shape[1:]
            # as stored, as float32, and the finiteness test's booleans
            memory.check_allocation(memory.nbytes((len(rows), h, w), ds.dtype.itemsize + 4 + 1),
                                    f"{self.path}: {self.target_key} of {len(rows)} slice"
                                    f"{'s' if len(rows) != 1 else ''} of {h} x {w}")
            t = _read(ds, rows)
        bad = _nonfinite_slices(t, rows)
        if bad:
            raise DataError(f"{self.path}: {self.target_key} slice(s) {bad} contain NaN or Inf")
        t = torch.from_numpy(t.astype(np.float32, copy=False))
        return t[0] if single else t


def load_fastmri(path: str | os.PathLike) -> FastMRIVolume:
    """Open a fastMRI HDF5 file lazily (see FastMRIVolume); raises DataError naming the problem and the file."""
    return FastMRIVolume(path)


def _numpy(x) -> np.ndarray:
    return x.detach().resolve_conj().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_fastmri(path: str | os.PathLike, kspace, target=None, mask=None, attrs: dict | None = None,
                  header: FastMRIHeader | None = None) -> Path:
    """Write a fastMRI-layout HDF5 file atomically (``recon.atomic``: a temporary file next to it, then a rename).

    kspace: (S, C, H, W) multi-coil or (S, H, W) single-coil, complex (stored as complex64).
    target: real (S, h, w), stored as reconstruction_rss (multi-coil) or reconstruction_esc (single-coil);
        attrs["max"] defaults to its maximum, as in the fastMRI files.
    mask: W entries, stored as the 1-D float32 `mask` dataset of the fastMRI test files.
    header: written as ISMRMRD XML (FastMRIHeader.to_xml); by default encoding size (H, W, 1), recon size
        (h, w, 1) of the target (else the encoding size), encoding limits center W // 2, maximum W - 1.
    On any error a DataError is raised, no temporary file remains and an existing file at `path` is untouched.
    """
    path = Path(path)
    k = _numpy(kspace)
    if k.ndim not in (3, 4):
        raise DataError(f"{path}: k-space has {k.ndim} dims {k.shape}, "
                        "expected 3 (slices, H, W) or 4 (slices, coils, H, W)")
    if not np.iscomplexobj(k):
        raise DataError(f"{path}: k-space is not complex (dtype {k.dtype})")
    bad = _nonfinite_slices(k, range(len(k)))
    if bad:
        raise DataError(f"{path}: k-space slice(s) {bad} contain NaN or Inf")
    multicoil, (n, h, w) = k.ndim == 4, (k.shape[0], *k.shape[-2:])
    t = None if target is None else _numpy(target)
    if t is not None and (np.iscomplexobj(t) or t.ndim != 3 or t.shape[0] != n):
        raise DataError(f"{path}: target has shape {t.shape} dtype {t.dtype}, expected real ({n}, h, w)")
    m = None if mask is None else _numpy(mask).astype(np.float32).reshape(-1)
    if m is not None and m.size != w:
        raise DataError(f"{path}: mask has {m.size} entries, expected {w} (k-space W)")
    if header is None:
        recon = (*t.shape[1:], 1) if t is not None else (h, w, 1)
        header = FastMRIHeader((h, w, 1), recon, (w // 2, w - 1))
    attrs = dict(attrs or {})
    if t is not None:
        attrs.setdefault("max", float(t.max()))
    if not path.parent.is_dir():
        raise DataError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a directory")

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=k.astype(np.complex64, copy=False))
            if t is not None:
                f.create_dataset(_TARGET_KEYS[multicoil][0], data=t.astype(np.float32, copy=False))
            if m is not None:
                f.create_dataset("mask", data=m)
            f.create_dataset("ismrmrd_header", data=header.to_xml())
            for key, value in attrs.items():
                try:
                    f.attrs[key] = value
                except (TypeError, ValueError) as e:
                    raise DataError(f"{path}: attribute {key!r} = {value!r} cannot be stored in HDF5 ({e})") from None
    return path
