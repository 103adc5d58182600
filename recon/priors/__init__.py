"""Priors: score networks wrapped into one denoiser in variance-exploding coordinates.

    prior = priors.load("bundled:<name>")     # priors.available() lists the bundled names
    prior.denoise(x, sigma), prior.score(x, sigma), prior.eps(x, sigma)
"""
from .prior import DiffusionPrior, Normalization
from .parametrizations import EDM, VEScore, VPModel, Denoiser
from .format import CheckpointError, save, load_state_strict
from .bundled import available
from .loading import load
from . import schedules

__all__ = ["DiffusionPrior", "Normalization", "EDM", "VEScore", "VPModel", "Denoiser", "CheckpointError",
           "available", "load", "save", "load_state_strict", "schedules"]
