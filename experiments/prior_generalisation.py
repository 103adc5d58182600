"""Does a brain prior generalise across contrasts, scanners, pixel and matrix sizes? DDS against CG-SENSE and a
TV-SENSE tuned on the truth, on slices no prior was trained on.

Test sets (all fixed before any prior below was trained; none is in any training source):

- ``template``: the bundled held-out slices of the MNI152 T1 template (``recon.data.brain.HELDOUT``, 128 x 128,
  1.53 mm), complex (smooth phase), as in the other tables.
- ``synth``: the held-out slab's tissue maps (``recon.data.synth.tissue_maps("heldout")``) rendered with fixed
  mid-range T2-, PD- and FLAIR-like intensities and one fixed out-of-list contrast (CSF brightest, white matter
  darkest, head dark: ``inv``), each at one pixel size, on a matrix that holds the whole 196 mm head (so the
  simulated acquisition has no wrap-around): T2 0.8 mm on 248 x 248, PD 1.2 mm on 168 x 168, FLAIR 1.9 mm on
  104 x 104 and ``inv`` 2.4 mm on 88 x 88 (2.4 mm is outside the 0.6-2 mm training range). No rotation or bias
  field, the smooth phase of seed 0, |x| at its 99th percentile 1.
- ``real``: real brain MR slices of other scanners and contrasts that registry packages ship (magnitude images,
  |x| at its 99th percentile 1): the ten b0 (T2-weighted EPI) slices of dipy's ``S0_10slices.nii.gz``
  (128 x 128, 2 mm), slices 6, 10, 14 and 18 of nibabel's test ``example4d.nii.gz`` (a T2*-weighted fMRI volume,
  128 x 96, 2 mm) and dipy's ``t1_coronal_slice.npy`` (a coronal T1 slice, 256 x 256). Needs ``pip install dipy``
  (its data files ship in the wheel; nothing is downloaded); without dipy only the nibabel slices are used.

Each slice is simulated as ``recon.problems.multicoil_problem`` does: 8 birdcage coils, 30 dB SNR, the fastMRI
random mask at 4x (centre fraction 0.12, seed 0), ESPIRiT maps from the undersampled calibration region. Methods:
CG-SENSE; TV-SENSE (``recon.classical.tv``, 100 ADMM iterations) at the best of the weights 3e-4 ... 3e-2 chosen
per slice on the truth (an oracle, so a strong baseline); DDS with its defaults (``samplers.DDS()``, 50 steps,
eta 1, the data weighed by its estimated noise; earlier rows say their settings in their label; generator seed 0)
for each prior given by ``--prior LABEL=SPEC`` (``--dds`` for other settings). PSNR/SSIM are fastMRI's on the
magnitude with
the slice maximum as data range. Rows are appended to the CSV as they finish and a rerun skips rows already there;
the Markdown table covers every row in the CSV (``--sets`` chooses the sets to run).

    python experiments/prior_generalisation.py --prior mni-brain-128=bundled:mni-brain-128 --sets real,synth
"""
import argparse
import csv
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch

from operators import MultiCoilMRI, espirit, masks
from recon import classical, metrics, priors, samplers
from recon.data import brain, simulate, synth

# (name, intensities (gm, wm, csf, extra) or a synth.CONTRASTS kind, pixel mm, matrix)
SYNTH_CASES = [("t2", None, 0.8, 248), ("pd", None, 1.2, 168), ("flair", None, 1.9, 104),
               ("inv", (0.45, 0.15, 1.0, 0.1), 2.4, 88)]
TV_WEIGHTS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
FIELDS = ["set", "case", "slice", "method", "prior", "psnr", "ssim", "seconds"]


def _p99(mag: torch.Tensor) -> torch.Tensor:
    return mag / torch.quantile(mag.reshape(len(mag), -1), 0.99, dim=1).clamp_min(1e-6).reshape(-1, 1, 1)


