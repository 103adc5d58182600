"""Network registry: build a network from ``{"name": ..., **kwargs}`` so a checkpoint's JSON config rebuilds it.

A network is its module plus one line in ``NETWORKS`` (registry name -> ``"module:Class"``, imported on first
use). The class records its constructor arguments in ``self.config`` and its registry name in ``registry_name``;
published configurations are named entries of its ``PRESETS`` (constructor arguments).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

NETWORKS = {
    "unet": "recon.priors.unet:UNet",
    "ncsnpp": "recon.priors.ncsnpp:NCSNpp",
    "adm": "recon.priors.adm:ADMUNet",
    "ncsnv2": "recon.priors.ncsnv2:NCSNv2",
}


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
    cfg = dict(config)
    return network_class(cfg.pop("name", None))(**cfg)


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
