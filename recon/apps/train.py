"""``recon train CONFIG.json``: train a prior by denoising score matching (``recon.training``), with the output
folder and the number of steps optionally overridden; resumes from the folder's checkpoint unless ``restart``."""
from __future__ import annotations

import os
from typing import Optional


def command(config, out: Optional[str] = None, steps: Optional[int] = None, restart: bool = False,
            progress: bool = True) -> int:
    from recon.training import TrainConfig, train

    cfg = TrainConfig.from_file(config)
    for k, v in (("out", out), ("steps", steps)):
        if v is not None:
            setattr(cfg, k, v)
    path = train(cfg, resume=not restart, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"prior written to {path}")
    return 0
