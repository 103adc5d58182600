"""Uncertainty maps from repeated posterior samples (chapter 7, Sect. 7.4.3).

From N samples x_1..x_N of one slice (drawn as one batch): the mean, the per-pixel standard deviation
sqrt(mean |x_n - mean|^2), and per-pixel quantiles of |x_n|. Against a reference image (when there is one):
the correlation between the std map and the |error| of the mean inside the object, and the empirical coverage
of the central ``level`` interval [q_lo, q_hi] of |x_n| (the fraction of object pixels whose reference
magnitude falls inside it; a calibrated sampler gives about ``level``).
"""
from __future__ import annotations

from typing import Optional

import torch


def summarize(samples: torch.Tensor, reference: Optional[torch.Tensor] = None, level: float = 0.9,
              object_mask: Optional[torch.Tensor] = None) -> dict:
    """``samples`` (N, H, W) complex or real; ``reference`` (H, W) magnitude. Returns maps and numbers."""
    if samples.dim() != 3 or samples.shape[0] < 2:
        raise ValueError(f"need at least 2 samples shaped (N, H, W), got {tuple(samples.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = samples.mean(0)
    std = (samples - mean).abs().square().mean(0).sqrt()
    mag = samples.abs().float()
    lo, hi = torch.quantile(mag, torch.tensor([(1 - level) / 2, (1 + level) / 2]), dim=0)
    out = {"mean": mean, "std": std, "q_lo": lo, "q_hi": hi, "level": level}
    if reference is not None:
        ref = reference.abs().float()
        obj = object_mask if object_mask is not None else ref > 0.1 * ref.max()
        err = (mean.abs() - ref).abs()
        s, e = std[obj].float(), err[obj].float()
        s, e = s - s.mean(), e - e.mean()
        out["std_error_correlation"] = float((s * e).sum() / (s.norm() * e.norm()).clamp_min(1e-30))
        out["coverage"] = float(((ref >= lo) & (ref <= hi))[obj].float().mean())
        out["mean_std_in_object"] = float(std[obj].mean())
        out["error"] = err
    return out


def uncertainty_file(path, out, slice_index: int = 0, settings=None, png=None, level: float = 0.9,
                     std_max: Optional[float] = None) -> dict:
    """Draw ``settings.samples`` posterior samples of one slice of a fastMRI file, write the maps (HDF5,
    atomically) and an optional figure: reference, zero-filled, mean, std (fixed colour scale), |error|."""
    import json
    import os
    from dataclasses import asdict
    from pathlib import Path

    import h5py
    import numpy as np

    from operators import MultiCoilMRI
    from recon import priors
    from recon.data import center_crop, load_fastmri
    from recon.reconstruct import CLASSICAL, Settings, reconstruct_slice

    settings = settings or Settings(samples=16)
    settings.check()
    if settings.method in CLASSICAL:
        raise ValueError(f"uncertainty needs a posterior sampler, not the classical method {settings.method!r}")
    if settings.samples < 2:
        raise ValueError(f"uncertainty needs at least 2 samples, got {settings.samples}")
    vol = load_fastmri(path)
    if not -vol.num_slices <= slice_index < vol.num_slices:
        raise IndexError(f"slice {slice_index} out of range: the volume has {vol.num_slices} slices")
    out = Path(out)
    if not out.parent.exists():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    k = vol.kspace(slice_index)
    x, m, maps = reconstruct_slice(k, vol.mask, settings, priors.load(settings.prior), settings.seed + slice_index)
    x, m, maps = x.cpu(), m.cpu(), maps.cpu()
    zf = MultiCoilMRI(maps, m).H(m * k if vol.mask is None else k)
    crop = (min(vol.recon_size[0], x.shape[-2]), min(vol.recon_size[1], x.shape[-1]))
    x, zf = center_crop(x, crop), center_crop(zf, crop)
    ref = center_crop(vol.target(slice_index), crop) if vol.has_target else None
    res = summarize(x, ref, level)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for key in ("mean", "std", "q_lo", "q_hi"):
                v = res[key].numpy()
                f.create_dataset(key, data=v.astype(np.complex64 if np.iscomplexobj(v) else np.float32))
            f.create_dataset("samples", data=x.numpy().astype(np.complex64))
            f.attrs["settings"] = json.dumps(asdict(settings))
            f.attrs["slice"] = slice_index
            for key in ("level", "std_error_correlation", "coverage", "mean_std_in_object"):
                if key in res:
                    f.attrs[key] = res[key]
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if png:
        from recon import plots
        vmax = float((ref if ref is not None else res["mean"].abs()).max())
        panels = ([("reference", ref)] if ref is not None else []) + [("zero-filled", zf.abs()),
                                                                       ("mean", res["mean"].abs())]
        panels.append(("std", res["std"], std_max or 0.1 * vmax))
        if ref is not None:
            panels.append(("|mean - reference|", res["error"], std_max or 0.1 * vmax))
        plots.save_panels(panels, png, vmax=vmax,
                          title=f"{settings.method}, {settings.samples} samples, R={settings.acceleration:g}")
    return {k: v for k, v in res.items() if not isinstance(v, torch.Tensor)}
