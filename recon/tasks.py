"""Other generative tasks through the same prior and samplers: each is a forward operator plus a sampler.

- ``synthesize``: unconditional samples (Heun, DDIM or predictor-corrector); above the training grid, a base
  sample on the training grid, upsampled and refined (``cascade``).
- ``inpaint``: fill a region (mask, or ``region(...)``) by posterior sampling on ``Inpainting``; pixels outside
  are kept exactly. By default the sampling starts from the classical fill (``biharmonic``) diffused to a small
  noise level, CCDF-style (Chung et al., CVPR 2022), the level chosen on copies of the region placed in the known
  image (``strength="auto"``, ``probe_regions``); ``init=None`` samples from pure noise (Score-SDE's
  noised-measurement projection, or any ``sampler``).
  Lesion removal is inpainting the lesion with a prior of normal anatomy.
- ``insert``: paste a lesion (a patch, or a synthetic disk of given radius and contrast) at (row, col) and
  harmonise it SDEdit-style (Meng et al. 2022): noise the image to sigma = ``strength``, then run DDS back with the
  pixels away from the lesion held to the pasted image.
- ``denoise``: y = x + sigma_n z is exactly a VE-noisy sample at sigma_n, so the MMSE estimate is the prior's
  Tweedie denoiser; ``sample=True`` draws a posterior sample by DDIM from sigma_n instead.
- ``super_resolve``: DDS on ``Downsample`` (in-plane, or along the slice axis of a stack).
Data scaling is the prior's: each task divides its image by ``prior.normalization.scale`` of that image (the
samplers scale measurements themselves, ``samplers.base``), and every loop is one of the samplers' (SDEdit,
DDIM inversion and generation, the cascade's refinement: ``samplers.sdedit``, ``samplers.invert``,
``samplers.generate``; the DDIM loop ``samplers.loop.ddim``).
- ``anomaly``: pseudo-healthy projection (SDEdit from ``strength``) and the residual |x - healthy|.
- ``invert`` / ``interpolate``: deterministic DDIM inversion to sigma_max (Euler steps of the probability-flow ODE,
  Song et al. 2021; ``refine`` adds fixed-point iterations that invert each generating step exactly) and
  spherical interpolation between two images' latents.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from operators.image import Downsample, Inpainting
from recon import samplers
from recon.samplers.base import check_int
from recon.samplers.dc import HeldPixels
from recon.samplers.loop import ddim


def _gen(seed) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


CASCADE_ABOVE = 1.25   # cascade="auto": a grid whose larger side exceeds the training side by this factor
REFINE = 0.3           # the noise level the upsampled base is re-noised to (experiments/RESULTS.md, "Synthesis
#                        at sizes above the training grid")
MAX_PIXELS = 1 << 22   # synthesize: pixels (n x H x W) drawn in one batch
ASPECT = 1.0           # a grid more elongated than this holds its object in a core of this aspect (core_shape;
#                        experiments/RESULTS.md, "Elongated grids")


def synthesize(prior, n: int, shape: Optional[Sequence[int]] = None, steps: int = 30, method: str = "heun",
               seed=0, cascade="auto", refine: float = REFINE, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """``n`` unconditional samples (Heun, deterministic DDIM or predictor-corrector) in the prior's range.

    On a grid larger than the prior's training grid a network trained on small crops has never seen a whole
    image, and sampling there directly gives a field of tissue, not one object. ``cascade`` samples in two
    stages instead (cascaded diffusion, Ho et al., JMLR 2022; the second stage as SDEdit, Meng et al., ICLR 2022):
    a base sample on the grid scaled down to the training side with the aspect ratio kept (``base_shape``),
    upsampled bicubically to ``shape`` (real and imaginary parts separately), then noised to sigma = ``refine``
    and brought back by ancestral DDIM steps (eta = 1; the levels of a ``steps``-level schedule below
    ``refine``). The base fixes the layout; the refinement adds the fine texture that upsampling blurs, at noise
    too small to move the layout. ``cascade="auto"`` (the default) cascades when the larger side of ``shape``
    exceeds the training side by more than ``CASCADE_ABOVE``; True cascades whenever ``shape`` is larger than
    the base, False never. One ``seed`` (or generator) drives both stages.

    A grid larger than the training grid and more elongated than ``ASPECT`` (1: any non-square grid, fastMRI's
    readout-oversampled 640 x 320, say) holds the object in its central ``core_shape``, whose longer side is
    ``ASPECT`` times the shorter (a square): the object spans the shorter side and the rest of the longer one is
    background, as in an oversampled field of view, and the base sample is drawn on the square training grid the
    network knows best. The core is sampled as
    above (directly when it is no larger than the training grid), placed in the middle of a zero background, and
    the whole grid is refined from ``refine``. Sampled directly (``cascade=False``) the network stretches one
    object over the whole elongated grid.

    Memory: the samples are drawn in batches of at most ``max_pixels`` pixels (n x H x W; at least one sample a
    batch), one after the other from the same generator, and the refinement on a grid larger than the training
    grid attends within tiles of the training side (``DiffusionPrior.for_grid``), so memory grows with the area, not its square. With the default a batch peaks near 6 GB
    (16 samples at 512 x 512, or one at 2048 x 2048), and every grid up to 640 x 320 draws 16 samples in one
    batch."""
    if method not in samplers.available("unconditional"):
        raise ValueError(f"unknown method {method!r}; expected one of {samplers.available('unconditional')}")
    if cascade not in ("auto", True, False):
        raise ValueError(f"cascade must be 'auto', True or False, got {cascade!r}")
    check_int("n", n, 1)
    check_int("max_pixels", max_pixels, 1, 1 << 40)
    g = _gen(seed)
    area = math.prod(int(v) for v in (shape or prior.image_size or (1, 1))[-2:])
    per = max(1, max_pixels // max(1, area))
    return torch.cat([_synthesize(prior, min(per, n - i), shape, steps, method, g, cascade, refine)
                      for i in range(0, n, per)])


def _synthesize(prior, n, shape, steps, method, g, cascade, refine) -> torch.Tensor:
    sampler = samplers.get(method, steps=steps)
    if shape is None or not cascade:
        return sampler(prior=prior, n_samples=n, generator=g, shape=shape)
    hw = tuple(int(v) for v in shape[-2:])
    side = max(prior.image_size[-2:]) if prior.image_size else None
    # within the training grid the network sees the whole field, whatever its aspect: sampled directly
    core = core_shape(hw) if side is not None and max(hw) > side else hw
    base = base_shape(prior, core)
    big = tuple(base) != core
    if cascade == "auto":
        big = big and side is not None and max(core) > CASCADE_ABOVE * side
    if not big and core == hw:
        return sampler(prior=prior, n_samples=n, generator=g, shape=shape)
    _check_strength(prior, refine)
    first = tuple(base) if big else core
    x = sampler(prior=prior, n_samples=n, generator=g, shape=tuple(shape[:-2]) + first)
    with torch.no_grad():
        if first != core:
            x = _upsample(x, core)
        if core != hw:
            x = _embed(x, hw)
        # the prior's answer for the large grid: attention within tiles of its training side (``for_grid``)
        return samplers.sdedit(x, prior.for_grid(hw), refine, steps, g, eta=1.0, name="synthesize (refine)")


def core_shape(shape: Sequence[int]) -> tuple:
    """The central part of a grid (H, W) that holds a synthesised object: the grid itself up to an aspect ratio
    of ``ASPECT``, else its shorter side by ``ASPECT`` times that side along the longer one."""
    h, w = (int(v) for v in tuple(shape)[-2:])
    if h < 1 or w < 1:
        raise ValueError(f"shape must have positive sides, got {tuple(shape)}")
    return (min(h, max(1, int(ASPECT * w))), min(w, max(1, int(ASPECT * h))))


def _embed(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """(..., h, w) images placed in the middle of a zero (..., H, W) grid."""
    out = x.new_zeros(tuple(x.shape[:-2]) + tuple(size))
    h, w = x.shape[-2:]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out[..., top:top + h, left:left + w] = x
    return out


def base_shape(prior, shape: Sequence[int]) -> tuple:
    """The grid of a cascade's base sample for ``shape`` (H, W): scaled so that its larger side is the prior's
    training side, the aspect ratio kept, each side rounded to the network's multiple; ``shape`` itself when it
    is no larger than the training grid or the prior records none. (``synthesize`` applies it to the
    ``core_shape`` of its grid.)"""
    h, w = (int(v) for v in tuple(shape)[-2:])
    if h < 1 or w < 1:
        raise ValueError(f"shape must have positive sides, got {tuple(shape)}")
    if not prior.image_size:
        return (h, w)
    side = max(int(v) for v in prior.image_size[-2:])
    if max(h, w) <= side:
        return (h, w)
    m, f = prior.size_multiple, max(h, w) / side
    return tuple(max(m, int(round(v / f / m)) * m) for v in (h, w))


def _upsample(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """Bicubic upsampling of (N, ..., H, W) images, complex ones by their real and imaginary parts."""
    F = torch.nn.functional
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    if x.is_complex():
        parts = torch.cat([flat.real, flat.imag], 1)
        up = F.interpolate(parts, size=size, mode="bicubic", align_corners=False)
        return torch.complex(up[:, 0], up[:, 1]).reshape(*lead, *size)
    return F.interpolate(flat, size=size, mode="bicubic", align_corners=False).reshape(*lead, *size)


def region(shape: Sequence[int], center: Sequence[float], radius: float, kind: str = "circle") -> torch.Tensor:
    """A boolean (H, W) region: a disk or a square box of half-side ``radius`` around (row, col)."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    dy, dx = yy - center[0], xx - center[1]
    if kind == "circle":
        return dy ** 2 + dx ** 2 <= radius ** 2
    if kind == "box":
        return (dy.abs() <= radius) & (dx.abs() <= radius)
    raise ValueError(f"unknown region kind {kind!r}; expected 'circle' or 'box'")


