"""Samplers against the truth: closed-form Gaussian posteriors, the update rules written out, reproducibility."""
import math

import pytest
import torch

from gaussian_problems import inpainting_problem, mri_problem, real_matrix, stationary_mri_problem
from gaussian_problems import sample_stats as _stats
from operators import fft2c
from recon import samplers
from recon.priors.gaussian import gaussian_posterior
from recon.samplers.base import noise_like
from recon.samplers.dc import cg_consistency, project
from recon.samplers.steps import ddim_update, langevin, reverse_diffusion

N = 1000


def test_score_ald_samples_its_target_posterior():
    """Annealed Langevin ends at the posterior of the sigma_L-smoothed prior with likelihood variance
    sigma_y^2 + sigma_L^2; with enough steps its samples have that mean and those variances."""
    prior, A, y, m_true, _ = mri_problem()
    sy, sl = 0.05 / math.sqrt(2), 0.05
    mu, cov = prior.denoiser.mu, prior.denoiser.cov
    Ar = real_matrix(A, (4, 6), True)
    yr = torch.cat([y.real.flatten(), y.imag.flatten()]).double()
    m, c = gaussian_posterior(mu, cov + sl ** 2 * torch.eye(48, dtype=torch.float64), Ar, yr, math.hypot(sy, sl))
    m = torch.complex(m[:24], m[24:]).reshape(4, 6)
    v = (c.diagonal()[:24] + c.diagonal()[24:]).reshape(4, 6)
    # sigma_y is the std of the complex noise (E|n|^2 = sigma_y^2), sy that of each of Re and Im
    s = samplers.ScoreALD(sigma_start=5.0, sigma_end=sl, n_levels=60, steps_each=20, step_lr=2e-3,
                          sigma_y=sy * math.sqrt(2))
    mean, var = _stats(s(y, A, prior, n_samples=N, generator=torch.Generator().manual_seed(1)))
    z = (mean - m).abs() / (v / N).sqrt()
    assert z.max() < 4.5, z
    assert ((var / v) - 1).abs().max() < 0.12
    assert (mean - m_true).norm() / m_true.norm() < 0.1  # and that target is close to the true posterior


def test_score_mri_is_exact_when_fourier_coefficients_are_independent():
    prior, A, y, k_mean, k_var = stationary_mri_problem()
    x = samplers.ScoreMRI(steps=200)(y, A, prior, n_samples=N, generator=torch.Generator().manual_seed(1))
    mean, var = _stats(fft2c(x.to(torch.complex128)))
    un = k_var > 0
    assert ((mean - k_mean).abs()[un] / (k_var[un] / N).sqrt()).max() < 4.5
    assert ((var[un] / k_var[un]) - 1).abs().max() < 0.15
    assert (mean - k_mean).abs()[~un].max() < 1e-4 and var[~un].max() < 1e-8  # measured lines are y exactly


@pytest.mark.parametrize("name,sampler,tol", [
    ("score-mri", samplers.ScoreMRI(steps=300), 0.2),
    ("dds", samplers.DDS(steps=50, tv_xy=0), 0.2),     # the TV (the default) is not part of this posterior
    ("dds-paper-eta", samplers.DDS(steps=50, eta=0.85, tv_xy=0), 0.2),
    ("dds-gamma", samplers.DDS(steps=50, gamma=50.0), 0.2),
    ("dps", samplers.DPS(steps=200, zeta=0.5), 0.2),
])
def test_posterior_mean_on_a_correlated_gaussian(name, sampler, tol):
    """Approximate samplers: the sample mean is within ``tol`` (relative) of the posterior mean, while the
    prior mean is 0.7 away; the marginal variance is in the right range."""
    prior, A, y, m, v = mri_problem()
    mu = torch.complex(prior.denoiser.mu[:24], prior.denoiser.mu[24:]).reshape(4, 6)
    assert (mu - m).norm() / m.norm() > 0.6
    mean, var = _stats(sampler(y, A, prior, n_samples=400, generator=torch.Generator().manual_seed(2)))
    assert (mean - m).norm() / m.norm() < tol
    assert 0.6 < float((var / v).mean()) < 1.4


