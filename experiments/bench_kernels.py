"""Torch reference vs the CuPy kernels on a CUDA GPU: SENSE normal operator, CG x10, CT projector and backprojector.

    python experiments/bench_kernels.py [--repeats 20] [--out experiments/results/bench_kernels.md]
    python experiments/bench_kernels.py --dds [--dds-steps 20]

One Markdown table. Rows: the SENSE normal operator A^H A x and 10 CG iterations on A^H A x = A^H y (warm start, as
in DDS; also the kernel path replayed as one CUDA graph) for coils x H x W = 15x320x320, 15x640x368,
8 slices x 15x320x320 and 32x256x256 with fastMRI-style line masks (4x equispaced, 8% calibration lines); the CT
projector and backprojector for 256x256 images, 180 parallel-beam views (1 and 8 images) and 360 fan-beam views;
and a torch ``grid_sample`` Radon (rotate the image for every angle, sum the columns) as the comparison row for the
projector (its "torch" column is grid_sample, its "kernels" column the kernel projector).

Columns: median milliseconds of the torch path (``kernels.set_backend("torch")``) and of the kernels, the
speed-up, the memory-traffic floor = the bytes the operation must move at the least / the bandwidth measured by a
1 GiB device-to-device copy (read + write), and both times in units of that floor. Bytes (complex64 = 8 B; X image
elements, M map elements, U = coil-image elements = samples x M):

- SENSE normal with the FFTs as separate cuFFT passes (the mask folded into them, the best a library FFT allows):
  read x and the maps, write the coil images; forward and inverse FFT read and write them once each; read them and
  the maps, write the result: 8 (2 X + 2 M + 6 U);
- one CG iteration: that plus the vector traffic of a fused CG step (read p, q, x, r; write x, r, p): + 8 * 7 X;
- projector / backprojector: read the image, write the sinogram (or the reverse), float32.

Targets on an H100 (issue 7): CG x10 at least 5x faster than torch at 15x320x320 and within 3x of the floor; the
projector at least 5x faster than the grid_sample Radon.

``--dds``: end-to-end DDS (``--dds-steps`` steps, 5 CG iterations each) with a DDS-sized ADM UNet from recon.priors
(fastMRI 320 px complex configuration, random weights) on a 15-coil 320x320 problem: torch path, kernels, and the
kernels with the network in bf16 autocast, bf16 + channels-last, and bf16 + channels-last replayed from a CUDA graph.
Without CUDA (or a usable CuPy) the script says so in one line and exits with status 1.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import kernels
from operators import FanBeamCT, MultiCoilMRI, ParallelBeamCT
from operators.cg import conjugate_gradient

SENSE_CASES = [("15x320x320", (), 15, 320, 320), ("15x640x368", (), 15, 640, 368),
               ("8 slices x 15x320x320", (8,), 15, 320, 320), ("32x256x256", (), 32, 256, 256)]


def timed(fn, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() between CUDA events (includes launch gaps and host synchronisation)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return statistics.median(ms)


def bandwidth() -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write)."""
    a = torch.empty(1 << 28, device="cuda")
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 10)
    return 2 * a.numel() * 4 / (ms / 1e3)


def with_backend(name: str, fn):
    kernels.set_backend(name)
    try:
        return fn()
    finally:
        kernels.set_backend(None)


