"""ISMRMRD / MRD raw data in: ``load_mrd``, ``is_mrd``, ``describe`` and ``convert``.

An ISMRMRD/MRD file (HDF5, ``/dataset/xml`` and ``/dataset/data``: Inati et al., MRM 2017) is what scanner
converters (siemens_to_ismrmrd, ge_to_ismrmrd, the Bruker and Philips ones) and the ``ismrmrd`` Python package
write. It is read with the ``ismrmrd`` package's definitions of that layout (``recon.data.mrd_file``); mrd-python
(MRD v2) reads a different, streamed binary format and not these files.

``load_mrd(path)`` opens it lazily as the volume its encoding calls for:
- Cartesian: ``recon.data.mrd_cartesian.MRDVolume``, with the interface of the fastMRI volume (``kspace(i)``
  (C, H, W) complex64 with readout oversampling kept, ``target(i)`` None, ``header``, ``mask``/``mask_of(i)``,
  ``recon_size``, ``encoding_size``, ``attrs``, ``num_slices``) plus ``noise_std`` and ``image_geometry()``;
- radial, golden-angle, spiral, other: ``recon.data.mrd_noncartesian.MRDNonCartesianVolume``, with the interface
  of ``noncartesian_io.NonCartesianVolume``.
Both are prewhitened from the file's noise acquisitions (``recon.data.prewhiten``). EPI is refused by name (ramp
sampling regridding and Nyquist ghost correction are not done here).

``convert(src, dst)`` writes the layouts the toolkit reads: fastMRI's for Cartesian data, ``noncartesian_io``'s
for the rest.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from operators.fft import ifft2c
from recon.atomic import atomic_path

from . import noncartesian_io
from .coils import center_crop, rss
from .errors import DataError
from .fastmri import open_readonly
from .mrd_cartesian import MRDVolume
from .mrd_file import GROUP, acquisition_table
from .mrd_header import parse_header
from .mrd_noncartesian import MRDNonCartesianVolume

__all__ = ["MRDNonCartesianVolume", "MRDVolume", "convert", "describe", "is_mrd", "load_mrd"]


def is_mrd(path) -> bool:
    """Whether ``path`` is an HDF5 file with an ISMRMRD acquisition table (``/dataset/data`` with ``head`` and
    ``data`` members, and ``/dataset/xml``)."""
    try:
        if not Path(path).is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            g = f.get(GROUP)
            ds = g.get("data") if isinstance(g, h5py.Group) else None
            return isinstance(ds, h5py.Dataset) and isinstance(g.get("xml"), h5py.Dataset) and \
                {"head", "data"} <= set(ds.dtype.names or ())
    except OSError:
        return False


def load_mrd(path, **options):
    """Open an ISMRMRD/MRD file lazily: an ``MRDVolume`` (Cartesian) or ``MRDNonCartesianVolume`` (radial, spiral,
    other trajectories), by the header's encoding trajectory.

    options: ``encoding`` (0), ``contrast``, ``repetition``, ``phase``, ``set`` (0: the values read), ``prewhiten``
    (True: from the file's noise acquisitions, or those of ``noise``, the path of a separate MRD noise file),
    Cartesian only: ``calibration`` ("merge" | "separate"), ``partial_fourier`` ("zero-fill" | "pocs").
    Bad files raise DataError (a ValueError) naming the file and the field."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return MRDVolume(path, **options)  # the same checks, the same errors
    with open_readonly(path) as f:
        _, xml = acquisition_table(f, path)
    mrd = parse_header(xml, options.get("encoding", 0), source=path)
    if mrd.trajectory == "epi":
        raise DataError(f"{path}: encoding[{mrd.encoding}]/trajectory = 'epi': EPI needs ramp-sampling regridding "
                        f"and Nyquist ghost correction, which this reader does not do; expected cartesian, radial, "
                        f"goldenangle, spiral or other")
    if mrd.trajectory == "cartesian":
        return MRDVolume(path, **options)
    for key in ("calibration", "partial_fourier"):
        if key in options:
            raise ValueError(f"{key} applies to Cartesian data; {path} is {mrd.trajectory}")
    return MRDNonCartesianVolume(path, **options)


def describe(path, **options) -> str:
    """What an MRD file holds, for ``recon info``: encoding, sizes, slices, selections, flags, noise."""
    vol = load_mrd(path, **options)
    mrd = vol.mrd
    ident = f" ({mrd.trajectory_identifier})" if mrd.trajectory_identifier else ""
    lines = [f"file:          {vol.path} (ISMRMRD/MRD)",
             f"trajectory:    {mrd.trajectory}{ident}",
             f"encoded:       matrix {mrd.encoded_matrix}, field of view {mrd.encoded_fov or 'not given'} mm",
             f"recon:         matrix {mrd.recon_matrix}, field of view {mrd.recon_fov or 'not given'} mm; "
             f"crop {vol.recon_size[:2]} in encoded pixels",
             f"acquisitions:  {len(vol.heads)} ({len(vol.noise_rows)} noise, {vol.n_calibration} separate calibration, "
             f"skipped: {vol.skipped or 'none'}" + (f", {vol.n_other_encodings} of other encodings" if
                                                    vol.n_other_encodings else "") + ")",
             f"slices:        {vol.num_slices} x {vol.num_coils} coils; available {vol.available}, read "
             f"{vol.selection}"]
    if isinstance(vol, MRDVolume):
        lim = vol.limit
        counts = np.concatenate(vol.line_counts)
        lines += [f"k-space:       {vol.shape[2]} x {vol.shape[3]} per coil (readout oversampling kept), "
                  f"kspace_encoding_step_1 {lim.minimum}..{lim.maximum} centre {lim.center}",
                  f"lines:         {'prospective (undersampled)' if vol.prospective else 'fully sampled'}, "
                  f"averages {int(counts[counts > 0].min())}..{int(counts.max())} per line"]
    else:
        lines.append(f"readouts:      {vol.shape[2]} x {vol.shape[3]} samples per slice ({vol.family}), "
                     f"density weights {'given' if vol.density is not None else 'not given'}")
    noise = vol.prewhitener.describe() if vol.prewhitener else "no noise acquisitions"
    state = f"prewhitened, noise std {vol.noise_std:.4g}" if vol.prewhitened else "not prewhitened"
    lines.append(f"noise:         {noise}; {state}")
    return "\n".join(lines)


def convert(src, dst, target: bool = True, **options) -> Path:
    """Write an MRD file as the toolkit reads raw data: Cartesian data in fastMRI's layout (``kspace`` (S, C, H, W)
    prewhitened, readout oversampling kept; ``mask`` (W,) for prospective data; ``ismrmrd_header`` with the encoded
    and recon sizes and limits of ``MRDVolume.header`` written into the original XML; ``reconstruction_rss`` (RSS of
    the fully sampled coil images cropped to the recon size, fastMRI's target) when the data are fully sampled and
    ``target``; for prewhitened data ``prewhitening_inverse`` (C, C), the inverse whitener W^{-1} that
    ``prewhiten.intensity_preserving_maps`` takes, the target being the RSS of the unwhitened coil images W^{-1} x_c
    (the intensity profile of the unwhitened data, which those maps reproduce); attributes ``acquisition``,
    ``patient_id``, ``max``, ``prewhitened``, ``noise_std``, ...), non-Cartesian data in
    ``recon.data.noncartesian_io``'s layout. Slice by slice, atomically (``recon.atomic``), never onto ``src``."""
    src, dst = Path(src), Path(dst)
    vol = load_mrd(src, **options)
    if dst.exists() and os.path.samefile(src, dst):
        raise ValueError(f"refusing to write {dst}: it is the input file {src}; choose another output path")
    if not dst.parent.is_dir():
        raise DataError(f"{dst}: directory {dst.parent} does not exist")
    if isinstance(vol, MRDNonCartesianVolume):
        data = torch.stack([vol.samples(i).reshape(vol.num_coils, *vol.shape[2:]) for i in range(vol.num_slices)])
        attrs = {k: v for k, v in vol.attrs.items() if not isinstance(v, (list, bool))}
        attrs.update(prewhitened=int(vol.prewhitened), mrd_slices=np.asarray(vol.attrs["mrd_slices"]))
        return noncartesian_io.write_noncartesian(dst, data, vol.trajectory, vol.matrix, density=vol.density,
                                                  family=vol.family, attrs=attrs)
    mask = vol.mask
    vol.check_memory(1)
    attrs = dict(vol.attrs)
    attrs.update(prewhitened=int(vol.prewhitened), mrd_slices=np.asarray(attrs["mrd_slices"], dtype=np.int64))
    h, w = vol.recon_size[:2]
    winv = torch.from_numpy(vol.prewhitener.inverse().astype(np.complex64)) if vol.prewhitened else None
    with atomic_path(dst) as tmp:
        with h5py.File(tmp, "w") as f:
            ks = f.create_dataset("kspace", shape=vol.shape, dtype=np.complex64, chunks=(1, *vol.shape[1:]))
            rec = f.create_dataset("reconstruction_rss", shape=(vol.num_slices, h, w), dtype=np.float32) \
                if target and mask is None else None
            for i in range(vol.num_slices):
                k = vol.kspace(i)
                ks[i] = k.numpy()
                if rec is not None:
                    coils = ifft2c(k) if winv is None else torch.einsum("ij,jhw->ihw", winv, ifft2c(k))
                    rec[i] = center_crop(rss(coils), (h, w)).numpy()
            if rec is not None:
                attrs["max"] = float(np.max(rec[()]))
            if mask is not None:
                f.create_dataset("mask", data=mask.numpy().reshape(-1).astype(np.float32))
            if winv is not None:
                f.create_dataset("prewhitening_inverse", data=winv.numpy())
            f.create_dataset("ismrmrd_header", data=vol.header.to_xml())
            for key, value in attrs.items():
                f.attrs[key] = value
    return dst
