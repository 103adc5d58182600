"""The CuPy kernels (kernels/) and their dispatch.

Without a GPU: the backend choice and its once-only message, the error when cupy is forced but unusable, the
shift-folding identity in torch, the torch paths left unchanged, every kernel source compiled to PTX by NVRTC,
and the kernels themselves run by the CPU emulator (kernels._emulator: g++, one fiber per CUDA thread, bounds
and signature checks) against the torch references, through the operators' dispatch hooks.
With a GPU (marked ``gpu``, skipped without a usable GPU and CuPy): every kernel against the torch reference on
CUDA tensors, relative error below 1e-5 in float32, odd sizes and batches included.
"""
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import kernels
from kernels import cg as kcg, dispatch, radon, sense
from kernels._emulator import EmulatorRuntime, compiler_available, signatures
from kernels.runtime import OPTIONS, Module, use_runtime
from operators import MultiCoilMRI, adjoint_error
from operators.cg import conjugate_gradient, solve_normal
from operators.ct import FanBeamCT, ParallelBeamCT, angles
from operators.fft import fft2c, ifft2c

ROOT = Path(__file__).resolve().parents[1]
MODULES = (sense.MODULE, kcg.MODULE, radon.MODULE)


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def crandn(shape, g, dtype=torch.complex64, device="cpu"):
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


@pytest.fixture
def fresh_backend(monkeypatch):
    """No forced backend, no RECON_KERNELS, no message said yet (restored afterwards)."""
    monkeypatch.delenv(dispatch.ENV, raising=False)
    monkeypatch.setattr(dispatch, "_chosen", None)
    monkeypatch.setattr(dispatch, "_announced", False)


class FakeRuntime:
    """A runtime that claims the CPU as its device; launches nothing."""

    name = "fake"

    def __init__(self, ok, why="fake reason"):
        self.ok, self.why = ok, why

    def status(self):
        return self.ok, self.why

    def supports(self, device):
        return device.type == "cpu"


# --- dispatch -------------------------------------------------------------------------------------------


