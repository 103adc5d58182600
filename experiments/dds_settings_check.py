"""DDS settings on validation slices (not a test set): the template held-out slices 0/3/6/9 (8 coils, 30 dB,
fastMRI random 4x); CG-SENSE and DDS at the named settings (``SETTINGS``: the data weight gamma, None being the
noiseless CG of the default, and the DDIM stochasticity eta).

    python experiments/dds_settings_check.py bundled:brain-synth-128 default,gamma20,gamma50,eta1
"""
import sys

import torch

sys.path.insert(0, "experiments")
import prior_generalisation as pg  # noqa: E402
from recon import classical, metrics, priors, samplers  # noqa: E402
from recon.data import brain  # noqa: E402

SETTINGS = {"default": {}, "gamma20": {"gamma": 20.0}, "gamma50": {"gamma": 50.0}, "eta1": {"eta": 1.0},
            "eta0.85": {"eta": 0.85}, "eta0.5": {"eta": 0.5}}


def main():
    prior = priors.load(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["default", "gamma20", "gamma50"]
    x_all = brain.load_heldout(128)
    res = {}
    for i in (0, 3, 6, 9):
        x = x_all[i]
        y, A = pg.problem(x)
        gt = x.abs().numpy()
        res.setdefault("cg", []).append(metrics.psnr(gt, classical.cg_sense(y, A).abs().numpy()))
        for k in names:
            r = samplers.DDS(**SETTINGS[k])(y, A, prior, generator=torch.Generator().manual_seed(0))[0]
            res.setdefault(k, []).append(metrics.psnr(gt, r.abs().numpy()))
        print(i, {k: round(v[-1], 2) for k, v in res.items()}, flush=True)
    print({k: round(sum(v) / len(v), 2) for k, v in res.items()})


if __name__ == "__main__":
    main()
