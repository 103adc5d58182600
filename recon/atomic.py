"""Atomic file writes: the one place where the toolkit renames a finished file into place.

    with atomic_path("result.h5") as tmp:      # tmp = ".result.tmp<pid>.h5" in the same folder
        write_something(tmp)                   # any writer that takes a path (h5py, torch.save, savefig, ...)
    # on success tmp was renamed onto result.h5 (os.replace: atomic on POSIX); on an exception it is deleted

A reader therefore sees either the old file or the complete new one, never a torn write. The temporary
name keeps the suffix, so writers that infer the format from it (matplotlib) still work.

Two guards live here, so that no writer can forget them:

- **Inputs are never overwritten.** ``with protected(path, ...):`` marks files (and folders) a command reads;
  inside it, ``atomic_path`` refuses (ValueError) to replace any of them, compared by resolved path and by inode
  (``os.path.samefile``: hard links and symlinks included), or any existing data file inside a protected folder. The
  ``recon`` command protects every input it names.
- **Stale temporary files are removed.** A process killed mid-write leaves ``.NAME.tmpPID.SUFFIX``; the next
  write of NAME deletes those whose process is no longer alive (``stale_temporaries``). Readers never look at
  temporary names, so until then they are ignored.
"""
from __future__ import annotations

import contextvars
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DATA_SUFFIXES = (".h5", ".hdf5", ".dcm", ".ima", ".nii", ".nii.gz", ".npy", ".pt")
_PROTECTED: contextvars.ContextVar[tuple] = contextvars.ContextVar("recon_protected_inputs", default=())


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    except OverflowError:
        return False
    return True


def stale_temporaries(path) -> list[Path]:
    """The temporary files of ``path`` (``.STEM.tmpPID SUFFIX`` next to it) whose writing process is dead."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.stem}.tmp") + r"(\d+)" + re.escape(path.suffix) + r"\Z")
    try:
        names = os.listdir(path.parent if str(path.parent) else ".")
    except OSError:
        return []
    return [path.with_name(n) for n in names if (m := pattern.match(n)) and not _alive(int(m.group(1)))]


def _remove_stale(path: Path) -> None:
    for p in stale_temporaries(path):
        try:
            p.unlink()
        except OSError:
            pass


@contextmanager
def protected(*paths) -> Iterator[None]:
    """Inside the block, ``atomic_path`` refuses to replace any of ``paths`` (those that exist; None skipped)."""
    entries = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        if p.exists():
            entries.append((p, p.resolve()))
    token = _PROTECTED.set(_PROTECTED.get() + tuple(entries))
    try:
        yield
    finally:
        _PROTECTED.reset(token)


def input_it_would_replace(path) -> Path | None:
    """The protected input that writing ``path`` would replace, or None. A protected folder protects the data
    files in it and below (``DATA_SUFFIXES``: what commands read from folders): an existing one is never replaced;
    other files (a report) and new files may be written there."""
    path = Path(path)
    target = path.resolve()
    for original, resolved in _PROTECTED.get():
        if target == resolved:
            return original
        if resolved.is_dir() and path.exists() and resolved in target.parents and \
                path.name.lower().endswith(DATA_SUFFIXES):
            return path
        try:
            if path.exists() and os.path.samefile(path, original):
                return original
        except OSError:
            continue
    return None


def check_not_input(path) -> None:
    src = input_it_would_replace(path)
    if src is not None:
        raise ValueError(f"refusing to write {path}: it is the input file {src} of this command; "
                         f"choose another output path")


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path next to ``path`` that is renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    check_not_input(path)
    _remove_stale(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        check_not_input(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
