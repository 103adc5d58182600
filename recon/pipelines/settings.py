"""What the reconstruction commands share: the settings base, the slice selection and the device check.

Values are validated here, once, at the boundary, with an error that names the option, the value and what is
allowed. ``recon.pipelines.mri.MRISettings`` and ``recon.pipelines.ct.CTSettings`` extend
``BaseSettings`` with their own fields and checks; all fields are keyword-only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from operators.checks import check_int, is_int

SliceSpec = Union[None, int, str, slice, Sequence[int]]


MAX_IMAGE_SIDE = 2048  # pixels per side of an image task's input or a synthesis grid


def check_device(device: str) -> None:
    """``device`` is "cpu", "cuda" or "cuda:N", and a CUDA device is there when one is asked for."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA device is available")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but there are {torch.cuda.device_count()} CUDA "
                             f"device(s) (valid cuda:0..cuda:{torch.cuda.device_count() - 1})")


_is_int = is_int

MAX_SEED = 2**31 - 1      # seeds feed torch and NumPy generators, offset by slice numbers: keep room below 2^32
MAX_STEPS = 10_000        # sampler steps / levels / network evaluations of a command
MAX_SAMPLES = 1024        # posterior samples drawn at once


def check_seed(seed, name: str = "seed") -> int:
    """A seed for torch and NumPy generators: an integer in 0..2^31 - 1."""
    return check_int(name, seed, 0, MAX_SEED)


def check_steps(steps, name: str = "steps") -> int:
    """A number of sampler steps: an integer in 1..10000."""
    return check_int(name, steps, 1, MAX_STEPS)


def check_prior(prior) -> str:
    """A prior spec names a file or folder that exists, a bundled prior (``bundled:<name>`` or the bare name) or an
    installed plugin's prior (``plugin:<name>``, ``recon.priors.loading.plugin_priors``);
    checked before any work, so a misspelled prior is refused even by methods that do not load it."""
    from recon import priors

    if not isinstance(prior, str) or not prior:
        raise ValueError(f"prior must be a bundled name (bundled:<name>) or a checkpoint path, got {prior!r}")
    from recon.priors.loading import plugin_priors

    name = prior.split(":", 1)[1] if prior.startswith(("bundled:", "plugin:")) else prior
    if not Path(prior).exists() and name not in priors.available() + plugin_priors():
        raise ValueError(f"prior {prior!r}: no such file or folder, and no bundled prior of that name (bundled: "
                         f"{', '.join(priors.available())}; plugin priors: {', '.join(plugin_priors()) or 'none'})")
    return prior


@dataclass(kw_only=True)
class BaseSettings:
    """The settings every reconstruction command has: the prior (a bundled name or a checkpoint path), the number
    of posterior samples, the seed, the sampler length (None: the paper's default), the device and the sampler's
    preset (None: its defaults; "reference": its published code step for step, ``Sampler.PRESETS``)."""
    prior: str
    samples: int = 1
    seed: int = 0
    steps: Optional[int] = None
    device: str = "cpu"
    normalization: Optional[str] = None  # "KIND[:VALUE]" overriding the prior's recorded data convention
    preset: Optional[str] = None

    def load_prior(self):
        """The prior named by ``prior``, with ``normalization`` (if set) overriding its data convention."""
        from recon import priors

        override = parse_normalization(self.normalization)
        return priors.load(self.prior, **({"normalization": override} if override else {}))

    def check(self) -> None:
        check_prior(self.prior)
        check_int("samples", self.samples, 1, MAX_SAMPLES)
        check_seed(self.seed)
        if self.steps is not None:
            check_steps(self.steps)
        check_device(self.device)
        parse_normalization(self.normalization)


def check_preset(method: str, preset: Optional[str], baselines) -> None:
    """A preset names settings of a sampler that has them (``Sampler.PRESETS``); the baselines have none."""
    if preset is None:
        return
    from recon import samplers

    if method in baselines:
        raise ValueError(f"--preset names a sampler's settings; the classical method {method!r} has none")
    presets = tuple(samplers.sampler_class(method).PRESETS)
    if preset not in presets:
        raise ValueError(f"preset must be one of sampler {method!r}'s presets ({', '.join(presets) or 'none'}), "
                         f"got {preset!r}")


NORMALIZATIONS = {"none": None, "max": None, "percentile": "q", "fixed": "value", "range": "value"}


