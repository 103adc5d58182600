"""The shared part of reading an ISMRMRD/MRD file: the acquisition table, flags, selection and noise.

An MRD file (Inati et al., MRM 2017; https://ismrmrd.readthedocs.io) holds, in the group ``/dataset``, the XML
header ``xml`` (``recon.data.mrd_header``) and ``data``: one record per readout ("acquisition"), a 340-byte header
(flags, encoding counters ``idx``, ``number_of_samples``, ``active_channels``, ``center_sample``, ``discard_pre`` /
``discard_post``, ``sample_time_us``, ``position``, ``read_dir``, ``phase_dir``, ``slice_dir``, ...), the samples
(channels x samples, complex) and the trajectory (samples x dimensions). The ``ismrmrd`` package defines this
layout here: its record dtype (``ismrmrd.hdf5.acquisition_header_dtype``) and its flag constants.

**Reading.** The file is opened read-only (never through ``ismrmrd.Dataset``, whose default mode opens for
writing) and the acquisition table is read once, as a NumPy structured array of the headers (from the raw HDF5
chunks where the file stores them unfiltered: HDF5 converts records with variable-length members one at a time,
about 0.1 ms each); samples are read per slice, for the selected records only, and checked against their
declared shape.

**Acquisitions by flag** (ismrmrd.constants):
- noise measurements (ACQ_IS_NOISE_MEASUREMENT): the noise covariance, prewhitening (``recon.data.prewhiten``)
  of every other readout before anything else; a file without them is read without prewhitening and says so once
  (a warning); ``noise=`` names a separate MRD noise file instead;
- parallel calibration alone (ACQ_IS_PARALLEL_CALIBRATION): the calibration readouts of the selected contrast
  (``recon.data.mrd_cartesian`` uses them); calibration-and-imaging readouts
  (ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) are imaging data;
- navigator, phase correction, dummy scans, feedback, surface-coil correction and phase stabilisation readouts:
  skipped (counted in ``skipped``);
- the imaging readouts of encoding ``encoding`` (``encoding_space_ref``), of the selected ``contrast``,
  ``repetition``, ``phase`` and ``set`` (0 by default); slices are the ``slice`` counters present, in increasing
  order. 3-D encodings (kspace_encode_step_2 > 0) are refused by name.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch
from ismrmrd import constants as K
from ismrmrd.hdf5 import acquisition_header_dtype

from recon import memory

from .errors import DataError
from .fastmri import open_readonly, slice_rows
from .image_geometry import ImageGeometry, valid_directions
from .mrd_header import MRDHeader, parse_header
from .prewhiten import Prewhitener

GROUP = "dataset"
SKIPPED = {K.ACQ_IS_NAVIGATION_DATA: "navigator", K.ACQ_IS_PHASECORR_DATA: "phase correction",
           K.ACQ_IS_DUMMYSCAN_DATA: "dummy scan", K.ACQ_IS_HPFEEDBACK_DATA: "HP feedback",
           K.ACQ_IS_RTFEEDBACK_DATA: "RT feedback", K.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA: "surface coil correction",
           K.ACQ_IS_PHASE_STABILIZATION_REFERENCE: "phase stabilisation reference",
           K.ACQ_IS_PHASE_STABILIZATION: "phase stabilisation"}
SELECTORS = ("contrast", "repetition", "phase", "set")
PIXEL_TOLERANCE = 0.02  # recon pixels within 2% of the encoded ones: the recon matrix is the crop (fastMRI)


def flag_bit(flag: int) -> np.uint64:
    return np.uint64(1) << np.uint64(flag - 1)


def has_flag(flags: np.ndarray, flag: int) -> np.ndarray:
    return (flags & flag_bit(flag)) != 0


def acquisition_table(f: h5py.File, path) -> tuple[h5py.Dataset, bytes]:
    """(``/dataset/data``, ``/dataset/xml`` text) of an MRD file, or a DataError saying what the file is not."""
    g = f.get(GROUP)
    if not isinstance(g, h5py.Group):
        raise DataError(f"{path}: not an ISMRMRD/MRD file (no '/{GROUP}' group; present: "
                        f"{', '.join(f.keys()) or 'none'})")
    if not isinstance(g.get("xml"), h5py.Dataset):
        raise DataError(f"{path}: /{GROUP}/xml (the ISMRMRD XML header) is missing; present: "
                        f"{', '.join(g.keys()) or 'none'}")
    ds = g.get("data")
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: /{GROUP}/data (the acquisitions) is missing; present: {', '.join(g.keys())}")
    names = ds.dtype.names or ()
    if ds.ndim != 1 or not {"head", "data"} <= set(names) or \
            not set(acquisition_header_dtype.names) <= set(ds.dtype["head"].names or ()):
        raise DataError(f"{path}: /{GROUP}/data has dtype {ds.dtype} shape {ds.shape}; expected a 1-D table of "
                        f"ISMRMRD acquisitions (head, traj, data)")
    if ds.shape[0] == 0:
        raise DataError(f"{path}: /{GROUP}/data holds no acquisitions")
    xml = g["xml"]
    if xml.size != 1:
        raise DataError(f"{path}: /{GROUP}/xml has shape {xml.shape}; expected one XML document")
    text = xml[()]
    text = text.reshape(-1)[0] if isinstance(text, np.ndarray) else text
    return ds, text


def heads_from_chunks(ds: h5py.Dataset) -> Optional[np.ndarray]:
    """The ``head`` member of every record from the raw chunks (no type conversion), where the file stores the
    ISMRMRD header layout unfiltered and chunked; None otherwise. HDF5 converts compound records with
    variable-length members one by one (about 0.1 ms each); the raw chunks hold them as written."""
    if ds.chunks is None or ds.id.get_create_plist().get_nfilters() or ds.dtype["head"] != acquisition_header_dtype:
        return None
    ftype = ds.id.get_type()
    if ftype.get_member_index(b"head") != 0 or ftype.get_member_offset(0) != 0:
        return None
    n, rows, size = ds.shape[0], ds.chunks[0], ftype.get_size()
    record = np.dtype({"names": ["head"], "formats": [acquisition_header_dtype], "offsets": [0], "itemsize": size})
    out = np.empty(n, acquisition_header_dtype)
    try:
        for start in range(0, n, rows):
            count = min(rows, n - start)
            raw = ds.id.read_direct_chunk((start,))[1]
            if len(raw) < count * size:
                return None
            out[start:start + count] = np.frombuffer(raw, dtype=record, count=count)["head"]
    except (OSError, KeyError, RuntimeError, ValueError):
        return None
    if ds.fields("head")[0:1].tobytes() != out[:1].tobytes():
        return None
    return out


def read_heads(ds: h5py.Dataset, path) -> np.ndarray:
    memory.check_allocation(memory.nbytes(ds.shape, 3 * acquisition_header_dtype.itemsize),
                            f"{path}: the headers of {ds.shape[0]} acquisitions")
    heads = heads_from_chunks(ds)
    if heads is None:
        heads = np.asarray(ds.fields("head")[:]).astype(acquisition_header_dtype)
    return heads


def read_payload(ds: h5py.Dataset, rows: np.ndarray, heads: np.ndarray, field: str, path) -> list:
    """The ``field`` ('data' or 'traj') arrays of ``rows`` (increasing), checked against their declared sizes."""
    if len(rows) == 0:
        return []
    values = ds.fields(field)[rows] if len(rows) > 1 else [ds.fields(field)[int(rows[0])]]
    h = heads[rows]
    n = h["number_of_samples"].astype(np.int64)
    expected = 2 * h["active_channels"].astype(np.int64) * n if field == "data" else \
        h["trajectory_dimensions"].astype(np.int64) * n
    rule = "2 x active_channels" if field == "data" else "trajectory_dimensions"
    for r, v, e in zip(rows, values, expected):
        if np.size(v) != e:
            raise DataError(f"{path}: acquisition {r} holds {np.size(v)} '{field}' values; its header declares "
                            f"{e} ({rule} x number_of_samples)")
    return list(values)


def complex_rows(values: list, heads: np.ndarray) -> np.ndarray:
    """Sample arrays of equal shape as one (n, C, N) complex64 array."""
    c, n = int(heads["active_channels"][0]), int(heads["number_of_samples"][0])
    return np.stack([np.asarray(v, dtype=np.float32) for v in values]).view(np.complex64).reshape(-1, c, n)

class MRDFile:
    """What both kinds of MRD volume share: the header, the acquisition table, selection and prewhitening."""

    def __init__(self, path, *, encoding: int = 0, contrast: int = 0, repetition: int = 0, phase: int = 0,
                 set: int = 0, prewhiten: bool = True, noise=None):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, expected an ISMRMRD/MRD .h5 file")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path}: not an HDF5 file (truncated, or not ISMRMRD/MRD)")
        with self._open() as f:
            ds, xml = acquisition_table(f, self.path)
            self.mrd: MRDHeader = parse_header(xml, encoding, source=self.path)
            self.heads = read_heads(ds, self.path)
        self.selection = {"contrast": contrast, "repetition": repetition, "phase": phase, "set": set}
        self._classify()
        self.prewhitener = self._noise(noise) if prewhiten else None
        if prewhiten and self.prewhitener is None:
            warnings.warn(f"{self.path}: no noise acquisitions (ACQ_IS_NOISE_MEASUREMENT); the data are not "
                          f"prewhitened", stacklevel=3)

    def _open(self):
        return open_readonly(self.path)

    # ---------------------------------------------------------------- classification
    def _classify(self) -> None:
        h, enc = self.heads, self.mrd.encoding
        flags = h["flags"]
        noise = has_flag(flags, K.ACQ_IS_NOISE_MEASUREMENT)
        skipped = np.zeros(len(h), bool)
        self.skipped = {}
        for flag, name in SKIPPED.items():
            hit = has_flag(flags, flag) & ~noise & ~skipped
            if hit.any():
                self.skipped[name] = int(hit.sum())
            skipped |= hit
        calibration = has_flag(flags, K.ACQ_IS_PARALLEL_CALIBRATION) & \
            ~has_flag(flags, K.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) & ~noise & ~skipped
        imaging = ~noise & ~skipped & ~calibration & (h["encoding_space_ref"] == enc)
        self.noise_rows = np.flatnonzero(noise)
        self.n_other_encodings = int((~noise & ~skipped & ~calibration & (h["encoding_space_ref"] != enc)).sum())
        if not imaging.any():
            raise DataError(f"{self.path}: no imaging acquisitions for encoding {enc} (the file has "
                            f"{len(self.noise_rows)} noise, {int(calibration.sum())} calibration and "
                            f"{int(skipped.sum())} skipped readouts)")
        keep = imaging.copy()
        for name, value in self.selection.items():
            present = np.unique(h["idx"][name][imaging])
            if value not in present:
                raise DataError(f"{self.path}: {name} {value} is not in the file; its imaging acquisitions have "
                                f"{name} {present.tolist()}")
            keep &= h["idx"][name] == value
        self.available = {name: np.unique(h["idx"][name][imaging]).tolist() for name in SELECTORS}
        cal = calibration & (h["idx"]["contrast"] == self.selection["contrast"]) & (h["encoding_space_ref"] == enc)
        self.slice_counters = np.unique(h["idx"]["slice"][keep])
        sl = h["idx"]["slice"]
        self.imaging_rows = {int(s): np.flatnonzero(keep & (sl == s)) for s in self.slice_counters}
        self.calibration_rows = {int(s): np.flatnonzero(cal & (sl == s)) for s in self.slice_counters}
        self.n_calibration = int(sum(len(r) for r in self.calibration_rows.values()))
        used = np.concatenate(list(self.imaging_rows.values()) + list(self.calibration_rows.values()))
        channels = np.unique(h["active_channels"][used])
        if len(channels) != 1 or channels[0] < 1:
            raise DataError(f"{self.path}: active_channels differ between acquisitions ({channels.tolist()}); "
                            f"expected one channel count")
        self.channels = int(channels[0])
        self._check_dimensions(used)
        dwell = h["sample_time_us"][self.imaging_rows[int(self.slice_counters[0])]]
        self.dwell_us = float(dwell[0]) if len(dwell) else 0.0

    def _check_dimensions(self, used: np.ndarray) -> None:
        step2 = self.heads["idx"]["kspace_encode_step_2"][used]
        lim = self.mrd.limit("kspace_encoding_step_2")
        if step2.max() > 0 or (lim is not None and lim.maximum > 0):
            top = max(int(step2.max()), lim.maximum if lim else 0)
            raise DataError(f"{self.path}: kspace_encode_step_2 runs to {top} (encodedSpace matrixSize z = "
                            f"{self.mrd.encoded_matrix[2]}): a 3-D acquisition; expected 2-D (multi-slice) data with "
                            f"kspace_encode_step_2 = 0")

    # ---------------------------------------------------------------- noise
    def _noise(self, noise) -> Optional[Prewhitener]:
        if noise is None:
            path, heads, rows = self.path, self.heads, self.noise_rows
        else:
            path = Path(noise)
            if not path.is_file() or not h5py.is_hdf5(path):
                raise DataError(f"{path}: the noise file is not an HDF5 file")
            with open_readonly(path) as f:
                ds, _ = acquisition_table(f, path)
                heads = read_heads(ds, path)
            rows = np.flatnonzero(has_flag(heads["flags"], K.ACQ_IS_NOISE_MEASUREMENT))
            if not len(rows):
                raise DataError(f"{path}: the noise file holds no noise acquisitions (ACQ_IS_NOISE_MEASUREMENT)")
        if not len(rows):
            return None
        ch = np.unique(heads["active_channels"][rows])
        if len(ch) != 1 or int(ch[0]) != self.channels:
            raise DataError(f"{path}: the noise acquisitions have active_channels {ch.tolist()}; the imaging data "
                            f"have {self.channels}")
        memory.check_allocation(memory.nbytes((int(heads["number_of_samples"][rows].astype(np.int64).sum()),
                                               self.channels), 24), f"{path}: the noise acquisitions")
        with open_readonly(path) as f:
            values = read_payload(f[GROUP]["data"], rows, heads, "data", path)
        samples = np.concatenate([np.asarray(v, np.float32).view(np.complex64).reshape(self.channels, -1)
                                  for v in values], axis=1)
        return Prewhitener.from_noise(samples, float(heads["sample_time_us"][rows[0]]), self.dwell_us,
                                      self.mrd.noise_bandwidth, where=f"{path}: the noise acquisitions")

    @property
    def prewhitened(self) -> bool:
        return self.prewhitener is not None

    @property
    def whitening_inverse(self) -> Optional[torch.Tensor]:
        """W^{-1} (C, C) of the prewhitened data (None when not prewhitened), for coil maps that keep the
        unwhitened intensity (``prewhiten.intensity_preserving_maps``)."""
        if self.prewhitener is None:
            return None
        return torch.from_numpy(np.asarray(self.prewhitener.inverse(), dtype=np.complex64))

    # ---------------------------------------------------------------- shared reading
    @property
    def num_slices(self) -> int:
        return len(self.slice_counters)

    @property
    def num_coils(self) -> int:
        return self.channels

    @property
    def has_target(self) -> bool:
        return False

    target_key = None
    is_multicoil = True

    def __len__(self) -> int:
        return self.num_slices

    def target(self, idx):
        """None: raw data carry no reference image."""
        self._rows(idx)
        return None

    def _index(self, i) -> int:
        rows, single = self._rows(i)
        if not single:
            raise TypeError(f"a slice index must be an int, got {type(i).__name__}")
        return rows[0]

    def _rows(self, idx) -> tuple[range, bool]:
        return slice_rows(self.path, self.num_slices, idx)

    def _whiten(self, data: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.prewhitener is None:
            return data
        return self.prewhitener.apply(data, self.heads["sample_time_us"][rows].astype(np.float64))

    @property
    def attrs(self) -> dict:
        info = self.mrd.info
        a = {"acquisition": info.get("protocolName") or info.get("seriesDescription") or "unknown",
             "source_format": "ISMRMRD", "prewhitened": self.prewhitened,
             "mrd_slices": [int(s) for s in self.slice_counters], **{k: int(v) for k, v in self.selection.items()}}
        if "patientID" in info:
            a["patient_id"] = info["patientID"]
        if self.noise_std is not None:
            a["noise_std"] = self.noise_std
        return a

    def image_geometry(self, slices=None) -> ImageGeometry:
        """The geometry (``recon.data.image_geometry``) of the reconstructed images of ``slices`` (default all):
        pixel spacing = encoded field of view / encoded matrix (readout, phase), slice thickness = the recon (else
        encoded) field of view z, axes = read_dir and phase_dir and centres = position of each slice's first
        imaging readout (LPS). Without field of view 1 mm pixels; without valid directions axial slices; without
        distinct positions the slices one thickness apart along the normal; ``source`` says which."""
        idx = list(range(self.num_slices)) if slices is None else [int(i) % self.num_slices for i in slices]
        mrd, notes = self.mrd, []
        if mrd.encoded_fov is not None:
            spacing = (mrd.encoded_fov[0] / mrd.encoded_matrix[0], mrd.encoded_fov[1] / mrd.encoded_matrix[1])
        else:
            spacing, _ = (1.0, 1.0), notes.append("no encodedSpace fieldOfView_mm: 1 mm pixels")
        thickness = next((f[2] for f in (mrd.recon_fov, mrd.encoded_fov) if f is not None and f[2]), None)
        if thickness is None:
            thickness, _ = 1.0, notes.append("no fieldOfView_mm z: 1 mm slices")
        first = [self.heads[self.imaging_rows[int(self.slice_counters[i])][0]] for i in range(self.num_slices)]
        read, ph = first[0]["read_dir"].astype(np.float64), first[0]["phase_dir"].astype(np.float64)
        if not valid_directions(read, ph):
            read, ph = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
            notes.append("no valid read_dir/phase_dir: axial")
        centers = np.stack([h["position"].astype(np.float64) for h in first])
        if self.num_slices > 1 and np.ptp(centers, axis=0).max() < 1e-6:
            centers = centers[0] + np.arange(self.num_slices)[:, None] * thickness * np.cross(read, ph)
            notes.append("no distinct slice positions: slices one thickness apart")
        geo = ImageGeometry(tuple(float(s) for s in spacing), tuple(read.tolist()), tuple(ph.tolist()),
                            tuple(tuple(c.tolist()) for c in centers), float(thickness), True,
                            "ISMRMRD header" + ("; " + "; ".join(notes) if notes else ""))
        return geo.select(idx)


def recon_size_of(mrd: MRDHeader) -> tuple[int, int]:
    """The recon field of view in encoded pixels, (readout, phase): the header's recon matrix where its pixels are
    the encoded ones (within ``PIXEL_TOLERANCE``), else round(encoded matrix x recon FOV / encoded FOV), at most the
    encoded matrix (``recon.data.mrd_cartesian``)."""
    out = []
    for a in (0, 1):
        n_enc, n_rec = mrd.encoded_matrix[a], mrd.recon_matrix[a]
        n = n_rec
        if mrd.encoded_fov is not None and mrd.recon_fov is not None:
            ratio = (mrd.recon_fov[a] / n_rec) / (mrd.encoded_fov[a] / n_enc)
            if abs(ratio - 1) > PIXEL_TOLERANCE:
                n = round(n_enc * mrd.recon_fov[a] / mrd.encoded_fov[a])
        out.append(int(min(n_enc, max(1, n))))
    return out[0], out[1]
