"""Reconstruct slices of a fastMRI file (``recon reconstruct``).

For each selected slice: read the k-space lazily; put it on the grid of the geometry protocol
(``recon.data.geometry``: ``full-fov``, ``image-crop`` or ``kspace-crop``; ``auto`` takes ``full-fov`` when the
prior runs on any grid, else ``image-crop`` for retrospective and ``kspace-crop`` for prospective data); use the
file's own mask (test files: exactly the acquired samples) or undersample retrospectively with a mask from
``operators.masks`` (never on dead lines); estimate ESPIRiT maps from the calibration region on that grid
(multi-coil; a single-coil file uses a map of ones); reconstruct with a sampler or a classical method; crop to
the header's recon matrix; compare with the file's reference (``reconstruction_rss``/``_esc``) when it has one,
as the fastMRI leaderboard does (magnitude cropped to the recon matrix, data range = the volume's ``max``
attribute, SSIM per slice); under ``kspace-crop`` the reference is the RSS of the same cropped, fully sampled
k-space. The result file holds
the reconstruction |mean|, the samples, mean and std, the mask and maps, metrics and every setting as
attributes; it is written atomically (``recon.data.results``).

A non-Cartesian file (``recon.data.noncartesian_io``: samples, trajectory, density weights) is reconstructed on
its own image matrix with ``operators.NonCartesianMRI``: ESPIRiT maps from the gridded, fully sampled centre of
its k-space (``operators.noncartesian.calibration_maps``), then the sampler or classical method; for such data
``zero-filled`` is the density-compensated gridding image. Cartesian options (a mask, an acceleration, a
geometry protocol) do not apply and are refused. The result holds the trajectory and density weights in place of
the mask.

Before any work a Cartesian file's contents are checked for what would otherwise be used silently
(``check_cartesian``): the file's mask must be a sampling pattern, 0 or 1 per column (a mask of 0.5 is refused);
the k-space of a selected slice must not be all zero (nothing measured: said as such, not as a missing
calibration region). A reference that is all zero in a slice (``reconstruction_rss``/``_esc``) cannot score it
(PSNR and NMSE divide by it): the slice is reconstructed without metrics and one warning names the file and the
slices (``scorable_slices``); a command that needs no reference should not fail on a broken one. Commands that
read Cartesian k-space only refuse a non-Cartesian file by name (``refuse_noncartesian``).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from operators import MultiCoilMRI, NonCartesianMRI, espirit, masks, trajectories
from operators.noncartesian import calibration_maps
from recon import classical, metrics, samplers
from recon.data import results as io
from operators.checks import check_choice, check_real
from recon.pipelines.settings import BaseSettings, SliceSpec, check_preset, select_slices
from recon.data import center_crop, geometry, load_fastmri, mrd, noncartesian_io
from recon.data.prewhiten import intensity_preserving_maps
from recon.data.errors import DataError
from recon.priors import bundled

CLASSICAL = {"zero-filled": classical.zero_filled, "cg-sense": classical.cg_sense,
             "l1-wavelet": classical.l1_wavelet, "tv": classical.tv}


def methods() -> list:
    """What ``--sampler`` takes: the classical methods and every registered posterior sampler (plugins too)."""
    return sorted(CLASSICAL) + samplers.available()

DEFAULT_PRIOR = bundled.DEFAULT_MRI
MAX_ACCELERATION = 1000.0


@dataclass(kw_only=True)
class MRISettings(BaseSettings):
    method: str = "dds"
    mask: str = "random"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    prior: str = DEFAULT_PRIOR
    protocol: str = "auto"
    noise_std: str = "auto"  # DDS's data weight: "auto" (estimated from k-space), "none" (noiseless CG), or a std
    dds_tv: Optional[float] = None  # DDS's in-plane TV weight in the data consistency; None: DDS's default (3e-4)
    prewhiten: bool = True  # ISMRMRD/MRD files: whiten the coil noise with the file's noise acquisitions

    def check(self) -> None:
        check_choice("method", self.method, methods())
        check_preset(self.method, self.preset, CLASSICAL)
        dds_noise(self.noise_std)
        if self.method != "dds" and str(self.noise_std) != "auto":
            raise ValueError(f"--noise-std sets DDS's data weight; the sampler {self.method!r} does not take it")
        if self.dds_tv is not None:
            if self.method != "dds":
                raise ValueError(f"--dds-tv sets DDS's in-plane TV; the sampler {self.method!r} does not take it")
            check_real("dds_tv", self.dds_tv, minimum=0.0, maximum=1.0)
        check_choice("protocol", self.protocol, ("auto",) + tuple(geometry.PROTOCOLS))
        check_choice("mask", self.mask, masks.available())
        check_real("acceleration", self.acceleration, minimum=1.0, maximum=MAX_ACCELERATION)
        check_real("center_fraction", self.center_fraction, above=0.0, below=1.0)
        if self.method in CLASSICAL and (self.steps is not None or self.samples != 1):
            raise ValueError(f"the classical method {self.method!r} takes no steps and gives one sample; drop "
                             f"--steps/--samples (they are for the samplers)")
        if self.method == "score-mri" and self.steps is not None and self.steps < 2:
            raise ValueError(f"steps must be >= 2 for score-mri, got {self.steps}")
        if self.method == "score-ald" and self.steps is not None and self.steps < 2:
            raise ValueError(f"steps (the number of noise levels) must be >= 2 for score-ald, got {self.steps}")
        super().check()


def with_stated_noise(settings: MRISettings, vol) -> MRISettings:
    """DDS's data weight from the noise level a file states (prewhitened raw data: ``vol.noise_std``, k-space
    units) where ``noise_std`` is "auto"; otherwise ``settings`` as they are (the level is then estimated from
    the k-space periphery)."""
    stated = vol.noise_std
    if settings.method != "dds" or str(settings.noise_std).strip().lower() != "auto" or stated is None:
        return settings
    from dataclasses import replace
    return replace(settings, noise_std=repr(float(stated)))


def require_posterior(settings: MRISettings, task: str) -> None:
    """``task`` (uncertainty, calibration) needs a posterior sampler drawing at least 2 samples."""
    if settings.method in CLASSICAL:
        raise ValueError(f"{task} needs a posterior sampler, not the classical method {settings.method!r}")
    if settings.samples < 2:
        raise ValueError(f"{task} needs at least 2 samples per slice (--samples), got {settings.samples}")


def dds_noise(text) -> dict:
    """DDS keyword arguments of a ``noise_std`` setting: "auto" -> {} (the default: estimated from the data),
    "none" -> the paper's noiseless CG, a number >= 0 -> ``sigma_y`` in k-space units."""
    t = str(text).strip().lower()
    if t == "auto":
        return {}
    if t == "none":
        return {"sigma_y": None, "cg_iter": 5}
    try:
        v = float(t)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"noise_std must be 'auto', 'none' or a noise std >= 0 in k-space units, got {text!r}")
    return {"sigma_y": v}


