"""The toolkit's own prior format, reading checkpoint files safely, and strict loading of state dicts.

A prior is a pair of files: ``<stem>.json`` (format version, network config, parametrisation, channel
convention, normalisation, image size) and ``<stem>.pt`` (the network's state dict, optionally half precision).

``torch_load`` reads any checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only,
plus exactly the numpy scalars that training code leaves in optimizer state (score_sde_pytorch's
``losses.optimization_manager`` sets each param group's ``lr = lr * np.minimum(step / warmup, 1.0)``, a
``numpy.float64``, so its ``utils.save_checkpoint`` pickles ``numpy.core.multiarray.scalar`` (numpy < 2; numpy 2
writes ``numpy._core.multiarray.scalar``) with a ``numpy.dtype``). Nothing else is unpickled.

Loading is strict: every parameter of the network must be present with the right shape and nothing may
be left over; otherwise ``CheckpointError`` names the missing, unexpected and mis-shaped keys. A state dict
saved from a DataParallel/DDP wrapper has every key prefixed ``module.``; ``strip_module_prefix`` removes it
when all keys carry it and refuses a dict where only some do.
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


def _numpy_scalar_globals() -> list:
    """The globals a pickled numpy scalar needs: its reconstructor under both module names, ``numpy.dtype`` and
    the numeric dtype classes (the unpickler rebuilds the dtype, then sets its state)."""
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar reconstructor, wherever this numpy keeps it
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefd"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtypes]


def torch_load(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` that also accepts numpy scalars (see the module docstring)."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        msg = str(e)
        if "WeightsUnpickler error:" in msg:  # keep torch's reason, not its advice to unpickle arbitrary code
            msg = msg.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
            msg = msg.rstrip(".") + "; only tensors, plain containers and numpy scalars are read from a checkpoint"
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {msg})") from None


def strip_module_prefix(state: Mapping, source: str = "checkpoint") -> dict:
    """``state`` without the ``module.`` prefix DataParallel/DDP puts on every key (unchanged if no key has it);
    ``CheckpointError`` if only some keys carry it."""
    plain = [k for k in state if not (isinstance(k, str) and k.startswith("module."))]
    if len(plain) == len(state):
        return dict(state)
    if plain:
        raise CheckpointError(f"{source}: {len(state) - len(plain)} of {len(state)} keys carry the DataParallel "
                              f"'module.' prefix and {len(plain)} do not ({_summ(plain, 4)}); a module. prefix must be "
                              "on every key or on none")
    return {k[len("module."):]: v for k, v in state.items()}


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping, source: str, what: str) -> None:
    """``CheckpointError`` naming every key of ``expected`` missing from ``state``, every key of ``state`` not in
    ``expected`` and every shape that differs; ``what`` names what ``state`` should match."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f"{k} (checkpoint {tuple(state[k].shape)}, network {tuple(expected[k].shape)})"
              for k in sorted(set(expected) & set(state)) if tuple(expected[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summ(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summ(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys: {'; '.join(shapes[:8])}" + (f" ... and {len(shapes) - 8} more" if len(shapes) > 8 else ""))
    if problems:
        raise CheckpointError(f"{source} does not match {what}: " + "; ".join(problems))


def load_state_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``net`` exactly, or raise ``CheckpointError`` naming every mismatch."""
    own = net.state_dict()
    check_state(own, state, source, f"the {type(net).__name__} network")
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
                          normalization=norm, name=cfg.get("name", ""), max_grid=cfg.get("max_grid"),
                          attention_window=cfg.get("attention_window"), coarse=cfg.get("coarse"))


def is_config_of(json_path, weights) -> bool:
    """Whether ``json_path`` is the toolkit config of the weights file ``weights``: a JSON object with the
    toolkit's ``format`` key whose ``weights`` entry (default ``<stem>.pt``) names that file. Any other JSON next
    to a checkpoint (a training config, say) is not."""
    try:
        cfg = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(cfg, dict) and "format" in cfg
            and cfg.get("weights", Path(json_path).stem + ".pt") == Path(weights).name)


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
    state = torch_load(weights, map_location)
    prior = from_config(cfg, state, source=str(weights))
    prior.eval()
    return prior
