"""Published checkpoints (Score-MRI, csgm-mri-langevin, DDS): their file layouts, and loading them strictly.

Each layout is converted to the network's state dict by the network module's own converter
(``ncsnpp.state_from_score_sde_checkpoint``, ``ncsnv2.state_from_csgm_checkpoint``; ADM files are raw state
dicts), loaded with ``load_state_strict`` and wrapped as a ``DiffusionPrior`` with the settings in ``PUBLISHED``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from . import networks, parametrizations
from .format import CheckpointError, load_state_strict
from .prior import DiffusionPrior, Normalization

# What each published checkpoint was trained with (from the papers' configs): the network as (registry name,
# preset in its ``PRESETS``), the parametrisation (a config dict, or the name of an entry of the network's
# ``DIFFUSION`` table), the channel convention and the data scaling. Any of them can be overridden in ``load``.
PUBLISHED = {
    # Score-MRI (Chung & Ye 2022): NCSN++ magnitude prior on fastMRI knee, VE SDE, data min-max scaled to [0, 1]
    "score-mri": {"network": ("ncsnpp", "score_mri_fastmri_knee"),
                  "parametrization": {"type": "ve_score", "sigma_min": 0.01, "sigma_max": 378.0, "conditioning": "sigma"},
                  "channels": "magnitude", "normalization": {"kind": "max"}},
    # csgm-mri-langevin (Jalal et al. 2021): NCSNv2-Deepest on complex MVUE scaled by its 99th percentile
    "csgm": {"network": ("ncsnv2", "csgm_mri"),
             "parametrization": {"type": "ve_score", "sigma_min": 0.0066, "sigma_max": 232.0,
                                 "conditioning": "index", "n_levels": 2311},
             "channels": "complex", "normalization": {"kind": "percentile", "q": 99.0}},
    # DDS (Chung, Lee & Ye 2024): ADM on complex fastMRI knee (2 channels) / AAPM CT (1 channel), linear VP, 1000 steps.
    # Their data scaling is not recorded in the checkpoint; "max" is assumed here, pass normalization= to change it.
    "dds-fastmri": {"network": ("adm", "dds_fastmri"), "parametrization": "dds_fastmri",
                    "channels": "complex", "normalization": {"kind": "max"}},
    "dds-aapm": {"network": ("adm", "dds_aapm"), "parametrization": "dds_aapm",
                 "channels": "real", "normalization": {"kind": "max"}},
}


def _defaults(kind: str) -> dict:
    spec = PUBLISHED[kind]
    name, preset = spec["network"]
    par = spec["parametrization"]
    if isinstance(par, str):
        par = networks.network_class(name).DIFFUSION[par]["parametrization"]
    return {"network": networks.preset_config(name, preset), "parametrization": dict(par),
            "channels": spec["channels"], "normalization": dict(spec["normalization"])}


def detect_format(obj) -> str:
    """Which published layout a loaded checkpoint object has: 'score-sde', 'csgm' or 'state-dict'."""
    if isinstance(obj, dict) and {"model", "ema", "step"} <= set(obj):
        return "score-sde"
    if isinstance(obj, (list, tuple)) and len(obj) >= 2 and isinstance(obj[0], dict):
        return "csgm"
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state-dict"
    raise CheckpointError("not a recognised checkpoint: expected a Score-MRI/score_sde dict (model, ema, step), "
                          "a csgm list [state_dict, ..., ema_shadow], or a raw state dict")


def load_published(path, kind: Optional[str] = None, network: Optional[dict] = None,
                   parametrization: Optional[dict] = None, channels: Optional[str] = None,
                   normalization: Optional[dict] = None, map_location="cpu") -> DiffusionPrior:
    """Load a published checkpoint file strictly into its network and wrap it as a ``DiffusionPrior``.

    ``kind`` is one of ``PUBLISHED`` (inferred from the file layout when omitted: a score_sde dict is
    'score-mri', a list is 'csgm', a raw state dict is an ADM model, 'dds-fastmri' for 2 input channels and
    'dds-aapm' for 1). ``network``/``parametrization``/``channels``/``normalization`` override the defaults."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"{p}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    fmt = detect_format(obj)
    if kind is None:
        if fmt == "score-sde":
            kind = "score-mri"
        elif fmt == "csgm":
            kind = "csgm"
        else:
            w = obj.get("input_blocks.0.0.weight")
            kind = "dds-fastmri" if w is not None and w.shape[1] == 2 else "dds-aapm"
    if kind not in PUBLISHED:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {sorted(PUBLISHED)}")
    cfg = _defaults(kind)
    if network is not None:
        cfg["network"] = {**cfg["network"], **network}
    for key, val in (("parametrization", parametrization), ("channels", channels), ("normalization", normalization)):
        if val is not None:
            cfg[key] = val
    net = networks.build(cfg["network"])
    if fmt == "score-sde":
        from .ncsnpp import state_from_score_sde_checkpoint
        try:
            state = state_from_score_sde_checkpoint(obj, net)
        except ValueError as e:
            raise CheckpointError(f"{p}: {e}") from None
    elif fmt == "csgm":
        from .ncsnv2 import state_from_csgm_checkpoint
        try:
            state = state_from_csgm_checkpoint(obj)
        except ValueError as e:
            raise CheckpointError(f"{p}: {e}") from None
    else:
        state = obj
    load_state_strict(net, state, source=str(p))
    prior = DiffusionPrior(parametrizations.build(net, cfg["parametrization"]), channels=cfg["channels"],
                           normalization=Normalization(**cfg["normalization"]), name=f"{kind}:{p.name}")
    return prior.eval()