def test_inpainting_posterior_with_score_ald():
    prior, A, y, m, v = inpainting_problem(noise=0.05)
    s = samplers.ScoreALD(sigma_start=5.0, sigma_end=0.02, n_levels=60, steps_each=20, step_lr=3e-4, sigma_y=0.05)
    mean, var = _stats(s(y, A, prior, n_samples=N, generator=torch.Generator().manual_seed(3)))
    assert (mean - m).norm() / m.norm() < 0.05
    assert 0.8 < float((var / v).mean()) < 1.2


# --- one step of each sampler against its equation -------------------------------------------------------
def _replay(prior, y, A, seed):
    g = torch.Generator().manual_seed(seed)
    return g, noise_like(A.H(y[None]), g)


def test_dds_step_is_ddim_of_the_cg_corrected_tweedie_estimate():
    prior, A, y, _, _ = mri_problem()
    s = samplers.DDS(steps=2, eta=0.85, cg_iter=3, tv_xy=0)
    out = s(y, A, prior, n_samples=1, generator=torch.Generator().manual_seed(5))
    sig = [float(v) for v in prior.sigmas(2, "auto")]
    g, z = _replay(prior, y, A, 5)
    yb = y[None]
    x = z * sig[0]
    x0 = prior.denoise(x, sig[0])
    x0c = cg_consistency(x0, yb, A, 3)
    st = 0.85 * sig[1] * math.sqrt(sig[0] ** 2 - sig[1] ** 2) / sig[0]
    x1 = x0c + math.sqrt(sig[1] ** 2 - st ** 2) * (x - x0) / sig[0] + st * noise_like(x, g)
    ref = cg_consistency(prior.denoise(x1, sig[1]), yb, A, 3)
    assert torch.allclose(out, ref, atol=1e-5)


def test_score_mri_step_is_predictor_projection_corrector_projection():
    prior, A, y, _, _ = mri_problem()
    out = samplers.ScoreMRI(steps=2, snr=0.16)(y, A, prior, generator=torch.Generator().manual_seed(6))
    s0, s1 = (float(v) for v in prior.sigmas(2, "geometric"))
    g, z = _replay(prior, y, A, 6)
    yb = y[None]
    x = z * s0
    zp = noise_like(x, g)
    mean = x + (s0 ** 2 - s1 ** 2) * prior.score(x, s0)
    x = project(mean + math.sqrt(s0 ** 2 - s1 ** 2) * zp, yb, A)
    sc, zc = prior.score(x, s1), noise_like(x, g)
    eps = 2 * (0.16 * zc.abs().square().sum().sqrt() / sc.abs().square().sum().sqrt()) ** 2
    ref = project(x + eps * sc, yb, A)
    assert torch.allclose(out, ref, atol=1e-5)


def test_score_ald_step_is_langevin_with_the_likelihood_gradient():
    prior, A, y, _, _ = mri_problem()
    s = samplers.ScoreALD(sigma_start=1.0, sigma_end=0.5, n_levels=2, steps_each=1, step_lr=1e-3, sigma_y=0.1)
    out = s(y, A, prior, generator=torch.Generator().manual_seed(7))
    g, z = _replay(prior, y, A, 7)
    yb = y[None]
    x = z * 1.0
    for sig in (1.0, 0.5):
        eta = 1e-3 * (sig / 0.5) ** 2
        # complex data: sigma_y = 0.1 is the std of the complex noise, each of Re and Im carries 0.1^2 / 2
        grad = prior.score(x, sig) - A.H(A(x) - yb) / (0.1 ** 2 / 2 + sig ** 2)
        x = x + eta * grad + math.sqrt(2 * eta) * noise_like(x, g)
    assert torch.allclose(out, x, atol=1e-5)


def test_dps_step_uses_the_gradient_of_the_residual_norm_through_the_denoiser():
    prior, A, y, _, _ = mri_problem()
    out = samplers.DPS(steps=2, zeta=0.3)(y, A, prior, generator=torch.Generator().manual_seed(8))
    s0, s1 = (float(v) for v in prior.sigmas(2, "auto"))
    g, z = _replay(prior, y, A, 8)
    yb = y[None]
    x = (z * s0).requires_grad_(True)
    x0 = prior.denoise(x, s0)
    (grad,) = torch.autograd.grad((yb - A(x0)).abs().square().sum().sqrt(), x)
    x0 = x0.detach()
    st = s1 * math.sqrt(s0 ** 2 - s1 ** 2) / s0
    x1 = x0 + math.sqrt(s1 ** 2 - st ** 2) * (x.detach() - x0) / s0 + st * noise_like(x0, g)
    x1 = x1 - 0.3 * math.sqrt((1 + s0 ** 2) * (1 + s1 ** 2)) * grad
    assert torch.allclose(out, prior.denoise(x1, s1), atol=1e-5)


