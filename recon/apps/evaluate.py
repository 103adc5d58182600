"""Score a folder of reconstructions as the fastMRI leaderboard does (``recon evaluate``).

For every target file (``*.h5`` in ``--target``, sorted by name) with a prediction of the same name: the
reference is ``reconstruction_rss`` (multicoil) or ``reconstruction_esc`` (singlecoil; without ``--challenge``
the one the file holds), the prediction is its ``reconstruction``; both are centre-cropped to (W, W), W the
target's width, and NMSE, PSNR and SSIM are computed over the volume with maxval = the target volume's maximum
(SSIM averaged over slices): fastMRI's ``evaluate.py`` exactly (``recon.metrics`` equals it). The table holds the
mean over volumes (and, with ``by="acquisition"``, per acquisition). ``--acquisition`` keeps the volumes whose
``acquisition`` attribute matches. A target without a prediction, or one that cannot be scored, is listed by name
and makes the exit status 1; the others are still scored (a target that is all zero cannot be: every metric
divides by it).

A prediction equal to its target has PSNR infinity (fastMRI's ``evaluate.py`` reports ``inf``), which neither JSON
nor a finite-valued CSV holds: such a volume is scored with ``perfect_match`` true, NMSE 0, SSIM 1 and ``psnr``
null in the JSON (an empty cell in the CSV), and a mean over volumes that includes one has ``psnr`` null too, with
the count in ``perfect_matches``; the printed table shows ``inf``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from recon import metrics
from recon.data import results as io
from recon.data import center_crop

KEYS = {"multicoil": "reconstruction_rss", "singlecoil": "reconstruction_esc"}
NAMES = ("nmse", "psnr", "ssim")
FIELDS = ("file", "acquisition", "slices", *NAMES, "perfect_match")


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v) if v is not None else ""


def score_volume(target_file: Path, prediction_file: Path, challenge: Optional[str] = None) -> dict:
    """One row: file, acquisition, slices and the three metrics of the volume."""
    with h5py.File(target_file, "r") as t:
        key = KEYS[challenge] if challenge else next((k for k in KEYS.values() if k in t), None)
        if key is None or key not in t:
            raise KeyError(f"{target_file.name} has no {key or ' or '.join(KEYS.values())}")
        gt = t[key][()]
        acq = _text(t.attrs.get("acquisition"))
    with h5py.File(prediction_file, "r") as p:
        if "reconstruction" not in p:
            raise KeyError(f"{prediction_file} has no 'reconstruction' dataset")
        pred = p["reconstruction"][()]
    if gt.ndim != 3 or pred.ndim != 3 or gt.shape[0] != pred.shape[0]:
        raise ValueError(f"{prediction_file.name}: reconstruction {pred.shape} does not match the target {gt.shape}")
    w = gt.shape[-1]
    gt = center_crop(gt, (w, w))
    pred = center_crop(pred, (w, w))
    if not np.any(gt):
        raise ValueError(f"{target_file.name}: {key} is all zero, so there is nothing to score against")
    row = {"file": target_file.name, "acquisition": acq, "slices": int(gt.shape[0])}
    if np.array_equal(gt.astype(np.float64), pred.astype(np.float64)):  # MSE 0: PSNR infinite (module docstring)
        return {**row, "nmse": 0.0, "psnr": None, "ssim": metrics.ssim(gt, pred), "perfect_match": True}
    return {**row, **metrics.evaluate(gt, pred), "perfect_match": False}


def _means(rows) -> dict:
    perfect = sum(r["perfect_match"] for r in rows)
    means = {"volumes": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in ("nmse", "ssim")},
             "psnr": None if perfect else float(np.mean([r["psnr"] for r in rows]))}
    return {**{k: means[k] for k in ("volumes", *NAMES)}, "perfect_matches": perfect}


def evaluate(target, predictions, challenge=None, acquisition=None, by=None) -> dict:
    """Per-volume rows, the mean over volumes, the means per group (``by``) and the targets not scored."""
    if challenge is not None and challenge not in KEYS:
        raise ValueError(f"--challenge must be one of {', '.join(KEYS)}, got {challenge!r}")
    if by not in (None, "acquisition"):
        raise ValueError(f"--by must be 'acquisition', got {by!r}")
    target, predictions = Path(target), Path(predictions)
    for option, d in (("--target", target), ("--predictions", predictions)):
        if not d.is_dir():
            raise NotADirectoryError(f"{option} {d} is not a folder")
    files = sorted(f for f in target.glob("*.h5") if f.is_file())
    if not files:
        raise FileNotFoundError(f"--target {target} holds no .h5 files")
    rows, missing = [], []
    for f in files:
        try:
            with h5py.File(f, "r") as t:
                if acquisition and _text(t.attrs.get("acquisition")) != acquisition:
                    continue
            pred = predictions / f.name
            if not pred.exists():
                missing.append({"file": f.name, "reason": "no prediction"})
                continue
            rows.append(score_volume(f, pred, challenge))
        except Exception as e:  # noqa: BLE001 - one bad volume is reported by name, the others are scored
            missing.append({"file": f.name, "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    if not rows:
        raise ValueError(f"no volume of {target} could be scored against {predictions}"
                         + (f" (first: {missing[0]['file']}: {missing[0]['reason']})" if missing else
                            f" (no volume with acquisition {acquisition})" if acquisition else ""))
    result = {"target": str(target), "predictions": str(predictions), "challenge": challenge,
              "acquisition": acquisition, "mean": _means(rows), "volumes": rows, "not_scored": missing}
    if by:
        groups = sorted({r[by] for r in rows})
        result["by"] = {by: {g: _means([r for r in rows if r[by] == g]) for g in groups}}
    return result


def table(result: dict) -> str:
    """The means as a text table (one line per group with ``by``, then all volumes)."""
    lines = [f"{'':<16} {'volumes':>7} {'NMSE':>9} {'PSNR':>8} {'SSIM':>7}"]
    groups = [(g, m) for by in result.get("by", {}).values() for g, m in by.items()] + [("all", result["mean"])]
    for name, m in groups:
        psnr = "inf" if m["psnr"] is None else f"{m['psnr']:.2f}"
        note = f"  ({m['perfect_matches']} perfect match{'es' if m['perfect_matches'] != 1 else ''})" \
            if m["perfect_matches"] else ""
        lines.append(f"{name or '(none)':<16} {m['volumes']:>7} {m['nmse']:>9.4f} {psnr:>8} {m['ssim']:>7.4f}{note}")
    return "\n".join(lines)


def command(target, predictions, challenge=None, acquisition=None, by=None, out=None) -> int:
    """``recon evaluate``: print the table, write OUT.csv (per volume) and OUT.json (everything); default OUT is
    ``<predictions>/evaluation``."""
    stem = Path(out) if out else Path(predictions) / "evaluation"
    csv_path, json_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")
    for p in (csv_path, json_path):
        io.check_output(p, option="--out")
    result = evaluate(target, predictions, challenge, acquisition, by)
    print(table(result))
    io.write_csv(csv_path, result["volumes"], FIELDS)
    io.write_json(json_path, result)
    print(f"wrote {csv_path} and {json_path}")
    for m in result["not_scored"]:
        print(f"recon: not scored: {m['file']}: {m['reason']}", file=sys.stderr)
    return 1 if result["not_scored"] else 0
