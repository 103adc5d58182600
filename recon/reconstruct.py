"""Reconstruct slices of a fastMRI file (``recon reconstruct``).

For each selected slice: read the k-space lazily; use the file's own mask (test files) or undersample
retrospectively with a mask from ``operators.masks``; estimate ESPIRiT maps from the calibration region
(multi-coil; a single-coil file uses a map of ones); reconstruct with a sampler or a classical method; crop to
the header's recon matrix; compare with the file's reference (``reconstruction_rss``/``_esc``) when it has one
(fastMRI metrics, data range = the volume's ``max`` attribute or the reference maximum). The result file holds
the reconstruction |mean|, the samples, mean and std, the mask and maps, metrics and every setting as
attributes; it is written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from operators import MultiCoilMRI, espirit, masks
from recon import classical, metrics, priors, samplers
from recon.data import center_crop, load_fastmri

CLASSICAL = {"zero-filled": classical.zero_filled, "cg-sense": classical.cg_sense,
             "l1-wavelet": classical.l1_wavelet, "tv": classical.tv}
METHODS = sorted(CLASSICAL) + sorted(samplers.REGISTRY)


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")


@dataclass
class Settings:
    method: str = "dds"
    mask: str = "random"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    prior: str = "bundled:mni-brain-128"
    samples: int = 1
    seed: int = 0
    steps: Optional[int] = None
    device: str = "cpu"

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.mask not in masks.available():
            raise ValueError(f"unknown mask {self.mask!r}; expected one of {masks.available()}")
        if not self.acceleration >= 1:
            raise ValueError(f"acceleration must be >= 1, got {self.acceleration}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        check_device(self.device)


def _sampler(settings: Settings):
    kw = {"steps": settings.steps} if settings.steps else {}
    if settings.method == "score-ald" and settings.steps:
        kw = {"n_levels": settings.steps}
    return samplers.get(settings.method, **kw)


def _mask_for(settings: Settings, shape, seed):
    params = {"acceleration": settings.acceleration}
    if settings.mask in ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d"):
        params["center_fraction"] = settings.center_fraction
    return masks.get(settings.mask, **params)(tuple(shape), seed=seed)


def reconstruct_slice(k: torch.Tensor, file_mask, settings: Settings, prior, slice_seed: int):
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
        x = _sampler(settings)(y, A, prior.to(dev), n_samples=settings.samples, generator=gen)
    return x, m, maps


def reconstruct_file(path, out, slices=None, settings: Optional[Settings] = None, png=None,
                     progress: bool = True) -> dict:
    """Reconstruct ``slices`` (int, slice or None for all) of a fastMRI file and write ``out`` (HDF5)."""
    settings = settings or Settings()
    settings.check()
    vol = load_fastmri(path)
    idx = range(vol.num_slices)[slices] if isinstance(slices, slice) else \
        [slices] if isinstance(slices, int) else range(vol.num_slices)
    idx = list(idx)
    for i in idx:
        if not -vol.num_slices <= i < vol.num_slices:
            raise IndexError(f"slice {i} out of range: the volume has {vol.num_slices} slices "
                             f"(valid 0..{vol.num_slices - 1})")
    if not idx:
        raise ValueError(f"the slice selection is empty (the volume has {vol.num_slices} slices)")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise IsADirectoryError(f"output path {out} is a directory")
    if not out.parent.exists():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    prior = None if settings.method in CLASSICAL else priors.load(settings.prior)
    rh, rw = vol.recon_size[0], vol.recon_size[1]
    maxval = float(vol.attrs["max"]) if "max" in vol.attrs else None
    samples, mask_list, maps_list, rows = [], [], [], []
    for j, i in enumerate(idx):
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
    _write_result(out, s, mean, std, torch.stack(mask_list), torch.stack(maps_list), rows, summary, settings,
                  path, idx)
    if png:
        from recon import plots
        panels = [("reconstruction |mean|", mean[0].abs())]
        if vol.has_target:
            panels.insert(0, ("reference", center_crop(vol.target(idx[0]), tuple(mean.shape[-2:]))))
        if s.shape[1] > 1:
            panels.append(("std", std[0]))
        plots.save_panels(panels, png, title=f"{Path(path).name} slice {idx[0]}: {settings.method}")
    return {"slices": idx, "metrics": rows, "summary": summary, "out": str(out)}


def _write_result(out: Path, samples, mean, std, mask, maps, rows, summary, settings, source, idx) -> None:
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=mean.abs().numpy().astype(np.float32))
            f.create_dataset("samples", data=samples.numpy().astype(np.complex64))
            f.create_dataset("mean", data=mean.numpy().astype(np.complex64))
            f.create_dataset("std", data=std.numpy().astype(np.float32))
            f.create_dataset("mask", data=mask.numpy().astype(np.float32))
            f.create_dataset("maps", data=maps.numpy().astype(np.complex64))
            f.create_dataset("slices", data=np.asarray(idx, dtype=np.int64))
            f.attrs["source"] = str(source)
            f.attrs["settings"] = json.dumps(asdict(settings))
            for k, v in asdict(settings).items():
                f.attrs[k] = "" if v is None else v
            for k, v in summary.items():
                f.attrs[k] = v
            if rows:
                f.attrs["metrics"] = json.dumps(rows)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
