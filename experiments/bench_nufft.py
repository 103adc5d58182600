"""Speed and accuracy of A^H A for non-Cartesian SENSE: the toolkit's Toeplitz normal operator against the plain
forward-then-adjoint path of each NUFFT library and against sigpy's NUFFT.

Problem: 8 birdcage coils, a 128 x 128 held-out brain slice, 48 golden-angle spokes of 256 samples (K = 12288).
Each row times one application of x -> A^H A x (median of ``--repeats`` calls after one warm-up) and reports its
relative error against a double-precision finufft reference at eps = 1e-12. Threads: ``torch.set_num_threads``
and the libraries' own thread count are set to ``--threads`` (run with OMP_NUM_THREADS equal to it).

    OMP_NUM_THREADS=1 python experiments/bench_nufft.py --repeats 20
"""
import argparse
import math
import statistics
import time

import torch

from operators import NonCartesianMRI, nufft, trajectories
from recon.data import brain, simulate


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--spokes", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    x = brain.load_heldout(n)[5]
    maps = simulate.coil_maps(args.coils, (n, n))
    traj = trajectories.get("golden-angle", n_spokes=args.spokes)((n, n))
    k = math.prod(traj.shape[:-1])

    exact = NonCartesianMRI(maps.to(torch.complex128), traj, eps=1e-12, toeplitz=False)
    ref = exact.normal(x.to(torch.complex128))

    def err(out) -> float:
        out = torch.as_tensor(out).to(torch.complex128)
        return float((out - ref).norm() / ref.norm())

    rows = []  # (method, ms, rel. error)
    ops = {"finufft": NonCartesianMRI(maps, traj, backend="finufft")}
    if "torchkbnufft" in nufft.available():
        ops["torchkbnufft"] = NonCartesianMRI(maps, traj, backend="torchkbnufft")
    toep = ops["finufft"]
    toep.normal(x)  # the kernel is computed once per operator (not timed; below)
    rows.append(("toolkit: Toeplitz normal (FFTs on 2x grid)", timed(lambda: toep.normal(x), args.repeats),
                 err(toep.normal(x))))
    for name, op in ops.items():
        plain = NonCartesianMRI(maps, traj, backend=name, toeplitz=False)
        rows.append((f"toolkit: {name} A^H(A x)", timed(lambda: plain.normal(x), args.repeats), err(plain.normal(x))))
    if "torchkbnufft" in nufft.available():
        import torchkbnufft as tkbn

        om = traj.reshape(-1, 2).T.contiguous()
        kernel = tkbn.calc_toeplitz_kernel(om, im_size=(n, n))
        top = tkbn.ToepNufft()
        sm = maps[None]
        rows.append(("torchkbnufft ToepNufft (its defaults)", timed(lambda: top(x[None, None], kernel, smaps=sm),
                                                                    args.repeats),
                     err(top(x[None, None], kernel, smaps=sm)[0, 0] / (n * n))))
    try:
        import sigpy as sp
    except ImportError:
        sp = None
    if sp is not None:
        coord = (traj.reshape(-1, 2).double() / (2 * math.pi) * n).numpy()
        mps, img = maps.numpy(), x.numpy()

        def sigpy_normal(**kw):
            ksp = sp.nufft(mps * img, coord, **kw)
            return (mps.conj() * sp.nufft_adjoint(ksp, coord, oshape=mps.shape, **kw)).sum(0)

        rows.append(("sigpy nufft/nufft_adjoint (defaults: oversamp 1.25, width 4)",
                     timed(sigpy_normal, args.repeats), err(sigpy_normal())))
        rows.append(("sigpy nufft/nufft_adjoint (oversamp 2, width 6)",
                     timed(lambda: sigpy_normal(oversamp=2.0, width=6), args.repeats),
                     err(sigpy_normal(oversamp=2.0, width=6))))
    t = time.perf_counter()
    NonCartesianMRI(maps, traj).toeplitz_kernel()
    setup = 1e3 * (time.perf_counter() - t)

    base = rows[0][1]
    print(f"A^H A, {args.coils} coils, {n} x {n}, {args.spokes} golden-angle spokes x {traj.shape[1]} samples "
          f"(K = {k}), {args.threads} thread(s), median of {args.repeats}; Toeplitz kernel set-up {setup:.0f} ms "
          f"once\n")
    print("| method | ms per call | x Toeplitz | rel. error |\n|---|---|---|---|")
    for name, ms, e in rows:
        print(f"| {name} | {ms:.1f} | {ms / base:.1f} | {e:.1e} |")
    fwd = ops["finufft"]
    y = fwd(x)
    print(f"\nfinufft forward {timed(lambda: fwd(x), args.repeats):.1f} ms, adjoint "
          f"{timed(lambda: fwd.H(y), args.repeats):.1f} ms"
          + (f"; torchkbnufft forward {timed(lambda: ops['torchkbnufft'](x), args.repeats):.1f} ms, adjoint "
             f"{timed(lambda: ops['torchkbnufft'].H(y), args.repeats):.1f} ms" if "torchkbnufft" in ops else ""))


if __name__ == "__main__":
    main()
