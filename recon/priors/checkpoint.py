"""Saving and loading priors.

The toolkit's own format is a pair of files: ``<stem>.json`` (format version, network config,
parametrisation, channel convention, normalisation, image size) and ``<stem>.pt`` (the network's
state dict, optionally half precision). Bundled priors live in ``recon/priors/bundled/<name>/prior.json``
and load by name: ``load("bundled:<name>")``.

Loading is strict: every parameter of the network must be present with the right shape and nothing may
be left over; otherwise ``CheckpointError`` names the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from . import networks, parametrizations
from .prior import DiffusionPrior, Normalization

FORMAT = "diffrecon-prior/1"
BUNDLED_DIR = Path(__file__).parent / "bundled"


class CheckpointError(ValueError):
    """A checkpoint that does not match its network, or a file that is not a checkpoint."""


def _summ(keys, n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``net`` exactly, or raise ``CheckpointError`` naming every mismatch."""
    own = net.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [f"{k} (checkpoint {tuple(state[k].shape)}, network {tuple(own[k].shape)})"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summ(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summ(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys: {'; '.join(shapes[:8])}" + (f" ... and {len(shapes) - 8} more" if len(shapes) > 8 else ""))
    if problems:
        raise CheckpointError(f"{source} does not match the {type(net).__name__} network: " + "; ".join(problems))
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def _atomic_save(write, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(prior: DiffusionPrior, stem, half: bool = True, meta: Optional[dict] = None) -> Path:
    """Write ``<stem>.json`` and ``<stem>.pt`` (atomically). Returns the JSON path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    net = prior.denoiser.net
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()}
    cfg = {"format": FORMAT, "network": networks.config_of(net), **prior.config(),
           "weights": stem.name + ".pt", "meta": meta or {}}
    _atomic_save(lambda p: torch.save(state, p), stem.with_suffix(".pt"))
    _atomic_save(lambda p: p.write_text(json.dumps(cfg, indent=2)), stem.with_suffix(".json"))
    return stem.with_suffix(".json")


def from_config(cfg: dict, state: Optional[Mapping] = None, source: str = "checkpoint") -> DiffusionPrior:
    """Build a prior from a config dict (as written by ``save``), loading ``state`` strictly if given."""
    net = networks.build(cfg["network"])
    if state is not None:
        load_state_strict(net, state, source)
    den = parametrizations.build(net, cfg["parametrization"])
    norm = Normalization(**cfg.get("normalization", {"kind": "none"}))
    return DiffusionPrior(den, channels=cfg.get("channels", "complex"), image_size=cfg.get("image_size"),
                          normalization=norm, name=cfg.get("name", ""))


def _load_own(json_path: Path, map_location="cpu") -> DiffusionPrior:
    try:
        cfg = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{json_path}: not a readable prior config ({e})") from None
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: unknown format {cfg.get('format')!r}, expected {FORMAT!r}")
    weights = json_path.parent / cfg.get("weights", json_path.stem + ".pt")
    if not weights.exists():
        raise CheckpointError(f"{json_path}: weights file {weights} is missing")
    state = torch.load(weights, map_location=map_location, weights_only=True)
    prior = from_config(cfg, state, source=str(weights))
    prior.eval()
    return prior


def available() -> list:
    """Names of the bundled priors (use as ``load('bundled:<name>')``)."""
    if not BUNDLED_DIR.exists():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "prior.json").exists())


# Published checkpoints: the network, parametrisation, channel convention and data scaling each was trained
# with (from the papers' configs). Any of them can be overridden in ``load``.
PUBLISHED = {
    # Score-MRI (Chung & Ye 2022): NCSN++ magnitude prior on fastMRI knee, VE SDE, data min-max scaled to [0, 1]
    "score-mri": {"network": ("ncsnpp", "SCORE_MRI_FASTMRI_KNEE"),
                  "parametrization": {"type": "ve_score", "sigma_min": 0.01, "sigma_max": 378.0, "conditioning": "sigma"},
                  "channels": "magnitude", "normalization": {"kind": "max"}},
    # csgm-mri-langevin (Jalal et al. 2021): NCSNv2-Deepest on complex MVUE scaled by its 99th percentile
    "csgm": {"network": ("ncsnv2", "CSGM_MRI_CONFIG"),
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


def _published_defaults(kind: str) -> dict:
    spec = PUBLISHED[kind]
    name, ref = spec["network"]
    if name == "ncsnpp":
        from .ncsnpp import SCORE_MRI_FASTMRI_KNEE as cfg
    elif name == "ncsnv2":
        from .ncsnv2 import CSGM_MRI_CONFIG as cfg
    else:
        cfg = _adm_config(ref)
    par = spec["parametrization"]
    if isinstance(par, str):
        from .adm import ADMUNet
        par = dict(ADMUNet.DIFFUSION[par]["parametrization"])
    return {"network": {"name": name, **dict(cfg)}, "parametrization": dict(par), "channels": spec["channels"],
            "normalization": dict(spec["normalization"])}


def _adm_config(ref: str) -> dict:
    from .adm import ADMUNet

    with torch.device("meta"):
        return dict(getattr(ADMUNet, ref)().config)


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
    cfg = _published_defaults(kind)
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


def load(path_or_name, map_location="cpu", **published) -> DiffusionPrior:
    """Load a prior: ``bundled:<name>``, a toolkit prior (``.json``, or a folder with ``prior.json``), or a
    published checkpoint file (Score-MRI, csgm, DDS; see ``load_published`` for the keyword overrides)."""
    s = str(path_or_name)
    if s.startswith("bundled:"):
        name = s.split(":", 1)[1]
        if name not in available():
            raise CheckpointError(f"no bundled prior named {name!r}; available: {available()}")
        return _load_own(BUNDLED_DIR / name / "prior.json", map_location)
    p = Path(s)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder")
    if p.is_dir():
        if not (p / "prior.json").exists():
            raise CheckpointError(f"{p}: folder has no prior.json")
        return _load_own(p / "prior.json", map_location)
    if p.suffix == ".json":
        return _load_own(p, map_location)
    if p.with_suffix(".json").exists():
        return _load_own(p.with_suffix(".json"), map_location)
    return load_published(p, map_location=map_location, **published)