def test_step_formulas():
    x0, eps, z = torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    # eta = 0: deterministic DDIM keeps the noise direction; eta = 1 with sigma' = 0 returns x0
    assert torch.allclose(ddim_update(x0, eps, 2.0, 1.0, 0.0, z), x0 + eps)
    assert torch.allclose(ddim_update(x0, eps, 2.0, 0.0, 1.0, z), x0)
    # ancestral (eta = 1): total variance sigma'^2 split between eps and fresh noise
    st = 1.0 * math.sqrt(4 - 1) / 2
    assert torch.allclose(ddim_update(x0, eps, 2.0, 1.0, 1.0, z), x0 + math.sqrt(1 - st ** 2) * eps + st * z)
    xn, mean = reverse_diffusion(x0, eps, 2.0, 1.0, z)
    assert torch.allclose(mean, x0 + 3 * eps) and torch.allclose(xn, mean + math.sqrt(3) * z)
    xl, ml = langevin(x0, eps, 0.16, z)
    e = 2 * (0.16 * z.flatten(1).norm(dim=1) / eps.flatten(1).norm(dim=1)) ** 2
    assert torch.allclose(ml, x0 + e[:, None, None] * eps, atol=1e-6)


# --- reproducibility, batching, errors ----------------------------------------------------------------------
@pytest.mark.parametrize("sampler", [samplers.DDS(steps=5), samplers.ScoreMRI(steps=5), samplers.DPS(steps=5),
                                     samplers.ScoreALD(n_levels=3, steps_each=1)])
def test_same_seed_same_samples_different_seed_different(sampler):
    prior, A, y, _, _ = mri_problem()
    a = sampler(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(0))
    b = sampler(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(0))
    c = sampler(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 6) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # the samples of one batch differ


def test_chunked_batches_and_callback():
    prior, A, y, _, _ = mri_problem()
    seen = []
    s = samplers.DDS(steps=4, max_batch=2)
    out = s(y, A, prior, n_samples=5, generator=torch.Generator().manual_seed(0),
            callback=lambda d: seen.append((d["i"], d["sigma"], d["x"].shape)))
    assert out.shape == (5, 4, 6)
    assert [c[0] for c in seen] == [0, 1, 2, 3] * 3 and seen[0][2] == (2, 4, 6) and seen[-1][2] == (1, 4, 6)


def test_results_are_in_the_measurement_scale():
    prior, A, y, _, _ = mri_problem()
    prior.normalization.kind = "max"
    a = samplers.DDS(steps=5, tv_xy=0)(y, A, prior, generator=torch.Generator().manual_seed(0))
    b = samplers.DDS(steps=5, tv_xy=0)(1000 * y, A, prior, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(b, 1000 * a, rtol=1e-4, atol=1e-3)
    # with the in-plane TV (the default) too, to float32 rounding, which the shrinkage amplifies somewhat
    a = samplers.DDS(steps=5)(y, A, prior, generator=torch.Generator().manual_seed(0))
    b = samplers.DDS(steps=5)(1000 * y, A, prior, generator=torch.Generator().manual_seed(0))
    assert float((b - 1000 * a).abs().max() / (1000 * a).abs().max()) < 1e-4
    c = samplers.DDS(steps=5)(y, A, prior, generator=torch.Generator().manual_seed(1))
    assert float((c - a).abs().max() / a.abs().max()) > 1e-2  # another seed is another sample


def test_nan_stops_with_step_and_sigma():
    prior, A, y, _, _ = mri_problem()
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="measurement contains NaN or Inf"):
        samplers.DDS(steps=3)(bad, A, prior)
    denoise = prior.denoise
    prior.denoise = lambda x, s: denoise(x, s) * (float("inf") if s < 1.0 else 1.0)
    for s in (samplers.DDS(steps=10), samplers.ScoreMRI(steps=10), samplers.DPS(steps=10)):
        with pytest.raises(samplers.SamplingError, match=r"non-finite values in the iterate at step \d+ \(sigma=\d"):
            s(y, A, prior)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.get("ddpm")
    with pytest.raises(ValueError, match="n_samples"):
        samplers.DDS()(y, A, prior, n_samples=0)