def test_importing_kernels_loads_neither_cupy_nor_operators_nor_recon():
    code = ("import sys, kernels; bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'operators', 'recon')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_auto_uses_kernels_when_usable_and_says_so_once(fresh_backend, caplog):
    caplog.set_level(logging.INFO, logger="kernels")
    x = torch.zeros(2)
    with use_runtime(FakeRuntime(True, "fake device")):
        assert kernels.backend() == "cupy"
        assert kernels.use_kernels(x) and kernels.use_kernels(x)
    msgs = [r for r in caplog.records if r.name == "kernels"]
    assert len(msgs) == 1 and msgs[0].levelno == logging.INFO
    assert "CuPy kernels" in msgs[0].getMessage() and "fake device" in msgs[0].getMessage()


def test_auto_falls_back_to_torch_with_one_warning(fresh_backend, caplog):
    caplog.set_level(logging.INFO, logger="kernels")
    with use_runtime(FakeRuntime(False, "no CUDA device here")):
        assert kernels.backend() == "torch"
        for _ in range(3):
            assert not kernels.use_kernels(torch.zeros(2))
    msgs = [r for r in caplog.records if r.name == "kernels"]
    assert len(msgs) == 1 and msgs[0].levelno == logging.WARNING
    assert "torch reference" in msgs[0].getMessage() and "no CUDA device here" in msgs[0].getMessage()


@pytest.mark.parametrize("how", ["env", "call"])
def test_forcing_torch(fresh_backend, monkeypatch, caplog, how):
    caplog.set_level(logging.INFO, logger="kernels")
    if how == "env":
        monkeypatch.setenv("RECON_KERNELS", "torch")
    else:
        kernels.set_backend("torch")
    with use_runtime(FakeRuntime(True)):
        assert kernels.requested() == "torch" and kernels.backend() == "torch"
        assert not kernels.use_kernels(torch.zeros(2))
    msgs = [r.getMessage() for r in caplog.records if r.name == "kernels"]
    assert len(msgs) == 1 and "torch reference" in msgs[0]


def test_forcing_cupy_without_a_device_raises_with_the_reason(fresh_backend, monkeypatch):
    with use_runtime(FakeRuntime(False, "CuPy sees no CUDA device")):
        with pytest.raises(kernels.KernelsUnavailable, match="CuPy sees no CUDA device"):
            kernels.set_backend("cupy")
        assert kernels.requested() == "auto"  # the failed call changed nothing
        monkeypatch.setenv("RECON_KERNELS", "cupy")
        with pytest.raises(kernels.KernelsUnavailable, match="RECON_KERNELS=cupy.*CuPy sees no CUDA device"):
            kernels.use_kernels(torch.zeros(2))
        A = MultiCoilMRI(torch.ones(2, 4, 4, dtype=torch.complex64), torch.ones(1, 4))
        with pytest.raises(kernels.KernelsUnavailable):
            A.normal(torch.ones(4, 4, dtype=torch.complex64))


def test_describe_names_the_compute_path(fresh_backend, monkeypatch):
    assert "torch operators" in kernels.describe("cpu")
    with use_runtime(FakeRuntime(True, "fake device")):
        assert "CuPy kernels" in kernels.describe("cuda") and "fake device" in kernels.describe("cuda:1")
        kernels.set_backend("torch")
        assert "torch operators" in kernels.describe("cuda") and "RECON_KERNELS=torch" in kernels.describe("cuda")
        kernels.set_backend(None)
    with use_runtime(FakeRuntime(False, "no CUDA device here")):
        assert "unusable: no CUDA device here" in kernels.describe("cuda")
        monkeypatch.setenv("RECON_KERNELS", "cupy")
        with pytest.raises(kernels.KernelsUnavailable, match="no CUDA device here"):
            kernels.describe("cuda")


def test_forcing_cupy_on_this_machine(fresh_backend):
    """The real runtime: raises with CuPy's own reason where it is unusable (this CPU-only machine)."""
    ok, why = kernels.cupy_status()
    assert kernels.cupy_usable() == ok
    if ok:
        kernels.set_backend("cupy")
        assert kernels.backend() == "cupy"
        kernels.set_backend(None)
    else:
        with pytest.raises(kernels.KernelsUnavailable) as err:
            kernels.set_backend("cupy")
        assert why in str(err.value)
        assert kernels.backend() == "torch"
        assert not kernels.use_kernels(torch.zeros(2))  # CPU tensors: torch, nothing raised


def test_cpu_tensors_always_take_torch(fresh_backend, caplog):
    caplog.set_level(logging.INFO, logger="kernels")
    assert not kernels.use_kernels(torch.zeros(2))
    assert not [r for r in caplog.records if r.name == "kernels"]  # nothing to say for CPU tensors


def test_bad_backend_names(fresh_backend, monkeypatch):
    with pytest.raises(ValueError, match="auto"):
        kernels.set_backend("gpu")
    monkeypatch.setenv("RECON_KERNELS", "fast")
    with pytest.raises(ValueError, match="RECON_KERNELS"):
        kernels.requested()
    kernels.set_backend("TORCH")
    assert kernels.requested() == "torch"  # the call wins over the environment
    kernels.set_backend(None)
    monkeypatch.setenv("RECON_KERNELS", "auto")
    assert kernels.requested() == "auto"


# --- torch references ------------------------------------------------------------------------------------

SENSE_CASES = [  # (maps shape, mask shape, extra batch of x)
    ((3, 8, 6), (1, 6), ()),            # even, line mask
    ((2, 7, 5), (7, 5), (3,)),          # odd, 2-D mask, 3 samples
    ((4, 9, 10), (9, 10), (2,)),        # odd H, even W
    ((2, 4, 9, 11), (1, 11), (2,)),     # 2 slices x 4 coils, odd line mask, 2 samples
    ((2, 3, 6, 7), (2, 1, 1, 7), ()),   # a line mask per slice
    ((3, 5, 4), (3, 5, 4), ()),         # a 2-D mask per coil
]


def _sense_problem(maps_shape, mask_shape, batch, g, dtype=torch.complex64, weighted=False):
    maps = crandn(maps_shape, g, dtype)
    m = torch.rand(mask_shape, generator=g, dtype=torch.float64)
    mask = (m if weighted else (m > 0.45).double()).to(maps.real.dtype)
    x = crandn(batch + tuple(maps_shape[:-3]) + tuple(maps_shape[-2:]), g, dtype)
    return maps, mask, x


def _sense_reference(x, maps, mask):
    """MultiCoilMRI._normal's torch formula, written out."""
    return (maps.conj() * ifft2c(mask.square() * fft2c(maps * x.unsqueeze(-3)))).sum(dim=-3)


@pytest.mark.parametrize("case", SENSE_CASES)
def test_shift_folding_identity_in_torch(case):
    g = torch.Generator().manual_seed(1)
    maps, mask, x = _sense_problem(*case, g, dtype=torch.complex128, weighted=True)
    ref = MultiCoilMRI(maps, mask).normal(x)
    assert rel(sense.normal_folded_torch(x, maps, mask), ref) < 1e-12
    maps, mask, x = maps.to(torch.complex64), mask.float(), x.to(torch.complex64)
    assert rel(sense.normal_folded_torch(x, maps, mask), MultiCoilMRI(maps, mask).normal(x)) < 1e-6


def test_torch_paths_unchanged_on_cpu():
    g = torch.Generator().manual_seed(2)
    maps, mask, x = _sense_problem((3, 7, 6), (1, 6), (2,), g)
    assert torch.equal(MultiCoilMRI(maps, mask).normal(x), _sense_reference(x, maps, mask))
    P = ParallelBeamCT((9, 10), 6)
    xi = torch.randn(2, 9, 10, generator=g)
    m, mt = P._matrix(xi.device, xi.dtype)
    assert torch.equal(P(xi), (m @ xi.reshape(2, -1).T).T.reshape(2, *P.oshape))
    y = torch.randn(2, *P.oshape, generator=g)
    assert torch.equal(P.H(y), (mt @ y.reshape(2, -1).T).T.reshape(2, 9, 10))


# --- kernel sources --------------------------------------------------------------------------------------


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return nvrtc
    except Exception as e:  # CuPy or the NVRTC library absent
        pytest.skip(f"NVRTC is not available ({type(e).__name__}: {e})")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_kernel_sources_compile_with_nvrtc(module):
    nvrtc = _nvrtc()
    for arch in ("compute_80", "compute_90"):
        prog = nvrtc.createProgram(module.source, f"{module.name}.cu", [], [])
        try:
            nvrtc.compileProgram(prog, list(OPTIONS) + [f"-arch={arch}"])
        except Exception:
            pytest.fail(f"{module.name} does not compile for {arch}:\n{nvrtc.getProgramLog(prog)}")
        ptx = nvrtc.getPTX(prog).rstrip(b"\0").decode()
        for name in signatures(module.source):
            assert f".entry {name}(" in ptx
    ptxas = shutil.which("ptxas") or ("/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas")
                                      else None)
    if ptxas:  # assemble for an H100: catches resource errors; no register spills
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "k.ptx")
            Path(f).write_text(ptx)
            res = subprocess.run([ptxas, "-arch=sm_90", "-v", f, "-o", os.devnull], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            spills = [line for line in res.stderr.splitlines() if "spill" in line]
            assert spills and all("0 bytes spill stores, 0 bytes spill loads" in line for line in spills), res.stderr


# --- the kernels on the CPU emulator ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not compiler_available():
        pytest.skip("the CPU emulator needs g++")
    return EmulatorRuntime(str(tmp_path_factory.mktemp("kernels-emu")))


@pytest.fixture
def emulated(emu, fresh_backend):
    with use_runtime(emu):
        emu.launches.clear()
        yield emu


def _launched(emu, module):
    return [k for m, k, _, _ in emu.launches if m == module]


@pytest.mark.parametrize("case", SENSE_CASES)
def test_sense_kernels_match_torch(emulated, case):
    g = torch.Generator().manual_seed(3)
    for weighted in (False, True):
        maps, mask, x = _sense_problem(*case, g, weighted=weighted)
        ref = _sense_reference(x, maps, mask)
        out = MultiCoilMRI(maps, mask).normal(x)       # the dispatch hook runs the kernels
        assert _launched(emulated, "sense")[-3:] == ["sense_expand", "sense_mask", "sense_combine"]
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert rel(out, ref) < 1e-5


def test_sense_kernel_gradient(emulated):
    g = torch.Generator().manual_seed(4)
    maps, mask, x = _sense_problem((3, 7, 6), (1, 6), (2,), g)
    A = MultiCoilMRI(maps, mask)
    w = crandn(x.shape, g)
    x1 = x.clone().requires_grad_()
    (A.normal(x1) * w.conj()).real.sum().backward()
    assert len(emulated.launches) == 6  # forward and backward both ran the kernels
    with use_runtime(FakeRuntime(False)):
        x2 = x.clone().requires_grad_()
        (A.normal(x2) * w.conj()).real.sum().backward()
    assert rel(x1.grad, x2.grad) < 1e-5


def test_sense_unsupported_inputs_take_torch(emulated):
    g = torch.Generator().manual_seed(5)
    maps, mask, x = _sense_problem((2, 5, 4), (5, 4), (), g, dtype=torch.complex128)
    out = MultiCoilMRI(maps, mask).normal(x)
    assert out.dtype == torch.complex128 and not emulated.launches
    maps, mask, x = _sense_problem((2, 5, 4), (5, 4), (), g)
    assert MultiCoilMRI(maps, mask.double()).normal(x).dtype == torch.complex128 and not emulated.launches


CG_SHAPES = [((2, 6, 5), (1, 5), (3,)), ((2, 2, 7, 6), (7, 6), (2,))]


@pytest.mark.parametrize("case", CG_SHAPES)
@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("tol", [0.0, 0.05, 10.0])
def test_cg_kernels_match_torch(emulated, case, warm, lam, tol):
    g = torch.Generator().manual_seed(6)
    maps, mask, x = _sense_problem(*case, g)
    A = MultiCoilMRI(maps, mask)
    b = crandn(x.shape, g)
    x0 = crandn(x.shape, g) if warm else None
    with use_runtime(FakeRuntime(False)):
        ref = solve_normal(A, b, lam=lam, x0=x0, max_iter=8, tol=tol)
    out = solve_normal(A, b, lam=lam, x0=x0, max_iter=8, tol=tol)
    assert _launched(emulated, "cg")[:3] == ["cg_dot", "cg_update", "cg_direction"]
    assert rel(out, ref) < 1e-5
    if tol == 10.0:  # converged before the first step: x0 (or 0) unchanged
        assert torch.equal(out, x0 if warm else torch.zeros_like(b))


def test_cg_stops_per_system_like_torch(emulated):
    """System 0 is solved exactly in one step (rounding-level residual: inactive from then on), system 1 needs
    many; with tol the whole batch stops once every residual is small, as the torch loop does."""
    g = torch.Generator().manual_seed(7)
    d = torch.stack([torch.full((6, 5), 2.0), torch.rand(6, 5, generator=g) * 10 + 0.1])
    b = torch.randn(2, 6, 5, generator=g)
    for tol in (0.0, 1e-3, 1e-1):
        with use_runtime(FakeRuntime(False)):
            ref = conjugate_gradient(lambda v: d * v, b, max_iter=12, tol=tol)
        out = conjugate_gradient(lambda v: d * v, b, max_iter=12, tol=tol)
        assert rel(out[0], ref[0]) < 1e-6 and rel(out[1], ref[1]) < 1e-5, tol


def test_cg_singular_consistent_system_stays_finite(emulated):
    g = torch.Generator().manual_seed(8)
    maps, mask, x = _sense_problem((2, 6, 6), (1, 6), (), g)
    A = MultiCoilMRI(maps, mask)
    aty = A.H(A(x))
    with use_runtime(FakeRuntime(False)):
        ref = conjugate_gradient(A.normal, aty, max_iter=150)
    out = conjugate_gradient(A.normal, aty, max_iter=150)
    assert torch.isfinite(torch.view_as_real(out)).all()
    # 2 coils: ill-conditioned, so float32 rounding differences grow along the way; both end at rounding level
    assert rel(A(out), A(x)) < 1e-4 and rel(A(ref), A(x)) < 1e-4 and rel(out, ref) < 1e-3
    assert torch.equal(conjugate_gradient(A.normal, aty, max_iter=300), out)  # stopped: further steps change nothing


def test_cg_real_systems_and_aliasing(emulated):
    g = torch.Generator().manual_seed(9)
    P = ParallelBeamCT((7, 8), 5)
    b = P.H(torch.randn(3, *P.oshape, generator=g))
    with use_runtime(FakeRuntime(False)):
        ref = conjugate_gradient(P.normal, b, max_iter=6)
    out = conjugate_gradient(P.normal, b, max_iter=6)
    assert rel(out, ref) < 1e-5 and "radon_project" in _launched(emulated, "radon")
    b = torch.randn(4, 3, generator=g)
    assert rel(conjugate_gradient(lambda v: v, b, max_iter=3, ndim=1), b) < 1e-6  # apply returns its input


def test_cg_leaves_dtype_promotion_to_torch(emulated):
    g = torch.Generator().manual_seed(12)
    maps, mask, x = _sense_problem((2, 5, 6), (1, 6), (), g)
    A = MultiCoilMRI(maps, mask.double())  # a float64 mask: the torch normal operator returns complex128
    b = crandn(x.shape, g)
    out = conjugate_gradient(A.normal, b, max_iter=4)
    with use_runtime(FakeRuntime(False)):
        ref = conjugate_gradient(A.normal, b, max_iter=4)
    assert out.dtype == ref.dtype == torch.complex128 and torch.equal(out, ref) and not emulated.launches


def test_cg_keeps_gradients_on_the_torch_path(emulated):
    g = torch.Generator().manual_seed(10)
    b = torch.randn(2, 4, 5, generator=g)
    w = torch.tensor(2.0, requires_grad=True)
    out = conjugate_gradient(lambda v: w * v, b, max_iter=3)
    assert out.requires_grad and not _launched(emulated, "cg")
    out.sum().backward()
    assert torch.allclose(w.grad, -(b / 4).sum())
    b.requires_grad_()
    assert conjugate_gradient(lambda v: 2 * v, b, max_iter=3).requires_grad and not _launched(emulated, "cg")


def _ct_ops():
    return [ParallelBeamCT((9, 12), 7),
            ParallelBeamCT(16, angles(8), n_detectors=20, detector_spacing=0.7),
            ParallelBeamCT((5, 13), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]) * torch.pi),  # |d_x| = |d_y| ties
            FanBeamCT((11, 8), 6, 40.0, 20.0),
            FanBeamCT(15, 9, 30.0, 10.0, n_detectors=17, detector_spacing=1.3)]


