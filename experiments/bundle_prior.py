"""Package a trained prior as a bundled prior: EMA weights (half precision), config, loss curve, sample grid.

    python experiments/bundle_prior.py out/train-mni128 recon/priors/bundled/mni-brain-128 [--large 320]
    python experiments/bundle_prior.py --samples recon/priors/bundled/brain-synth-128 --large 320

Writes prior.json/prior.pt (from the training run's prior.json/pt), train_config.json, loss.csv, loss.png and
samples.png (16 unconditional samples, Heun, 30 levels, seed 0); with ``--large N`` also samples_N.png (4 samples
at N x N by ``tasks.synthesize``, seed 0: above the training grid that is its cascade, a base sample on the
training grid upsampled and refined). ``--samples DIR`` redraws only the sample grids of a bundled prior. The
model card (MODEL_CARD.md) is written by hand next to them.
"""
import csv
import shutil
import sys
from pathlib import Path

import torch

from recon import plots, priors, tasks
from recon.samplers import Heun


def main(run: str, dest: str, large: int = 0):
    run, dest = Path(run), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("prior.json", "prior.pt", "loss.csv"):
        shutil.copy(run / name, dest / name)
    shutil.copy(run / "config.json", dest / "train_config.json")
    steps, losses = [], []
    with open(dest / "loss.csv") as f:
        for r in csv.DictReader(f):
            steps.append(int(r["step"]))
            losses.append(float(r["loss"]))
    k = 50  # running mean over 50 steps
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    plots.save_curve(steps, smooth, dest / "loss.png", xlabel="step", ylabel="EDM loss (running mean of 50)",
                     logy=True, title="training loss")
    samples(dest, large)
    print(f"bundled {run} -> {dest}")


def samples(dest, large: int = 0):
    dest = Path(dest)
    prior = priors.load(dest / "prior.json")
    with torch.no_grad():
        x = Heun(steps=30)(prior=prior, n_samples=16, shape=(128, 128), generator=torch.Generator().manual_seed(0))
    if prior.channels == "real" and prior.normalization.kind == "fixed":  # a CT prior: show HU, soft-tissue window
        from recon.data.ct import window
        from recon.data.phantoms import mu_to_hu
        hu = mu_to_hu(x * prior.normalization.value)
        plots.save_grid(window(hu, -100.0, 1200.0), dest / "samples.png", ncols=4,
                        title=f"{prior.name}: unconditional samples (HU, window -100/1200)")
    else:
        plots.save_grid(x.abs(), dest / "samples.png", ncols=4, title=f"{prior.name}: unconditional samples (|x|)")
    if large:
        with torch.no_grad():
            x = tasks.synthesize(prior, 4, shape=(large, large), steps=30, seed=0)
        x = x.abs() if x.is_complex() else x
        how = "cascade" if tuple(tasks.base_shape(prior, (large, large))) != (large, large) else "Heun"
        plots.save_grid(x, dest / f"samples_{large}.png", ncols=2,
                        title=f"{prior.name}: samples at {large} x {large} ({how}, |x|)")


if __name__ == "__main__":
    args = sys.argv[1:]
    big = int(args[args.index("--large") + 1]) if "--large" in args else 0
    if args[0] == "--samples":
        samples(args[1], big)
    else:
        main(args[0], args[1], big)
