"""PiGDM and RED-diff against the truth: the closed-form Gaussian posterior, their papers' update rules written
out in the network's VP coordinates (x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z) and compared run for run,
the "reference" presets against the published code's loops on a tiny random-weight ADM UNet, scale invariance,
reproducibility, noisy data, and every kind of operator and prior.

The samplers run with the unit-norm operator A_n = A / ||A|| and the data y_n = y / (||A|| s) in the prior's
range (``samplers.base``); the write-outs below get the same A_n and y_n, and a "range" prior's network image
v = lo + g u with y_net = A_n(lo) + g y_n. Both draw their noise from one seeded generator in the same order.
"""
import math

import pytest
import torch

from gaussian_problems import mri_problem, real_matrix, smooth_gaussian
from gaussian_problems import sample_stats as _stats, relative_error as _rel
from operators import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI, trajectories
from operators.ct import FanBeamCT, ParallelBeamCT
from operators.image import Blur, Downsample, Inpainting
from recon import samplers
from recon.priors.adm import ADMUNet
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.parametrizations import VPModel
from recon.priors.prior import DiffusionPrior, Normalization
from recon.samplers.base import noise_like

T = 1000
ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def _prior_mean(prior):
    mu = prior.denoiser.mu
    return torch.complex(mu[:24], mu[24:]).reshape(4, 6)


# --- the closed-form Gaussian posterior -------------------------------------------------------------------------
def test_pigdm_samples_near_the_posterior_of_a_correlated_gaussian():
    """PiGDM's Gaussian approximation of p(x_0 | x_t) (variance r_t^2 I) is not this prior's, so it is not exact:
    with the paper's 100 steps the sample mean comes within 0.15 of the posterior mean (the prior mean is 0.7
    away) and the marginal variances within 30%."""
    prior, A, y, m, v = mri_problem()
    assert _rel(_prior_mean(prior), m) > 0.6
    mean, var = _stats(samplers.PiGDM(sigma_y=0.05)(y, A, prior, n_samples=400, generator=g(2)))
    assert _rel(mean, m) < 0.15
    assert 0.7 < float((var / v).mean()) < 1.3


def test_red_diff_estimates_average_to_the_posterior_mean_and_are_not_samples():
    """RED-diff is an optimiser: from A^+ y (0.4 off the posterior mean) its estimates average to within 0.12 of
    the posterior mean, the MAP of this Gaussian, and closer with more steps; their spread is Adam's jitter from
    the random eps, well below the posterior's, and says nothing about the uncertainty."""
    prior, A, y, m, v = mri_problem()
    assert _rel(A.pinv(y), m) > 0.35
    x = samplers.REDDiff(sigma_y=0.05)(y, A, prior, n_samples=200, generator=g(2))
    mean, var = _stats(x)
    assert _rel(mean, m) < 0.12
    assert float((var / v).mean()) < 0.4
    longer = samplers.REDDiff(steps=3000, sigma_y=0.05)(y, A, prior, n_samples=100, generator=g(2))
    assert _rel(_stats(longer)[0], m) < 0.6 * _rel(mean, m)  # towards the posterior mean


@pytest.mark.parametrize("cls,aware_below,plain_above", [(samplers.PiGDM, 0.28, 0.35), (samplers.REDDiff, 0.35, 0.38)])
def test_noise_aware_beats_ignoring_the_noise(cls, aware_below, plain_above):
    """At a high noise level, PiGDM's noiseless (pseudo-inverse) guidance and RED-diff descending to the last
    level fit the noise: their means end 0.4 off the closed-form posterior mean. PiGDM's noisy form and
    RED-diff's levels stopped at the noise level come closer (about 0.22 and 0.31)."""
    prior, A, y, m, _ = mri_problem(noise=0.6)
    n = 400 if cls is samplers.PiGDM else 200
    plain = _stats(cls(sigma_y=None)(y, A, prior, n_samples=n, generator=g(2)))[0]
    aware = _stats(cls(sigma_y=0.6)(y, A, prior, n_samples=n, generator=g(2)))[0]
    assert _rel(plain, m) > plain_above
    assert _rel(aware, m) < aware_below


