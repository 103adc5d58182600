"""Does a brain prior generalise across contrasts and pixel sizes? DDS against CG-SENSE on held-out slices.

Two test sets, both from the held-out slab of the MNI152 template (``recon.data.brain.HELDOUT``, never trained on):

- ``real``: the bundled held-out complex slices (the T1 template at 1.53 mm, as in the other tables);
- ``synth``: the same slab's tissue maps (``recon.data.synth.tissue_maps("heldout")``) rendered with fixed
  T2-, PD- and FLAIR-like intensities (the middle of each range in ``synth.CONTRASTS``), each at one of the pixel
  sizes 0.8, 1.2 and 1.9 mm, no rotation or bias field, the smooth phase of seed 0, |x| at its 99th percentile 1.

Each slice is simulated as ``recon.problems.multicoil_problem`` does: 8 birdcage coils, 30 dB SNR, the fastMRI
random mask at 4x (centre fraction 0.12, seed 0), ESPIRiT maps from the undersampled calibration region. Methods:
CG-SENSE and DDS (50 steps, generator seed 0) with each prior given by ``--prior LABEL=SPEC``. PSNR/SSIM are
fastMRI's on the magnitude with the slice maximum as data range. Rows are appended to the CSV as they finish
and a rerun skips rows already there; the Markdown table (mean and worst slice) covers every row in the CSV.

    python experiments/prior_generalisation.py --prior current=bundled:mni-brain-128 \
        --prior synth-250=/tmp/synth_250/prior.json --slices 0:10:3
"""
import argparse
import csv
import math
import os
import time
from collections import defaultdict

import torch

from operators import MultiCoilMRI, espirit, masks
from recon import classical, metrics, priors, samplers
from recon.data import brain, simulate, synth

SYNTH_CASES = [("t2", 0.8), ("pd", 1.2), ("flair", 1.9), ("t2", 1.9), ("pd", 0.8), ("flair", 1.2)]
FIELDS = ["set", "case", "slice", "method", "prior", "psnr", "ssim", "seconds"]


def synth_slices(kind: str, pixel_mm: float, idx, size: int = 128) -> torch.Tensor:
    maps = synth.tissue_maps("heldout")[idx]
    c = torch.tensor([(lo + hi) / 2 for lo, hi in synth.CONTRASTS[kind]]).expand(len(maps), 4)
    mag = synth.render(maps, c, torch.full((len(maps),), pixel_mm), size)
    mag = mag / torch.quantile(mag.reshape(len(mag), -1), 0.99, dim=1).clamp_min(1e-6).reshape(-1, 1, 1)
    return torch.polar(mag, brain.smooth_phase(len(mag), size, torch.Generator().manual_seed(0)))


def test_images(slices):
    """(set, case, slice index, complex image) for every test image."""
    real = brain.load_heldout(128)
    for i in slices:
        yield "real", "t1-1.53mm", i, real[i]
    for kind, px in SYNTH_CASES:
        imgs = synth_slices(kind, px, list(slices))
        for i, x in zip(slices, imgs):
            yield "synth", f"{kind}-{px}mm", i, x


def problem(x: torch.Tensor, seed: int = 0):
    maps_true = simulate.coil_maps(8, tuple(x.shape))
    k = simulate.simulate_multicoil(x, maps_true, snr_db=30.0, seed=seed)
    m = masks.get("random", acceleration=4, center_fraction=0.12)(tuple(k.shape), seed=seed)
    return m * k, MultiCoilMRI(espirit.maps_for_mask(m * k, m), m)


def summary(rows) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["set"], r["method"], r["prior"])].append((float(r["psnr"]), float(r["ssim"])))
    out = ["| test set | method | prior | slices | PSNR mean | PSNR worst | SSIM mean | SSIM worst |",
           "|---|---|---|---|---|---|---|---|"]
    for (s, meth, pr), v in sorted(groups.items()):
        p, q = [a for a, _ in v], [b for _, b in v]
        out.append(f"| {s} | {meth} | {pr} | {len(v)} | {sum(p) / len(p):.2f} | {min(p):.2f} | "
                   f"{sum(q) / len(q):.4f} | {min(q):.4f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", action="append", default=[], help="LABEL=SPEC (repeatable)")
    ap.add_argument("--slices", default="0:10", help="held-out slices a:b (step 1) or a:b:c")
    ap.add_argument("--out", default="experiments/results/prior_generalisation.csv")
    args = ap.parse_args()
    slices = list(range(*(int(v) for v in args.slices.split(":"))))
    pri = dict(p.split("=", 1) for p in (args.prior or ["current=bundled:mni-brain-128"]))
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {(r["set"], r["case"], r["slice"], r["method"], r["prior"]) for r in csv.DictReader(f)}
    loaded = {k: priors.load(v) for k, v in pri.items()}
    dds = samplers.DDS(steps=50)
    new = not os.path.exists(args.out)
    with open(args.out, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for s, case, i, x in test_images(slices):
            y, A = problem(x)
            runs = [("CG-SENSE", "-", lambda: classical.cg_sense(y, A))]
            runs += [("DDS (50 steps)", k, (lambda p=p: dds(y, A, p, generator=torch.Generator().manual_seed(0))[0]))
                     for k, p in loaded.items()]
            for meth, label, fn in runs:
                if (s, case, str(i), meth, label) in done:
                    continue
                t = time.time()
                rec = fn()
                sec = time.time() - t
                gt, pr = x.abs().numpy(), rec.abs().numpy()
                assert math.isfinite(float(pr.sum())), f"{meth} {label}: non-finite result"
                w.writerow({"set": s, "case": case, "slice": i, "method": meth, "prior": label,
                            "psnr": f"{metrics.psnr(gt, pr):.3f}", "ssim": f"{metrics.ssim(gt, pr):.4f}",
                            "seconds": f"{sec:.1f}"})
                f.flush()
                done.add((s, case, str(i), meth, label))
    with open(args.out) as f:
        print(summary(list(csv.DictReader(f))))


if __name__ == "__main__":
    main()
