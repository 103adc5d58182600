"""Does a CT prior generalise beyond its training distribution? FBP, TV and DDS with each prior on held-out slices.

Held-out sets (none of them is ever drawn by a training source):
- ``real``: real CT slices shipped by registry packages, for evaluation only: pydicom's test files
  ``CT_small.dcm`` (a 128 x 128 crop of a body slice around the spine), ``J2K_pixelrep_mismatch.dcm`` (a head at
  the skull base) and ``693_J2KI.dcm`` (a head above the ventricles, in its head holder), and, when the
  ``pydicom-data`` package is installed, ``explicit_VR-UN.dcm`` (an abdomen, table at the top). HU are clipped to
  the scanner range [-1024, 3071] (the padding outside the reconstruction circle becomes air), resized to
  128 x 128 with an anti-aliased bilinear filter, and converted to mu / mu_water = 1 + HU / 1000.
- ``anatomy``: ``recon.data.ct_anatomy`` slices with generator seed 4242, two heads and two bodies (training
  seeds its generator with 1000 x seed + rank; the DDS settings are tuned on ``anatomy-val``, seed 999);
- ``phantoms``: the old procedural phantoms (``recon.data.phantoms``, seed 777, as ``ct_samplers.py``);
- ``crops-val``: magnified crops of ``recon.data.ct_anatomy`` slices (``crops=1``: 0.25-0.8 of the usual field of
  view; seed 998, two heads and two bodies), the validation set for priors trained with crops.

Settings (as ``ct_samplers.py``): parallel beam, noiseless line integrals, 30 views over 180 degrees
(``sparse-30``) and one view per degree over 0-120 degrees (``limited-0-120``).
Methods: FBP (ramp); TV (ADMM, 100 iterations) at each slice's best weight of the grid ``TV_GRID``, chosen on
the truth by PSNR (``tv-best``: an oracle, so a strong baseline), and at the toolkit's default weight
(``tv-default``); DDS with each prior (``--priors label=spec,...``), one sample (the mean of ``--samples`` N),
seed = slice index, with the toolkit's CT defaults unless ``--dds`` says otherwise.
Metrics: PSNR / SSIM in mu units with data range = the slice's maximum (``recon.pipelines.ct.score``).

One CSV row per (set, slice, setting, method) is appended as soon as it is done; a rerun skips rows already
there. The Markdown summary (means per set) and the per-slice table for the real slices are printed.

    python experiments/ct_prior_generalisation.py --out experiments/results/ct_prior_generalisation.csv \
        --priors old=bundled:ct-phantom-128,new=bundled:ct-anatomy-128
    python experiments/ct_prior_generalisation.py --sets anatomy-val --methods dds --dds steps=50,eta=0.85 ...
"""
import argparse
import csv
import os
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from recon import priors, samplers
from recon.pipelines.ct import DDS_TV, CTSettings, operator, reconstruct, score, simulate
from recon.samplers import DDS
from recon.data import ct_anatomy, phantoms

import ct_samplers

SETTINGS = {"sparse-30": dict(views=30), "limited-0-120": dict(views=None, limited=(0.0, 120.0))}
TV_GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
TV_DEFAULT = CTSettings().tv_lam  # the toolkit's default weight (3e-3), reported as its own row
REAL = ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm", "explicit_VR-UN.dcm")
FIELDS = ["set", "slice", "setting", "method", "psnr", "ssim", "tv_lam", "dds", "seconds"]


