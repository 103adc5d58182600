"""Uncertainty maps from repeated posterior samples (chapter 7, Sect. 7.4.3).

From N samples x_1..x_N of one slice (drawn as one batch): the mean, the per-pixel standard deviation
sqrt(mean |x_n - mean|^2), and per-pixel quantiles of |x_n|. Against a reference image (when there is one):
the correlation between the std map and the |error| of the mean inside the object, and the empirical coverage
of the central ``level`` interval [q_lo, q_hi] of |x_n| (the fraction of object pixels whose reference
magnitude falls inside it; a calibrated sampler gives about ``level``).

``recon uncertainty`` runs this on the posterior samples of one slice of a fastMRI file.
"""
from __future__ import annotations

from typing import Optional

import torch

from operators.checks import check_real


def summarize(samples: torch.Tensor, reference: Optional[torch.Tensor] = None, level: float = 0.9,
              object_mask: Optional[torch.Tensor] = None) -> dict:
    """``samples`` (N, H, W) complex or real; ``reference`` (H, W) magnitude. Returns maps and numbers.

    With a reference, the numbers are over the object pixels (``object_mask``, else |reference| above 10% of its
    maximum), against the error |(|mean| - |reference|)|: ``std_error_rank_correlation`` (Spearman's rank
    correlation of the std map with that error, the measure of how well the map says where the error is),
    ``std_error_correlation`` (Pearson's), ``coverage`` of the raw central ``level`` sample-quantile intervals, and
    ``mean_std_in_object``."""
    if samples.dim() != 3 or samples.shape[0] < 2:
        raise ValueError(f"need at least 2 samples shaped (N, H, W), got {tuple(samples.shape)}")
    check_real("level", level, above=0.0, below=1.0)
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
        out["std_error_rank_correlation"] = rank_correlation(s, e)
        s, e = s - s.mean(), e - e.mean()
        out["std_error_correlation"] = float((s * e).sum() / (s.norm() * e.norm()).clamp_min(1e-30))
        out["coverage"] = float(((ref >= lo) & (ref <= hi))[obj].float().mean())
        out["mean_std_in_object"] = float(std[obj].mean())
        out["error"] = err
    return out


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps of the same shape (tied values get their mean rank); 0 where
    either map is constant."""
    if a.shape != b.shape:
        raise ValueError(f"rank correlation of maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() < 2:
        raise ValueError(f"rank correlation needs at least 2 values, got {a.numel()}")
    from scipy.stats import rankdata
    ra = torch.from_numpy(rankdata(a.detach().reshape(-1).double().cpu().numpy()))
    rb = torch.from_numpy(rankdata(b.detach().reshape(-1).double().cpu().numpy()))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Distribution-free calibration of the per-pixel intervals (conformal risk control).

import json as _json
import math as _math
from dataclasses import asdict as _asdict, dataclass as _dataclass, field as _field
from pathlib import Path as _Path

CALIBRATION_FORMAT = "recon-calibration-1"
OBJECT_THRESHOLD = 0.1   # the object: reference magnitude above this fraction of its maximum
HEURISTICS = ("quantile", "std", "learned")
# the features of the ``learned`` heuristic, in the order of its weights (after the constant): the samples' std
# pooled over Gaussian windows of 1 and 4 pixels, the magnitude of the mean, and its gradient magnitude pooled over
# 2 pixels, each divided by the slice's intensity (99th percentile of |mean|) and taken as log(. + ERROR_EPS)
ERROR_FEATURES = ("std_1px", "std_4px", "magnitude", "gradient_2px")
ERROR_EPS = 1e-3
MATCHED = ("sampler", "mask", "acceleration")  # a calibration is refused for other values of these
METHODS = ("empirical", "crc")
# the floors offset="auto" chooses among, in units of the slice's intensity (99th percentile of |mean|): 0 and
# 1e-4 ... 1 in steps of 10^(1/4)
OFFSETS = (0.0,) + tuple(round(10 ** (k / 4), 6) for k in range(-16, 1))


def values(x: torch.Tensor) -> torch.Tensor:
    """The per-pixel quantity the intervals are about: |x| of complex images, x itself of real ones."""
    return x.abs().float() if x.is_complex() else x.float()


def object_of(reference: torch.Tensor, threshold: float = OBJECT_THRESHOLD) -> torch.Tensor:
    """The object pixels of a reference: magnitude above ``threshold`` times its maximum."""
    r = reference.abs()
    return r > threshold * r.max()


def _check_samples(samples, name="samples") -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 3 or samples.shape[0] < 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"{name} must hold at least 2 posterior samples shaped (N, H, W), got {shape}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError(f"{name} hold NaN or Inf values")
    return samples


def local_rms(w: torch.Tensor, sigma: float) -> torch.Tensor:
    """sqrt(G_sigma * w^2) of an (H, W) map: its squares (variances, squared errors) averaged over a Gaussian
    window of ``sigma`` pixels (separable, reflected at the border)."""
    h, wd = w.shape[-2:]
    r = max(1, _math.ceil(3 * sigma))
    if min(h, wd) <= r:  # before the window of 2r + 1 taps is allocated
        raise ValueError(f"smooth={sigma:g} pixels is too wide for images of shape {(h, wd)}: its window reaches "
                         f"3 x smooth = {r} pixels; expected smooth < {min(h, wd) / 3:g}")
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    v = w.square()[None, None]
    v = torch.nn.functional.pad(v, (r, r, r, r), mode="reflect")
    v = torch.nn.functional.conv2d(v, k.reshape(1, 1, 1, -1))
    v = torch.nn.functional.conv2d(v, k.reshape(1, 1, -1, 1))
    return v[0, 0].clamp_min(0).sqrt()


def heuristic(samples: torch.Tensor, level: float, kind: str = "quantile", smooth: float = 0.0,
              offset: float = 0.0, weights=None):
    """The centre c (the value of the sample mean) and the lower/upper widths l, u >= 0 of the raw interval
    [c - l, c + u] of ``samples`` (N, H, W): ``quantile`` uses the central ``level`` sample quantiles of the values
    (l = c - q_lo, u = q_hi - c), ``std`` the per-pixel std sqrt(mean |x_n - mean|^2) (l = u = std), ``learned``
    the |error| that the log-linear model with ``weights`` predicts from the samples (``error_scale``; l = u; the
    weights come from ``fit_error_model``, which ``calibrate(kind="learned")`` runs).

    ``smooth`` > 0 pools each width's square over a Gaussian window of that many pixels (sigma), which steadies a
    spread estimated from few samples. ``offset`` >= 0 adds a floor of ``offset`` times the slice's intensity
    (the 99th percentile of |c| over the image) to both widths: the normalised conformity score
    |ref - c| / (spread + floor) of Papadopoulos et al. (2008). Offset 0 is the spread alone; a large offset
    gives one width per slice, proportional to its intensity. Everything here depends on the samples only, so the
    calibration guarantee holds for any fixed choice. A tiny floor (1e-6 of the largest width) keeps every width
    positive, so that every pixel can be covered by scaling."""
    check_real("offset", offset, minimum=0.0)
    return _with_floor(*_spread(samples, level, kind, smooth, weights), offset)


def _spread(samples: torch.Tensor, level: float, kind: str, smooth: float, weights=None):
    """``heuristic`` without the floors: c and the (pooled) widths l, u."""
    _check_samples(samples)
    if kind not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {', '.join(HEURISTICS)}, got {kind!r}")
    check_real("smooth", smooth, minimum=0.0)
    v = values(samples)
    c = values(samples.mean(0))
    if kind == "quantile":
        q = torch.quantile(v, torch.tensor([(1 - level) / 2, (1 + level) / 2]), dim=0)
        lo, up = (c - q[0]).clamp_min(0), (q[1] - c).clamp_min(0)
    elif kind == "std":
        lo = up = _std(samples)
    else:
        if weights is None:
            raise ValueError("the learned heuristic needs the weights of its error model (fit_error_model, or "
                             "calibrate(kind='learned'))")
        lo = up = error_scale(samples, weights)
    if smooth > 0:
        lo, up = local_rms(lo, smooth), local_rms(up, smooth)
    return c, lo, up


def _std(samples: torch.Tensor) -> torch.Tensor:
    return (samples - samples.mean(0)).abs().square().mean(0).sqrt().float()


def _gradient_magnitude(c: torch.Tensor) -> torch.Tensor:
    """|grad c| by central differences (zero on the border rows and columns)."""
    gx, gy = torch.zeros_like(c), torch.zeros_like(c)
    gx[:, 1:-1] = (c[:, 2:] - c[:, :-2]) / 2
    gy[1:-1] = (c[2:] - c[:-2]) / 2
    return (gx * gx + gy * gy).sqrt()


def error_features(samples: torch.Tensor):
    """The design of the ``learned`` heuristic for ``samples`` (N, H, W): (F, scale) with F (1 + K, H, W) the
    constant 1 and the K = len(ERROR_FEATURES) log-features, and ``scale`` the slice's intensity (99th percentile
    of |mean|) that the features and the predicted error are measured in. Every feature is a function of the
    samples only, and the same for any overall scaling of the images."""
    _check_samples(samples)
    if min(samples.shape[-2:]) <= 12:
        raise ValueError(f"the learned heuristic needs images of at least 13 x 13 pixels, got "
                         f"{tuple(samples.shape[-2:])}")
    c = values(samples.mean(0))
    scale = max(float(torch.quantile(c.abs().flatten().double(), 0.99)), 1e-30)
    std = _std(samples)
    maps = (local_rms(std, 1.0), local_rms(std, 4.0), c.abs(), local_rms(_gradient_magnitude(c), 2.0))
    feats = [torch.ones_like(c)] + [torch.log(m / scale + ERROR_EPS) for m in maps]
    return torch.stack(feats), scale


def error_scale(samples: torch.Tensor, weights) -> torch.Tensor:
    """The |error| of the sample mean that the log-linear model predicts per pixel:
    scale * exp(sum_k w_k F_k) with ``error_features``' F and scale (1 + len(ERROR_FEATURES) weights)."""
    w = _check_weights(weights)
    f, scale = error_features(samples)
    return scale * torch.exp(torch.einsum("k,khw->hw", torch.tensor(w, dtype=f.dtype), f))


