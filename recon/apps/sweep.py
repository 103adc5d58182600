"""Mask sweeps (``recon sweep CONFIG.toml``): masks x accelerations x methods x seeds x slices, one CSV row per run.

Config (TOML)::

    out = "experiments/results/sweep.csv"
    prior = "bundled:mni-brain-128"
    masks = ["random", "equispaced", "gaussian2d", "poisson"]
    accelerations = [2, 4, 8]
    methods = ["dds", "cg-sense", "l1-wavelet"]
    seeds = [0, 1]
    center_fraction = 0.12
    files = []              # fastMRI files; empty: the bundled held-out brain slices (simulated 8-coil data)
    slices = "0:3"
    [steps]                 # per-method step counts (optional)
    dds = 50

Rows are appended and flushed as they finish; a rerun skips the rows already in the CSV, so an interrupted sweep
loses nothing. Under ``torchrun`` each rank takes every world-size-th row and writes ``<out>.rank<r>``; rank 0
merges them into ``out`` at the end. ``plot`` draws PSNR and SSIM against acceleration, one line per mask and
method, with error bars over seeds and slices.
"""
from __future__ import annotations

import csv
import itertools
import os
import time
from pathlib import Path

import torch

from recon.apps import io

FIELDS = ["source", "slice", "mask", "acceleration", "method", "seed", "actual_acceleration", "psnr", "ssim",
          "nmse", "nfe", "seconds"]
KEY = ("source", "slice", "mask", "acceleration", "method", "seed")


def load_config(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep config {p}: no such file")
    with open(p, "rb") as f:
        try:
            cfg = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"sweep config {p}: not valid TOML ({e})") from None
    required = ("out", "masks", "accelerations", "methods")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"sweep config {p}: missing {missing}")
    from operators import masks
    from recon.apps.reconstruct import METHODS
    for m in cfg["masks"]:
        if m not in masks.available():
            raise ValueError(f"sweep config {p}: unknown mask {m!r}; known: {masks.available()}")
    for m in cfg["methods"]:
        if m not in METHODS:
            raise ValueError(f"sweep config {p}: unknown method {m!r}; known: {METHODS}")
    for a in cfg["accelerations"]:
        if not a >= 1:
            raise ValueError(f"sweep config {p}: acceleration must be >= 1, got {a}")
    return cfg


def rows_of(cfg: dict) -> list:
    a, b = (int(v) for v in str(cfg.get("slices", "0:1")).split(":"))
    sources = cfg.get("files") or ["heldout"]
    return [dict(source=str(src), slice=s, mask=m, acceleration=float(acc), method=meth, seed=int(seed))
            for src, s, m, acc, meth, seed in itertools.product(
                sources, range(a, b), cfg["masks"], cfg["accelerations"], cfg["methods"], cfg.get("seeds", [0]))]


def _key(row) -> tuple:
    return tuple(str(float(row[k])) if k == "acceleration" else str(row[k]) for k in KEY)


def _done(paths) -> set:
    done = set()
    for p in paths:
        if Path(p).exists():
            with open(p) as f:
                done |= {_key(r) for r in csv.DictReader(f)}
    return done


