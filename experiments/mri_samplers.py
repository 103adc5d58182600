"""Diffusion samplers against classical baselines on simulated 8-coil held-out brain slices.

Held-out slices of the MNI152 template (never seen in training), 128 x 128, birdcage coils, 30 dB SNR,
ESPIRiT maps from the undersampled calibration region; masks: fastMRI 1-D random (centre fraction 0.12) and
2-D Poisson disk, at 4x and 8x. Prior: the bundled ``mni-brain-128``. Metrics: fastMRI PSNR/SSIM of the
magnitude (data range = the slice maximum), NFE and seconds per slice on this machine.

One row per (mask, acceleration, method, slice) is appended to the CSV as soon as it is done; a rerun skips
rows already there, so an interrupted run resumes. The summary table (means over slices) is printed as
Markdown.

    python experiments/mri_samplers.py --slices 0:3 --out experiments/results/mri_samplers.csv
"""
import argparse
import csv
import os
import time
from collections import defaultdict

import torch

from recon import classical, metrics, priors, samplers
from recon.problems import multicoil_problem

SETTINGS = [("random", 4), ("random", 8), ("poisson", 4), ("poisson", 8)]


def methods(quick: bool):
    """name -> (function(y, A, prior, generator) -> image, NFE). Step counts are stated in the table."""
    dds = samplers.DDS(steps=50)
    smri = samplers.ScoreMRI(steps=100 if quick else 300)
    ald = samplers.ScoreALD(sigma_start=1.232, sigma_end=0.01, n_levels=50 if quick else 150, steps_each=3,
                            step_lr=5e-5 * (0.01 / 0.0066) ** 2, sigma_y=0.0, denoise_last=True)
    dps = samplers.DPS(steps=100 if quick else 250, zeta=1.0)
    return {
        "zero-filled": (lambda y, A, p, g: classical.zero_filled(y, A), 0),
        "CG-SENSE": (lambda y, A, p, g: classical.cg_sense(y, A), 0),
        "L1-wavelet": (lambda y, A, p, g: classical.l1_wavelet(y, A, lam=1e-3, max_iter=100), 0),
        "TV": (lambda y, A, p, g: classical.tv(y, A, lam=1e-3, max_iter=50), 0),
        f"DDS ({dds.steps} steps)": (lambda y, A, p, g: dds(y, A, p, generator=g)[0], dds.nfe()),
        f"Score-MRI ({smri.steps} steps)": (lambda y, A, p, g: smri(y, A, p, generator=g)[0], smri.nfe()),
        f"Score-ALD ({ald.n_levels} levels x 3)": (lambda y, A, p, g: ald(y, A, p, generator=g)[0], ald.nfe()),
        f"DPS ({dps.steps} steps)": (lambda y, A, p, g: dps(y, A, p, generator=g)[0], dps.nfe()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", default="0:3")
    ap.add_argument("--out", default="experiments/results/mri_samplers.csv")
    ap.add_argument("--prior", default="bundled:mni-brain-128")
    ap.add_argument("--quick", action="store_true", help="fewer steps for the slow samplers")
    ap.add_argument("--only", default="", help="comma-separated substrings of method names to run")
    args = ap.parse_args()
    a, b = (int(v) for v in args.slices.split(":"))
    prior = priors.load(args.prior)
    meths = methods(args.quick)
    if args.only:
        keep = args.only.split(",")
        meths = {k: v for k, v in meths.items() if any(s in k for s in keep)}
    fields = ["mask", "acceleration", "actual", "method", "slice", "psnr", "ssim", "nfe", "seconds"]
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {(r["mask"], r["acceleration"], r["method"], r["slice"]) for r in csv.DictReader(f)}
    else:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writeheader()
    for mask, acc in SETTINGS:
        for s in range(a, b):
            p = None
            for name, (fn, nfe) in meths.items():
                if (mask, str(acc), name, str(s)) in done:
                    continue
                p = p or multicoil_problem(slice_index=s, mask=mask, acceleration=acc, seed=s)
                gt = p.x_true.abs()
                t = time.time()
                x = fn(p.y, p.A, prior, torch.Generator().manual_seed(s))
                sec = time.time() - t
                row = dict(mask=mask, acceleration=acc, actual=round(p.acceleration, 2), method=name, slice=s,
                           psnr=round(metrics.psnr(gt, x.abs()), 3), ssim=round(metrics.ssim(gt, x.abs()), 4),
                           nfe=nfe, seconds=round(sec, 2))
                with open(args.out, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=fields).writerow(row)
                    f.flush()
                print(row, flush=True)
    summarize(args.out)


def summarize(path):
    acc = defaultdict(list)
    with open(path) as f:
        for r in csv.DictReader(f):
            acc[(r["mask"], int(r["acceleration"]), r["method"])].append(r)
    print("| mask | R | method | PSNR | SSIM | NFE | s/slice | slices |\n|---|---|---|---|---|---|---|---|")
    for (mask, r, name), rows in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        m = lambda k: sum(float(x[k]) for x in rows) / len(rows)  # noqa: E731
        print(f"| {mask} | {r}x ({m('actual'):.2f}) | {name} | {m('psnr'):.2f} | {m('ssim'):.4f} | "
              f"{int(m('nfe'))} | {m('seconds'):.1f} | {len(rows)} |")


if __name__ == "__main__":
    main()
