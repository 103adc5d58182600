"""Writing results, atomically: HDF5, JSON, CSV and PNG.

Every writer here goes through ``recon.atomic.atomic_path``: the file is written under a temporary name next to
the target and renamed onto it when complete. A reader sees the old file or the new one, never a torn write; a
writer that fails leaves the target as it was and no temporary file behind.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import h5py
import torch

from recon.atomic import atomic_path, write_text


def check_output(out, source=None) -> Path:
    """``out`` can be written: not a folder, in a folder that exists, and not the input file ``source``."""
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"output path {out} is a directory")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    if source is not None and out.exists() and Path(source).exists() and os.path.samefile(out, source):
        raise ValueError(f"output path {out} is the input file; choose another output path")
    return out


def _numpy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().resolve_conj().cpu().numpy()
    return v


def write_h5(path, arrays: Mapping, attrs: Optional[Mapping] = None, compression: Optional[str] = None) -> Path:
    """An HDF5 file with one dataset per entry of ``arrays`` (tensors or arrays, stored with their dtype) and the
    file attributes ``attrs``."""
    path = check_output(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=_numpy(value), compression=compression)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return path


def write_json(path, obj, indent: Optional[int] = 2) -> Path:
    """``obj`` as JSON text (one trailing newline)."""
    text = json.dumps(obj, indent=indent) + "\n"
    return write_text(check_output(path), text)


def write_csv(path, rows: Iterable[Mapping], fields: Sequence[str]) -> Path:
    """A CSV file with a header line ``fields`` and one line per row."""
    path = check_output(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields))
            w.writeheader()
            w.writerows(rows)
    return path


def write_png(path, panels: Sequence[tuple], vmax: Optional[float] = None, title: str = "") -> Path:
    """One row of (label, image[, vmax]) panels as a PNG figure (``recon.plots.save_panels``; it creates the
    folder)."""
    from recon import plots
    return plots.save_panels(panels, path, vmax=vmax, title=title)