def _check_weights(weights, source="weights"):
    k = 1 + len(ERROR_FEATURES)
    try:
        w = [float(v) for v in weights]
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a list of {k} numbers (the constant and {', '.join(ERROR_FEATURES)}), "
                         f"got {weights!r}") from None
    if len(w) != k or not all(_math.isfinite(v) for v in w):
        raise ValueError(f"{source} must be {k} finite numbers (the constant and {', '.join(ERROR_FEATURES)}), "
                         f"got {weights!r}")
    return w


def fit_error_model(samples, references, object_masks=None) -> list:
    """The weights of the ``learned`` heuristic: least squares of log(|ref - c| / scale + ERROR_EPS) on the
    ``error_features`` over the object pixels of the calibration slices, each slice weighted equally (a residual-
    magnitude regression, one of the heuristics of Angelopoulos et al. 2022, here with 5 parameters). ``samples``
    and ``references`` as in ``calibrate``. The model predicts where the mean's error is large from the samples'
    spread at two scales, the image's brightness and its edges; calibration then scales it to the level."""
    samples, references = list(samples), list(references)
    rows, rhs = [], []
    for i, (x, r) in enumerate(zip(samples, references)):
        f, scale = error_features(x)
        obj = object_of(r) if object_masks is None else torch.as_tensor(object_masks[i]).bool()
        err = (values(r) - values(x.mean(0))).abs() / scale
        n = int(obj.sum())
        if n == 0:
            continue
        rows.append(f[:, obj].T.double() / _math.sqrt(n))
        rhs.append(torch.log(err[obj].double() + ERROR_EPS) / _math.sqrt(n))
    if not rows:
        raise ValueError("the error model needs calibration slices with object pixels")
    a, b = torch.cat(rows), torch.cat(rhs)
    gram = a.T @ a + 1e-6 * torch.eye(a.shape[1], dtype=a.dtype)
    w = torch.linalg.solve(gram, a.T @ b)
    return [float(v) for v in w]


