"""Domain-randomised brain slices synthesised from the MNI152 tissue maps (SynthSeg-style; Billot et al. 2023).

A slice is a sum of tissue layers, each a probability map times a random intensity,

    m(r) = B(r) (1 + t(r)) sum_k c_k p_k(T r),        x = m e^{i phi(r)} / q99(m) + n,

with the layers k = grey matter, white matter, CSF and the extra-cerebral head (scalp, skull, fat, muscle);
c_k random intensities in T1-, T2-, PD- or FLAIR-like orderings or fully random; B a smooth multiplicative
bias field; t a fine multiplicative texture; T a random in-plane rotation, flip, zoom (pixel size about 0.6 to
2 mm at the output grid, log-uniform) and crop; phi a random smooth phase (``brain.smooth_phase``) and n complex
Gaussian noise. The maps come from the nilearn wheel (nothing is downloaded):

- grey and white matter: the ICBM 2009a probability maps ``mni_icbm152_{gm,wm}_tal_nlin_sym_09a``;
- CSF: the wheel ships no CSF map, so it is the intracranial volume (grey + white matter > 0.1, closed and
  hole-filled slice by slice, which fills the ventricles) minus grey and white matter;
- extra-cerebral head: the T1 template outside the intracranial volume (its own texture: bright fat, dark
  bone), scaled so its 99th percentile is 1.

The held-out slab of ``recon.data.brain`` (and its gaps) is excluded from the 'train' maps exactly as there.
All randomness comes from the explicit ``torch.Generator``. Images are divided by the 99th percentile of |x|,
as the source records (``Normalization("percentile", 99)``).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import brain

LAYERS = ("gm", "wm", "csf", "extra")
FOV_MM = 196.0     # the in-plane crop of brain.CROP at 1 mm
# intensity ranges (gm, wm, csf, extra) of the named contrasts, relative to the brightest tissue
CONTRASTS = {
    "t1": ((0.55, 0.75), (0.9, 1.0), (0.05, 0.25), (0.4, 1.0)),
    "t2": ((0.55, 0.75), (0.35, 0.55), (0.9, 1.0), (0.2, 0.8)),
    "pd": ((0.8, 0.95), (0.6, 0.75), (0.85, 1.0), (0.4, 0.9)),
    "flair": ((0.8, 1.0), (0.5, 0.7), (0.02, 0.15), (0.2, 0.7)),
}
KINDS = tuple(CONTRASTS) + ("random",)


def _load(name: str) -> np.ndarray:
    try:
        import nibabel
        import nilearn
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the MNI152 tissue maps need nilearn and nibabel: pip install 'diffrecon[train]'") from e
    path = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data",
                        f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
    return np.asarray(nibabel.load(path).get_fdata(), dtype=np.float32)


def _slice(vol: np.ndarray, z: int) -> np.ndarray:
    return vol[brain.CROP[0], brain.CROP[1], z].T[::-1].copy()


@functools.lru_cache(maxsize=2)
def tissue_maps(split: str = "train") -> torch.Tensor:
    """Tissue layers (N, 4, 196, 196) float32 at 1 mm (gm, wm, csf, extra) of the axial slices of ``split``."""
    from scipy import ndimage
    zs = brain.split_indices(split)
    gm, wm = _load("gm") / 255.0, _load("wm") / 255.0
    t1 = brain.template()
    out = []
    for z in zs:
        g, w, t = _slice(gm, z), _slice(wm, z), _slice(t1, z)
        icv = ndimage.binary_fill_holes(ndimage.binary_closing(g + w > 0.1, iterations=3))
        icv = ndimage.gaussian_filter(icv.astype(np.float32), 0.7)
        csf = np.clip(icv - g - w, 0.0, 1.0)
        head = t * (1.0 - icv)
        q = np.percentile(head[head > 0], 99) if (head > 0).any() else 1.0
        out.append(np.stack([g, w, csf, np.clip(head / max(q, 1e-6), 0.0, 1.5)]))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def draw_intensities(n: int, generator: torch.Generator, kind: Optional[str] = None) -> tuple[torch.Tensor, list]:
    """Layer intensities (n, 4) and the contrast kind of each row (random among ``KINDS`` unless ``kind``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    pick = torch.randint(len(KINDS), (n,), generator=generator)
    u = torch.rand(n, 4, generator=generator)
    kinds = [kind or KINDS[int(i)] for i in pick]
    c = torch.empty(n, 4)
    for i, k in enumerate(kinds):
        if k == "random":
            c[i] = u[i]
        else:
            lo, hi = torch.tensor(CONTRASTS[k]).T
            c[i] = lo + (hi - lo) * u[i]
    return c, kinds


def smooth_field(n: int, size: int, generator: torch.Generator, grid: int, std: float) -> torch.Tensor:
    """Smooth random fields (n, size, size): a grid x grid Gaussian lattice, bicubically upsampled, times ``std``."""
    f = torch.randn(n, 1, grid, grid, generator=generator)
    return F.interpolate(f, size=(size, size), mode="bicubic", align_corners=True)[:, 0] * std


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of (n, C, H, W) with a per-image width ``sigma`` (pixels), in the Fourier domain."""
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h).reshape(1, 1, h, 1)
    fx = torch.fft.fftfreq(w).reshape(1, 1, 1, w)
    s = sigma.reshape(-1, 1, 1, 1)
    k = torch.exp(-2 * math.pi ** 2 * s ** 2 * (fx ** 2 + fy ** 2))
    return torch.fft.ifft2(torch.fft.fft2(x) * k).real


def render(maps: torch.Tensor, intensities: torch.Tensor, pixel_mm: torch.Tensor, size: int = 128,
           angle: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
           flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deterministic magnitude images (n, size, size) >= 0 of the tissue ``maps`` (n, 4, 196, 196).

    ``pixel_mm`` (n,) is the output pixel size (the field of view is size * pixel_mm), ``angle`` (n,) an in-plane
    rotation in radians, ``shift`` (n, 2) the crop centre in units of half the 196 mm template field of view,
    ``flip`` (n,) bool a left-right flip. The maps are low-passed before resampling to avoid aliasing.
    """
    n = len(maps)
    angle = torch.zeros(n) if angle is None else angle
    shift = torch.zeros(n, 2) if shift is None else shift
    fl = torch.ones(n) if flip is None else torch.where(flip, -1.0, 1.0)
    img = (maps * intensities.reshape(n, 4, 1, 1)).sum(1, keepdim=True)
    img = _blur(img, 0.45 * (pixel_mm.clamp_min(1.0) ** 2 - 1).sqrt())
    s = size * pixel_mm / FOV_MM
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = s * torch.cos(angle) * fl
    theta[:, 0, 1] = -s * torch.sin(angle)
    theta[:, 1, 0] = s * torch.sin(angle) * fl
    theta[:, 1, 1] = s * torch.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].clamp_min(0)


