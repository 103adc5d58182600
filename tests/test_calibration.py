"""Calibrated uncertainty intervals (issue 18): conformal risk control over calibration slices."""
import json

import h5py
import pytest
import torch

from gaussian_problems import inpainting_problem
from recon.uncertainty import Calibration, calibrate, coverage, heuristic, min_slices


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_exact_posterior_samples_give_nominal_coverage_without_calibration():
    """Samples and truth drawn from the exact Gaussian posterior (closed form): the raw central 90% sample
    quantile interval covers the truth at the nominal rate."""
    _, _, _, m, var = inpainting_problem()
    m, sd = m.float(), var.float().sqrt()
    g = _gen(0)
    covs = []
    for _ in range(300):
        x = m + sd * torch.randn((400, 4, 4), generator=g)
        truth = m + sd * torch.randn((4, 4), generator=g)
        c, lo, up = heuristic(x, 0.9)
        covs.append(coverage(c - lo, c + up, truth, torch.ones(4, 4, dtype=torch.bool)))
    assert abs(sum(covs) / len(covs) - 0.9) < 0.015


def _synthetic_slices(n, seed, spread=0.3, size=12, n_samples=8):
    """Exchangeable slices: a truth drawn from a per-slice Gaussian posterior N(m, s^2) (s varies over pixels and
    slices), and an under-dispersed sampler whose samples are m + spread * s * z."""
    g = _gen(seed)
    out = []
    for _ in range(n):
        m = 1 + torch.rand((size, size), generator=g)
        s = 0.05 * (0.5 + torch.rand((size, size), generator=g)) * (0.5 + torch.rand((), generator=g))
        truth = m + s * torch.randn((size, size), generator=g)
        x = m + spread * s * torch.randn((n_samples, size, size), generator=g)
        out.append((x, truth))
    return out


def _split_coverage(method, n_cal, trials=100, n_units=40):
    units = _synthetic_slices(n_units, 1)
    g = _gen(2)
    cal_cov, raw_cov = [], []
    for _ in range(trials):
        perm = torch.randperm(len(units), generator=g).tolist()
        cal, test = [units[i] for i in perm[:n_cal]], [units[i] for i in perm[n_cal:]]
        cb = calibrate([x for x, _ in cal], [r for _, r in cal], level=0.9, method=method)
        for x, r in test:
            cal_cov.append(coverage(*cb.interval(x), r))
            c, lo, up = heuristic(x, 0.9)
            raw_cov.append(coverage(c - lo, c + up, r))
    return sum(cal_cov) / len(cal_cov), sum(raw_cov) / len(raw_cov)


def test_calibrated_coverage_is_at_least_the_level_in_expectation():
    """Averaged over many random calibration/test splits of exchangeable slices, the conformal-risk-control
    intervals (method crc) cover at least 90% of the object pixels of the test slices (its guarantee); the raw
    quantile intervals of the under-dispersed sampler do not, so replacing the calibration by them fails this
    test."""
    n_cal = 19
    mean_cal, mean_raw = _split_coverage("crc", n_cal)
    assert mean_cal >= 0.9 - 0.005, mean_cal
    assert mean_cal <= 0.9 + 2 / (n_cal + 1) + 0.01  # and not trivially wide (CRC's upper bound, continuous loss)
    assert mean_raw < 0.6, mean_raw                  # the raw intervals miss: the test tells the two apart


def test_empirical_calibration_covers_near_the_level_with_few_slices():
    """The default (empirical) rule with only 5 calibration slices, where crc refuses: coverage near 90% in
    expectation (within 1.5 points, inside its worst-case guarantee of 0.9 - 0.1/6), not the raw 0.4."""
    mean_cal, mean_raw = _split_coverage("empirical", 5, trials=60)
    assert abs(mean_cal - 0.9) < 0.015, mean_cal
    assert mean_cal >= 0.9 - 0.1 / 6
    assert mean_raw < 0.6, mean_raw


def test_lambda_is_the_smallest_value_meeting_the_corrected_risk_bound():
    units = _synthetic_slices(12, 3)
    xs, rs = [x for x, _ in units], [r for _, r in units]
    cb = calibrate(xs, rs, level=0.9, kind="std", method="crc", offset=0.0)
    n = len(units)

    def bound(lam):
        risk = sum(1 - coverage(*Calibration(lam, 0.9, "std", n, 0, 0).interval(x), r) for x, r in units) / n
        return n / (n + 1) * risk + 1 / (n + 1)

    assert bound(cb.lam) <= 0.1 + 1e-9
    assert bound(cb.lam * (1 - 1e-4)) > 0.1
    c, lo, up = heuristic(xs[0], 0.9, "std")
    a, b = cb.interval(xs[0])
    assert torch.allclose(a, c - cb.lam * lo) and torch.allclose(b, c + cb.lam * up)
    emp = calibrate(xs, rs, level=0.9, kind="std", offset=0.0)  # empirical: R_n(lam) <= 0.1 at the smallest lam
    risk = lambda lam: sum(1 - coverage(*Calibration(lam, 0.9, "std", n, 0, 0).interval(x), r)  # noqa: E731
                           for x, r in units) / n
    assert emp.method == "empirical" and emp.lam < cb.lam
    assert risk(emp.lam) <= 0.1 + 1e-9 and risk(emp.lam * (1 - 1e-4)) > 0.1


