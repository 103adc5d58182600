"""DDS data weight on validation slices (not a test set): the template held-out slices 0/3/6/9 (8 coils, 30 dB,
fastMRI random 4x), CG-SENSE and DDS with gamma None (noiseless CG, the default), 20 and 50.

    python experiments/dds_gamma_check.py bundled:brain-synth-128
"""
import sys, torch
sys.path.insert(0, "experiments")
import prior_generalisation as pg
from recon import classical, metrics, priors, samplers
from recon.data import brain
prior = priors.load(sys.argv[1])
x_all = brain.load_heldout(128)
res = {}
for i in (0, 3, 6, 9):
    x = x_all[i]; y, A = pg.problem(x); gt = x.abs().numpy()
    res.setdefault("cg", []).append(metrics.psnr(gt, classical.cg_sense(y, A).abs().numpy()))
    for k, kw in {"default": {}, "gamma20": {"gamma": 20.0}, "gamma50": {"gamma": 50.0}}.items():
        r = samplers.DDS(**kw)(y, A, prior, generator=torch.Generator().manual_seed(0))[0]
        res.setdefault(k, []).append(metrics.psnr(gt, r.abs().numpy()))
    print(i, {k: round(v[-1], 2) for k, v in res.items()}, flush=True)
print({k: round(sum(v) / len(v), 2) for k, v in res.items()})
