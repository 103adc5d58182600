"""``recon calibrate``: calibrate a sampler's per-pixel intervals on slices of fastMRI files (issue 18; the
statistics are ``recon.uncertainty.calibrate``, conformal risk control).

For every selected slice of every file: ``settings.samples`` posterior samples as in ``recon uncertainty`` /
``recon reconstruct`` (same sampler, mask, acceleration, protocol and per-slice seed), and the reference the samples
estimate: the MVUE (SENSE combination with the slice's ESPIRiT maps) of the fully sampled k-space on the protocol's
grid, cropped like the samples. Retrospective data only: a file with its own (prospective) mask has no fully
sampled reference and is refused. The calibration file (JSON, atomic) records the sampler, mask, acceleration,
steps, prior and level it was made for; ``recon uncertainty --calibration`` refuses it for other settings.

Everything that can be refused is refused before the first sample is drawn: the files' slices against the memory
budget (``FastMRIVolume.check_memory``), and ``--smooth`` against the images it pools over (a window of 3 x smooth
pixels must fit inside them: 1e9 pixels would be a 24 GB kernel).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from operators import ifft2c
from operators.checks import check_real
from recon.data import results as io
from recon.pipelines.mri import (MRISettings, for_uncertainty, refuse_noncartesian, require_posterior,
                                    reconstruct_slice, resolve_protocol)
from recon.pipelines.settings import select_slices
from recon.data import center_crop, geometry, load_fastmri, sense_combine
from recon.uncertainty import HEURISTICS, METHODS, Calibration, calibrate, min_slices


def mvue_reference(k: torch.Tensor, vol, settings: MRISettings, prior, result) -> torch.Tensor:
    """The MVUE of the fully sampled k-space ``k`` of one slice on ``result``'s protocol grid (the grid
    ``reconstruct_slice`` used), combined with ``result.maps`` and cropped to the samples' size."""
    fixed = prior is not None and not prior.any_size
    grid = geometry.prepare(k, resolve_protocol(settings.protocol, False, prior), tuple(vol.recon_size[:2]),
                            size=tuple(prior.image_size) if fixed and prior.image_size else None, file_mask=None,
                            limits=vol.header.encoding_limits if vol.header else None,
                            encoded_width=vol.encoding_size[1])
    x = sense_combine(ifft2c(grid.kspace.to(result.maps.device)), result.maps)
    return center_crop(x, tuple(result.samples.shape[-2:])).cpu()


def check_retrospective(path, vol) -> None:
    if vol.mask is not None:
        raise ValueError(f"{path} holds undersampled (prospective) k-space with its own mask: calibration needs "
                         f"fully sampled k-space to compute the reference (the MVUE)")


def check_smooth(smooth: float, path, vol) -> None:
    """The samples of every protocol are at most as high as the file's k-space (H), so a Gaussian window that
    reaches 3 x smooth >= H pixels can fit none of its slices (``recon.uncertainty.local_rms``)."""
    height = vol.shape[-2]
    if smooth > 0 and max(1, math.ceil(3 * smooth)) >= height:
        raise ValueError(f"--smooth {smooth:g}: the window reaches 3 x smooth = {math.ceil(3 * smooth)} pixels, more "
                         f"than the images of {path} ({height} pixels high at most); expected --smooth < "
                         f"{height / 3:g}")


def calibrate_files(paths: Sequence, out, settings: Optional[MRISettings] = None, slices=None, level: float = 0.9,
                    kind: str = "learned", progress: bool = False, method: str = "empirical", offset="auto",
                    smooth: float = 0.0) -> Calibration:
    """Calibrate on ``slices`` (None: all) of every file in ``paths`` and write the calibration to ``out``."""
    settings = for_uncertainty(settings or MRISettings(samples=16))
    settings.check()
    require_posterior(settings, "calibration")
    check_real("level", level, above=0.0, below=1.0)
    if kind not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {', '.join(HEURISTICS)}, got {kind!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    check_real("smooth", smooth, minimum=0.0)
    if offset != "auto":
        check_real("offset", offset, minimum=0.0)
    paths = [paths] if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence) else list(paths)
    if not paths:
        raise ValueError("give at least one fastMRI file to calibrate on")
    out = io.check_output(out, sources=paths, suffixes=(".json",), option="--out")
    for p in paths:
        refuse_noncartesian(p, "recon calibrate")
    vols = [(p, load_fastmri(p)) for p in paths]
    for p, vol in vols:
        check_retrospective(p, vol)
        vol.check_memory()
        check_smooth(smooth, p, vol)
    plan = [(p, vol, i) for p, vol in vols for i in select_slices(slices, vol.num_slices)]
    if len(plan) < min_slices(level, method):
        raise ValueError(f"calibration ({method}) at level {level:g} needs at least {min_slices(level, method)} "
                         f"slices, the selection "
                         f"gives {len(plan)}; add files or slices (or lower --level)")
    prior = settings.load_prior()
    samples, refs = [], []
    for n, (p, vol, i) in enumerate(plan):
        k = vol.kspace(i)
        r = reconstruct_slice(k, None, settings, prior, settings.seed + i, recon_size=vol.recon_size[:2],
                              limits=vol.header.encoding_limits if vol.header else None,
                              encoded_width=vol.encoding_size[1])
        samples.append(r.samples.cpu())
        refs.append(mvue_reference(k, vol, settings, prior, r))
        if progress:
            print(f"calibration slice {n + 1}/{len(plan)} ({p}, slice {i})", flush=True)
    cal = calibrate(samples, refs, level, kind=kind, method=method, offset=offset, smooth=smooth,
                    sampler=settings.method, mask=settings.mask, acceleration=float(settings.acceleration),
                    steps=settings.steps, prior=settings.prior,
                    info={"samples": settings.samples, "protocol": settings.protocol, "noise_std": settings.noise_std,
                          "dds_tv": settings.dds_tv,
                          "center_fraction": settings.center_fraction, "files": [str(p) for p in paths]})
    cal.save(out)
    return cal
