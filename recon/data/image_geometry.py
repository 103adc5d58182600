"""Where the pixels of a stack of 2-D images are in the patient: the geometry DICOM and NIfTI outputs carry.

Coordinates are the patient coordinate system of DICOM (PS3.3 C.7.6.2.1.1), in mm: LPS, +x towards the patient's
left, +y posterior, +z head. ISMRMRD's acquisition headers give ``position``, ``read_dir``, ``phase_dir`` and
``slice_dir`` in this same system (the ISMRMRD documentation: "the patient coordinate system", as DICOM), so
they carry over unchanged. NIfTI's scanner space is RAS (x and y negated).

An image of the toolkit is (H, W): axis 0 (H) is the readout of MR data (fastMRI's layout), axis 1 (W) the phase
encoding. ``axis0`` and ``axis1`` are the unit vectors along which the pixel indices of those axes increase,
``spacing`` the distance between pixel centres along them, and ``centers[k]`` the position of pixel (H // 2, W // 2)
of slice k: the centre of the field of view of the centred FFT (the pixel at k-space's conjugate origin), which
every centred crop of the toolkit keeps (``recon.data.geometry``: a crop of n to m starts at n // 2 - m // 2).
The first pixel is then at centers[k] - (H // 2) spacing[0] axis0 - (W // 2) spacing[1] axis1.

``transpose`` says how DICOM stores the pixels: True (MR from ISMRMRD) writes the readout along the DICOM row, as
ISMRMRD images and Gadgetron's DICOM output do (ImageOrientationPatient = read_dir, phase_dir); False writes the
(H, W) array as DICOM rows and columns (CT slices read from DICOM keep their layout).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .mrd_header import parse_header

TOLERANCE = 1e-3  # direction cosines: unit length and orthogonality to this


def _unit(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(3)


def valid_directions(a, b) -> bool:
    """Whether ``a`` and ``b`` are orthogonal unit vectors (to ``TOLERANCE``)."""
    a, b = _unit(a), _unit(b)
    return (abs(np.linalg.norm(a) - 1) < TOLERANCE and abs(np.linalg.norm(b) - 1) < TOLERANCE
            and abs(float(a @ b)) < TOLERANCE)


@dataclass(frozen=True)
class ImageGeometry:
    """The geometry of an (S, H, W) image stack (module docstring). ``source`` says where it came from."""

    spacing: tuple
    axis0: tuple
    axis1: tuple
    centers: tuple
    slice_thickness: float
    transpose: bool = False
    source: str = "header"

    def __post_init__(self):
        if len(self.spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"pixel spacing must be two finite distances > 0 mm, got {self.spacing}")
        if not (math.isfinite(self.slice_thickness) and self.slice_thickness > 0):
            raise ValueError(f"slice thickness must be a finite distance > 0 mm, got {self.slice_thickness}")
        if not valid_directions(self.axis0, self.axis1):
            raise ValueError(f"the image axes {self.axis0}, {self.axis1} are not orthogonal unit vectors")
        c = np.asarray(self.centers, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 3 or not np.isfinite(c).all():
            raise ValueError(f"slice centres must be finite (slices, 3) positions in mm, got shape {c.shape}")

    @classmethod
    def default(cls, n_slices: int, spacing=(1.0, 1.0), slice_thickness: float = 1.0, transpose: bool = False,
                source: str = "default: 1 mm pixels, axial slices at the origin") -> "ImageGeometry":
        """Axial slices (axis 0 along +x, axis 1 along +y, slices along +z, one thickness apart, the first at the
        origin): what is written when the data carry no geometry."""
        centers = tuple((0.0, 0.0, k * float(slice_thickness)) for k in range(n_slices))
        return cls(tuple(float(s) for s in spacing), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), centers,
                   float(slice_thickness), transpose, source)

    @property
    def n_slices(self) -> int:
        return len(self.centers)

    @property
    def normal(self) -> np.ndarray:
        """axis0 x axis1: the slice normal of the right-handed frame the image axes span."""
        return np.cross(_unit(self.axis0), _unit(self.axis1))

    def select(self, indices) -> "ImageGeometry":
        """The geometry of the slices ``indices`` (in that order)."""
        return replace(self, centers=tuple(self.centers[i] for i in indices))

    def corner(self, k: int, shape) -> np.ndarray:
        """LPS position (mm) of pixel (0, 0) of slice ``k`` of an image of ``shape`` (H, W)."""
        h, w = int(shape[0]), int(shape[1])
        return (np.asarray(self.centers[k], dtype=np.float64) - (h // 2) * self.spacing[0] * _unit(self.axis0)
                - (w // 2) * self.spacing[1] * _unit(self.axis1))

    def slice_order(self) -> np.ndarray:
        """Slice indices sorted by position along the normal."""
        along = np.asarray(self.centers, dtype=np.float64) @ self.normal
        return np.argsort(along, kind="stable")

    def slice_step(self) -> np.ndarray:
        """The vector (mm) from one slice to the next in ``slice_order``; the slice thickness along the normal for
        one slice. Raises ValueError when slices are not evenly spaced along one line (NIfTI needs that)."""
        c = np.asarray(self.centers, dtype=np.float64)[self.slice_order()]
        if len(c) == 1:
            return self.slice_thickness * self.normal
        steps = np.diff(c, axis=0)
        step = steps.mean(0)
        if np.linalg.norm(step) < 1e-6 or np.abs(steps - step).max() > 1e-2 * max(1.0, np.linalg.norm(step)):
            raise ValueError(f"slice positions: the {len(c)} slices are not evenly spaced along one line (steps "
                             f"{np.round(np.linalg.norm(steps, axis=1), 3).tolist()} mm); a NIfTI volume needs "
                             f"equally spaced slices")
        return step

    def lps_affine(self, shape) -> np.ndarray:
        """4 x 4 affine from voxel (i, j, k) = (axis 0, axis 1, slice in ``slice_order``) to LPS mm."""
        a = np.eye(4)
        a[:3, 0] = self.spacing[0] * _unit(self.axis0)
        a[:3, 1] = self.spacing[1] * _unit(self.axis1)
        a[:3, 2] = self.slice_step()
        a[:3, 3] = self.corner(int(self.slice_order()[0]), shape)
        return a

    def ras_affine(self, shape) -> np.ndarray:
        """The NIfTI affine: ``lps_affine`` with x and y negated (RAS)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.lps_affine(shape)


def geometry_from_header(xml, n_slices: int) -> ImageGeometry:
    """The geometry an ISMRMRD header alone gives (a fastMRI file: no acquisitions, so no positions or
    directions): pixel spacing = encoded field of view / encoded matrix, slice thickness = the recon (else encoded)
    field of view z, axial slices one thickness apart; 1 mm where the header has no field of view."""
    mrd = parse_header(xml)
    notes = ["no slice positions or directions: axial slices one thickness apart"]
    if mrd.encoded_fov is not None:
        spacing = (mrd.encoded_fov[0] / mrd.encoded_matrix[0], mrd.encoded_fov[1] / mrd.encoded_matrix[1])
    else:
        spacing = (1.0, 1.0)
        notes.append("no fieldOfView_mm: 1 mm pixels")
    thickness = next((f[2] for f in (mrd.recon_fov, mrd.encoded_fov) if f is not None and f[2]), None) or 1.0
    return ImageGeometry.default(n_slices, spacing, thickness, transpose=True,
                                 source="ISMRMRD header; " + "; ".join(notes))