def run_one(row: dict, cfg: dict, prior) -> dict:
    from recon import metrics
    from recon.apps.reconstruct import CLASSICAL, MRISettings, reconstruct_slice, sampler_for
    from recon.data import center_crop, load_fastmri
    from recon.problems import multicoil_problem

    steps = cfg.get("steps", {}).get(row["method"])
    settings = MRISettings(method=row["method"], mask=row["mask"], acceleration=row["acceleration"],
                        center_fraction=cfg.get("center_fraction", 0.08), samples=1, seed=row["seed"], steps=steps)
    t = time.time()
    if row["source"] == "heldout":
        p = multicoil_problem(slice_index=row["slice"], mask=row["mask"], acceleration=row["acceleration"],
                              center_fraction=cfg.get("center_fraction", 0.12), seed=row["seed"])
        t = time.time()
        if row["method"] in CLASSICAL:
            x = CLASSICAL[row["method"]](p.y, p.A)
        else:
            x = sampler_for(settings)(p.y, p.A, prior, generator=torch.Generator().manual_seed(row["seed"]))[0]
        gt, actual, maxval = p.x_true.abs(), p.acceleration, None
    else:
        vol = load_fastmri(row["source"])
        if not vol.has_target:
            raise ValueError(f"{row['source']}: the sweep needs files with a reference reconstruction")
        k = vol.kspace(row["slice"])
        r = reconstruct_slice(k, vol.mask, settings, prior, row["seed"], recon_size=vol.recon_size[:2],
                              limits=vol.header.encoding_limits if vol.header else None,
                              encoded_width=vol.encoding_size[1])
        gt = r.reference if r.reference is not None else vol.target(row["slice"])
        x = center_crop(r.samples[0].cpu(), tuple(gt.shape[-2:]))
        from operators import masks
        actual = masks.acceleration(r.mask.cpu(), tuple(r.maps.shape[-2:]))
        maxval = float(vol.attrs["max"]) if "max" in vol.attrs else None
    sec = time.time() - t
    nfe = 0 if row["method"] in CLASSICAL else _nfe(settings)
    return dict(row, actual_acceleration=round(actual, 3), psnr=round(metrics.psnr(gt, x.abs(), maxval), 4),
                ssim=round(metrics.ssim(gt, x.abs(), maxval), 5), nmse=round(metrics.nmse(gt, x.abs()), 6),
                nfe=nfe, seconds=round(sec, 2))


def _nfe(settings) -> int:
    from recon.apps.reconstruct import sampler_for
    return sampler_for(settings).nfe()


def run(config_path, progress: bool = True) -> Path:
    import torch.distributed as dist
    from tqdm import tqdm

    from recon import priors
    from recon.apps.reconstruct import CLASSICAL

    cfg = load_config(config_path)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    out = Path(cfg["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + f".rank{rank}") if world > 1 else out
    done = _done([out, part])
    rows = [r for i, r in enumerate(rows_of(cfg)) if i % world == rank and _key(r) not in done]
    needs_prior = any(r["method"] not in CLASSICAL for r in rows)
    prior = priors.load(cfg.get("prior", "bundled:mni-brain-128")) if needs_prior else None
    if not part.exists():
        with open(part, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()
    for row in tqdm(rows, disable=not progress or rank != 0, desc="sweep"):
        result = run_one(row, cfg, prior)
        with open(part, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(result)
            f.flush()
            os.fsync(f.fileno())
    if world > 1:
        dist.barrier()
        if rank == 0:
            _merge(out, [out.with_name(out.name + f".rank{r}") for r in range(world)])
        dist.barrier()
    if rank == 0:
        plot(out)
    return out


def _merge(out: Path, parts) -> None:
    rows, seen = [], set()
    for p in [out] + list(parts):
        if p.exists():
            with open(p) as f:
                for r in csv.DictReader(f):
                    if _key(r) not in seen:
                        seen.add(_key(r))
                        rows.append(r)
    io.write_csv(out, rows, FIELDS)
    for p in parts:
        if p.exists() and p != out:
            p.unlink()


def plot(csv_path) -> Path:
    """PSNR and SSIM against acceleration, one line per (mask, method), error bars over seeds and slices."""
    import matplotlib.pyplot as plt
    import numpy as np

    from recon import plots

    groups = {}
    with open(csv_path) as f:
        for r in csv.DictReader(f):
            groups.setdefault((r["mask"], r["method"]), {}).setdefault(float(r["acceleration"]), []).append(
                (float(r["psnr"]), float(r["ssim"])))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (mask, method), by_acc in sorted(groups.items()):
        accs = sorted(by_acc)
        for ax, j in zip(axes, (0, 1)):
            vals = [np.array([v[j] for v in by_acc[a]]) for a in accs]
            ax.errorbar(accs, [v.mean() for v in vals], yerr=[v.std() for v in vals], marker="o", ms=3, capsize=2,
                        label=f"{method} / {mask}")
    for ax, name in zip(axes, ("PSNR [dB]", "SSIM")):
        ax.set_xlabel("acceleration")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    return plots.save_figure(fig, Path(csv_path).with_suffix(".png"))


def command(config, progress: bool = True) -> int:
    """``recon sweep``: run the sweep; rank 0 names the CSV and the figure it wrote."""
    out = run(config, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0