UNCERTAINTY_DDS_TV = 0.0  # DDS's in-plane TV for posterior samples (recon uncertainty / calibrate) when unset


def for_uncertainty(settings: MRISettings) -> MRISettings:
    """``settings`` for drawing posterior samples: DDS without the in-plane TV unless ``dds_tv`` is set. The TV
    step sharpens the mean but pulls every sample onto one TV-regularised fit, which narrows the spread and
    weakens its relation to the error (experiments/RESULTS.md, "Calibration with the TV default"); the plain
    noise-weighted data step keeps the samples posterior-like."""
    if settings.method == "dds" and settings.dds_tv is None:
        from dataclasses import replace
        return replace(settings, dds_tv=UNCERTAINTY_DDS_TV)
    return settings


def sampler_for(settings: MRISettings, A=None, prior=None):
    """The sampler of ``settings.method`` for the operator ``A`` and the prior, through the registry
    (``samplers.for_problem``: the preset, then the stated settings, then the sampler's defaults for the problem);
    ``steps`` sets the length (Score-ALD's levels); DDS gets its data weight from ``noise_std`` (``dds_noise``)
    and its in-plane TV from ``dds_tv``."""
    kw = {}
    if settings.method == "dds":
        kw.update(dds_noise(settings.noise_std))
        if settings.dds_tv is not None:
            kw["tv_xy"] = float(settings.dds_tv)
    return samplers.for_problem(settings.method, A, prior, preset=settings.preset, steps=settings.steps, **kw)


