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

What a file declares is checked before it is used (``read_input``, ``check_memory``), each with one error naming the
file: the sizes of its datasets, the ``image_size`` grid and the projector of that grid with the file's views and
detectors (whose sparse matrix grows with grid side x views x detectors) against the memory budget
(``recon.memory``); an image must be attenuation in mu/mu_water, between ``MU_MIN`` and ``MU_MAX`` (``recon.data.ct_files``) and not
negative everywhere (an image in HU, or of 1e30, is refused); the angles must be radians over at most one turn and
not all the same direction; a measured sinogram must be line integrals (not negative everywhere, at most
``MU_MAX`` x the longest path through the grid). A measured sinogram has its own views and geometry: options that
would set them for a simulated measurement (``--views``, ``--limited``, a ``--geometry`` other than the file's)
are refused, not ignored.

Samplers and TV are scale-free (``recon.samplers.base``, ``recon.classical``): they work with the unit-norm
operator internally, so step sizes (Score-ALD) and weights (TV) are independent of the number of views and the
detector, and the operator is handed over as it is. The slices of a stack are one batch; ``tv_z`` > 0 couples
them along z in DDS (``samplers.dc.TVzConsistency``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch

from operators.checks import check_choice, check_int, check_real
from operators.ct import FILTERS, MAX_ANGLES, FanBeamCT, ParallelBeamCT, angles as angle_set, fbp
from recon import classical, metrics, samplers
from recon.data import results as io
from recon.data.ct_files import check_memory, check_sinogram, read_input
from recon.pipelines.settings import BaseSettings, SliceSpec, check_preset, select_slices
from recon.priors import bundled

BASELINES = ("fbp", "tv")


def methods() -> tuple:
    """What ``--sampler`` takes: the baselines and every registered posterior sampler (plugins too)."""
    return BASELINES + tuple(samplers.available())

NOISE = ("none", "gaussian", "poisson")
MAX_GAUSSIAN_STD = 1e4   # line integrals are at most a few hundred: a larger std is a unit mistake
MAX_PHOTONS = 1e12       # incident photons per bin; beyond this the Poisson draw is not meaningful in double
MU_WATER_PER_MM = 0.0192  # linear attenuation of water near 70 keV, 1/mm
DDS_TV = samplers.dds.TV_XY  # in-plane TV weight in DDS's data consistency (experiments/RESULTS.md: chosen on
#                              anatomy-val for ct-phantom-128; kept for ct-anatomy-v2-128, see its model card)
AUTO_PRIOR = "auto"      # the prior setting that picks the bundled prior for the grid (``bundled.default_ct``)
DEFAULT_PRIOR = AUTO_PRIOR
@dataclass(kw_only=True)
class CTSettings(BaseSettings):
    method: str = "dds"
    geometry: str = "parallel"
    views: Optional[int] = 30            # sparse view: this many angles over 180 degrees (360 for fan beam)
    limited: Optional[tuple] = None      # limited angle: (start, stop) in degrees, one view per degree
    noise: str = "none"
    noise_level: float = 0.0             # Gaussian std of the line integrals, or incident photons (Poisson)
    prior: str = DEFAULT_PRIOR           # a prior spec, or "auto": the bundled CT prior for the grid (resolve_prior)
    tv_z: float = 0.0
    dds_tv: float = DDS_TV                # DDS: in-plane TV weight in the data consistency (0: the plain CG)
    tv_lam: float = 3e-3
    pixel_mm: float = 3.0                # pixel size, for the photon statistics (Poisson noise) only
    filter: str = "ramp"
    source_distance: float = 400.0
    detector_distance: float = 200.0

    def check(self) -> None:
        check_choice("CT method", self.method, methods())
        check_preset(self.method, self.preset, BASELINES)
        if self.method in BASELINES and (self.steps is not None or self.samples != 1):
            raise ValueError(f"the baseline {self.method!r} takes no steps and gives one sample; drop "
                             f"--steps/--samples (they are for the samplers)")
        if self.method in ("score-ald", "score-sde") and self.steps is not None and self.steps < 2:
            raise ValueError(f"steps must be >= 2 for {self.method}, got {self.steps}")
        if self.tv_z and self.method != "dds":
            raise ValueError(f"tv_z couples slices in DDS only; {self.method!r} does not use it")
        check_real("dds_tv", self.dds_tv, minimum=0.0, maximum=1.0)
        check_choice("geometry", self.geometry, ("parallel", "fan"))
        check_choice("noise", self.noise, NOISE)
        if self.noise == "gaussian":
            check_real("noise_level (the Gaussian std of the line integrals)", self.noise_level, above=0.0,
                       maximum=MAX_GAUSSIAN_STD)
        elif self.noise == "poisson":
            check_real("noise_level (incident photons per detector bin)", self.noise_level, minimum=1.0,
                       maximum=MAX_PHOTONS)
        elif self.noise_level != 0:
            raise ValueError(f"noise_level {self.noise_level!r} is set but noise is 'none'; choose --noise gaussian "
                             f"or poisson, or drop --noise-level")
        check_real("pixel_mm", self.pixel_mm, minimum=0.01, maximum=100.0)
        if self.limited is not None:
            lim = self.limited
            if isinstance(lim, (str, bytes)) or len(lim) != 2:
                raise ValueError(f"limited must be (start, stop) in degrees, got {lim!r}")
            a, b = (check_real(f"limited {w} (degrees)", v, minimum=-360.0, maximum=720.0)
                    for w, v in zip(("start", "stop"), lim))
            if not 0 < b - a <= 360:
                raise ValueError(f"limited must be START,STOP degrees with 0 < STOP - START <= 360, got {a:g},{b:g}")
        if self.views is not None:
            check_int("views", self.views, 1, MAX_ANGLES)
        check_real("tv_z", self.tv_z, minimum=0.0)
        check_real("tv_lam", self.tv_lam, above=0.0)
        check_choice("filter", self.filter, FILTERS)
        check_real("source_distance", self.source_distance, above=0.0)
        check_real("detector_distance", self.detector_distance, minimum=0.0)
        if self.prior == AUTO_PRIOR:  # resolved by grid (resolve_prior); its candidates are bundled
            BaseSettings.check(replace(self, prior=bundled.DEFAULT_CT))
        else:
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


def noise_std(sinogram: torch.Tensor, settings: CTSettings) -> Optional[float]:
    """The std of the line integrals' noise that ``settings`` states (None for noiseless data): the Gaussian std,
    or for Poisson counts the rms over the bins of the post-log std 1 / (mu_scale sqrt(I0 exp(-mu_scale p))),
    with p the measured line integrals (a scalar, as DDS's weight is one number per image)."""
    if settings.noise == "gaussian":
        return float(settings.noise_level)
    if settings.noise == "poisson":
        ms = MU_WATER_PER_MM * settings.pixel_mm
        var = torch.exp(ms * sinogram.double().clamp_min(0)) / settings.noise_level / ms ** 2
        return float(var.mean().sqrt())
    return None


def sampler_for(settings: CTSettings, sigma_y: Optional[float] = None, op=None, prior=None) -> samplers.Sampler:
    """The sampler of ``settings.method`` for the CT operator ``op`` and the prior, through the registry
    (``samplers.for_problem``: the preset, then the stated settings, then the sampler's defaults for projection
    data, e.g. DDS's steps from the views' coverage and the grid, ``samplers.DDS.steps_for``). DDS gets the stated
    noise ``sigma_y`` of the line integrals (``noise_std``; None: noiseless), the in-plane TV weight ``dds_tv`` and
    the coupling along z ``tv_z``, unless a preset sets its own."""
    kw = ({"sigma_y": sigma_y or None, "tv_xy": settings.dds_tv, "tv_z": settings.tv_z}
          if settings.method == "dds" and settings.preset is None else {})
    return samplers.for_problem(settings.method, op, prior, preset=settings.preset, steps=settings.steps, **kw)


SCALE_WARN = 2.0  # a grid this many times the prior's training grid (per side) gets a warning, unless the prior
#                   records the largest grid its training covered (``DiffusionPrior.max_grid``)


def _warn_scale(prior, grid) -> None:
    """Warn when the grid is larger than the prior's training covered (``max_grid``; when not recorded,
    ``SCALE_WARN`` times the training grid): a fully convolutional prior runs there, but it sees the anatomy at a
    pixel scale it never saw (experiments/RESULTS.md, "Real CT at its native 512 x 512 geometry": level with TV
    instead of ahead of it)."""
    size = getattr(prior, "image_size", None)
    if not size:
        return
    limit = getattr(prior, "max_grid", None)
    if limit is None:
        limit = SCALE_WARN * max(size[-2:]) - 1
    if max(grid[-2:]) <= limit:
        return
    import warnings
    warnings.warn(f"the prior {prior.name or 'given'!r} was trained on {size[-2]} x {size[-1]} slices and covers "
                  f"grids up to {int(limit)} pixels per side; on this {grid[-2]} x {grid[-1]} grid it sees the anatomy "
                  f"at a pixel scale it never saw (with ct-anatomy-v2-128 on real 512 x 512 heads DDS was only level "
                  f"with TV; the default --prior {AUTO_PRIOR} takes {bundled.DEFAULT_CT_NATIVE} from "
                  f"{bundled.CT_NATIVE_FROM} pixels; compare with --sampler tv)", stacklevel=3)


def resolve_prior(settings: CTSettings, grid) -> CTSettings:
    """The settings with ``prior`` "auto" replaced by the bundled CT prior for the image grid (H, W)
    (``bundled.default_ct``: ``ct-anatomy-v3-128`` from 256 pixels per side, ``ct-anatomy-v2-128`` below); other
    settings are returned as they are."""
    if settings.prior != AUTO_PRIOR:
        return settings
    return replace(settings, prior=bundled.default_ct(grid))


def reconstruct(sinogram: torch.Tensor, op, settings: CTSettings, prior=None, progress: bool = False) -> torch.Tensor:
    """Reconstruct a stack (S, n_angles, n_det) or a slice; returns samples (N, S, H, W) (N = 1 for baselines).
    With ``prior`` None the settings' prior is loaded ("auto": the bundled one for the grid, ``resolve_prior``)."""
    settings.check()
    settings = resolve_prior(settings, tuple(op.ishape))
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
    prior.check_grid(tuple(op.ishape))  # fully convolutional priors run on any grid; others only on their own
    _warn_scale(prior, tuple(op.ishape))
    s = sampler_for(settings, noise_std(y, settings), op, prior)
    s.progress = progress
    # the prior's answer for this grid: attention within tiles of its training grid where the views cover the full
    # angle, and coarse denoising at high noise on grids several times its training grid (``prior.for_grid``)
    view = prior.for_grid(tuple(op.ishape), limited_angle=op.angular_coverage < samplers.dds.LIMITED_BELOW,
                          coarse=True)
    return s(y, op, view.to(dev), n_samples=settings.samples, generator=torch.Generator().manual_seed(settings.seed))


# --- files ---------------------------------------------------------------------------------------------------
def score(reference: torch.Tensor, x: torch.Tensor) -> dict:
    """PSNR/SSIM/NMSE of a stack in mu units, data range = the reference's maximum (bone)."""
    return metrics.evaluate(reference.numpy(), x.float().numpy(), float(reference.max()))


def _refuse_measurement_options(path, sino, geo, settings: CTSettings, given: Optional[dict]) -> None:
    """A measured sinogram has its own views and geometry: refuse the options (``given``: option -> value as the
    command line gave them; None: the settings, whose ``limited`` is then the one that cannot be default) that
    would set them for a simulated measurement."""
    n = sino.shape[-2]
    if given is None:
        given = {"--limited": settings.limited} if settings.limited is not None else {}
    for option in ("--views", "--limited"):
        if given.get(option) is not None:
            raise ValueError(f"{option} {given[option]} sets the views of a measurement simulated from an image, but "
                             f"{path} holds a measured sinogram with its own {n} view{'s' if n != 1 else ''} "
                             f"('angles'); drop {option}")
    stated = geo.get("geometry")
    if given.get("--geometry") is not None and stated is not None and given["--geometry"] != stated:
        raise ValueError(f"--geometry {given['--geometry']}, but {path} states its sinogram's geometry: {stated}; "
                         f"drop --geometry")


def reconstruct_file(path, out, settings: Optional[CTSettings] = None, slices: SliceSpec = None, png=None,
                     progress: bool = True, given: Optional[dict] = None) -> dict:
    """Reconstruct ``slices`` of a CT file (None: all; an index, a list, a slice or text such as "0:4"; see
    ``select_slices``), write ``out`` (HDF5) and, with ``png``, a figure of the first slice. ``given`` (option ->
    value, the options the command line set) lets a measured sinogram refuse ``--views``/``--limited``/
    ``--geometry``, which would otherwise be ignored (module docstring)."""
    settings = settings or CTSettings()
    settings.check()
    img, sino, geo = read_input(path)
    idx = None
    if slices is not None:
        idx = select_slices(slices, len(img) if img is not None else len(sino))
        img = img[idx] if img is not None else None
        sino = sino[idx] if sino is not None else None
    out = io.check_output(out, source=path)
    png = io.check_figure_path(png, sources=[path], others=[out])
    if sino is not None:
        if settings.noise != "none":
            raise ValueError(f"{path} holds a measured sinogram; --noise {settings.noise} applies only when a "
                             f"measurement is simulated from an 'image'")
        _refuse_measurement_options(path, sino, geo, settings, given)
        settings.geometry = geo.get("geometry", settings.geometry)
        for k in ("source_distance", "detector_distance"):
            if k in geo:
                setattr(settings, k, float(geo[k]))
        size = geo.get("image_size", tuple(img.shape[-2:]) if img is not None else None)
        if size is None:
            raise ValueError(f"{path}: a sinogram without an image needs the 'image_size' attribute")
        op = operator(settings, size, geo["angles"], sino.shape[-1],
                      float(geo.get("detector_spacing", 1.0)))  # the rays only: the projector is built on use
        check_memory(path, op, len(sino), settings.samples)
        check_sinogram(path, sino, tuple(op.ishape[-2:]))
    else:
        op = operator(settings, tuple(img.shape[-2:]))
        check_memory(path, op, len(img), settings.samples)
        sino = simulate(img, op, settings, torch.Generator().manual_seed(settings.seed + 1))
    settings = resolve_prior(settings, tuple(op.ishape))  # the file records the prior that was used
    x = reconstruct(sino, op, settings, progress=progress).cpu()
    mean = x.mean(0)
    arrays = {"reconstruction": mean, "sinogram": sino, "angles": op.angles, "fbp": fbp(sino, op, settings.filter)}
    if len(x) > 1:
        arrays.update(samples=x, std=x.std(0))
    res = {"out": str(out), "metrics": None}
    if img is not None:
        arrays["reference"] = img
    if img is not None and float(img.max()) > 0:  # an empty (all-air) reference has no data range to score on
        res["metrics"] = {"fbp": score(img, arrays["fbp"]), settings.method: score(img, mean)}
    s = asdict(settings)
    s["limited"] = list(settings.limited) if settings.limited else None
    arrays["slices"] = torch.as_tensor(idx if slices is not None else range(len(mean)), dtype=torch.int64)
    io.write_h5(out, arrays, {"source": str(path), "modality": "ct", "settings": json.dumps(s),
                              "metrics": json.dumps(res["metrics"])})
    if png:
        from recon.data.ct import window
        from recon.data.phantoms import mu_to_hu
        w = lambda v: window(mu_to_hu(v))  # noqa: E731
        panels = ([("reference", w(img[0]))] if img is not None else []) + \
                 [("FBP", w(arrays["fbp"][0])), (settings.method, w(mean[0]))]
        io.write_png(png, panels, vmax=1.0, title=f"CT: {len(op.angles)} views, {settings.geometry} beam")
    return res
