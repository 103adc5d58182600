"""Samplers: algorithms that combine a prior with an operator and a measurement (or, unconditional, a prior alone).

    x = samplers.DDS(steps=50)(y, A, prior, n_samples=4, generator=torch.Generator().manual_seed(0))
    x = samplers.Heun(steps=30)(prior=prior, n_samples=16)

Every sampler returns ``(n_samples, *image)`` images in the measurement's scale and is invariant to
``(c y, c A)`` (``base``). A new sampler is one module (a ``Sampler`` subclass whose ``_run`` drives
``loop.run`` with its step) plus one line in ``REGISTRY`` or ``UNCONDITIONAL``.
"""
from typing import Optional

from .base import Sampler, SamplingError
from .dds import DDS
from .dps import DPS
from .score_ald import ScoreALD
from .score_mri import ScoreMRI
from .score_sde import ScoreSDE
from .unconditional import DDIM, Heun, PredictorCorrector

REGISTRY = {  # posterior samplers: sampler(y, A, prior, ...)
    "dds": DDS,
    "dps": DPS,
    "score-ald": ScoreALD,
    "score-mri": ScoreMRI,
    "score-sde": ScoreSDE,
}
UNCONDITIONAL = {  # sampler(prior=prior, n_samples=..., shape=...)
    "ddim": DDIM,
    "heun": Heun,
    "pc": PredictorCorrector,
}


def get(name: str, preset: Optional[str] = None, **params) -> Sampler:
    """A sampler by name: one of ``REGISTRY`` (posterior) or ``UNCONDITIONAL``, with the settings of ``preset``
    (``Sampler.PRESETS``; "reference": the published code step for step) and ``params`` over them."""
    cls = REGISTRY.get(name) or UNCONDITIONAL.get(name)
    if cls is None:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(REGISTRY)} (posterior), "
                         f"{sorted(UNCONDITIONAL)} (unconditional)")
    return cls.from_preset(preset, **params)


__all__ = ["Sampler", "SamplingError", "DDS", "DPS", "ScoreALD", "ScoreMRI", "ScoreSDE", "DDIM", "Heun",
           "PredictorCorrector", "get", "REGISTRY", "UNCONDITIONAL"]