LINE_MASKS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d")


def check_reachable(mask: str, acceleration: float, center_fraction: float, shape) -> None:
    """Refuse an acceleration the mask cannot give on k-space of ``shape``: for the fastMRI-style line masks, a
    fully sampled centre that alone exceeds the line budget W / R (fastMRI then samples only the centre, at
    another acceleration than the one recorded); for point masks, more than the number of k-space points."""
    h, w = int(shape[-2]), int(shape[-1])
    if mask in LINE_MASKS:
        centre = round(w * center_fraction)
        if acceleration > 1 and centre > w / acceleration:
            raise ValueError(f"acceleration {acceleration:g} with center_fraction {center_fraction:g} on {w} "
                             f"columns is not reachable: the centre alone ({centre} columns) exceeds the "
                             f"{w / acceleration:.3g} columns of that acceleration; lower the acceleration or the "
                             f"center fraction")
    elif acceleration > h * w:
        raise ValueError(f"acceleration {acceleration:g} exceeds the {h * w} k-space points of the slice")


def _mask_for(settings: MRISettings, shape, seed):
    params = {"acceleration": settings.acceleration}
    if settings.mask in LINE_MASKS:
        params["center_fraction"] = settings.center_fraction
    check_reachable(settings.mask, settings.acceleration, settings.center_fraction, shape)
    return masks.get(settings.mask, **params)(tuple(shape), seed=seed)


def refuse_noncartesian(path, command: str) -> None:
    """``command`` reads Cartesian fastMRI k-space only: refuse a non-Cartesian file, saying so."""
    if noncartesian_io.is_noncartesian(path):
        raise DataError(f"{path} holds non-Cartesian samples ('traj', 'data'); {command} supports Cartesian fastMRI "
                        f"files ('kspace') only (recon reconstruct {path} reconstructs it)")


def _binary(mask: torch.Tensor) -> bool:
    return bool(((mask == 0) | (mask == 1)).all())


def _zero(x: torch.Tensor) -> bool:
    return not bool((x != 0).any())


def _listed(slices) -> str:
    return f"slice {slices[0]}" if len(slices) == 1 else f"slices {', '.join(map(str, slices))}"


def load_volume(path, prewhiten: bool = True):
    """The raw data of a Cartesian or non-Cartesian MRI file: an ISMRMRD/MRD file (``recon.data.mrd``, noise
    prewhitened where it has noise acquisitions), else a fastMRI file (``load_fastmri``) or the toolkit's
    non-Cartesian layout (``noncartesian_io``). Each answers ``kspace(i)`` or ``samples(i)``, ``mask_of(i)``,
    ``noise_std`` and ``whitening_inverse``."""
    if mrd.is_mrd(path):
        return mrd.load_mrd(path, prewhiten=prewhiten)
    if noncartesian_io.is_noncartesian(path):
        return noncartesian_io.load_noncartesian(path)
    return load_fastmri(path)


def check_cartesian(path, vol, idx) -> None:
    """Refuse, before any work, what a reconstruction of slices ``idx`` of the fastMRI volume ``vol`` would use
    silently: a mask that is not 0/1 (a test file's sampling pattern: 1 for an acquired column, 0 for a
    missing one), and k-space that is all zero in a selected slice."""
    for i in idx:
        m = vol.mask_of(i)
        if m is not None and not _binary(m):
            odd = m[(m != 0) & (m != 1)]
            raise DataError(f"{path}: 'mask' must be 0 or 1 per k-space column (1: acquired), got values such as "
                            f"{float(odd[0]):g}; a sampling mask is binary")
    empty = [i for i in idx if _zero(vol.kspace(i))]
    if empty:
        raise DataError(f"{path}: the k-space is all zero in {_listed(empty)} of {vol.num_slices} (nothing was "
                        f"measured there); select other slices (--slices) or check the file")


