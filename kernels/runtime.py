"""Launching the CUDA sources from torch: CuPy ``RawModule`` kernels on torch's current stream, DLPack views.

A kernel module is CUDA C source (``Module``); ``session(device)`` opens a launch session on a torch device:

    with runtime().session(x.device) as k:
        k.launch(MODULE, "kernel_name", grid, block, (k.array(x), k.array(out), np.int32(n)))

- ``k.array(t)`` views a contiguous torch tensor as a CuPy array through DLPack (zero copy);
- launches go to torch's *current* CUDA stream (wrapped as a CuPy external stream), so they are ordered
  with the torch operations around them (FFTs, allocations) and can be captured in a torch CUDA graph;
- scalars are passed as NumPy scalars of the exact C type (``np.int32`` for ``int``, ``np.int64`` for
  ``long long``, ``np.float32`` for ``float``), since CuPy passes a Python int as a 64-bit value.

Every module is compiled by NVRTC with ``--fmad=false``: no multiply-add contraction, so the kernels round
like torch's separate elementwise operations. CuPy is imported lazily; nothing here needs a GPU to import.
The tests swap in a CPU runtime with the same interface (``kernels._emulator``).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass

import torch

BLOCK = 256  # threads per block in every kernel (the reductions assume exactly this many)
OPTIONS = ("--fmad=false",)

PRELUDE = f"""
#define BLOCK {BLOCK}
// Sum of v over the BLOCK threads of a block; every thread of the block must call it, all get the total.
__device__ __forceinline__ double block_sum(double v, double* sh)
{{
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int half = BLOCK / 2; half > 0; half >>= 1) {{
        if (t < half) sh[t] += sh[t + half];
        __syncthreads();
    }}
    double total = sh[0];
    __syncthreads();
    return total;
}}
"""


@dataclass(frozen=True)
class Module:
    """CUDA C source whose ``extern "C"`` kernels are launched by name (the shared prelude is prepended)."""

    name: str
    body: str

    @property
    def source(self) -> str:
        return PRELUDE + self.body


@functools.lru_cache(maxsize=None)
def cupy_status() -> tuple:
    """(usable, reason): whether CuPy imports, sees a CUDA device and can compile a kernel with NVRTC."""
    try:
        import cupy
    except Exception as e:  # not installed, or a broken install
        return False, f"CuPy is not importable ({type(e).__name__}: {e}); install it with pip install cupy-cuda12x"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"CuPy cannot use a CUDA device ({type(e).__name__}: {e})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    try:
        cupy.RawModule(code='extern "C" __global__ void probe(float* x) { x[0] = 1.0f; }').get_function("probe")
    except Exception as e:
        return False, (f"CuPy cannot compile kernels with NVRTC ({type(e).__name__}: {e}); "
                       "install the CUDA runtime compiler, e.g. pip install 'cupy-cuda12x[ctk]'")
    return True, f"CuPy {cupy.__version__} on {n} CUDA device(s)"


def as_kernel_tensor(t: torch.Tensor) -> torch.Tensor:
    """A tensor the kernels can read through a raw pointer: detached, no lazy conj/neg bit, contiguous."""
    return t.detach().resolve_conj().resolve_neg().contiguous()


class CupyRuntime:
    """Runs the modules with CuPy on CUDA tensors."""

    name = "cupy"

    def __init__(self):
        self._modules = {}
        self._functions = {}
        self._streams = {}

    def status(self) -> tuple:
        return cupy_status()

    def supports(self, device: torch.device) -> bool:
        return device.type == "cuda"

    @contextlib.contextmanager
    def session(self, device: torch.device):
        import cupy

        index = device.index if device.index is not None else torch.cuda.current_device()
        ts = torch.cuda.current_stream(index)
        key = (index, ts.cuda_stream)
        stream = self._streams.get(key)
        if stream is None:
            if ts.cuda_stream == 0:  # torch's legacy default stream
                stream = cupy.cuda.Stream.null
            elif hasattr(cupy.cuda.Stream, "from_external") and hasattr(ts, "__cuda_stream__"):
                stream = cupy.cuda.Stream.from_external(ts)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    stream = cupy.cuda.ExternalStream(ts.cuda_stream, index)
            self._streams[key] = stream
        with cupy.cuda.Device(index), stream:
            yield _CupySession(self, cupy, index)

    def function(self, module: Module, name: str, device_index: int):
        key = (module.name, name, device_index)
        fn = self._functions.get(key)
        if fn is None:
            import cupy

            mod = self._modules.get(module.name)
            if mod is None:
                mod = self._modules[module.name] = cupy.RawModule(code=module.source, options=OPTIONS)
            fn = self._functions[key] = mod.get_function(name)  # compiled and loaded for the current device
        return fn


class _CupySession:
    def __init__(self, rt: CupyRuntime, cupy, index: int):
        self._rt, self._cupy, self._index = rt, cupy, index

    def array(self, t: torch.Tensor):
        if not t.is_contiguous():
            raise ValueError("kernel arguments must be contiguous tensors")
        return self._cupy.from_dlpack(t.detach())

    def launch(self, module: Module, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        fn = self._rt.function(module, name, self._index)
        fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), args)


_CUPY = CupyRuntime()
_override = None


def runtime():
    """The runtime that launches kernels: CuPy, or the one installed by ``use_runtime`` (tests)."""
    return _override if _override is not None else _CUPY


@contextlib.contextmanager
def use_runtime(rt):
    """Launch kernels with ``rt`` inside the block (the tests' CPU emulator)."""
    global _override
    old, _override = _override, rt
    try:
        yield rt
    finally:
        _override = old
