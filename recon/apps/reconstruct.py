"""Reconstruct slices of a fastMRI file (``recon reconstruct``).

For each selected slice: read the k-space lazily; use the file's own mask (test files) or undersample
retrospectively with a mask from ``operators.masks``; estimate ESPIRiT maps from the calibration region
(multi-coil; a single-coil file uses a map of ones); reconstruct with a sampler or a classical method; crop to
the header's recon matrix; compare with the file's reference (``reconstruction_rss``/``_esc``) when it has one
(fastMRI metrics, data range = the volume's ``max`` attribute or the reference maximum). The result file holds
the reconstruction |mean|, the samples, mean and std, the mask and maps, metrics and every setting as
attributes; it is written atomically (``recon.apps.io``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from operators import MultiCoilMRI, espirit, masks
from recon import classical, metrics, priors, samplers
from recon.apps import io
from recon.apps.settings import BaseSettings, SliceSpec, select_slices
from recon.data import center_crop, load_fastmri

CLASSICAL = {"zero-filled": classical.zero_filled, "cg-sense": classical.cg_sense,
             "l1-wavelet": classical.l1_wavelet, "tv": classical.tv}
METHODS = sorted(CLASSICAL) + sorted(samplers.REGISTRY)
DEFAULT_PRIOR = "bundled:mni-brain-128"


@dataclass(kw_only=True)
class MRISettings(BaseSettings):
    method: str = "dds"
    mask: str = "random"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    prior: str = DEFAULT_PRIOR

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.mask not in masks.available():
            raise ValueError(f"unknown mask {self.mask!r}; expected one of {masks.available()}")
        if not self.acceleration >= 1:
            raise ValueError(f"acceleration must be >= 1, got {self.acceleration}")
        super().check()


def sampler_for(settings: MRISettings):
    """The sampler of ``settings.method`` with its paper's defaults; ``steps`` sets the length (the number of
    noise levels for Score-ALD)."""
    kw = {"steps": settings.steps} if settings.steps else {}
    if settings.method == "score-ald" and settings.steps:
        kw = {"n_levels": settings.steps}
    return samplers.get(settings.method, **kw)


def _mask_for(settings: MRISettings, shape, seed):
    params = {"acceleration": settings.acceleration}
    if settings.mask in ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d"):
        params["center_fraction"] = settings.center_fraction
    return masks.get(settings.mask, **params)(tuple(shape), seed=seed)


def reconstruct_slice(k: torch.Tensor, file_mask, settings: MRISettings, prior, slice_seed: int):
    """One slice (C, H, W): returns samples (N, H, W) complex, mask, maps."""
    dev = torch.device(settings.device)
    k = k.to(dev)
    if file_mask is not None:
        m = file_mask.to(dev)
        y = k
    else:
        m = _mask_for(settings, k.shape, slice_seed).to(dev)
        y = m * k
    if k.shape[0] == 1:
        maps = torch.ones_like(k)
    else:
        maps = espirit.maps_for_mask(y, m)
    A = MultiCoilMRI(maps, m)
    if settings.method in CLASSICAL:
        x = CLASSICAL[settings.method](y, A)[None]
    else:
        if prior.image_size and tuple(prior.image_size) != tuple(k.shape[-2:]):
            raise ValueError(f"the prior was trained on {tuple(prior.image_size)} images but the k-space is "
                             f"{tuple(k.shape[-2:])}; use a prior of that size")
        gen = torch.Generator().manual_seed(slice_seed)
        x = sampler_for(settings)(y, A, prior.to(dev), n_samples=settings.samples, generator=gen)
    return x, m, maps


def reconstruct_file(path, out, settings: Optional[MRISettings] = None, slices: SliceSpec = None, png=None,
                     progress: bool = True) -> dict:
    """Reconstruct ``slices`` of a fastMRI file (None: all; an index, a list, a slice or text such as "0:4"; see
    ``select_slices``) and write ``out`` (HDF5) and, with ``png``, a figure of the first slice."""
    settings = settings or MRISettings()
    settings.check()
    vol = load_fastmri(path)
    idx = select_slices(slices, vol.num_slices)
    out = io.check_output(out, source=path)
    prior = None if settings.method in CLASSICAL else priors.load(settings.prior)
    rh, rw = vol.recon_size[0], vol.recon_size[1]
    maxval = float(vol.attrs["max"]) if "max" in vol.attrs else None
    samples, mask_list, maps_list, rows = [], [], [], []
    for i in idx:
        x, m, maps = reconstruct_slice(vol.kspace(i), vol.mask, settings, prior, settings.seed + i)
        crop = (min(rh, x.shape[-2]), min(rw, x.shape[-1]))
        xc = center_crop(x.cpu(), crop)
        samples.append(xc)
        mask_list.append(m.cpu().expand(x.shape[-2:]))
        maps_list.append(maps.cpu())
        if vol.has_target:
            t = vol.target(i)
            t = center_crop(t, (min(crop[0], t.shape[-2]), min(crop[1], t.shape[-1])))
            rec = center_crop(xc.mean(0).abs(), tuple(t.shape[-2:]))
            mv = maxval if maxval is not None else float(t.max())
            rows.append({"slice": i, "psnr": metrics.psnr(t, rec, mv), "ssim": metrics.ssim(t, rec, mv),
                         "nmse": metrics.nmse(t, rec)})
    s = torch.stack(samples)                       # (S, N, h, w)
    mean = s.mean(1)
    std = (s - mean[:, None]).abs().square().mean(1).sqrt()
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "nmse")} if rows else {}
    arrays = {"reconstruction": mean.abs().numpy().astype(np.float32),
              "samples": s.numpy().astype(np.complex64),
              "mean": mean.numpy().astype(np.complex64),
              "std": std.numpy().astype(np.float32),
              "mask": torch.stack(mask_list).numpy().astype(np.float32),
              "maps": torch.stack(maps_list).numpy().astype(np.complex64),
              "slices": np.asarray(idx, dtype=np.int64)}
    attrs = {"source": str(path), "settings": json.dumps(asdict(settings))}
    attrs.update({k: "" if v is None else v for k, v in asdict(settings).items()})
    attrs.update(summary)
    if rows:
        attrs["metrics"] = json.dumps(rows)
    io.write_h5(out, arrays, attrs)
    if png:
        panels = [("reconstruction |mean|", mean[0].abs())]
        if vol.has_target:
            panels.insert(0, ("reference", center_crop(vol.target(idx[0]), tuple(mean.shape[-2:]))))
        if s.shape[1] > 1:
            panels.append(("std", std[0]))
        io.write_png(png, panels, title=f"{Path(path).name} slice {idx[0]}: {settings.method}")
    return {"slices": idx, "metrics": rows, "summary": summary, "out": str(out)}


def command(path, out, settings: MRISettings, slices: SliceSpec = None, png=None, progress: bool = True) -> int:
    """``recon reconstruct``: reconstruct, print the metrics of each slice and their mean."""
    res = reconstruct_file(path, out, settings, slices, png=png, progress=progress)
    for r in res["metrics"]:
        print(f"slice {r['slice']:>3}: PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  NMSE {r['nmse']:.4f}")
    if res["summary"]:
        s = res["summary"]
        print(f"mean:      PSNR {s['psnr']:.2f}  SSIM {s['ssim']:.4f}  NMSE {s['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0
