"""Data consistency as objects: one protocol (bind to a run, then apply to an estimate at a noise level), each
kind doing what its equations say, samplers taking ``dc=`` and defaulting to their paper's step, and the two
loops (DDIM, predictor-corrector) that every sampler and task shares."""
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gaussian_problems import inpainting_problem, mri_problem, smooth_gaussian  # noqa: E402

from operators import Multiply, NonCartesianMRI, SingleCoilMRI, trajectories  # noqa: E402
from operators.ct import ParallelBeamCT  # noqa: E402
from recon import samplers, tasks  # noqa: E402
from recon.priors.gaussian import GaussianDenoiser  # noqa: E402
from recon.priors.prior import DiffusionPrior  # noqa: E402
from recon.samplers import dc  # noqa: E402
from recon.samplers.dc import cg_consistency, project  # noqa: E402


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def _problem():
    A = SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1]]), shape=(4, 6)).normalized()
    x = torch.randn(2, 4, 6, dtype=torch.complex64, generator=g(1))
    y = A(torch.randn(4, 6, dtype=torch.complex64, generator=g(2)))[None].expand(2, 4, 6)
    return A, x, y


def test_bind_gives_a_fresh_run_and_leaves_the_configured_step_as_it_was():
    A, x, y = _problem()
    tv = dc.TV(1e-2, cg_iter=3)
    with pytest.raises(RuntimeError, match="bind it"):
        tv(x, 1.0)
    a, b = tv.bind(y, A), tv.bind(y, A)
    assert a is not tv and a is not b and "_admm" not in vars(tv)
    first = [a(x, 1.0), a(x, 0.5)]
    again = [b(x, 1.0), b(x, 0.5)]  # b's split variables are its own
    assert all(torch.equal(u, v) for u, v in zip(first, again))
    assert not torch.equal(first[0], first[1])  # a's state carried from its first call to its second
    assert tv == dc.TV(1e-2, cg_iter=3) != dc.TV(1e-3, cg_iter=3) and "tv_xy=0.01" in repr(tv)


def test_each_step_is_its_equation():
    A, x, y = _problem()
    var = torch.full((2, 1, 1), 0.04)
    assert torch.equal(dc.Projection().bind(y, A)(x, 3.0), project(x, y, A))
    assert torch.equal(dc.ConjugateGradient(4).bind(y, A)(x, 3.0), cg_consistency(x, y, A, 4))
    assert torch.equal(dc.ConjugateGradient(4, gamma=2.0).bind(y, A, var)(x, 3.0), cg_consistency(x, y, A, 4, 2.0))
    weighted = dc.ConjugateGradient(4, lam=0.5).bind(y, A, var)
    assert torch.equal(weighted(x, 3.0), cg_consistency(x, y, A, 4, 3.0 * 3.0 / (0.5 * var)))
    assert torch.equal(dc.ConjugateGradient(4, lam=0.5).bind(y, A, None)(x, 3.0), cg_consistency(x, y, A, 4))
    grad = dc.GradientStep(gamma_scale=0.5).bind(y, A, var)
    ref = A.H((A(x) - y) / (0.04 + (0.5 * 3.0) ** 2))
    assert torch.allclose(grad.gradient(x, 3.0), ref) and torch.allclose(grad(x, 3.0), x - ref)
    ratio = dc.GradientStep(ratio=2.0).bind(y, A)
    score = torch.randn(x.shape, dtype=x.dtype, generator=g(3))
    d = ratio.gradient(x, 3.0, score)
    assert torch.allclose(d.flatten(1).norm(dim=1), 2.0 * score.flatten(1).norm(dim=1))
    hold = torch.zeros(4, 6, dtype=torch.bool)
    hold[:2] = True
    image = torch.randn(4, 6, dtype=torch.complex64, generator=g(4))
    held = dc.HeldPixels(hold).bind(image, None)(x, 1.0)
    assert torch.equal(held[:, hold], image[hold].expand(2, -1)) and torch.equal(held[:, ~hold], x[:, ~hold])


