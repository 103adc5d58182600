"""Sparse-view and limited-angle CT reconstruction (``recon reconstruct-ct``, ``recon demo --ct``).

Units: images are linear attenuation relative to water (mu / mu_water = 1 + HU / 1000; ``recon.data.phantoms``),
sinograms are their line integrals in pixel lengths, as ``operators.ct`` computes them. A user with a sinogram in
1/cm multiplies it by ``pixel_size_cm / mu_water`` first.

The input file (HDF5) holds either a ``sinogram`` (S, n_angles, n_detectors) with its ``angles`` (radians) and
the geometry as attributes (``geometry`` "parallel" or "fan"; for fan ``source_distance`` and
``detector_distance``; ``detector_spacing``; ``image_size``), or an ``image`` (S, H, W) from which a measurement
is simulated with the chosen angles and noise (``image`` also serves as the reference for the metrics; a
file with both uses its own sinogram and scores against its image). DICOM slices are read by
``recon.data.ct.read_dicom`` and converted with ``phantoms.hu_to_mu``.

Samplers and TV are scale-free (``recon.samplers.base``, ``recon.classical``): they work with the unit-norm
operator internally, so step sizes (Score-ALD) and weights (TV) are independent of the number of views and the
detector, and the operator is handed over as it is. The slices of a stack are one batch; ``tv_z`` > 0 couples
them along z in DDS (``samplers.dc.TVzConsistency``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from operators.ct import FanBeamCT, ParallelBeamCT, angles as angle_set, fbp
from recon import classical, metrics, samplers
from recon.apps import io
from recon.apps.settings import BaseSettings, SliceSpec, select_slices

BASELINES = ("fbp", "tv")
METHODS = BASELINES + ("dds", "dps", "score-ald", "score-sde")
NOISE = ("none", "gaussian", "poisson")
MU_WATER_PER_MM = 0.0192  # linear attenuation of water near 70 keV, 1/mm
DEFAULT_PRIOR = "bundled:ct-phantom-128"


@dataclass(kw_only=True)
class CTSettings(BaseSettings):
    method: str = "dds"
    geometry: str = "parallel"
    views: Optional[int] = 30            # sparse view: this many angles over 180 degrees (360 for fan beam)
    limited: Optional[tuple] = None      # limited angle: (start, stop) in degrees, one view per degree
    noise: str = "none"
    noise_level: float = 0.0             # Gaussian std of the line integrals, or incident photons (Poisson)
    prior: str = DEFAULT_PRIOR
    tv_z: float = 0.0
    tv_lam: float = 3e-3
    pixel_mm: float = 3.0                # pixel size, for the photon statistics (Poisson noise) only
    filter: str = "ramp"
    source_distance: float = 400.0
    detector_distance: float = 200.0

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown CT method {self.method!r}; expected one of {list(METHODS)}")
        if self.geometry not in ("parallel", "fan"):
            raise ValueError(f"geometry must be 'parallel' or 'fan', got {self.geometry!r}")
        if self.noise not in NOISE:
            raise ValueError(f"noise must be one of {NOISE}, got {self.noise!r}")
        if self.noise != "none" and not self.noise_level > 0:
            raise ValueError(f"noise {self.noise!r} needs noise_level > 0 (std or photons), got {self.noise_level}")
        if self.limited is not None and (len(self.limited) != 2 or not self.limited[1] > self.limited[0]):
            raise ValueError(f"limited must be (start, stop) degrees with stop > start, got {self.limited}")
        if self.views is not None and self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if self.tv_z < 0:
            raise ValueError(f"tv_z must be >= 0, got {self.tv_z}")
        super().check()

    def angles(self) -> torch.Tensor:
        full = 360.0 if self.geometry == "fan" else 180.0
        if self.limited is not None:
            return angle_set(limited=self.limited)
        return angle_set(views=self.views, full=full) if self.views else angle_set(n=int(full), full=full)


def operator(settings: CTSettings, image_size, angles: Optional[torch.Tensor] = None, n_detectors=None,
             detector_spacing: float = 1.0):
    th = settings.angles() if angles is None else angles
    if settings.geometry == "fan":
        return FanBeamCT(image_size, th, settings.source_distance, settings.detector_distance, n_detectors,
                         detector_spacing)
    return ParallelBeamCT(image_size, th, n_detectors, detector_spacing)


def simulate(image: torch.Tensor, op, settings: CTSettings, generator: torch.Generator) -> torch.Tensor:
    """The measured sinogram of ``image`` (mu units) with the settings' noise. Poisson noise counts photons through
    the physical attenuation: line integral x mu_water (0.0192/mm) x ``pixel_mm`` (a 128-pixel field of 38 cm by
    default), with ``noise_level`` incident photons per detector bin."""
    from recon.data import ct as ctdata

    p = op(image.float())
    if settings.noise == "gaussian":
        return ctdata.gaussian_noise(p, settings.noise_level, generator)
    if settings.noise == "poisson":
        return ctdata.poisson_noise(p, settings.noise_level, generator, mu_scale=MU_WATER_PER_MM * settings.pixel_mm)
    return p


def sampler_for(settings: CTSettings) -> samplers.Sampler:
    """The CT defaults of each sampler (``steps`` overrides the length)."""
    n = settings.steps
    if settings.method == "dds":
        return samplers.DDS(steps=n or 50, tv_z=settings.tv_z)
    if settings.method == "dps":
        return samplers.DPS(steps=n or 250, zeta=1.0)
    if settings.method == "score-ald":
        return samplers.ScoreALD(sigma_start=2.0, sigma_end=0.01, n_levels=n or 150, steps_each=3,
                                 step_lr=1e-4, denoise_last=True)
    return samplers.ScoreSDE(steps=n or 300, inverse="cg", cg_iter=10)


def reconstruct(sinogram: torch.Tensor, op, settings: CTSettings, prior=None, progress: bool = False) -> torch.Tensor:
    """Reconstruct a stack (S, n_angles, n_det) or a slice; returns samples (N, S, H, W) (N = 1 for baselines)."""
    settings.check()
    dev = torch.device(settings.device)
    y = sinogram.float().to(dev)
    op = op.to(dev)
    if settings.method == "fbp":
        return fbp(y, op, settings.filter)[None]
    if settings.method == "tv":
        return classical.tv(y, op, lam=settings.tv_lam, max_iter=100, rho=10.0, cg_iter=5)[None]
    if prior is None:
        prior = settings.load_prior()
    if prior.channels != "real":
        raise ValueError(f"CT needs a real-valued prior; {prior.name!r} has channels={prior.channels!r}")
    if prior.image_size and tuple(prior.image_size) != tuple(op.ishape):
        raise ValueError(f"the prior was trained on {tuple(prior.image_size)} images but the CT image is "
                         f"{tuple(op.ishape)}; use a prior of that size")
    s = sampler_for(settings)
    s.progress = progress
    return s(y, op, prior.to(dev), n_samples=settings.samples, generator=torch.Generator().manual_seed(settings.seed))


# --- files ---------------------------------------------------------------------------------------------------
def read_input(path):
    """(image or None, sinogram or None, geometry dict) from a CT HDF5 file, a DICOM file or a DICOM folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir() or p.suffix.lower() in (".dcm", ".ima"):
        from recon.data.ct import read_dicom
        from recon.data.phantoms import hu_to_mu
        img = read_dicom(p)
        return (hu_to_mu(img if img.dim() == 3 else img[None]), None, {})
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ValueError(f"{p}: not an HDF5 file ({e}); expected a CT file with 'image' or 'sinogram'") from None
    with f:
        if "image" not in f and "sinogram" not in f:
            raise ValueError(f"{p}: expected a dataset 'image' (S, H, W) or 'sinogram' (S, angles, detectors); "
                             f"found {sorted(f.keys())}")
        img = torch.from_numpy(f["image"][()]).float() if "image" in f else None
        sino = torch.from_numpy(f["sinogram"][()]).float() if "sinogram" in f else None
        geo = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if sino is not None:
            if "angles" not in f:
                raise ValueError(f"{p}: a 'sinogram' needs its 'angles' dataset (radians)")
            geo["angles"] = torch.from_numpy(f["angles"][()]).double()
    if img is not None and img.dim() == 2:
        img = img[None]
    if sino is not None and sino.dim() == 2:
        sino = sino[None]
    return img, sino, geo