# --- scale, seeds, units of the noise ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda sy: samplers.PiGDM(steps=20, sigma_y=sy),
                                  lambda sy: samplers.REDDiff(steps=100, sigma_y=sy)])
def test_invariant_to_the_scale_of_data_and_operator(make):
    """(c y, c A) gives the samples of (y, A), the noise std stated in the measurement's units (c sigma_y)."""
    prior, A, y, _, _ = mri_problem(noise=0.3)
    a = make(0.3)(y, A, prior, n_samples=2, generator=g(4))
    for c in (1000.0, -0.01):
        b = make(0.3 * abs(c))(c * y, c * A, prior, n_samples=2, generator=g(4))
        assert float((b - a).abs().max() / a.abs().max()) < 1e-4, c


@pytest.mark.parametrize("cls,steps", [(samplers.PiGDM, 8), (samplers.REDDiff, 50)])
def test_noise_in_the_measurements_units_and_equivariance(cls, steps):
    """With a prior that takes its scale from the data ("max"), 1000 y with 1000 sigma_y gives 1000 times the
    result; the stated noise changes the result, and sigma_y = 0 is the noiseless run."""
    prior, A, y, _, _ = mri_problem(noise=0.3)
    prior.normalization.kind = "max"
    a = cls(steps=steps, sigma_y=0.3)(y, A, prior, generator=g(4))
    b = cls(steps=steps, sigma_y=300.0)(1000 * y, A, prior, generator=g(4))
    assert float((b - 1000 * a).abs().max() / (1000 * a).abs().max()) < 1e-4
    assert not torch.allclose(a, cls(steps=steps, sigma_y=0.03)(y, A, prior, generator=g(4)), atol=1e-3)
    assert torch.equal(cls(steps=steps, sigma_y=0.0)(y, A, prior, generator=g(4)),
                       cls(steps=steps, sigma_y=None)(y, A, prior, generator=g(4)))


@pytest.mark.parametrize("sampler", [samplers.PiGDM(steps=5), samplers.REDDiff(steps=20)])
def test_same_seed_same_result_different_seed_different(sampler):
    prior, A, y, _, _ = mri_problem()
    a = sampler(y, A, prior, n_samples=3, generator=g(0))
    b = sampler(y, A, prior, n_samples=3, generator=g(0))
    c = sampler(y, A, prior, n_samples=3, generator=g(1))
    assert a.shape == (3, 4, 6) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])


