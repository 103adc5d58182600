"""Clinical image outputs: DICOM series (MR, CT) and NIfTI volumes with the geometry of the raw data.

**DICOM** (PS3.3): one file per slice of an (S, H, W) stack, MR Image Storage or CT Image Storage, explicit VR
little endian, every UID from ``pydicom.uid.generate_uid`` (valid, unique) unless the raw header names the study's
or the frame of reference's own. The geometry (``recon.data.image_geometry``) gives PixelSpacing, SliceThickness,
ImagePositionPatient (pixel (0, 0) of each slice) and ImageOrientationPatient; MR images from ISMRMRD data are
stored with the readout along a DICOM row, as ISMRMRD images and Gadgetron's DICOM output are.
Pixels are unsigned 16-bit: stored = round((value - RescaleIntercept) / RescaleSlope), so the Modality LUT of any
reader (pydicom's ``apply_rescale``) gives the values back to within half a step:
- MR: the magnitude, RescaleIntercept 0 and RescaleSlope = max / 65535 (the largest value fills the stored range),
  a window (WindowCenter/WindowWidth) over the 0.5 to 99.5 percentiles, in the rescaled units;
- CT: Hounsfield units, RescaleIntercept -1024 and RescaleSlope 1 (values below -1024 HU, air, are stored as
  -1024), RescaleType HU, the soft-tissue window (WindowCenter 40, WindowWidth 400).
Maps derived from the reconstruction (posterior std, interval widths) are further series of the same study (same
StudyInstanceUID and FrameOfReferenceUID, a new SeriesInstanceUID and SeriesNumber, ImageType DERIVED\\SECONDARY);
``write_dicom_study`` gives MR maps the reconstruction's RescaleSlope so that stored values of both series share
units.

**NIfTI-1** (nibabel): the stack as float32 (i, j, k) = (axis 0, axis 1, slices ordered along the normal), the
affine of the same geometry in RAS (``ImageGeometry.ras_affine``) as both qform and sform (code 1, scanner), the
display window as cal_min / cal_max; ``.nii`` or ``.nii.gz``.

Writes are atomic: a file through ``recon.atomic.atomic_path``, a series or study folder written whole into a
temporary folder next to it and renamed into place. They never replace an input (``recon.atomic.protected``), an
existing folder is replaced only when it holds nothing but DICOM files, and images with NaN or Inf are refused.
"""
from __future__ import annotations

import datetime
import gzip
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Optional

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, UID,
                         generate_uid)

from recon.atomic import atomic_path, check_not_input, input_it_would_replace, stale_temporaries, temporary_name
from recon.atomic import write_failure

from .ct import WINDOWS
from .errors import DataError
from .image_geometry import ImageGeometry
from .mrd_header import MRDHeader

KINDS = ("mr", "ct")
STORED_MAX = 65535          # unsigned 16-bit pixels
CT_INTERCEPT = -1024.0      # air
PERCENTILES = (0.5, 99.5)   # the MR display window
_PYDICOM3 = int(pydicom.__version__.split(".")[0]) >= 3


def _date(text: Optional[str]) -> str:
    """An xs:date / DICOM DA as DA (YYYYMMDD), or ''."""
    digits = "".join(ch for ch in (text or "") if ch.isdigit())
    return digits[:8] if len(digits) >= 8 else ""


def _time(text: Optional[str]) -> str:
    digits = "".join(ch for ch in (text or "").split(".")[0] if ch.isdigit())
    return digits[:6] if len(digits) >= 4 else ""


def _uid(text: Optional[str]) -> str:
    return text if text and UID(text).is_valid else generate_uid()


def _ds(v: float) -> str:
    """A decimal string (DS, at most 16 characters)."""
    for digits in (10, 8, 6):
        s = format(float(v), f".{digits}g")
        if len(s) <= 16:
            return s
    return format(float(v), ".4g")


