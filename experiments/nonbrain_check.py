"""A brain prior on real MR that is not a brain: DDS against CG-SENSE, and inpainting against biharmonic.

Images: the real MR scans of a phantom that nibabel ships (``tests/data/phantom_EPI_asc_CLEAR_2_1.PAR``, a Philips
EPI, 64 x 64 x 9 slices, first dynamic), magnitude, |x| at its 99th percentile 1, resampled to 128 x 128
(bilinear) so the object is in the prior's usual size range. None of it is in any training source.

- Reconstruction: 8 birdcage coils, 30 dB, fastMRI random 4x (centre 0.12), ESPIRiT maps, as
  ``experiments/prior_generalisation.py``; CG-SENSE and DDS (defaults, seed 0).
- Inpainting: a disk of radius 12 px centred on the object's centroid; PSNR inside the disk (data range: slice
  maximum) of ``recon.tasks.inpaint`` (the mean of 8 samples, the posterior-mean estimate, and one sample) against
  scikit-image's biharmonic inpainting.

    python experiments/nonbrain_check.py --prior brain=bundled:mni-brain-128
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

from recon import classical, metrics, priors, samplers, tasks

import prior_generalisation as pg


def phantom_slices(size: int = 128):
    import nibabel
    p = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "phantom_EPI_asc_CLEAR_2_1.PAR")
    vol = np.asarray(nibabel.load(p).dataobj, dtype=np.float32)[..., 0]
    x = torch.from_numpy(np.stack([np.rot90(vol[:, :, z]).copy() for z in range(vol.shape[2])]))
    x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    return pg._p99(x)


def psnr_region(ref, x, region, maxval):
    return float(10 * np.log10(maxval ** 2 / float(((ref - x)[region] ** 2).mean())))


def main():
    from skimage.restoration import inpaint_biharmonic

    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", action="append", default=[], help="LABEL=SPEC (repeatable)")
    ap.add_argument("--slices", default="0:9:2")
    ap.add_argument("--reconstruction-only", action="store_true", help="skip the inpainting")
    ap.add_argument("--noiseless-too", action="store_true",
                    help="also DDS with the paper's noiseless CG (the default until 2026-12-02)")
    args = ap.parse_args()
    pri = {k: priors.load(v) for k, v in (p.split("=", 1) for p in (args.prior or ["brain=bundled:mni-brain-128"]))}
    xs = phantom_slices()
    idx = list(range(*(int(v) for v in args.slices.split(":"))))
    res = {}
    for i in idx:
        x = xs[i].to(torch.complex64)
        gt = x.abs()
        y, A = pg.problem(x)
        res.setdefault(("recon", "CG-SENSE"), []).append(metrics.psnr(gt.numpy(), classical.cg_sense(y, A).abs().numpy()))
        yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        w = gt / gt.sum()
        centre = (float((w * yy).sum()), float((w * xx).sum()))
        hole = tasks.region((128, 128), centre, 12.0)
        mx = float(gt.max())
        if not args.reconstruction_only:
            bih = torch.as_tensor(inpaint_biharmonic(gt.numpy(), hole.numpy()))
            res.setdefault(("inpaint", "biharmonic"), []).append(psnr_region(gt, bih, hole, mx))
        for k, p in pri.items():
            r = samplers.DDS()(y, A, p, generator=torch.Generator().manual_seed(0))[0]
            res.setdefault(("recon", f"DDS {k}"), []).append(metrics.psnr(gt.numpy(), r.abs().numpy()))
            if args.noiseless_too:
                r = samplers.DDS(sigma_y=None, cg_iter=5)(y, A, p, generator=torch.Generator().manual_seed(0))[0]
                res.setdefault(("recon", f"DDS noiseless CG {k}"), []).append(metrics.psnr(gt.numpy(),
                                                                                         r.abs().numpy()))
            if args.reconstruction_only:
                continue
            outs = tasks.inpaint(x, hole, p, n_samples=8, seed=i)
            res.setdefault(("inpaint", f"mean of 8, {k}"), []).append(psnr_region(gt, outs.mean(0).abs(), hole, mx))
            res.setdefault(("inpaint", f"one sample, {k}"), []).append(psnr_region(gt, outs[0].abs(), hole, mx))
        print(i, {f"{a}/{b}": round(v[-1], 2) for (a, b), v in res.items()}, flush=True)
    print("| task | method | slices | PSNR mean | PSNR worst |\n|---|---|---|---|---|")
    for (a, b), v in res.items():
        print(f"| {a} | {b} | {len(v)} | {np.mean(v):.2f} | {min(v):.2f} |")


if __name__ == "__main__":
    main()