def synth_slices(kind: str, intensities, pixel_mm: float, size: int, idx) -> torch.Tensor:
    maps = synth.tissue_maps("heldout")[idx]
    if intensities is None:
        intensities = [(lo + hi) / 2 for lo, hi in synth.CONTRASTS[kind]]
    c = torch.tensor(intensities, dtype=torch.float32).expand(len(maps), 4)
    mag = _p99(synth.render(maps, c, torch.full((len(maps),), pixel_mm), size))
    return torch.polar(mag, brain.smooth_phase(len(mag), size, torch.Generator().manual_seed(0)))


def real_slices():
    """(case, index, magnitude image) of the real MR slices that the installed packages ship."""
    import nibabel
    out = []
    e4 = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "example4d.nii.gz")
    vol = np.asarray(nibabel.load(e4).dataobj, dtype=np.float32)[..., 0]
    for z in (6, 10, 14, 18):
        out.append(("epi-t2s-nibabel", z, np.rot90(vol[:, :, z]).copy()))
    try:
        import dipy
    except ImportError:
        return out
    d = os.path.join(os.path.dirname(dipy.__file__), "data", "files")
    s0 = np.asarray(nibabel.load(os.path.join(d, "S0_10slices.nii.gz")).dataobj, dtype=np.float32)[..., 0]
    for z in range(s0.shape[2]):
        out.append(("b0-epi-dipy", z, np.rot90(s0[:, :, z]).copy()))
    out.append(("t1-coronal-dipy", 0, np.load(os.path.join(d, "t1_coronal_slice.npy")).astype(np.float32)))
    return out


def test_images(sets, slices):
    """(set, case, slice index, complex image) for every test image of ``sets``."""
    if "template" in sets:
        x = brain.load_heldout(128)
        for i in slices:
            yield "template", "t1-1.53mm", i, x[i]
    if "synth" in sets:
        for kind, c, px, n in SYNTH_CASES:
            for i, x in zip(slices, synth_slices(kind, c, px, n, list(slices))):
                yield "synth", f"{kind}-{px}mm-{n}px", i, x
    if "real" in sets:
        for case, i, a in real_slices():
            m = torch.from_numpy(a).clamp_min(0)[None]
            yield "real", case, i, _p99(m)[0].to(torch.complex64)


def problem(x: torch.Tensor, seed: int = 0):
    maps_true = simulate.coil_maps(8, tuple(x.shape))
    k = simulate.simulate_multicoil(x, maps_true, snr_db=30.0, seed=seed)
    m = masks.get("random", acceleration=4, center_fraction=0.12)(tuple(k.shape), seed=seed)
    return m * k, MultiCoilMRI(espirit.maps_for_mask(m * k, m), m)


def oracle_tv(y, A, truth):
    """TV-SENSE at the weight of ``TV_WEIGHTS`` with the best PSNR against ``truth`` (numpy magnitude)."""
    best = None
    for lam in TV_WEIGHTS:
        r = classical.tv(y, A, lam=lam, max_iter=100)
        p = metrics.psnr(truth, r.abs().numpy())
        if best is None or p > best[0]:
            best = (p, r)
    return best[1]


def dds_variant(spec: str):
    """(DDS sampler, method label) from ``KEY=VALUE,...``. The label names the resolved data weight: the noise
    weight (``sigma_y``, ``lam``, CG iterations) when it is in use, as for plain ``DDS()``; otherwise the
    settings given (``DDS(sigma_y=None, cg_iter=5)`` is "DDS (50 steps, eta 1)", the default before
    2026-12-02)."""
    from recon.samplers.dds import CG_ITER, CG_ITER_NOISY
    kw = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=", 1)
        try:
            kw[k] = int(v)
        except ValueError:
            try:
                kw[k] = float(v)
            except ValueError:
                kw[k] = None if v == "None" else v
    dds = samplers.DDS(**kw)
    if dds.sigma_y is not None:
        cg = dds.cg_iter if dds.cg_iter is not None else CG_ITER_NOISY
        extra = f", sigma_y {dds.sigma_y}, lam {dds.lam:g}, cg_iter {cg}"
        extra += "".join(f", {k} {v}" for k, v in kw.items() if k not in ("steps", "eta", "sigma_y", "lam", "cg_iter"))
    else:
        extra = "".join(f", {k} {v}" for k, v in kw.items() if k not in ("steps", "eta", "sigma_y")
                        and not (k == "cg_iter" and v == CG_ITER))
    return dds, f"DDS ({dds.steps} steps, eta {dds.eta:g}{extra})"


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