def check_recon_matrix(path, vol) -> None:
    """The recon matrix (the size of the result) comes from the header's reconSpace, else from the target: refuse
    a file with neither, where it has a header that names no sizes or cannot be read (a file without any header
    is reconstructed at its k-space size)."""
    if vol.has_target:
        return
    if vol.header is not None and not vol.header.sizes_given:
        raise DataError(f"{path}: the ismrmrd_header names no encodedSpace/reconSpace matrixSize and the file has "
                        "no target, so the recon matrix is unknown")
    if vol.header is None:
        with h5py.File(path, "r") as f:
            unreadable = "ismrmrd_header" in f
        if unreadable:
            raise DataError(f"{path}: the ismrmrd_header cannot be read and the file has no target, so the recon "
                            f"matrix is unknown")


def scorable_slices(path, vol, idx) -> set:
    """The slices of ``idx`` whose reference (``reconstruction_rss``/``_esc``) can score them: all of them when
    the file has none (nothing to exclude), else those whose reference is not all zero; one warning names the
    others, which are reconstructed without metrics."""
    if not vol.has_target:
        return set(idx)
    zero = [i for i in idx if _zero(vol.target(i))]
    if zero:
        key = getattr(vol, "target_key", "reconstruction_rss")
        warnings.warn(f"{path}: {key} is all zero in {_listed(zero)}, so there is nothing to score against there; "
                      f"reconstructing {'it' if len(zero) == 1 else 'them'} without metrics", stacklevel=2)
    return set(idx) - set(zero)


@dataclass
class SliceResult:
    """One reconstructed slice: ``samples`` (N, h, w) complex and the SENSE-combined ``zero_filled`` image
    (h, w), cropped to the recon matrix; the ``mask`` and ``maps`` on the protocol's grid; ``reference`` the
    protocol's own reference image (kspace-crop) or None."""
    samples: torch.Tensor
    zero_filled: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    protocol: str
    reference: Optional[torch.Tensor] = None


def resolve_protocol(protocol: str, prospective: bool, prior) -> str:
    """``auto``: full-fov when the prior runs on any grid (or there is none), else image-crop (retrospective) or
    kspace-crop (prospective data, which image-crop cannot use)."""
    if protocol != "auto":
        return protocol
    if prior is None or prior.any_size:
        return "full-fov"
    return "kspace-crop" if prospective else "image-crop"


def reconstruct_slice(k: torch.Tensor, file_mask, settings: MRISettings, prior, slice_seed: int,
                      recon_size=None, limits=None, encoded_width=None, whitening_inverse=None) -> SliceResult:
    """One slice (C, H, W) of raw k-space through the settings' protocol; ``recon_size`` (default: the k-space
    size), ``limits`` and ``encoded_width`` come from the file's header. Prewhitened k-space comes with the
    inverse whitener (``whitening_inverse``, (C, C)): its ESPIRiT maps are rescaled so that the image keeps the
    unwhitened intensity (``prewhiten.intensity_preserving_maps``)."""
    if file_mask is not None and not _binary(file_mask):
        raise DataError("the file's mask must be 0 or 1 per k-space column (a sampling pattern), got other values")
    if _zero(k):
        raise DataError("the k-space of this slice is all zero (nothing was measured)")
    dev = torch.device(settings.device)
    protocol = resolve_protocol(settings.protocol, file_mask is not None, prior)
    fixed = prior is not None and not prior.any_size
    grid = geometry.prepare(k, protocol, tuple(recon_size or k.shape[-2:])[:2],
                            size=tuple(prior.image_size) if fixed and prior.image_size else None,
                            file_mask=file_mask, limits=limits, encoded_width=encoded_width)
    kk = grid.kspace.to(dev)
    if grid.mask is not None:
        m = grid.mask.to(dev)
        y = kk
    else:
        m = _mask_for(settings, kk.shape, slice_seed).to(dev) * grid.alive.to(dev)
        y = m * kk
    maps = torch.ones_like(kk) if kk.shape[0] == 1 else espirit.maps_for_mask(y, m)
    if whitening_inverse is not None and kk.shape[0] > 1:
        maps = intensity_preserving_maps(maps, whitening_inverse.to(dev))
    A = MultiCoilMRI(maps, m)
    if settings.method in CLASSICAL:
        x = CLASSICAL[settings.method](y, A)[None]
    else:
        prior.check_grid(kk.shape[-2:])
        gen = torch.Generator().manual_seed(slice_seed)
        x = sampler_for(settings, A, prior)(y, A, prior.to(dev), n_samples=settings.samples, generator=gen)
    crop = (min(grid.crop[0], x.shape[-2]), min(grid.crop[1], x.shape[-1]))
    return SliceResult(center_crop(x, crop), center_crop(A.pinv(y), crop), m, maps, protocol, grid.reference)


