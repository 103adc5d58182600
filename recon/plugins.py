"""Plugins: samplers, networks and priors written outside the package, made known to every front door.

Two ways, as the Python ecosystem discovers plugins:

- **Entry points.** An installed distribution declares, in its ``pyproject.toml``,

      [project.entry-points."diffrecon.samplers"]
      my-sampler = "my_package.module:MySampler"

  (groups ``diffrecon.samplers``, ``diffrecon.networks``; ``diffrecon.priors`` maps a name to a prior's folder
  or checkpoint path). The registries read their group on first use (``entry_points``).
- **Modules or files named at run time.** ``RECON_PLUGINS`` (or ``recon --plugin``) lists Python modules
  (``my_package.samplers``) or ``.py`` files, separated by commas; each is imported once
  (``import_plugins``), and registers what it defines itself (``recon.samplers.register(name, cls)``,
  ``recon.priors.networks.register(name, "module:Class")``).

A plugin that fails to import is an error that names it and the reason; nothing is skipped silently.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

ENVIRONMENT = "RECON_PLUGINS"
GROUPS = ("diffrecon.samplers", "diffrecon.networks", "diffrecon.priors")
_IMPORTED: dict = {}


def entry_points(group: str) -> list:
    """The entry points of ``group`` (name, loader): ``[(name, EntryPoint), ...]`` sorted by name."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; known: {', '.join(GROUPS)}")
    return sorted(((ep.name, ep) for ep in importlib.metadata.entry_points(group=group)), key=lambda t: t[0])


def load_entry_point(group: str, name: str, ep):
    """``ep.load()``, with a failure reported as one line naming the plugin."""
    try:
        return ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is named, whatever it raised
        raise ImportError(f"plugin {name!r} of {group} ({ep.value}) failed to load: {type(e).__name__}: {e}") from e


def _specs(text: Optional[str]) -> list:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def import_plugins(specs: Optional[Iterable[str]] = None) -> list:
    """Import each plugin module or ``.py`` file of ``specs`` (default: ``RECON_PLUGINS``) once; returns the
    modules. A missing file or a module that fails to import is an ImportError naming it."""
    specs = _specs(os.environ.get(ENVIRONMENT)) if specs is None else list(specs)
    modules = []
    for spec in specs:
        if spec in _IMPORTED:
            modules.append(_IMPORTED[spec])
            continue
        if spec.endswith(".py"):
            path = Path(spec).expanduser()
            if not path.is_file():
                raise ImportError(f"plugin file {spec}: no such file")
            name = f"recon_plugin_{abs(hash(str(path.resolve())))}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as e:  # noqa: BLE001 - named, whatever it raised
                del sys.modules[name]
                raise ImportError(f"plugin file {spec} failed to import: {type(e).__name__}: {e}") from e
        else:
            try:
                module = importlib.import_module(spec)
            except Exception as e:  # noqa: BLE001
                raise ImportError(f"plugin module {spec!r} failed to import: {type(e).__name__}: {e}") from e
        _IMPORTED[spec] = module
        modules.append(module)
    return modules
