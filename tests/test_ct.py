"""CT operators: exact adjoints, analytic line integrals, FBP against scikit-image's iradon."""
import math

import numpy as np
import pytest
import torch

from operators import ShapeError, adjoint_error
from operators.ct import FanBeamCT, ParallelBeamCT, angles, fbp


def _disk(n, r, ss=4):
    c = (torch.arange(n * ss, dtype=torch.float64) + 0.5) / ss - n / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return ((x ** 2 + y ** 2) <= r * r).double().reshape(n, ss, n, ss).mean((1, 3))


@pytest.mark.parametrize("shape", [(32, 32), (31, 40), (17, 9)])
def test_adjoints(shape):
    assert adjoint_error(ParallelBeamCT(shape, 13), dtype=torch.float64) < 1e-10
    assert adjoint_error(ParallelBeamCT(shape, angles(views=7), n_detectors=20, detector_spacing=1.7),
                         batch=(2,), dtype=torch.float64) < 1e-10
    assert adjoint_error(FanBeamCT(shape, 11, 80.0, 40.0), dtype=torch.float64) < 1e-10
    assert adjoint_error(ParallelBeamCT(shape, 13), dtype=torch.float32) < 1e-5


def test_disk_projections_match_analytic_chords():
    n, r = 128, 40
    disk = _disk(n, r)
    P = ParallelBeamCT(n, 10)
    t = (torch.arange(P.n_detectors) - (P.n_detectors - 1) / 2).double()
    ana = 2 * torch.sqrt(torch.clamp(r * r - t ** 2, min=0))
    inner = t.abs() < 0.9 * r
    assert ((P(disk) - ana).abs()[:, inner] / ana[inner]).max() < 0.01
    F = FanBeamCT(n, 10, 300.0, 150.0)
    dist = (F.p0[..., 0] * F.d[..., 1] - F.p0[..., 1] * F.d[..., 0]).abs()  # ray distance from the centre
    ana = 2 * torch.sqrt(torch.clamp(r * r - dist ** 2, min=0))
    inner = dist < 0.9 * r
    assert ((F(disk) - ana).abs()[inner] / ana[inner]).max() < 0.01


@pytest.mark.parametrize("filt", ["ramp", "shepp-logan", "cosine", "hamming", "hann"])
def test_fbp_at_least_as_accurate_as_skimage(filt):
    skt = pytest.importorskip("skimage.transform")
    from skimage.data import shepp_logan_phantom

    n = 128
    img = skt.resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    P = ParallelBeamCT(n, 180)
    ours = fbp(P(torch.tensor(img)), P, filt).numpy()
    th = np.rad2deg(P.angles.numpy())
    ref = skt.iradon(skt.radon(img, th, circle=False), th, filter_name=filt, circle=False, output_size=n)
    rmse = lambda a: float(np.sqrt(((a - img) ** 2).mean()))  # noqa: E731
    assert rmse(ours) <= rmse(ref) * 1.02, (rmse(ours), rmse(ref))


def test_fan_beam_fbp():
    n = 96
    img = _disk(n, 30) - 0.5 * _disk(n, 10)
    F = FanBeamCT(n, 360, 300.0, 200.0)
    rec = fbp(F(img), F, "ramp")
    inner = _disk(n, 25) > 0.99
    assert (rec - img)[inner].abs().mean() < 0.02


def test_angle_sets_batches_and_gradients():
    assert len(angles(views=30)) == 30 and float(angles(views=30)[1]) == pytest.approx(math.pi / 30)
    lim = angles(limited=(0, 120))
    assert len(lim) == 120 and float(lim[-1]) < math.radians(120)
    P = ParallelBeamCT(16, angles(limited=(0, 120), n=20))
    x = torch.rand(3, 16, 16, requires_grad=True)
    y = P(x)
    assert y.shape == (3, 20, P.n_detectors) and torch.allclose(y[1], P(x[1].detach()), atol=1e-5)
    y.square().sum().backward()
    assert torch.allclose(x.grad, 2 * P.H(y.detach()), atol=1e-4)  # autograd agrees with the adjoint
    assert torch.equal(P.forward(x.detach()), P(x.detach())) and P.backprojection(y.detach()).shape == (3, 16, 16)


def test_bad_input():
    with pytest.raises(ValueError, match="0 < stop - start <= 360"):
        angles(limited=(90, 10))
    with pytest.raises(ValueError, match="0 < stop - start <= 360"):
        angles(limited=(0, 400))
    with pytest.raises(ValueError, match="limited stop must be a finite number"):
        angles(limited=(0, float("nan")))
    with pytest.raises(ValueError, match="views must be an integer >= 1 and <= 3600"):
        angles(views=100000)
    with pytest.raises(ValueError, match="n_detectors must be an integer >= 1, got 0"):
        ParallelBeamCT(16, 10, 0)
    with pytest.raises(ValueError, match="angles contains NaN"):
        ParallelBeamCT(16, torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="detector_spacing must be a finite number > 0"):
        FanBeamCT(16, 10, 400.0, 200.0, None, float("inf"))
    with pytest.raises(ValueError, match="img_size"):
        ParallelBeamCT(1, 10)
    with pytest.raises(ValueError, match="outside the image"):
        FanBeamCT(64, 10, 20.0, 10.0)
    with pytest.raises(ValueError, match="unknown filter"):
        P = ParallelBeamCT(16, 10)
        fbp(P(torch.rand(16, 16)), P, "butterworth")
    with pytest.raises(ShapeError, match="does not match"):
        fbp(torch.rand(10, 7), ParallelBeamCT(16, 10), "ramp")
    with pytest.raises(ShapeError, match=r"expects input of shape \(\.\.\., 16, 16\)"):
        ParallelBeamCT(16, 10)(torch.rand(15, 16))


def test_samplers_run_unchanged_with_ct_operators():
    """Sparse-view CT with an exact Gaussian prior: the MRI samplers, untouched, recover the posterior mean."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from gaussian_problems import real_matrix, smooth_gaussian

    from recon import samplers
    from recon.priors.gaussian import GaussianDenoiser, gaussian_posterior
    from recon.priors.prior import DiffusionPrior

    mu, cov = smooth_gaussian((6, 6), 1, seed=3)
    A = ParallelBeamCT(6, 4, n_detectors=7)
    g = torch.Generator().manual_seed(4)
    x = mu[0] + (torch.linalg.cholesky(cov) @ torch.randn(36, generator=g, dtype=torch.float64)).reshape(6, 6)
    y = (A(x) + 0.05 * torch.randn(4, 7, generator=g, dtype=torch.float64)).float()
    prior = DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real")
    m, _ = gaussian_posterior(mu[0], cov, real_matrix(A, (6, 6), False), y.double(), 0.05)
    m = m.reshape(6, 6)
    assert (mu[0] - m).norm() / m.norm() > 0.3
    for s in (samplers.DDS(steps=50, gamma=400.0), samplers.ScoreSDE(steps=300, inverse="fbp", lam=0.2),
              samplers.ScoreSDE(steps=300, inverse="cg", lam=0.2), samplers.ScoreALD(sigma_start=5.0, sigma_end=0.05, n_levels=60,
                                                                     steps_each=20, step_lr=1e-4, sigma_y=0.05)):
        out = s(y, A, prior, n_samples=300, generator=torch.Generator().manual_seed(0)).double()
        assert out.shape == (300, 6, 6)
        assert (out.mean(0) - m).norm() / m.norm() < 0.15, type(s).__name__
