"""Samplers: algorithms that combine a prior with an operator and a measurement (or, unconditional, a prior alone).

    x = samplers.DDS(steps=50)(y, A, prior, n_samples=4, generator=torch.Generator().manual_seed(0))
    x = samplers.for_problem("dds", A, prior)(y, A, prior)        # the sampler's defaults for this problem
    x = samplers.Heun(steps=30)(prior=prior, n_samples=16)

Every sampler returns ``(n_samples, *image)`` images in the measurement's scale and is invariant to
``(c y, c A)`` (``base``). Its data consistency is an object (``dc``: projection, gradient step, CG, CG with TV,
Score-SDE's noised projection, held pixels) that it takes as ``dc=``; the loops are ``loop.ddim`` and
``loop.predictor_corrector`` on the core ``loop.run``. Image-to-image sampling on the same DDIM loop:
``sdedit`` (SDEdit, a cascade's refinement), ``invert`` and ``generate`` (DDIM inversion and its inverse).

Every front door builds samplers through this registry: ``get(name, preset, **settings)`` for the stated
settings, ``for_problem(name, A, prior, preset, **settings)`` with the sampler's defaults for the problem where
neither the preset nor the caller sets a value (``Sampler.for_problem``). A new sampler is one module (a
``Sampler`` subclass whose ``_run`` drives a loop with its step) plus one line in ``REGISTRY`` or
``UNCONDITIONAL``; a sampler written elsewhere is made known by ``register(name, cls)`` or the entry-point group
``diffrecon.samplers`` (``recon.plugins``).
"""
import re
from typing import Optional

from recon import plugins

from . import dc
from .base import Sampler, SamplingError
from .daps import DAPS
from .ddnm import DDNM
from .dds import DDS
from .diffpir import DiffPIR
from .dps import DPS
from .pigdm import PiGDM
from .pnp_dm import PnPDM
from .red_diff import REDDiff
from .score_ald import ScoreALD
from .score_mri import ScoreMRI
from .inversion import generate, invert
from .score_sde import ScoreSDE
from .sdedit import sdedit
from .unconditional import DDIM, Heun, PredictorCorrector

REGISTRY = {  # posterior samplers: sampler(y, A, prior, ...)
    "daps": DAPS,
    "ddnm": DDNM,
    "dds": DDS,
    "diffpir": DiffPIR,
    "dps": DPS,
    "pigdm": PiGDM,
    "pnp-dm": PnPDM,
    "red-diff": REDDiff,
    "score-ald": ScoreALD,
    "score-mri": ScoreMRI,
    "score-sde": ScoreSDE,
}
UNCONDITIONAL = {  # sampler(prior=prior, n_samples=..., shape=...)
    "ddim": DDIM,
    "heun": Heun,
    "pc": PredictorCorrector,
}


NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")
_PLUGINS_READ = False


def register(name: str, cls: type, replace: bool = False) -> type:
    """Make the sampler class ``cls`` known as ``name`` to ``get`` and to every command (``--sampler NAME``,
    sweeps, dataset runs): a posterior sampler (``cls.posterior``) joins ``REGISTRY``, an unconditional one
    ``UNCONDITIONAL``. Names are lower-case words joined by '-'; a name already taken is refused unless
    ``replace``. Returns ``cls`` (usable as a decorator through ``functools.partial``)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"a sampler name is lower-case letters, digits and '-' (e.g. 'my-sampler'), got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"sampler {name!r}: a sampler is a subclass of recon.samplers.Sampler, got {cls!r}")
    taken = REGISTRY.get(name) or UNCONDITIONAL.get(name)
    if taken is not None and taken is not cls and not replace:
        raise ValueError(f"sampler name {name!r} is taken by {taken.__module__}.{taken.__name__}; "
                         f"pass replace=True to replace it")
    REGISTRY.pop(name, None)
    UNCONDITIONAL.pop(name, None)
    (REGISTRY if cls.posterior else UNCONDITIONAL)[name] = cls
    return cls


def _read_plugins() -> None:
    """Register the samplers of the ``diffrecon.samplers`` entry points (once; ``recon.plugins``)."""
    global _PLUGINS_READ
    if _PLUGINS_READ:
        return
    _PLUGINS_READ = True
    for name, ep in plugins.entry_points("diffrecon.samplers"):
        if name not in REGISTRY and name not in UNCONDITIONAL:
            register(name, plugins.load_entry_point("diffrecon.samplers", name, ep))


def available(kind: str = "posterior") -> list:
    """Sorted names of the "posterior" or "unconditional" samplers, plugins included."""
    _read_plugins()
    if kind not in ("posterior", "unconditional"):
        raise ValueError(f"kind must be 'posterior' or 'unconditional', got {kind!r}")
    return sorted(REGISTRY if kind == "posterior" else UNCONDITIONAL)


def sampler_class(name: str) -> type:
    """The class registered as ``name`` (posterior or unconditional, plugins included)."""
    _read_plugins()
    cls = REGISTRY.get(name) or UNCONDITIONAL.get(name)
    if cls is None:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(REGISTRY)} (posterior), "
                         f"{sorted(UNCONDITIONAL)} (unconditional)")
    return cls


def get(name: str, preset: Optional[str] = None, **params) -> Sampler:
    """A sampler by name: one of ``REGISTRY`` (posterior) or ``UNCONDITIONAL``, with the settings of ``preset``
    (``Sampler.PRESETS``; "reference": the published code step for step) and ``params`` over them."""
    return sampler_class(name).from_preset(preset, **params)


def for_problem(name: str, A, prior, preset: Optional[str] = None, **settings) -> Sampler:
    """A sampler by name, configured for the operator ``A`` and the prior: the settings of ``preset``, then
    ``settings`` over them, then the sampler's defaults for the problem where neither sets a value
    (``Sampler.for_problem``; e.g. DDS's steps from the views of projection data). ``steps`` is the sampler's
    length (Score-ALD's levels); None leaves it to the sampler."""
    return sampler_class(name).for_problem(A, prior, preset=preset, **settings)


__all__ = ["Sampler", "SamplingError", "DDS", "DPS", "ScoreALD", "ScoreMRI", "ScoreSDE", "DDIM", "Heun",
           "PiGDM", "REDDiff",
           "DAPS", "PnPDM",
           "DDNM", "DiffPIR",
           "PredictorCorrector", "get", "for_problem", "register", "available", "sampler_class", "REGISTRY",
           "UNCONDITIONAL", "dc", "sdedit", "invert", "generate"]
