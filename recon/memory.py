"""The memory budget: sizes that come from outside are checked against it before anything is allocated.

A file's header, a config or an option can declare an array of any size (k-space of 100000 x 100000, 10^6 coils,
a CT grid of 100000 pixels a side, a network of 20000 base channels). Every reader and builder that allocates
from such a size first asks ``check_allocation(nbytes, what)``, which refuses, in one line naming what and how
much, anything above the budget:

- ``RECON_MEMORY_GIB`` in the environment, or ``set_budget(gib)`` (the ``recon --memory GiB`` option), or
- the machine's physical memory (``os.sysconf``), or 16 GiB where the system does not tell.

The check is a bound on what one declared object needs, not an accounting of the process: it stops an input
from asking for more than the machine has, which is where a hostile or corrupt header would otherwise hang or
kill the command.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from operators.checks import check_real

GIB = 1 << 30
ENVIRONMENT = "RECON_MEMORY_GIB"
FALLBACK_GIB = 16.0
_BUDGET: Optional[int] = None   # bytes, set by set_budget


def machine_bytes() -> int:
    """The machine's physical memory in bytes, or ``FALLBACK_GIB`` where the system does not tell."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return int(FALLBACK_GIB * GIB)


def _gib(name: str, value) -> int:
    return int(check_real(name, value, above=0.0, maximum=1 << 20) * GIB)


def budget_bytes() -> int:
    """The budget in bytes: ``set_budget``, else ``RECON_MEMORY_GIB``, else the machine's memory."""
    if _BUDGET is not None:
        return _BUDGET
    text = os.environ.get(ENVIRONMENT)
    if text:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{ENVIRONMENT} must be a number of GiB > 0, got {text!r}") from None
        return _gib(ENVIRONMENT, value)
    return machine_bytes()


def set_budget(gib) -> None:
    """Set the budget in GiB (``None``: back to the environment or the machine's memory)."""
    global _BUDGET
    _BUDGET = None if gib is None else _gib("--memory", gib)


@contextmanager
def budget(gib) -> Iterator[None]:
    """Within the block the budget is ``gib`` GiB (``None``: unchanged)."""
    global _BUDGET
    old = _BUDGET
    if gib is not None:
        set_budget(gib)
    try:
        yield
    finally:
        _BUDGET = old


def describe(nbytes: float) -> str:
    """A size for a person: '1.5 GiB', '320 MiB', '12 kiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", 1 << 20), ("kiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def nbytes(shape, itemsize: int) -> int:
    """Bytes of an array of ``shape`` (any iterable of non-negative ints) with ``itemsize`` bytes per element."""
    return math.prod(int(n) for n in shape) * int(itemsize)


def check_allocation(size: float, what: str) -> None:
    """Refuse (ValueError, one line) when ``size`` bytes for ``what`` exceed the memory budget."""
    limit = budget_bytes()
    if not math.isfinite(size) or size > limit:
        source = ("--memory" if _BUDGET is not None else ENVIRONMENT if os.environ.get(ENVIRONMENT)
                  else "the machine's memory")
        raise ValueError(f"{what} would need {describe(size)}, more than the memory budget of {describe(limit)} "
                         f"({source}; --memory GiB or {ENVIRONMENT} sets another)")
