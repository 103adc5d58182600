"""Generative tasks with the bundled prior on held-out brain slices, each against a diffusion-free baseline.

- inpainting a disk of radius 10 px: PSNR inside the region of one sample (Score-SDE projection, 200 steps) and of
  the mean of 8 samples (the posterior-mean estimate) vs biharmonic (scikit-image) and TV inpainting;
- lesion removal: a synthetic bright disk placed on the slice, inpainted away; error to the original in the region;
- lesion insertion at (row, col): the detected position (centroid of the thresholded difference) and its error;
- 2x super-resolution: PSNR of one DDS sample and of the mean of 8 vs bicubic upsampling;
- denoising at 5% and 10% noise: PSNR of the Tweedie estimate vs the best Gaussian filter and the best TV;
- DDIM inversion then DDIM generation (60 steps): PSNR of the round trip, plain and with 3 fixed-point
  refinements per inversion step;
- synthesis: mean pairwise SSIM of 16 samples (diversity) and each sample's distance to its nearest training slice
  relative to the nearest-neighbour distance among training slices (memorisation check).

    python experiments/tasks_study.py [--slices 0:4]
"""
import argparse
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from operators import Identity
from operators.image import Downsample, Inpainting
from recon import classical, metrics, priors, tasks
from recon.data import brain


def psnr_region(ref, x, region, maxval):
    mse = float(((ref - x)[region] ** 2).mean())
    return 10 * np.log10(maxval ** 2 / mse)


