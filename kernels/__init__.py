"""Optional custom CuPy CUDA kernels for the hot loops (never required for correctness).

``cupy_usable()`` tells whether CuPy can use a CUDA device here; without one, every operator runs
its pure-torch implementation in ``operators``.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def cupy_usable() -> bool:
    """True when CuPy imports and can talk to at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy absent, or present without a usable driver/device
        return False