def test_noised_projection_pulls_towards_a_noised_measurement_and_the_clean_one_at_zero():
    A, x, y = _problem()
    pull = dc.NoisedProjection(lam=1.0, inverse="adjoint").bind(y, A, None, g(5))
    assert torch.allclose(A(pull(x, 0.0)), y, atol=1e-5)  # a Cartesian mask: the measured part replaced
    noisy = pull(x, 0.5)
    assert not torch.allclose(A(noisy), y, atol=1e-2)
    z = samplers.base.noise_like(x, g(5))
    assert torch.allclose(A(noisy), y + 0.5 * A(z), atol=1e-5)
    with pytest.raises(ValueError, match="filtered backprojection"):
        dc.NoisedProjection(inverse="fbp").bind(y, A)


def test_bad_settings_are_refused():
    for make, msg in ((lambda: dc.ConjugateGradient(3, gamma=1.0, lam=0.5), "one way"),
                      (lambda: dc.TV(0.0), "tv_xy"), (lambda: dc.TVz(1e-3, rho=0.0), "rho"),
                      (lambda: dc.NoisedProjection(lam=2.0), "lam"), (lambda: dc.ConjugateGradient(-1), "cg_iter")):
        with pytest.raises(ValueError, match=msg):
            make()
    with pytest.raises(TypeError, match="dc must be"):
        samplers.DDS(dc=lambda x, s: x)
    with pytest.raises(ValueError, match="not both"):
        samplers.DDS(dc=dc.ConjugateGradient(5), gamma=1.0)
    with pytest.raises(TypeError, match="gradient"):
        samplers.ScoreALD(dc=dc.Projection())


def test_dds_default_step_is_a_plain_rule():
    ct = ParallelBeamCT((16, 16), 6)
    radial = NonCartesianMRI(torch.ones(1, 8, 8, dtype=torch.complex64), trajectories.radial(4, 16))
    var = torch.ones(())
    rule = samplers.DDS().default_dc
    assert rule(ct, None) == dc.TV(samplers.dds.TV_XY, cg_iter=5)
    assert rule(ct, var) == dc.TV(samplers.dds.TV_XY, cg_iter=10, lam=0.5)
    assert rule(radial, var) == dc.ConjugateGradient(10, lam=0.5)  # the TV is off for non-Cartesian k-space
    assert samplers.DDS(tv_xy=1e-4).default_dc(radial, var) == dc.TV(1e-4, cg_iter=10, lam=0.5)
    assert samplers.DDS(tv_xy=0).default_dc(ct, None) == dc.ConjugateGradient(5)
    assert samplers.DDS(gamma=2.0).default_dc(ct, None) == dc.ConjugateGradient(5, gamma=2.0)
    assert samplers.DDS(tv_z=1e-3).default_dc(ct, None) == dc.TVz(1e-3, 0.01, 5)
    assert samplers.DDS(cg_iter=3, sigma_y=0.1, tv_xy=0).default_dc(ct, var) == dc.ConjugateGradient(3, lam=0.5)
    d = samplers.DDS()
    assert (d.sigma_y, d.tv_xy) == ("auto", samplers.dds.TV_XY)
    assert (samplers.DDS(gamma=1.0).sigma_y, samplers.DDS(tv_z=1e-3).sigma_y) == (None, None)
    with pytest.raises(ValueError, match="one way"):
        samplers.DDS(sigma_y="auto", gamma=1.0)


@pytest.mark.parametrize("given,settings", [
    (dc.ConjugateGradient(5), dict(sigma_y=None, tv_xy=0)),
    (dc.TV(samplers.dds.TV_XY, cg_iter=5), dict(sigma_y=None)),
    (dc.ConjugateGradient(10, lam=0.5), dict(sigma_y=0.05, tv_xy=0)),
    (dc.ConjugateGradient(5, gamma=3.0), dict(gamma=3.0)),
])
def test_dds_given_its_default_step_gives_the_same_samples(given, settings):
    prior, A, y, _, _ = mri_problem()
    sigma_y = settings.get("sigma_y", "default")
    a = samplers.DDS(steps=5, dc=given, sigma_y=sigma_y)(y, A, prior, n_samples=2, generator=g(3))
    b = samplers.DDS(steps=5, **settings)(y, A, prior, n_samples=2, generator=g(3))
    assert torch.equal(a, b)


