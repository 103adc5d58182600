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
    max_runs = 100000       # the most runs the config may expand to (optional; default 100000, at most 10^7)
    [steps]                 # per-method step counts (optional)
    dds = 50

Rows are appended and flushed as they finish; a rerun skips the rows already in the CSV, so an interrupted sweep
loses nothing. Under ``torchrun`` each rank takes every world-size-th row and writes ``<out>.rank<r>``; rank 0
merges them into ``out`` at the end. ``plot`` draws PSNR and SSIM against acceleration, one line per mask and
method, with error bars over seeds and slices.

Every row records the resolved settings that determine its result (``settings``: source, slice, mask,
acceleration, centre fraction, method, seed, prior and the sampler's full configuration with its defaults) and
their hash (``settings_hash``), which is the row's key: a rerun skips exactly the rows whose settings hash is
already in the CSV, so a changed setting (e.g. ``[steps]``) gives new rows, and the rows of the old settings stay
in the file (nothing is lost) but are not plotted. A torn last line (a power cut mid-write), a malformed or a
duplicated row is detected when the sweep starts, reported on stderr, moved to ``<out>.rejected`` and
recomputed. Config keys are checked: a misspelled key is refused with the closest valid name, every value has
its type and range checked.

The number of runs is the product of the list lengths (files x slices x masks x accelerations x methods x seeds);
it is counted from the config before anything is expanded, and a config that asks for more than ``max_runs``
(default ``MAX_RUNS`` = 100000: at a second a run, more than a day) is refused in one line naming the count and the
cap. ``max_runs`` raises the cap up to ``MAX_RUNS_LIMIT`` (10^7), and the expanded rows must fit the memory budget
(``recon.memory``). A sweep states its count when it starts (runs in all, already in the CSV, to run).
"""
from __future__ import annotations

import csv
import collections
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from operators.checks import check_choice, check_int, check_keys, check_real, closest
from recon import memory
from recon.data import results as io
from recon.pipelines.settings import MAX_SEED, check_preset, check_prior, check_steps
from recon.atomic import protected
from recon.priors import bundled

RUN_FIELDS = ["source", "slice", "mask", "acceleration", "method", "seed", "center_fraction", "steps", "prior"]
RESULT_FIELDS = ["actual_acceleration", "psnr", "ssim", "nmse", "nfe", "seconds"]
FIELDS = RUN_FIELDS + RESULT_FIELDS + ["settings_hash", "settings"]
FLOATS = ("acceleration", "center_fraction", "actual_acceleration", "psnr", "ssim", "nmse", "seconds")
INTS = ("slice", "seed", "nfe")
KEYS = {"out": "a path ending in .csv", "prior": "a prior name or checkpoint path",
        "masks": "a list of mask names", "accelerations": "a list of numbers >= 1",
        "methods": "a list of method names", "seeds": "a list of integers >= 0",
        "center_fraction": "a number in (0, 1)", "files": "a list of fastMRI files",
        "slices": "a range 'a:b' (or one index)", "steps": "a table method = steps",
        "max_runs": "an integer >= 1, the most runs the config may expand to",
        "preset": "a sampler preset applied to every sampler of the sweep (e.g. 'reference')"}
HELDOUT_SLICES = 10
MAX_RUNS = 100_000
MAX_RUNS_LIMIT = 10_000_000
# memory one expanded run holds while the sweep runs: its row and its settings hash measured 360 B a run with
# tracemalloc on 10^4 runs; 1 kB leaves room for the list of runs to do and the rows read back from the CSV
RUN_BYTES = 1024
DEFAULT_PRIOR = bundled.DEFAULT_MRI


def _names(p, key, value, choices) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"sweep config {p}: {key} must be a non-empty list, got {value!r}")
    for v in value:
        try:
            check_choice(key[:-1] if key.endswith("s") else key, v, choices)
        except ValueError as e:
            raise ValueError(f"sweep config {p}: {e}") from None
    _unique(p, key, value)
    return value


def _unique(p, key, values) -> None:
    dup = sorted({str(v) for v, n in collections.Counter(values).items() if n > 1})
    if dup:
        raise ValueError(f"sweep config {p}: {key} lists {', '.join(dup)} more than once")


def _slices(p, text) -> tuple:
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"sweep config {p}: slices must be a range 'a:b' or an index, got {text!r}")
    parts = str(text).split(":")
    try:
        a, b = (int(parts[0]), int(parts[0]) + 1) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise ValueError(f"sweep config {p}: slices must be a range 'a:b' of integers, got {text!r}") from None
    if len(parts) > 2 or not 0 <= a < b:
        raise ValueError(f"sweep config {p}: slices must be a range 'a:b' with 0 <= a < b, got {text!r}")
    return a, b


def load_config(path) -> dict:
    """The sweep config with every key and value checked (see the module docstring); defaults filled in."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from operators import masks
    from recon.pipelines.mri import CLASSICAL, MAX_ACCELERATION, methods

    known = methods()

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep config {p}: no such file")
    with open(p, "rb") as f:
        try:
            cfg = tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"sweep config {p}: not valid TOML ({str(e).splitlines()[0]})") from None
    check_keys(f"sweep config {p}", cfg, KEYS)
    missing = [k for k in ("out", "masks", "accelerations", "methods") if k not in cfg]
    if missing:
        raise ValueError(f"sweep config {p}: missing {missing} ({'; '.join(f'{k}: {KEYS[k]}' for k in missing)})")
    out = cfg["out"]
    if not isinstance(out, str) or not out.lower().endswith(".csv"):
        raise ValueError(f"sweep config {p}: out must be {KEYS['out']}, got {out!r}")
    try:
        check_prior(cfg.setdefault("prior", DEFAULT_PRIOR))
    except ValueError as e:
        raise ValueError(f"sweep config {p}: {e}") from None
    _names(p, "masks", cfg["masks"], masks.available())
    _names(p, "methods", cfg["methods"], known)
    preset = cfg.get("preset")
    if preset is not None:
        if not isinstance(preset, str):
            raise ValueError(f"sweep config {p}: preset must be {KEYS['preset']}, got {preset!r}")
        try:
            for m in cfg["methods"]:
                if m not in CLASSICAL:
                    check_preset(m, preset, CLASSICAL)
        except ValueError as e:
            raise ValueError(f"sweep config {p}: {e}") from None
    accs = cfg["accelerations"]
    if not isinstance(accs, list) or not accs:
        raise ValueError(f"sweep config {p}: accelerations must be a non-empty list, got {accs!r}")
    try:
        cfg["accelerations"] = [check_real("acceleration", a, minimum=1.0, maximum=MAX_ACCELERATION) for a in accs]
    except ValueError as e:
        raise ValueError(f"sweep config {p}: {e} (in accelerations)") from None
    _unique(p, "accelerations", cfg["accelerations"])
    seeds = cfg.setdefault("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"sweep config {p}: seeds must be a non-empty list of integers, got {seeds!r}")
    try:
        for s in seeds:
            check_int("seed", s, 0, MAX_SEED)
    except ValueError as e:
        raise ValueError(f"sweep config {p}: {e} (in seeds)") from None
    _unique(p, "seeds", seeds)
    if "center_fraction" in cfg:
        try:
            check_real("center_fraction", cfg["center_fraction"], above=0.0, below=1.0)
        except ValueError as e:
            raise ValueError(f"sweep config {p}: {e}") from None
    files = cfg.setdefault("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise ValueError(f"sweep config {p}: files must be a list of paths, got {files!r}")
    _unique(p, "files", files)
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"sweep config {p}: files: {f}: no such file")
    cfg["slice_range"] = _slices(p, cfg.get("slices", "0:1"))
    try:
        check_int("max_runs", cfg.setdefault("max_runs", MAX_RUNS), 1, MAX_RUNS_LIMIT)
    except ValueError as e:
        raise ValueError(f"sweep config {p}: {e}") from None
    check_runs(cfg, p)
    steps = cfg.setdefault("steps", {})
    if not isinstance(steps, dict):
        raise ValueError(f"sweep config {p}: steps must be {KEYS['steps']} (a [steps] table), got {steps!r}")
    for m, n in steps.items():
        if m not in known:
            raise ValueError(f"sweep config {p}: unknown method {m!r} in [steps]{closest(m, known)}")
        if m in CLASSICAL:
            raise ValueError(f"sweep config {p}: [steps] {m} = {n!r}: the classical method {m!r} takes no steps")
        try:
            check_steps(n, f"steps.{m}")
            if m in ("score-mri", "score-ald"):
                check_int(f"steps.{m}", n, 2)
        except ValueError as e:
            raise ValueError(f"sweep config {p}: {e}") from None
    return cfg


def count_runs(cfg: dict) -> int:
    """The number of runs of the config, counted without expanding it: files x slices x masks x accelerations x
    methods x seeds."""
    a, b = cfg.get("slice_range") or _slices("", cfg.get("slices", "0:1"))
    return math.prod((len(cfg.get("files") or ["heldout"]), b - a, len(cfg["masks"]), len(cfg["accelerations"]),
                      len(cfg["methods"]), len(cfg.get("seeds", [0]))))


def check_runs(cfg: dict, p="") -> int:
    """The number of runs; refused (one line naming the count and the cap) above ``max_runs`` or the memory
    budget."""
    n, cap = count_runs(cfg), cfg.get("max_runs", MAX_RUNS)
    if n > cap:
        a, b = cfg.get("slice_range") or _slices(p, cfg.get("slices", "0:1"))
        factors = (f"{len(cfg.get('files') or ['heldout'])} source(s) x {b - a} slice(s) x {len(cfg['masks'])} "
                   f"mask(s) x {len(cfg['accelerations'])} acceleration(s) x {len(cfg['methods'])} method(s) x "
                   f"{len(cfg.get('seeds', [0]))} seed(s)")
        raise ValueError(f"sweep config {p}: expands to {n:,} runs ({factors}), more than max_runs = {cap:,}; narrow "
                         f"the lists, or raise max_runs (at most {MAX_RUNS_LIMIT:,})")
    memory.check_allocation(n * RUN_BYTES, f"sweep config {p}: {n:,} runs")
    return n


def rows_of(cfg: dict) -> list:
    """The runs of the config (source, slice, mask, acceleration, method, seed); their number checked
    (``check_runs``) before they are expanded, slices checked per source and each file's slice against the memory
    budget."""
    from recon.pipelines.mri import refuse_noncartesian
    from recon.data import load_fastmri

    check_runs(cfg)
    a, b = cfg.get("slice_range") or _slices("", cfg.get("slices", "0:1"))
    sources = cfg.get("files") or ["heldout"]
    for src in sources:
        if src != "heldout":
            refuse_noncartesian(src, "recon sweep")
        vol = None if src == "heldout" else load_fastmri(src)
        n = HELDOUT_SLICES if vol is None else vol.num_slices
        if b > n:
            raise IndexError(f"sweep slices {a}:{b} reach outside {src} ({n} slices, valid 0..{n - 1})")
        if vol is not None:
            vol.check_memory()
    return [dict(source=str(src), slice=s, mask=m, acceleration=float(acc), method=meth, seed=int(seed))
            for src, s, m, acc, meth, seed in itertools.product(
                sources, range(a, b), cfg["masks"], cfg["accelerations"], cfg["methods"], cfg.get("seeds", [0]))]


# --- the settings of a row and its key ------------------------------------------------------------------------
def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _mri_settings(row: dict, cfg: dict):
    from recon.pipelines.mri import CLASSICAL, MRISettings
    return MRISettings(method=row["method"], mask=row["mask"], acceleration=row["acceleration"],
                       center_fraction=_center_fraction(row, cfg), samples=1, seed=row["seed"],
                       steps=cfg.get("steps", {}).get(row["method"]), prior=cfg.get("prior", DEFAULT_PRIOR),
                       preset=None if row["method"] in CLASSICAL else cfg.get("preset"))


def _center_fraction(row: dict, cfg: dict) -> float:
    """The centre fraction a row runs with: the config's, else 0.12 on the held-out slices (ESPIRiT's calibration
    region, ``recon.problems``) and fastMRI's 0.08 on files."""
    return float(cfg.get("center_fraction", 0.12 if row["source"] == "heldout" else 0.08))


def resolved_settings(row: dict, cfg: dict, _digests: dict = {}) -> dict:  # noqa: B006 - a per-process cache
    """Everything that determines a row's result, defaults filled in: the run, the centre fraction, the prior
    (its name, and the content digest of a checkpoint file) and the sampler's whole configuration."""
    from recon.pipelines.mri import CLASSICAL, sampler_for

    out = dict(row, center_fraction=_center_fraction(row, cfg))
    if row["method"] in CLASSICAL:
        out.update(prior="", sampler={})
        return out
    prior = cfg.get("prior", DEFAULT_PRIOR)
    if Path(prior).is_file():
        if prior not in _digests:
            _digests[prior] = _file_digest(prior)
        prior = f"{prior}#{_digests[prior]}"
    sampler = sampler_for(_mri_settings(row, cfg))
    conf = {k: v for k, v in sorted(vars(sampler).items())
            if k != "progress" and not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str)))}
    out.update(prior=prior, sampler={"name": sampler.name, **conf})
    return out


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:16]


