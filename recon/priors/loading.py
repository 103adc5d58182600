"""``load``: the one entry point that turns a name or a file into a ``DiffusionPrior``."""
from __future__ import annotations

from pathlib import Path

from recon import plugins

from . import bundled, format, published
from .format import CheckpointError
from .prior import DiffusionPrior

_RECORDED = ("channels", "normalization")          # metadata: may override what any prior records
_PUBLISHED_ONLY = ("kind", "network", "parametrization", "ema")  # published checkpoints only


def load(path_or_name, map_location="cpu", **overrides) -> DiffusionPrior:
    """Load a prior from one of:

    - ``bundled:<name>``, or the bare ``<name>`` (``available()`` lists them); a file or folder of that name
      on disk wins over a bundled prior;
    - a toolkit prior: its ``.json``, its ``.pt`` (next to the ``.json``), or a folder holding ``prior.json``;
    - a published checkpoint file (Score-MRI, csgm, DDS, DPS; see ``published.load_published``). A same-stem
      ``.json`` next to it is used only if it is a toolkit config naming that file (``format.is_config_of``), so
      a training config beside a checkpoint does not hijack it;
    - ``plugin:<name>``, or the bare ``<name>``, of an installed plugin's entry point in the group
      ``diffrecon.priors`` (``plugin_priors()``): the entry point names a path (a ``str`` or ``Path``), or a
      function returning one, of a toolkit prior or a published checkpoint, which is then loaded as above.

    Overrides: ``channels`` and ``normalization`` (a ``Normalization`` field dict) replace what any prior
    records; ``kind``, ``network``, ``parametrization`` and ``ema`` (True: EMA weights, False: raw weights,
    None: what the reference sampler uses) apply to published checkpoints only (a toolkit prior records its own
    network and parametrisation and one set of weights, so they are refused for it).
    """
    unknown = sorted(set(overrides) - set(_RECORDED + _PUBLISHED_ONLY))
    if unknown:
        raise TypeError(f"load() got unexpected keyword argument(s) {unknown}; "
                        f"allowed: map_location, {', '.join(_RECORDED + _PUBLISHED_ONLY)}")
    json_path, path = _resolve(str(path_or_name))
    if json_path is None:
        return published.load_published(path, map_location=map_location, **overrides)
    refused = [k for k in _PUBLISHED_ONLY if overrides.get(k) is not None]
    if refused:
        raise CheckpointError(f"{json_path}: {', '.join(k + '=' for k in refused)} only for published checkpoints; "
                              "a toolkit-format prior records its own network and parametrization")
    return format.read(json_path, map_location, **overrides)


def plugin_priors() -> list:
    """Names of the priors that installed plugins offer (entry-point group ``diffrecon.priors``)."""
    return [name for name, _ in plugins.entry_points("diffrecon.priors")]


def _plugin_path(name: str) -> Path:
    """The path a ``diffrecon.priors`` entry point names (a path, or a function returning one)."""
    ep = dict(plugins.entry_points("diffrecon.priors"))[name]
    target = plugins.load_entry_point("diffrecon.priors", name, ep)
    target = target() if callable(target) else target
    if not isinstance(target, (str, Path)):
        raise CheckpointError(f"prior plugin {name!r} ({ep.value}) must name a path of a prior or checkpoint, got "
                              f"{type(target).__name__}")
    if not Path(target).exists():
        raise CheckpointError(f"prior plugin {name!r} ({ep.value}) names {target}: no such file or folder")
    return Path(target)


def _resolve(s: str):
    """``(json_path, None)`` for a toolkit prior, ``(None, path)`` for a published checkpoint file."""
    if s.startswith("bundled:"):
        return bundled.config_path(s.split(":", 1)[1]), None
    if s.startswith("plugin:"):
        name = s.split(":", 1)[1]
        if name not in plugin_priors():
            raise CheckpointError(f"{s!r}: no installed plugin offers a prior of that name; plugin priors: "
                                  f"{plugin_priors()}")
        return _resolve(str(_plugin_path(name)))
    p = Path(s)
    if not p.exists():
        if s in bundled.available():
            return bundled.config_path(s), None
        if s in plugin_priors():
            return _resolve(str(_plugin_path(s)))
        if len(p.parts) == 1:
            raise CheckpointError(f"{s!r}: no such file or folder, and no bundled prior of that name; "
                                  f"bundled priors: {bundled.available()}")
        raise CheckpointError(f"{p}: no such file or folder")
    if p.is_dir():
        if not (p / "prior.json").exists():
            raise CheckpointError(f"{p}: folder has no prior.json")
        return p / "prior.json", None
    if p.suffix == ".json":
        return p, None
    if format.is_config_of(p.with_suffix(".json"), p):
        return p.with_suffix(".json"), None
    return None, p