def _p99(x: torch.Tensor) -> torch.Tensor:
    return torch.quantile(x.abs().reshape(len(x), -1), 0.99, dim=1).clamp_min(1e-6).reshape(-1, 1, 1)


def synthesize(maps: torch.Tensor, generator: torch.Generator, size: int = 128, kind: Optional[str] = None,
               pixel_range=(0.6, 2.0), max_rotate: float = 30.0, bias: float = 0.3, texture: float = 0.08,
               max_noise: float = 0.02, max_blur: float = 0.0, blur_fraction: float = 0.5) -> torch.Tensor:
    """Random complex slices (n, size, size) complex64 from ``maps`` (n, 4, 196, 196), |x| at its 99th percentile 1.

    ``max_blur`` > 0 randomises the resolution as well as the pixel size (SynthSeg's random acquisition
    resolution): a ``blur_fraction`` of the slices is blurred by a Gaussian of width uniform in [0, max_blur]
    output pixels before the noise, as a lower-resolution or T2*-blurred (EPI) acquisition would be."""
    n, g = len(maps), generator
    c, _ = draw_intensities(n, g, kind)
    lo, hi = math.log(pixel_range[0]), math.log(pixel_range[1])
    pixel = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_rotate)
    reach = (1 - size * pixel / FOV_MM).clamp_min(0) * 0.7 + 0.05     # crops where the FOV is smaller than the head
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * reach[:, None]
    flip = torch.rand(n, generator=g) < 0.5
    mag = render(maps, c, pixel, size, angle, shift, flip)
    mag = mag * torch.exp(smooth_field(n, size, g, 4, bias))
    mag = mag * (1 + smooth_field(n, size, g, size // 4, 1.0) * texture * torch.rand(n, 1, 1, generator=g))
    if max_blur > 0:
        width = max_blur * torch.rand(n, generator=g) * (torch.rand(n, generator=g) < blur_fraction)
        mag = _blur(mag[:, None], width)[:, 0]
    mag = mag.clamp_min(0) / _p99(mag)
    x = torch.polar(mag, brain.smooth_phase(n, size, g))
    sd = max_noise * torch.rand(n, 1, 1, generator=g)
    x = x + sd * torch.complex(torch.randn(n, size, size, generator=g), torch.randn(n, size, size, generator=g))
    return (x / _p99(x)).to(torch.complex64)


class SynthSource:
    """``recon train`` source ``mni152-synth``: a ``real_fraction`` of each batch is augmented real template
    slices (as source ``mni152``), the rest synthesised from the tissue maps; the held-out slab is excluded."""

    is_complex = True

    def __init__(self, image_size: int = 128, real_fraction: float = 0.5, max_blur: float = 0.0,
                 max_noise: float = 0.02):
        from recon.priors import Normalization
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction!r}")
        self.image_size, self.real_fraction = image_size, real_fraction
        self.max_blur, self.max_noise = max_blur, max_noise
        self.normalization = Normalization("percentile", 99.0)
        self.real = brain.magnitude_slices("train", image_size)
        self.maps = tissue_maps("train")

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        n_real = int(round(n * self.real_fraction))
        parts = []
        if n_real:
            idx = torch.randint(len(self.real), (n_real,), generator=generator)
            parts.append(brain.augment(self.real[idx], generator).to(torch.complex64))
        if n - n_real:
            idx = torch.randint(len(self.maps), (n - n_real,), generator=generator)
            parts.append(synthesize(self.maps[idx], generator, self.image_size, max_noise=self.max_noise,
                                    max_blur=self.max_blur))
        return torch.cat(parts)
