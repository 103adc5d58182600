"""Metrics equal fastMRI's own (fastmri.evaluate, which uses scikit-image) on random and structured images."""
import fastmri.evaluate as reference
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from recon import metrics

NAMES = ("nmse", "psnr", "ssim")


def _assert_matches(gt, pred, maxval=None, ours_gt=None, ours_pred=None):
    """Our metrics on (ours_gt, ours_pred) (default: gt, pred) equal fastMRI's on the 3-D arrays gt, pred."""
    ours_gt = gt if ours_gt is None else ours_gt
    ours_pred = pred if ours_pred is None else ours_pred
    got = metrics.evaluate(ours_gt, ours_pred, maxval)
    expected = {"nmse": reference.nmse(gt, pred), "psnr": reference.psnr(gt, pred, maxval),
                "ssim": reference.ssim(gt, pred, maxval)}
    for name in NAMES:
        assert isinstance(got[name], float)
        assert got[name] == pytest.approx(np.asarray(expected[name]).item(), rel=1e-6, abs=1e-6), name


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 33, 29), (1, 7, 7), (4, 40, 17)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_volumes_match_fastmri(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    gt = rng.random(shape).astype(dtype)
    pred = (gt + 0.1 * rng.standard_normal(shape)).astype(dtype)
    _assert_matches(gt, pred)
    _assert_matches(gt, pred, maxval=2.0)


def test_two_dimensional_input_is_one_slice_and_torch_is_accepted():
    rng = np.random.default_rng(0)
    gt, pred = rng.random((21, 18)), rng.random((21, 18))
    _assert_matches(gt[None], pred[None], ours_gt=gt, ours_pred=pred)
    _assert_matches(gt[None], pred[None], ours_gt=torch.from_numpy(gt), ours_pred=torch.from_numpy(pred))


def test_structured_image_matches_fastmri():
    yy, xx = np.mgrid[-1:1:160j, -1:1:128j]
    phantom = ((xx / 0.7) ** 2 + (yy / 0.9) ** 2 < 1) * (0.5 + 0.5 * xx) + ((xx - 0.2) ** 2 + yy ** 2 < 0.05)
    gt = np.stack([phantom, np.flipud(phantom)]).astype(np.float32) * 3e-4
    pred = np.stack([gaussian_filter(s, 1.5) for s in gt]).astype(np.float32)
    _assert_matches(gt, pred)
    assert 0.5 < metrics.ssim(gt, pred) < 1 and metrics.ssim(gt, gt) == pytest.approx(1.0)


def test_errors():
    x = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 8, 8\) vs \(2, 8, 9\)"):
        metrics.psnr(x, np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match=r"pred is complex; pass its magnitude \(x.abs\(\)\)"):
        metrics.nmse(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="2-D image or a 3-D"):
        metrics.ssim(np.zeros((1, 2, 8, 8)), np.zeros((1, 2, 8, 8)))
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(np.zeros((8, 6)), np.zeros((8, 6)))
