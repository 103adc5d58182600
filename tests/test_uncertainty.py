"""Uncertainty maps: the summary statistics, and recon uncertainty end to end."""
import h5py
import pytest
import torch

from recon.cli import main
from recon.uncertainty import summarize


def test_summary_statistics_on_known_samples():
    g = torch.Generator().manual_seed(0)
    std_map = torch.linspace(0.01, 0.3, 32).repeat(32, 1)
    samples = 2 + std_map * torch.randn(4000, 32, 32, generator=g)
    truth = 2 + std_map * torch.randn(32, 32, generator=g)  # drawn from the same distribution as the samples
    res = summarize(samples, truth, level=0.9)
    assert torch.allclose(res["std"], std_map, rtol=0.08)
    assert abs(res["coverage"] - 0.9) < 0.05  # calibrated: ~90% of the truths inside the 90% intervals
    biased = summarize(samples + 3 * std_map, truth)
    assert biased["coverage"] < 0.2 and biased["std_error_correlation"] > 0.8  # error grows with std
    assert biased["std_error_rank_correlation"] > 0.8
    with pytest.raises(ValueError, match="at least 2 samples"):
        summarize(samples[:1], truth)


def test_rank_correlation_is_spearmans():
    from recon.uncertainty import rank_correlation
    g = torch.Generator().manual_seed(1)
    a = torch.rand(40, 40, generator=g)
    assert rank_correlation(a, a.exp() ** 3) == pytest.approx(1.0)      # any increasing map ranks alike
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    b = a + 0.3 * torch.rand(40, 40, generator=g)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert rank_correlation(a, b) == pytest.approx(scipy_stats.spearmanr(a.flatten(), b.flatten())[0], abs=1e-9)
    ties = torch.tensor([0.0, 0.0, 1.0, 2.0])
    assert rank_correlation(ties, torch.tensor([1.0, 1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert rank_correlation(torch.zeros(5), torch.arange(5.0)) == 0.0   # a constant map ranks nothing
    with pytest.raises(ValueError, match="different shapes"):
        rank_correlation(a, a[:3])


def test_uncertainty_command(tmp_path, capsys):
    f = tmp_path / "sim.h5"
    assert main(["simulate", str(f), "--slices", "5:6", "--coils", "4"]) == 0
    out = tmp_path / "u.h5"
    assert main(["--quiet", "uncertainty", str(f), "--samples", "4", "--steps", "10", "--out", str(out),
                 "--png", str(tmp_path / "u.png")]) == 0
    with h5py.File(out) as h:
        assert h["samples"].shape == (4, 128, 128) and h["std"].shape == (128, 128)
        assert 0 <= h.attrs["coverage"] <= 1 and -1 <= h.attrs["std_error_correlation"] <= 1
        assert -1 <= h.attrs["std_error_rank_correlation"] <= 1
        assert (h["q_hi"][()] >= h["q_lo"][()]).all()
    printed = capsys.readouterr().out
    assert (tmp_path / "u.png").exists() and "coverage" in printed and "rank correlation" in printed
    assert main(["uncertainty", str(f), "--samples", "1", "--out", str(tmp_path / "x.h5")]) == 2
    assert "at least 2 samples" in capsys.readouterr().err