@pytest.mark.parametrize("i", range(5))
def test_radon_kernels_match_torch(emulated, i):
    op = _ct_ops()[i]
    g = torch.Generator().manual_seed(11 + i)
    x = torch.randn((2, 3) + op.ishape, generator=g)
    y = torch.randn((2, 3) + op.oshape, generator=g)
    out, outb = op(x), op.H(y)
    assert _launched(emulated, "radon") == ["radon_project", "radon_backproject"]
    assert rel(out, op._trace(x)) < 1e-5 and rel(outb, op._backtrace(y)) < 1e-5
    with use_runtime(FakeRuntime(False)):
        assert rel(out, op(x)) < 1e-5 and rel(outb, op.H(y)) < 1e-5   # the CSR path
    assert adjoint_error(op, batch=(2,), dtype=torch.float32) < 1e-5


def test_radon_kernel_gradients(emulated):
    g = torch.Generator().manual_seed(20)
    op = FanBeamCT((9, 10), 5, 30.0, 15.0)
    x = torch.randn(2, 9, 10, generator=g, requires_grad=True)
    w = torch.randn(2, *op.oshape, generator=g)
    (op(x) * w).sum().backward()
    y = torch.randn(2, *op.oshape, generator=g, requires_grad=True)
    v = torch.randn(2, 9, 10, generator=g)
    (op.H(y) * v).sum().backward()
    assert _launched(emulated, "radon") == ["radon_project", "radon_backproject", "radon_backproject", "radon_project"]
    assert rel(x.grad, op._backtrace(w)) < 1e-5 and rel(y.grad, op._trace(v)) < 1e-5


