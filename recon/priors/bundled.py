"""The bundled priors: trained priors shipped in ``recon/priors/bundled/<name>/prior.json`` (toolkit format),
loaded by name with ``priors.load("bundled:<name>")`` (or the bare name)."""
from __future__ import annotations

from pathlib import Path

from .format import CheckpointError

BUNDLED_DIR = Path(__file__).parent / "bundled"
# the priors the commands use when none is named (the best bundled one of each modality; see the model cards)
DEFAULT_MRI = "bundled:brain-synth-128"
DEFAULT_CT = "bundled:ct-anatomy-v2-128"


def available() -> list:
    """Names of the bundled priors (use as ``load('bundled:<name>')``)."""
    if not BUNDLED_DIR.exists():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "prior.json").exists())


def config_path(name: str) -> Path:
    """The ``prior.json`` of the bundled prior ``name``."""
    if name not in available():
        raise CheckpointError(f"no bundled prior named {name!r}; available: {available()}")
    return BUNDLED_DIR / name / "prior.json"
