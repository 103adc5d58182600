"""Image quality metrics, defined as in fastMRI's ``fastmri/evaluate.py`` (Zbontar et al. 2018).

    NMSE = ||gt - pred||^2 / ||gt||^2
    PSNR = 10 log10(maxval^2 / mean((gt - pred)^2)),            maxval = gt.max() by default
    SSIM = mean over slices of SSIM(gt_s, pred_s; data_range=maxval), maxval = gt.max() of the whole volume

SSIM is scikit-image's default ``structural_similarity`` (Wang et al. 2004 with a 7x7 uniform window,
sample covariances N/(N-1), K1 = 0.01, K2 = 0.03, averaged over the pixels at least 3 from the border),
computed here in float64 with scipy. Inputs are real numpy arrays or torch tensors of equal shape;
a 2-D input is one slice, a 3-D input is (slices, H, W). Every metric returns a Python float.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import uniform_filter

_WIN, _K1, _K2 = 7, 0.01, 0.03


def _pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 numpy arrays of one shape; complex input is refused."""
    arrays = []
    for name, x in (("gt", gt), ("pred", pred)):
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if np.iscomplexobj(x):
            raise ValueError(f"metrics take real images, but {name} is complex; pass its magnitude (x.abs())")
        arrays.append(x.astype(np.float64))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"gt and pred shapes differ: {arrays[0].shape} vs {arrays[1].shape}")
    return arrays[0], arrays[1]


def nmse(gt, pred) -> float:
    """Normalised mean squared error ||gt - pred||^2 / ||gt||^2."""
    gt, pred = _pair(gt, pred)
    return float(np.sum((gt - pred) ** 2) / np.sum(gt ** 2))


def psnr(gt, pred, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(maxval^2 / MSE), with maxval = gt.max() by default."""
    gt, pred = _pair(gt, pred)
    maxval = gt.max() if maxval is None else maxval
    return float(10 * np.log10(maxval ** 2 / np.mean((gt - pred) ** 2)))


def ssim(gt, pred, maxval: float | None = None) -> float:
    """Structural similarity, averaged over the slices of a (slices, H, W) volume (a 2-D input is one slice).

    Per pixel, with 7x7 window means mu, sample (co)variances s and C1 = (K1 maxval)^2, C2 = (K2 maxval)^2:
        (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    averaged over the window centres at least (7 - 1) // 2 pixels from the border.
    """
    gt, pred = _pair(gt, pred)
    if gt.ndim not in (2, 3):
        raise ValueError(f"ssim takes a 2-D image or a 3-D (slices, H, W) volume, got shape {gt.shape}")
    if min(gt.shape[-2:]) < _WIN:
        raise ValueError(f"ssim needs images of at least {_WIN}x{_WIN}, got {gt.shape[-2:]}")
    maxval = gt.max() if maxval is None else maxval
    x, y = gt.reshape(-1, *gt.shape[-2:]), pred.reshape(-1, *gt.shape[-2:])

    def mean(a):
        return uniform_filter(a, size=(1, _WIN, _WIN))

    cov_norm = _WIN ** 2 / (_WIN ** 2 - 1)
    mx, my = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - mx * mx)
    vy = cov_norm * (mean(y * y) - my * my)
    vxy = cov_norm * (mean(x * y) - mx * my)
    c1, c2 = (_K1 * maxval) ** 2, (_K2 * maxval) ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    pad = (_WIN - 1) // 2
    return float(s[:, pad:-pad, pad:-pad].mean(axis=(1, 2)).mean())


def evaluate(gt, pred, maxval: float | None = None) -> dict[str, float]:
    """All three metrics: {"nmse", "psnr", "ssim"}."""
    return {"nmse": nmse(gt, pred), "psnr": psnr(gt, pred, maxval), "ssim": ssim(gt, pred, maxval)}
