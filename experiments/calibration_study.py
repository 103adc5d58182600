"""Calibrated uncertainty maps per sampler (issue 18): raw coverage, width, std-error rank correlation, and
conformal risk control (``recon.uncertainty.calibrate``) on held-out simulated slices.

Units (``--set``):

- ``template``: the 10 held-out MNI152 slices (``recon.problems.multicoil_problem``) x ``--seeds`` mask/noise
  seeds; the calibration half is slices 0-4 (all seeds), the test half slices 5-9, so no anatomy is in both.
- ``real``: the 15 real MR slices of other scanners and contrasts that registry packages ship
  (``experiments/prior_generalisation.py``'s ``real`` set: nibabel's EPI, dipy's b0 EPI and coronal T1), simulated
  as there (8 coils, 30 dB, fastMRI random mask, ESPIRiT); the calibration half is every other slice (0, 2, ...),
  the test half the rest.

Against the complex ground truth, inside the object (|x_true| > 10% of its maximum). Each unit's samples are cached
in ``--cache`` (one .pt per sampler, set, R, slice, seed), so a run can be stopped and resumed, and ``--analyze``
makes the table and figures from whatever the cache holds. Calibration is ``recon.uncertainty.calibrate`` with its
default rule (``empirical``, ``offset="auto"``) and, where there are enough slices, conformal risk control
(``crc``). Its width is compared with the constant-width interval around the mean of the same coverage, with
coverage both as the mean over slices (``calibrate``'s risk) and pooled over pixels. Besides Spearman(std,
|error|) the table gives the std pooled over 1 pixel, the std against the 2-pixel local rms error, and the
rank correlation an exact posterior std would reach if the error std were that local rms (the per-pixel ceiling).

    OMP_NUM_THREADS=1 python experiments/calibration_study.py --set real --samplers dds50 --accelerations 4,8
"""
import argparse
import time
from pathlib import Path

import torch

from recon import plots, priors, samplers
from recon.problems import multicoil_problem
from recon.uncertainty import (calibrate, coverage, error_scale, heuristic, local_rms, object_of, rank_correlation,
                              values)

import prior_generalisation as pg

CONFIGS = {  # name -> (sampler class, parameters); short step counts (CPU) unless the name says otherwise
    "dds50": (samplers.DDS, {"eta": 0.85, "sigma_y": None, "cg_iter": 5}),   # the paper's setting
    "dds50-eta1": (samplers.DDS, {"eta": 1.0, "sigma_y": None, "cg_iter": 5}),  # the default until 2026-12-02
    "dds50-noise": (samplers.DDS, {}),                # the toolkit's default: the data weighed by its noise
    "dds-uncertainty": (samplers.DDS, {"tv_xy": 0.0}),  # recon uncertainty's default: the same without the TV
    "dds": (samplers.DDS, {"steps": 10, "eta": 0.85, "sigma_y": None, "cg_iter": 5}),
    "dds-eta1-cg1": (samplers.DDS, {"steps": 10, "eta": 1.0, "cg_iter": 1, "sigma_y": None}),
    "dds-gamma": (samplers.DDS, {"steps": 10, "eta": 1.0, "gamma": 1.0}),
    "score-mri": (samplers.ScoreMRI, {"steps": 10}),
    "dps": (samplers.DPS, {"steps": 10}),
    "score-ald": (samplers.ScoreALD, {"n_levels": 7}),
    "score-sde": (samplers.ScoreSDE, {"steps": 10}),
    "score-mri30": (samplers.ScoreMRI, {"steps": 30}),
    "score-sde30": (samplers.ScoreSDE, {"steps": 30}),
    # longer runs, nearer the papers' step counts (2000 Score-MRI, 1000 Score-SDE and DPS, 1155 x 3 Score-ALD)
    "score-mri200": (samplers.ScoreMRI, {"steps": 200}),
    "score-sde200": (samplers.ScoreSDE, {"steps": 200}),
    # the CG pseudo-inverse stopped early: 10 CG steps fit the 30 dB noise of multi-coil data (25.6 dB at 200 steps)
    "score-sde200-cg3": (samplers.ScoreSDE, {"steps": 200, "cg_iter": 3}),
    "dps200": (samplers.DPS, {"steps": 200}),
    "score-ald100": (samplers.ScoreALD, {"n_levels": 100}),
}
CAL, TEST = range(0, 5), range(5, 10)
POOL_SIGMA = 1.0   # pixels: the Gaussian window of the pooled std map
LOCAL_SIGMA = 2.0  # pixels: the Gaussian window of the local rms error