def test_save_load_round_trip_and_mismatched_settings_refused(tmp_path):
    units = _synthetic_slices(10, 4)
    cb = calibrate([x for x, _ in units], [r for _, r in units], 0.9, sampler="dds", mask="random",
                   acceleration=4.0, steps=20, prior="bundled:mni-brain-128", info={"samples": 8})
    path = cb.save(tmp_path / "cal.json")
    assert json.loads(path.read_text())["format"] == "recon-calibration-1"
    back = Calibration.load(path)
    assert back == cb and back.offset == cb.offset
    lo, hi = back.interval(units[0][0])
    assert torch.equal(lo, cb.interval(units[0][0])[0]) and bool((hi >= lo).all())
    back.check_matches("dds", "random", 4.0)
    for kw, name in (({"sampler": "dps"}, "sampler"), ({"mask": "poisson"}, "mask"),
                     ({"acceleration": 8.0}, "acceleration")):
        args = {"sampler": "dds", "mask": "random", "acceleration": 4.0, **kw}
        with pytest.raises(ValueError, match=f"made for {name}"):
            back.check_matches(**args)
    (tmp_path / "bad.json").write_text('{"lam": 1}')
    with pytest.raises(ValueError, match="not a recon-calibration-1 file"):
        Calibration.load(tmp_path / "bad.json")


def test_bad_input_is_refused_with_one_clear_error():
    units = _synthetic_slices(10, 5, size=6)
    xs, rs = [x for x, _ in units], [r for _, r in units]
    with pytest.raises(ValueError, match=r"references\[3\] has shape \(5, 6\)"):
        calibrate(xs, rs[:3] + [rs[3][:5]] + rs[4:])
    with pytest.raises(ValueError, match="at least 2 posterior samples"):
        calibrate([xs[0][:1]] + xs[1:], rs)
    for level in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="level"):
            calibrate(xs, rs, level=level)
    with pytest.raises(ValueError, match="needs at least 9 calibration slices"):
        calibrate(xs[:5], rs[:5], level=0.9, method="crc")
    with pytest.raises(ValueError, match="at least 2 calibration slices"):
        calibrate(xs[:1], rs[:1], level=0.9)
    with pytest.raises(ValueError, match="method must be one of empirical, crc"):
        calibrate(xs, rs, method="bonferroni")
    with pytest.raises(ValueError, match="one of each per calibration slice"):
        calibrate(xs, rs[:-1])
    assert min_slices(0.9, "crc") == 9 and min_slices(0.5, "crc") == 1 and min_slices(0.9) == 2
    with pytest.raises(ValueError, match="offset must be a number >= 0 or 'auto'"):
        calibrate(xs, rs, offset="widest")
    with pytest.raises(ValueError, match="offset must be a finite number >= 0"):
        calibrate(xs, rs, offset=-1.0)
    with pytest.raises(ValueError, match="smooth must be a finite number >= 0"):
        calibrate(xs, rs, smooth=float("nan"))


def _varied_slices(n, seed, informative, size=12, n_samples=16):
    """Slices whose posterior std varies 400-fold over the pixels; the samples' spread is 0.3 times it
    (``informative``) or drawn independently of it."""
    g = _gen(seed)
    out = []
    for _ in range(n):
        m = 1 + torch.rand((size, size), generator=g)
        s = 0.05 * (0.05 + torch.rand((size, size), generator=g)) ** 2
        fake = 0.3 * s if informative else 0.3 * 0.05 * (0.05 + torch.rand((size, size), generator=g)) ** 2
        out.append((m + fake * torch.randn((n_samples, size, size), generator=g),
                    m + s * torch.randn((size, size), generator=g)))
    return out


def _test_width_and_coverage(cb, units):
    covs, widths = [], []
    for x, r in units:
        lo, hi = cb.interval(x)
        covs.append(coverage(lo, hi, r))
        widths.append(float((hi - lo).mean()))
    return sum(covs) / len(covs), sum(widths) / len(widths)


