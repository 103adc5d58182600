"""Classical baselines on simulated 8-coil held-out brain slices (MNI152, 128 x 128, 30 dB SNR).

For each mask and acceleration: zero-filled, CG-SENSE, L1-wavelet and TV, PSNR/SSIM against the magnitude
of the ground truth (fastMRI metrics, data range = the slice maximum), averaged over the slices, plus the
seconds per slice. ESPIRiT maps come from the undersampled calibration region.

    python experiments/classical_baselines.py [--slices 0:10] [--out experiments/results/classical.csv]
"""
import argparse
import os
import time

import torch

from recon import classical, metrics
from recon.data.results import write_csv
from recon.problems import multicoil_problem

METHODS = {
    "zero-filled": lambda y, A: classical.zero_filled(y, A),
    "CG-SENSE": lambda y, A: classical.cg_sense(y, A),
    "L1-wavelet": lambda y, A: classical.l1_wavelet(y, A, lam=1e-3, max_iter=100),
    "TV": lambda y, A: classical.tv(y, A, lam=1e-3, max_iter=50),
}
SETTINGS = [("random", 4), ("random", 8), ("poisson", 4), ("poisson", 8)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", default="0:10")
    ap.add_argument("--out", default="experiments/results/classical.csv")
    args = ap.parse_args()
    a, b = (int(v) for v in args.slices.split(":"))
    rows = []
    for mask, acc in SETTINGS:
        acc_actual = []
        scores = {m: [] for m in METHODS}
        for s in range(a, b):
            p = multicoil_problem(slice_index=s, mask=mask, acceleration=acc, seed=s)
            acc_actual.append(p.acceleration)
            gt = p.x_true.abs()
            for name, f in METHODS.items():
                t = time.time()
                x = f(p.y, p.A)
                sec = time.time() - t
                scores[name].append((metrics.psnr(gt, x.abs()), metrics.ssim(gt, x.abs()), sec))
        for name, v in scores.items():
            t = torch.tensor(v)
            rows.append(dict(mask=mask, acceleration=acc, actual=round(sum(acc_actual) / len(acc_actual), 2),
                             method=name, psnr=round(float(t[:, 0].mean()), 2), ssim=round(float(t[:, 1].mean()), 4),
                             seconds=round(float(t[:, 2].mean()), 2), n=len(v)))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    write_csv(args.out, rows, list(rows[0]))
    print(f"| mask | R (actual) | method | PSNR | SSIM | s/slice |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mask']} | {r['acceleration']} ({r['actual']}) | {r['method']} | {r['psnr']} | {r['ssim']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