def is_cal(set_name, sl):
    return sl in CAL if set_name == "template" else sl % 2 == 0


def real_problem(sl, acc, seed):
    """Real package slice ``sl`` (0..14, the order of ``prior_generalisation.real_slices``) as a problem."""
    from operators import MultiCoilMRI, espirit, masks
    from recon.data import simulate
    _, _, a = pg.real_slices()[sl]
    x = pg._p99(torch.from_numpy(a).clamp_min(0)[None])[0].to(torch.complex64)
    k = simulate.simulate_multicoil(x, simulate.coil_maps(8, tuple(x.shape)), snr_db=30.0, seed=seed)
    m = masks.get("random", acceleration=acc, center_fraction=0.12)(tuple(k.shape), seed=seed)
    r_actual = float(m.numel() / m.sum()) if m.dim() else acc
    return x, m * k, MultiCoilMRI(espirit.maps_for_mask(m * k, m), m), r_actual


def run_unit(name, set_name, acc, sl, seed, n, prior, cache):
    path = cache / f"{name}_{set_name}_R{acc:g}_s{sl}_seed{seed}.pt"
    if path.exists():
        return
    cls, kw = CONFIGS[name]
    if set_name == "template":
        p = multicoil_problem(slice_index=sl, acceleration=acc, seed=seed)
        truth, y, A, r_actual = p.x_true, p.y, p.A, p.acceleration
    else:
        truth, y, A, r_actual = real_problem(sl, acc, seed)
    t = time.time()
    x = cls(**kw)(y, A, prior, n_samples=n, generator=torch.Generator().manual_seed(1000 * seed + sl))
    torch.save({"samples": x, "truth": truth, "seconds": time.time() - t, "R": r_actual}, path)
    print(f"{name} {set_name} R={acc:g} slice {sl} seed {seed}: {time.time() - t:.1f} s", flush=True)


def spearman(a, b):
    return rank_correlation(a, b)


def _abs_errors(units):
    return [(values(u["truth"]) - heuristic(u["samples"], 0.9)[0]).abs()[object_of(u["truth"])] for u in units]


def constant_width(test_units, coverage_, pooled=False):
    """The full width 2w of the interval [c - w, c + w] around the mean c whose coverage on the test units equals
    ``coverage_``: coverage as the mean over slices of each slice's fraction of object pixels (``calibrate``'s
    risk; found by bisection), or with ``pooled`` over all object pixels of the units together (the quantile of
    |ref - c|). The two agree when the slices have the same number of object pixels."""
    d = _abs_errors(test_units)
    if pooled:
        return 2 * float(torch.quantile(torch.cat(d).double(), min(coverage_, 1.0)))
    lo, hi = 0.0, float(max(float(x.max()) for x in d))
    for _ in range(60):
        w = (lo + hi) / 2
        cov = sum(float((x <= w).double().mean()) for x in d) / len(d)
        lo, hi = (w, hi) if cov < coverage_ else (lo, w)
    return 2 * hi


def evaluate(cb, test_units):
    """Coverage and mean width of calibration ``cb`` on ``test_units``, per slice averaged and pooled over
    pixels, with the width of the constant-width interval of the same coverage under each definition."""
    covs, widths, hit, tot, wsum = [], [], 0, 0, 0.0
    for u in test_units:
        lo, hi = cb.interval(u["samples"])
        obj, r = object_of(u["truth"]), values(u["truth"])
        inside = ((r >= lo) & (r <= hi))[obj]
        covs.append(float(inside.double().mean()))
        widths.append(float((hi - lo)[obj].double().mean()))
        hit, tot, wsum = hit + int(inside.sum()), tot + int(obj.sum()), wsum + float((hi - lo)[obj].double().sum())
    cov, cov_p = sum(covs) / len(covs), hit / tot
    return {"cov": cov, "width": sum(widths) / len(widths), "const": constant_width(test_units, cov),
            "cov_pooled": cov_p, "width_pooled": wsum / tot, "const_pooled": constant_width(test_units, cov_p, True)}


