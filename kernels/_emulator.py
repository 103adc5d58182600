"""Runs the kernel modules on the CPU, for the tests: a runtime with ``CupyRuntime``'s interface.

Each module's CUDA C source is compiled by g++ together with a small header that provides the CUDA built-ins
(``threadIdx``, ``blockIdx``, ``__syncthreads``, ``atomicAdd``, ``float2``, ...). A launch runs the blocks one
after another; inside a block every CUDA thread is a fiber (``ucontext``) and ``__syncthreads`` switches
fibers, so shared memory and barriers behave as on the device, and a barrier that some threads of a block
skip (after an early ``return``) is reported as an error. Like NVRTC with ``--fmad=false``, g++ is told not
to contract multiply-adds.

The launch checks what the device cannot: each argument against the kernel's C signature (a tensor for a
pointer with a matching dtype, contiguous; a NumPy scalar of the exact C type for a scalar), and memory
bounds: every array is copied into a buffer with guard bytes on both sides (0xFF: NaN as a float, -1 as an
int), the guards are checked after the launch (out-of-bounds writes) and out-of-bounds reads turn up as NaN.
``CPU tensors`` stand for CUDA tensors: the emulated runtime ``supports`` the CPU device.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import torch

from .runtime import Module

HEADER = r"""
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>
#include <ucontext.h>
using std::floor; using std::fabs;
struct uint3 { unsigned int x, y, z; };
typedef uint3 dim3;
struct float2 { float x, y; };
struct double2 { double x, y; };
static inline float2 make_float2(float x, float y) { float2 r; r.x = x; r.y = y; return r; }
static uint3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline float atomicAdd(float* a, float v) { float o = *a; *a = o + v; return o; }
static inline double atomicAdd(double* a, double v) { double o = *a; *a = o + v; return o; }
static inline int atomicAdd(int* a, int v) { int o = *a; *a = o + v; return o; }
namespace emu {
static const size_t STACK = 1 << 16;
static ucontext_t main_ctx;
static std::vector<ucontext_t> ctx;
static std::vector<int> state;  // 0 runnable, 1 waiting at a barrier, 2 finished
static std::vector<std::vector<char> > stacks;
static int cur;
static std::function<void()> body;
static char error[256];
static void entry() { body(); state[cur] = 2; }
}
static void __syncthreads() { emu::state[emu::cur] = 1; swapcontext(&emu::ctx[emu::cur], &emu::main_ctx); }
extern "C" const char* emu_error() { return emu::error; }
static int emu_run(dim3 g, dim3 b, std::function<void()> f)
{
    using namespace emu;
    error[0] = 0;
    body = f;
    gridDim = g;
    blockDim = b;
    int nt = (int)(b.x * b.y * b.z);
    ctx.resize(nt);
    state.resize(nt);
    if ((int)stacks.size() < nt) stacks.resize(nt);
    for (int t = 0; t < nt; ++t) if (stacks[t].size() < STACK) stacks[t].resize(STACK);
    for (unsigned bz = 0; bz < g.z; ++bz) for (unsigned by = 0; by < g.y; ++by) for (unsigned bx = 0; bx < g.x; ++bx) {
        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
        for (int t = 0; t < nt; ++t) {
            getcontext(&ctx[t]);
            ctx[t].uc_stack.ss_sp = stacks[t].data();
            ctx[t].uc_stack.ss_size = STACK;
            ctx[t].uc_link = &main_ctx;
            makecontext(&ctx[t], entry, 0);
            state[t] = 0;
        }
        for (;;) {
            for (int t = 0; t < nt; ++t) {
                if (state[t] != 0) continue;
                cur = t;
                threadIdx.x = t % b.x; threadIdx.y = (t / b.x) % b.y; threadIdx.z = t / (b.x * b.y);
                swapcontext(&main_ctx, &ctx[t]);
            }
            int done = 0;
            for (int t = 0; t < nt; ++t) done += state[t] == 2;
            if (done == nt) break;
            if (done > 0) {
                snprintf(error, sizeof error, "block (%u, %u, %u): %d of %d threads returned while the others "
                         "wait at __syncthreads()", bx, by, bz, done, nt);
                return 1;
            }
            for (int t = 0; t < nt; ++t) state[t] = 0;
        }
    }
    return 0;
}
"""

_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_SCALARS = {"int": (np.int32, ctypes.c_int32), "long long": (np.int64, ctypes.c_int64),
            "float": (np.float32, ctypes.c_float), "double": (np.float64, ctypes.c_double),
            "unsigned int": (np.uint32, ctypes.c_uint32)}
_POINTEES = {"float": (torch.float32, torch.complex64), "float2": (torch.complex64,), "double": (torch.float64,),
             "double2": (torch.complex128,), "int": (torch.int32,)}
GUARD = 4096  # bytes on each side of every array


def signatures(source: str) -> dict:
    """name -> [(C type, parameter name)] of every ``extern "C" __global__`` kernel in ``source``."""
    out = {}
    for name, params in _SIG.findall(source):
        args = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").replace("*", " * ").split())
            ctype, pname = p.rsplit(" ", 1)
            args.append((ctype.replace(" *", "*"), pname))
        out[name] = args
    return out


def compiler_available() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None


class _Guarded:
    """A tensor copied into a buffer with guard bytes; ``finish`` checks the guards and copies back."""

    def __init__(self, t: torch.Tensor, what: str):
        self.t, self.what = t, what
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        self.n = raw.size
        self.buf = np.full(self.n + 2 * GUARD, 0xFF, dtype=np.uint8)
        self.buf[GUARD:GUARD + self.n] = raw
        self.ptr = self.buf.ctypes.data + GUARD

    def finish(self, name: str) -> None:
        if not ((self.buf[:GUARD] == 0xFF).all() and (self.buf[GUARD + self.n:] == 0xFF).all()):
            raise MemoryError(f"{name}: write outside the bounds of argument {self.what}")
        if self.n:
            self.t.reshape(-1).view(torch.uint8).copy_(torch.from_numpy(self.buf[GUARD:GUARD + self.n]))


class EmulatorRuntime:
    """``CupyRuntime``'s interface on the CPU: CPU tensors stand for CUDA tensors."""

    name = "emulator"

    def __init__(self, build_dir: str | None = None):
        self.dir = build_dir or tempfile.mkdtemp(prefix="kernels-emu-")
        self._libs = {}
        self.launches = []   # (module, kernel, grid, block) of every launch, for the tests

    def status(self) -> tuple:
        return True, "CPU emulator of the CUDA kernels"

    def supports(self, device: torch.device) -> bool:
        return device.type == "cpu"

    @contextlib.contextmanager
    def session(self, device: torch.device):
        yield _EmuSession(self)

    def _lib(self, module: Module):
        lib = self._libs.get(module.name)
        if lib is not None:
            return lib
        sigs = signatures(module.source)
        wrappers = []
        for name, args in sigs.items():
            call = ", ".join(f"*reinterpret_cast<{t}*>(a[{i}])" for i, (t, _) in enumerate(args))
            wrappers.append(f'extern "C" int emu_launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, '
                            f'unsigned by, unsigned bz, void** a) {{ dim3 g = {{gx, gy, gz}}, b = {{bx, by, bz}}; '
                            f'return emu_run(g, b, [=]() {{ {name}({call}); }}); }}')
        code = HEADER + module.source + "\n" + "\n".join(wrappers) + "\n"
        tag = hashlib.sha1(code.encode()).hexdigest()[:12]
        src = os.path.join(self.dir, f"{module.name}_{tag}.cpp")
        so = src[:-4] + ".so"
        if not os.path.exists(so):
            with open(src, "w") as f:
                f.write(code)
            cmd = [os.environ.get("CXX", "g++"), "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                   "-Wall", "-Wno-unused-function", "-o", so, src]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"g++ failed on module {module.name}:\n{res.stderr[-4000:]}")
        lib = ctypes.CDLL(so)
        lib.emu_error.restype = ctypes.c_char_p
        self._libs[module.name] = (lib, sigs)
        return self._libs[module.name]

    def run(self, module: Module, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        lib, sigs = self._lib(module)
        if name not in sigs:
            raise KeyError(f"module {module.name} has no kernel {name}")
        params = sigs[name]
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        if any(not isinstance(g, int) or g < 1 for g in grid + block) or grid[1] > 65535 or grid[2] > 65535:
            raise ValueError(f"{name}: bad launch configuration grid={grid} block={block}")
        if block[0] * block[1] * block[2] > 1024:
            raise ValueError(f"{name}: more than 1024 threads per block")
        keep, guarded, ptrs = [], [], []
        seen = set()
        for (ctype, pname), a in zip(params, args):
            if ctype.endswith("*"):
                base = ctype[:-1].replace("const", "").strip()
                if not isinstance(a, torch.Tensor):
                    raise TypeError(f"{name}: argument {pname} ({ctype}) must be an array, got {type(a).__name__}")
                if a.dtype not in _POINTEES[base] or not a.is_contiguous() or a.device.type != "cpu":
                    raise TypeError(f"{name}: argument {pname} ({ctype}) got a {a.dtype} tensor on {a.device} "
                                    f"(contiguous={a.is_contiguous()})")
                if a.numel() and a.data_ptr() in seen:
                    raise ValueError(f"{name}: argument {pname} aliases another argument")
                seen.add(a.data_ptr())
                g = _Guarded(a, pname)
                guarded.append(g)
                obj = ctypes.c_void_p(g.ptr)
            else:
                np_type, c_type = _SCALARS[ctype]
                if type(a) is not np_type:
                    raise TypeError(f"{name}: argument {pname} ({ctype}) must be {np_type.__name__}, "
                                    f"got {type(a).__name__}")
                obj = c_type(a.item())
            keep.append(obj)
            ptrs.append(ctypes.cast(ctypes.pointer(obj), ctypes.c_void_p))
        argv = (ctypes.c_void_p * len(ptrs))(*ptrs)
        rc = getattr(lib, f"emu_launch_{name}")(*(ctypes.c_uint(v) for v in grid + block), argv)
        if rc != 0:
            raise RuntimeError(f"{name}: {lib.emu_error().decode()}")
        for g in guarded:
            g.finish(name)
        self.launches.append((module.name, name, grid, block))


class _EmuSession:
    def __init__(self, rt: EmulatorRuntime):
        self._rt = rt

    def array(self, t: torch.Tensor) -> torch.Tensor:
        if not t.is_contiguous():
            raise ValueError("kernel arguments must be contiguous tensors")
        return t.detach()

    def launch(self, module: Module, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        self._rt.run(module, name, grid, block, args)
