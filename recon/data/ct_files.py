"""CT input files: an HDF5 file with an ``image`` (S, H, W) in mu/mu_water or a measured ``sinogram``
(S, angles, detectors) with its ``angles`` (radians) and geometry attributes, a DICOM file or a DICOM folder (HU).

``read_input`` checks what a file declares before reading it (dataset shapes and dtypes against the memory
budget of ``recon.memory``) and what it holds after (finite values; attenuation relative to water, not HU;
angles in radians over at most one turn; line integrals within what the grid allows), each failure one error
naming the file. ``check_memory`` bounds a reconstruction's images, sinograms and projector on a grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from operators.checks import check_choice, check_real, is_finite
from operators.ct import MAX_ANGLES
from recon import memory
from recon.data.errors import DataError

MU_MIN = -1.0    # mu/mu_water below this (-2000 HU) is no tissue, air or padding: a unit mistake (HU)
MU_MAX = 100.0   # ... and above this (99000 HU; metal reaches a few tens): a unit mistake or a corrupt image
FULL_TURN = 2 * math.pi * (1 + 1e-6)  # radians: angles spanning more than a turn are degrees or a corrupt list
IMAGE_COPIES = 5     # float32 images of the grid a reconstruction holds besides its samples (result, FBP, ...)
SINOGRAM_COPIES = 4  # float32 sinograms (measured, filtered and padded for FBP, residuals)
PLAN_ARRAYS = 16     # float64/int64 working arrays of (chunk angles, detectors, grid side) the projector plans
MATRIX_BYTES = 24    # bytes per bound entry of the projector's stored matrix (M and M^T in CSR and their build)


def _dataset(f, p, key: str, ndims: tuple) -> Optional[torch.Tensor]:
    """Dataset ``key`` as a finite float tensor with one of ``ndims`` dimensions, or None when absent."""
    if key not in f:
        return None
    d = f[key]
    if not isinstance(d, h5py.Dataset) or d.dtype.kind not in "fiu" or d.ndim not in ndims:
        raise DataError(f"{p}: {key!r} must be a real array with {' or '.join(map(str, ndims))} dimensions, got "
                        f"{'a group' if not isinstance(d, h5py.Dataset) else f'shape {d.shape} dtype {d.dtype}'}")
    # as stored, as float64, and the finiteness test's booleans
    memory.check_allocation(memory.nbytes(d.shape, d.dtype.itemsize + 9),
                            f"{p}: {key!r} of shape {' x '.join(map(str, d.shape))}")
    t = torch.from_numpy(np.asarray(d[()], dtype=np.float64))
    if t.numel() == 0 or not is_finite(t):
        raise DataError(f"{p}: {key!r} is empty or contains NaN or Inf")
    return t


def _geometry(p, attrs) -> dict:
    """The geometry attributes of a sinogram file, validated."""
    geo = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    if "geometry" in geo:
        try:
            check_choice("geometry attribute", geo["geometry"], ("parallel", "fan"))
        except ValueError as e:
            raise DataError(f"{p}: {e}") from None
    for key, lo in (("source_distance", None), ("detector_distance", 0.0), ("detector_spacing", None)):
        if key in geo:
            v = geo[key].item() if isinstance(geo[key], np.generic) else geo[key]
            try:
                geo[key] = check_real(f"attribute {key}", v, minimum=lo) if lo is not None else \
                    check_real(f"attribute {key}", v, above=0.0)
            except ValueError as e:
                raise DataError(f"{p}: {e}") from None
    if "image_size" in geo:
        size = np.atleast_1d(geo["image_size"])
        if size.ndim != 1 or len(size) not in (1, 2) or size.dtype.kind not in "iu" or size.min() < 2:
            raise DataError(f"{p}: attribute image_size must be an int or (H, W) of ints >= 2, got {geo['image_size']!r}")
        geo["image_size"] = tuple(int(v) for v in size) * (2 if len(size) == 1 else 1)
    return geo


def check_attenuation(p, img: torch.Tensor, what: str = "'image'") -> None:
    """An image is attenuation relative to water (air 0, water 1, bone up to about 3, metal a few tens): refuse
    values outside [MU_MIN, MU_MAX] (HU, or a corrupt image) and an image negative everywhere."""
    lo, hi = float(img.min()), float(img.max())
    if lo < MU_MIN or hi > MU_MAX:
        raise DataError(f"{p}: {what} holds values from {lo:.4g} to {hi:.4g}; attenuation images are mu/mu_water "
                        f"(air 0, water 1, bone up to about 3), between {MU_MIN:g} and {MU_MAX:g} (an image in HU? "
                        f"mu/mu_water = 1 + HU/1000)")
    if hi < 0:
        raise DataError(f"{p}: {what} is negative everywhere (max {hi:.4g}); attenuation mu/mu_water is >= 0 "
                        f"(air 0, water 1)")


def check_angles(p, angles: torch.Tensor) -> None:
    """Projection angles are radians over at most one turn, and more than one view is more than one direction."""
    lo, hi = float(angles.min()), float(angles.max())
    if hi - lo > FULL_TURN:
        raise DataError(f"{p}: 'angles' span {lo:.4g} to {hi:.4g}, more than one turn (2 pi); they must be radians "
                        f"(degrees? multiply by pi/180)")
    if len(angles) > 1 and hi == lo:
        raise DataError(f"{p}: all {len(angles)} 'angles' are {lo:.4g} rad, one direction repeated; a sinogram's "
                        f"angles are the directions of its views in radians (e.g. 0..pi)")


def check_sinogram(p, sino: torch.Tensor, grid) -> None:
    """Line integrals of attenuation (pixel lengths): not negative everywhere, and at most MU_MAX times the
    longest path through the grid (its diagonal) in absolute value."""
    lo, hi = float(sino.min()), float(sino.max())
    bound = MU_MAX * math.hypot(*grid)
    if max(abs(lo), abs(hi)) > bound:
        raise DataError(f"{p}: 'sinogram' holds values from {lo:.4g} to {hi:.4g}; line integrals of mu/mu_water in "
                        f"pixel lengths on a {grid[0]} x {grid[1]} grid lie within +-{bound:.4g} (a sinogram in 1/cm? "
                        f"multiply by pixel_size_cm / mu_water)")
    if hi < 0:
        raise DataError(f"{p}: 'sinogram' is negative everywhere (max {hi:.4g}); line integrals of attenuation "
                        f"are >= 0")


def projector_bytes(op) -> int:
    """About the memory of the CT projector ``op`` on the CPU: its working arrays per chunk of angles (chunk x
    detectors x grid side) and, below its ``max_matrix_entries`` bound entries (2 x grid side per ray), its
    stored sparse matrix and transpose, which grow with grid side x views x detectors."""
    n_angles, n_det = op.oshape
    side = max(op.ishape[-2:])
    plan = min(op.chunk, n_angles) * n_det * side * 8 * PLAN_ARRAYS
    entries = 2 * n_angles * n_det * side
    return plan + (entries * MATRIX_BYTES if entries <= op.max_matrix_entries else 0)


def check_memory(p, op, n_slices: int, samples: int = 1) -> None:
    """The images, sinograms and projector of a reconstruction of ``n_slices`` slices with ``op`` fit the memory
    budget (``recon.memory``); one error names the file and what is too large."""
    h, w = op.ishape[-2:]
    n_angles, n_det = op.oshape
    memory.check_allocation(memory.nbytes((n_slices, h, w), 4 * (IMAGE_COPIES + 2 * samples)),
                            f"{p}: the image grid of {n_slices} x {h} x {w} pixels")
    memory.check_allocation(memory.nbytes((n_slices, n_angles, n_det), 4 * SINOGRAM_COPIES),
                            f"{p}: the sinograms of {n_slices} x {n_angles} views x {n_det} detectors")
    memory.check_allocation(projector_bytes(op), f"{p}: the projector of a {h} x {w} grid with {n_angles} views x "
                                                 f"{n_det} detectors")


def read_input(path):
    """(image or None, sinogram or None, geometry dict) from a CT HDF5 file, a DICOM file or a DICOM folder; the
    contents are checked (shapes, finiteness, the angles and geometry attributes) with errors naming the file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir() or p.suffix.lower() in (".dcm", ".ima"):
        from recon.data.ct import read_dicom
        from recon.data.phantoms import hu_to_mu
        img = read_dicom(p)
        if not is_finite(img):
            raise DataError(f"{p}: the DICOM pixel data contain NaN or Inf")
        img = hu_to_mu(img if img.dim() == 3 else img[None])
        check_attenuation(p, img, "the DICOM image (converted from HU)")
        return img, None, {}
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"{p}: not an HDF5 file ({str(e).splitlines()[0]}); expected a CT file with 'image' or "
                        f"'sinogram'") from None
    with f:
        if "image" not in f and "sinogram" not in f:
            raise DataError(f"{p}: expected a dataset 'image' (S, H, W) or 'sinogram' (S, angles, detectors); "
                            f"found {sorted(f.keys())}")
        img = _dataset(f, p, "image", (2, 3))
        sino = _dataset(f, p, "sinogram", (2, 3))
        geo = _geometry(p, f.attrs)
        if sino is not None:
            if "angles" not in f:
                raise DataError(f"{p}: a 'sinogram' needs its 'angles' dataset (radians)")
            geo["angles"] = _dataset(f, p, "angles", (1,))
    if img is not None:
        img = (img[None] if img.dim() == 2 else img).float()
        if min(img.shape[-2:]) < 2:
            raise DataError(f"{p}: 'image' slices must be at least 2 x 2, got {tuple(img.shape)}")
        check_attenuation(p, img)
    if sino is not None:
        sino = (sino[None] if sino.dim() == 2 else sino).float()
        if len(geo["angles"]) != sino.shape[-2]:
            raise DataError(f"{p}: 'angles' has {len(geo['angles'])} entries but the sinogram has "
                            f"{sino.shape[-2]} angles")
        if len(geo["angles"]) > MAX_ANGLES:
            raise DataError(f"{p}: {len(geo['angles'])} angles; at most {MAX_ANGLES} are supported")
        check_angles(p, geo["angles"])
        if img is not None and len(img) != len(sino):
            raise DataError(f"{p}: 'image' has {len(img)} slices but 'sinogram' has {len(sino)}")
    return img, sino, geo
