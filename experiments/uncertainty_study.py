"""Uncertainty against acceleration (chapter 7, Fig. 7.4): DDS posterior samples of a held-out slice at 2x..8x.

For each acceleration: N samples as one batch; the mean std inside the object, the correlation of the std map
with |error| of the mean, the coverage of the per-pixel 90% intervals, and the PSNR of the mean. A figure row
per acceleration (zero-filled, mean, std on one fixed colour scale, |error|).

    python experiments/uncertainty_study.py [--samples 16] [--slice 5] [--mask random]
"""
import argparse

import torch

from recon import metrics, plots, priors, samplers
from recon.problems import multicoil_problem
from recon.uncertainty import summarize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--slice", type=int, default=5)
    ap.add_argument("--mask", default="random")
    ap.add_argument("--prior", default="bundled:mni-brain-128")
    ap.add_argument("--png", default="experiments/results/uncertainty.png")
    args = ap.parse_args()
    prior = priors.load(args.prior)
    print("| R | mean std (object) | corr(std, abs error) | 90% coverage | PSNR of mean |\n|---|---|---|---|---|")
    rows = []
    for acc in (2, 4, 6, 8):
        p = multicoil_problem(slice_index=args.slice, mask=args.mask, acceleration=acc, seed=0)
        x = samplers.DDS(steps=50)(p.y, p.A, prior, n_samples=args.samples, generator=torch.Generator().manual_seed(0))
        gt = p.x_true.abs()
        r = summarize(x, gt, 0.9)
        print(f"| {p.acceleration:.2f} | {r['mean_std_in_object']:.4f} | {r['std_error_correlation']:.3f} | "
              f"{r['coverage']:.3f} | {metrics.psnr(gt, r['mean'].abs()):.2f} |")
        rows.append((acc, p.A.H(p.y).abs(), r))
    vmax = float(gt.max())
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), 4, figsize=(9, 2.3 * len(rows)), squeeze=False)
    for (acc, zf, r), ax in zip(rows, axes):
        for a, (title, im, vm) in zip(ax, [(f"zero-filled R={acc}", zf, vmax), ("mean", r["mean"].abs(), vmax),
                                           ("std [0, 0.05 max]", r["std"], 0.05 * vmax),
                                           ("|error| [0, 0.05 max]", r["error"], 0.05 * vmax)]):
            a.imshow(im.numpy(), cmap="gray" if "std" not in title else "viridis", vmin=0, vmax=vm)
            a.set_title(title, fontsize=8)
            a.axis("off")
    plots.save_figure(fig, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