def test_radon_backprojection_is_torch_when_determinism_is_asked(emulated):
    op = ParallelBeamCT(6, 4)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        op.H(torch.ones(op.oshape))
    finally:
        torch.use_deterministic_algorithms(prev)
    assert not emulated.launches


# --- the emulator itself catches what a device would not report ---------------------------------------------

BROKEN = Module("broken", r"""
extern "C" __global__ void past_end(float* x, int n)
{
    int i = blockIdx.x * BLOCK + threadIdx.x;
    if (i <= n) x[i] = 1.0f;
}
extern "C" __global__ void early_return(double* out, int n)
{
    __shared__ double sh[BLOCK];
    if ((int)threadIdx.x >= n) return;
    out[0] = block_sum(1.0, sh);
}
""")


def test_emulator_reports_kernel_bugs(emu):
    x = torch.zeros(256)
    with pytest.raises(MemoryError, match="outside the bounds"):
        emu.run(BROKEN, "past_end", (1,), (256,), (torch.zeros(255), np.int32(255)))
    with pytest.raises(RuntimeError, match="__syncthreads"):
        emu.run(BROKEN, "early_return", (1,), (256,), (torch.zeros(1, dtype=torch.float64), np.int32(100)))
    with pytest.raises(TypeError, match="int32"):
        emu.run(BROKEN, "past_end", (1,), (256,), (x, 255))
    with pytest.raises(TypeError, match="float64"):
        emu.run(BROKEN, "past_end", (1,), (256,), (x.double(), np.int32(255)))