def test_auto_noise_is_the_operators_estimate():
    """sigma_y="auto" (the default) is the operator's estimate A.noise_std(y), in the measurement's units."""
    shape = (32, 32)
    mu, cov = smooth_gaussian(shape, 1, length=2.0)
    prior = DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="magnitude")
    gen = g(5)
    x = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    mask = torch.zeros(1, 32)
    mask[:, ::2] = 1
    mask[:, 12:20] = 1
    A = SingleCoilMRI(mask)
    y = A(x) + 0.1 * mask * torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    est = float(A.noise_std(y))
    assert est > 0
    for cls, steps in ((samplers.PiGDM, 4), (samplers.REDDiff, 20)):
        auto = cls(steps=steps)(y, A, prior, generator=g(1))
        stated = cls(steps=steps, sigma_y=est)(y, A, prior, generator=g(1))
        assert torch.allclose(auto, stated, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(auto, cls(steps=steps, sigma_y=None)(y, A, prior, generator=g(1)), atol=1e-4)


# --- the papers' update rules, written out ----------------------------------------------------------------------
def _range_problem():
    """Real 4 x 4 images, a "range" prior (network image v = -1 + 2 u, levels S = 2 sigma), inpainting."""
    mu, cov = smooth_gaussian((4, 4), 1, seed=3)
    den = GaussianDenoiser(mu[0], cov)
    prior = DiffusionPrior(den, channels="real", normalization=Normalization("range", value=1.0, lo=-1.0, hi=1.0))
    mask = torch.zeros(4, 4)
    mask[::2] = 1
    mask[1, 1] = 1
    A = Inpainting(mask)
    truth = (0.5 + 0.25 * torch.randn(4, 4, generator=g(7))).clamp(0, 1)
    y = A(truth) + 0.05 * mask * torch.randn(4, 4, generator=g(8))
    return prior, den, A, y


def _pigdm_paper(denoise, y_net, A_R, shape, complex_, levels, eta, s2, gen):
    """PiGDM (Song et al. 2023) in the network's VP coordinates, a = abar_t = 1 / (1 + S_t^2), with the real
    matrix A_R of the operator acting on [Re x; Im x] (complex) or x (real), from x_T ~ N(0, I):

        x0 = D(x / sqrt(a), S),  eps = (x - sqrt(a) x0) / sqrt(1 - a),  r^2 = 1 - a
        u  = A_R^T (r^2 A_R A_R^T + s^2 I)^{-1} (y - A_R x0)       (the noisy form; s = 0: A_R^+ (y - A_R x0) / r^2)
        g  = r^2 (d x0 / d x)^T u                                 (the algorithm's weight r^2 on the score)
        x' = sqrt(a') x0 + c1 z + c2 eps + sqrt(a') sqrt(a) g,   c1 = eta sqrt((1 - a/a')(1 - a')/(1 - a)),
                                                                 c2 = sqrt(1 - a' - c1^2)."""
    def flat(v):
        return torch.cat([v.real.flatten(), v.imag.flatten()]) if complex_ else v.flatten()

    def unflat(v):
        n = v.numel() // 2
        return torch.complex(v[:n], v[n:]).reshape(shape) if complex_ else v.reshape(shape)

    x = noise_like(torch.zeros((1,) + shape, dtype=torch.complex64 if complex_ else torch.float32), gen)
    yr = flat(y_net).double()
    for k in range(len(levels) - 1):
        S, Sn = levels[k], levels[k + 1]
        a, an = 1 / (1 + S * S), 1 / (1 + Sn * Sn)
        r2 = 1 - a
        xv = x.detach().requires_grad_(True)
        x0 = denoise(xv / math.sqrt(a), S)
        eps = (xv.detach() - math.sqrt(a) * x0.detach()) / math.sqrt(1 - a)
        res = yr - A_R @ flat(x0.detach()[0]).double()
        if s2 > 0:
            u = A_R.T @ torch.linalg.solve(r2 * A_R @ A_R.T + s2 * torch.eye(A_R.shape[0], dtype=torch.float64), res)
        else:
            u = torch.linalg.pinv(A_R) @ res / r2
        u = unflat(u.to(torch.float32))[None]
        inner = (u.conj() * x0).real.sum() if complex_ else (u * x0).sum()
        (grad,) = torch.autograd.grad(inner, xv)
        grad = r2 * grad
        c1 = eta * math.sqrt((1 - a / an) * (1 - an) / (1 - a)) if Sn > 0 else 0.0
        c2 = math.sqrt(max(1 - an - c1 * c1, 0.0))
        z = noise_like(x, gen) if c1 > 0 else 0.0
        x = (math.sqrt(an) * x0.detach() + c1 * z + c2 * eps + math.sqrt(an) * math.sqrt(a) * grad).detach()
    return x  # a' = 1 after the last step: the clean image


@pytest.mark.parametrize("case", ["range-noisy", "range-noiseless", "complex-noisy", "complex-noiseless"])
def test_pigdm_steps_are_the_papers_update(case):
    """Three steps of PiGDM (eta = 1, the start x_T ~ N(0, I) in VP coordinates) against its guidance (noisy and
    pseudo-inverse forms) and DDIM algorithm written out with dense matrices: the noisy system solved exactly,
    the pseudo-inverse by SVD, the noise per real component (sigma_y^2 / 2 for complex data)."""
    noisy = case.endswith("-noisy")
    if case.startswith("range"):
        prior, den, A, y = _range_problem()
        shape, complex_, lo, gain = (4, 4), False, -1.0, 2.0
        denoise = lambda v, S: den(v, torch.full((v.shape[0],), S))  # noqa: E731  (the network, its own units)
        sy = 0.05 if noisy else None
        s2 = (gain * 0.05) ** 2 if noisy else 0.0
    else:
        prior, A, y, _, _ = mri_problem(noise=0.2)
        shape, complex_, lo, gain = (4, 6), True, 0.0, 1.0
        denoise = prior.denoise
        sy = 0.2 if noisy else None
        s2 = 0.2 ** 2 / 2 if noisy else 0.0
    nrm, scale = A.norm(), float(prior.data_scale(y, A))
    y_net = lo * A(torch.ones(shape)) / nrm + gain * y / (nrm * scale)
    A_R = real_matrix(A, shape, complex_) / nrm
    levels = [gain * float(s) for s in prior.sigmas(3, "auto")] + [0.0]
    ref = _pigdm_paper(denoise, y_net, A_R, shape, complex_, levels, 1.0, s2, g(9))
    out = samplers.PiGDM(steps=3, sigma_y=sy, start="vp", cg_iter=30)(y, A, prior, generator=g(9))
    assert _rel(out, (ref - lo) / gain * scale) < 1e-4


def _redstep_paper(denoise, y_net, A, mu, levels, lam, lr, betas, mean, gen):
    """RED-diff (Mardani et al. 2024, Algorithm 1) in the network's VP coordinates, a = 1 / (1 + S^2), with Adam
    written out (Kingma & Ba: bias-corrected moments, eps 1e-8) on the real components of mu:

        x_t  = sqrt(a) mu + sqrt(1 - a) eps,   eps_hat = (x_t - sqrt(a) D(x_t / sqrt(a), S)) / sqrt(1 - a)
        loss = ||y - A mu||^2 / (2 m) + lam (sqrt(1 - a) / sqrt(a)) Re <sg(eps_hat - eps), mu> / d
        mu  <- Adam(mu, d loss / d mu)"""
    cplx = mu.is_complex()
    m = y_net[0].numel() * (2 if y_net.is_complex() else 1) if mean else 1
    d = mu[0].numel() * (2 if cplx else 1) if mean else 1
    m1 = m2 = 0.0
    for k, S in enumerate(levels, start=1):
        a = 1 / (1 + S * S)
        eps = noise_like(mu, gen)
        xt = math.sqrt(a) * mu + math.sqrt(1 - a) * eps
        eps_hat = (xt - math.sqrt(a) * denoise(xt / math.sqrt(a), S)) / math.sqrt(1 - a)
        mr = mu.detach().requires_grad_(True)
        r = y_net - A(mr)
        reg = (eps_hat - eps).detach()
        inner = (reg.conj() * mr).real.sum() if cplx else (reg * mr).sum()
        loss = r.abs().square().sum() / (2 * m) + lam * math.sqrt(1 - a) / math.sqrt(a) * inner / d
        (grad,) = torch.autograd.grad(loss, mr)
        gr = torch.view_as_real(grad) if cplx else grad
        m1 = betas[0] * m1 + (1 - betas[0]) * gr
        m2 = betas[1] * m2 + (1 - betas[1]) * gr * gr
        step = lr * (m1 / (1 - betas[0] ** k)) / ((m2 / (1 - betas[1] ** k)).sqrt() + 1e-8)
        mu = mu - (torch.view_as_complex(step.contiguous()) if cplx else step)
    return mu


@pytest.mark.parametrize("case", ["complex-sum", "complex-mean", "complex-noisy", "range-sum"])
def test_red_diff_steps_are_algorithm_1(case):
    """Four RED-diff steps against Algorithm 1 and Adam written out; with a noise of std sigma_y the levels stop
    at its std per real component (sigma_y / sqrt(2) for complex data)."""
    mean = case.endswith("mean")
    sy = 0.5 if case.endswith("noisy") else None
    if case.startswith("range"):
        prior, den, A, y = _range_problem()
        shape, lo, gain = (4, 4), -1.0, 2.0
        denoise = lambda v, S: den(v, torch.full((v.shape[0],), S))  # noqa: E731
    else:
        prior, A, y, _, _ = mri_problem()
        shape, lo, gain = (4, 6), 0.0, 1.0
        denoise = prior.denoise
    nrm, scale = A.norm(), float(prior.data_scale(y, A))
    A_n = lambda v: A(v) / nrm  # noqa: E731
    y_net = (lo * A_n(torch.ones(shape)) + gain * y / (nrm * scale))[None]
    mu0 = A.pinv(y_net[0] * nrm)[None]  # the pseudo-inverse of the network's data (A_n^+ = ||A|| A^+)
    floor = 0.0 if sy is None else sy / math.sqrt(2) / (nrm * scale)
    levels = [gain * max(float(s), floor) for s in prior.sigmas(4, "auto")]
    ref = _redstep_paper(denoise, y_net, A_n, mu0, levels, 0.25, 0.1, (0.9, 0.99), mean, g(6))
    s = samplers.REDDiff(steps=4, sigma_y=sy, normalization="mean" if mean else "sum")
    out = s(y, A, prior, generator=g(6))
    assert _rel(out, (ref - lo) / gain * scale) < 1e-4


# --- the "reference" presets against the published code, on a VP network ----------------------------------------
def _adm(seed=0):
    torch.manual_seed(seed)
    net = ADMUNet(image_size=8, in_channels=3, model_channels=32, num_res_blocks=1, attention_resolutions=(2,),
                  channel_mult=(1, 2), num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True,
                  resblock_updown=True).eval()
    with torch.no_grad():  # the output convolution starts at zero: give every weight a say
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
        net.out[2].weight.mul_(0.1)
        net.out[2].bias.mul_(0.1)
    return net


def _adm_problem():
    """A "range" rgb prior on the ADM (the network sees 2u - 1) and image-domain inpainting of 3 x 8 x 8."""
    net = _adm()
    prior = DiffusionPrior(VPModel(net, "linear", T, "eps", learned_sigma=True), channels="rgb",
                           normalization=Normalization("range", value=1.0, lo=-1.0, hi=1.0))
    gen = g(3)
    truth = torch.rand(3, 8, 8, generator=gen)
    mask = (torch.rand(8, 8, generator=gen) < 0.5).float().expand(3, 8, 8).contiguous()
    A = Inpainting(mask)
    y_net = (2 * A(truth) - A(torch.ones(3, 8, 8)))[None]  # the network's data (A has norm 1)
    return net, prior, A, A(truth), y_net, mask


def _eps(net, x, t):
    return net(x, torch.full((x.shape[0],), float(t)))[:, :3]


def test_pigdm_reference_preset_is_the_repositorys_update():
    """The RED-diff repository's PiGDM (algos/pgdm.py, awd) with eta = 1: timesteps range(0, 1000, 1000 // steps)
    from the last, abar = 1 before t = 0, the start sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z, and

        x0 = (x - sqrt(1 - a) eps) / sqrt(a),  g = (d x0 / d x)^T (A^+ y - A^+ A x0)
        x_s = sqrt(a_s) x0 + c1 z + c2 eps + sqrt(a_s) sqrt(a) g.

    10 steps of the preset (its 100 keep the test slow); noise is drawn where c1 > 0 (the code draws it at the
    last step too, unused)."""
    net, prior, A, y, y_net, mask = _adm_problem()
    steps = 10
    with torch.no_grad():
        out = samplers.get("pigdm", preset="reference", steps=steps)(y, A, prior, generator=g(11))

    gen = g(11)
    ts = list(range(0, T, T // steps))
    alpha = lambda t: float(ABAR[t]) if t >= 0 else 1.0  # noqa: E731
    pinv = lambda v: mask * v  # noqa: E731  (the inpainting mask's exact pseudo-inverse)
    a = alpha(ts[-1])
    x = math.sqrt(a) * pinv(y_net) + math.sqrt(1 - a) * torch.randn((1, 3, 8, 8), generator=gen)
    for t, s in zip(reversed(ts), reversed([-1] + ts[:-1])):
        a_t, a_s = alpha(t), alpha(s)
        c1 = math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
        c2 = math.sqrt(max(1 - a_s - c1 * c1, 0.0))
        xv = x.detach().requires_grad_(True)
        et = _eps(net, xv, t)
        x0 = (xv - math.sqrt(1 - a_t) * et) / math.sqrt(a_t)
        mat = (pinv(y_net) - pinv(A(x0))).detach()
        (grad,) = torch.autograd.grad((mat * x0).sum(), xv)
        z = torch.randn((1, 3, 8, 8), generator=gen) if c1 > 0 else 0.0
        x = (math.sqrt(a_s) * x0 + c1 * z + c2 * et + math.sqrt(a_s) * math.sqrt(a_t) * grad).detach()
    assert _rel(out, (x + 1) / 2) < 1e-3
    s = samplers.PiGDM.from_preset("reference")
    assert (s.steps, s.eta, s.scale, s.schedule, s.sigma_y, s.start) == (100, 1.0, 1.0, "leading", None, "pinv")


def test_red_diff_reference_preset_is_the_code():
    """The RED-diff code (algos/reddiff.py, its config): mu from A^+ y in the network's units, timesteps
    range(0, 1000, 1000 // steps) from the last, and per step one Adam step (lr 0.1, betas (0.9, 0.99)) on

        mean((y - A mu)^2) / 2 + 0.25 sqrt(1 - a) / sqrt(a) mean(sg(eps(x_t, t) - eps) mu),
        x_t = sqrt(a) mu + sqrt(1 - a) eps,

    here with torch's Adam; mu after the last step. 20 steps of the preset's 1000."""
    net, prior, A, y, y_net, mask = _adm_problem()
    steps = 20
    with torch.no_grad():
        out = samplers.get("red-diff", preset="reference", steps=steps)(y, A, prior, generator=g(12))

    gen = g(12)
    mu = (mask * y_net).clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=0.1, betas=(0.9, 0.99))
    for t in reversed(range(0, T, T // steps)):
        a = float(ABAR[t])
        noise = torch.randn((1, 3, 8, 8), generator=gen)
        with torch.no_grad():
            et = _eps(net, math.sqrt(a) * mu + math.sqrt(1 - a) * noise, t)
        loss = (y_net - A(mu)).square().mean() / 2 + 0.25 * math.sqrt(1 - a) / math.sqrt(a) * (
            (et - noise) * mu).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _rel(out, (mu.detach() + 1) / 2) < 1e-3
    s = samplers.REDDiff.from_preset("reference")
    assert (s.steps, s.lam, s.lr, s.betas, s.schedule, s.normalization, s.sigma_y) == (
        1000, 0.25, 0.1, (0.9, 0.99), "leading", "mean", None)


def test_the_priors_weights_are_left_as_they_were():
    """Both take gradients (PiGDM through the network, RED-diff of the loss in mu); neither changes the prior's
    weights nor leaves a gradient on them."""
    net, prior, A, y, _, _ = _adm_problem()
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    for s in (samplers.PiGDM(steps=3), samplers.REDDiff(steps=5)):
        out = s(y, A, prior, n_samples=2, generator=g(0))
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    after = prior.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in prior.parameters())


# --- every operator and prior its mathematics allows ----------------------------------------------------------------
def _gauss(shape, channels):
    mu, cov = smooth_gaussian(shape, 2 if channels == "complex" else 1, length=2.0)
    return DiffusionPrior(GaussianDenoiser(mu if channels == "complex" else mu[0], cov), channels=channels)


def _complex_image(shape, seed=0):
    gen = g(seed)
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))


def _maps(n_coils, shape):
    r = torch.linspace(-1, 1, shape[0])
    maps = torch.stack([torch.exp(1j * c * (r[:, None] + r[None, :])).to(torch.complex64) for c in range(n_coils)])
    return maps / maps.abs().square().sum(0).sqrt()


CASES = {
    "non-cartesian, complex": lambda: (NonCartesianMRI(_maps(2, (8, 8)), trajectories.radial(6, 16)),
                                       _complex_image((8, 8)), "complex"),
    "sense, magnitude": lambda: (MultiCoilMRI(_maps(3, (8, 8)), torch.tensor([[1.0, 0, 1, 1, 1, 0, 1, 0]])),
                                 _complex_image((8, 8)), "magnitude"),
    "parallel-beam CT, real": lambda: (ParallelBeamCT(8, 6), torch.rand(8, 8, generator=g(1)), "real"),
    "fan-beam CT, real": lambda: (FanBeamCT(8, 8, source_distance=20.0, detector_distance=10.0),
                                  torch.rand(8, 8, generator=g(1)), "real"),
    "blur, real": lambda: (Blur(Blur.gaussian(1.0)), torch.rand(8, 8, generator=g(1)), "real"),
    "downsample, real": lambda: (Downsample((8, 8), 2), torch.rand(8, 8, generator=g(1)), "real"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("make", [lambda: samplers.PiGDM(steps=4), lambda: samplers.REDDiff(steps=10)])
def test_runs_on_every_operator(case, make):
    A, x, channels = CASES[case]()
    y = A(x)
    out = make()(y, A, _gauss((8, 8), channels), n_samples=2, generator=g(2))
    assert out.shape == (2, 8, 8) and out.is_complex() == x.is_complex() and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["pigdm", "red-diff"])
def test_a_real_prior_on_complex_images_is_refused_by_name(name):
    A = SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1]]))
    y = A(_complex_image((4, 6)))
    mu, cov = smooth_gaussian((4, 6), 1)
    prior = DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real")
    with pytest.raises(ValueError, match=rf"{name}: the prior is 'real' .* complex images"):
        samplers.get(name, steps=2)(y, A, prior)


