"""What every sampler shares: the call protocol, data scaling, batching of samples, checks.

Every sampler, posterior or unconditional, is called the same way:

    x = sampler(y, A, prior, n_samples=4, generator=torch.Generator().manual_seed(0), callback=None)
    x = samplers.Heun(steps=30)(prior=prior, n_samples=16, shape=(128, 128))        # unconditional: no y, A

and returns ``(n_samples, *image)`` images in the measurement's scale (``A.combine`` applied, e.g. the
root-sum-of-squares of coil-wise samples; pixels outside ``A.support`` set to 0).

**Scale-free sampling (the convention, stated once).** A sampler never sees the caller's scale. It works
with the unit-norm operator A_n = A / ||A|| (``Linop.norm``) and the measurement in the prior's range,

    y_n = y / (||A|| s),    s = prior.normalization.scale(A^+ y)      (``Linop.pinv``, over A's whole input)

so that A_n (x / s) = y_n for the image x of A x = y; the result is multiplied back by s. Since
(c A)^+ (c y) = A^+ y and ||c A|| = |c| ||A||, the samples are the same for (c y, c A) as for (y, A)
(invariance), and for (c y, A), c > 0, they are c times those of (y, A) when the prior's normalisation is
taken from the data ("percentile", "max"; equivariance). A prior in physical units ("fixed", e.g. CT in
mu/mu_water) keeps the invariance but, rightly, not the equivariance: c y is another object. Step sizes
(DPS's zeta, DDS's gamma, Score-ALD's step_lr) are therefore relative to a unit-norm operator and data in
the training range, whatever the views, coils, detector or k-space units. Noise levels a user states in the
measurement's units (Score-ALD's ``sigma_y``) are converted with the same factor.

Measurements follow ``operators.checks.as_tensor`` (NumPy arrays converted, integer tensors refused) and are
taken in single precision, as the networks run: complex128 / float64 data are converted to complex64 / float32,
and the samples are returned in that precision. A missing prior (None) or an object that is not one is refused.

The samples run as one batch, in chunks of at most ``max_batch``; the reverse-diffusion loop itself is
``loop.run``. The callback receives one dict per step (``i``, ``sigma``, ``sigma_next``, ``x``, ``denoised``,
images in the measurement's scale), as in k-diffusion.

**Settings.** A sampler is built from its constructor's keywords, its named ``PRESETS`` (``from_preset``), or for
a problem (``for_problem(A, prior, preset=None, **settings)``): the preset's settings, then the stated ones, and
where neither sets a value the sampler's defaults for that problem (``problem_settings``), decided from what the
operator contract answers (``A.sampling``, ``A.angular_coverage``, ``A.n_views``, ...) and the prior, never from
an operator's type. ``steps`` there is the sampler's length, whatever its constructor calls it (``LENGTH``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm import tqdm

from operators import checks
from operators.checks import check_positive  # noqa: F401  (the samplers' setting checks)
from operators.linop import Linop


MAX_COUNT = 1_000_000  # steps, levels, iterations: more is a typo, not a schedule


def check_int(name: str, value, minimum: int, maximum: int = MAX_COUNT) -> int:
    """An integer count setting of a sampler, in [minimum, maximum]."""
    return checks.check_int(name, value, minimum, maximum)


SINGLE = {torch.complex128: torch.complex64, torch.float64: torch.float32}


class SamplingError(FloatingPointError):
    """A sampler's iterate became NaN or Inf."""


def check_finite(x: torch.Tensor, step: int, sigma: float, name: str) -> None:
    bad = ~torch.isfinite(torch.view_as_real(x.resolve_conj()) if x.is_complex() else x)
    if bad.any():
        raise SamplingError(f"{name}: non-finite values in the iterate at step {step} (sigma={sigma:.4g}); "
                            "check the data scaling, the step sizes and the prior")


def noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard (complex: circular, E|z|^2 = 2 per entry, i.e. N(0, 1) in Re and Im) Gaussian noise."""
    if x.is_complex():
        z = torch.randn(x.shape + (2,), generator=generator, dtype=x.real.dtype)
        return torch.view_as_complex(z).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


@dataclass
class Measurement:
    """A posterior sampler's data in the prior's range: A_n = A / ||A||, y_n, and the factor ||A|| s that
    maps the measurement's units to y_n's (broadcastable to y_n)."""

    y: torch.Tensor
    A: object
    unit: torch.Tensor


class Sampler:
    """Base class. Subclasses set ``name`` and ``posterior`` and implement ``_run(x, data, prior, generator,
    callback, bar)``: ``x`` is the start (zeros shaped like the batch of images; multiply noise into it),
    ``data`` a ``Measurement`` (None for unconditional samplers); it returns images in the prior's range.
    ``steps_total`` gives the number of loop steps (progress bar), ``nfe`` the network evaluations; a subclass
    with defaults that depend on the problem overrides ``problem_settings``."""

    name = "sampler"
    posterior = True
    # named settings: preset -> constructor keywords; "reference" follows the published code step for step
    PRESETS: dict = {}
    LENGTH = "steps"  # the constructor keyword that ``for_problem``'s ``steps`` sets

    @classmethod
    def preset_settings(cls, preset: Optional[str] = None) -> dict:
        """The constructor keywords of ``preset`` (None: none). An unknown preset is refused with the ones this
        sampler has."""
        if preset is None:
            return {}
        if preset not in cls.PRESETS:
            known = ", ".join(sorted(cls.PRESETS)) or "none"
            raise ValueError(f"sampler {cls.name!r} has no preset {preset!r}; its presets: {known}")
        return dict(cls.PRESETS[preset])

    @classmethod
    def from_preset(cls, preset: Optional[str] = None, **overrides) -> "Sampler":
        """The sampler with the settings of ``preset`` (None: the defaults), ``overrides`` taking precedence."""
        return cls(**{**cls.preset_settings(preset), **overrides})

    @classmethod
    def for_problem(cls, A, prior, preset: Optional[str] = None, **settings) -> "Sampler":
        """The sampler configured for the operator ``A`` and the prior: the settings of ``preset``, then
        ``settings`` over them, then, for what neither sets, the sampler's defaults for this problem
        (``problem_settings``). ``steps`` sets the sampler's length (``LENGTH``; None: not stated)."""
        if A is not None and not isinstance(A, Linop):
            raise TypeError(f"{cls.name}: A must be an operator (operators.Linop), got {type(A).__name__}")
        steps = settings.pop("steps", None)
        if steps is not None:
            settings[cls.LENGTH] = steps
        return cls(**cls.problem_settings(A, prior, {**cls.preset_settings(preset), **settings}))

    @classmethod
    def problem_settings(cls, A, prior, stated: dict) -> dict:
        """The constructor keywords for a problem: ``stated`` (preset and caller) and, where they leave a setting
        open, the defaults this sampler takes for the operator ``A`` and the prior. Here: ``stated``."""
        return dict(stated)

    def settings(self) -> dict:
        """The sampler's settings: its public attributes (what it was built with, its defaults resolved)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __init__(self, progress: bool = False, max_batch: Optional[int] = None, support: bool = True,
                 combine: bool = True):
        if max_batch is not None:
            check_int("max_batch", max_batch, 1)
        self.progress, self.max_batch, self.support, self.combine = progress, max_batch, support, combine

    def steps_total(self) -> int:
        return 0

    def nfe(self) -> int:
        """Network evaluations per sample."""
        return self.steps_total()

    def __call__(self, y: Optional[torch.Tensor] = None, A=None, prior=None, n_samples: int = 1,
                 generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
                 shape: Optional[tuple] = None) -> torch.Tensor:
        if prior is None:
            raise ValueError(f"{self.name}: no prior given (load one with recon.priors.load)")
        if not callable(getattr(prior, "denoise", None)):
            raise TypeError(f"{self.name}: prior must be a recon.priors.DiffusionPrior (recon.priors.load), "
                            f"got {type(prior).__name__}")
        check_int("n_samples", n_samples, 1)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self.posterior:
            data, ref, scale = self._prepare(y, A, prior)
        else:
            if y is not None or A is not None:
                raise ValueError(f"{self.name} is an unconditional sampler: it takes no measurement or operator")
            data, ref, scale = None, self._blank(prior, shape), 1.0
        chunk = self.max_batch or n_samples
        outs = []
        cb = None if callback is None else _rescaled(callback, scale)
        bar = tqdm(total=self.steps_total() * -(-n_samples // chunk), disable=not self.progress, desc=self.name,
                   dynamic_ncols=True, leave=False)
        try:
            with torch.no_grad():
                for start in range(0, n_samples, chunk):
                    n = min(chunk, n_samples - start)
                    batch = data if data is None else Measurement(data.y.expand((n,) + tuple(data.y.shape)),
                                                                  data.A, data.unit)
                    x = torch.zeros((n,) + tuple(ref.shape), dtype=ref.dtype, device=ref.device)
                    outs.append(self._run(x, batch, prior, g, cb, bar))
        finally:
            bar.close()
        return self._finalize(torch.cat(outs) * scale, A)

    def _prepare(self, y, A, prior):
        """(Measurement in the prior's range, the reference image A^+ y, the image scale s)."""
        if y is None or A is None:
            raise ValueError(f"{self.name} is a posterior sampler: give the measurement y and the operator A")
        if not isinstance(A, Linop):
            raise TypeError(f"{self.name}: A must be an operator (operators.Linop), got {type(A).__name__}")
        y = checks.as_tensor(f"{self.name}: the measurement", y)
        y = y.to(SINGLE.get(y.dtype, y.dtype))  # the networks run in single precision
        if not checks.is_finite(y):
            raise ValueError(f"{self.name}: the measurement contains NaN or Inf")
        ref = A.pinv(y)
        norm = A.norm(like=ref)
        if norm == 0:
            raise ValueError(f"{self.name}: the operator {A.name} has norm 0 (it measures nothing)")
        scale = prior.normalization.scale(ref, ndim=len(A.ishape))  # = prior.data_scale(y, A), pinv reused
        batch = tuple(ref.shape[: ref.dim() - len(A.ishape)])
        unit = norm * scale.reshape(batch + (1,) * len(A.oshape))
        return Measurement(y / unit, A.normalized(like=ref), unit), ref, scale

    @staticmethod
    def _blank(prior, shape):
        shape = tuple(shape or prior.image_size or ())
        if len(shape) < 2:
            raise ValueError("give the image shape (H, W) (shape=...); the prior does not record one")
        params = next(iter(prior.parameters()), None)
        device = params.device if params is not None else torch.device("cpu")
        return torch.zeros(shape, dtype=torch.float32 if prior.channels in ("real", "rgb") else torch.complex64,
                           device=device)

    def _finalize(self, x: torch.Tensor, A) -> torch.Tensor:
        """Post-processing in the measurement's scale: pixels outside ``A.support`` set to 0 (``support=True``:
        the model says no coil sees them and the data say nothing, so the MVUE there is 0), then
        ``A.combine`` (``combine=True``; e.g. the root-sum-of-squares of coil images). Non-finite results are
        an error."""
        if A is not None:
            sup = A.support if self.support else None
            if sup is not None:
                x = x * sup.to(x.device)
            if self.combine:
                x = A.combine(x)
        check_finite(x, -1, 0.0, self.name)
        return x

    def _run(self, x, data, prior, generator, callback, bar):  # pragma: no cover - abstract
        raise NotImplementedError


def noise_variance(sigma_y, data: Measurement, x: torch.Tensor) -> Optional[torch.Tensor]:
    """sigma_y^2 in the normalised data's units, one value per image, shaped to broadcast against the images
    ``x``: from a std ``sigma_y`` in the measurement's units (converted like the measurement, sigma_y / (||A|| s))
    or, for ``sigma_y="auto"``, from the operator's estimate ``A.noise_std`` of the normalised data (once for a
    batch of samples that repeats one measurement). None where 'auto' finds no estimate."""
    A, yv = data.A, data.y
    if sigma_y == "auto":
        if yv.dim() > len(A.oshape) and yv.shape[0] > 1 and yv.stride(0) == 0:
            est = A.noise_std(yv[0])  # the samples' batch repeats one measurement: estimate it once
            est = None if est is None else est.expand((yv.shape[0],) + tuple(est.shape))
        else:
            est = A.noise_std(yv)
        if est is None:
            return None
    else:
        unit = torch.as_tensor(data.unit).abs()
        est = sigma_y / unit.reshape(unit.shape[: max(unit.dim() - len(A.oshape), 0)])
    est = torch.as_tensor(est).to(x.real.dtype)
    return est.reshape(tuple(est.shape) + (1,) * (x.dim() - est.dim())).square()


def _rescaled(callback: Callable, scale) -> Callable:
    """The user's callback, with the images brought to the measurement's scale."""
    def cb(d: dict) -> None:
        callback({k: (v * scale if isinstance(v, torch.Tensor) else v) for k, v in d.items()})
    return cb