@dataclass(frozen=True)
class Study:
    """The patient, study, equipment and sequence attributes every series of one study shares."""

    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_name: str = "Anonymous"
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_position: str = ""
    study_date: str = field(default_factory=lambda: datetime.datetime.now().strftime("%Y%m%d"))
    study_time: str = field(default_factory=lambda: datetime.datetime.now().strftime("%H%M%S"))
    study_id: str = ""
    accession_number: str = ""
    study_description: str = ""
    referring_physician: str = ""
    body_part: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    manufacturer: str = ""
    model: str = ""
    institution: str = ""
    station: str = ""
    field_strength: Optional[float] = None
    imaging_frequency_mhz: Optional[float] = None
    repetition_time: Optional[float] = None
    echo_time: Optional[float] = None
    inversion_time: Optional[float] = None
    flip_angle: Optional[float] = None

    @classmethod
    def from_mrd(cls, mrd: MRDHeader) -> "Study":
        """The study of an ISMRMRD header: its subject, study, measurement, system and sequence fields; the
        header's studyInstanceUID and frameOfReferenceUID where they are valid UIDs, new ones otherwise."""
        i = mrd.info

        def first(name):
            v = i.get(name)
            return float(v[0]) if v else None

        def num(name):
            try:
                return float(i[name])
            except (KeyError, ValueError):
                return None

        freq = num("H1resonanceFrequency_Hz")
        return cls(study_uid=_uid(i.get("studyInstanceUID")), frame_of_reference_uid=_uid(i.get("frameOfReferenceUID")),
                   patient_name=i.get("patientName", "Anonymous"), patient_id=i.get("patientID", ""),
                   patient_birth_date=_date(i.get("patientBirthdate")),
                   patient_sex=i.get("patientGender", "") if i.get("patientGender") in ("M", "F", "O") else "",
                   patient_position=i.get("patientPosition", ""),
                   study_date=_date(i.get("studyDate")) or datetime.datetime.now().strftime("%Y%m%d"),
                   study_time=_time(i.get("studyTime")) or datetime.datetime.now().strftime("%H%M%S"),
                   study_id=i.get("studyID", ""), accession_number=str(i.get("accessionNumber", "")),
                   study_description=i.get("studyDescription", ""),
                   referring_physician=i.get("referringPhysicianName", ""), body_part=i.get("bodyPartExamined", ""),
                   protocol_name=i.get("protocolName", ""), sequence_name=i.get("sequenceName", ""),
                   manufacturer=i.get("systemVendor", ""), model=i.get("systemModel", ""),
                   institution=i.get("institutionName", ""), station=i.get("stationName", ""),
                   field_strength=num("systemFieldStrength_T"),
                   imaging_frequency_mhz=freq / 1e6 if freq else None,
                   repetition_time=first("TR"), echo_time=first("TE"), inversion_time=first("TI"),
                   flip_angle=first("flipAngle_deg"))


@dataclass(frozen=True)
class Series:
    """A written DICOM series: its folder, files, SeriesInstanceUID, study, rescale and window."""
    folder: Path
    files: tuple
    series_uid: str
    series_number: int
    study: Study
    slope: float
    intercept: float
    window: tuple