def reconstruct_file(path, out, settings: Optional[MRISettings] = None, slices: SliceSpec = None, png=None,
                     progress: bool = True) -> dict:
    """Reconstruct ``slices`` of a fastMRI file (None: all; an index, a list, a slice or text such as "0:4"; see
    ``select_slices``) and write ``out`` (HDF5) and, with ``png``, a figure of the first slice."""
    settings = settings or MRISettings()
    settings.check()
    vol = load_volume(path, settings.prewhiten)
    settings = with_stated_noise(settings, vol)
    if not vol.cartesian:
        return reconstruct_noncartesian_file(path, out, settings, slices, png=png, vol=vol)
    idx = select_slices(slices, vol.num_slices)
    out = io.check_output(out, source=path)
    check_recon_matrix(path, vol)
    check_cartesian(path, vol, idx)
    scorable = scorable_slices(path, vol, idx)
    prior = None if settings.method in CLASSICAL else settings.load_prior()
    limits = vol.header.encoding_limits if vol.header else None
    maxval = float(vol.attrs["max"]) if "max" in vol.attrs else None
    samples, mask_list, maps_list, rows, protocol = [], [], [], [], None
    for i in idx:
        r = reconstruct_slice(vol.kspace(i), vol.mask_of(i), settings, prior, settings.seed + i,
                              recon_size=vol.recon_size[:2], limits=limits, encoded_width=vol.encoding_size[1],
                              whitening_inverse=vol.whitening_inverse)
        protocol = r.protocol
        xc = r.samples.cpu()
        samples.append(xc)
        mask_list.append(r.mask.cpu().expand(r.maps.shape[-2:]))
        maps_list.append(r.maps.cpu())
        ref, mv = r.reference, None
        if ref is None and i in scorable and vol.has_target:
            ref, mv = vol.target(i), maxval
        if ref is not None:
            ref = center_crop(ref.cpu(), (min(xc.shape[-2], ref.shape[-2]), min(xc.shape[-1], ref.shape[-1])))
            rec = center_crop(xc.mean(0).abs(), tuple(ref.shape[-2:]))
            mv = mv if mv is not None else float(ref.max())
            rows.append({"slice": i, "psnr": metrics.psnr(ref, rec, mv), "ssim": metrics.ssim(ref, rec, mv),
                         "nmse": metrics.nmse(ref, rec)})
    return _write_results(path, out, settings, samples, rows, idx, png, protocol,
                          {"mask": torch.stack(mask_list).numpy().astype(np.float32),
                           "maps": torch.stack(maps_list).numpy().astype(np.complex64)}, {},
                          lambda shape: center_crop(vol.target(idx[0]), shape)
                          if vol.has_target and idx[0] in scorable else None,
                          settings.method)


def _write_results(path, out, settings, samples, rows, idx, png, protocol, arrays, attrs, reference, label):
    """Write the result file (and figure) of ``samples`` (one (N, h, w) per slice) with the modality's extra
    ``arrays``/``attrs``; ``reference(shape)`` is the first slice's reference for the figure (or None)."""
    s = torch.stack(samples)                       # (S, N, h, w)
    mean = s.mean(1)
    std = (s - mean[:, None]).abs().square().mean(1).sqrt()
    summary = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "nmse")} if rows else {}
    arrays = {"reconstruction": mean.abs().numpy().astype(np.float32),
              "samples": s.numpy().astype(np.complex64),
              "mean": mean.numpy().astype(np.complex64),
              "std": std.numpy().astype(np.float32),
              **arrays,
              "slices": np.asarray(idx, dtype=np.int64)}
    attrs = {"source": str(path), "modality": "mr", "settings": json.dumps(asdict(settings)),
             "protocol_used": protocol, **attrs}
    attrs.update({k: "" if v is None else v for k, v in asdict(settings).items()})
    attrs.update(summary)
    if rows:
        attrs["metrics"] = json.dumps(rows)
    io.write_h5(out, arrays, attrs)
    if png:
        panels = [("reconstruction |mean|", mean[0].abs())]
        ref = reference(tuple(mean.shape[-2:]))
        if ref is not None:
            panels.insert(0, ("reference", ref))
        if s.shape[1] > 1:
            panels.append(("std", std[0]))
        io.write_png(png, panels, title=f"{Path(path).name} slice {idx[0]}: {label}")
    return {"slices": idx, "metrics": rows, "summary": summary, "out": str(out)}


