"""How much of the per-pixel error of a posterior mean can any std map rank? (issue 18)

Reads the sample cache of ``calibration_study.py`` (one .pt per sampler, set, R, slice, seed) and prints, per
sampler, over the units that every listed sampler has:

- the PSNR of the sample mean (against the complex truth, on |x|, over the whole image);
- Spearman(std, |error|) over the object pixels, the measure of the issue;
- the agreement of the error with itself: Spearman(|error of the mean of samples 1..N/2|, |error of the mean of
  samples N/2+1..N|). Near 1 means the error is fixed by the data, the prior and the sampler (a bias), not Monte
  Carlo noise of the mean;
- the agreement of its error with the first sampler's error (Spearman of the two |error| maps): how much of the
  error is the truth's unknown part that every sampler misses alike;
- sd(log std) over the object, and the Spearman an exact Gaussian posterior would reach with a std map of that
  spread: for |error| = sigma |z|, Spearman(sigma, sigma |z|) depends only on the spread of log sigma
  (0.21, 0.30, 0.39, 0.44 for sd 0.2, 0.3, 0.4, 0.48).

    python experiments/uncertainty_error_structure.py out/cal_tmpl dds-uncertainty,score-mri200,dps200 --seed 0
"""
import argparse
import math
from pathlib import Path

import torch

from recon.uncertainty import object_of, rank_correlation, values


def gaussian_ceiling(sd_log, n=200_000, seed=0):
    """Spearman(sigma, sigma |z|) for log sigma ~ N(0, sd_log^2) and z ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    ls = sd_log * torch.randn(n, generator=g, dtype=torch.float64)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    return rank_correlation(ls, ls.exp() * z.abs())


def psnr(c, t):
    t = values(t)
    return 10 * math.log10(float(t.max()) ** 2 / float((values(c) - t).square().mean()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("samplers", help="comma-separated config names; the first is the reference of the agreement")
    ap.add_argument("--set", default="template")
    ap.add_argument("--R", default="4")
    ap.add_argument("--seed", type=int, default=None, help="only units of this mask/noise seed")
    a = ap.parse_args()
    names = a.samplers.split(",")
    cache = Path(a.cache)
    units = {}
    for n in names:
        for f in cache.glob(f"{n}_{a.set}_R{a.R}_s*_seed*.pt"):
            sl, sd = f.stem.rsplit("_", 2)[-2:]
            if a.seed is None or int(sd[4:]) == a.seed:
                units.setdefault((sl, sd), {})[n] = f
    keys = sorted(k for k, v in units.items() if len(v) == len(names))
    if not keys:
        raise SystemExit(f"no unit of {a.set} R{a.R} in {cache} has all of {names}")
    rows = {n: [] for n in names}
    for k in keys:
        data = {n: torch.load(units[k][n]) for n in names}
        truth = data[names[0]]["truth"]
        obj = object_of(truth)
        err0 = None
        for n in names:
            x = data[n]["samples"]
            h = x.shape[0] // 2
            err = (values(x.mean(0)) - values(truth)).abs()
            std = (x - x.mean(0)).abs().square().mean(0).sqrt()
            e1 = (values(x[:h].mean(0)) - values(truth)).abs()
            e2 = (values(x[h:].mean(0)) - values(truth)).abs()
            err0 = err if err0 is None else err0
            rows[n].append((psnr(x.mean(0), truth), rank_correlation(std[obj], err[obj]),
                            rank_correlation(e1[obj], e2[obj]), rank_correlation(err[obj], err0[obj]),
                            float(torch.log(std[obj].clamp_min(1e-12)).std())))
    print(f"{len(keys)} units ({a.set}, R {a.R}{'' if a.seed is None else f', seed {a.seed}'})\n")
    print("| sampler | PSNR of the mean | Spearman(std, abs err) | error of one half-mean against the other's | "
          f"error against {names[0]}'s | sd(log std) | exact-Gaussian Spearman at that spread |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        m = [sum(c) / len(c) for c in zip(*rows[n])]
        print(f"| {n} | {m[0]:.2f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} | {m[4]:.3f} | {gaussian_ceiling(m[4]):.3f} |")


if __name__ == "__main__":
    main()
