"""Unconditional synthesis above the training grid: sampling the large grid directly, with coarse denoising at high
noise, and the cascade of ``tasks.synthesize`` (a base sample on the training grid, upsampled, refined from
sigma = refine), each against the others on the same seed.

    OMP_NUM_THREADS=2 python experiments/synthesis_large.py --size 320 --n 8 [--refine 0.15,0.3,0.6]  (or 640x320)
        [--prior bundled:brain-synth-128] [--no-direct] [--out experiments/results/synthesis_320]

Writes ``OUT.png`` (one row per method, the samples of one seed) and ``OUT.json``, and prints a table. A brain slice
is one object inside the field of view, so for each sample the object (|x| above 15% of its 99th percentile, after
a 5-pixel box blur) is measured:
- ``parts``: how many connected pieces larger than 0.5% of the field it has;
- ``largest``: the share of the object in its largest piece;
- ``border``: the fraction of the field's border pixels the object touches (a field of tissue touches all of it);
- ``fill``: the object's share of the field;
- ``whole``: the share of samples with one main piece (largest >= 0.9) that touches at most 5% of the border.
The row "held-out slices" measures the template's held-out slices resampled to the same grid: what real slices
give. These are crude, layout-only measures; the figure is the judge of texture.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recon import atomic, plots, priors, tasks  # noqa: E402
from recon.data import brain  # noqa: E402


def layout(x: torch.Tensor) -> dict:
    a = x.abs().float().numpy()
    a = ndimage.uniform_filter(a, 5)
    obj = a > 0.15 * np.percentile(a, 99)
    lab, k = ndimage.label(obj)
    sizes = np.bincount(lab.ravel())[1:] if k else np.zeros(1)
    big = sizes[sizes > 0.005 * obj.size]
    border = np.concatenate([obj[0], obj[-1], obj[1:-1, 0], obj[1:-1, -1]])
    largest = float(sizes.max() / max(1, obj.sum()))
    touch = float(border.mean())
    return {"parts": int(len(big)), "largest": largest, "border": touch, "fill": float(obj.mean()),
            "whole": float(largest >= 0.9 and touch <= 0.05)}


def summary(xs) -> dict:
    rows = [layout(x) for x in xs]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="320", help="N or HxW")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", default="0.15,0.3,0.6")
    ap.add_argument("--prior", default="bundled:brain-synth-128")
    ap.add_argument("--coarse", default="0.5", help="coarse-denoising levels to try: sigma above which to pool 2x2")
    ap.add_argument("--no-direct", action="store_true", help="skip sampling the large grid directly (slow)")
    ap.add_argument("--out", default="experiments/results/synthesis_320")
    a = ap.parse_args()
    prior = priors.load(a.prior)
    from recon.pipelines.settings import parse_size
    shape = parse_size(a.size)
    results, grids = {}, []
    held = tasks._embed(brain.load_heldout(min(shape)), shape)  # the slices' field of view spans the shorter side
    results["held-out slices"] = {**summary(held), "seconds": 0.0}
    with torch.no_grad():
        methods = [] if a.no_direct else [("direct", {"cascade": False}, None)]
        methods += [(f"coarse 2x2 above {c}", {"cascade": False}, [(float(c), 2)]) for c in a.coarse.split(",") if c]
        methods += [(f"base {tasks.base_shape(prior, tasks.core_shape(shape))}, refine {r}", {"refine": float(r)}, None)
                    for r in a.refine.split(",") if r]
        for name, kw, coarse in methods:
            t = time.time()
            x = tasks.synthesize(prior.configured(coarse=coarse), a.n, shape=shape, steps=a.steps, seed=a.seed, **kw)
            sec = time.time() - t
            results[name] = {**summary(x), "seconds": sec}
            grids.append(x.abs())
            print(f"{name}: {sec:.1f} s", flush=True)
    names = [k for k in results if k != "held-out slices"]
    plots.save_grid(torch.cat(grids), a.out + ".png", ncols=a.n,
                    title=f"{prior.name} at {shape[0]} x {shape[1]}, seed {a.seed}; rows: " + " | ".join(names))
    atomic.write_text(a.out + ".json", json.dumps({"args": vars(a), "results": results}, indent=1))
    print(f"\n| method ({a.n} samples, {a.steps} steps) | parts | largest | border | fill | whole | s |")
    print("|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['parts']:.2f} | {r['largest']:.2f} | {r['border']:.3f} | {r['fill']:.2f} | "
              f"{r['whole']:.2f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