def _magnitude(images, what: str) -> np.ndarray:
    """(S, H, W) float64 of real or complex ``images`` ((H, W) is one slice); refuses NaN/Inf and empty stacks."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if np.iscomplexobj(x):
        x = np.abs(x)
    x = x.astype(np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{what}: images must be (slices, H, W) or (H, W), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: the images contain NaN or Inf; refusing to write them")
    return x


def _check_geometry(geometry: ImageGeometry, n: int, what: str) -> None:
    if not isinstance(geometry, ImageGeometry):
        raise TypeError(f"{what}: geometry must be a recon.data.image_geometry.ImageGeometry")
    if geometry.n_slices != n:
        raise ValueError(f"{what}: the geometry describes {geometry.n_slices} slices, the images have {n}")


def _rescale(x: np.ndarray, kind: str, derived: bool, slope: Optional[float]) -> tuple[float, float]:
    """(slope, intercept) that store ``x`` in 0..STORED_MAX (module docstring)."""
    intercept = CT_INTERCEPT if kind == "ct" and not derived else min(0.0, float(x.min()))
    needed = (float(x.max()) - intercept) / STORED_MAX
    if kind == "ct" and not derived:
        return max(1.0, needed), intercept
    if slope is None or slope < needed:
        slope = needed
    return (slope if slope > 0 else 1.0), intercept


def _window(x: np.ndarray, kind: str, derived: bool, slope: float) -> tuple[float, float]:
    if kind == "ct" and not derived:
        return WINDOWS["soft-tissue"]
    lo, hi = np.percentile(x, PERCENTILES)
    return (float(lo + hi) / 2, float(max(hi - lo, slope)))


@contextmanager
def atomic_folder(folder) -> Iterator[Path]:
    """A temporary folder next to ``folder``, renamed onto it when the block succeeds; an existing ``folder`` is
    replaced only when it holds nothing but DICOM files (``.dcm``), none of them a protected input."""
    folder = Path(folder)
    check_not_input(folder)
    if not folder.parent.is_dir():
        raise DataError(f"{folder}: directory {folder.parent} does not exist")
    if folder.exists():
        _check_replaceable(folder)
    for stale in stale_temporaries(folder):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = temporary_name(folder)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        try:
            yield tmp
            check_not_input(folder)
            if folder.exists():
                _check_replaceable(folder)
                old = folder.with_name(f".{folder.name}.old{os.getpid()}")
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        except (OSError, RuntimeError) as e:
            failure = write_failure(folder, e)
            if failure is None:
                raise
            raise failure from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(folder: Path) -> None:
    if not folder.is_dir():
        raise ValueError(f"refusing to write the DICOM folder {folder}: a file of that name exists")
    for p in folder.rglob("*"):
        if p.is_dir():
            continue
        if p.suffix.lower() != ".dcm":
            raise ValueError(f"refusing to replace {folder}: it holds {p.name}, not a DICOM file of an earlier "
                             f"export; choose another output folder")
        src = input_it_would_replace(p)
        if src is not None:
            raise ValueError(f"refusing to replace {folder}: it holds {p}, an input of this command")


def _save(ds: Dataset, path: Path) -> None:
    if _PYDICOM3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _base(kind: str, study: Study, series_uid: str, series_number: int, description: str, derived: bool,
          now: datetime.datetime) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage if kind == "mr" else CTImageStorage
    ds.Modality = kind.upper()
    ds.ImageType = ["DERIVED", "SECONDARY"] if derived else ["ORIGINAL", "PRIMARY"]
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = study.patient_birth_date, study.patient_sex
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study.study_uid, study.study_date, study.study_time
    ds.StudyID, ds.AccessionNumber = study.study_id, study.accession_number
    ds.ReferringPhysicianName, ds.StudyDescription = study.referring_physician, study.study_description
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study.frame_of_reference_uid, ""
    ds.PatientPosition = study.patient_position
    ds.Manufacturer, ds.ManufacturerModelName = study.manufacturer, study.model
    ds.InstitutionName, ds.StationName = study.institution, study.station
    ds.Laterality = ""
    if study.body_part:
        ds.BodyPartExamined = study.body_part
    if study.protocol_name:
        ds.ProtocolName = study.protocol_name
    if kind == "mr":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "" if study.repetition_time is None else _ds(study.repetition_time)
        ds.EchoTime = "" if study.echo_time is None else _ds(study.echo_time)
        ds.EchoTrainLength = ""
        if study.inversion_time is not None:
            ds.InversionTime = _ds(study.inversion_time)
        if study.flip_angle is not None:
            ds.FlipAngle = _ds(study.flip_angle)
        if study.field_strength is not None:
            ds.MagneticFieldStrength = _ds(study.field_strength)
        if study.imaging_frequency_mhz is not None:
            ds.ImagingFrequency = _ds(study.imaging_frequency_mhz)
        if study.sequence_name:
            ds.SequenceName = study.sequence_name[:16]
    else:
        ds.KVP = ""
        ds.RescaleType = "HU"
    return ds


def _write_series(folder: Path, x: np.ndarray, geometry: ImageGeometry, kind: str, description: str, study: Study,
                  series_number: int, slope: Optional[float], window, derived: bool) -> Series:
    """The instances of one series into the existing folder ``folder``."""
    slope, intercept = _rescale(x, kind, derived, slope)
    window = tuple(float(v) for v in window) if window is not None else _window(x, kind, derived, slope)
    series_uid, now = generate_uid(), datetime.datetime.now()
    h, w = x.shape[1:]
    if geometry.transpose:   # DICOM rows follow axis 1: a DICOM row runs along axis 0
        row_dir, col_dir, spacing = geometry.axis0, geometry.axis1, (geometry.spacing[1], geometry.spacing[0])
    else:
        row_dir, col_dir, spacing = geometry.axis1, geometry.axis0, (geometry.spacing[0], geometry.spacing[1])
    normal = np.cross(row_dir, col_dir)
    order = geometry.slice_order()
    step = float(np.linalg.norm(np.diff(np.asarray(geometry.centers)[order], axis=0), axis=1).mean()) \
        if len(order) > 1 else None
    files = []
    for k in range(x.shape[0]):
        ds = _base(kind, study, series_uid, series_number, description, derived, now)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        corner = geometry.corner(k, (h, w))
        ds.ImagePositionPatient = [_ds(v) for v in corner]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.SliceLocation = _ds(float(corner @ normal))
        ds.PixelSpacing = [_ds(v) for v in spacing]
        ds.SliceThickness = _ds(geometry.slice_thickness)
        if step:
            ds.SpacingBetweenSlices = _ds(step)
        stored = np.clip(np.rint((x[k] - intercept) / slope), 0, STORED_MAX).astype(np.uint16)
        if geometry.transpose:
            stored = stored.T
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = _ds(intercept), _ds(slope)
        ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = folder / f"IM{k + 1:04d}.dcm"
        _save(ds, path)
        files.append(path.name)
    # the stored slope is the decimal string: use what a reader will see
    return Series(folder, tuple(files), series_uid, series_number, study, float(_ds(slope)), intercept, window)


def write_dicom_series(images, folder, geometry: ImageGeometry, kind: str = "mr",
                       series_description: str = "reconstruction", study: Optional[Study] = None,
                       series_number: int = 1, slope: Optional[float] = None, window=None,
                       derived: bool = False) -> Series:
    """Write ``images`` (S, H, W) real or complex (magnitude written) as one DICOM series in ``folder`` (module
    docstring), atomically. ``study``: the study it belongs to (default a new one); ``slope``: a RescaleSlope to
    share with another series (raised where the values need more); ``window``: (center, width) in the rescaled
    units; ``derived``: a map derived from a reconstruction. Returns the ``Series``; its ``study`` is the one to
    pass to further series of the same study."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    x = _magnitude(images, f"DICOM series {folder}")
    _check_geometry(geometry, x.shape[0], f"DICOM series {folder}")
    study = study or Study()
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        s = _write_series(tmp, x, geometry, kind, series_description, study, series_number, slope, window, derived)
    return replace(s, folder=folder)