def test_samplers_take_any_step():
    prior, A, y, _, _ = mri_problem(noise=0.0)

    def run(sampler):
        return sampler(y, A, prior, n_samples=2, generator=g(2))

    assert torch.equal(run(samplers.ScoreSDE(steps=5, dc=dc.NoisedProjection(0.7, "adjoint"))),
                       run(samplers.ScoreSDE(steps=5, lam=0.7, inverse="adjoint")))
    assert torch.equal(run(samplers.ScoreMRI(steps=5, dc=dc.Projection())), run(samplers.ScoreMRI(steps=5)))
    assert torch.equal(run(samplers.ScoreALD(n_levels=3, dc=dc.GradientStep(0.5))),
                       run(samplers.ScoreALD(n_levels=3, gamma_scale=0.5)))
    for s in (samplers.ScoreMRI(steps=5, dc=dc.ConjugateGradient(3)), samplers.ScoreSDE(steps=5, dc=dc.Projection()),
              samplers.DDS(steps=5, dc=dc.Projection())):
        x = run(s)
        assert torch.isfinite(x).all() and torch.allclose(A(x), y.expand(2, -1, -1), atol=1e-4)


def test_held_pixels_in_dds_are_the_inpainting_projection():
    prior, A, y, _, _ = inpainting_problem(noise=0.0)
    hold = A.w > 0
    a = samplers.DDS(steps=6, dc=dc.HeldPixels(hold))(y, A, prior, n_samples=2, generator=g(4))
    assert torch.allclose(a[:, hold], y[hold].expand(2, -1), atol=1e-6)


# --- the loops --------------------------------------------------------------------------------------------------

def _unconditional_prior(n=8):
    mu, cov = smooth_gaussian((n, n), 1, length=2.0, seed=0)
    return DiffusionPrior(GaussianDenoiser(mu[0] + 2.0, cov, sigma_min=0.002, sigma_max=30.0), channels="real",
                          image_size=(n, n)), (mu[0] + 2.0).float()


def test_tasks_run_the_samplers_sdedit_and_inversion():
    prior, x = _unconditional_prior()
    assert torch.equal(tasks.invert(x, prior, steps=6, refine=2), samplers.invert(x[None], prior, 6, 2)[0])
    z = tasks.invert(x, prior, steps=6)
    assert torch.equal(tasks.generate(z, prior, steps=6), samplers.generate(z[None], prior, 6)[0])
    hold = tasks.region((8, 8), (4, 4), 2.0)
    held = dc.HeldPixels(~hold).bind(x, None)
    ref = samplers.sdedit(x[None].expand(3, 8, 8), prior, 0.5, 10, g(1), eta=1.0, dc=held)
    assert torch.equal(tasks._sdedit(x, prior, 0.5, ~hold, 10, g(1), eta=1.0, n=3), ref)
    assert torch.equal(ref[:, ~hold], x[~hold].expand(3, -1))
    with pytest.raises(ValueError, match="refine must be"):
        samplers.invert(x[None], prior, 6, -1)
    with pytest.raises(ValueError, match="strength"):
        samplers.sdedit(x[None], prior, 0.0, 10, g(1))


def test_the_loops_report_every_step():
    prior, _ = _unconditional_prior()
    seen = {}
    for name, sampler in (("ddim", samplers.DDIM(steps=4)), ("pc", samplers.PredictorCorrector(steps=4))):
        steps = []
        sampler(prior=prior, n_samples=1, generator=g(0), callback=steps.append)
        seen[name] = [(d["i"], d["sigma"] > d["sigma_next"], "denoised" in d) for d in steps]
    assert seen["ddim"] == [(i, True, True) for i in range(4)]
    assert seen["pc"] == [(i, True, True) for i in range(4)]
    with pytest.raises(ValueError, match="order"):
        samplers.loop.predictor_corrector(torch.zeros(1, 8, 8), samplers.loop.pc_levels([2.0, 1.0]), prior, g(),
                                          snr=0.16, order="sideways")


def test_explicit_auto_noise_warns_where_the_default_does_not():
    prior, A, y, _, _ = inpainting_problem()
    Am = Multiply(A.w.clone())  # an operator that cannot estimate its noise
    samplers.dds._WARNED.discard(Am.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samplers.DDS(steps=3)(y, Am, prior, generator=g())
    with pytest.warns(UserWarning, match="cannot estimate its noise"):
        samplers.DDS(steps=3, sigma_y="auto")(y, Am, prior, generator=g())