def line_mask(w: int, accel: int = 4, center: float = 0.08) -> torch.Tensor:
    m = torch.zeros(1, w)
    m[:, ::accel] = 1
    c = max(1, round(center * w))
    m[:, (w - c) // 2:(w - c) // 2 + c] = 1
    return m


def sense_problem(lead, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(lead + (c, h, w), dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(-3, keepdim=True).sqrt()
    A = MultiCoilMRI(maps, line_mask(w)).to("cuda")
    x = torch.randn(lead + (h, w), dtype=torch.complex64, generator=g).cuda()
    return A, x


def graphed(fn):
    """fn captured as one CUDA graph (after warm-up on a side stream): returns (replay, static output)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g.replay, out


def grid_sample_radon(n: int, th: torch.Tensor):
    """Parallel-beam Radon by rotating the (B, n, n) image to every angle (bilinear grid_sample), summing columns."""
    c, s = th.cos().float(), th.sin().float()
    z = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], 1).cuda()
    grid = F.affine_grid(theta, (len(th), 1, n, n), align_corners=False)

    def radon(x):
        b = x.shape[0]
        rot = F.grid_sample(x[:, None].repeat_interleave(len(th), 0), grid.repeat(b, 1, 1, 1), align_corners=False)
        return rot.sum(-2).reshape(b, len(th), n)

    return radon


def bench_table(repeats: int, bw: float) -> list:
    rows = []

    def row(name, t_torch, t_kern, floor_bytes):
        floor = floor_bytes / bw * 1e3
        tt = f"{t_torch:.3f}" if t_torch is not None else "-"
        sp = f"{t_torch / t_kern:.1f}x" if t_torch is not None else "-"
        rt = f"{t_torch / floor:.1f}" if t_torch is not None else "-"
        rows.append(f"| {name} | {tt} | {t_kern:.3f} | {sp} | {floor:.3f} | {rt} | {t_kern / floor:.1f} |")
        print(rows[-1], flush=True)

    for name, lead, c, h, w in SENSE_CASES:
        A, x = sense_problem(lead, c, h, w)
        X, M = x.numel(), A.maps.numel()
        normal_bytes = 8 * (2 * X + 2 * M + 6 * M)
        t_t = with_backend("torch", lambda: timed(lambda: A.normal(x), repeats))
        t_k = with_backend("cupy", lambda: timed(lambda: A.normal(x), repeats))
        row(f"SENSE A^H A x, {name}", t_t, t_k, normal_bytes)
        aty, x0 = A.H(A(x)), 0.5 * x
        cg = lambda: conjugate_gradient(A.normal, aty, x0=x0, max_iter=10)  # noqa: E731
        cg_bytes = 10 * (normal_bytes + 8 * 7 * X)
        t_t = with_backend("torch", lambda: timed(cg, max(3, repeats // 4)))
        t_k = with_backend("cupy", lambda: timed(cg, repeats))
        row(f"CG x10, {name}", t_t, t_k, cg_bytes)
        replay, _ = with_backend("cupy", lambda: graphed(cg))
        row(f"CG x10 as one CUDA graph, {name}", t_t, timed(replay, repeats), cg_bytes)
        del A, x, aty, x0, replay
        torch.cuda.empty_cache()

    n = 256
    # (name, operator, images, whether torch's grid_sample Radon is a like-for-like comparison: parallel beam only)
    ct_cases = [("parallel, 180 views", ParallelBeamCT(n, 180), 1, True),
                ("parallel, 180 views", ParallelBeamCT(n, 180), 8, True),
                ("fan, 360 views", FanBeamCT(n, 360, 2 * n, n), 1, False)]
    for name, op, b, parallel in ct_cases:
        op = op.to("cuda")
        x = torch.rand(b, n, n, device="cuda")
        y = torch.rand((b,) + op.oshape, device="cuda")
        io = 4 * (x.numel() + y.numel())
        t_t = with_backend("torch", lambda: timed(lambda: op(x), repeats))
        t_k = with_backend("cupy", lambda: timed(lambda: op(x), repeats))
        row(f"projector {n}x{n}, {name}, {b} image(s)", t_t, t_k, io)
        t_t = with_backend("torch", lambda: timed(lambda: op.H(y), repeats))
        t_kb = with_backend("cupy", lambda: timed(lambda: op.H(y), repeats))
        row(f"backprojector {n}x{n}, {name}, {b} image(s)", t_t, t_kb, io)
        if parallel:
            radon = grid_sample_radon(n, op.angles)
            t_g = timed(lambda: radon(x), repeats)
            row(f"torch grid_sample Radon vs kernel projector, {name}, {b} image(s)", t_g, t_k, io)
    return rows


def dds_prior():
    from recon.priors import DiffusionPrior, Normalization, VPModel
    from recon.priors.adm import ADMUNet

    par = dict(ADMUNet.DIFFUSION["dds_fastmri"]["parametrization"])
    par.pop("type")
    return DiffusionPrior(VPModel(ADMUNet.dds_fastmri(), **par), channels="complex", normalization=Normalization("max"))


class NetVariant(torch.nn.Module):
    """The network run in bf16 autocast, channels-last, and/or replayed from a CUDA graph (per input shape)."""

    def __init__(self, net, bf16: bool, channels_last: bool, graph: bool):
        super().__init__()
        self.net, self.bf16, self.cl, self.graph = net, bf16, channels_last, graph
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._key = self._replay = self._io = None

    def _run(self, x, t):
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, t).float()

    def forward(self, x, t):
        if not self.graph:
            return self._run(x, t)
        key = (tuple(x.shape), x.dtype, tuple(t.shape), t.dtype)
        if key != self._key:
            sx, st = x.clone(), t.clone()
            self._replay, out = graphed(lambda: self._run(sx, st))
            self._key, self._io = key, (sx, st, out)
        sx, st, out = self._io
        sx.copy_(x)
        st.copy_(t)
        self._replay()
        return out.clone()


def bench_dds(steps: int) -> list:
    from recon.samplers import DDS

    A, _ = sense_problem((), 15, 320, 320, seed=1)
    g = torch.Generator().manual_seed(1)
    x_true = torch.randn(320, 320, dtype=torch.complex64, generator=g).cuda()
    y = A(x_true)
    prior = dds_prior().cuda().eval()
    net = prior.network
    rows = ["", f"| DDS, {steps} steps, 5 CG iterations, 15x320x320, ADM (DDS fastMRI size, random weights) | s / sample |",
            "|---|---|"]
    print("\n".join(rows), flush=True)
    variants = [("torch operators, fp32 network", "torch", (False, False, False)),
                ("kernels, fp32 network", "cupy", (False, False, False)),
                ("kernels, bf16 network", "cupy", (True, False, False)),
                ("kernels, bf16 + channels-last network", "cupy", (True, True, False)),
                ("kernels, bf16 + channels-last network replayed from a CUDA graph", "cupy", (True, True, True))]
    for name, path, opts in variants:
        variant = prior.with_network(NetVariant(net, *opts))

        def run(n_steps):
            out = DDS(steps=n_steps, cg_iter=5)(y, A, variant, n_samples=1,
                                                generator=torch.Generator().manual_seed(0))
            torch.cuda.synchronize()
            return out

        def go():
            run(2)  # warm-up: cuFFT plans, kernels, graph capture
            t = time.perf_counter()
            run(steps)
            return time.perf_counter() - t

        rows.append(f"| {name} | {with_backend(path, go):.2f} |")
        print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    ap.add_argument("--dds", action="store_true", help="add the end-to-end DDS timings")
    ap.add_argument("--dds-steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kernels: no CUDA device (torch.cuda.is_available() is False); this benchmark needs a GPU.")
    ok, why = kernels.cupy_status()
    if not ok:
        sys.exit("bench_kernels: the CuPy kernels cannot run here: " + " ".join(why.split()))
    torch.backends.cudnn.benchmark = True
    bw = bandwidth()
    head = [f"Device: {torch.cuda.get_device_name()}; copy bandwidth {bw / 1e9:.0f} GB/s; torch {torch.__version__}; "
            f"median of {args.repeats} runs.", "",
            "| case | torch ms | kernels ms | speed-up | floor ms | torch / floor | kernels / floor |",
            "|---|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    rows = head + bench_table(args.repeats, bw)
    if args.dds:
        rows += bench_dds(args.dds_steps)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
