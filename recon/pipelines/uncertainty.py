"""Uncertainty maps of one slice of a raw MRI file (``recon uncertainty``; the statistics are
``recon.uncertainty.summarize``, chapter 7, Sect. 7.4.3).

``settings.samples`` posterior samples of the slice are drawn as one batch; the mean, std and quantile maps and
the samples are written to HDF5 (atomically), with the std-error rank and linear correlations and the coverage of
the central ``level`` interval as attributes when the file has a reference; an optional figure shows reference,
zero-filled, mean, std (fixed colour scale) and |error|.

The file must hold Cartesian fastMRI k-space (a non-Cartesian file is refused, saying so) whose contents pass
``recon.pipelines.mri.check_cartesian`` (a 0/1 mask, k-space not all zero); a prospective file whose
reference is all zero in the slice is sampled without the calibration numbers, with a warning.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch

from operators.checks import check_real, is_int
from recon.data import results as io
from recon.pipelines.mri import (MRISettings, check_cartesian, for_uncertainty, load_volume, refuse_noncartesian,
                                 require_posterior, reconstruct_slice, scorable_slices, with_stated_noise)
from recon.pipelines.settings import select_slices
from recon.data import center_crop
from recon.data.errors import DataError
from recon.pipelines.calibration import mvue_reference
from recon.uncertainty import Calibration, coverage, object_of, rank_correlation, summarize


def _load_calibration(calibration, settings: MRISettings) -> Optional[Calibration]:
    """The calibration (a Calibration or a path), checked against the sampler, mask and acceleration."""
    if calibration is None:
        return None
    cal = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
    source = "the calibration" if isinstance(calibration, Calibration) else f"calibration file {calibration}"
    cal.check_matches(settings.method, settings.mask, settings.acceleration, source=source)
    if settings.method == "dds":
        made = (cal.info or {}).get("noise_std")
        if made is None:
            warnings.warn(f"{source} does not record DDS's data weight (--noise-std); it was made before DDS "
                          f"weighed the data by its noise, with the noiseless CG: calibrate again for the default, "
                          f"or pass --noise-std none", stacklevel=2)
        elif str(made).lower() != str(settings.noise_std).lower():
            warnings.warn(f"{source} was made with DDS --noise-std {made}, these samples with "
                          f"{settings.noise_std}: its intervals may not hold their level", stacklevel=2)
        tv_made = (cal.info or {}).get("dds_tv", "unrecorded")
        if made is not None and tv_made != settings.dds_tv:
            said = "does not record DDS's in-plane TV (--dds-tv; made before the TV)" if tv_made == "unrecorded" \
                else f"was made with DDS --dds-tv {tv_made if tv_made is not None else 'default'}"
            warnings.warn(f"{source} {said}, these samples with --dds-tv "
                          f"{settings.dds_tv if settings.dds_tv is not None else 'default'}: its intervals may not "
                          f"hold their level; calibrate again", stacklevel=2)
    return cal


def uncertainty_file(path, out, settings: Optional[MRISettings] = None, slice_index: int = 0, png=None,
                     level: float = 0.9, std_max: Optional[float] = None, calibration=None) -> dict:
    """Draw the posterior samples of slice ``slice_index``, write the maps to ``out`` and, with ``png``, the
    figure. Returns the numbers of ``summarize`` (no maps).

    ``calibration`` (a ``recon.uncertainty.Calibration`` or the path of one, from ``recon calibrate``) adds the
    calibrated interval ``lo``/``hi`` (of |x|) to the file and its width to the figure; one made for another
    sampler, mask or acceleration is refused. For retrospective files the reference is the MVUE of the fully
    sampled k-space (what the samples estimate), else the protocol's reference or the file's target."""
    settings = for_uncertainty(settings or MRISettings(samples=16))
    settings.check()
    require_posterior(settings, "uncertainty")
    check_real("level", level, above=0.0, below=1.0)
    if std_max is not None:
        check_real("std_max", std_max, above=0.0)
    if not is_int(slice_index):
        raise ValueError(f"slice must be one index, got {slice_index!r}")
    out = io.check_output(out, source=path, sources=[calibration if not isinstance(calibration, Calibration)
                                                     else None])
    png = io.check_figure_path(png, sources=[path], others=[out])
    cal = _load_calibration(calibration, settings)
    refuse_noncartesian(path, "recon uncertainty")
    vol = load_volume(path, settings.prewhiten)
    if not vol.cartesian:
        raise DataError(f"{path} holds non-Cartesian samples; recon uncertainty supports Cartesian k-space only "
                        f"(recon reconstruct {path} reconstructs it)")
    settings = with_stated_noise(settings, vol)
    [i] = select_slices(slice_index, vol.num_slices)
    check_cartesian(path, vol, [i])
    mask = vol.mask_of(i)
    if mask is not None:
        scorable = scorable_slices(path, vol, [i])
    k = vol.kspace(i)
    prior = settings.load_prior()
    r = reconstruct_slice(k, mask, settings, prior, settings.seed + i,
                          recon_size=vol.recon_size[:2], limits=vol.header.encoding_limits if vol.header else None,
                          encoded_width=vol.encoding_size[1], whitening_inverse=vol.whitening_inverse)
    x, zf = r.samples.cpu(), r.zero_filled.cpu()
    crop = tuple(x.shape[-2:])
    if mask is None:
        ref = mvue_reference(k, vol, settings, prior, r)
    else:
        ref = r.reference if r.reference is not None else (vol.target(i) if i in scorable and vol.has_target
                                                           else None)
        ref = center_crop(ref.cpu(), crop) if ref is not None else None
    res = summarize(x, ref, level)
    arrays = {}
    for key in ("mean", "std", "q_lo", "q_hi"):
        v = res[key].numpy()
        arrays[key] = v.astype(np.complex64 if np.iscomplexobj(v) else np.float32)
    arrays["samples"] = x.numpy().astype(np.complex64)
    attrs = {"source": str(path), "modality": "mr", "settings": json.dumps(asdict(settings)), "slice": i}
    attrs.update({key: res[key] for key in ("level", "std_error_rank_correlation", "std_error_correlation",
                                            "coverage", "mean_std_in_object") if key in res})
    if cal is not None:
        lo, hi = cal.interval(x)
        arrays["lo"], arrays["hi"] = lo.numpy().astype(np.float32), hi.numpy().astype(np.float32)
        attrs.update(calibration_level=cal.level, calibration_lambda=cal.lam, calibration_slices=cal.slices)
        if ref is not None:
            obj = object_of(ref)
            res["calibrated_coverage"] = coverage(lo, hi, ref, obj)
            res["calibrated_mean_width"] = float((hi - lo)[obj].mean())
            res["width_error_rank_correlation"] = rank_correlation((hi - lo)[obj], res["error"][obj])
            attrs.update(calibrated_coverage=res["calibrated_coverage"],
                         calibrated_mean_width=res["calibrated_mean_width"],
                         width_error_rank_correlation=res["width_error_rank_correlation"])
        res["calibration_level"] = cal.level
    io.write_h5(out, arrays, attrs)
    if png:
        vmax = float((ref.abs() if ref is not None else res["mean"].abs()).max())
        panels = ([("reference", ref.abs())] if ref is not None else []) + [("zero-filled", zf.abs()),
                                                                       ("mean", res["mean"].abs())]
        panels.append(("std", res["std"], std_max or 0.1 * vmax))
        if ref is not None:
            panels.append(("|mean - reference|", res["error"], std_max or 0.1 * vmax))
        if cal is not None:
            panels.append((f"calibrated {cal.level:.0%} interval width", hi - lo, std_max or 0.2 * vmax))
        io.write_png(png, panels, vmax=vmax,
                     title=f"{settings.method}, {settings.samples} samples, R={settings.acceleration:g}")
    return {k: v for k, v in res.items() if not isinstance(v, torch.Tensor)}
