"""Network registry: build a network from ``{"name": ..., **kwargs}`` so a checkpoint's JSON config rebuilds it.

A network is its module plus one line in ``NETWORKS`` (registry name -> ``"module:Class"``, imported on first
use). The class records its constructor arguments in ``self.config`` and its registry name in ``registry_name``
(default: the class name in lower case); published configurations are named entries of its ``PRESETS``
(constructor arguments). ``forward(x, c)`` takes images (B, C, H, W) and the parametrisation's conditioning.

A network written elsewhere is made known by ``register(name, "module:Class")`` (or the class itself), or by an
installed distribution's entry point in the group ``diffrecon.networks`` (``recon.plugins``), read on first use;
priors saved with it then load by its name like the built-in ones.

What a network may offer the prior (``grid``): ``size_multiple`` (input sides must be multiples of it),
``any_size = False`` (it runs only on its training grid), and attention within tiles: ``set_attention_window``
(its own default), ``check_attention_window`` and ``windowed(pixels)`` (a context in which its calls attend
within tiles, its modules unchanged), as ``unet.UNet`` does.

A config comes from a file (a prior's JSON, a train config), so its sizes are not trusted: ``on_meta`` builds the
network on the meta device (names, shapes and dtypes, no memory) and stops a config that asks for more than
``MAX_MODULES`` modules while it is being built; ``nbytes`` is then what the real network would allocate.
"""
from __future__ import annotations

import importlib
import re
from typing import Mapping, Union

import torch
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook

from recon import plugins

NETWORKS = {
    "unet": "recon.priors.unet:UNet",
    "ncsnpp": "recon.priors.ncsnpp:NCSNpp",
    "adm": "recon.priors.adm:ADMUNet",
    "ncsnv2": "recon.priors.ncsnv2:NCSNv2",
}


GROUP = "diffrecon.networks"
NAME = re.compile(r"[a-z][a-z0-9]*([-_][a-z0-9]+)*\Z")
_PLUGINS_READ = False

# the published networks have at most 763 modules (ADM on ImageNet); a config asking for many more is refused as
# it is built (building 10000 modules on the meta device takes about a second)
MAX_MODULES = 10_000


def registry_name(net) -> str:
    """The name a network (class or instance) records in its configs: its ``registry_name``, else its class
    name in lower case."""
    cls = net if isinstance(net, type) else type(net)
    return getattr(net, "registry_name", cls.__name__.lower())


def register(name: str, target: Union[str, type], replace: bool = False) -> Union[str, type]:
    """Make a network known as ``name`` to ``build``, ``config_of`` and the prior formats: ``target`` is
    ``"module:Class"`` (imported on first use) or the class, an ``nn.Module`` whose ``registry_name`` (default:
    its class name in lower case) is ``name``. Names are lower-case letters and digits, words joined by '-' or
    '_'; a name already taken is refused unless ``replace``. Returns ``target``."""
    _read_plugins()
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"a network name is lower-case letters, digits, '-' and '_' (e.g. 'my-unet'), got {name!r}")
    if isinstance(target, str):
        if target.count(":") != 1 or not all(target.split(":")):
            raise ValueError(f"network {name!r}: a network is named as 'module:Class', got {target!r}")
    elif isinstance(target, type) and issubclass(target, nn.Module):
        if registry_name(target) != name:
            raise ValueError(f"network {name!r}: {target.__module__}.{target.__name__} records the registry name "
                             f"{registry_name(target)!r}; set its registry_name to {name!r}")
    else:
        raise TypeError(f"network {name!r}: expected 'module:Class' or an nn.Module subclass, got {target!r}")
    taken = NETWORKS.get(name)
    if taken is not None and taken != target and not replace:
        raise ValueError(f"network name {name!r} is taken by {_describe(taken)}; pass replace=True to replace it")
    NETWORKS[name] = target
    return target


def _describe(target) -> str:
    if isinstance(target, type):
        return f"{target.__module__}.{target.__name__}"
    return str(getattr(target, "value", target))


def _read_plugins() -> None:
    """Add the networks of the ``diffrecon.networks`` entry points (once; ``recon.plugins``), loaded on first
    use; a name the toolkit or ``register`` already holds is kept."""
    global _PLUGINS_READ
    if _PLUGINS_READ:
        return
    _PLUGINS_READ = True
    for name, ep in plugins.entry_points(GROUP):
        NETWORKS.setdefault(name, ep)


def available() -> list:
    """Names of the known networks, plugins included."""
    _read_plugins()
    return list(NETWORKS)


def network_class(name: str) -> type:
    """The class registered as ``name`` (importing its module on first use)."""
    _read_plugins()
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {available()}")
    target = NETWORKS[name]
    if isinstance(target, type):
        cls = target
    elif isinstance(target, str):
        module, cls_name = target.split(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"network {name!r} ({target}) failed to load: {type(e).__name__}: {e}") from e
    else:
        cls = plugins.load_entry_point(GROUP, name, target)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"network {name!r} ({_describe(target)}) is not an nn.Module subclass: {cls!r}")
    if registry_name(cls) != name:
        raise ValueError(f"network {_describe(target)} is registered as {name!r} but its registry_name is "
                         f"{registry_name(cls)!r}")
    return cls


def build(config: dict) -> nn.Module:
    """The network of ``config`` (``{"name": <registry name>, **constructor arguments}``) on the default device."""
    cfg = dict(config)
    return network_class(cfg.pop("name", None))(**cfg)


def on_meta(config: Mapping) -> nn.Module:
    """``build(config)`` on the meta device: the network's parameter and buffer names, shapes and dtypes without
    allocating them. Modules are counted as they are registered, and a config that asks for more than
    ``MAX_MODULES`` (blocks per level, levels) is refused then with a ValueError, before the constructor has run
    for long."""
    count = 0

    def counted(module, name, submodule):
        nonlocal count
        count += 1
        if count > MAX_MODULES:
            raise ValueError(f"network {config.get('name')!r} would have more than {MAX_MODULES} modules; "
                             f"check its block and level counts")

    handle = register_module_module_registration_hook(counted)
    try:
        with torch.device("meta"):
            return build(dict(config))
    finally:
        handle.remove()


def nbytes(net: nn.Module) -> int:
    """Bytes of ``net``'s parameters and buffers, each counted once (exact on the meta device too)."""
    tensors = {id(t): t for t in (*net.parameters(), *net.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def n_parameters(net: nn.Module) -> int:
    """The number of parameter elements of ``net``."""
    return sum(p.numel() for p in net.parameters())


def config_of(net: nn.Module) -> dict:
    """The config that rebuilds ``net`` (its registry name plus constructor arguments)."""
    if not hasattr(net, "config"):
        raise ValueError(f"{type(net).__name__} records no config; it cannot be saved in the toolkit's format")
    name = registry_name(net)
    if name not in available():
        raise ValueError(f"{type(net).__name__} is not a registered network (registry name {name!r}; "
                         f"known: {available()}); it cannot be saved in the toolkit's format")
    return {"name": name, **net.config}


def preset_config(name: str, preset: str) -> dict:
    """The full config (as ``config_of`` records it) of the network ``name`` built from its preset ``preset``."""
    cls = network_class(name)
    presets = getattr(cls, "PRESETS", {})
    if preset not in presets:
        raise ValueError(f"network {name!r} has no preset {preset!r}; presets: {sorted(presets)}")
    with torch.device("meta"):  # resolves defaults (e.g. ADM's channel_mult) without allocating weights
        return config_of(cls(**presets[preset]))
