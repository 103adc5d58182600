"""Network registry: build a network from ``{"name": ..., **kwargs}`` so a checkpoint's JSON config rebuilds it."""
from __future__ import annotations

from torch import nn


def build(config: dict) -> nn.Module:
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name == "unet":
        from .unet import UNet
        return UNet(**cfg)
    if name == "ncsnpp":
        from .ncsnpp import NCSNpp
        return NCSNpp(**cfg)
    if name == "adm":
        from .adm import ADMUNet
        return ADMUNet(**cfg)
    if name == "ncsnv2":
        from .ncsnv2 import NCSNv2
        return NCSNv2(**cfg)
    raise ValueError(f"unknown network {name!r}; known: {available()}")


def available() -> list:
    return ["unet", "ncsnpp", "adm", "ncsnv2"]


def config_of(net: nn.Module) -> dict:
    """The config that rebuilds ``net`` (its registry name plus constructor arguments)."""
    if not hasattr(net, "config"):
        raise ValueError(f"{type(net).__name__} records no config; it cannot be saved in the toolkit's format")
    return {"name": getattr(net, "registry_name", type(net).__name__.lower()), **net.config}
