"""Training images for ``recon train``, as batches in the network's channels.

A source is named by a string:
- ``mni152``: axial slices of the MNI152 template (nilearn wheel) with augmentation and a random smooth
  phase (complex), the held-out slab excluded (``recon.data.brain``);
- ``mni152-synth``: half ``mni152`` slices, half domain-randomised slices synthesised from the MNI152 tissue maps
  (random contrasts, bias fields, zooms of about 0.6 to 2 mm pixels, crops, noise; ``recon.data.synth``);
  ``mni152-synth-res``: the same with the resolution randomised too (half the synthetic slices blurred by up to
  1.5 pixels) and noise up to 0.04;
- ``ct-phantoms``: procedural CT body phantoms (``recon.data.phantoms``), a fresh batch every step, in
  attenuation relative to water divided by 2 (``Normalization("fixed", 2.0)``: air 0, water 0.5, bone ~1);
- ``ct-anatomy``: anatomical CT head and body slices with texture, implants and CT noise
  (``recon.data.ct_anatomy``), scaled as ``ct-phantoms``; ``ct-anatomy+phantoms``: three quarters of each batch
  from ``ct-anatomy``, one quarter from ``ct-phantoms``; ``ct-anatomy-crops+phantoms``: the same with 30% of the
  anatomical slices magnified crops (``ct_anatomy(crops=0.3)``: 0.25-0.8 of the usual field of view, anywhere in
  the patient); ``ct-anatomy-native+phantoms``: the same with 60% crops at 0.15-0.8 of the field of view
  (``NATIVE_CROP_ZOOM``), so that the finest crops have the pixel size of whole slices at a clinical 512 x 512
  grid (about 0.4-0.6 mm; a prior trained on 128 x 128 crops then sees, patch by patch, what it meets on a
  native grid);
- a ``.pt`` file holding a tensor (N, H, W), complex or real;
- a ``.nii``/``.nii.gz`` file or a folder of them: axial slices (needs nibabel);
- a folder of fastMRI ``.h5`` files: the ``reconstruction_rss``/``_esc`` target slices (real);
- the same followed by ``:mvue`` (``data/knee_train:mvue``): complex SENSE-combined ("MVUE", Jalal et al. 2021)
  images of the fully sampled multi-coil k-space, x = sum_c conj(S_c) F^H k_c / sqrt(sum_c |S_c|^2) with ESPIRiT
  maps S from the central 24 lines, cropped to the header's recon size (the training data of Score-ALD and DDS);
- a folder of ``.png`` images (grayscale).
Every image is divided by its 99th percentile of |x| (``Normalization("percentile", 99)``), except for
``.pt`` tensors, which are used as they are (``Normalization("none")``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from operators import espirit, ifft2c
from recon.priors import Normalization

from . import brain, ct_anatomy, phantoms, synth
from .coils import center_crop, sense_combine
from .fastmri import load_fastmri

NATIVE_CROP_ZOOM = (0.15, 0.8)


def _percentile_normalise(x: torch.Tensor) -> torch.Tensor:
    q = torch.quantile(x.abs().reshape(len(x), -1).float(), 0.99, dim=1).clamp_min(1e-8)
    return x / q.reshape(-1, 1, 1).to(x.real.dtype)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if x.is_complex():
        return torch.complex(_resize(x.real, size), _resize(x.imag, size))
    return F.interpolate(x[:, None].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[:, 0]


class SliceSource:
    """Holds slices (N, H, W) in memory and draws augmented batches with an explicit generator."""

    def __init__(self, images: torch.Tensor, normalization: Normalization, augment_fn=None, flip: bool = False):
        if images.dim() != 3 or len(images) == 0:
            raise ValueError(f"training images must be a non-empty (N, H, W) stack, got shape {tuple(images.shape)}")
        self.images, self.normalization, self.augment_fn, self.flip = images, normalization, augment_fn, flip

    @property
    def is_complex(self) -> bool:
        return self.images.is_complex() or self.augment_fn is not None

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.images), (n,), generator=generator)
        x = self.images[idx]
        if self.augment_fn is not None:
            x = self.augment_fn(x, generator)
        elif self.flip:
            fl = torch.rand(n, generator=generator) < 0.5
            x = torch.where(fl[:, None, None], x.flip(-1), x)
        return x


class PhantomSource:
    """An endless source of procedural CT phantoms (real), scaled as the CT prior records."""

    is_complex = False
    normalization = Normalization("fixed", value=2.0)

    def __init__(self, image_size: int, region: str = "mixed"):
        self.image_size, self.region = image_size, region

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        mu = phantoms.hu_to_mu(phantoms.ct_phantom(n, self.image_size, generator, self.region))
        return mu / self.normalization.value


class AnatomySource(PhantomSource):
    """An endless source of anatomical CT slices (``recon.data.ct_anatomy``), a fraction ``phantom_fraction``
    of each batch replaced by procedural phantoms, a fraction ``crops`` of the anatomical ones magnified crops;
    scaled as ``PhantomSource``."""

    def __init__(self, image_size: int, phantom_fraction: float = 0.0, metal: float = 0.15, crops: float = 0.0,
                 crop_zoom=ct_anatomy.CROP_ZOOM):
        for name, v in (("phantom_fraction", phantom_fraction), ("crops", crops)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        super().__init__(image_size)
        self.phantom_fraction, self.metal, self.crops = phantom_fraction, metal, crops
        self.crop_zoom = tuple(crop_zoom)

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = int(round(n * self.phantom_fraction))
        parts = []
        if n - k:
            parts.append(ct_anatomy.ct_anatomy(n - k, self.image_size, generator, metal=self.metal,
                                               crops=self.crops, crop_zoom=self.crop_zoom))
        if k:
            parts.append(phantoms.ct_phantom(k, self.image_size, generator))
        return phantoms.hu_to_mu(torch.cat(parts)) / self.normalization.value


def mvue_slices(path) -> torch.Tensor:
    """Complex MVUE images (N, h, w) of every slice of the multi-coil fastMRI file(s) at ``path``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"training data {str(p)!r}: no such file or folder")
    files = sorted(f for f in p.iterdir() if f.suffix == ".h5") if p.is_dir() else [p]
    if not files:
        raise ValueError(f"{p}: no fastMRI .h5 files found")
    out = []
    for f in files:
        vol = load_fastmri(f)
        if not vol.is_multicoil:
            raise ValueError(f"{f}: MVUE needs multi-coil k-space; this file is single-coil (use its RSS target)")
        rh, rw = vol.recon_size[0], vol.recon_size[1]
        for i in range(vol.num_slices):
            k = vol.kspace(i)
            x = sense_combine(ifft2c(k), espirit.maps(k, calib_width=min(24, k.shape[-1] // 4)))
            out.append(center_crop(x, (min(rh, x.shape[-2]), min(rw, x.shape[-1]))))
    return torch.stack(out)


def to_channels(x: torch.Tensor, channels: str) -> torch.Tensor:
    """(B, H, W) images -> (B, C, H, W) network input for the prior's channel convention."""
    if channels == "complex":
        return torch.view_as_real(x.to(torch.complex64)).permute(0, 3, 1, 2).contiguous()
    if x.is_complex():  # magnitude prior: Re and Im are both training images
        return torch.cat([x.real, x.imag])[:, None]
    return x[:, None].float()


def open_source(spec: str, image_size: int) -> SliceSource:
    """Resolve a source string (see the module docstring)."""
    if spec == "mni152":
        mag = brain.magnitude_slices("train", image_size)
        return SliceSource(mag, Normalization("percentile", 99.0), augment_fn=brain.augment)
    if spec == "mni152-synth":
        return synth.SynthSource(image_size)
    if spec == "mni152-synth-res":
        return synth.SynthSource(image_size, max_blur=1.5, max_noise=0.04)
    if spec == "ct-phantoms":
        return PhantomSource(image_size)
    if spec == "ct-anatomy":
        return AnatomySource(image_size)
    if spec == "ct-anatomy+phantoms":
        return AnatomySource(image_size, phantom_fraction=0.25)
    if spec == "ct-anatomy-crops+phantoms":
        return AnatomySource(image_size, phantom_fraction=0.25, crops=0.3)
    if spec == "ct-anatomy-native+phantoms":
        return AnatomySource(image_size, phantom_fraction=0.25, crops=0.6, crop_zoom=NATIVE_CROP_ZOOM)
    if spec.endswith(":mvue"):
        x = mvue_slices(spec[: -len(":mvue")])
        return SliceSource(_percentile_normalise(_resize(x, image_size)), Normalization("percentile", 99.0), flip=True)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"training data {spec!r}: no such file or folder (or use 'mni152', 'mni152-synth', "
                                f"'mni152-synth-res', "
                                f"'ct-phantoms', 'ct-anatomy', 'ct-anatomy+phantoms' or "
                                f"'ct-anatomy-crops+phantoms', 'ct-anatomy-native+phantoms')")
    if p.suffix == ".pt":
        x = torch.load(p, weights_only=True)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{p}: expected a tensor (N, H, W), got {type(x).__name__}")
        return SliceSource(x, Normalization("none"))
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    nii = [f for f in files if f.name.endswith((".nii", ".nii.gz"))]
    h5 = [f for f in files if f.suffix == ".h5"]
    png = [f for f in files if f.suffix == ".png"]
    if nii:
        import nibabel
        sl = [torch.from_numpy(nibabel.load(str(f)).get_fdata()).float().permute(2, 1, 0).flip(1) for f in nii]
        x = torch.cat(sl)
        x = x[x.reshape(len(x), -1).amax(1) > 0]
    elif h5:
        parts = []
        for f in h5:
            vol = load_fastmri(f)
            if vol.has_target:
                parts.append(vol.target(slice(None)))
        if not parts:
            raise ValueError(f"{p}: none of the fastMRI files has a reconstruction target")
        x = torch.cat([_resize(t, image_size) for t in parts])
    elif png:
        import matplotlib.image as mpimg
        imgs = []
        for f in png:
            a = torch.as_tensor(mpimg.imread(str(f))).float()
            imgs.append(a[..., :3].mean(-1) if a.dim() == 3 else a)
        x = torch.cat([_resize(a[None], image_size) for a in imgs])
    else:
        raise ValueError(f"{p}: no .pt, .nii(.gz), .h5 or .png training data found")
    return SliceSource(_percentile_normalise(_resize(x, image_size)), Normalization("percentile", 99.0), flip=True)
