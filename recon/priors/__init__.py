"""Priors: score networks wrapped into one denoiser in variance-exploding coordinates.

    prior = priors.load("bundled:<name>")     # priors.available() lists the bundled names
    prior.denoise(x, sigma), prior.score(x, sigma), prior.eps(x, sigma)
    view = prior.for_grid((512, 512), coarse=True)   # the prior's grid policy for a grid: a view, used and dropped
    view = prior.configured(attention_window=128)    # a view with a stated policy; the prior is not changed

Networks written elsewhere: ``networks.register(name, "module:Class")`` or the ``diffrecon.networks`` entry points.
"""
from .prior import KEEP, DiffusionPrior, Normalization
from .parametrizations import EDM, VEScore, VPModel, Denoiser
from .format import CheckpointError, save, load_state_strict
from .bundled import available
from .loading import load
from .grid import GridPolicy
from . import grid, networks, schedules

__all__ = ["DiffusionPrior", "Normalization", "EDM", "VEScore", "VPModel", "Denoiser", "CheckpointError",
           "available", "load", "save", "load_state_strict", "schedules", "networks", "grid", "GridPolicy", "KEEP"]