def write_dicom_study(folder, series: Mapping[str, object], geometry: ImageGeometry, kind: str = "mr",
                      study: Optional[Study] = None) -> list:
    """Write several image stacks of one study, each a series in ``folder/NN_name/`` (NN = its SeriesNumber),
    atomically as one folder: the first ``series`` entry is the reconstruction, the others are derived maps
    (posterior std, interval width) of the same study and frame of reference, MR maps with the reconstruction's
    RescaleSlope. Returns the ``Series`` in order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if not series:
        raise ValueError("write_dicom_study: no series given")
    stacks = {name: _magnitude(images, f"DICOM series {name!r}") for name, images in series.items()}
    for name, x in stacks.items():
        _check_geometry(geometry, x.shape[0], f"DICOM series {name!r}")
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError(f"series name {name!r} cannot be a folder name")
    study = study or Study()
    folder = Path(folder)
    out, slope = [], None
    with atomic_folder(folder) as tmp:
        for number, (name, x) in enumerate(stacks.items(), start=1):
            sub = tmp / f"{number:02d}_{name}"
            sub.mkdir()
            derived = number > 1
            s = _write_series(sub, x, geometry, kind, name, study, number, slope if kind == "mr" else None, None,
                              derived)
            slope = s.slope if number == 1 else slope
            out.append(s)
    return [replace(s, folder=folder / s.folder.name) for s in out]


def write_nifti(images, path, geometry: ImageGeometry, kind: str = "mr", description: str = "diffrecon") -> Path:
    """Write ``images`` (S, H, W) (magnitude of complex ones) as a NIfTI-1 volume (module docstring), atomically."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    x = _magnitude(images, f"NIfTI {path}")
    _check_geometry(geometry, x.shape[0], f"NIfTI {path}")
    order = geometry.slice_order()
    affine = geometry.ras_affine(x.shape[1:])
    data = np.ascontiguousarray(x[order].transpose(1, 2, 0).astype(np.float32))
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    lo, width = _window(x, kind, False, 0.0)
    hdr["cal_min"], hdr["cal_max"] = lo - width / 2, lo + width / 2
    hdr["descrip"] = description[:79].encode()
    raw = img.to_bytes()
    if name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    if not path.parent.is_dir():
        raise DataError(f"{path}: directory {path.parent} does not exist")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(raw)
    return path


def geometry_from_dicom(path) -> ImageGeometry:
    """The geometry of a DICOM slice or series (a file or a folder), slices in the order ``recon.data.ct
    .read_dicom`` stacks them (ImagePositionPatient z, else InstanceNumber): for writing a reconstruction of a
    DICOM input with the input's geometry (not transposed: the (H, W) arrays are DICOM rows and columns)."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    entries = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # pydicom raises several types for files that are not DICOM
            if p.is_dir():
                continue
            raise ValueError(f"{f}: not a DICOM file") from None
        if "PixelSpacing" not in ds or "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
            raise ValueError(f"{f}: PixelSpacing, ImageOrientationPatient and ImagePositionPatient are needed for "
                             f"the geometry")
        key = float(ds.ImagePositionPatient[2])
        entries.append((key, ds))
    if not entries:
        raise ValueError(f"{p}: no DICOM slices found")
    entries.sort(key=lambda e: e[0])
    ds0 = entries[0][1]
    iop = np.asarray([float(v) for v in ds0.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    spacing = (float(ds0.PixelSpacing[0]), float(ds0.PixelSpacing[1]))
    h, w = int(ds0.Rows), int(ds0.Columns)
    centers = []
    for _, ds in entries:
        corner = np.asarray([float(v) for v in ds.ImagePositionPatient])
        centers.append(tuple((corner + (h // 2) * spacing[0] * col_dir + (w // 2) * spacing[1] * row_dir).tolist()))
    thickness = float(getattr(ds0, "SliceThickness", 0) or 0) or 1.0
    return ImageGeometry(spacing, tuple(col_dir.tolist()), tuple(row_dir.tolist()), tuple(centers), thickness, False,
                         f"DICOM {p}")