def test_score_mri_coilwise_batches_coils_and_combines_by_rss():
    """Alg. 7.2: each coil image sampled with the same prior (the coils as one batch), measured k-space
    kept per coil, root-sum-of-squares at the end."""
    from operators import CoilwiseMRI

    prior, A1, y1, _, _ = mri_problem()
    A = CoilwiseMRI(A1.mask, n_coils=3)
    y = torch.stack([y1, 0.5 * y1, -1j * y1])
    calls = []
    denoise = prior.denoise
    prior.denoise = lambda x, s: calls.append(tuple(x.shape)) or denoise(x, s)
    coils = samplers.ScoreMRI(steps=20, combine=False)(y, A, prior, n_samples=2,
                                                       generator=torch.Generator().manual_seed(0))
    assert coils.shape == (2, 3, 4, 6) and calls[0] == (2, 3, 4, 6)
    assert torch.allclose(A(coils), y.expand(2, 3, 4, 6), atol=1e-4)
    rss = samplers.ScoreMRI(steps=20)(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert rss.shape == (2, 4, 6)
    assert torch.allclose(rss.real, coils.abs().square().sum(1).sqrt(), atol=1e-5)


def test_score_mri_hybrid_sense_step_makes_coils_consistent_with_maps():
    from operators import CoilwiseMRI, MultiCoilMRI

    prior, A1, _, _, _ = mri_problem()
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 6, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(0).sqrt()
    x = torch.randn(4, 6, dtype=torch.complex64, generator=g)
    full = torch.ones(1, 6)
    y = MultiCoilMRI(maps, full)(x)  # fully sampled: the SENSE step and the projection agree
    out = samplers.ScoreMRI(steps=10, combine=False, maps=maps, sense_every=1)(y, CoilwiseMRI(full, 3), prior,
                                                                              generator=g)
    assert torch.allclose(out[0], maps * x, atol=1e-4)
    with pytest.raises(ValueError, match="needs the coil sensitivity maps"):
        samplers.ScoreMRI(sense_every=5)


def test_pixels_no_coil_sees_are_zero_unless_asked_otherwise():
    from operators import MultiCoilMRI

    prior, _, _, _, _ = mri_problem()
    maps = torch.ones(2, 4, 6, dtype=torch.complex64) / 2 ** 0.5
    maps[:, :, 0] = 0  # column 0 outside the support
    A = MultiCoilMRI(maps, torch.tensor([[1.0, 0, 1, 1, 0, 1]]))
    y = A(torch.randn(4, 6, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)))
    x = samplers.DDS(steps=5)(y, A, prior)
    assert torch.equal(A.support[:, 0], torch.zeros(4, dtype=torch.bool)) and (x[..., 0] == 0).all()
    x = samplers.DDS(steps=5, support=False)(y, A, prior)
    assert (x[..., 0] != 0).all()


# --- Score-SDE projection (Song et al. 2022) ------------------------------------------------------------------
def test_score_sde_is_exact_when_fourier_coefficients_are_independent():
    """With A A^H = I and lam = 1 the noised-measurement projection puts the measured coefficients at their
    exact marginal at every level, so the sampler draws the exact posterior; the final step returns y there."""
    prior, A, y, k_mean, k_var = stationary_mri_problem()
    s = samplers.ScoreSDE(steps=200, inverse="adjoint")
    x = s(y, A, prior, n_samples=N, generator=torch.Generator().manual_seed(1))
    mean, var = _stats(fft2c(x.to(torch.complex128)))
    un = k_var > 0
    assert ((mean - k_mean).abs()[un] / (k_var[un] / N).sqrt()).max() < 4.5
    assert ((var[un] / k_var[un]) - 1).abs().max() < 0.15
    assert (mean - k_mean).abs()[~un].max() < 1e-4 and var[~un].max() < 1e-8