# --- the benchmark ---------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_benchmark_says_why_it_cannot_run_without_cuda():
    res = subprocess.run([sys.executable, "experiments/bench_kernels.py"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 1
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "CUDA" in lines[0] and "Traceback" not in res.stderr


# --- on a GPU --------------------------------------------------------------------------------------------

_GPU_OK = torch.cuda.is_available() and kernels.cupy_usable()


def on_gpu(f):
    return pytest.mark.gpu(pytest.mark.skipif(not _GPU_OK, reason="needs a CUDA device and a usable CuPy")(f))


def _both(fn):
    """(kernels, torch reference) results of fn() on CUDA tensors."""
    prev = dispatch._chosen
    try:
        kernels.set_backend("torch")
        ref = fn()
        kernels.set_backend("cupy")
        out = fn()
    finally:
        dispatch._chosen = prev
    return out, ref


GPU_SENSE = [((15, 320, 320), (1, 320), ()),          # a fastMRI-sized slice, line mask
             ((15, 33, 27), (33, 27), (2,)),           # odd sizes, 2-D mask, 2 samples
             ((2, 5, 64, 47), (1, 47), (3,)),          # 2 slices, odd line mask, 3 samples
             ((8, 15, 64, 64), (64, 64), ()),          # 8 slices
             ((4, 31, 30), (4, 31, 30), ())]           # a mask per coil


@on_gpu
@pytest.mark.parametrize("case", GPU_SENSE)
def test_gpu_sense_normal(case):
    g = torch.Generator().manual_seed(30)
    for weighted in (False, True):
        maps, mask, x = _sense_problem(*case, g, weighted=weighted)
        A = MultiCoilMRI(maps, mask).to("cuda")
        xc = x.cuda()
        out, ref = _both(lambda: A.normal(xc))
        assert rel(out, ref) < 1e-5
        assert rel(out.cpu(), _sense_reference(x, maps, mask)) < 1e-5


@on_gpu
@pytest.mark.parametrize("case", [GPU_SENSE[0], GPU_SENSE[1], GPU_SENSE[2]])
@pytest.mark.parametrize("form", ["dds", "normal", "lam", "tol"])
def test_gpu_cg(case, form):
    g = torch.Generator().manual_seed(31)
    maps, mask, x = _sense_problem(*case, g)
    A = MultiCoilMRI(maps, mask).to("cuda")
    x0 = crandn(x.shape, g, device="cuda")
    aty = A.H(A(x.cuda()))
    gamma = 0.7
    if form == "dds":   # (I + gamma A^H A) x = x0 + gamma A^H y, warm start (DDS)
        fn = lambda: conjugate_gradient(lambda v: v + gamma * A.normal(v), x0 + gamma * aty, x0=x0, max_iter=10)  # noqa
    elif form == "normal":
        fn = lambda: conjugate_gradient(A.normal, aty, max_iter=10)  # noqa: E731
    elif form == "lam":
        fn = lambda: solve_normal(A, aty, lam=0.05, x0=x0, max_iter=10)  # noqa: E731
    else:
        fn = lambda: solve_normal(A, aty, lam=0.05, max_iter=10, tol=1e-2)  # noqa: E731
    out, ref = _both(fn)
    assert rel(out, ref) < 1e-5


def _gpu_ct_ops():
    return [ParallelBeamCT(256, 180), ParallelBeamCT((63, 70), 45, detector_spacing=0.8),
            FanBeamCT(255, 360, 500.0, 300.0), FanBeamCT((40, 33), 29, 60.0, 20.0, n_detectors=51)]


@on_gpu
@pytest.mark.parametrize("i", range(4))
def test_gpu_radon(i):
    op = _gpu_ct_ops()[i].to("cuda")
    g = torch.Generator().manual_seed(32 + i)
    x = torch.randn((2, 3) + op.ishape, generator=g).cuda()
    y = torch.randn((2, 3) + op.oshape, generator=g).cuda()
    (p, b), (p_ref, b_ref) = _both(lambda: (op(x), op.H(y)))
    assert rel(p, p_ref) < 1e-5 and rel(b, b_ref) < 1e-5
    assert rel(p, op._trace(x)) < 1e-5 and rel(b, op._backtrace(y)) < 1e-5
    lhs, rhs = (p.double() * y.double()).sum(), (x.double() * b.double()).sum()
    assert float((lhs - rhs).abs() / (p.double().norm() * y.double().norm())) < 1e-5


@on_gpu
def test_gpu_gradients():
    g = torch.Generator().manual_seed(40)
    op = ParallelBeamCT((40, 41), 30).to("cuda")
    w = torch.randn(2, *op.oshape, generator=g).cuda()

    def ct_grad():
        x = torch.randn(2, 40, 41, generator=torch.Generator().manual_seed(1)).cuda().requires_grad_()
        (op(x) * w).sum().backward()
        return x.grad

    out, ref = _both(ct_grad)
    assert rel(out, ref) < 1e-5
    maps, mask, x = _sense_problem((4, 33, 32), (1, 32), (2,), g)
    A = MultiCoilMRI(maps, mask).to("cuda")
    v = crandn(x.shape, g, device="cuda")

    def mri_grad():
        xc = x.cuda().requires_grad_()
        (A.normal(xc) * v.conj()).real.sum().backward()
        return xc.grad

    out, ref = _both(mri_grad)
    assert rel(out, ref) < 1e-5


@on_gpu
def test_gpu_cg_captured_in_a_cuda_graph():
    g = torch.Generator().manual_seed(41)
    maps, mask, x = _sense_problem((15, 96, 80), (1, 80), (2,), g)
    A = MultiCoilMRI(maps, mask).to("cuda")
    x0, aty = crandn(x.shape, g, device="cuda"), A.H(A(x.cuda()))
    prev = dispatch._chosen
    kernels.set_backend("cupy")
    try:
        fn = lambda: conjugate_gradient(A.normal, aty, x0=x0, max_iter=10)  # noqa: E731
        eager = fn()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = fn()
        graph.replay()
        torch.cuda.synchronize()
    finally:
        dispatch._chosen = prev
    assert rel(static, eager) < 1e-6


@on_gpu
def test_gpu_kernels_follow_the_current_stream():
    g = torch.Generator().manual_seed(42)
    maps, mask, x = _sense_problem((8, 128, 96), (1, 96), (4,), g)
    A = MultiCoilMRI(maps, mask).to("cuda")
    xc = x.cuda()
    ref, _ = _both(lambda: A.normal(xc))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    prev = dispatch._chosen
    kernels.set_backend("cupy")
    try:
        with torch.cuda.stream(s):
            out = A.normal(xc * 1.0) * 2.0   # torch ops before and after the kernels, all on s
        torch.cuda.current_stream().wait_stream(s)
    finally:
        dispatch._chosen = prev
    assert rel(out, 2 * ref) < 1e-6


@on_gpu
def test_gpu_auto_uses_the_kernels_and_says_so(fresh_backend, caplog):
    caplog.set_level(logging.INFO, logger="kernels")
    assert kernels.backend() == "cupy" and kernels.use_kernels(torch.zeros(1, device="cuda"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "kernels"]
    assert len(msgs) == 1 and "CuPy kernels" in msgs[0]