def biharmonic(image: torch.Tensor, missing: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """The classical fill of the ``missing`` (True) pixels of ``image`` (H, W), real or complex: the u that equals
    ``image`` outside the region and minimises ||L u||^2 inside it, L the 5-point graph Laplacian of the image
    grid (zero flux at the border). Its normal equations are the discrete biharmonic equation Delta^2 u = 0 in the
    region with the known pixels as boundary values, solved directly (``scipy.sparse``). With ``clip`` the fill
    is kept within the known pixels' range (real images: their minimum and maximum; complex ones: magnitudes up
    to their largest), as scikit-image's ``inpaint_biharmonic`` does; on real images the two agree to rounding
    (tests/test_tasks.py)."""
    import numpy as np
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    missing = _region_mask(missing, image)
    if not bool(torch.isfinite(image[~missing]).all()):
        raise ValueError("the known pixels of the image contain NaN or Inf")
    n_missing = int(missing.sum())
    if n_missing == 0:
        return image.clone()
    if n_missing == missing.numel():
        raise ValueError("the region covers the whole image; there is nothing to fill it from")
    h, w = missing.shape
    idx = np.arange(h * w).reshape(h, w)
    rows, cols = [], []
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):   # horizontal and vertical edges
        rows.append(a.ravel())
        cols.append(b.ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    adj = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(h * w, h * w))
    adj = (adj + adj.T).tocsr()
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    q = (lap.T @ lap).tocsr()
    m = missing.numpy().ravel()
    x = image.detach().cpu().numpy().astype(np.complex128 if image.is_complex() else np.float64).ravel()
    rhs = -(q[m][:, ~m] @ x[~m])
    cols_rhs = np.stack([rhs.real, rhs.imag], 1) if np.iscomplexobj(rhs) else rhs[:, None]
    sol = spla.spsolve(q[m][:, m].tocsc(), cols_rhs)
    sol = sol.reshape(n_missing, -1)
    fill = sol[:, 0] + 1j * sol[:, 1] if image.is_complex() else sol[:, 0]
    if clip and image.is_complex():
        top = np.abs(x[~m]).max()
        fill = fill * np.minimum(1.0, top / np.maximum(np.abs(fill), 1e-300))
    elif clip:
        fill = np.clip(fill, x[~m].min(), x[~m].max())
    x[m] = fill
    return torch.from_numpy(x.reshape(h, w)).to(image.dtype)


