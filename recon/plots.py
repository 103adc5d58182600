"""Figures (matplotlib, Agg backend), written atomically (``recon.atomic``: a temporary file, then a rename)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from recon.atomic import atomic_path  # noqa: E402


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure atomically and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def save_grid(images: torch.Tensor, path, ncols: Optional[int] = None, title: str = "") -> Path:
    """A grid of real images (N, H, W), each shown on its own grey scale."""
    n = len(images)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im in zip(axes.flat, images):
        ax.imshow(im.detach().float().numpy(), cmap="gray")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_panels(panels: Sequence[tuple], path, vmax: Optional[float] = None, title: str = "") -> Path:
    """One row of (label, image[, vmax]) panels; images are real (N.B. pass magnitudes)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        label, im = panel[0], panel[1]
        vm = panel[2] if len(panel) > 2 else vmax
        ax.imshow(torch.as_tensor(im).detach().float().numpy(), cmap="gray", vmin=0, vmax=vm)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_curve(x, y, path, xlabel: str = "", ylabel: str = "", logy: bool = False, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x, y, lw=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