def test_offset_auto_falls_back_to_one_width_when_the_spread_is_uninformative():
    """A spread unrelated to the error: the floor that ``offset='auto'`` chooses makes the intervals narrower
    than the spread-shaped ones (offset 0) at about the same coverage; an informative spread keeps a small
    floor and beats one width per slice."""
    units = _varied_slices(40, 11, informative=False)
    cal, test = units[:20], units[20:]
    auto = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9)
    plain = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, offset=0.0)
    assert auto.offset >= 0.1, auto.offset
    (ca, wa), (cp, wp) = _test_width_and_coverage(auto, test), _test_width_and_coverage(plain, test)
    assert abs(ca - 0.9) < 0.03 and abs(cp - 0.9) < 0.03, (ca, cp)
    assert wa < 0.8 * wp, (wa, wp)
    units = _varied_slices(40, 12, informative=True)
    cal, test = units[:20], units[20:]
    auto = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9)
    flat = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, offset=1.0)
    assert auto.offset <= 0.01, auto.offset
    assert _test_width_and_coverage(auto, test)[1] < _test_width_and_coverage(flat, test)[1]


def test_smoothing_pools_the_spread_and_round_trips():
    g = _gen(13)
    x = 1 + 0.1 * torch.randn((4, 16, 16), generator=g)
    c, lo, up = heuristic(x, 0.9, "std")
    c2, lo2, up2 = heuristic(x, 0.9, "std", smooth=1.5)
    assert torch.equal(c, c2)
    assert float(lo2.std()) < 0.5 * float(lo.std())                   # steadier
    assert abs(float(lo2.square().mean()) - float(lo.square().mean())) < 0.1 * float(lo.square().mean())
    flat = torch.ones(5, 9, 9)
    flat[::2] = 2.0                                                   # std 0.4899 everywhere
    _, l3, _ = heuristic(flat, 0.9, "std", smooth=2.0)
    assert torch.allclose(l3, torch.full_like(l3, 0.4898979), atol=1e-5)
    units = _synthetic_slices(6, 14)
    cb = calibrate([x for x, _ in units], [r for _, r in units], 0.9, smooth=1.0, offset=0.5)
    assert (cb.smooth, cb.offset) == (1.0, 0.5)


