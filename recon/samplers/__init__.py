"""Samplers: algorithms that combine a prior with an operator and a measurement.

    x = samplers.DDS(steps=50)(y, A, prior, n_samples=4, generator=torch.Generator().manual_seed(0))

Every sampler returns ``(n_samples, *A.H(y).shape)`` images in the measurement's scale.
"""
from .base import Sampler, SamplingError, default_sigmas
from .dds import DDS
from .dps import DPS
from .score_ald import ScoreALD
from .score_mri import ScoreMRI
from .score_sde import ScoreSDE
from . import unconditional

REGISTRY = {"dds": DDS, "dps": DPS, "score-ald": ScoreALD, "score-mri": ScoreMRI, "score-sde": ScoreSDE}


def get(name: str, **params) -> Sampler:
    """A sampler by name ("dds", "dps", "score-ald", "score-mri", "score-sde")."""
    if name not in REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**params)


__all__ = ["Sampler", "SamplingError", "DDS", "DPS", "ScoreALD", "ScoreMRI", "ScoreSDE", "unconditional", "get", "REGISTRY",
           "default_sigmas"]
