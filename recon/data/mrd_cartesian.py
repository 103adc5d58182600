"""Cartesian 2-D MRD data as a fastMRI-like volume (``MRDVolume``).

**Placement.** Readouts are placed on the encoded grid (fastMRI's layout: k-space (C, H, W), H the readout,
encodedSpace matrixSize x, W the phase encoding, matrixSize y): column kspace_encode_step_1 + W // 2 - center
(encodingLimits kspace_encoding_step_1; fastMRI's padding), row j + H // 2 - center_sample for sample j in the
forward direction (center_sample 0 means the readout centre N // 2); samples outside [discard_pre, N -
discard_post) of the stored order are dropped. Reverse readouts (ACQ_IS_REVERSE) are stored against the readout
direction and flipped (x[::-1]) first. Readouts that land on the same samples (averages, repeated lines) are
averaged: combined = sum / count.

**Calibration.** A separate calibration block (ACQ_IS_PARALLEL_CALIBRATION) with ``calibration="merge"``
(default) fills the k-space positions the imaging readouts left empty, so that coil maps calibrate on a full
centre and the mask counts those lines as measured; ``"separate"`` keeps them out of ``kspace``
(``calibration_kspace`` returns them).

**Readout oversampling** stays in ``kspace`` (H = the encoded matrix x, 640 for a 320 recon matrix), as fastMRI's
raw files keep it, so every geometry protocol of ``recon.data.geometry`` applies unchanged: ``full-fov`` removes it
exactly (inverse FFT along the complete readout, centred crop to the recon field of view, FFT back), and
``image-crop`` and ``kspace-crop`` crop the same oversampled field of view they crop in fastMRI files. The recon
size (``recon_size``) is the recon field of view in encoded pixels: the header's recon matrix when its pixels are
the encoded ones (within 2%, fastMRI's case: 640 x 368 over 280 x 161.4 mm, recon 320 x 320 over 140 mm), else
round(encoded matrix x recon FOV / encoded FOV) (a recon matrix interpolated to finer pixels is not imitated).

**Partial Fourier** (encoding limits asymmetric about their centre; asymmetric echoes, center_sample != N // 2):
``partial_fourier="zero-fill"`` (default) leaves the missing lines out of the mask, for the reconstruction to
fill as any unmeasured sample (an asymmetric echo's missing readout samples are zeros, as Gadgetron's
AsymmetricEchoAdjustROGadget leaves them); ``"pocs"`` completes them by POCS (``recon.data.partial_fourier``) and
counts them as measured.

**Noise level.** With noise acquisitions the data are prewhitened and ``noise_std`` is the whitened level s
(``recon.data.prewhiten``) over sqrt(readouts averaged), as the root mean square over the acquired lines.
"""
from __future__ import annotations

import math
from typing import Optional

import h5py
import numpy as np
import torch
from ismrmrd import constants as K

from recon import memory

from . import partial_fourier as pf
from .errors import DataError
from .fastmri import WORKING_COPIES, FastMRIHeader
from .mrd_file import GROUP, MRDFile, complex_rows, has_flag, read_payload, recon_size_of
from .mrd_header import Limit

CALIBRATION = ("merge", "separate")
PARTIAL_FOURIER = ("zero-fill", "pocs")


