"""The bundled priors: trained priors shipped in ``recon/priors/bundled/<name>/prior.json`` (toolkit format),
loaded by name with ``priors.load("bundled:<name>")`` (or the bare name)."""
from __future__ import annotations

from pathlib import Path

from .format import CheckpointError, file_in_folder

BUNDLED_DIR = Path(__file__).parent / "bundled"
# the priors the commands use when none is named (the best bundled one of each modality; see the model cards)
DEFAULT_MRI = "bundled:brain-synth-128"
DEFAULT_CT = "bundled:ct-anatomy-v2-128"
# ... and the CT prior for grids of CT_NATIVE_FROM pixels per side and more: trained on crops down to the pixel size
# of whole 512 x 512 slices (experiments/RESULTS.md, "A CT prior for the native geometry": ahead of the default at
# 512 x 512 on validation and on real heads, level with it at 128 x 128 on validation and behind it on real slices)
DEFAULT_CT_NATIVE = "bundled:ct-anatomy-v3-128"
CT_NATIVE_FROM = 256
# ... and the prior of unconditional synthesis (`recon synthesize`): the T1-template prior, whose samples are whole
# axial brain slices (15 of 16 at 128 x 128 and 8 of 8 at 320 x 320 are one object inside the field of view, against
# 11/16 and 6/8 for DEFAULT_MRI, whose training distribution of random contrasts and close-up crops its samples
# reproduce; experiments/RESULTS.md, "Which prior synthesises"). Reconstruction and the other tasks keep DEFAULT_MRI,
# which generalises to real data.
DEFAULT_SYNTHESIS = "bundled:mni-brain-128"


def default_ct(grid) -> str:
    """The bundled CT prior for an image grid (H, W): ``DEFAULT_CT_NATIVE`` when its larger side is at least
    ``CT_NATIVE_FROM`` pixels, else ``DEFAULT_CT``."""
    return DEFAULT_CT_NATIVE if max(int(n) for n in tuple(grid)[-2:]) >= CT_NATIVE_FROM else DEFAULT_CT


def available() -> list:
    """Names of the bundled priors (use as ``load('bundled:<name>')``)."""
    if not BUNDLED_DIR.exists():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "prior.json").exists())


def config_path(name: str) -> Path:
    """The ``prior.json`` of the bundled prior ``name``; it must resolve (symlinks included) inside the prior's
    folder, as the files it names must (``format.file_in_folder``)."""
    if name not in available():
        raise CheckpointError(f"no bundled prior named {name!r}; available: {available()}")
    return file_in_folder(BUNDLED_DIR / name / "prior.json", "prior.json", key="config")
