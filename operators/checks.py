"""Validation of values at the toolkit's boundaries: one helper per kind of value, one message format.

Every value that enters from outside (a command-line option, a config key, a file's content, an argument of a
public constructor) is checked once, where it enters, by one of these. A failed check raises ``ValueError``
(``TypeError`` for a value of the wrong kind) whose message names the option, the value and what is allowed:

    steps must be an integer >= 1, got 0
    acceleration must be a finite number >= 1, got inf
    unknown key 'acclerations' in sweep.toml; did you mean 'accelerations'? (valid keys: ...)

Tensors: ``as_tensor`` is the one conversion rule of the operators, ESPIRiT, the classical methods and the
samplers. A NumPy array is accepted and converted with ``torch.as_tensor`` (no copy); a float or complex
tensor is used in its own precision (complex128 in, complex128 out); integer and boolean tensors are refused
(their arithmetic would silently truncate), as is anything that is not an array.

Lives in ``operators`` because ``operators`` imports nothing from ``recon``; ``recon`` uses the same helpers.
"""
from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable, Optional

import numpy as np
import torch

__all__ = ["is_int", "check_int", "check_real", "check_positive", "check_choice", "check_keys", "closest",
           "as_tensor", "check_finite_tensor", "is_finite", "check_tensor_range"]


def is_int(value) -> bool:
    """An integer that is not a bool (Python int, NumPy integer)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _bounds(minimum, maximum, above=None, below=None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above:g}" if isinstance(above, float) else f"> {above}")
    elif minimum is not None:
        parts.append(f">= {minimum:g}" if isinstance(minimum, float) else f">= {minimum}")
    if below is not None:
        parts.append(f"< {below:g}" if isinstance(below, float) else f"< {below}")
    elif maximum is not None:
        parts.append(f"<= {maximum:g}" if isinstance(maximum, float) else f"<= {maximum}")
    return " and ".join(parts)


def check_int(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An integer (not a bool, not a float) in [minimum, maximum]; returns it as ``int``."""
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = _bounds(minimum, maximum)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_real(name: str, value, minimum: Optional[float] = None, maximum: Optional[float] = None, *,
               above: Optional[float] = None, below: Optional[float] = None) -> float:
    """A finite real number (not a bool) with ``minimum <= value <= maximum`` (``above``/``below``: strict
    bounds); returns it as ``float``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = ((minimum is None or v >= minimum) and (maximum is None or v <= maximum)
              and (above is None or v > above) and (below is None or v < below))
    if not ok:
        bounds = _bounds(minimum, maximum, above, below)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``)."""
    return check_real(name, value, minimum=0.0) if allow_zero else check_real(name, value, above=0.0)


def closest(word, options: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of ``options`` to ``word`` (difflib), or ""."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """One of ``choices``; the error names the closest choice."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}{closest(value, choices)} (expected one of "
                         f"{', '.join(map(str, choices))})")
    return value


def check_keys(where: str, keys: Iterable[str], valid: Iterable[str]) -> None:
    """Every key is one of ``valid``; a misspelled one is refused with the closest valid name."""
    valid = list(valid)
    for k in keys:
        if k not in valid:
            raise ValueError(f"unknown key {k!r} in {where}{closest(k, valid)} (valid keys: {', '.join(valid)})")


def is_finite(x: torch.Tensor) -> bool:
    """No NaN or Inf in a real or complex tensor."""
    return bool(torch.isfinite(torch.view_as_real(x.resolve_conj()) if x.is_complex() else x).all())


def check_finite_tensor(name: str, x: torch.Tensor) -> torch.Tensor:
    if not is_finite(x):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def as_tensor(name: str, x, complex_only: bool = False) -> torch.Tensor:
    """``x`` as a float or complex tensor (see the module docstring for the rule); ``complex_only`` refuses
    real data (k-space)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fc":
            raise TypeError(f"{name} must be a float or complex array, got NumPy dtype {x.dtype}")
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (or a NumPy array), got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a float or complex tensor, got dtype {x.dtype}; convert it first "
                        f"(x.float() or x.to(torch.complex64))")
    if complex_only and not x.is_complex():
        raise TypeError(f"{name} must be complex, got dtype {x.dtype}")
    return x


def check_tensor_range(name: str, x: torch.Tensor, minimum: Optional[float] = None, below: Optional[float] = None,
                       allowed: Optional[str] = None) -> torch.Tensor:
    """A real tensor without NaN or Inf whose entries are ``>= minimum`` and ``< below``; ``allowed`` names the
    interval in the message (default: the bounds), which reports the range the values actually span."""
    if x.is_complex():
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    check_finite_tensor(name, x)
    if x.numel() and ((minimum is not None and bool((x < minimum).any())) or
                      (below is not None and bool((x >= below).any()))):
        if allowed is None:
            allowed = " and ".join(p for p in (f">= {minimum:g}" if minimum is not None else "",
                                              f"< {below:g}" if below is not None else "") if p)
        raise ValueError(f"{name} must lie in {allowed}, got values from {float(x.min()):.8g} to "
                         f"{float(x.max()):.8g}")
    return x