def main():
    from scipy.ndimage import gaussian_filter
    from skimage.restoration import inpaint_biharmonic

    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", default="0:4")
    ap.add_argument("--prior", default="bundled:mni-brain-128")
    args = ap.parse_args()
    a, b = (int(v) for v in args.slices.split(":"))
    prior = priors.load(args.prior)
    held = brain.load_heldout(128)
    res = {k: [] for k in ("inp_dds", "inp_mean", "inp_bih", "inp_tv", "rem_before", "rem_after", "ins_err",
                           "sr_dds", "sr_mean", "sr_bic", "dn5", "dn5_g", "dn5_tv", "dn10", "dn10_g", "dn10_tv", "inv",
                           "inv_fp")}
    for s in range(a, b):
        x = held[s]
        mag = x.abs()
        mx = float(mag.max())
        hole = tasks.region((128, 128), (64, 50), 10.0)
        outs = tasks.inpaint(x, hole, prior, n_samples=8, seed=s)
        out = outs[0].abs()
        res["inp_mean"].append(psnr_region(mag, outs.mean(0).abs(), hole, mx))
        bih = torch.as_tensor(inpaint_biharmonic(mag.numpy(), hole.numpy()))
        A = Inpainting((~hole).float())
        tvr = classical.tv(A(x), A, lam=1e-3, max_iter=100).abs()
        res["inp_dds"].append(psnr_region(mag, out, hole, mx))
        res["inp_bih"].append(psnr_region(mag, bih, hole, mx))
        res["inp_tv"].append(psnr_region(mag, tvr, hole, mx))
        # lesion removal: a bright disk, then inpaint it away
        les = tasks.region((128, 128), (70, 70), 6.0)
        with_lesion = x + 0.6 * mx * les * x / x.abs().clamp_min(1e-6)
        removed = tasks.inpaint(with_lesion, tasks.region((128, 128), (70, 70), 8.0), prior, seed=s)[0].abs()
        res["rem_before"].append(psnr_region(mag, with_lesion.abs(), les, mx))
        res["rem_after"].append(psnr_region(mag, removed, les, mx))
        # insertion at a chosen place, found again by thresholding the difference
        r, c = 60.0 + 4 * s, 45.0
        ins = tasks.insert(x, (r, c), prior, radius=5.0, contrast=0.6, strength=0.3, seed=s).abs()
        diff = (ins - mag).clamp_min(0)
        m = diff > 0.5 * diff.max()
        yy, xx = torch.nonzero(m, as_tuple=True)
        res["ins_err"].append(float(torch.hypot(yy.float().mean() - r, xx.float().mean() - c)))
        # super-resolution 2x
        low = Downsample((128, 128), 2)(x)
        srs = tasks.super_resolve(low, 2, prior, n_samples=8, seed=s)
        sr = srs[0].abs()
        res["sr_mean"].append(metrics.psnr(mag, srs.mean(0).abs(), mx))
        bic = F.interpolate(low.abs()[None, None], scale_factor=2, mode="bicubic", align_corners=False)[0, 0]
        res["sr_dds"].append(metrics.psnr(mag, sr, mx))
        res["sr_bic"].append(metrics.psnr(mag, bic, mx))
        # denoising
        for lvl, key in ((0.05, "dn5"), (0.10, "dn10")):
            g = torch.Generator().manual_seed(100 + s)
            std = lvl * mx
            noisy = x + std * torch.randn(x.shape, generator=g, dtype=x.dtype)  # complex: std/sqrt(2) per part
            d = tasks.denoise(noisy, std / 2 ** 0.5, prior).abs()
            gbest = max(metrics.psnr(mag, torch.as_tensor(gaussian_filter(noisy.abs().numpy(), sg)), mx)
                        for sg in (0.5, 0.75, 1.0, 1.5, 2.0))
            I = Identity((128, 128))
            tbest = max(metrics.psnr(mag, classical.tv(noisy, I, lam=lam, max_iter=100).abs(), mx)
                        for lam in (0.02, 0.05, 0.1, 0.2))
            res[key].append(metrics.psnr(mag, d, mx))
            res[key + "_g"].append(gbest)
            res[key + "_tv"].append(tbest)
        # DDIM inversion round trip (in the prior's scale)
        scale = float(torch.quantile(mag.flatten(), 0.99))
        back = tasks.generate(tasks.invert(x / scale, prior, 60), prior, 60) * scale
        res["inv"].append(metrics.psnr(mag, back.abs(), mx))
        back = tasks.generate(tasks.invert(x / scale, prior, 60, refine=3), prior, 60) * scale
        res["inv_fp"].append(metrics.psnr(mag, back.abs(), mx))
    mean = {k: statistics.mean(v) for k, v in res.items()}
    print("| task | diffusion prior | baseline(s) |\n|---|---|---|")
    print(f"| inpainting r=10 px, PSNR in region, one sample / mean of 8 | {mean['inp_dds']:.2f} / "
          f"{mean['inp_mean']:.2f} | biharmonic {mean['inp_bih']:.2f}, "
          f"TV {mean['inp_tv']:.2f} |")
    print(f"| lesion removal, PSNR in lesion vs original | {mean['rem_after']:.2f} | with lesion {mean['rem_before']:.2f} |")
    print(f"| lesion insertion, detected-position error px | {mean['ins_err']:.2f} | - |")
    print(f"| super-resolution 2x, PSNR, one sample / mean of 8 | {mean['sr_dds']:.2f} / {mean['sr_mean']:.2f} | "
          f"bicubic {mean['sr_bic']:.2f} |")
    print(f"| denoising 5% noise, PSNR | {mean['dn5']:.2f} | Gaussian {mean['dn5_g']:.2f}, TV {mean['dn5_tv']:.2f} |")
    print(f"| denoising 10% noise, PSNR | {mean['dn10']:.2f} | Gaussian {mean['dn10_g']:.2f}, TV {mean['dn10_tv']:.2f} |")
    print(f"| DDIM inversion + generation (60 steps), PSNR, plain / 3 fixed-point refinements | {mean['inv']:.2f} / "
          f"{mean['inv_fp']:.2f} | - |")
    # synthesis diversity and memorisation
    samples = tasks.synthesize(prior, 16, steps=30, seed=0).abs()
    samples = samples / torch.quantile(samples.reshape(16, -1), 0.99, dim=1)[:, None, None]
    ss = [metrics.ssim(samples[i], samples[j], 1.0) for i in range(16) for j in range(i + 1, 16)]
    train = brain.magnitude_slices("train", 128)
    d_nn = torch.cdist(samples.reshape(16, -1), train.reshape(len(train), -1)).min(1).values
    dt = torch.cdist(train.reshape(len(train), -1), train.reshape(len(train), -1))
    dt.fill_diagonal_(float("inf"))
    base = dt.min(1).values.median()
    print(f"\nsynthesis: mean pairwise SSIM of 16 samples {statistics.mean(ss):.3f}; nearest-training-slice distance "
          f"/ median train-train nearest distance: min {float(d_nn.min() / base):.2f}, median {float(d_nn.median() / base):.2f}")


if __name__ == "__main__":
    main()
