"""Denoising error of a prior on the held-out MNI152 slices at several noise levels.

x_sigma = x + sigma z (complex: Re and Im each N(0, sigma^2)), slices scaled so their 99th percentile of |x|
is 1 (the prior's normalisation). Reports the mean squared error of the noisy input and of the prior's
Tweedie estimate, and the PSNR of the estimate (fastMRI PSNR of magnitudes, data range = slice max).

    python experiments/prior_denoising.py [--prior bundled:mni-brain-128]
"""
import argparse

import torch

from recon import metrics, priors
from recon.data import brain
from recon.samplers.base import noise_like


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="bundled:mni-brain-128")
    ap.add_argument("--sigmas", default="0.02,0.05,0.1,0.2,0.5,1,2,5")
    args = ap.parse_args()
    prior = priors.load(args.prior)
    x = brain.load_heldout(128)
    x = x / torch.quantile(x.abs().reshape(len(x), -1), 0.99, dim=1)[:, None, None]
    g = torch.Generator().manual_seed(0)
    print("| sigma | MSE noisy | MSE denoised | PSNR noisy | PSNR denoised |\n|---|---|---|---|---|")
    with torch.no_grad():
        for s in (float(v) for v in args.sigmas.split(",")):
            xn = x + s * noise_like(x, g)
            d = prior.denoise(xn, s)
            p_n = sum(metrics.psnr(x[i].abs(), xn[i].abs()) for i in range(len(x))) / len(x)
            p_d = sum(metrics.psnr(x[i].abs(), d[i].abs()) for i in range(len(x))) / len(x)
            print(f"| {s:g} | {(xn - x).abs().square().mean():.5f} | {(d - x).abs().square().mean():.5f} | "
                  f"{p_n:.2f} | {p_d:.2f} |")


if __name__ == "__main__":
    main()
