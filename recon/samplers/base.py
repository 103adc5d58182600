"""What every posterior sampler shares: data scaling, batching of samples, the noise schedule, checks.

A sampler is called as ``sampler(y, A, prior, n_samples=..., generator=..., callback=...)`` and returns
``n_samples`` images shaped ``(n_samples, *A.H(y).shape)`` in the measurement's scale. Internally it works
on the prior's scale: y_n = y / s with s = ``prior.data_scale(y, A)`` (A is linear, so A(x / s) = y / s), and
the result is multiplied back by s. The samples run as one batch, in chunks of at most ``max_batch``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tqdm import tqdm


class SamplingError(FloatingPointError):
    """A sampler's iterate became NaN or Inf."""


def check_finite(x: torch.Tensor, step: int, sigma: float, name: str) -> None:
    bad = ~torch.isfinite(torch.view_as_real(x) if x.is_complex() else x)
    if bad.any():
        raise SamplingError(f"{name}: non-finite values in the iterate at step {step} (sigma={sigma:.4g}); "
                            "check the data scaling, the step sizes and the prior")


def noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard (complex: circular, E|z|^2 = 2 per entry, i.e. N(0, 1) in Re and Im) Gaussian noise."""
    if x.is_complex():
        z = torch.randn(x.shape + (2,), generator=generator, dtype=x.real.dtype)
        return torch.view_as_complex(z).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def default_sigmas(prior, steps: int, kind: str = "auto") -> torch.Tensor:
    """A decreasing schedule of ``steps`` noise levels for ``prior``.

    "auto": for a VP (DDPM/ADM) prior, ``steps`` evenly spaced timesteps of its own discrete schedule (DDIM's
    spacing); otherwise the EDM rho-schedule over the prior's trained range. "geometric" and "karras" as named."""
    den = prior.denoiser
    if kind == "auto" and hasattr(den, "sigmas") and isinstance(getattr(den, "sigmas"), torch.Tensor):
        ladder = den.sigmas
        idx = torch.linspace(len(ladder) - 1, 0, steps).round().long()
        return ladder[idx].double()
    return prior.sigmas(steps, "karras" if kind == "auto" else kind)


class Sampler:
    """Base class. Subclasses implement ``_run(y, A, prior, x_init_shape, generator, callback, bar)`` on data in
    the prior's scale and return images of that scale; ``steps_total`` gives the progress-bar length."""

    name = "sampler"

    def __init__(self, progress: bool = False, max_batch: Optional[int] = None, support: bool = True):
        self.progress = progress
        self.max_batch = max_batch
        self.support = support

    def steps_total(self) -> int:
        return 0

    def nfe(self) -> int:
        """Network evaluations per sample."""
        return self.steps_total()

    def __call__(self, y: torch.Tensor, A, prior, n_samples: int = 1, generator: Optional[torch.Generator] = None,
                 callback: Optional[Callable] = None) -> torch.Tensor:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if not torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all():
            raise ValueError(f"{self.name}: the measurement contains NaN or Inf")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        scale = prior.data_scale(y, A)
        y_n = y / scale
        chunk = self.max_batch or n_samples
        outs = []
        bar = tqdm(total=self.steps_total() * -(-n_samples // chunk), disable=not self.progress, desc=self.name,
                   dynamic_ncols=True, leave=False)
        try:
            with torch.no_grad():
                for start in range(0, n_samples, chunk):
                    n = min(chunk, n_samples - start)
                    yb = y_n.expand((n,) + tuple(y_n.shape))
                    outs.append(self._run(yb, A, prior, g, callback, bar))
        finally:
            bar.close()
        return self._finalize(torch.cat(outs) * scale, A)

    def _finalize(self, x: torch.Tensor, A) -> torch.Tensor:
        """Post-processing in the measurement's scale. With ``support=True`` (default) and an operator that
        has a ``support`` (SENSE with cropped maps), pixels outside it are set to 0: the model says no coil
        sees them, the measurement says nothing about them, and the MVUE there is 0."""
        sup = getattr(A, "support", None) if self.support else None
        return x * sup.to(x.device) if sup is not None else x

    def _run(self, y, A, prior, generator, callback, bar):  # pragma: no cover - abstract
        raise NotImplementedError
