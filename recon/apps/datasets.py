"""Datasets, not slices: folders of fastMRI files into the challenge's submission layout (``recon reconstruct
PATH... --out DIR``), sharded across torchrun ranks.

Inputs are files, folders (their ``*.h5``, not recursive) and globs, sorted by name; ``--challenge`` keeps the
single- or multi-coil files, ``--acquisition`` those whose ``acquisition`` attribute matches. What a folder or a
glob finds in the output folder, or any file a dataset run wrote (``is_output``: the ``settings_hash`` attribute
and no ``kspace``), is not an input, so a run whose ``--out`` lies inside its input folder can be run again. A
non-Cartesian file fails by name (the submission layout is for Cartesian fastMRI files; ``recon reconstruct FILE``
reconstructs it alone), as does a file whose mask is not 0/1 or whose k-space is all zero
(``recon.pipelines.mri.check_cartesian``). Each volume is
written to ``DIR/<its name>`` atomically (``recon.data.results``) in the fastMRI submission layout: the dataset
``reconstruction``, float32 (slices, h, w), the magnitude of the posterior mean at the header's recon matrix; the
toolkit's samples, mean, std, mask and maps only with ``extras``; ``slices`` (default all) selects the same
slices of every volume (a volume it does not fit fails by name). The file's attributes record the
settings and their hash: an output whose hash matches (same settings, slices and extras; the device is not part
of it) is skipped, so a run that was stopped resumes where it was. A volume that fails (a corrupt file, a
non-finite result) is reported by name with its reason and the others go on; the exit status is then 1 (2
stays the one-line error of a command that could not run at all).

Under torchrun (``WORLD_SIZE`` > 1, or ``distributed=True``) the volumes are balanced by slice count over the
ranks (greedy: the largest volume first, to the least loaded rank, ties to the lowest rank; deterministic), the
ranks talk over gloo (only small Python objects are exchanged, so gloo serves GPUs too), a CUDA device becomes
``cuda:LOCAL_RANK``, every rank writes only its own volumes and rank 0 writes the summary
``DIR/recon_summary.json``. Every slice is seeded with ``seed + slice index`` whatever rank runs it, so the
outputs do not depend on the number of ranks (on the CPU: at the same number of threads per process; torchrun
sets ``OMP_NUM_THREADS=1``).

``batch_slices`` is how many slices a rank reads and works through at once (k-space read in one access, one
progress step). The samplers are called once per slice, so it bounds memory and I/O granularity; it does not
put several slices into one network batch.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from operators.checks import check_int
from recon.data import results as io
from recon.pipelines.mri import CLASSICAL, MRISettings, check_cartesian, check_recon_matrix, reconstruct_slice
from recon.pipelines.settings import SliceSpec, select_slices
from recon.atomic import protected
from recon.data import load_fastmri, noncartesian_io

CHALLENGES = ("singlecoil", "multicoil")
SUMMARY = "recon_summary.json"
FORMAT = 1  # version of the submission layout written here (part of the settings hash)
FAILED_STATUS = 1


def is_dataset_run(paths: Sequence[str], out, extra_options: bool = False) -> bool:
    """Whether ``recon reconstruct PATH... --out OUT`` is a dataset run: several inputs, a folder or a glob as
    input, an output ending in '/', or a dataset-only option. One file with ``--out`` an existing folder stays
    the single-file command (which refuses a folder as its output file)."""
    if extra_options or len(paths) != 1:
        return True
    p = str(paths[0])
    if Path(p).is_dir() or (not Path(p).exists() and glob.has_magic(p)):
        return True
    return out is not None and str(out).endswith(("/", os.sep))


def is_output(path) -> bool:
    """Whether ``path`` is a file a dataset run wrote (the ``settings_hash`` attribute, no ``kspace``)."""
    try:
        with h5py.File(path, "r") as f:
            return "settings_hash" in f.attrs and "kspace" not in f
    except (OSError, KeyError, ValueError):
        return False


def collect(paths: Sequence[str], exclude=None) -> list[Path]:
    """The fastMRI files named by ``paths`` (files, folders: their ``*.h5``, globs), sorted by name, each once;
    a name that matches nothing is an error. What a folder or a glob finds in the folder ``exclude`` (the output
    folder) or that a dataset run wrote (``is_output``) is left out; a file named explicitly is kept."""
    found, left_out = [], 0
    skip = Path(exclude).resolve() if exclude is not None else None

    def expanded(files):
        nonlocal left_out
        kept = [q for q in files if q.resolve().parent != skip and not is_output(q)]
        left_out += len(files) - len(kept)
        return kept

    for p in paths:
        path = Path(p)
        if path.is_dir():
            found += expanded(sorted(q for q in path.glob("*.h5") if q.is_file()))
        elif path.exists():
            found.append(path)
        elif glob.has_magic(str(p)):
            hits = sorted(Path(q) for q in glob.glob(str(p)))
            if not hits:
                raise FileNotFoundError(f"input {p!r} matches no file")
            found += expanded([q for q in hits if q.is_file()] +
                              [r for q in hits if q.is_dir() for r in sorted(q.glob("*.h5"))])
        else:
            raise FileNotFoundError(f"input {p}: no such file or folder")
    out, names, seen = [], {}, set()
    for f in found:
        if f.resolve() in seen:
            continue
        seen.add(f.resolve())
        if f.name in names:
            raise ValueError(f"two inputs have the same name {f.name} ({names[f.name]} and {f}); the submission "
                             "layout names each output after its input")
        names[f.name] = f
        out.append(f)
    if not out:
        raise FileNotFoundError(f"no .h5 files in {', '.join(map(str, paths))}" +
                                (f" ({left_out} outputs of dataset runs left out)" if left_out else ""))
    return sorted(out, key=lambda f: f.name)


def shard(weights: Sequence[int], world: int) -> list[list[int]]:
    """Indices of ``weights`` (slice counts) per rank: largest first to the least loaded rank (ties: the lower
    rank; equal weights in input order), each rank's list in input order. Deterministic."""
    load, parts = [0] * world, [[] for _ in range(world)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        parts[r].append(i)
        load[r] += max(int(weights[i]), 1)
    return [sorted(p) for p in parts]


def settings_hash(settings: MRISettings, slices: SliceSpec, extras: bool) -> str:
    """What decides an output's content: the settings (without the device), the slice selection, extras."""
    s = {k: v for k, v in asdict(settings).items() if k != "device"}
    text = json.dumps({"settings": s, "slices": None if slices is None else str(slices), "extras": bool(extras),
                       "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_done(out: Path, digest: str, n_slices: int) -> bool:
    """``out`` is a complete output of these settings: readable, the hash matches, all slices there."""
    try:
        with h5py.File(out, "r") as f:
            return (f.attrs.get("settings_hash") == digest and "reconstruction" in f
                    and f["reconstruction"].shape[0] == n_slices)
    except (OSError, KeyError, ValueError):
        return False


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0].strip()}" if msg else type(e).__name__


def _volume(path: Path, slices: SliceSpec, challenge, acquisition) -> dict:
    """What a rank needs to plan a volume: its slices, or why it is filtered out or failed."""
    item = {"name": path.name, "path": str(path), "slices": 0}
    try:
        if noncartesian_io.is_noncartesian(path):
            raise ValueError(f"{path.name} holds non-Cartesian samples; a dataset run (the fastMRI submission "
                             f"layout) supports Cartesian fastMRI files only (recon reconstruct {path} --out FILE.h5 "
                             f"reconstructs it alone)")
        vol = load_fastmri(path)
        kind = "multicoil" if vol.is_multicoil else "singlecoil"
        acq = vol.attrs.get("acquisition")
        if challenge and kind != challenge:
            return {**item, "status": "filtered", "reason": f"{kind}, not {challenge}"}
        if acquisition and acq != acquisition:
            return {**item, "status": "filtered", "reason": f"acquisition {acq}, not {acquisition}"}
        idx = select_slices(slices, vol.num_slices)
        return {**item, "status": "todo", "slices": len(idx), "index": idx}
    except Exception as e:  # noqa: BLE001 - a bad file is reported by name, the others go on
        return {**item, "status": "failed", "reason": _reason(e)}


def reconstruct_volume(path: Path, idx: list[int], settings: MRISettings, prior, extras: bool, batch: int = 1,
                       step=lambda n: None) -> tuple[dict, dict]:
    """The arrays (submission layout, plus the extras) and attributes of one volume; ``step(n)`` after every
    batch of n slices."""
    vol = load_fastmri(path)
    check_recon_matrix(path, vol)
    check_cartesian(path, vol, idx)
    limits = vol.header.encoding_limits if vol.header else None
    samples, masks_, maps, protocol = [], [], [], None
    for b in range(0, len(idx), batch):
        chunk = idx[b:b + batch]
        contiguous = chunk == list(range(chunk[0], chunk[-1] + 1))
        ks = vol.kspace(range(chunk[0], chunk[-1] + 1)) if contiguous else torch.stack([vol.kspace(i) for i in chunk])
        for i, k in zip(chunk, ks):
            r = reconstruct_slice(k, vol.mask, settings, prior, settings.seed + i, recon_size=vol.recon_size[:2],
                                  limits=limits, encoded_width=vol.encoding_size[1])
            protocol = r.protocol
            samples.append(r.samples.cpu())
            if extras:
                masks_.append(r.mask.cpu().expand(r.maps.shape[-2:]))
                maps.append(r.maps.cpu())
        step(len(chunk))
    s = torch.stack(samples)
    mean = s.mean(1)
    arrays = {"reconstruction": mean.abs().numpy().astype(np.float32)}
    if extras:
        std = (s - mean[:, None]).abs().square().mean(1).sqrt()
        arrays.update({"samples": s.numpy().astype(np.complex64), "mean": mean.numpy().astype(np.complex64),
                       "std": std.numpy().astype(np.float32),
                       "mask": torch.stack(masks_).numpy().astype(np.float32),
                       "maps": torch.stack(maps).numpy().astype(np.complex64)})
    attrs = {"source": path.name, "settings": json.dumps(asdict(settings)), "protocol_used": protocol or "",
             "slices": np.asarray(idx, dtype=np.int64)}
    for key in ("acquisition", "patient_id"):
        if isinstance(vol.attrs.get(key), str):
            attrs[key] = vol.attrs[key]
    return arrays, attrs


def _world(distributed: bool) -> tuple[int, int, int]:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if distributed and "RANK" not in os.environ:
        raise ValueError("--distributed needs the torchrun environment (RANK, WORLD_SIZE); start it with "
                         "torchrun --nproc_per_node N -m recon reconstruct ...")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(days=7))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def run(paths: Sequence[str], out_dir, settings: MRISettings, slices: SliceSpec = None, challenge=None,
        acquisition=None, extras: bool = False, batch_slices: int = 1, distributed: bool = False,
        progress: bool = True) -> dict:
    """Reconstruct every volume of ``paths`` into ``out_dir``; returns the summary (on every rank)."""
    import torch.distributed as dist
    from tqdm import tqdm

    if challenge is not None and challenge not in CHALLENGES:
        raise ValueError(f"--challenge must be one of {', '.join(CHALLENGES)}, got {challenge!r}")
    if acquisition is not None and (not isinstance(acquisition, str) or not acquisition):
        raise ValueError(f"--acquisition must be an acquisition name such as CORPD_FBK or AXT2, got {acquisition!r}")
    check_int("--batch-slices", batch_slices, 1, 10_000)
    settings.check()
    out_dir = Path(out_dir)
    files = collect(paths, exclude=out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; a dataset run writes one file per volume into a folder")
    rank, world, local = _world(distributed)
    if settings.device.startswith("cuda") and world > 1:
        settings.device = f"cuda:{local}"
        settings.check()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    digest = settings_hash(settings, slices, extras)
    t0 = time.time()
    with protected(*files):
        for f in files:
            io.check_output(out_dir / f.name, sources=files, option="--out")
        items = [_volume(f, slices, challenge, acquisition) for f in files]
        for it in items:
            if it["status"] == "todo" and is_done(out_dir / it["name"], digest, it["slices"]):
                it["status"] = "skipped"
                it["reason"] = "output exists with the same settings"
        planned = [i for i, it in enumerate(items) if it["status"] in ("todo", "failed")]
        mine = [planned[j] for j in shard([items[i]["slices"] for i in planned], world)[rank]]
        todo = [i for i in mine if items[i]["status"] == "todo"]
        records = [items[i] for i in mine if items[i]["status"] == "failed"]
        prior = None
        if todo and settings.method not in CLASSICAL:
            prior = settings.load_prior()
        total = sum(items[i]["slices"] for i in todo)
        with tqdm(total=total, unit="slice", disable=not progress, position=rank, leave=True,
                  desc=f"rank {rank}" if world > 1 else "reconstruct", dynamic_ncols=True) as bar:
            for n, i in enumerate(todo):
                it = items[i]
                bar.set_postfix_str(f"volume {n + 1}/{len(todo)} {it['name']}")
                start = time.time()
                try:
                    arrays, attrs = reconstruct_volume(Path(it["path"]), it["index"], settings, prior, extras,
                                                       batch_slices, step=bar.update)
                    attrs.update(settings_hash=digest, settings_hash_fields="settings without device, slices, "
                                 "extras, format")
                    io.write_h5(out_dir / it["name"], arrays, attrs)
                    rec = {**it, "status": "done"}
                except Exception as e:  # noqa: BLE001 - reported by name; the other volumes go on
                    rec = {**it, "status": "failed", "reason": _reason(e)}
                rec["seconds"] = round(time.time() - start, 2)
                records.append(rec)
    for r in records:
        r["rank"] = rank
    gathered = [None] * world
    if world > 1:
        dist.all_gather_object(gathered, records)
    else:
        gathered = [records]
    by_name = {r["name"]: r for part in gathered for r in part}
    volumes = []
    for it in items:
        r = by_name.get(it["name"], it)
        volumes.append({k: r[k] for k in ("name", "status", "slices", "reason", "rank", "seconds") if k in r})
    summary = {"out": str(out_dir), "world_size": world, "settings": asdict(settings), "settings_hash": digest,
               "seconds": round(time.time() - t0, 2),
               "counts": {s: sum(v["status"] == s for v in volumes) for s in ("done", "skipped", "filtered", "failed")},
               "volumes": volumes}
    if rank == 0:
        io.write_json(out_dir / SUMMARY, summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary["rank"] = rank
    return summary


def command(paths, out_dir, settings: MRISettings, slices: SliceSpec = None, challenge=None, acquisition=None,
            extras: bool = False, batch_slices: int = 1, distributed: bool = False, progress: bool = True) -> int:
    """``recon reconstruct PATH... --out DIR``: the summary (rank 0); exit status 1 when a volume failed."""
    import sys

    s = run(paths, out_dir, settings, slices, challenge, acquisition, extras, batch_slices, distributed, progress)
    failed = [v for v in s["volumes"] if v["status"] == "failed"]
    if s["rank"] == 0:
        c = s["counts"]
        print(f"{c['done']} done, {c['skipped']} skipped (already there), {c['filtered']} filtered out, "
              f"{c['failed']} failed, of {len(s['volumes'])} volumes in {s['seconds']:.1f} s "
              f"({s['world_size']} rank(s)); summary {Path(out_dir) / SUMMARY}")
        for v in failed:
            print(f"recon: failed: {v['name']}: {v['reason']}", file=sys.stderr)
    return FAILED_STATUS if failed else 0
