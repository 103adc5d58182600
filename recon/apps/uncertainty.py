"""Uncertainty maps of one slice of a fastMRI file (``recon uncertainty``; the statistics are
``recon.uncertainty.summarize``, chapter 7, Sect. 7.4.3).

``settings.samples`` posterior samples of the slice are drawn as one batch; the mean, std and quantile maps and
the samples are written to HDF5 (atomically), with the std-error correlation and the coverage of the central
``level`` interval as attributes when the file has a reference; an optional figure shows reference, zero-filled,
mean, std (fixed colour scale) and |error|.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch

from recon.apps import io
from recon.apps.reconstruct import CLASSICAL, MRISettings, reconstruct_slice
from recon.apps.settings import select_slices
from recon.data import center_crop, load_fastmri
from recon.uncertainty import summarize


def uncertainty_file(path, out, settings: Optional[MRISettings] = None, slice_index: int = 0, png=None,
                     level: float = 0.9, std_max: Optional[float] = None) -> dict:
    """Draw the posterior samples of slice ``slice_index``, write the maps to ``out`` and, with ``png``, the
    figure. Returns the numbers of ``summarize`` (no maps)."""
    settings = settings or MRISettings(samples=16)
    settings.check()
    if settings.method in CLASSICAL:
        raise ValueError(f"uncertainty needs a posterior sampler, not the classical method {settings.method!r}")
    if settings.samples < 2:
        raise ValueError(f"uncertainty needs at least 2 samples, got {settings.samples}")
    vol = load_fastmri(path)
    [i] = select_slices(slice_index, vol.num_slices)
    out = io.check_output(out, source=path)
    k = vol.kspace(i)
    r = reconstruct_slice(k, vol.mask, settings, settings.load_prior(), settings.seed + i,
                          recon_size=vol.recon_size[:2], limits=vol.header.encoding_limits if vol.header else None,
                          encoded_width=vol.encoding_size[1])
    x, zf = r.samples.cpu(), r.zero_filled.cpu()
    crop = tuple(x.shape[-2:])
    ref = r.reference if r.reference is not None else (vol.target(i) if vol.has_target else None)
    ref = center_crop(ref.cpu(), crop) if ref is not None else None
    res = summarize(x, ref, level)
    arrays = {}
    for key in ("mean", "std", "q_lo", "q_hi"):
        v = res[key].numpy()
        arrays[key] = v.astype(np.complex64 if np.iscomplexobj(v) else np.float32)
    arrays["samples"] = x.numpy().astype(np.complex64)
    attrs = {"settings": json.dumps(asdict(settings)), "slice": i}
    attrs.update({key: res[key] for key in ("level", "std_error_correlation", "coverage", "mean_std_in_object")
                  if key in res})
    io.write_h5(out, arrays, attrs)
    if png:
        vmax = float((ref if ref is not None else res["mean"].abs()).max())
        panels = ([("reference", ref)] if ref is not None else []) + [("zero-filled", zf.abs()),
                                                                       ("mean", res["mean"].abs())]
        panels.append(("std", res["std"], std_max or 0.1 * vmax))
        if ref is not None:
            panels.append(("|mean - reference|", res["error"], std_max or 0.1 * vmax))
        io.write_png(png, panels, vmax=vmax,
                     title=f"{settings.method}, {settings.samples} samples, R={settings.acceleration:g}")
    return {k: v for k, v in res.items() if not isinstance(v, torch.Tensor)}


def command(path, out, settings: MRISettings, slice_index: int = 0, png=None, level: float = 0.9) -> int:
    """``recon uncertainty``: the maps, and the calibration numbers when the file has a reference."""
    res = uncertainty_file(path, out, settings, slice_index, png=png, level=level)
    if "coverage" in res:
        print(f"std/|error| correlation {res['std_error_correlation']:.3f}, coverage of the {res['level']:.0%} "
              f"intervals {res['coverage']:.3f}, mean std in the object {res['mean_std_in_object']:.4g}")
    print(f"wrote {out}")
    return 0
