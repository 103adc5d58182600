"""``recon export RESULT.h5 --format dicom|nifti --out PATH``: a result of ``recon reconstruct``,
``recon reconstruct-ct`` or ``recon uncertainty`` as a DICOM study or a NIfTI volume (``recon.data.export``).

What is written:
- MR (``recon reconstruct``): the reconstruction |mean| (S, h, w) as series 1 and, when the result holds several
  samples, their std as series 2 of the same study; ``recon uncertainty``: the |mean| of its slice, the std and,
  with a calibration, the calibrated interval width (hi - lo), each a series of one study.
- CT (``recon reconstruct-ct``): the reconstruction in Hounsfield units (HU = 1000 (mu/mu_water - 1)), CT Image
  Storage with RescaleSlope/RescaleIntercept and the soft-tissue window; the samples' std (in HU) as series 2.
- NIfTI: the first of these (the reconstruction) as one volume with the affine of the same geometry.

The geometry comes from the raw data the result was made from (its ``source`` attribute): an ISMRMRD/MRD file's
header and acquisitions (``MRDVolume.image_geometry``: positions, directions, field of view); a fastMRI file's
ISMRMRD header (field of view and matrix: axial slices one thickness apart); a DICOM series of a CT input (its own
geometry); otherwise 1 mm pixels, axial slices at the origin, and the command says so. The pixel spacing is the
header's for images on the recon matrix; an image on another matrix over the same field of view (a prior's grid)
gets the spacing scaled by the ratio of the matrices. The outputs are written atomically, never over an input.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

from operators.checks import check_choice
from recon.data import export as dicom_nifti
from recon.data import load_fastmri, mrd
from recon.data.errors import DataError
from recon.data.image_geometry import ImageGeometry, geometry_from_header
from recon.data.phantoms import mu_to_hu

FORMATS = ("dicom", "nifti")


def _read_result(path: Path) -> tuple:
    """(modality, series {name: (S, h, w) array}, slice indices, source path or None) of a result file."""
    if not path.is_file() or not h5py.is_hdf5(path):
        raise DataError(f"{path}: not a result file (HDF5 written by recon reconstruct, reconstruct-ct or "
                        f"uncertainty)")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        modality = attrs.get("modality", "ct" if "sinogram" in f else "mr")
        modality = modality.decode() if isinstance(modality, bytes) else str(modality)
        source = attrs.get("source")
        source = Path(source.decode() if isinstance(source, bytes) else source) if source is not None else None
        if "reconstruction" in f:
            series = {"reconstruction": np.abs(f["reconstruction"][()])}
            # MR results hold (S, N, h, w) samples and always a std; CT results a std only for several samples
            several = f["samples"].shape[1] > 1 if modality == "mr" and "samples" in f else "std" in f
            if "std" in f and several:
                series["std"] = np.asarray(f["std"][()], dtype=np.float32)
            n = series["reconstruction"].shape[0]
            slices = [int(i) for i in f["slices"][()]] if "slices" in f else list(range(n))
        elif "mean" in f and "std" in f:  # recon uncertainty: one slice
            series = {"mean": np.abs(f["mean"][()])[None], "std": np.asarray(f["std"][()], np.float32)[None]}
            if "lo" in f and "hi" in f:
                series["interval_width"] = (f["hi"][()] - f["lo"][()]).astype(np.float32)[None]
            slices = [int(attrs.get("slice", 0))]
        else:
            raise DataError(f"{path}: holds neither 'reconstruction' nor 'mean'/'std'; expected a result of recon "
                            f"reconstruct, reconstruct-ct or uncertainty")
    for name, x in series.items():
        if x.ndim != 3 or not np.isfinite(x).all():
            raise DataError(f"{path}: {name!r} must be finite (slices, h, w) images, got shape {x.shape}")
    return modality, series, slices, source


def _scaled(geo: ImageGeometry, matrix, shape) -> ImageGeometry:
    """``geo`` for images of ``shape`` over the field of view of ``matrix`` (the same pixels when equal)."""
    if tuple(matrix) == tuple(shape):
        return geo
    return replace(geo, spacing=(geo.spacing[0] * matrix[0] / shape[0], geo.spacing[1] * matrix[1] / shape[1]))


def geometry_of(source, modality: str, slices, shape) -> tuple:
    """(ImageGeometry, Study or None, note) of images of ``shape`` (h, w) made from slices ``slices`` of ``source``
    (module docstring)."""
    n = len(slices)
    if source is not None and source.exists():
        if modality == "mr" and mrd.is_mrd(source):
            vol = mrd.load_mrd(source, prewhiten=False)
            geo = vol.image_geometry(slices)
            return _scaled(geo, vol.recon_size[:2], shape), dicom_nifti.Study.from_mrd(vol.mrd), geo.source
        if modality == "mr" and h5py.is_hdf5(source):
            vol = load_fastmri(source)
            if vol.header is not None and vol.header.xml:
                geo = geometry_from_header(vol.header.xml, n)
                return _scaled(geo, vol.recon_size[:2], shape), None, geo.source
        if modality == "ct" and (source.is_dir() or source.suffix.lower() in (".dcm", ".ima")):
            geo = dicom_nifti.geometry_from_dicom(source)
            return geo.select(slices), None, geo.source
    geo = ImageGeometry.default(n)
    return geo, None, geo.source


def command(result, out, fmt: str) -> int:
    """Write ``result`` as ``fmt`` at ``out`` (a folder for DICOM, a .nii/.nii.gz file for NIfTI)."""
    check_choice("--format", fmt, FORMATS)
    path, out = Path(result), Path(out)
    modality, series, slices, source = _read_result(path)
    if modality not in ("mr", "ct"):
        raise DataError(f"{path}: attribute modality must be 'mr' or 'ct', got {modality!r}")
    kind = modality
    if kind == "ct":  # mu/mu_water -> HU; a std is a difference, 1000 HU per unit
        series = {k: (mu_to_hu(torch.from_numpy(v)).numpy() if k == "reconstruction" else 1000.0 * v)
                  for k, v in series.items()}
    shape = next(iter(series.values())).shape[-2:]
    geo, study, note = geometry_of(source, modality, slices, shape)
    if fmt == "dicom":
        written = dicom_nifti.write_dicom_study(out, series, geo, kind=kind, study=study)
        print(f"wrote {out}: {len(written)} series ({', '.join(series)}), {len(slices)} slices; geometry: {note}")
    else:
        name, first = next(iter(series.items()))
        dicom_nifti.write_nifti(first, out, geo, kind=kind, description=f"diffrecon {name}")
        print(f"wrote {out}: {name}, {len(slices)} slices; geometry: {note}")
    if note.startswith("default"):
        print(f"recon: warning: {path} names no raw header with a geometry ({source}); wrote 1 mm pixels",
              file=sys.stderr)
    return 0


def result_inputs(args) -> list:
    """The files ``recon export`` reads (protected against being written): the result and its source."""
    try:
        with h5py.File(args.result, "r") as f:
            src = f.attrs.get("source")
    except (OSError, TypeError):
        src = None
    src = src.decode() if isinstance(src, bytes) else src
    return [args.result] + ([src] if src else [])