def _region_mask(missing, image) -> torch.Tensor:
    missing = torch.as_tensor(missing, dtype=torch.bool)
    if missing.shape != image.shape[-2:]:
        raise ValueError(f"the region {tuple(missing.shape)} does not match the image {tuple(image.shape[-2:])}")
    return missing


INPAINT_INITS = ("biharmonic", None)
STRENGTHS = (0.0, 0.05, 0.1)        # the candidates of strength="auto"; 0 is the biharmonic fill itself
PROBES = 4                          # pseudo-regions strength="auto" scores the candidates on
WEIGHTS = (0.25, 0.5, 0.75, 1.0)    # strength="auto": the prior's share of the fill (fill + w (sample - fill))
MARGIN = 0.05                       # strength="auto": a prior fill must beat the biharmonic fill's pseudo-region
#                                     error by this fraction (experiments/RESULTS.md, "Inpainting: a margin")


def inpaint(image: torch.Tensor, missing: torch.Tensor, prior, steps: int = 200, n_samples: int = 1,
            seed=0, sampler=None, init: Optional[str] = "biharmonic", strength="auto",
            report: Optional[dict] = None) -> torch.Tensor:
    """Fill the ``missing`` (True) pixels of ``image`` (H, W); returns (n_samples, H, W) posterior samples (their
    mean, ``.mean(0)``, is the posterior-mean estimate, the one to score by PSNR).

    ``init="biharmonic"`` (the default; Come-Closer-Diffuse-Faster, Chung et al. 2022): the region is first
    filled by ``biharmonic``, the image (in the prior's units) is noised to sigma = ``strength``, and ancestral
    DDIM steps (eta = 1; the levels of a ``steps``-level schedule below ``strength``) bring it back, with the
    known pixels put back into every step's clean estimate. The prior adds what a smooth fill cannot (texture,
    edges that cross the region) while the fill keeps the samples close to the surroundings. A larger
    ``strength`` lets the prior change more.

    ``strength="auto"`` (the default) chooses it by cross-validation on the image itself: the region is copied to
    up to ``PROBES`` places of the known image nearby (``probe_regions``: apart from the region and each other, on
    tissue like the region's surroundings; in a small object, just apart and partly beside it), those
    pseudo-regions are removed as well, and every candidate of ``STRENGTHS`` fills
    them all in one run. Each candidate's samples are also shrunk towards the fill, fill + w (sample - fill) for
    each share w of ``WEIGHTS``, which costs nothing more: a shrunk mean of two estimators whose errors differ is
    often closer than either. The (strength, w) whose mean of ``n_samples`` is closest (least squares) to the known
    pixels of the pseudo-regions wins, and its fill of the real region is returned, provided its error is below
    (1 - ``MARGIN``) times the biharmonic fill's: a few pseudo-regions measure the error only roughly, and a
    prior fill that is only as good as the classical one on them is as likely to be worse on the region.
    Candidate 0 is the biharmonic fill (all samples equal to it), so a prior that does not suit the image (a smooth
    object, another anatomy) falls back to the classical fill instead of adding foreign texture. It costs one run
    per non-zero candidate. When the classical fill wins it is the biharmonic fill of the region alone, exactly.
    Where no pseudo-region fits (a region large against the object), the prior cannot be tested on the image and
    the biharmonic fill is returned, with a warning.
    ``report`` (a dict), when given, receives the chosen ``strength`` and share ``weight``, the number of
    pseudo-regions (``probes``) and the pseudo-region error of each strength at its best share (``errors``, mean
    squared, in the image's units).

    ``init=None``, or a ``sampler`` given (any sampler, e.g. ``samplers.DPS(...)``): sampling from pure noise, by
    that sampler or by Score-SDE's noised-measurement projection (``steps`` predictor-corrector steps). Score-SDE replaces the
    known pixels by the image noised to the current level, so they match the iterate's noise and leave no seam
    around the hole (plain projection onto the clean pixels does)."""
    missing = _region_mask(missing, image)
    if init not in INPAINT_INITS:
        raise ValueError(f"init must be 'biharmonic' or None, got {init!r}")
    keep = (~missing).to(image.real.dtype)
    if init is None or sampler is not None:
        A = Inpainting(keep)
        sampler = sampler or samplers.ScoreSDE(steps=steps, inverse="adjoint")
        x = sampler(A(image), A, prior, n_samples=n_samples, generator=_gen(seed))
        return keep * image + (1 - keep) * x
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if isinstance(strength, str):
        if strength != "auto":
            raise ValueError(f"strength must be a noise level or 'auto', got {strength!r}")
        return _inpaint_auto(image, missing, prior, steps, n_samples, seed, report)
    _check_strength(prior, strength)
    fill = biharmonic(image, missing)
    scale = _data_scale(prior, fill)
    x = _sdedit(fill / scale, prior, strength, ~missing, steps, _gen(seed), eta=1.0, n=n_samples)
    if report is not None:
        report.update(strength=float(strength), weight=1.0, errors={})
    return keep * image + (1 - keep) * x * scale


