"""How ``tasks.inpaint(strength="auto")`` should choose between the prior's fills and the biharmonic fill.

For each image of ``inpaint_init_check.py`` (nibabel's phantom EPI slices, a 12-pixel disk; held-out template
slices, a 10-pixel disk) this runs what ``strength="auto"`` runs, once, with ``--probes`` pseudo-regions, and keeps
for every candidate (strength s, share w) the error on each pseudo-region and the PSNR inside the real region.
Selection rules are then scored on the same runs:

- ``mean``: the smallest mean squared error over the pseudo-regions (the rule ``tasks.inpaint`` used up to now);
- ``all``: as ``mean``, among the candidates that beat the biharmonic fill on every pseudo-region (else the fill);
- ``majority``: ... on more than half of them;
- ``margin-F``: as ``mean``, and only if the mean error is below (1 - F) times the fill's.

Each rule is also scored with only the first ``k`` of the pseudo-regions (``--subsets``), the nearest ones. Prior
``brain-synth-128``, 8 samples per run, the mean scored. Writes a JSON of the per-image numbers with ``--out``.

    OMP_NUM_THREADS=1 python experiments/inpaint_selection_study.py --probes 8 --out out/inpaint_selection.json
    python experiments/inpaint_selection_study.py --analyze out/inpaint_selection.json
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from recon import tasks  # noqa: E402


def images():
    import nonbrain_check as nb
    from recon.problems import multicoil_problem
    xs = nb.phantom_slices()
    for i in range(9):
        yield "phantom", i, xs[i].float(), 12.0
    for s in (0, 1, 4, 7):
        yield "template", s, multicoil_problem(slice_index=s).x_true.abs().float(), 10.0


def psnr(gt, x, region, peak):
    mse = float((gt[region] - x[region]).abs().square().mean())
    return 10 * math.log10(peak ** 2 / max(mse, 1e-20))


def run_one(prior, gt, radius, seed, n_probes, steps, n_samples):
    h, w = gt.shape
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    wt = gt / gt.sum()
    hole = tasks.region((h, w), (float((wt * yy).sum()), float((wt * xx).sum())), radius)
    image = gt.to(torch.complex64)
    probes = tasks.probe_regions(image, hole, k=n_probes)
    if len(probes) < 2:
        probes = max(probes, tasks.probe_regions(image, hole, k=n_probes, gap=2, tolerance=0.5), key=len)
    if not probes:   # tasks.inpaint returns the biharmonic fill
        fill = tasks.biharmonic(image, hole)
        return {"probes": 0, "candidates": {"0": {"probe_mse": [], "psnr": psnr(gt, fill.abs(), hole, float(gt.max()))}}}
    union = hole | torch.stack(probes).any(0)
    keep = (~union).to(torch.float32)
    fill = tasks.biharmonic(image, union)
    scale = tasks._data_scale(prior, fill)
    peak = float(gt.max())
    cands = {"0": {"probe_mse": [float((fill[p] - image[p]).abs().square().mean()) for p in probes],
                   "psnr": psnr(gt, fill.abs(), hole, peak)}}
    for s in tasks.STRENGTHS:
        if s == 0:
            continue
        x = keep * image + (1 - keep) * tasks._sdedit(fill / scale, prior, s, ~union, steps, tasks._gen(seed),
                                                      eta=1.0, n=n_samples) * scale
        m = x.mean(0)
        for wgt in tasks.WEIGHTS:
            est = fill + wgt * (m - fill)
            cands[f"{s}/{wgt}"] = {"probe_mse": [float((est[p] - image[p]).abs().square().mean()) for p in probes],
                                   "psnr": psnr(gt, est.abs(), hole, peak)}
    return {"probes": len(probes), "candidates": cands}


def choose(cands, rule, k):
    if len(cands) == 1:
        return "0"
    base = np.array(cands["0"]["probe_mse"][:k])
    best, best_err = "0", float(base.mean())
    for name, c in cands.items():
        if name == "0":
            continue
        e = np.array(c["probe_mse"][:k])
        wins = int((e < base).sum())
        if rule == "all" and wins < len(base):
            continue
        if rule == "majority" and wins <= len(base) / 2:
            continue
        if rule.startswith("margin-") and e.mean() >= (1 - float(rule.split("-")[1])) * base.mean():
            continue
        if e.mean() < best_err:
            best, best_err = name, float(e.mean())
    return best


def analyze(rows, subsets):
    rules = ["mean", "all", "majority", "margin-0.05", "margin-0.1", "margin-0.2"]
    print("| rule | probes used | phantom mean (worst vs biharmonic) | template mean (worst vs biharmonic) | "
          "slices off the fill |")
    print("|---|---|---|---|---|")
    for k in subsets:
        for rule in rules:
            cells, moved = [], 0
            for kind in ("phantom", "template"):
                d, gains = [], []
                for r in rows:
                    if r["set"] != kind:
                        continue
                    c = r["result"]["candidates"]
                    pick = choose(c, rule, k)
                    moved += pick != "0"
                    d.append(c[pick]["psnr"])
                    gains.append(c[pick]["psnr"] - c["0"]["psnr"])
                cells.append(f"{np.mean(d):.2f} ({min(gains):+.2f})")
            print(f"| {rule} | {k} | {cells[0]} | {cells[1]} | {moved} |")
    print()
    for r in rows:
        c = r["result"]["candidates"]
        top = max(c, key=lambda n: c[n]["psnr"])
        print(f"{r['set']} {r['index']}: fill {c['0']['psnr']:.2f}, best candidate {top} {c[top]['psnr']:.2f}, "
              f"mean rule (4 probes) {choose(c, 'mean', 4)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--out", default=None)
    ap.add_argument("--analyze", default=None, help="score the rules on a JSON written by an earlier run")
    ap.add_argument("--subsets", default="4,8")
    args = ap.parse_args()
    subsets = [int(v) for v in args.subsets.split(",")]
    if args.analyze:
        analyze(json.load(open(args.analyze)), subsets)
        return
    from recon import priors
    from recon.atomic import write_text
    prior = priors.load("bundled:brain-synth-128")
    rows = []
    for kind, i, gt, radius in images():
        res = run_one(prior, gt, radius, i, args.probes, args.steps, args.samples)
        rows.append({"set": kind, "index": i, "result": res})
        print(kind, i, "probes", res["probes"], flush=True)
        if args.out:
            write_text(args.out, json.dumps(rows))
    analyze(rows, subsets)


if __name__ == "__main__":
    main()
