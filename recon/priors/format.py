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

Nothing a config declares is trusted before it is checked: a network is built first on the meta device
(``network_on_meta``: no memory), its bytes are checked against the memory budget (``recon.memory``) and the
weights' keys and shapes against it (the weights file is memory-mapped, so reading it costs nothing), and only
then is it built for real. The files a prior config names (``weights``) must lie inside the config's folder
once symlinks are resolved (``file_in_folder``).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from recon import memory
from recon.atomic import atomic_path, write_text

from . import networks, parametrizations
from .prior import DiffusionPrior, Normalization

FORMAT = "diffrecon-prior/1"


class CheckpointError(ValueError):
    """A checkpoint that does not match its network, or a file that is not a checkpoint."""


def _summ(keys, n: int = 8) -> str:
    keys = sorted((str(k) for k in keys))
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _numpy_scalar_globals() -> list:
    """The globals a pickled numpy scalar needs: its reconstructor under both module names, ``numpy.dtype`` and
    the numeric dtype classes (the unpickler rebuilds the dtype, then sets its state)."""
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar reconstructor, wherever this numpy keeps it
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefd"}
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtypes]


def torch_load(path, map_location="cpu", mmap: bool = False):
    """``torch.load(path, weights_only=True)`` that also accepts numpy scalars (see the module docstring).
    ``mmap``: the tensors of a file in torch's zip format are mapped from the file, not read (their shapes can be
    checked before anything is allocated); a file in the legacy format is read."""
    try:
        mapped = bool(mmap) and zipfile.is_zipfile(path)
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mapped)
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


def _shape(value):
    """A tensor's shape as a tuple, or the type name of anything else (which matches no shape)."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}, not a tensor"


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping, source: str, what: str) -> None:
    """``CheckpointError`` naming every key of ``expected`` missing from ``state``, every key of ``state`` not in
    ``expected`` and every shape that differs; ``what`` names what ``state`` should match."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f"{k} (checkpoint {_shape(state[k])}, network {tuple(expected[k].shape)})"
              for k in sorted(set(expected) & set(state), key=str) if tuple(expected[k].shape) != _shape(state[k])]
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


def network_on_meta(config, source: str, copies: int = 1, holds: str = "") -> nn.Module:
    """The network of ``config`` built on the meta device (``networks.on_meta``), after checking that the real one
    fits the memory budget: its parameter and buffer bytes times ``copies`` (``holds`` says what the copies are)
    go to ``recon.memory.check_allocation``. A config that is not an object naming a network, or whose arguments
    its class refuses, is a ``CheckpointError`` that starts with ``source``; too large a network a ValueError."""
    if not isinstance(config, Mapping) or not isinstance(config.get("name"), str):
        got = repr(config)
        raise CheckpointError(f"{source} must be an object with a 'name' (one of {networks.available()}) and the "
                              f"network's options, got {got if len(got) <= 200 else got[:200] + ' ...'}")
    try:
        net = networks.on_meta(config)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{source} ({config['name']}): {reason}") from None
    memory.check_allocation(networks.nbytes(net) * copies,
                            f"{source} ({config['name']}, {networks.n_parameters(net):,} parameters{holds})")
    return net


def build_network(config, state: Optional[Mapping] = None, source: str = "checkpoint",
                  config_source: Optional[str] = None) -> nn.Module:
    """The network of ``config`` with ``state`` loaded strictly, checked before it is allocated: on the meta
    device first, against the memory budget (errors start with ``config_source``, default ``source: network``)
    and, ``state`` given, key by key and shape by shape (``check_state``; errors start with ``source``)."""
    meta = network_on_meta(config, config_source or f"{source}: network")
    if state is not None:
        check_state(meta.state_dict(), state, source, f"the {type(meta).__name__} network")
    net = networks.build(config)
    if state is not None:
        load_state_strict(net, state, source)
    return net


def from_config(cfg: dict, state: Optional[Mapping] = None, source: str = "checkpoint",
                config_source: Optional[str] = None) -> DiffusionPrior:
    """Build a prior from a config dict (as written by ``save``), loading ``state`` strictly if given; the network
    is checked against the memory budget and ``state`` before it is built (``build_network``)."""
    net = build_network(cfg.get("network"), state, source, config_source)
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


def file_in_folder(json_path, name, key: str = "weights") -> Path:
    """The file ``name`` that the prior config ``json_path`` names in its entry ``key``, resolved (symlinks
    included): it must lie inside the config's folder; anything else (``..``, an absolute path elsewhere, a
    symlink out) is a ``CheckpointError`` naming the config, the entry and the folder."""
    json_path = Path(json_path)
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"prior config {json_path}: {key} must name a file in the prior's folder, got {name!r}")
    try:
        folder = json_path.parent.resolve()
        target = (folder / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"prior config {json_path}: {key} {name!r} cannot be resolved ({e})") from None
    if folder not in target.parents:
        raise CheckpointError(f"prior config {json_path}: {key} {name!r} resolves outside the prior's folder "
                              f"{folder} (to {target}); a prior's files must lie in its folder")
    return target


def read(json_path, map_location="cpu", channels: Optional[str] = None,
         normalization: Optional[dict] = None) -> DiffusionPrior:
    """Load the prior saved as ``json_path`` and its weights file, in eval mode.

    The weights file must lie in the config's folder (``file_in_folder``) and hold a state dict of tensors; it is
    memory-mapped, and its keys and shapes are checked against the network built on the meta device, and the
    network's size against the memory budget, before the network is built (``build_network``).
    ``channels`` and ``normalization`` (a ``Normalization`` field dict) replace the recorded ones."""
    json_path = Path(json_path)
    try:
        cfg = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{json_path}: not a readable prior config ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"prior config {json_path}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: unknown format {cfg.get('format')!r}, expected {FORMAT!r}")
    weights = file_in_folder(json_path, cfg.get("weights", json_path.stem + ".pt"))
    if not weights.exists():
        raise CheckpointError(f"{json_path}: weights file {weights} is missing")
    if not weights.is_file():
        raise CheckpointError(f"{json_path}: weights {weights} is not a file")
    if channels is not None:
        cfg["channels"] = channels
    if normalization is not None:
        cfg["normalization"] = dict(normalization)
    state = torch_load(weights, map_location, mmap=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights}: expected a state dict (names to tensors) for the prior config "
                              f"{json_path}, got {type(state).__name__}" +
                              (" with values that are not tensors" if isinstance(state, Mapping) else ""))
    prior = from_config(cfg, state, source=str(weights), config_source=f"prior config {json_path}: network")
    prior.eval()
    return prior