def reconstruct_noncartesian_slice(y: torch.Tensor, vol, settings: MRISettings, prior, slice_seed: int):
    """One slice (C, K) of a non-Cartesian file: (samples (N, H, W), gridding image (H, W), maps (C, H, W)); maps
    of prewhitened samples keep the unwhitened intensity (``reconstruct_slice``)."""
    dev = torch.device(settings.device)
    dcf = vol.density if vol.density is not None else trajectories.density_compensation(vol.trajectory, vol.matrix)
    maps = calibration_maps(y, vol.trajectory, vol.matrix, dcf)
    winv = vol.whitening_inverse
    if winv is not None and maps.shape[0] > 1:
        maps = intensity_preserving_maps(maps, winv)
    y = y.to(dev)
    A = NonCartesianMRI(maps.to(dev), vol.trajectory, dcf=dcf)
    if settings.method == "zero-filled":
        x = A.gridding(y)[None]
    elif settings.method in CLASSICAL:
        x = CLASSICAL[settings.method](y, A)[None]
    else:
        prior.check_grid(vol.matrix)
        gen = torch.Generator().manual_seed(slice_seed)
        x = sampler_for(settings, A, prior)(y, A, prior.to(dev), n_samples=settings.samples, generator=gen)
    return x, A.gridding(y), maps


def reconstruct_noncartesian_file(path, out, settings: MRISettings, slices: SliceSpec = None, png=None,
                                  vol=None) -> dict:
    """``reconstruct_file`` for a non-Cartesian file (module docstring); ``vol`` the file opened already."""
    if settings.protocol != "auto":
        raise ValueError(f"--protocol {settings.protocol} is a Cartesian geometry protocol; {path} holds "
                         f"non-Cartesian samples, reconstructed by NonCartesianMRI on the file's own matrix")
    vol = vol if vol is not None else noncartesian_io.load_noncartesian(path)
    idx = select_slices(slices, vol.num_slices)
    out = io.check_output(out, source=path)
    empty = [i for i in idx if _zero(vol.samples(i))]
    if empty:
        raise DataError(f"{path}: the samples ('data') are all zero in {_listed(empty)} of {vol.num_slices} "
                        f"(nothing was measured there); select other slices (--slices) or check the file")
    scorable = scorable_slices(path, vol, idx)
    prior = None if settings.method in CLASSICAL else settings.load_prior()
    maxval = float(vol.attrs["max"]) if "max" in vol.attrs else None
    samples, maps_list, rows = [], [], []
    for i in idx:
        x, _, maps = reconstruct_noncartesian_slice(vol.samples(i), vol, settings, prior, settings.seed + i)
        xc = x.cpu()
        samples.append(xc)
        maps_list.append(maps.cpu())
        ref = vol.target(i) if i in scorable else None
        if ref is not None:
            rec = xc.mean(0).abs()
            mv = maxval if maxval is not None else float(ref.max())
            rows.append({"slice": i, "psnr": metrics.psnr(ref, rec, mv), "ssim": metrics.ssim(ref, rec, mv),
                         "nmse": metrics.nmse(ref, rec)})
    density = vol.density if vol.density is not None else \
        trajectories.density_compensation(vol.trajectory, vol.matrix)
    return _write_results(path, out, settings, samples, rows, idx, png, "non-cartesian",
                          {"maps": torch.stack(maps_list).numpy().astype(np.complex64),
                           "traj": vol.trajectory.numpy().astype(np.float32),
                           "density_weights": density.numpy().astype(np.float32)},
                          {"trajectory": vol.family},
                          lambda shape: vol.target(idx[0]) if vol.has_target and idx[0] in scorable else None,
                          f"{settings.method} ({vol.family})")