def _canonical(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


# --- reading a sweep CSV --------------------------------------------------------------------------------------
def _row_problem(r: dict):
    """Why a parsed row is not a complete, consistent result (None when it is)."""
    for k in FIELDS:
        if r.get(k) is None:
            return f"missing {k!r}"
    for k in FLOATS:
        try:
            v = float(r[k])
        except ValueError:
            return f"{k} is not a number ({r[k]!r})"
        if not math.isfinite(v):
            return f"{k} is not finite ({r[k]!r})"
    for k in INTS:
        try:
            int(r[k])
        except ValueError:
            return f"{k} is not an integer ({r[k]!r})"
    try:
        settings = json.loads(r["settings"])
    except ValueError:
        return "its settings are not valid JSON"
    if not isinstance(settings, dict) or settings_hash(settings) != r["settings_hash"]:
        return "its settings do not match its settings_hash"
    return None


def read_rows(path) -> tuple:
    """(rows, rejected): the complete rows of a sweep CSV, each once, and (line number, reason, text) of every
    torn, malformed or duplicated line. A file of another, older layout (no settings columns) keeps its rows,
    as rows that match no settings. Raises ValueError for a file that is not a sweep CSV."""
    path = Path(path)
    if not path.exists():
        return [], []
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.strip():
        return [], []
    lines = text.split("\n")
    torn = lines.pop() if lines[-1] != "" else None
    if lines and lines[-1] == "":
        lines.pop()
    header = next(csv.reader([lines[0]])) if lines else []
    legacy = header != FIELDS
    if legacy and (not set(header) <= set(FIELDS) or "psnr" not in header):
        raise ValueError(f"{path} is not a sweep CSV (columns {header}); choose another out")
    rows, rejected, seen = [], [], set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = next(csv.reader([line]), [])
        if len(values) != len(header):
            rejected.append((n, f"{len(values)} fields instead of {len(header)}", line))
            continue
        r = dict(zip(header, values))
        if legacy or (r.get("settings_hash") == "" and r.get("settings") == ""):
            rows.append({k: r.get(k, "") for k in FIELDS})  # a row of the older layout: kept, matches nothing
            continue
        problem = _row_problem(r)
        if problem:
            rejected.append((n, problem, line))
        elif r["settings_hash"] in seen:
            rejected.append((n, "a duplicate of an earlier row", line))
        else:
            seen.add(r["settings_hash"])
            rows.append(r)
    if torn is not None and torn.strip():
        if len(lines) <= 1 and not header:
            raise ValueError(f"{path} is not a sweep CSV; choose another out")
        rejected.append((len(lines) + 1, "torn (no line end: the write was interrupted)", torn))
    return rows, rejected


def repair(path) -> list:
    """Rewrite ``path`` (atomically) without its rejected lines, which are reported on stderr and appended to
    ``<path>.rejected``; returns the good rows."""
    path = Path(path)
    rows, rejected = read_rows(path)
    legacy = path.exists() and path.read_text(errors="replace").split("\n", 1)[0] != ",".join(FIELDS)
    if legacy and rows:
        print(f"sweep: {path} has {len(rows)} row(s) of an older layout without settings; kept, not reused",
              file=sys.stderr)
    if rejected or legacy:
        for n, why, line in rejected:
            print(f"sweep: {path} line {n} is {why}; moved to {path.name}.rejected, it will be recomputed",
                  file=sys.stderr)
        if rejected:
            with open(path.with_name(path.name + ".rejected"), "a") as f:
                f.writelines(line + "\n" for _, _, line in rejected)
        io.write_csv(path, rows, FIELDS)
    return rows


# --- running --------------------------------------------------------------------------------------------------
def run_one(row: dict, cfg: dict, prior) -> dict:
    from recon import metrics
    from recon.pipelines.mri import CLASSICAL, check_reachable, reconstruct_slice, sampler_for
    from recon.data import center_crop, load_fastmri
    from recon.problems import multicoil_problem

    settings = _mri_settings(row, cfg)
    resolved = resolved_settings(row, cfg)
    t = time.time()
    if row["source"] == "heldout":
        check_reachable(row["mask"], row["acceleration"], settings.center_fraction, (128, 128))
        p = multicoil_problem(slice_index=row["slice"], mask=row["mask"], acceleration=row["acceleration"],
                              center_fraction=settings.center_fraction, seed=row["seed"])
        t = time.time()
        if row["method"] in CLASSICAL:
            x = CLASSICAL[row["method"]](p.y, p.A)
        else:
            x = sampler_for(settings, p.A, prior)(p.y, p.A, prior, generator=torch.Generator().manual_seed(row["seed"]))[0]
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
    sampler = resolved["sampler"]
    return dict(row, center_fraction=resolved["center_fraction"], prior=resolved["prior"],
                steps=sampler.get("steps", sampler.get("n_levels", "")),
                actual_acceleration=round(actual, 3), psnr=round(metrics.psnr(gt, x.abs(), maxval), 4),
                ssim=round(metrics.ssim(gt, x.abs(), maxval), 5), nmse=round(metrics.nmse(gt, x.abs()), 6),
                nfe=nfe, seconds=round(sec, 2), settings_hash=settings_hash(resolved), settings=_canonical(resolved))


def _nfe(settings) -> int:
    from recon.pipelines.mri import sampler_for
    return sampler_for(settings).nfe()


def run(config_path, progress: bool = True) -> Path:
    """Run the sweep of ``config_path`` (its config file, data files and prior are protected from writes)."""
    cfg = load_config(config_path)
    with protected(config_path, *cfg["files"], cfg["prior"]):
        return _run(config_path, cfg, progress)


def _run(config_path, cfg: dict, progress: bool) -> Path:
    import torch.distributed as dist
    from tqdm import tqdm

    from recon import priors
    from recon.pipelines.mri import CLASSICAL

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    out = Path(cfg["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    io.check_output(out, sources=[config_path, *cfg["files"]], suffixes=(".csv",), option="sweep out")
    io.check_output(out.with_suffix(".png"), sources=[config_path, *cfg["files"]], option="sweep figure")
    part = out.with_name(out.name + f".rank{rank}") if world > 1 else out
    all_rows = rows_of(cfg)
    hashes = [settings_hash(resolved_settings(r, cfg)) for r in all_rows]
    if rank == 0:
        repair(out)
    if world > 1:
        dist.barrier()
    done = {r["settings_hash"] for r in read_rows(out)[0]}
    if part != out:
        done |= {r["settings_hash"] for r in repair(part)}
    rows = [r for i, (r, h) in enumerate(zip(all_rows, hashes)) if i % world == rank and h not in done]
    if progress and rank == 0:
        todo = sum(h not in done for h in hashes)
        print(f"sweep: {len(all_rows)} run{'s' if len(all_rows) != 1 else ''}, {len(all_rows) - todo} already in "
              f"{out}, {todo} to run", flush=True)
    needs_prior = any(r["method"] not in CLASSICAL for r in rows)
    prior = priors.load(cfg["prior"]) if needs_prior else None
    if not part.exists() or part.stat().st_size == 0:
        io.write_csv(part, [], FIELDS)
    for row in tqdm(rows, disable=not progress or rank != 0, desc="sweep"):
        io.append_csv_row(part, run_one(row, cfg, prior), FIELDS)
    if world > 1:
        dist.barrier()
        if rank == 0:
            _merge(out, [out.with_name(out.name + f".rank{r}") for r in range(world)])
        dist.barrier()
    if rank == 0:
        plot(out, set(hashes))
    return out


def _merge(out: Path, parts) -> None:
    rows, seen = [], set()
    for p in [out] + list(parts):
        for r in read_rows(p)[0]:
            key = r["settings_hash"] or _canonical(r)
            if key not in seen:
                seen.add(key)
                rows.append(r)
    io.write_csv(out, rows, FIELDS)
    for p in parts:
        if p.exists() and p != out:
            p.unlink()


def plot(csv_path, hashes=None) -> Path:
    """PSNR and SSIM against acceleration, one line per (mask, method), error bars over seeds and slices; with
    ``hashes``, only the rows of those settings (the current config's)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from recon import plots

    groups = {}
    for r in read_rows(csv_path)[0]:
        if hashes is None or r["settings_hash"] in hashes:
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