def test_score_sde_with_cg_pseudo_inverse_reaches_the_posterior_mean_on_a_correlated_gaussian():
    """Replacement by the noised measurement is not exact for a correlated prior (the unmeasured pixels are not
    drawn given the measured ones): the mean comes within 10% of the posterior mean (the prior mean is 60% off)
    and the variance is overestimated by about a third."""
    prior, A, y, m, v = inpainting_problem(noise=1e-3)
    s = samplers.ScoreSDE(steps=300, inverse="cg", cg_iter=20)
    mean, var = _stats(s(y, A, prior, n_samples=400, generator=torch.Generator().manual_seed(2)))
    mu = prior.denoiser.mu.reshape(4, 4)
    assert (mu - m).norm() / m.norm() > 0.3
    assert (mean - m).norm() / m.norm() < 0.1
    assert 0.5 < float((var[v > 1e-3] / v[v > 1e-3]).mean()) < 1.5


def test_score_sde_step_is_noised_projection_then_predictor_then_corrector():
    prior, A, y, _, _ = mri_problem()
    s = samplers.ScoreSDE(steps=3, lam=0.5, inverse="adjoint")
    got = []
    s(y, A, prior, n_samples=1, generator=torch.Generator().manual_seed(5), callback=got.append)
    g = torch.Generator().manual_seed(5)
    sig = [float(v) for v in prior.sigmas(3, "geometric")]
    yb = y[None]
    x = noise_like(A.H(yb), g) * sig[0]
    x = x + 0.5 * A.H(yb + sig[0] * A(noise_like(x, g)) - A(x))
    x, _ = reverse_diffusion(x, prior.score(x, sig[0]), sig[0], sig[1], noise_like(x, g))
    x = x + 0.5 * A.H(yb + sig[1] * A(noise_like(x, g)) - A(x))
    x, _ = langevin(x, prior.score(x, sig[1]), 0.16, noise_like(x, g))
    assert torch.allclose(got[1]["x"], x, atol=1e-5)  # the iterate the second step starts from


def test_score_sde_rejects_bad_settings():
    with pytest.raises(ValueError, match="lam"):
        samplers.ScoreSDE(lam=1.5)
    with pytest.raises(ValueError, match="inverse"):
        samplers.ScoreSDE(inverse="bogus")
    prior, A, y, _, _ = mri_problem()
    with pytest.raises(ValueError, match="filtered backprojection"):
        samplers.ScoreSDE(steps=3, inverse="fbp")(y, A, prior)


# --- DDS with the measurement's noise (DiffPIR's weight per step) ---------------------------------------------
def test_dds_with_the_noise_level_follows_the_posterior_mean_better_than_noiseless_cg():
    """At a high noise level the noiseless CG fits the noise (mean 0.4 off the closed-form posterior mean,
    spread 0.6 of the posterior's); weighting the data by the stated noise std (gamma_t = sigma_t^2 /
    (lam sigma_y^2)) lands on the posterior mean with the posterior's spread. With an exact prior the Tweedie
    error is well below sigma_t, so the right lam is above 1 (4 here)."""
    prior, A, y, m, v = mri_problem(noise=0.6)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    plain = samplers.DDS(steps=50, tv_xy=0)(y, A, prior, n_samples=400, generator=g())
    noisy = samplers.DDS(steps=50, sigma_y=0.6, lam=4.0, tv_xy=0)(y, A, prior, n_samples=400, generator=g())
    e_plain = (_stats(plain)[0] - m).norm() / m.norm()
    mean, var = _stats(noisy)
    e_noisy = (mean - m).norm() / m.norm()
    assert e_plain > 0.3
    assert e_noisy < 0.12
    assert 0.8 < float((var / v).mean()) < 1.2


