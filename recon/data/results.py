"""Writing results, atomically: HDF5, JSON, CSV and PNG, never of non-finite values, never onto an input.

Every writer here goes through ``recon.atomic.atomic_path``: the file is written under a temporary name next to
the target and renamed onto it when complete. A reader sees the old file or the new one, never a torn write; a
writer that fails leaves the target as it was and no temporary file behind.

Every writer refuses, before it writes anything, a result that holds NaN or Inf (an array, an attribute, a number
inside a JSON value, a CSV cell, a figure panel): the error names the file and the entry, so a failed stage is
an error, never a file. ``check_output`` is the early check a command makes before it computes: the output path
is writable and is none of the command's inputs (resolved paths and inodes) nor another of its outputs. A write
that the file system refuses (a full disk: ENOSPC) is one error naming the file and the cause
(``recon.atomic.write_failure``).
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import h5py
import numpy as np
import torch

from recon.atomic import atomic_path, check_not_input, write_failure, write_text

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".webp")


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out, source=None, sources: Iterable = (), others: Iterable = (), suffixes=None,
                 option: str = "output", need_folder: bool = True) -> Path:
    """``out`` can be written: not a folder, in a folder that exists (unless ``need_folder`` is False: figures
    create theirs), none of the input files ``source`` / ``sources`` (resolved path or inode), none of the other
    outputs ``others``, and with one of ``suffixes`` when given. ``option`` names the option in the errors."""
    if out is None or str(out) == "":
        raise ValueError(f"{option} path is empty")
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"{option} path {out} is a directory")
    if need_folder and not out.parent.is_dir():
        raise FileNotFoundError(f"{option} folder {out.parent} does not exist")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise ValueError(f"{option} path {out} must end in one of {', '.join(suffixes)}")
    for src in ([source] if source is not None else []) + [s for s in sources if s is not None]:
        if _same(out, Path(src)):
            raise ValueError(f"{option} path {out} is the input file {src}; choose another output path")
    for other in others:
        if other is not None and _same(out, Path(other)):
            raise ValueError(f"{option} path {out} is also another output ({other}); choose two different paths")
    check_not_input(out)
    return out


def check_figure_path(png, sources: Iterable = (), others: Iterable = (), option: str = "--png") -> Optional[Path]:
    """``check_output`` for a figure (a matplotlib format by suffix); None stays None."""
    if png is None:
        return None
    parent = Path(png).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{option} path {png}: {parent} is not a folder")
    return check_output(png, sources=sources, others=others, suffixes=FIGURE_SUFFIXES, option=option,
                        need_folder=False)


def _numpy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().resolve_conj().cpu().numpy()
    return v


def _bad_count(a) -> int:
    """Number of NaN/Inf entries of a numeric array (0 for non-float data)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _nonfinite_in(value) -> bool:
    """A NaN or Inf anywhere in a number, a sequence, a mapping, or the JSON text of one."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Number):
        return not math.isfinite(abs(value))
    if isinstance(value, (str, bytes)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text[:1] in "[{" and text[:1]:
            try:
                return _nonfinite_in(json.loads(text))
            except ValueError:
                return False
        return False
    if isinstance(value, Mapping):
        return any(_nonfinite_in(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_nonfinite_in(v) for v in value)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _bad_count(_numpy(value)) > 0
    return False


def check_finite_result(path, entries: Mapping) -> None:
    """Refuse to write ``path`` when an entry (name -> array, number or JSON text) holds NaN or Inf."""
    for key, value in entries.items():
        v = _numpy(value)
        if isinstance(v, np.ndarray) or isinstance(v, np.generic):
            n = _bad_count(v)
            if n:
                raise FloatingPointError(f"refusing to write {path}: {key!r} holds {n} NaN/Inf value(s) of "
                                         f"{np.asarray(v).size}; the stage that computed {key!r} failed")
        elif _nonfinite_in(v):
            raise FloatingPointError(f"refusing to write {path}: {key!r} is not finite ({str(v)[:80]}); "
                                     f"the stage that computed {key!r} failed")


def write_h5(path, arrays: Mapping, attrs: Optional[Mapping] = None, compression: Optional[str] = None) -> Path:
    """An HDF5 file with one dataset per entry of ``arrays`` (tensors or arrays, stored with their dtype) and the
    file attributes ``attrs``; every value finite."""
    path = check_output(path)
    check_finite_result(path, arrays)
    check_finite_result(path, attrs or {})
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=_numpy(value), compression=compression)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return path


def write_json(path, obj, indent: Optional[int] = 2) -> Path:
    """``obj`` as JSON text (one trailing newline); NaN and Inf are refused (they are not JSON)."""
    path = check_output(path)
    text = json.dumps(obj, indent=indent, allow_nan=False) + "\n" if not _nonfinite_in(obj) else None
    if text is None:
        raise FloatingPointError(f"refusing to write {path}: the result holds NaN or Inf")
    return write_text(path, text)


def _check_row(path, row: Mapping) -> None:
    for k, v in row.items():
        if _nonfinite_in(v) or (isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf", "infinity")):
            raise FloatingPointError(f"refusing to write {path}: column {k!r} is not finite ({v!r})")


def csv_line(row: Mapping, fields: Sequence[str]) -> str:
    """One CSV line (with its newline) of ``row`` in the order ``fields``."""
    buf = _io.StringIO()
    csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n").writerow(row)
    return buf.getvalue()


def write_csv(path, rows: Iterable[Mapping], fields: Sequence[str]) -> Path:
    """A CSV file with a header line ``fields`` and one line per row; every number finite."""
    path = check_output(path)
    rows = list(rows)
    for r in rows:
        _check_row(path, r)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return path


def append_csv_row(path, row: Mapping, fields: Sequence[str]) -> None:
    """Append one finite row to an existing CSV file as a single write, flushed to disk (a power cut can tear
    at most this line; ``recon.apps.sweep`` detects a torn line and recomputes it)."""
    path = Path(path)
    check_not_input(path)
    _check_row(path, row)
    data = csv_line(row, fields).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        failure = write_failure(path, e)
        if failure is None:
            raise
        raise failure from e


def write_png(path, panels: Sequence[tuple], vmax: Optional[float] = None, title: str = "") -> Path:
    """One row of (label, image[, vmax]) panels as a PNG figure (``recon.plots.save_panels``; it creates the
    folder); every panel and ``vmax`` finite."""
    from recon import plots
    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"figure path {path} must end in one of {', '.join(FIGURE_SUFFIXES)}")
    check_not_input(path)
    check_finite_result(path, {str(p[0]): p[1] for p in panels})
    check_finite_result(path, {f"{p[0]} (scale)": p[2] for p in panels if len(p) > 2 and p[2] is not None})
    if vmax is not None:
        check_finite_result(path, {"vmax": float(vmax)})
    return plots.save_panels(panels, path, vmax=vmax, title=title)