def _sample_std(samples):
    return (samples - samples.mean(0)).abs().square().mean(0).sqrt()


def _mean_spearman(units, map_of):
    """The mean over ``units`` of Spearman(map, |error of the mean|) over each unit's object pixels."""
    rs = []
    for u in units:
        obj = object_of(u["truth"])
        err = (values(u["samples"].mean(0)) - values(u["truth"])).abs()
        rs.append(spearman(map_of(u)[obj].flatten(), err[obj].flatten()))
    return sum(rs) / len(rs)


def pooled_std(samples, sigma=POOL_SIGMA):
    """The per-pixel std with the variance averaged over a Gaussian window of ``sigma`` pixels."""
    return heuristic(samples, 0.9, "std", smooth=sigma)[1]


def analyze(cache, out, level=0.9, n_use=None):
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    units = {}
    for f in sorted(cache.glob("*.pt")):
        parts = f.stem.rsplit("_", 4)
        if len(parts) == 4 or parts[1] not in ("template", "real"):   # caches written before --set existed
            parts = ["_".join(parts[:-3]), "template"] + parts[-3:]
        name, set_name, r, s, seed = parts
        u = torch.load(f)
        if n_use is not None:
            if u["samples"].shape[0] < n_use:
                continue
            u["samples"] = u["samples"][:n_use]
        units.setdefault((name, set_name, float(r[1:])), []).append((int(s[1:]), int(seed[4:]), u))
    rows = []
    levels = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    keys = sorted(units, key=lambda k: (k[1], k[2], list(CONFIGS).index(k[0]) if k[0] in CONFIGS else 99))
    panels = sorted({(k[1], k[2]) for k in keys})            # one column per (set, R)
    names = sorted({k[0] for k in keys}, key=lambda n: list(CONFIGS).index(n) if n in CONFIGS else 99)
    colour = {n: f"C{i % 10}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(2, len(panels), figsize=(3.3 * len(panels) + 1, 6.6), squeeze=False,
                             constrained_layout=True)
    for key in keys:
        name, set_name, acc = key
        us = units[key]
        allu = [u for _, _, u in us]
        raw_cov, width, rho, rho_pooled, rho_local, ceiling = [], [], [], [], [], []
        for u in allu:
            c, l, h = heuristic(u["samples"], level)
            obj = object_of(u["truth"])
            raw_cov.append(coverage(c - l, c + h, u["truth"]))
            width.append(float((l + h)[obj].mean()))
            std = (u["samples"] - u["samples"].mean(0)).abs().square().mean(0).sqrt()
            err = (c - values(u["truth"])).abs()
            rho.append(spearman(std[obj].flatten(), err[obj].flatten()))
            rho_pooled.append(spearman(pooled_std(u["samples"])[obj].flatten(), err[obj].flatten()))
            local = local_rms(err, LOCAL_SIGMA)   # local rms of the error
            rho_local.append(spearman(std[obj].flatten(), local[obj].flatten()))
            # the rank correlation an exact posterior std would reach if the error std were ``local``:
            # Spearman(sigma, |sigma z|), z standard normal per pixel
            z = torch.randn(local.shape, generator=torch.Generator().manual_seed(0))
            ceiling.append(spearman(local[obj].flatten(), (local * z).abs()[obj].flatten()))
        row = {"sampler": name, "set": set_name, "R": acc, "units": len(allu), "raw_cov": sum(raw_cov) / len(allu),
               "raw_width": sum(width) / len(allu), "spearman": sum(rho) / len(allu),
               "spearman_pooled": sum(rho_pooled) / len(allu), "samples": int(allu[0]["samples"].shape[0]),
               "spearman_local": sum(rho_local) / len(allu), "spearman_ceiling": sum(ceiling) / len(allu),
               "s_per_unit": sum(u["seconds"] for u in allu) / len(allu), "R_actual": allu[0]["R"]}
        cal = [u for s, _, u in us if is_cal(set_name, s)]
        test = [u for s, _, u in us if not is_cal(set_name, s)]
        if len(cal) >= 2 and test:
            cb = calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], level, sampler=name)
            e = evaluate(cb, test)
            row.update(lam=cb.lam, offset=cb.offset, cal_n=len(cal), cal_cov=e["cov"], cal_width=e["width"],
                       const_width=e["const"], cal_cov_pooled=e["cov_pooled"], cal_width_pooled=e["width_pooled"],
                       const_width_pooled=e["const_pooled"])
            e = evaluate(calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], level, offset=0.0), test)
            row.update(cal_cov_plain=e["cov"], cal_width_plain=e["width"], const_width_plain=e["const"])
            cs = calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], level, kind="std", offset=0.0)
            e = evaluate(cs, test)
            row.update(lam_std=cs.lam, cal_cov_std=e["cov"], cal_width_std=e["width"], const_width_std=e["const"])
            if min(min(u["truth"].shape) for u in allu) > 12:
                cl = calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], level, kind="learned")
                e = evaluate(cl, test)
                row.update(lam_learned=cl.lam, offset_learned=cl.offset, weights_learned=cl.weights,
                           cal_cov_learned=e["cov"], cal_width_learned=e["width"], const_width_learned=e["const"],
                           spearman_learned_test=_mean_spearman(test, lambda u: error_scale(u["samples"],
                                                                                            cl.weights)),
                           spearman_std_test=_mean_spearman(test, lambda u: _sample_std(u["samples"])))
            if len(cal) >= 9:
                cc = calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], level, method="crc")
                row.update(lam_crc=cc.lam, cal_cov_crc=sum(coverage(*cc.interval(u["samples"]), u["truth"])
                                                           for u in test) / len(test))
        # reliability: nominal level against empirical coverage (raw; after calibration at each level)
        raw_curve, cal_curve = [], []
        for lv in levels:
            raw_curve.append(sum(coverage(*(lambda c, l, h: (c - l, c + h))(*heuristic(u["samples"], lv)),
                                          u["truth"]) for u in allu) / len(allu))
            if len(cal) >= 2 and test:
                cb = calibrate([u["samples"] for u in cal], [u["truth"] for u in cal], lv)
                cal_curve.append(sum(coverage(*cb.interval(u["samples"]), u["truth"]) for u in test) / len(test))
            else:
                cal_curve.append(float("nan"))
        col = panels.index((set_name, acc))
        ax0, ax1 = axes[0, col], axes[1, col]
        ax0.plot(levels, raw_curve, "o--", color=colour[name], ms=3)
        ax0.plot(levels, cal_curve, "s-", color=colour[name], ms=3, label=name)
        row["reliability_raw"], row["reliability_cal"] = raw_curve, cal_curve
        # |error| against std, binned (deciles of std over all object pixels)
        std_all, err_all = [], []
        for u in allu:
            c, _, _ = heuristic(u["samples"], level)
            obj = object_of(u["truth"])
            std_all.append((u["samples"] - u["samples"].mean(0)).abs().square().mean(0).sqrt()[obj])
            err_all.append((c - values(u["truth"])).abs()[obj])
        s_, e_ = torch.cat(std_all), torch.cat(err_all)
        edges = torch.quantile(s_.double(), torch.linspace(0, 1, 11, dtype=torch.float64))
        b = torch.bucketize(s_.double(), edges[1:-1])
        ax1.loglog([float(s_[b == i].mean()) for i in range(10)], [float(e_[b == i].mean()) for i in range(10)],
                   "o-", color=colour[name], ms=3, label=name)
        rows.append(row)
    for col, (set_name, acc) in enumerate(panels):
        ax0, ax1 = axes[0, col], axes[1, col]
        ax0.plot([0.5, 0.95], [0.5, 0.95], "k:", lw=1)
        ax0.set_xlabel("nominal level")
        ax0.set_title(f"{set_name}, R = {acc:g}: raw (--), calibrated (-)", fontsize=8)
        lo, hi = min(ax1.get_xlim()[0], ax1.get_ylim()[0]), max(ax1.get_xlim()[1], ax1.get_ylim()[1])
        ax1.plot([lo, hi], [lo, hi], "k:", lw=1)
        ax1.set_xlabel("posterior std (decile bin mean)")
        ax1.set_title(f"{set_name}, R = {acc:g}: |error| against std", fontsize=8)
    axes[0, 0].set_ylabel("empirical coverage (object pixels)")
    axes[1, 0].set_ylabel("mean |error| of the mean")
    axes[0, 0].legend(fontsize=6)
    plots.save_figure(fig, out / "calibration.png")
    print("| sampler | set | R | samples | units | raw 90% coverage | raw mean width | Spearman(std, abs err) | "
          f"Spearman(pooled std {POOL_SIGMA:g} px) | Spearman(std, local rms error {LOCAL_SIGMA:g} px) | "
          "exact-posterior ceiling | default calibration: offset, lambda, coverage (test half), width | "
          "constant width, same coverage | pooled over pixels: coverage, width, constant width | "
          "offset 0: coverage, width, constant width | "
          "std-shaped offset 0: coverage, width, constant width | crc: lambda, coverage | s/unit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cal = (f"{r['offset']:g}, {r['lam']:.2f}, {r['cal_cov']:.3f}, {r['cal_width']:.4f} | {r['const_width']:.4f} | "
               f"{r['cal_cov_pooled']:.3f}, {r['cal_width_pooled']:.4f}, {r['const_width_pooled']:.4f} | "
               f"{r['cal_cov_plain']:.3f}, {r['cal_width_plain']:.4f}, {r['const_width_plain']:.4f}"
               if "lam" in r else "- | - | - | -")
        cal += (f" | {r['cal_cov_std']:.3f}, {r['cal_width_std']:.4f}, {r['const_width_std']:.4f}"
                if "lam_std" in r else " | -")
        cal += f" | {r['lam_crc']:.2f}, {r['cal_cov_crc']:.3f}" if "lam_crc" in r else " | -"
        print(f"| {r['sampler']} | {r['set']} | {r['R_actual']:.2f} | {r['samples']} | {r['units']} | "
              f"{r['raw_cov']:.3f} | "
              f"{r['raw_width']:.4f} | {r['spearman']:.3f} | {r['spearman_pooled']:.3f} | {r['spearman_local']:.3f} | "
              f"{r['spearman_ceiling']:.3f} | {cal} | "
              f"{r['s_per_unit']:.1f} |")
    print()
    print("| sampler | set | R | samples | test Spearman(std, abs err) | test Spearman(learned scale, abs err) | "
          "learned: offset, lambda, coverage (test half), width | constant width, same coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "lam_learned" in r:
            print(f"| {r['sampler']} | {r['set']} | {r['R_actual']:.2f} | {r['samples']} | "
                  f"{r['spearman_std_test']:.3f} | {r['spearman_learned_test']:.3f} | {r['offset_learned']:g}, "
                  f"{r['lam_learned']:.2f}, {r['cal_cov_learned']:.3f}, {r['cal_width_learned']:.4f} | "
                  f"{r['const_width_learned']:.4f} |")
    import json
    (out / "calibration_study.json").write_text(json.dumps(rows, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samplers", default=",".join(CONFIGS))
    ap.add_argument("--accelerations", default="8,4")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--set", default="template", choices=("template", "real"))
    ap.add_argument("--prior", default="bundled:mni-brain-128")
    ap.add_argument("--slices", default=None, help="slices a:b to run (default: all of the set; the analysis uses "
                    "what exists)")
    ap.add_argument("--cache", default="/tmp/calibration_study_cache")
    ap.add_argument("--analyze", action="store_true", help="only make the table and figures from the cache")
    ap.add_argument("--use-samples", type=int, default=None, help="analyse the first N samples of each unit")
    ap.add_argument("--out", default="experiments/results", help="folder of calibration.png / "
                    "calibration_study.json")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not args.analyze:
        prior = priors.load(args.prior)
        n_set = 10 if args.set == "template" else len(pg.real_slices())
        rng = range(*map(int, args.slices.split(":"))) if args.slices else range(n_set)
        for acc in [float(a) for a in args.accelerations.split(",")]:
            for name in args.samplers.split(","):
                for seed in range(args.seeds):
                    for sl in rng:
                        run_unit(name, args.set, acc, sl, seed, args.samples, prior, cache)
    analyze(cache, Path(args.out), n_use=args.use_samples)


if __name__ == "__main__":
    main()