class MRDVolume(MRDFile):
    """A Cartesian 2-D MRD file as a fastMRI-like volume (module docstring): ``kspace(i)`` (C, H, W) complex64,
    ``target(i)`` None, ``header`` (a ``FastMRIHeader`` with the encoded and recon sizes and the step-1 limits,
    ``xml`` the original document), ``mask`` / ``mask_of(i)``, ``noise_std``, ``image_geometry``."""

    cartesian = True  # k-space on the grid (``kspace(i)``)

    kind = "cartesian"

    def __init__(self, path, *, encoding: int = 0, contrast: int = 0, repetition: int = 0, phase: int = 0,
                 set: int = 0, prewhiten: bool = True, noise=None, calibration: str = "merge",
                 partial_fourier: str = "zero-fill"):
        if calibration not in CALIBRATION:
            raise ValueError(f"calibration must be one of {list(CALIBRATION)}, got {calibration!r}")
        if partial_fourier not in PARTIAL_FOURIER:
            raise ValueError(f"partial_fourier must be one of {list(PARTIAL_FOURIER)}, got {partial_fourier!r}")
        self.calibration, self.partial_fourier = calibration, partial_fourier
        super().__init__(path, encoding=encoding, contrast=contrast, repetition=repetition, phase=phase, set=set,
                         prewhiten=prewhiten, noise=noise)
        mrd = self.mrd
        if mrd.trajectory != "cartesian":
            raise DataError(f"{self.path}: encoding[{mrd.encoding}]/trajectory = {mrd.trajectory!r}; MRDVolume reads "
                            f"Cartesian data (load_mrd picks the non-Cartesian reader)")
        self.H, self.W = mrd.encoded_matrix[0], mrd.encoded_matrix[1]
        lim = mrd.limit("kspace_encoding_step_1") or Limit(0, self.W - 1, self.W // 2)
        self.limit = lim
        self.offset = self.W // 2 - lim.center
        where = f"encoding[{mrd.encoding}]/encodingLimits/kspace_encoding_step_1"
        if not (lim.minimum <= lim.center <= lim.maximum) or self.offset + lim.minimum < 0 or \
                self.offset + lim.maximum >= self.W:
            raise DataError(f"{self.path}: {where} (minimum {lim.minimum}, center {lim.center}, maximum "
                            f"{lim.maximum}) is inconsistent with encodedSpace matrixSize y = {self.W}: expected "
                            f"minimum <= center <= maximum with lines minimum..maximum inside the {self.W} columns "
                            f"when the centre line is column {self.W // 2}")
        for rows in (*self.imaging_rows.values(), *self.calibration_rows.values()):
            step = self.heads["idx"]["kspace_encode_step_1"][rows]
            bad = rows[(step < lim.minimum) | (step > lim.maximum)]
            if len(bad):
                raise DataError(f"{self.path}: acquisition {int(bad[0])} has kspace_encode_step_1 = "
                                f"{int(self.heads['idx']['kspace_encode_step_1'][bad[0]])}, outside {where} "
                                f"[{lim.minimum}, {lim.maximum}]")
        self._check_readouts()
        rh, rw = recon_size_of(mrd)
        self.shape = (self.num_slices, self.channels, self.H, self.W)
        self.encoding_size = (self.H, self.W, 1)
        self.recon_size = (rh, rw, 1)
        self.header = FastMRIHeader(self.encoding_size, self.recon_size, (lim.center, lim.maximum), mrd.xml, True)
        self._masks = [self._line_mask(i) for i in range(self.num_slices)]
        inside = np.zeros(self.W, bool)
        inside[self.offset + lim.minimum:self.offset + lim.maximum + 1] = True
        self.prospective = any((m != inside).any() for m in self._masks)

    # ---------------------------------------------------------------- geometry of the readouts
    def _readout_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first grid row, first kept sample, end of kept samples) of each readout, forward order."""
        h = self.heads[rows]
        n = h["number_of_samples"].astype(np.int64)
        c = h["center_sample"].astype(np.int64)
        c = np.where(c == 0, n // 2, c)
        rev = has_flag(h["flags"], K.ACQ_IS_REVERSE)
        pre, post = h["discard_pre"].astype(np.int64), h["discard_post"].astype(np.int64)
        lo = np.where(rev, post, pre)
        hi = n - np.where(rev, pre, post)
        return self.H // 2 - c, lo, hi

    def _check_readouts(self) -> None:
        for rows in (*self.imaging_rows.values(), *self.calibration_rows.values()):
            if not len(rows):
                continue
            start, lo, hi = self._readout_rows(rows)
            bad = np.flatnonzero((hi <= lo) | (start + lo < 0) | (start + hi > self.H))
            if len(bad):
                r = int(rows[bad[0]])
                h = self.heads[r]
                raise DataError(f"{self.path}: acquisition {r} (number_of_samples {h['number_of_samples']}, "
                                f"center_sample {h['center_sample']}, discard_pre {h['discard_pre']}, discard_post "
                                f"{h['discard_post']}) does not fit the encodedSpace matrixSize x = {self.H} with its "
                                f"centre sample at row {self.H // 2}")

    def _line_mask(self, i: int) -> np.ndarray:
        s = int(self.slice_counters[i])
        rows = self.imaging_rows[s]
        if self.calibration == "merge":
            rows = np.concatenate([rows, self.calibration_rows[s]])
        m = np.zeros(self.W, bool)
        m[self.heads["idx"]["kspace_encode_step_1"][rows].astype(np.int64) + self.offset] = True
        return m

    # ---------------------------------------------------------------- memory
    def _payload_bytes(self, i: int) -> int:
        s = int(self.slice_counters[i])
        rows = np.concatenate([self.imaging_rows[s], self.calibration_rows[s]])
        h = self.heads[rows]
        return int((h["active_channels"].astype(np.int64) * h["number_of_samples"].astype(np.int64)).sum()) * 8

    @property
    def slice_nbytes(self) -> int:
        return memory.nbytes(self.shape[1:], 8)

    def memory_needed(self, slices: int = 1) -> int:
        """Bytes to read ``slices`` slices (the samples as stored, stacked, whitened and placed, and the grids) and
        reconstruct one (``WORKING_COPIES`` of a slice, as for fastMRI files)."""
        per = 4 * max(self._payload_bytes(i) for i in range(self.num_slices)) + 4 * self.slice_nbytes
        return slices * per + WORKING_COPIES * self.slice_nbytes

    def check_memory(self, slices: int = 1) -> None:
        c, h, w = self.shape[1:]
        memory.check_allocation(self.memory_needed(slices),
                                f"{self.path}: reading {slices} slice{'s' if slices != 1 else ''} of {c} coils x "
                                f"{h} x {w} from ISMRMRD acquisitions and reconstructing one")

    # ---------------------------------------------------------------- reading
    @property
    def mask(self) -> Optional[torch.Tensor]:
        """(1, W) the acquired lines (prospective data), or None when every slice has every line of the encoding
        limits (fully sampled: retrospective undersampling applies, as for fastMRI's training files). Raises
        DataError when slices differ in their lines (use ``mask_of``)."""
        if not self.prospective:
            return None
        if any((m != self._masks[0]).any() for m in self._masks[1:]):
            raise DataError(f"{self.path}: the slices were acquired with different phase-encode lines; use "
                            f"mask_of(slice)")
        return self.mask_of(0)

    def mask_of(self, i: int) -> torch.Tensor:
        """(1, W) float: the lines slice ``i`` holds (imaging, and calibration lines when merged; after POCS the
        completed partial Fourier lines too)."""
        m = torch.from_numpy(self._masks[self._index(i)].copy())[None]
        if self.partial_fourier == "pocs":
            m = m | pf.mirrored(m)
        return m.float()

    @property
    def line_counts(self) -> list:
        """Per slice, (W,) how many readouts were averaged into each line: the imaging readouts, and the
        calibration readouts where they fill a line the imaging readouts left empty (``calibration="merge"``)."""
        out = []
        for s in self.slice_counters:
            def count(rows):
                step = self.heads["idx"]["kspace_encode_step_1"][rows].astype(np.int64) + self.offset
                return np.bincount(step, minlength=self.W)
            c = count(self.imaging_rows[int(s)])
            if self.calibration == "merge":
                c = np.where(c == 0, count(self.calibration_rows[int(s)]), c)
            out.append(c)
        return out

    @property
    def noise_std(self) -> Optional[float]:
        """Noise std per complex sample of ``kspace`` (prewhitened data; None without noise acquisitions): the
        whitened level s divided by sqrt(readouts averaged), as the root mean square over the acquired lines."""
        if self.prewhitener is None:
            return None
        inv = [1.0 / c[c > 0] for c in self.line_counts]
        return float(self.prewhitener.noise_std * math.sqrt(np.concatenate(inv).mean()))

    def _accumulate(self, f: h5py.File, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums (W, C, H) and counts (W, H) of the readouts ``rows`` placed on the grid."""
        sums = np.zeros((self.W, self.channels, self.H), dtype=np.complex64)
        counts = np.zeros((self.W, self.H), dtype=np.float32)
        if not len(rows):
            return sums, counts
        values = read_payload(f[GROUP]["data"], rows, self.heads, "data", self.path)
        h = self.heads[rows]
        start, lo, hi = self._readout_rows(rows)
        rev = has_flag(h["flags"], K.ACQ_IS_REVERSE)
        n = h["number_of_samples"].astype(np.int64)
        cols = h["idx"]["kspace_encode_step_1"].astype(np.int64) + self.offset
        keys = np.stack([n, start, lo, hi, rev.astype(np.int64)], axis=1)
        for key in np.unique(keys, axis=0):
            sel = np.flatnonzero((keys == key).all(axis=1))
            _, st, a, b, r = (int(v) for v in key)
            d = self._whiten(complex_rows([values[j] for j in sel], h[sel]), rows[sel])
            if r:
                d = d[..., ::-1]
            order = np.argsort(cols[sel], kind="stable")           # readouts of one line summed, then added
            line, first = np.unique(cols[sel][order], return_index=True)
            summed = np.add.reduceat(d[order][..., a:b], first, axis=0)
            sums[line, :, st + a:st + b] += summed
            counts[line, st + a:st + b] += np.diff(np.append(first, len(sel)))[:, None]
        return sums, counts

    def _slice(self, f: h5py.File, i: int) -> torch.Tensor:
        s = int(self.slice_counters[i])
        sums, counts = self._accumulate(f, self.imaging_rows[s])
        if self.calibration == "merge" and len(self.calibration_rows[s]):
            cs, cc = self._accumulate(f, self.calibration_rows[s])
            empty = counts == 0
            sums = np.where(empty[:, None], cs, sums)
            counts = np.where(empty, cc, counts)
        sums /= np.maximum(counts, 1)[:, None]
        k = torch.from_numpy(np.ascontiguousarray(sums.transpose(1, 2, 0)))       # (C, H, W)
        if self.partial_fourier == "pocs":
            acquired = torch.from_numpy(counts > 0).T
            cols = np.flatnonzero(self._masks[i])
            if len(cols) and not self._masks[i][cols[0]:cols[-1] + 1].all():
                raise DataError(f"{self.path}: partial_fourier='pocs' needs the acquired phase-encode lines of slice "
                                f"{i} to be contiguous (not undersampled); use partial_fourier='zero-fill'")
            k, _ = pf.pocs(k, acquired)
        return k

    def kspace(self, idx) -> torch.Tensor:
        """k-space of slice ``idx``: complex64 (C, H, W) for an int, (S, C, H, W) for a slice or range
        (prewhitened where the file has noise acquisitions; readout oversampling kept, as in fastMRI files)."""
        rows, single = self._rows(idx)
        self.check_memory(len(rows))
        with self._open() as f:
            out = [self._slice(f, i) for i in rows]
        bad = [i for i, x in zip(rows, out) if not torch.isfinite(torch.view_as_real(x)).all()]
        if bad:
            raise DataError(f"{self.path}: the samples of slice(s) {bad} contain NaN or Inf")
        if single:
            return out[0]
        return torch.stack(out) if out else torch.zeros(0, *self.shape[1:], dtype=torch.complex64)

    def calibration_kspace(self, i: int) -> Optional[torch.Tensor]:
        """(C, H, W) the separate calibration readouts of slice ``i`` alone (prewhitened, averaged), or None."""
        i = self._index(i)
        rows = self.calibration_rows[int(self.slice_counters[i])]
        if not len(rows):
            return None
        with self._open() as f:
            sums, counts = self._accumulate(f, rows)
        return torch.from_numpy(np.ascontiguousarray((sums / np.maximum(counts, 1)[:, None]).transpose(1, 2, 0)))

    def __repr__(self) -> str:
        return (f"MRDVolume({str(self.path)!r}, shape={tuple(self.shape)}, recon={self.recon_size[:2]}, "
                f"prewhitened={self.prewhitened}, prospective={self.prospective})")