def _check_strength(prior, strength) -> None:
    lo, hi = float(prior.sigma_min), float(prior.sigma_max)
    if isinstance(strength, bool) or not (isinstance(strength, (int, float)) and lo < strength <= hi):
        raise ValueError(f"strength must be in the prior's noise range ({lo:.3g}, {hi:.3g}] or 'auto', "
                         f"got {strength!r}")


def _data_scale(prior, fill):
    scale = _scale(prior, fill)
    if not (torch.isfinite(scale).all() and bool((scale > 0).all())):
        raise ValueError("the image has no data scale (all zeros, or NaN/Inf); there is nothing to inpaint")
    return scale


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    if r <= 0:
        return mask.clone()
    m = mask[None, None].float()   # a square of side 2r + 1, as two separable passes
    m = torch.nn.functional.max_pool2d(m, (2 * r + 1, 1), 1, (r, 0))
    return torch.nn.functional.max_pool2d(m, (1, 2 * r + 1), 1, (0, r))[0, 0] > 0


def probe_regions(image: torch.Tensor, missing: torch.Tensor, k: int = PROBES, gap: Optional[int] = None,
                  tolerance: float = 0.25) -> list:
    """Up to ``k`` copies of the region ``missing`` (H, W) moved to known parts of ``image``: each lies inside the
    image with a 2-pixel margin, keeps a gap of ``gap`` pixels (default: half the region's extent) from the region
    and from the other copies, and covers about as much object (pixels above 10% of the known maximum) as the
    region's surroundings (fractions within ``tolerance``); the nearest such places first. Returns boolean
    (H, W) masks."""
    h, w = missing.shape
    rows, cols = torch.nonzero(missing, as_tuple=True)
    if len(rows) == 0:
        return []
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    ext = max(r1 - r0, c1 - c0) + 1
    mag = image.abs().float()
    obj = mag > 0.1 * float(mag[~missing].max())
    ring = _dilate(missing, max(2, ext // 4)) & ~missing
    want = float(obj[ring].float().mean()) if bool(ring.any()) else 1.0
    gap = max(2, ext // 2) if gap is None else max(2, int(gap))
    blocked = _dilate(missing, gap)
    step = max(1, ext // 3)
    cands = []
    for dr in range(-r0 + 2, h - 2 - r1, step):
        for dc in range(-c0 + 2, w - 2 - c1, step):
            if dr or dc:
                cands.append((dr * dr + dc * dc, dr, dc))
    sub = missing[r0:r1 + 1, c0:c1 + 1]
    chosen = []
    for _, dr, dc in sorted(cands):
        box = (slice(r0 + dr, r1 + dr + 1), slice(c0 + dc, c1 + dc + 1))
        if bool((blocked[box] & sub).any()) or abs(float(obj[box][sub].float().mean()) - want) > tolerance:
            continue
        m = torch.zeros_like(missing)
        m[box] = sub
        chosen.append(m)
        blocked = blocked | _dilate(m, gap)
        if len(chosen) == k:
            break
    return chosen


def _inpaint_auto(image, missing, prior, steps, n_samples, seed, report):
    import warnings

    probes = probe_regions(image, missing)
    if len(probes) < 2:   # a small object: copies just apart from the region, on tissue or beside it
        probes = max(probes, probe_regions(image, missing, gap=2, tolerance=0.5), key=len)
    if not probes:
        warnings.warn("inpaint: no copy of the region fits in the known part of the object, so strength='auto' "
                      "cannot test the prior on this image; returning the biharmonic fill (pass a strength, "
                      "e.g. 0.1, to use the prior anyway)", stacklevel=3)
        fill = biharmonic(image, missing)
        if report is not None:
            report.update(strength=0.0, weight=0.0, errors={}, probes=0)
        return fill[None].expand(n_samples, *fill.shape).clone()
    pseudo = torch.stack(probes).any(0)
    union = missing | pseudo
    keep = (~union).to(image.real.dtype)
    fill = biharmonic(image, union)
    scale = _data_scale(prior, fill)
    e0 = fill[pseudo] - image[pseudo]
    errors, outs, weights = {0.0: float(e0.abs().square().mean())}, {}, {0.0: 0.0}
    for s in STRENGTHS:
        if s == 0:
            continue
        x = keep * image + (1 - keep) * _sdedit(fill / scale, prior, s, ~union, steps, _gen(seed), eta=1.0,
                                                n=n_samples) * scale
        d = x.mean(0)[pseudo] - fill[pseudo]
        errs = {w: float((e0 + w * d).abs().square().mean()) for w in WEIGHTS}
        weights[s] = min(WEIGHTS, key=lambda w: errs[w])
        errors[s], outs[s] = errs[weights[s]], x
    best = min(errors, key=lambda s: errors[s])
    if best != 0 and errors[best] >= (1 - MARGIN) * errors[0.0]:
        best = 0.0   # not clearly better than the classical fill on the pseudo-regions
    if report is not None:
        report.update(strength=float(best), weight=weights[best], errors=errors, probes=len(probes))
    if best == 0:   # exactly the classical fill of the region alone
        fill = biharmonic(image, missing)
        return fill[None].expand(n_samples, *fill.shape).clone()
    # the chosen run's fill of the region; the pseudo-regions are known pixels and keep the image (filling the
    # region once more with them known costs a run and changed no PSNR by more than 0.03 dB in
    # experiments/RESULTS.md, "Inpainting: a margin")
    region = missing.to(image.real.dtype)
    w = weights[best]
    return (1 - region) * image + region * (fill + w * (outs[best] - fill))


def _scale(prior, image: torch.Tensor) -> torch.Tensor:
    """The prior's data scale of one image (H, W), as the samplers take it from A^+ y."""
    return prior.normalization.scale(image)


def _sdedit(image, prior, strength: float, hold: Optional[torch.Tensor], steps: int, g, eta: float = 0.0,
            n: int = 1) -> torch.Tensor:
    """``n`` SDEdit estimates (n, H, W) of ``image`` from sigma = strength (``samplers.sdedit``; ``eta`` 0 is
    deterministic); ``hold`` (H, W) pixels are put back to ``image`` in every step's Tweedie estimate
    (``dc.HeldPixels``: for this masking operator, the exact projection DDS's CG would reach)."""
    _check_strength(prior, strength)
    dc = None if hold is None else HeldPixels(hold).bind(image, None)
    return samplers.sdedit(image[None].expand(n, *image.shape), prior, strength, steps, g, eta=eta, dc=dc)


def insert(image: torch.Tensor, center: Sequence[float], prior, radius: float = 6.0, contrast: float = 0.5,
           patch: Optional[torch.Tensor] = None, strength: float = 0.3, steps: int = 50, seed=0) -> torch.Tensor:
    """Place a lesion at ``center`` (row, col) and harmonise it; pixels farther than 2 radii stay data-consistent."""
    h, w = image.shape[-2:]
    r, c = center
    if not (0 <= r < h and 0 <= c < w):
        raise ValueError(f"lesion centre {tuple(center)} is outside the image {h}x{w}")
    pasted = image.clone()
    if patch is not None:
        ph, pw = patch.shape
        r0, c0 = int(round(r)) - ph // 2, int(round(c)) - pw // 2
        if r0 < 0 or c0 < 0 or r0 + ph > h or c0 + pw > w:
            raise ValueError("the lesion patch does not fit in the image at that centre")
        pasted[r0:r0 + ph, c0:c0 + pw] = patch.to(image.dtype)
        radius = max(ph, pw) / 2
    else:
        d = region((h, w), center, radius)
        soft = torch.where(d, 1.0, 0.0)
        pasted = image + contrast * float(image.abs().max()) * soft.to(image.real.dtype) * \
            (image / image.abs().clamp_min(1e-8) if image.is_complex() else 1.0)
    hold = ~region((h, w), center, 2 * radius)
    scale = _scale(prior, pasted)
    return _sdedit(pasted / scale, prior, strength, hold, steps, _gen(seed))[0] * scale


@torch.no_grad()
def denoise(image: torch.Tensor, noise_std: float, prior, sample: bool = False, steps: int = 30, seed=0):
    """MMSE denoising (Tweedie) of ``image`` = x + noise_std z, in the image's units; or, with ``sample=True``, a
    posterior sample by ancestral DDIM steps from sigma = noise_std down to the prior's sigma_min."""
    scale = _scale(prior, image)
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std must be a finite number > 0, got {noise_std!r}")
    if not (torch.isfinite(scale).all() and bool((scale > 0).all())):
        raise ValueError("the image has no data scale (all zeros, or NaN/Inf); there is nothing to denoise")
    s0 = noise_std / float(scale)
    if s0 > float(prior.sigma_max):
        raise ValueError(f"noise_std {noise_std:g} is {s0:.3g} in the prior's units, above its largest noise "
                         f"level {float(prior.sigma_max):.3g}")
    x = image[None] / scale
    if not sample:
        return prior.denoise(x, s0)[0] * scale
    sig = [s0] + [v for v in prior.sigmas(steps).tolist() if v < s0] + [0.0]
    x, _ = ddim(x, sig, prior.denoise, eta=1.0, generator=_gen(seed), name="denoise")
    return x[0] * scale


def super_resolve(low: torch.Tensor, factor, prior, steps: int = 50, n_samples: int = 1, seed=0) -> torch.Tensor:
    """High-resolution images whose block averages equal ``low``; ``factor`` an int (in-plane) or per dim."""
    f = (factor, factor) if isinstance(factor, int) else tuple(factor)
    shape = tuple(s * k for s, k in zip(low.shape[-len(f):], f))
    return samplers.DDS(steps=steps, eta=0.85, tv_xy=0)(low, Downsample(shape, f), prior, n_samples=n_samples,
                                               generator=_gen(seed))


def anomaly(image: torch.Tensor, prior, strength: float = 0.5, steps: int = 50, seed=0):
    """Pseudo-healthy projection (SDEdit without data consistency) and the residual map |image - healthy|."""
    scale = _scale(prior, image)
    healthy = _sdedit(image / scale, prior, strength, None, steps, _gen(seed))[0] * scale
    return healthy, (image - healthy).abs()


def invert(image: torch.Tensor, prior, steps: int = 50, refine: int = 0) -> torch.Tensor:
    """Deterministic DDIM inversion (``samplers.invert``): the latent at sigma_max whose DDIM sample (same
    schedule) is ``image``; ``refine`` > 0 fixed-point iterations make each step the exact inverse."""
    return samplers.invert(image[None], prior, steps, refine)[0]


def generate(latent: torch.Tensor, prior, steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM from a latent at sigma_max (``samplers.generate``, the inverse of ``invert``)."""
    return samplers.generate(latent[None], prior, steps)[0]


def interpolate(a: torch.Tensor, b: torch.Tensor, prior, alphas: Sequence[float], steps: int = 50):
    """Images along the spherical interpolation between the DDIM latents of ``a`` and ``b``."""
    za, zb = invert(a, prior, steps), invert(b, prior, steps)
    cos = float((za.conj() * zb).real.sum() / (za.norm() * zb.norm()))
    omega = math.acos(max(-1.0, min(1.0, cos)))
    out = []
    for t in alphas:
        if omega < 1e-6:
            z = (1 - t) * za + t * zb
        else:
            z = (math.sin((1 - t) * omega) * za + math.sin(t * omega) * zb) / math.sin(omega)
        out.append(generate(z, prior, steps))
    return torch.stack(out)
