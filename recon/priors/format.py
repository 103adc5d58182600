"""The toolkit's own prior format, and strict loading of state dicts.

A prior is a pair of files: ``<stem>.json`` (format version, network config, parametrisation, channel
convention, normalisation, image size) and ``<stem>.pt`` (the network's state dict, optionally half precision).

Loading is strict: every parameter of the network must be present with the right shape and nothing may
be left over; otherwise ``CheckpointError`` names the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from recon.atomic import atomic_path, write_text

from . import networks, parametrizations
from .prior import DiffusionPrior, Normalization

FORMAT = "diffrecon-prior/1"


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


def save(prior: DiffusionPrior, stem, half: bool = True, meta: Optional[dict] = None) -> Path:
    """Write ``<stem>.json`` and ``<stem>.pt`` (atomically). Returns the JSON path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    net = prior.denoiser.net
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()}
    cfg = {"format": FORMAT, "network": networks.config_of(net), **prior.config(),
           "weights": stem.name + ".pt", "meta": meta or {}}
    with atomic_path(stem.with_suffix(".pt")) as tmp:
        torch.save(state, tmp)
    return write_text(stem.with_suffix(".json"), json.dumps(cfg, indent=2))


def from_config(cfg: dict, state: Optional[Mapping] = None, source: str = "checkpoint") -> DiffusionPrior:
    """Build a prior from a config dict (as written by ``save``), loading ``state`` strictly if given."""
    net = networks.build(cfg["network"])
    if state is not None:
        load_state_strict(net, state, source)
    den = parametrizations.build(net, cfg["parametrization"])
    norm = Normalization(**cfg.get("normalization", {"kind": "none"}))
    return DiffusionPrior(den, channels=cfg.get("channels", "complex"), image_size=cfg.get("image_size"),
                          normalization=norm, name=cfg.get("name", ""))


def read(json_path, map_location="cpu", channels: Optional[str] = None,
         normalization: Optional[dict] = None) -> DiffusionPrior:
    """Load the prior saved as ``json_path`` and its weights file, in eval mode.

    ``channels`` and ``normalization`` (a ``Normalization`` field dict) replace the recorded ones."""
    json_path = Path(json_path)
    try:
        cfg = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{json_path}: not a readable prior config ({e})") from None
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: unknown format {cfg.get('format')!r}, expected {FORMAT!r}")
    weights = json_path.parent / cfg.get("weights", json_path.stem + ".pt")
    if not weights.exists():
        raise CheckpointError(f"{json_path}: weights file {weights} is missing")
    if channels is not None:
        cfg["channels"] = channels
    if normalization is not None:
        cfg["normalization"] = dict(normalization)
    state = torch.load(weights, map_location=map_location, weights_only=True)
    prior = from_config(cfg, state, source=str(weights))
    prior.eval()
    return prior
