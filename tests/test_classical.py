"""Classical baselines on simulated 8-coil data: they must improve on zero-filled as the literature says."""
import pytest
import torch

from operators import MultiCoilMRI, ShapeError, masks
from recon import classical, metrics
from recon.data import simulate


@pytest.fixture(scope="module")
def problem():
    x = simulate.phantom((96, 96), seed=1)
    maps = simulate.coil_maps(8, (96, 96))
    k = simulate.simulate_multicoil(x, maps, snr_db=40, seed=2)
    mask = masks.get("equispaced", acceleration=4, center_fraction=0.08)(tuple(k.shape), seed=0)
    return x, maps, mask, mask * k


def _psnr(x, gt):
    return metrics.psnr(gt.abs(), x.abs())


def test_cg_sense_beats_zero_filled_by_a_wide_margin(problem):
    x, maps, mask, y = problem
    A = MultiCoilMRI(maps, mask)
    zf = _psnr(classical.zero_filled(y, A), x)
    cg = _psnr(classical.cg_sense(y, A), x)
    assert cg > zf + 10, (zf, cg)


def test_l1_wavelet_and_tv_beat_zero_filled(problem):
    x, maps, mask, y = problem
    A = MultiCoilMRI(maps, mask)
    zf = _psnr(classical.zero_filled(y, A), x)
    assert _psnr(classical.l1_wavelet(y, A, lam=1e-3, max_iter=60), x) > zf + 5
    assert _psnr(classical.tv(y, A, lam=1e-3, max_iter=30), x) > zf + 10


def test_regularised_recons_are_scale_invariant(problem):
    x, maps, mask, y = problem
    A = MultiCoilMRI(maps, mask)
    for f in (lambda v: classical.l1_wavelet(v, A, max_iter=10), lambda v: classical.tv(v, A, max_iter=10),
              lambda v: classical.cg_sense(v, A, max_iter=5)):
        a, b = f(y), f(1000 * y) / 1000
        assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def test_batched_measurements(problem):
    x, maps, mask, y = problem
    A = MultiCoilMRI(maps, mask)
    yy = torch.stack([y, 2 * y])
    out = classical.cg_sense(yy, A, max_iter=5)
    assert out.shape == (2, 96, 96)
    assert torch.allclose(out[1], 2 * out[0], atol=1e-4 * float(out.abs().max()))


def test_maps_that_do_not_match_kspace_are_refused(problem):
    x, maps, mask, y = problem
    A = MultiCoilMRI(maps[:4], mask)
    with pytest.raises(ShapeError, match=r"expects input of shape \(\.\.\., 4, 96, 96\), got \(8, 96, 96\)"):
        classical.cg_sense(y, A)