def real_slices(size: int = 128):
    """(names, mu images (N, size, size)) of the real CT slices that the installed packages ship."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    names, imgs = [], []
    for name in REAL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                path = get_testdata_file(name, download=False)
            except TypeError:  # older pydicom without the download flag
                path = get_testdata_file(name)
            if path is None:
                continue
            ds = pydicom.dcmread(path)
            px = torch.as_tensor(ds.pixel_array.astype("float32"))
        hu = px * float(getattr(ds, "RescaleSlope", 1.0) or 1.0) + float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        hu = hu.clamp(-1024.0, 3071.0)
        if tuple(hu.shape) != (size, size):
            hu = F.interpolate(hu[None, None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0, 0]
        names.append(name.removesuffix(".dcm"))
        imgs.append(phantoms.hu_to_mu(hu))
    return names, torch.stack(imgs)


def held_out(name: str, size: int = 128):
    if name == "real":
        return real_slices(size)
    if name in ("anatomy", "anatomy-val"):
        g = torch.Generator().manual_seed(4242 if name == "anatomy" else 999)
        hu = torch.cat([ct_anatomy.ct_anatomy(2, size, g, region="head"),
                        ct_anatomy.ct_anatomy(2, size, g, region="body")])
        return [f"{name}-{k}" for k in range(4)], phantoms.hu_to_mu(hu)
    if name == "crops-val":
        g = torch.Generator().manual_seed(998)
        hu = torch.cat([ct_anatomy.ct_anatomy(2, size, g, region="head", crops=1.0),
                        ct_anatomy.ct_anatomy(2, size, g, region="body", crops=1.0)])
        return [f"{name}-{k}" for k in range(4)], phantoms.hu_to_mu(hu)
    if name == "phantoms":
        hu = phantoms.ct_phantom(2, size, torch.Generator().manual_seed(777))
        return [f"phantom-{k}" for k in range(2)], phantoms.hu_to_mu(hu)
    raise ValueError(f"unknown set {name!r}")


def parse_dds(text: str) -> dict:
    """'steps=50,eta=0.85,cg_iter=5' -> DDS keyword arguments (defaults: the toolkit's CT DDS for noiseless data,
    with the in-plane TV ``DDS_TV`` in the data consistency, ``tv_xy=0`` for the plain CG; without ``steps``, the
    toolkit's steps for each setting's views, ``samplers.DDS.steps_for``)."""
    kw = {"tv_xy": DDS_TV}
    for item in filter(None, text.split(",")):
        k, v = item.split("=")
        kw[k] = int(v) if k in ("steps", "cg_iter") else float(v)
    return kw


def _rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _append(path, row):
    ct_samplers.append_row(path, FIELDS, row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results/ct_prior_generalisation.csv")
    ap.add_argument("--sets", default="real,anatomy,phantoms")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--methods", default="fbp,tv,dds")
    ap.add_argument("--priors", default="old=bundled:ct-phantom-128,new=bundled:ct-anatomy-128")
    ap.add_argument("--dds", default="", help="DDS keyword arguments, e.g. steps=50,eta=0.85,cg_iter=5")
    ap.add_argument("--size", type=int, default=128,
                    help="grid size of the synthetic sets and of the real slices (128: the prior's training grid; "
                         "512: the native geometry of the real slices)")
    ap.add_argument("--samples", type=int, default=1,
                    help="DDS samples per slice; the score is that of their mean (what reconstruct-ct writes)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    dds_given = parse_dds(args.dds)
    loaded = {}
    if "dds" in methods:
        for item in args.priors.split(","):
            label, spec = item.split("=", 1)
            loaded[label] = priors.load(spec)
    done = {(r["set"], r["slice"], r["setting"], r["method"], r["dds"]) for r in _rows(args.out)}
    for set_name in args.sets.split(","):
        names, imgs = held_out(set_name, args.size)
        if args.size != 128:
            names = [f"{n}@{args.size}" for n in names]
        for setting in args.settings.split(","):
            base = CTSettings(**SETTINGS[setting])
            op = operator(base, (args.size, args.size))
            dds_kw = {"steps": DDS.steps_for(op), **dds_given}
            dds_tag = ",".join(f"{k}={v}" for k, v in sorted(dds_kw.items()))
            if args.samples > 1:
                dds_tag += f",samples={args.samples}"
            for k, name in enumerate(names):
                img = imgs[k:k + 1]
                y = simulate(img, op, base, torch.Generator().manual_seed(k))
                todo = []
                if "fbp" in methods:
                    todo.append(("fbp", "", None))
                if "tv" in methods:
                    todo.append(("tv-best", "", None))
                elif "tv-default" in methods:
                    todo.append(("tv-default", "", None))
                if "dds" in methods:
                    todo += [(f"dds-{label}", dds_tag, p) for label, p in loaded.items()]
                for method, tag, prior in todo:
                    if (set_name, name, setting, method, tag) in done:
                        continue
                    t = time.time()
                    lam = ""
                    if method == "fbp":
                        e = score(img, reconstruct(y, op, CTSettings(method="fbp", **SETTINGS[setting]))[0])
                    elif method == "tv-best":
                        best = None
                        for lam_k in TV_GRID:
                            st = CTSettings(method="tv", tv_lam=lam_k, **SETTINGS[setting])
                            ek = score(img, reconstruct(y, op, st)[0])
                            if lam_k == TV_DEFAULT:
                                _append(args.out, dict(set=set_name, slice=name, setting=setting,
                                                       method="tv-default", psnr=round(ek["psnr"], 3),
                                                       ssim=round(ek["ssim"], 4), tv_lam=lam_k, dds="",
                                                       seconds=round(time.time() - t, 2)))
                            if best is None or ek["psnr"] > best[0]["psnr"]:
                                best = (ek, lam_k)
                        e, lam = best
                    elif method == "tv-default":
                        e = score(img, reconstruct(y, op, CTSettings(method="tv", **SETTINGS[setting]))[0])
                        lam = TV_DEFAULT
                    else:
                        prior.check_grid(tuple(op.ishape))
                        x = samplers.DDS(**dds_kw)(y, op, prior, n_samples=args.samples,
                                                   generator=torch.Generator().manual_seed(k)).mean(0)
                        e = score(img, x)
                    _append(args.out, dict(set=set_name, slice=name, setting=setting, method=method,
                                           psnr=round(e["psnr"], 3), ssim=round(e["ssim"], 4), tv_lam=lam, dds=tag,
                                           seconds=round(time.time() - t, 2)))
    summarize(args.out)


def summarize(path):
    rows = _rows(path)
    acc = defaultdict(list)
    for r in rows:
        acc[(r["set"], r["setting"], r["method"], r["dds"])].append(r)
    avg = lambda rs, k: sum(float(x[k]) for x in rs) / len(rs)  # noqa: E731
    print("| set | setting | method | DDS settings | PSNR | SSIM | slices |\n|---|---|---|---|---|---|---|")
    for (s, st, m, tag), rs in sorted(acc.items()):
        print(f"| {s} | {st} | {m} | {tag} | {avg(rs, 'psnr'):.2f} | {avg(rs, 'ssim'):.4f} | {len(rs)} |")
    real = [r for r in rows if r["set"] == "real"]
    if real:
        print("\n| real slice | setting | method | DDS settings | PSNR | SSIM | TV weight |\n"
              "|---|---|---|---|---|---|---|")
        for r in sorted(real, key=lambda r: (r["slice"], r["setting"], r["method"], r["dds"])):
            print(f"| {r['slice']} | {r['setting']} | {r['method']} | {r['dds']} | {float(r['psnr']):.2f} | "
                  f"{float(r['ssim']):.4f} | {r['tv_lam']} |")


if __name__ == "__main__":
    main()