@pytest.mark.parametrize("make,msg", [
    (lambda: samplers.PiGDM(eta=1.5), "eta"), (lambda: samplers.PiGDM(start="noise"), "start"),
    (lambda: samplers.PiGDM(sigma_y="estimate"), "sigma_y"), (lambda: samplers.PiGDM(sigma_y=-1.0), "sigma_y"),
    (lambda: samplers.PiGDM(cg_iter=0), "cg_iter"), (lambda: samplers.PiGDM(scale=-1.0), "scale"),
    (lambda: samplers.REDDiff(lr=0.0), "lr"), (lambda: samplers.REDDiff(lam=-0.1), "lam"),
    (lambda: samplers.REDDiff(betas=(0.9, 1.0)), "betas"), (lambda: samplers.REDDiff(betas=0.9), "betas"),
    (lambda: samplers.REDDiff(normalization="batch"), "normalization"),
    (lambda: samplers.REDDiff(sigma_y=float("nan")), "sigma_y"),
    (lambda: samplers.get("pigdm", preset="paper"), "presets: reference"),
])
def test_bad_settings_are_refused(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_registered_with_their_defaults():
    assert samplers.sampler_class("pigdm") is samplers.PiGDM and samplers.sampler_class("red-diff") is samplers.REDDiff
    p, r = samplers.for_problem("pigdm", ParallelBeamCT(8, 6), None), samplers.get("red-diff")
    assert (p.steps, p.eta, p.scale, p.sigma_y, p.start) == (100, 1.0, 1.0, "auto", "sigma")
    assert (r.steps, r.lam, r.lr, r.betas, r.sigma_y, r.normalization) == (1000, 0.25, 0.1, (0.9, 0.99), "auto", "sum")
    assert samplers.for_problem("red-diff", None, None, steps=7).steps == 7
