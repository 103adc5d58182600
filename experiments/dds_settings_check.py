"""DDS settings on validation slices (not a test set), 8 coils, 30 dB, fastMRI random 4x:

- the template held-out slices 0/3/6/9 (T1, 1.53 mm, 128 x 128);
- synthetic slices of seeded random contrast from the held-out tissue maps 2/5/8 (the synth test set of
  ``prior_generalisation.py`` uses maps 0/3/6/9 and named contrasts), at 1.0 mm (196 x 196) and 1.4 mm
  (140 x 140).

CG-SENSE and DDS at the named settings: a key of ``SETTINGS`` or ``KEY=VALUE;KEY=VALUE`` for ``samplers.DDS``
(e.g. ``sigma_y=auto;lam=0.5``). Prints PSNR per slice and the mean per group.

    python experiments/dds_settings_check.py bundled:brain-synth-128 default,gamma20,sigma_y=auto;lam=0.5
"""
import sys

import torch

sys.path.insert(0, "experiments")
import prior_generalisation as pg  # noqa: E402
from recon import classical, metrics, priors, samplers  # noqa: E402
from recon.data import brain, synth  # noqa: E402

SETTINGS = {"default": {}, "gamma20": {"gamma": 20.0}, "gamma50": {"gamma": 50.0}, "eta1": {"eta": 1.0},
            "eta0.85": {"eta": 0.85}, "eta0.5": {"eta": 0.5}}
SYNTH_VAL = [(1.0, 196), (1.4, 140)]
SYNTH_MAPS = [2, 5, 8]


def validation_images():
    x_all = brain.load_heldout(128)
    for i in (0, 3, 6, 9):
        yield "template", i, x_all[i]
    g = torch.Generator().manual_seed(1234)
    c = synth.draw_intensities(len(SYNTH_MAPS), g, "random")[0]
    for px, n in SYNTH_VAL:
        for j, x in zip(SYNTH_MAPS, pg.synth_slices("random", c.tolist(), px, n, SYNTH_MAPS)):
            yield f"random-{px}mm-{n}px", j, x


def settings(name: str):
    if name in SETTINGS:
        return SETTINGS[name]
    return pg.dds_variant(name.replace(";", ","))[0]


def main():
    prior = priors.load(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["default", "gamma20", "gamma50"]
    groups = {}
    for case, i, x in validation_images():
        y, A = pg.problem(x)
        gt = x.abs().numpy()
        row = {"cg": metrics.psnr(gt, classical.cg_sense(y, A).abs().numpy())}
        for k in names:
            s = settings(k)
            dds = samplers.DDS(**s) if isinstance(s, dict) else s
            r = dds(y, A, prior, generator=torch.Generator().manual_seed(0))[0]
            row[k] = metrics.psnr(gt, r.abs().numpy())
        for k, v in row.items():
            groups.setdefault(case, {}).setdefault(k, []).append(v)
            groups.setdefault("all", {}).setdefault(k, []).append(v)
        print(case, i, {k: round(v, 2) for k, v in row.items()}, flush=True)
    for case, res in groups.items():
        print(case, {k: round(sum(v) / len(v), 2) for k, v in res.items()})


if __name__ == "__main__":
    main()