def parse_normalization(text: Optional[str]) -> Optional[dict]:
    """``--normalization``: "none", "max", "percentile[:Q]", "fixed:VALUE" or "range:VALUE" (data in [0, VALUE],
    the network's input in [-1, 1]) -> the keyword dict of ``recon.priors.Normalization``; None stays None."""
    if text is None:
        return None
    kind, _, arg = str(text).partition(":")
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of none, max, percentile[:Q], fixed:VALUE, range:VALUE; "
                         f"got {text!r}")
    key = NORMALIZATIONS[kind]
    if arg and key is None:
        raise ValueError(f"normalization {kind!r} takes no value, got {text!r}")
    if not arg:
        if kind in ("fixed", "range"):
            raise ValueError(f"normalization {kind!r} needs a value ({kind}:VALUE), got {text!r}")
        return {"kind": kind}
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"normalization value must be a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")) or (kind == "percentile" and value > 100):
        raise ValueError(f"normalization value must be finite and > 0 (a percentile at most 100), got {text!r}")
    return {"kind": kind, key: value}


def _describe(spec) -> str:
    if isinstance(spec, slice):
        return ":".join("" if v is None else str(v) for v in (spec.start, spec.stop)) + \
            ("" if spec.step is None else f":{spec.step}")
    return str(spec)


def _valid(n: int) -> str:
    return f"valid 0..{n - 1}" if n > 0 else "no valid index"


def _parse(text: str):
    """ "3" -> 3, "-1" -> -1, "0:4" -> slice(0, 4), ":" -> slice(None, None)."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 1:
            return int(parts[0])
        if len(parts) == 2:
            return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        pass
    raise ValueError(f"slices must be an index or a range a:b (e.g. 3, 0:4, :), got {text!r}")


def select_slices(spec: SliceSpec, n: int) -> list[int]:
    """The indices (non-negative, in order) that ``spec`` selects from a volume of ``n`` slices.

    ``spec`` is None (all slices), an int (negative counts from the end), a slice, a list of ints, or the text of a
    command-line option: "3", "-1", "0:4", "2:", ":". A range must lie inside the volume (bounds in -n..n; no
    silent clipping), a step must be a positive integer; an index outside the volume (IndexError), a bound outside
    it and an empty selection (ValueError) are errors that name the valid range.
    """
    if spec is None:
        return list(range(n))
    if isinstance(spec, str):
        spec = _parse(spec)
    if isinstance(spec, slice):
        for bound in (spec.start, spec.stop):
            if bound is not None and (not _is_int(bound) or not -n <= bound <= n):
                raise IndexError(f"slice range {_describe(spec)} reaches outside the volume of {n} slices "
                                 f"({_valid(n)}; a range a:b needs -{n} <= a, b <= {n})")
        if spec.step is not None and (not _is_int(spec.step) or spec.step < 1):
            raise ValueError(f"slice step must be an integer >= 1, got {spec.step!r}")
        idx = list(range(n)[spec])
    else:
        items = [spec] if _is_int(spec) else list(spec) if isinstance(spec, (list, tuple, range)) else None
        if items is None or not all(_is_int(i) for i in items):
            raise TypeError(f"slices must be None, an index, a list of indices or a slice, got {spec!r}")
        for i in items:
            if not -n <= i < n:
                raise IndexError(f"slice {i} out of range: the volume has {n} slices ({_valid(n)})")
        idx = [int(i) % n for i in items]
        dup = sorted({i for i in idx if idx.count(i) > 1})
        if dup:
            raise ValueError(f"the slice selection names slice(s) {dup} more than once")
    if not idx:
        raise ValueError(f"the slice selection {_describe(spec)} is empty (the volume has {n} slices, {_valid(n)})")
    return idx


def parse_size(size) -> tuple:
    """A synthesis grid: an int N (N x N), "N" or "HxW"; each side 8..MAX_IMAGE_SIDE."""
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ValueError(f"--size must be N or HxW (e.g. 320 or 640x320), got {size!r}")
        size = tuple(int(p) for p in parts)
    elif isinstance(size, int) and not isinstance(size, bool):
        size = (size,)
    else:
        size = tuple(size)
    size = size * 2 if len(size) == 1 else size
    for side in size:
        check_int("size", side, 8, MAX_IMAGE_SIDE)
    return tuple(size)