def _with_floor(c: torch.Tensor, lo: torch.Tensor, up: torch.Tensor, offset: float):
    """``heuristic``'s floors: ``offset`` times the slice's intensity, then the tiny positive floor."""
    if offset > 0:
        m = float(torch.quantile(c.abs().flatten().double(), 0.99))
        lo, up = lo + offset * m, up + offset * m
    floor = 1e-6 * max(float(lo.max()), float(up.max()), float(c.abs().max()), 1e-30)
    return c, lo.clamp_min(floor), up.clamp_min(floor)


def coverage(lo: torch.Tensor, hi: torch.Tensor, reference: torch.Tensor, object_mask=None) -> float:
    """The fraction of object pixels whose reference value lies in [lo, hi]."""
    r = values(reference)
    obj = object_of(reference) if object_mask is None else object_mask.bool()
    return float(((r >= lo) & (r <= hi))[obj].float().mean())


def _needed(c, lo, up, ref) -> torch.Tensor:
    """Per pixel, the smallest lambda with ref in [c - lambda l, c + lambda u]."""
    r = values(ref)
    return torch.where(r < c, (c - r) / lo, (r - c) / up).clamp_min(0)


@_dataclass
class Calibration:
    """A calibrated interval rule: for new samples of a slice, [c - lam * l, c + lam * u] per pixel, with c, l, u
    the ``heuristic`` of the samples (``kind``, ``level``) and ``lam`` chosen by ``calibrate``.

    ``sampler``, ``mask``, ``acceleration`` (and ``steps``, ``prior``, free ``info``) record what the calibration
    was made for; ``check_matches`` refuses another sampler, mask or acceleration by name. ``slices`` is the number
    n of calibration slices, ``risk`` the empirical miscoverage at ``lam`` and ``raw_coverage`` the mean coverage of
    the uncalibrated intervals (lam = 1) on them; ``method`` the rule that chose ``lam`` (see ``calibrate``)."""
    lam: float
    level: float
    kind: str
    slices: int
    risk: float
    raw_coverage: float
    sampler: Optional[str] = None
    mask: Optional[str] = None
    acceleration: Optional[float] = None
    steps: Optional[int] = None
    prior: Optional[str] = None
    info: dict = _field(default_factory=dict)
    method: str = "crc"
    smooth: float = 0.0
    offset: float = 0.0
    weights: list = _field(default_factory=list)

    def interval(self, samples: torch.Tensor):
        """(lo, hi), each (H, W) float: the calibrated per-pixel interval for the values of ``samples``."""
        c, l, u = heuristic(samples, self.level, self.kind, self.smooth, self.offset,
                            self.weights if self.kind == "learned" else None)
        return c - self.lam * l, c + self.lam * u

    def check_matches(self, sampler=None, mask=None, acceleration=None, source="calibration") -> None:
        """Refuse (ValueError) samples drawn with another sampler, mask or acceleration than the calibration's."""
        given = {"sampler": sampler, "mask": mask, "acceleration": acceleration}
        for key in MATCHED:
            want, got = getattr(self, key), given[key]
            if want is None or got is None:
                continue
            same = _math.isclose(float(want), float(got), rel_tol=1e-6) if key == "acceleration" else want == got
            if not same:
                raise ValueError(f"{source} was made for {key} {want!r}, not {got!r}: calibrate again for these "
                                 f"settings (recon calibrate) or use the matching {key}")

    def save(self, path) -> _Path:
        """Write the calibration as JSON, atomically (``recon.atomic.write_text``)."""
        from recon.atomic import write_text
        d = {"format": CALIBRATION_FORMAT, **_asdict(self)}
        return write_text(path, _json.dumps(d, indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path) -> "Calibration":
        path = _Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path}: no such file")
        try:
            d = _json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"calibration file {path} is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"calibration file {path} is not a {CALIBRATION_FORMAT} file (written by "
                             f"recon calibrate / Calibration.save)")
        d.pop("format")
        try:
            cal = cls(**d)
        except TypeError as e:
            raise ValueError(f"calibration file {path}: {e}") from None
        lam = cal.lam
        if not (isinstance(lam, (int, float)) and _math.isfinite(lam) and lam >= 0):
            raise ValueError(f"calibration file {path}: lam must be a finite number >= 0, got {lam!r}")
        check_real("level", cal.level, above=0.0, below=1.0)
        if cal.kind not in HEURISTICS:
            raise ValueError(f"calibration file {path}: kind must be one of {', '.join(HEURISTICS)}, got {cal.kind!r}")
        if cal.method not in METHODS:
            raise ValueError(f"calibration file {path}: method must be one of {', '.join(METHODS)}, "
                             f"got {cal.method!r}")
        for key in ("smooth", "offset"):
            v = getattr(cal, key)
            if not (isinstance(v, (int, float)) and _math.isfinite(v) and v >= 0):
                raise ValueError(f"calibration file {path}: {key} must be a finite number >= 0, got {v!r}")
        if cal.kind == "learned":
            cal.weights = _check_weights(cal.weights, f"calibration file {path}: weights")
        elif cal.weights:
            raise ValueError(f"calibration file {path}: weights are given but the heuristic is {cal.kind!r}, "
                             f"not 'learned'")
        return cal