def test_dds_sigma_y_is_in_the_measurements_units_and_zero_means_noiseless():
    prior, A, y, _, _ = mri_problem(noise=0.2)
    prior.normalization.kind = "max"  # a scale-free prior: a 1000x measurement gives the 1000x result
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    a = samplers.DDS(steps=8, sigma_y=0.2)(y, A, prior, generator=g())
    b = samplers.DDS(steps=8, sigma_y=0.2 * 1000)(1000 * y, A, prior, generator=g())
    assert torch.allclose(1000 * a, b, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(a, samplers.DDS(steps=8, sigma_y=0.02)(y, A, prior, generator=g()), atol=1e-3)
    c = samplers.DDS(steps=8, sigma_y=0.0)(y, A, prior, generator=g())
    d = samplers.DDS(steps=8)(y, A, prior, generator=g())
    assert torch.equal(c, d)


def test_dds_auto_noise_falls_back_to_noiseless_cg_with_a_warning_where_the_operator_cannot_tell(monkeypatch):
    monkeypatch.setattr(samplers.dds, "_WARNED", set())  # said once per process: as if no run had warned yet
    prior, A, y, _, _ = inpainting_problem()
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    with pytest.warns(UserWarning, match="cannot estimate its noise"):
        a = samplers.DDS(steps=6, sigma_y="auto")(y, A, prior, generator=g())
    assert torch.equal(a, samplers.DDS(steps=6)(y, A, prior, generator=g()))


@pytest.mark.parametrize("kw,msg", [({"sigma_y": "estimate"}, "sigma_y must be"), ({"sigma_y": -1.0}, "sigma_y must be"),
                                    ({"sigma_y": float("nan")}, "sigma_y must be"), ({"lam": 0.0}, "lam must be"),
                                    ({"sigma_y": 0.1, "gamma": 5.0}, "one way")])
def test_dds_refuses_bad_noise_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        samplers.DDS(**kw)


def test_dds_auto_noise_is_one_weight_per_slice_of_a_stack():
    """A stack of two slices with different noise: the estimate is per slice, and the stack runs."""
    from operators import MultiCoilMRI
    from recon import priors
    from recon.problems import multicoil_problem
    from recon.samplers.base import Measurement
    p = priors.load("bundled:brain-synth-128")
    a, b = multicoil_problem(slice_index=0), multicoil_problem(slice_index=3)
    g = torch.Generator().manual_seed(0)
    yb = b.y + b.A.mask * 0.05 * torch.randn(b.y.shape, dtype=b.y.dtype, generator=g)
    y, A = torch.stack([a.y, yb]), MultiCoilMRI(torch.stack([a.A.maps, b.A.maps]), a.A.mask)
    est = A.noise_std(y)
    assert est.shape == (2,) and float(est[1]) > 4 * float(est[0])
    s = samplers.DDS(steps=3)
    x = torch.zeros(3, 2, 128, 128, dtype=torch.complex64)
    w = s._noise(Measurement(y.expand((3,) + tuple(y.shape)), A, torch.ones(())), x)
    assert w.shape == (3, 2, 1, 1) and torch.allclose(w[0, :, 0, 0], est.square())
    out = s(y, A, p, n_samples=2)
    assert out.shape == (2, 2, 128, 128) and torch.isfinite(out).all()


def test_score_ald_auto_noise_uses_the_operators_estimate():
    """sigma_y='auto' takes the operator's estimate in the normalised units: the same samples as stating that
    estimate; where the operator cannot estimate it, sigma_y = 0 with a warning."""
    from operators import MultiCoilMRI
    from recon import priors
    from recon.problems import multicoil_problem
    p = priors.load("bundled:brain-synth-128")
    a = multicoil_problem(slice_index=0)
    A = MultiCoilMRI(a.A.maps, a.A.mask)
    kw = dict(n_levels=3, steps_each=1)
    auto = samplers.ScoreALD(sigma_y="auto", **kw)(a.y, A, p, generator=torch.Generator().manual_seed(1))
    stated = samplers.ScoreALD(sigma_y=float(A.noise_std(a.y)), **kw)(a.y, A, p,
                                                                      generator=torch.Generator().manual_seed(1))
    assert torch.allclose(auto, stated, rtol=1e-4, atol=1e-5)
    prior, Ai, y, _, _ = inpainting_problem()
    with pytest.warns(UserWarning, match="cannot estimate its noise"):
        x = samplers.ScoreALD(sigma_y="auto", **kw)(y, Ai, prior, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, samplers.ScoreALD(**kw)(y, Ai, prior, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="sigma_y must be"):
        samplers.ScoreALD(sigma_y="estimate")