def test_recon_calibrate_then_uncertainty_with_the_calibration(tmp_path, capsys):
    from recon.cli import main
    sim, cal, out = tmp_path / "sim.h5", tmp_path / "cal.json", tmp_path / "u.h5"
    common = ["--samples", "2", "--steps", "2", "--center-fraction", "0.12"]
    assert main(["--quiet", "simulate", str(sim), "--slices", "0:3", "--size", "64"]) == 0
    before = sim.read_bytes()
    assert main(["--quiet", "calibrate", str(sim), *common, "--level", "0.75", "--heuristic", "std",
                 "--out", str(cal)]) == 0
    c = Calibration.load(cal)
    assert (c.sampler, c.mask, c.acceleration, c.level, c.slices) == ("dds", "random", 4.0, 0.75, 3)
    png = tmp_path / "u.png"
    assert main(["--quiet", "uncertainty", str(sim), *common, "--calibration", str(cal), "--out", str(out),
                 "--png", str(png)]) == 0
    with h5py.File(out) as f:
        lo, hi, mean = f["lo"][()], f["hi"][()], f["mean"][()]
        assert lo.shape == hi.shape == mean.shape and (hi >= lo).all()
        assert f.attrs["calibration_lambda"] == c.lam and 0 <= f.attrs["calibrated_coverage"] <= 1
        assert -1 <= f.attrs["width_error_rank_correlation"] <= 1
    capsys.readouterr()
    assert main(["--quiet", "uncertainty", str(sim), *common, "--acceleration", "8", "--calibration", str(cal),
                 "--out", str(tmp_path / "u8.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made for acceleration 4.0, not 8.0" in err[0]
    assert main(["--quiet", "calibrate", str(sim), *common, "--method", "crc",
                 "--out", str(tmp_path / "c9.json")]) == 2
    assert "(crc) at level 0.9 needs at least 9 slices" in capsys.readouterr().err
    assert main(["--quiet", "calibrate", str(sim), *common, "--slices", "0", "--out", str(tmp_path / "c1.json")]) == 2
    assert "needs at least 2 slices" in capsys.readouterr().err
    assert main(["--quiet", "calibrate", str(sim), *common, "--offset", "widest",
                 "--out", str(tmp_path / "co.json")]) == 2
    assert "expected a number >= 0 or auto, got 'widest'" in capsys.readouterr().err
    assert main(["--quiet", "calibrate", str(sim), *common, "--offset", "-1", "--out", str(tmp_path / "co.json")]) == 2
    assert "offset must be a finite number >= 0" in capsys.readouterr().err
    assert main(["--quiet", "calibrate", str(sim), *common, "--offset", "0.01", "--smooth", "1", "--heuristic",
                 "std", "--out", str(tmp_path / "co.json")]) == 0
    c2 = Calibration.load(tmp_path / "co.json")
    assert (c2.offset, c2.smooth) == (0.01, 1.0)
    assert main(["--quiet", "calibrate", str(sim), *common, "--out", str(tmp_path / "cl.json")]) == 0
    cl = Calibration.load(tmp_path / "cl.json")
    assert cl.kind == "learned" and len(cl.weights) == 5                # the default shape
    assert main(["--quiet", "uncertainty", str(sim), *common, "--calibration", str(tmp_path / "cl.json"),
                 "--out", str(tmp_path / "ul.h5")]) == 0
    with h5py.File(tmp_path / "ul.h5") as f:
        assert (f["hi"][()] >= f["lo"][()]).all() and f.attrs["calibration_lambda"] == cl.lam
    assert c.info["noise_std"] == "auto"
    with pytest.warns(UserWarning, match="made with DDS --noise-std auto, these samples with none"):
        assert main(["--quiet", "uncertainty", str(sim), *common, "--noise-std", "none", "--calibration", str(cal),
                     "--out", str(tmp_path / "un.h5")]) == 0
    old = Calibration.load(cal)
    old.info.pop("noise_std")
    old.save(tmp_path / "old.json")
    with pytest.warns(UserWarning, match="made before DDS weighed the data by its noise"):
        assert main(["--quiet", "uncertainty", str(sim), *common, "--calibration", str(tmp_path / "old.json"),
                     "--out", str(tmp_path / "uo.h5")]) == 0
    assert sim.read_bytes() == before


def _heteroscedastic_slices(n, seed, size=24, n_samples=6):
    """Slices whose error of the mean is large on bright pixels and edges, while the samples' spread is uniform
    noise: the std cannot rank the error, an error model on the mean's features can."""
    g = _gen(seed)
    out = []
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(n):
        r = 4 + 6 * torch.rand((), generator=g)
        m = 0.2 + ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r).float()
        truth = m + 0.1 * m * torch.randn((size, size), generator=g)
        x = m + 0.02 * torch.randn((n_samples, size, size), generator=g)
        out.append((x, truth))
    return out


def test_learned_heuristic_ranks_the_error_and_round_trips(tmp_path):
    from recon.uncertainty import error_scale, fit_error_model

    def spearman(a, b):
        ra, rb = (torch.argsort(torch.argsort(v)).double() for v in (a, b))
        ra, rb = ra - ra.mean(), rb - rb.mean()
        return float((ra * rb).sum() / (ra.norm() * rb.norm()))
    units = _heteroscedastic_slices(24, 21)
    cal, test = units[:12], units[12:]
    cb = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, kind="learned")
    assert cb.kind == "learned" and len(cb.weights) == 5
    assert cb.weights == fit_error_model([x for x, _ in cal], [r for _, r in cal])
    rho_l = sum(spearman(error_scale(x, cb.weights).flatten(), (x.mean(0) - r).abs().flatten()) for x, r in test)
    rho_s = sum(spearman(heuristic(x, 0.9, "std")[1].flatten(), (x.mean(0) - r).abs().flatten()) for x, r in test)
    assert rho_l / len(test) > 0.3 > rho_s / len(test) + 0.2, (rho_l / len(test), rho_s / len(test))
    std = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, kind="std", offset=0.0)
    lw = sum(float((lambda a, b: (b - a).mean())(*cb.interval(x))) for x, _ in test)
    sw = sum(float((lambda a, b: (b - a).mean())(*std.interval(x))) for x, _ in test)
    assert lw < sw
    cov = sum(coverage(*cb.interval(x), r, torch.ones_like(r, dtype=torch.bool)) for x, r in test) / len(test)
    assert abs(cov - 0.9) < 0.05, cov
    back = Calibration.load(cb.save(tmp_path / "l.json"))
    assert back == cb and torch.equal(back.interval(test[0][0])[0], cb.interval(test[0][0])[0])
    fixed = calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, kind="learned", weights=cb.weights)
    assert fixed.lam == cb.lam
    with pytest.raises(ValueError, match="weights must be 5 finite numbers"):
        calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, kind="learned", weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="weights are for the learned heuristic, not 'std'"):
        calibrate([x for x, _ in cal], [r for _, r in cal], 0.9, kind="std", weights=cb.weights)
    d = json.loads((tmp_path / "l.json").read_text())
    d["weights"] = [1.0, float("nan")] * 2 + [0.0]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json: weights must be 5 finite numbers"):
        Calibration.load(tmp_path / "bad.json")


def test_learned_heuristic_refuses_images_too_small_for_its_features():
    units = _synthetic_slices(3, 30, size=12)
    with pytest.raises(ValueError, match="needs images of at least 13 x 13 pixels, got \\(12, 12\\)"):
        calibrate([x for x, _ in units], [r for _, r in units], 0.9, kind="learned")