def margins(rows) -> str:
    """Per set and prior: DDS minus CG-SENSE and minus the oracle TV, mean and worst slice (PSNR dB)."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["set"], r["case"], r["slice"])][(r["method"], r["prior"])] = float(r["psnr"])
    out = ["| test set | method | prior | slices | DDS - CG-SENSE mean | worst | DDS - TV (oracle) mean | worst |",
           "|---|---|---|---|---|---|---|---|"]
    acc = defaultdict(lambda: ([], []))
    for (s, _, _), v in by.items():
        for (meth, pr), p in v.items():
            if meth.startswith("DDS") and ("CG-SENSE", "-") in v and ("TV-SENSE (oracle)", "-") in v:
                acc[(s, meth, pr)][0].append(p - v[("CG-SENSE", "-")])
                acc[(s, meth, pr)][1].append(p - v[("TV-SENSE (oracle)", "-")])
    for (s, meth, pr), (a, b) in sorted(acc.items()):
        out.append(f"| {s} | {meth} | {pr} | {len(a)} | {np.mean(a):+.2f} | {min(a):+.2f} | {np.mean(b):+.2f} | "
                   f"{min(b):+.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", action="append", default=[], help="LABEL=SPEC (repeatable)")
    ap.add_argument("--sets", default="template,synth,real")
    ap.add_argument("--slices", default="0:10:3", help="held-out template/synth slices a:b or a:b:c")
    ap.add_argument("--no-tv", action="store_true", help="skip the TV oracle (5 TV runs per slice)")
    ap.add_argument("--dds", action="append", default=[],
                    help="DDS settings KEY=VALUE,... (repeatable; e.g. sigma_y=auto,lam=0.5); default: DDS()")
    ap.add_argument("--no-baselines", action="store_true", help="run only the DDS rows")
    ap.add_argument("--out", default="experiments/results/prior_generalisation.csv")
    args = ap.parse_args()
    sets = set(args.sets.split(","))
    slices = list(range(*(int(v) for v in args.slices.split(":"))))
    pri = dict(p.split("=", 1) for p in (args.prior or ["mni-brain-128=bundled:mni-brain-128"]))
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {(r["set"], r["case"], r["slice"], r["method"], r["prior"]) for r in csv.DictReader(f)}
    loaded = {k: priors.load(v) for k, v in pri.items()}
    variants = [dds_variant(v) for v in (args.dds or [""])]
    new = not os.path.exists(args.out)
    with open(args.out, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for s, case, i, x in test_images(sets, slices):
            gt = x.abs().numpy()
            y, A = problem(x)
            runs = [] if args.no_baselines else [("CG-SENSE", "-", lambda: classical.cg_sense(y, A))]
            if not (args.no_tv or args.no_baselines):
                runs.append(("TV-SENSE (oracle)", "-", lambda: oracle_tv(y, A, gt)))
            runs += [(label, k, (lambda p=p, dds=dds: dds(y, A, p, generator=torch.Generator().manual_seed(0))[0]))
                     for dds, label in variants for k, p in loaded.items()]
            for meth, label, fn in runs:
                if (s, case, str(i), meth, label) in done:
                    continue
                t = time.time()
                rec = fn()
                sec = time.time() - t
                pr = rec.abs().numpy()
                assert math.isfinite(float(pr.sum())), f"{meth} {label}: non-finite result"
                w.writerow({"set": s, "case": case, "slice": i, "method": meth, "prior": label,
                            "psnr": f"{metrics.psnr(gt, pr):.3f}", "ssim": f"{metrics.ssim(gt, pr):.4f}",
                            "seconds": f"{sec:.1f}"})
                f.flush()
                done.add((s, case, str(i), meth, label))
    with open(args.out) as f:
        rows = list(csv.DictReader(f))
    print(summary(rows))
    print()
    print(margins(rows))


if __name__ == "__main__":
    main()
