"""``recon train CONFIG.json``: train a prior by denoising score matching (``recon.training``), with the output
folder and the number of steps optionally overridden; resumes from the folder's checkpoint unless ``restart``.
The config is checked field by field (``TrainConfig.check``) and so are the overrides; the output folder must
not hold the config or the training data (the files written there are the prior, its checkpoint, config.json,
loss.csv and sample grids). A checkpoint that holds anything but tensors and plain containers, or that does not
match the config, is refused by name (``recon.training.train.read_state``); ``restart`` ignores it and trains
over it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from recon.atomic import protected

OUTPUTS = ("prior.pt", "prior.json", "train_state.pt", "config.json", "loss.csv")


def command(config, out: Optional[str] = None, steps: Optional[int] = None, restart: bool = False,
            progress: bool = True) -> int:
    from recon.training import TrainConfig, train

    cfg = TrainConfig.from_file(config)
    for k, v in (("out", out), ("steps", steps)):
        if v is not None:
            setattr(cfg, k, v)
    cfg.check()
    folder = Path(cfg.out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"out {folder} is a file; the prior is written into a folder")
    inputs = [config] + [p for p in (cfg.data, cfg.init) if p and Path(p).exists()]
    for name in OUTPUTS:
        target = folder / name
        for src in inputs:
            if target.exists() and Path(src).exists() and os.path.samefile(target, src) or \
                    target.resolve() == Path(src).resolve():
                raise ValueError(f"out {folder}: training writes {target}, which is the input {src}; "
                                 f"choose another output folder")
    with protected(*inputs):
        path = train(cfg, resume=not restart, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"prior written to {path}")
    return 0