def score(reference: torch.Tensor, x: torch.Tensor) -> dict:
    """PSNR/SSIM/NMSE of a stack in mu units, data range = the reference's maximum (bone)."""
    return metrics.evaluate(reference.numpy(), x.float().numpy(), float(reference.max()))


def reconstruct_file(path, out, settings: Optional[CTSettings] = None, slices: SliceSpec = None, png=None,
                     progress: bool = True) -> dict:
    """Reconstruct ``slices`` of a CT file (None: all; an index, a list, a slice or text such as "0:4"; see
    ``select_slices``), write ``out`` (HDF5) and, with ``png``, a figure of the first slice."""
    settings = settings or CTSettings()
    settings.check()
    img, sino, geo = read_input(path)
    if slices is not None:
        idx = select_slices(slices, len(img) if img is not None else len(sino))
        img = img[idx] if img is not None else None
        sino = sino[idx] if sino is not None else None
    out = io.check_output(out, source=path)
    if sino is not None:
        settings.geometry = geo.get("geometry", settings.geometry)
        for k in ("source_distance", "detector_distance"):
            if k in geo:
                setattr(settings, k, float(geo[k]))
        size = tuple(int(v) for v in np.atleast_1d(geo.get("image_size", img.shape[-1] if img is not None else 0)))
        if size == (0,):
            raise ValueError(f"{path}: a sinogram without an image needs the 'image_size' attribute")
        op = operator(settings, size if len(size) == 2 else size * 2, geo["angles"], sino.shape[-1],
                      float(geo.get("detector_spacing", 1.0)))
    else:
        op = operator(settings, tuple(img.shape[-2:]))
        sino = simulate(img, op, settings, torch.Generator().manual_seed(settings.seed + 1))
    x = reconstruct(sino, op, settings, progress=progress).cpu()
    mean = x.mean(0)
    arrays = {"reconstruction": mean, "sinogram": sino, "angles": op.angles, "fbp": fbp(sino, op, settings.filter)}
    if len(x) > 1:
        arrays.update(samples=x, std=x.std(0))
    res = {"out": str(out), "metrics": None}
    if img is not None:
        arrays["reference"] = img
        res["metrics"] = {"fbp": score(img, arrays["fbp"]), settings.method: score(img, mean)}
    s = asdict(settings)
    s["limited"] = list(settings.limited) if settings.limited else None
    io.write_h5(out, arrays, {"settings": json.dumps(s), "metrics": json.dumps(res["metrics"])})
    if png:
        from recon.data.ct import window
        from recon.data.phantoms import mu_to_hu
        w = lambda v: window(mu_to_hu(v))  # noqa: E731
        panels = ([("reference", w(img[0]))] if img is not None else []) + \
                 [("FBP", w(arrays["fbp"][0])), (settings.method, w(mean[0]))]
        io.write_png(png, panels, vmax=1.0, title=f"CT: {len(op.angles)} views, {settings.geometry} beam")
    return res


def command(path, out, settings: CTSettings, slices: SliceSpec = None, png=None, progress: bool = True) -> int:
    """``recon reconstruct-ct``: reconstruct, print the metrics of FBP and of the method (when there is a
    reference image)."""
    res = reconstruct_file(path, out, settings, slices, png=png, progress=progress)
    if res["metrics"]:
        for m, e in res["metrics"].items():
            print(f"{m:<10} PSNR {e['psnr']:.2f}  SSIM {e['ssim']:.4f}  NMSE {e['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0