def min_slices(level: float, method: str = "empirical") -> int:
    """The fewest calibration slices ``calibrate`` accepts: for ``crc`` the n with (n + 1)(1 - level) >= 1 (B = 1),
    with which conformal risk control can reach ``level`` at all; for ``empirical`` 2."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "empirical":
        return 2
    return max(1, _math.ceil(1 / (1 - level) - 1 - 1e-9))


def calibrate(samples, references, level: float = 0.9, kind: str = "quantile", object_masks=None,
              method: str = "empirical", smooth: float = 0.0, offset="auto", weights=None,
              **record) -> Calibration:
    """Calibrate per-pixel intervals over calibration slices by conformal risk control (Angelopoulos et al., ICML
    2022, "Image-to-image regression with distribution-free uncertainty quantification"; Angelopoulos et al. 2022,
    "Conformal risk control").

    ``samples``: a list of (N, H_i, W_i) tensors (N >= 2 posterior samples of calibration slice i),
    ``references``: a list of (H_i, W_i) tensors, the ground truth of each slice (the complex simulation truth, or
    the MVUE of fully sampled data; intervals are about |x| for complex images, x for real ones). The interval of a
    slice is T_lam(x) = [c - lam l(x), c + lam u(x)] with the ``heuristic`` c, l, u of its samples (``kind``:
    the sample quantiles or the std). The loss of slice i is its miscoverage
    L_i(lam) = 1 - (fraction of object pixels whose reference lies in T_lam), bounded by B = 1 and non-increasing
    in lam, and R_n(lam) = (1/n) sum_i L_i(lam) the empirical risk. With alpha = 1 - level, ``method`` chooses

    - ``empirical`` (default): the smallest lam with R_n(lam) <= alpha;
    - ``crc``: the smallest lam with n/(n+1) R_n(lam) + B/(n+1) <= alpha (conformal risk control at alpha).

    **Guarantee.** If the n calibration slices and a new slice (its samples, reference and object) are
    exchangeable, the expected fraction of object pixels of the new slice that its calibrated interval misses,
    E[L_new(lam)], is at most

    - ``crc``: alpha, for every n >= 1/alpha - 1 (9 slices for 90%; fewer are refused);
    - ``empirical``: alpha + (1 - alpha)/(n + 1), for every n >= 2. Its lam is exactly the ``crc`` lam at the
      level 1 - alpha' with alpha' = (n alpha + B)/(n + 1), so the conformal risk control theorem applies at
      alpha'. That bound is the worst case over distributions; with continuous per-slice losses the expected
      miscoverage is alpha up to O(1/n), i.e. coverage near the nominal level, whereas ``crc`` with few slices
      must over-cover (n = 10 at 90%: an empirical miscoverage of 0.01, i.e. 99% intervals).

    The expectation is over the calibration set and the new slice together (not conditional on one calibration
    set, and not per pixel). Nothing is assumed about the sampler.

    **Shape of the interval.** ``smooth`` and ``offset`` are passed to ``heuristic``: widths pooled over a Gaussian
    window of ``smooth`` pixels, plus a floor of ``offset`` times the slice's intensity. A fixed ``offset`` (a
    number) keeps the guarantee above exactly. ``offset="auto"`` (the default) chooses, among ``OFFSETS``, the one
    whose calibrated intervals are narrowest on average over the calibration slices, then lam for it as above.
    The choice is made on the same slices, so the bound then holds for each candidate but not exactly for the
    choice; the choice is made by width, not by coverage, and every candidate's lam meets the risk target on
    the calibration slices. It protects against a spread that ranks the error poorly: a sampler whose spread
    carries no information gets (nearly) one width per slice, scaled by its intensity, instead of a wider
    per-pixel interval.

    ``kind="learned"`` shapes the interval by the |error| a log-linear model predicts from the samples
    (``error_scale``: their spread at two scales, the brightness and the edges of the mean). Its ``weights`` are
    fitted on the calibration slices themselves (``fit_error_model``) unless given. Five numbers fitted to every
    object pixel of the slices barely adapt to them, but for the guarantee to hold exactly, fit the weights on
    other slices (``fit_error_model``, or a previous calibration's ``weights``) and pass them.

    ``object_masks`` (optional list of boolean (H_i, W_i)) override the object (reference above 10% of its
    maximum). ``record`` (sampler=, mask=, acceleration=, steps=, prior=, info=) is stored on the result.
    """
    check_real("level", level, above=0.0, below=1.0)
    if kind not in HEURISTICS:
        raise ValueError(f"kind must be one of {', '.join(HEURISTICS)}, got {kind!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    check_real("smooth", smooth, minimum=0.0)
    if isinstance(offset, str):
        if offset != "auto":
            raise ValueError(f"offset must be a number >= 0 or 'auto', got {offset!r}")
        candidates = OFFSETS
    else:
        candidates = (check_real("offset", offset, minimum=0.0),)
    if isinstance(samples, torch.Tensor) or isinstance(references, torch.Tensor):
        raise TypeError("samples and references must be lists (one (N, H, W) and one (H, W) tensor per slice)")
    samples, references = list(samples), list(references)
    if len(samples) != len(references):
        raise ValueError(f"got {len(samples)} sample sets but {len(references)} references; give one of each per "
                         f"calibration slice")
    n = len(samples)
    if n < min_slices(level, method):
        if method == "crc":
            raise ValueError(f"conformal risk control (method 'crc') at level {level:g} needs at least "
                             f"{min_slices(level, method)} calibration slices ((n + 1)(1 - level) >= 1), got {n}")
        raise ValueError(f"calibration needs at least {min_slices(level, method)} calibration slices, got {n}")
    if object_masks is not None and len(list(object_masks)) != n:
        raise ValueError(f"got {len(list(object_masks))} object masks for {n} calibration slices")
    if weights is not None and kind != "learned":
        raise ValueError(f"weights are for the learned heuristic, not {kind!r}")
    objs, raw, spreads = [], [], []
    for i, (x, r) in enumerate(zip(samples, references)):
        _check_samples(x, f"samples[{i}]")
        if not isinstance(r, torch.Tensor) or tuple(r.shape) != tuple(x.shape[-2:]):
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"references[{i}] has shape {shape} but samples[{i}] are images of shape "
                             f"{tuple(x.shape[-2:])}; a reference must have the shape of one sample")
        obj = object_of(r) if object_masks is None else torch.as_tensor(object_masks[i]).bool()
        if tuple(obj.shape) != tuple(r.shape):
            raise ValueError(f"object_masks[{i}] has shape {tuple(obj.shape)}, not {tuple(r.shape)}")
        if not bool(obj.any()):
            raise ValueError(f"calibration slice {i} has no object pixels (its reference is empty)")
        objs.append(obj)
    model = None
    if kind == "learned":
        model = _check_weights(weights) if weights is not None else fit_error_model(samples, references, objs)
    for x, r, obj in zip(samples, references, objs):
        c, lo, up = heuristic(x, level, kind, weights=model)
        raw.append(float((_needed(c, lo, up, r)[obj] <= 1).double().mean()))
        spreads.append(_spread(x, level, kind, smooth, model))
    alpha = 1 - level
    target = alpha if method == "empirical" else ((n + 1) * alpha - 1) / n   # the bound on R_n itself
    best = None
    for off in candidates:
        needed, weights, widths = [], [], []
        for (c, lo, up), r, obj in zip(spreads, references, objs):
            c, lo, up = _with_floor(c, lo, up, off)
            need = _needed(c, lo, up, r)[obj].double()
            needed.append(need)
            weights.append(torch.full_like(need, 1.0 / (n * need.numel())))
            widths.append(float((lo + up)[obj].double().mean()))
        lam_all, w_all = torch.cat(needed), torch.cat(weights)
        lam, risk = _smallest_lam(lam_all, w_all, target)
        width = lam * sum(widths) / n
        if best is None or width < best[0] * (1 - 1e-9):
            best = (width, off, lam, risk)
    _, off, lam, risk = best
    raw_cov = sum(raw) / n
    return Calibration(lam=lam, level=float(level), kind=kind, slices=n, risk=risk, raw_coverage=raw_cov,
                       method=method, smooth=float(smooth), offset=float(off),
                       weights=model or [], **record)


def _smallest_lam(lam_all: torch.Tensor, w_all: torch.Tensor, target: float):
    """The smallest lam with weighted risk sum(w [lam_all > lam]) <= target, and that risk."""
    order = torch.argsort(lam_all)
    lam_sorted, w_sorted = lam_all[order], w_all[order]
    tail = w_sorted.flip(0).cumsum(0).flip(0)
    risk_after = torch.cat([tail[1:], tail.new_zeros(1)])  # empirical risk at lam = lam_sorted[k] (ties: >= it)
    k = int(torch.nonzero(risk_after <= target + 1e-12)[0])  # exists: risk_after[-1] = 0 <= target
    lam = float(lam_sorted[k])
    return lam, float((w_all * (lam_all > lam)).sum())


def guaranteed_miscoverage(cal: Calibration) -> float:
    """The bound on the expected miscoverage of a new exchangeable slice that ``cal``'s method guarantees."""
    alpha = 1 - cal.level
    return alpha if cal.method == "crc" else alpha + (1 - alpha) / (cal.slices + 1)
