"""Complex brain slices from the MNI152 T1 template (ICBM 2009a, 1 mm) shipped inside the nilearn wheel.

The bundled MRI prior is trained on these axial slices; a slab of slices is held out (with a gap on both
sides) for evaluation and for the bundled sample. Slices are cropped to 196 x 196 mm around the head,
resampled to ``size`` x ``size``, and given a smooth synthetic phase (MRI images are complex; a real
template has none). Reading the template needs the optional ``nilearn`` extra (nibabel + nilearn).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
Z_RANGE = (20, 146)          # axial slices with brain tissue
HELDOUT = (76, 86)           # held-out slab [76, 86): 10 slices
GAP = 3                      # slices excluded on both sides of the held-out slab
CROP = (slice(1, 197), slice(19, 215))  # 196 x 196 mm in-plane around the head


@functools.lru_cache(maxsize=1)
def template() -> np.ndarray:
    """The MNI152 T1 template as float32 (197, 233, 189), intensities 0..255."""
    try:
        import nibabel
        import nilearn
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading the MNI152 template needs nilearn and nibabel: pip install 'diffrecon[train]'") from e
    path = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data", TEMPLATE)
    return np.asarray(nibabel.load(path).get_fdata(), dtype=np.float32)


def split_indices(split: str) -> list:
    """Axial slice indices of the 'train' or 'heldout' split."""
    lo, hi = HELDOUT
    if split == "heldout":
        return list(range(lo, hi))
    if split == "train":
        return [z for z in range(*Z_RANGE) if z < lo - GAP or z >= hi + GAP]
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")


def magnitude_slices(split: str = "train", size: int = 128) -> torch.Tensor:
    """Axial magnitude slices (N, size, size) float32, each scaled so its 99th percentile is 1."""
    vol = template()
    zs = split_indices(split)
    sl = torch.from_numpy(np.stack([vol[CROP[0], CROP[1], z].T[::-1].copy() for z in zs]))
    sl = F.interpolate(sl[:, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[:, 0]
    sl = sl.clamp_min(0)
    q = torch.quantile(sl.reshape(len(zs), -1), 0.99, dim=1).clamp_min(1e-6)
    return sl / q[:, None, None]


def smooth_phase(n: int, size: int, generator: torch.Generator, max_order: int = 2,
                 amplitude: float = math.pi / 2) -> torch.Tensor:
    """Random smooth phase maps (n, size, size): a sum of low-order 2-D cosines, amplitude ~ ``amplitude``."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    phase = torch.zeros(n, size, size)
    for i in range(max_order + 1):
        for j in range(max_order + 1):
            if i == j == 0:
                continue
            a = torch.randn(n, 1, 1, generator=generator) * amplitude / (1 + i + j)
            off = torch.rand(n, 1, 1, generator=generator) * 2 * math.pi
            phase = phase + a * torch.cos(math.pi / 2 * (i * x + j * y) + off)
    phase = phase + (torch.rand(n, 1, 1, generator=generator) * 2 - 1) * math.pi  # global phase
    return phase


def complex_slices(split: str = "heldout", size: int = 128, seed: int = 0) -> torch.Tensor:
    """Complex slices (N, size, size) complex64: magnitude times a smooth phase drawn with ``seed``."""
    mag = magnitude_slices(split, size)
    g = torch.Generator().manual_seed(seed)
    return torch.polar(mag, smooth_phase(len(mag), size, g))


def augment(mag: torch.Tensor, generator: torch.Generator, max_rotate: float = 10.0,
            max_scale: float = 0.1, max_shift: float = 0.06, flip: bool = True) -> torch.Tensor:
    """Random rigid/scale augmentation and a random smooth phase for a batch of magnitudes (B, H, W)."""
    b, h, w = mag.shape
    g = generator
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(max_rotate)
    sc = 1 + (torch.rand(b, generator=g) * 2 - 1) * max_scale
    sh = (torch.rand(b, 2, generator=g) * 2 - 1) * max_shift * 2
    fl = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc * fl
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc * fl
    theta[:, 1, 1] = torch.cos(ang) / sc
    theta[:, :, 2] = sh
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=False)
    out = F.grid_sample(mag[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    return torch.polar(out.clamp_min(0), smooth_phase(b, h, g))


def heldout_file_name(size: int = 128) -> str:
    return f"mni152-heldout-{size}.pt"


BUNDLED_SIZE = 128


def load_heldout(size: int = 128, path: Optional[str] = None) -> torch.Tensor:
    """The bundled held-out complex slices (shipped in the package; no nilearn needed). Sizes other than the
    bundled 128 are resampled from it (real and imaginary parts, bilinear, antialiased), sides 8..1024."""
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 1024:
        raise ValueError(f"size must be an integer in 8..1024, got {size!r}")
    p = path or os.path.join(os.path.dirname(__file__), "samples", heldout_file_name(size))
    if path is None and not os.path.exists(p) and size != BUNDLED_SIZE:
        x = load_heldout(BUNDLED_SIZE)
        parts = torch.stack([x.real, x.imag], 1)
        parts = F.interpolate(parts, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return torch.complex(parts[:, 0], parts[:, 1]).contiguous()
    if not os.path.exists(p):
        raise FileNotFoundError(f"bundled held-out slices not found at {p}")
    return torch.load(p, weights_only=True)
