"""Atomic file writes: the one place where the toolkit renames a finished file into place.

    with atomic_path("result.h5") as tmp:      # tmp = ".result.tmp<pid>.h5" in the same folder
        write_something(tmp)                   # any writer that takes a path (h5py, torch.save, savefig, ...)
    # on success tmp was renamed onto result.h5 (os.replace: atomic on POSIX); on an exception it is deleted

A reader therefore sees either the old file or the complete new one, never a torn write. The temporary
name keeps the suffix, so writers that infer the format from it (matplotlib) still work.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path next to ``path`` that is renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
