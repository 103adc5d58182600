"""Speed of one denoiser call of a bundled prior on grids larger than its training grid: attention over the whole
feature map against attention within tiles of the training grid (``DiffusionPrior.configured(attention_window=...)``).

Each row times ``prior.denoise`` on one noisy image (median of ``--repeats`` calls after one warm-up, no gradients)
and reports the largest and the rms difference between the two outputs, relative to the rms of the global output.
Run with OMP_NUM_THREADS equal to ``--threads``:

    OMP_NUM_THREADS=1 python experiments/bench_attention.py --repeats 3
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_nufft import timed  # noqa: E402  (median milliseconds of repeated calls after one warm-up)
from recon import priors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="bundled:ct-anatomy-v3-128")
    ap.add_argument("--grids", default="128,256,512,768")
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior = priors.load(args.prior)
    window = max(prior.image_size[-2:])
    print(f"prior {prior.name}, window {window} pixels, sigma {args.sigma}, {args.threads} thread(s)\n")
    print("| grid | global attention (s) | windowed (s) | ratio | max abs diff / rms | rms diff / rms |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for n in (int(v) for v in args.grids.split(",")):
        x = torch.randn(1, n, n, generator=g) * (0.5 ** 2 + args.sigma ** 2) ** 0.5
        whole, tiled = prior.configured(attention_window=None), prior.configured(attention_window=window)
        with torch.no_grad():
            t_global = timed(lambda: whole.denoise(x, args.sigma), args.repeats) / 1e3
            ref = whole.denoise(x, args.sigma)
            t_win = timed(lambda: tiled.denoise(x, args.sigma), args.repeats) / 1e3
            out = tiled.denoise(x, args.sigma)
        rms = float(ref.square().mean().sqrt())
        d = (out - ref).abs()
        print(f"| {n} | {t_global:.3f} | {t_win:.3f} | {t_global / t_win:.2f} | {float(d.max()) / rms:.3g} | "
              f"{float(d.square().mean().sqrt()) / rms:.3g} |")


if __name__ == "__main__":
    main()
