"""Network registry: build a network from ``{"name": ..., **kwargs}`` so a checkpoint's JSON config rebuilds it.

A network is its module plus one line in ``NETWORKS`` (registry name -> ``"module:Class"``, imported on first
use). The class records its constructor arguments in ``self.config`` and its registry name in ``registry_name``;
published configurations are named entries of its ``PRESETS`` (constructor arguments).

A config comes from a file (a prior's JSON, a train config), so its sizes are not trusted: ``on_meta`` builds the
network on the meta device (names, shapes and dtypes, no memory) and stops a config that asks for more than
``MAX_MODULES`` modules while it is being built; ``nbytes`` is then what the real network would allocate.
"""
from __future__ import annotations

import importlib
from typing import Mapping

import torch
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook

NETWORKS = {
    "unet": "recon.priors.unet:UNet",
    "ncsnpp": "recon.priors.ncsnpp:NCSNpp",
    "adm": "recon.priors.adm:ADMUNet",
    "ncsnv2": "recon.priors.ncsnv2:NCSNv2",
}


# the published networks have at most 763 modules (ADM on ImageNet); a config asking for many more is refused as
# it is built (building 10000 modules on the meta device takes about a second)
MAX_MODULES = 10_000


def available() -> list:
    return list(NETWORKS)


def network_class(name: str) -> type:
    """The class registered as ``name`` (importing its module on first use)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {available()}")
    module, cls_name = NETWORKS[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if getattr(cls, "registry_name", None) != name:
        raise ValueError(f"network {NETWORKS[name]} is registered as {name!r} but its registry_name is "
                         f"{getattr(cls, 'registry_name', None)!r}")
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
    name = getattr(net, "registry_name", type(net).__name__.lower())
    if name not in NETWORKS:
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
