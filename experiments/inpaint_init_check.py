"""Inpainting from the biharmonic fill (``tasks.inpaint``'s default, CCDF-style) against the fill itself.

Images: the nine slices of nibabel's phantom EPI (``nonbrain_check.phantom_slices``, a 12-pixel disk at the
object's centroid) and the held-out template slices 0, 1, 4, 7 (a 10-pixel disk). PSNR inside the disk (data
range: slice maximum) of scikit-image's biharmonic inpainting, and of the mean of 8 samples and one sample of
``tasks.inpaint`` at each strength. Prior ``brain-synth-128``.

    OMP_NUM_THREADS=1 python experiments/inpaint_init_check.py 0.1,0.2,0.3 200
    OMP_NUM_THREADS=1 python experiments/inpaint_init_check.py auto,0.1 200 [phantom|template]

``auto`` is the default, ``strength="auto"`` (pseudo-regions scored on the image itself); "chosen" is its pick.
"""
import sys
import time

import numpy as np
import torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from skimage.restoration import inpaint_biharmonic
from recon import priors, tasks
import nonbrain_check as nb
from recon.problems import multicoil_problem
p = priors.load("bundled:brain-synth-128")
def imgs():
    xs = nb.phantom_slices()
    for i in range(0, 9):
        yield "phantom", i, xs[i], 12.0
    for s in (0, 1, 4, 7):
        yield "template", s, multicoil_problem(slice_index=s).x_true.abs(), 10.0
res = {}
strengths = [v if v == "auto" else float(v) for v in sys.argv[1].split(",")]
only = sys.argv[3] if len(sys.argv) > 3 else None   # "phantom" or "template": one set only
steps = int(sys.argv[2])
for c, i, gt, rad in imgs():
    if only and c != only:
        continue
    gt = gt.float(); h, w = gt.shape
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    wt = gt / gt.sum(); centre = (float((wt * yy).sum()), float((wt * xx).sum()))
    hole = tasks.region((h, w), centre, rad); mx = float(gt.max())
    bih = torch.as_tensor(inpaint_biharmonic(gt.numpy(), hole.numpy())).float()
    out = {"bih": nb.psnr_region(gt, bih, hole, mx)}
    x = gt.to(torch.complex64)
    for s in strengths:
        t = time.time()
        rep = {}
        r = tasks.inpaint(x, hole, p, steps=steps, n_samples=8, seed=i, strength=s, report=rep)
        if s == "auto":
            out["chosen"] = rep["strength"]
            out["weight"] = rep["weight"]
        out[f"s{s}"] = nb.psnr_region(gt, r.mean(0).abs(), hole, mx)
        out[f"s{s}_1"] = nb.psnr_region(gt, r[0].abs(), hole, mx)
        out[f"t{s}"] = time.time() - t
    for k, v in out.items(): res.setdefault((c, k), []).append(v)
    print(c, i, {k: round(v, 2) for k, v in out.items()}, flush=True)
for k, v in res.items(): print(k, round(np.mean(v), 2), round(min(v), 2))
