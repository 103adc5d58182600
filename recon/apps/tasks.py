"""The generative tasks as commands (``recon synthesize | inpaint | insert | denoise | super-resolve | anomaly``):
each reads an image, runs the task of the library ``recon.tasks`` with the prior and writes a PNG figure."""
from __future__ import annotations

from pathlib import Path

import torch

from recon import priors
from recon.apps import io

TASKS = ("synthesize", "inpaint", "insert", "denoise", "super-resolve", "anomaly")


def task_image(image=None, heldout: int = 5) -> torch.Tensor:
    """The input image of a task: a .npy/.pt/.png file, or held-out brain slice ``heldout`` (scaled to its 99th
    percentile like the bundled prior's training data)."""
    if image:
        p = Path(image)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        if p.suffix == ".npy":
            import numpy as np
            x = torch.as_tensor(np.load(p))
        elif p.suffix == ".pt":
            x = torch.load(p, weights_only=True)
        elif p.suffix == ".png":
            import matplotlib.image as mpimg
            a = torch.as_tensor(mpimg.imread(str(p))).float()
            x = a[..., :3].mean(-1) if a.dim() == 3 else a
        else:
            raise ValueError(f"{p}: expected a .npy, .pt or .png image")
        if x.dim() != 2:
            raise ValueError(f"{p}: expected a 2-D image, got shape {tuple(x.shape)}")
        return x.to(torch.complex64)
    from recon.data import brain
    return brain.load_heldout(128)[heldout]


def command(task: str, *, prior: str, out, image=None, heldout: int = 5, steps: int = 50, seed: int = 0,
            n: int = 16, row: float = 64.0, col: float = 64.0, radius: float = 8.0, shape: str = "circle",
            contrast: float = 0.5, strength: float = 0.3, noise: float = 0.1, factor: int = 2) -> int:
    """Run ``task`` and write its figure to ``out``: the input and the result side by side (a grid of samples
    for ``synthesize``)."""
    from recon import tasks as generative

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    prior = priors.load(prior)
    if task == "synthesize":
        from recon import plots
        x = generative.synthesize(prior, n, steps=steps, seed=seed)
        plots.save_grid(x.abs(), out, title=f"{n} samples of {prior.name}")
        print(f"wrote {out}")
        return 0
    img = task_image(image, heldout)
    if task == "inpaint":
        hole = generative.region(img.shape, (row, col), radius, shape)
        res = generative.inpaint(img, hole, prior, steps=2 * steps, seed=seed)[0]
        panels = [("input", img.abs() * (~hole)), ("inpainted", res.abs())]
    elif task == "insert":
        res = generative.insert(img, (row, col), prior, radius=radius, contrast=contrast, strength=strength,
                                steps=steps, seed=seed)
        panels = [("input", img.abs()), ("with lesion", res.abs()), ("difference", (res.abs() - img.abs()).abs())]
    elif task == "denoise":
        g = torch.Generator().manual_seed(seed)
        noisy = img + noise * float(img.abs().max()) * torch.randn(img.shape, generator=g, dtype=img.dtype)
        res = generative.denoise(noisy, noise * float(img.abs().max()) / (2 ** 0.5 if img.is_complex() else 1), prior)
        panels = [("input", img.abs()), ("noisy", noisy.abs()), ("denoised", res.abs())]
    elif task == "super-resolve":
        from operators.image import Downsample
        low = Downsample(tuple(img.shape), factor)(img)
        res = generative.super_resolve(low, factor, prior, steps=steps, seed=seed)[0]
        panels = [("input", img.abs()), (f"low-res /{factor}", low.abs()), ("super-resolved", res.abs())]
    else:  # anomaly
        res, resid = generative.anomaly(img, prior, strength=strength, steps=steps, seed=seed)
        panels = [("input", img.abs()), ("pseudo-healthy", res.abs()), ("residual", resid)]
    io.write_png(out, panels, vmax=float(img.abs().max()), title=task)
    print(f"wrote {out}")
    return 0
