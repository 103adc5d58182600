"""CT data: measurement noise models and DICOM slices.

- ``gaussian_noise(sinogram, std, generator)``: p + std z.
- ``poisson_noise(sinogram, photons, generator, mu_scale=1.0)``: the photon-count model. With I0 = ``photons``
  incident photons per detector bin, the counts are N ~ Poisson(I0 exp(-mu_scale p)) and the measured line
  integral is -log(max(N, 1) / I0) / mu_scale (a bin with no photons is clipped at one count).
- ``read_dicom(path)``: a CT slice (file) or a series (folder, sorted by ImagePositionPatient / InstanceNumber)
  in Hounsfield units: stored value x RescaleSlope + RescaleIntercept. Pixels outside the scanner's
  reconstruction circle are stored as padding (the PixelPaddingValue, often -2000 or -3024 HU): they become
  air, ``AIR_HU`` = -1024, as does anything below it (nothing attenuates less than air; a negative attenuation
  would be a region no projector or prior should see). The declared size (Rows x Columns x frames, over the
  whole series) is checked against the memory budget (``recon.memory``) before any pixel data is decoded, and
  only greyscale slices are read (PhotometricInterpretation MONOCHROME1/2, one sample per pixel): a colour
  image (RGB, YBR, a palette) is refused by name.
- ``window(hu, center, width)``: the usual display window mapped to [0, 1] (e.g. soft tissue 40/400,
  lung -600/1500, bone 300/1500).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from operators.checks import check_real
from recon import memory
from recon.data.errors import DataError

AIR_HU = -1024.0  # the floor of the CT scale: air; padding and anything below it read as air
WINDOWS = {"soft-tissue": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (300.0, 1500.0), "brain": (40.0, 80.0)}


def gaussian_noise(sinogram: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    check_real("noise std", std, minimum=0.0)
    return sinogram + std * torch.randn(sinogram.shape, generator=generator, dtype=sinogram.dtype).to(sinogram.device)


def poisson_noise(sinogram: torch.Tensor, photons: float, generator: torch.Generator,
                  mu_scale: float = 1.0) -> torch.Tensor:
    check_real("photons", photons, above=0.0)
    check_real("mu_scale", mu_scale, above=0.0)
    rate = photons * torch.exp(-mu_scale * sinogram.double().cpu())
    counts = torch.poisson(rate, generator=generator)
    return (-torch.log(counts.clamp_min(1.0) / photons) / mu_scale).to(sinogram.dtype).to(sinogram.device)


def window(hu: torch.Tensor, center: float = 40.0, width: float = 400.0) -> torch.Tensor:
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return ((hu - (center - width / 2)) / width).clamp(0, 1)


GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


def _declared(f, ds) -> tuple:
    """(frames, rows, columns, bytes per stored sample) that the header of ``ds`` declares; colour refused."""
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()
    samples = getattr(ds, "SamplesPerPixel", 1)
    if photometric.upper() not in GREYSCALE or samples not in (None, 1):
        raise DataError(f"{f}: a colour DICOM image (PhotometricInterpretation {photometric}, SamplesPerPixel "
                        f"{samples}); CT slices are greyscale: MONOCHROME2 or MONOCHROME1 with one sample per pixel")
    dims = []
    for key in ("NumberOfFrames", "Rows", "Columns", "BitsAllocated"):
        v = getattr(ds, key, None)
        try:
            v = 1 if v in (None, "") and key == "NumberOfFrames" else int(v)
        except (TypeError, ValueError):
            raise DataError(f"{f}: DICOM {key} must be a positive integer, got {v!r}") from None
        if v < 1:
            raise DataError(f"{f}: DICOM {key} must be a positive integer, got {v}")
        dims.append(v)
    frames, rows, cols, bits = dims
    return frames, rows, cols, (bits + 7) // 8


def read_dicom(path) -> torch.Tensor:
    """A slice (H, W) or a series (S, H, W) in Hounsfield units, float32."""
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading DICOM needs pydicom: pip install 'diffrecon[dicom]'") from e
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    slices, total = [], 0
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as e:  # pydicom raises several types for non-DICOM input
            if p.is_dir():
                continue
            raise ValueError(f"{f}: not a DICOM file ({type(e).__name__})") from None
        if "PixelData" not in ds:
            raise ValueError(f"{f}: DICOM file without pixel data")
        frames, rows, cols, itemsize = _declared(f, ds)
        # the decoded pixels, their float32 copy and the HU image, for this file and the series so far
        total += memory.nbytes((frames, rows, cols), itemsize + 8)
        memory.check_allocation(total, f"{f}: DICOM pixel data of {frames} x {rows} x {cols}"
                                       + (" (the series up to this file)" if slices else ""))
        try:
            pixels = ds.pixel_array
        except Exception as e:  # pydicom: truncated data, an unsupported transfer syntax, a missing decoder
            raise DataError(f"{f}: the DICOM pixel data cannot be decoded ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        stored = torch.as_tensor(pixels.astype("float32"))
        hu = stored * float(getattr(ds, "RescaleSlope", 1.0) or 1.0) + float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        pad = getattr(ds, "PixelPaddingValue", None)
        if pad is not None:
            lim = getattr(ds, "PixelPaddingRangeLimit", None)
            lo, hi = (float(pad), float(pad)) if lim is None else sorted((float(pad), float(lim)))
            hu = torch.where((stored >= lo) & (stored <= hi), torch.full_like(hu, AIR_HU), hu)
        hu = hu.clamp_min(AIR_HU)
        pos = getattr(ds, "ImagePositionPatient", None)
        key = float(pos[2]) if pos is not None else float(getattr(ds, "InstanceNumber", len(slices)))
        slices.append((key, hu))
    if not slices:
        raise ValueError(f"{p}: no DICOM slices found")
    if len(slices) == 1 and not p.is_dir():
        return slices[0][1]
    slices.sort(key=lambda s: s[0])
    shapes = {tuple(s[1].shape) for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"{p}: slices of different sizes {sorted(shapes)}")
    return torch.stack([s[1] for s in slices])
