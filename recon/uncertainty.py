"""Uncertainty maps from repeated posterior samples (chapter 7, Sect. 7.4.3).

From N samples x_1..x_N of one slice (drawn as one batch): the mean, the per-pixel standard deviation
sqrt(mean |x_n - mean|^2), and per-pixel quantiles of |x_n|. Against a reference image (when there is one):
the correlation between the std map and the |error| of the mean inside the object, and the empirical coverage
of the central ``level`` interval [q_lo, q_hi] of |x_n| (the fraction of object pixels whose reference
magnitude falls inside it; a calibrated sampler gives about ``level``).

``recon uncertainty`` runs this on the posterior samples of one slice of a fastMRI file.
"""
from __future__ import annotations

from typing import Optional

import torch


def summarize(samples: torch.Tensor, reference: Optional[torch.Tensor] = None, level: float = 0.9,
              object_mask: Optional[torch.Tensor] = None) -> dict:
    """``samples`` (N, H, W) complex or real; ``reference`` (H, W) magnitude. Returns maps and numbers."""
    if samples.dim() != 3 or samples.shape[0] < 2:
        raise ValueError(f"need at least 2 samples shaped (N, H, W), got {tuple(samples.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = samples.mean(0)
    std = (samples - mean).abs().square().mean(0).sqrt()
    mag = samples.abs().float()
    lo, hi = torch.quantile(mag, torch.tensor([(1 - level) / 2, (1 + level) / 2]), dim=0)
    out = {"mean": mean, "std": std, "q_lo": lo, "q_hi": hi, "level": level}
    if reference is not None:
        ref = reference.abs().float()
        obj = object_mask if object_mask is not None else ref > 0.1 * ref.max()
        err = (mean.abs() - ref).abs()
        s, e = std[obj].float(), err[obj].float()
        s, e = s - s.mean(), e - e.mean()
        out["std_error_correlation"] = float((s * e).sum() / (s.norm() * e.norm()).clamp_min(1e-30))
        out["coverage"] = float(((ref >= lo) & (ref <= hi))[obj].float().mean())
        out["mean_std_in_object"] = float(std[obj].mean())
        out["error"] = err
    return out
