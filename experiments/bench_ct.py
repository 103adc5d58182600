"""CT projector speed and FBP accuracy on the CPU against scikit-image (radon / iradon).

256 x 256 Shepp-Logan, 180 parallel-beam angles over [0, 180) degrees: seconds for projection and for FBP
(median of 3 runs), and the RMSE of FBP with each filter (each toolkit's FBP on its own sinogram).

    python experiments/bench_ct.py [--size 256] [--angles 180]
"""
import argparse
import statistics
import time

import numpy as np
import torch

from operators.ct import FILTERS, ParallelBeamCT, fbp


def timed(fn, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, statistics.median(ts)


def main():
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--angles", type=int, default=180)
    args = ap.parse_args()
    n = args.size
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    P = ParallelBeamCT(n, args.angles)
    th = np.rad2deg(P.angles.numpy())
    x = torch.tensor(img, dtype=torch.float32)
    _, t_first = timed(lambda: P(x), n=1)  # builds the sparse matrix once
    sino, t_ours = timed(lambda: P(x))
    _, t_trace = timed(lambda: P._trace(x))
    sk, t_sk = timed(lambda: radon(img, th, circle=False))
    xb = x.expand(8, n, n).contiguous()
    _, t_b8 = timed(lambda: P(xb))
    _, t_sk8 = timed(lambda: [radon(img, th, circle=False) for _ in range(8)], n=1)
    print(f"| step | toolkit (torch, CPU) s | scikit-image s |\n|---|---|---|")
    print(f"| projection {n}x{n}, {args.angles} angles (first call, builds the matrix) | {t_first:.3f} | - |")
    print(f"| projection {n}x{n}, {args.angles} angles | {t_ours:.3f} | {t_sk:.3f} |")
    print(f"| projection, rays traced on the fly (no matrix) | {t_trace:.3f} | - |")
    print(f"| projection, batch of 8 slices | {t_b8:.3f} | {t_sk8:.3f} |")
    _, t_bp = timed(lambda: fbp(sino, P, "ramp"))
    _, t_ibp = timed(lambda: iradon(sk, th, filter_name="ramp", circle=False, output_size=n))
    print(f"| FBP (ramp) | {t_bp:.3f} | {t_ibp:.3f} |")
    _, t_n = timed(lambda: P.normal(x))
    print(f"| A^T A x (one CG iteration's operator) | {t_n:.3f} | - |")
    print("\n| filter | RMSE toolkit | RMSE scikit-image |\n|---|---|---|")
    for f in FILTERS:
        ours = fbp(sino, P, f).numpy()
        ref = iradon(sk, th, filter_name=f, circle=False, output_size=n)
        rm = lambda a: float(np.sqrt(((a - img) ** 2).mean()))  # noqa: E731
        print(f"| {f} | {rm(ours):.4f} | {rm(ref):.4f} |")


if __name__ == "__main__":
    main()
