"""Atomic file writes: the one place where the toolkit renames a finished file into place.

    with atomic_path("result.h5") as tmp:      # tmp = ".result.tmp<pid>.h5" in the same folder
        write_something(tmp)                   # any writer that takes a path (h5py, torch.save, savefig, ...)
    # on success tmp was renamed onto result.h5 (os.replace: atomic on POSIX); on an exception it is deleted

A reader therefore sees either the old file or the complete new one, never a torn write. The temporary
name keeps the suffix, so writers that infer the format from it (matplotlib) still work.

Two guards live here, so that no writer can forget them:

- **Inputs are never overwritten.** ``with protected(path, ...):`` marks files (and folders) a command reads;
  inside it, ``atomic_path`` refuses (ValueError) to replace any of them, compared by resolved path and by inode
  (``os.path.samefile``: hard links and symlinks included), or any existing data file directly in a protected folder
  (commands read a folder's own files, never its subfolders; an output folder inside an input folder stays
  writable). The ``recon`` command protects every input it names.
- **A failed write says why, naming the file.** An operating-system failure while the file is written or renamed
  (a full disk, a quota, a read-only or unwritable folder) is raised as one OSError naming the file and the cause
  (``write_failure``): "cannot write out.h5: no space left on device (errno ENOSPC) ...", also where the writer
  (h5py: "Can't synchronously write data", torch.save) words it otherwise.
- **Stale temporary files are removed.** A process killed mid-write leaves ``.NAME.tmpPID.SUFFIX``; the next
  write of NAME deletes those whose process is no longer alive (``stale_temporaries``). Readers never look at
  temporary names, so until then they are ignored.
"""
from __future__ import annotations

import contextvars
import errno
import os
import re
import shutil
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
    files directly in it (``DATA_SUFFIXES``: what commands read from folders, whose subfolders they do not
    read): an existing one is never replaced; other files (a report), new files and subfolders (an output folder)
    may be written there."""
    path = Path(path)
    target = path.resolve()
    for original, resolved in _PROTECTED.get():
        if target == resolved:
            return original
        if resolved.is_dir() and path.exists() and target.parent == resolved and \
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
        try:
            yield tmp
            check_not_input(path)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            failure = write_failure(path, e)
            if failure is None:
                raise
            raise failure from e
    finally:
        if tmp.exists():
            tmp.unlink()


WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EFBIG: "file too large",
                errno.EIO: "input/output error"}
_ERRNO_TEXT = re.compile(r"errno\s*=\s*(\d+)")        # HDF5's wording: "... errno = 28, error message = ..."
FULL_BELOW = 1 << 16  # bytes free: a writer failing while its folder has less than this ran out of space


def _failed_errno(e: BaseException, folder: Path):
    """The errno behind a failed write: the exception's own, one quoted in its text (HDF5), or ENOSPC when the
    folder has (almost) no space left (writers such as torch.save report a full disk without the errno)."""
    code = getattr(e, "errno", None)
    if code in WRITE_ERRORS:
        return code
    m = _ERRNO_TEXT.search(str(e))
    if m and int(m.group(1)) in WRITE_ERRORS:
        return int(m.group(1))
    if "no space left on device" in str(e).lower():
        return errno.ENOSPC
    try:
        if shutil.disk_usage(folder).free < FULL_BELOW:
            return errno.ENOSPC
    except OSError:
        pass
    return None


def write_failure(path, e: BaseException):
    """The one-line OSError (errno set) for a write of ``path`` that failed with ``e``, or None when ``e`` is not
    a failure of the file system (then it is raised as it is)."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    code = _failed_errno(e, folder)
    if code is None:
        return None
    hint = {errno.ENOSPC: f"free space in {folder} or choose another output folder",
            errno.EDQUOT: f"free space in {folder} or choose another output folder"}.get(
        code, f"check that {folder} is writable")
    err = OSError(f"cannot write {path}: {WRITE_ERRORS[code]} (errno {errno.errorcode.get(code, code)}); {hint}")
    err.errno = code
    return err


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
