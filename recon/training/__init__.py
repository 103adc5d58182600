"""Training priors by denoising score matching (``recon train``); data sources live in ``recon.data.sources``.

    from recon.training import TrainConfig, train
    train(TrainConfig.from_file("config.json"))      # returns the saved prior's JSON path
"""
from .train import TrainConfig, train

__all__ = ["TrainConfig", "train"]
