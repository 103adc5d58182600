"""Which path runs: the CuPy CUDA kernels or the torch reference implementations in ``operators``.

The switch is ``set_backend(name)`` or, if that was never called, the environment variable
``RECON_KERNELS`` (read at the first decision):

- ``auto`` (default): the kernels for CUDA tensors when CuPy is usable, torch otherwise;
- ``cupy``: the kernels for every CUDA tensor they support (float32 / complex64); when CuPy is unusable,
  ``set_backend("cupy")`` and the first operator call under ``RECON_KERNELS=cupy`` raise
  ``KernelsUnavailable`` with the reason;
- ``torch``: always the torch reference.

CPU tensors always take the torch path. The first decision about a tensor on a kernel device logs one message
per process (logger ``"kernels"``) naming the path and why: INFO when the kernels run or torch was asked for,
WARNING when CUDA tensors fall back to torch because CuPy is unusable.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from .runtime import runtime

BACKENDS = ("auto", "cupy", "torch")
ENV = "RECON_KERNELS"

log = logging.getLogger("kernels")
_chosen: Optional[str] = None   # set_backend's value; None: the environment decides
_announced = False


class KernelsUnavailable(RuntimeError):
    """The CuPy kernels were forced but cannot run here."""


def _check(name: str, source: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name


def requested() -> str:
    """The requested backend: ``set_backend``'s value, else ``RECON_KERNELS``, else "auto"."""
    if _chosen is not None:
        return _chosen
    return _check(os.environ.get(ENV, "auto") or "auto", f"the environment variable {ENV}")


def _unavailable(why: str, how: str) -> KernelsUnavailable:
    return KernelsUnavailable(f"the CuPy kernels were forced ({how}) but cannot run: {why}. "
                              f"Use {ENV}=auto or torch (or kernels.set_backend('auto')) for the torch path.")


def set_backend(name: Optional[str]) -> None:
    """Force "cupy" or "torch", or go back to "auto"; ``None`` hands the choice back to ``RECON_KERNELS``.
    Forcing "cupy" raises ``KernelsUnavailable`` at once when CuPy is unusable."""
    global _chosen
    if name is None:
        _chosen = None
        return
    name = _check(name, "the backend")
    if name == "cupy":
        ok, why = runtime().status()
        if not ok:
            raise _unavailable(why, "set_backend('cupy')")
    _chosen = name


def backend() -> str:
    """The path CUDA tensors take now: "cupy" or "torch" (raises ``KernelsUnavailable`` if cupy is forced
    but unusable)."""
    req = requested()
    if req == "torch":
        return "torch"
    ok, why = runtime().status()
    if req == "cupy" and not ok:
        raise _unavailable(why, f"{ENV}=cupy" if _chosen is None else "set_backend('cupy')")
    return "cupy" if ok else "torch"


def _announce(path: str) -> None:
    global _announced
    if _announced:
        return
    _announced = True
    req = requested()
    ok, why = runtime().status()
    if path == "cupy":
        log.info("kernels: CUDA tensors use the CuPy kernels (%s; backend %s). Set %s=torch or "
                 "kernels.set_backend('torch') for the torch reference.", why, req, ENV)
    elif req == "torch":
        log.info("kernels: CUDA tensors use the torch reference path (%s=torch or set_backend('torch')).", ENV)
    else:
        log.warning("kernels: CUDA tensors use the torch reference path because the CuPy kernels are unusable: %s",
                    why)


def describe(device: str = "cpu") -> str:
    """One line naming the path the operators take on ``device`` ("cpu", "cuda", "cuda:N"), and why."""
    req = requested()
    if not str(device).startswith("cuda"):
        return f"compute: {device}, torch operators (the CuPy kernels are for CUDA tensors only)"
    if req == "torch":
        return f"compute: {device}, torch operators ({ENV}=torch or set_backend('torch'))"
    ok, why = runtime().status()
    if ok:
        return f"compute: {device}, CuPy kernels for the SENSE normal operator, CG and the CT projector ({why})"
    if req == "cupy":
        raise _unavailable(why, f"{ENV}=cupy" if _chosen is None else "set_backend('cupy')")
    return f"compute: {device}, torch operators (the CuPy kernels are unusable: {why})"


def use_kernels(t: torch.Tensor) -> bool:
    """Whether an operation on ``t`` (and tensors on its device) should run the kernels. Says once which path
    CUDA tensors take; raises ``KernelsUnavailable`` if cupy is forced but unusable."""
    req = requested()
    if req == "cupy":
        backend()  # raises with the reason when CuPy is unusable, for CPU tensors too
    if not runtime().supports(t.device):
        return False
    path = backend()
    _announce(path)
    return path == "cupy"
