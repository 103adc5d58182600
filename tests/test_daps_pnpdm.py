"""DAPS and PnP-DM against the truth: closed-form Gaussian posteriors, their papers' update rules written out step
by step, scale invariance, reproducibility, noisy data, and the operators and priors they run on or refuse."""
import math

import pytest
import torch

from gaussian_problems import inpainting_problem, mri_problem, real_matrix, smooth_gaussian
from gaussian_problems import sample_stats as _stats, relative_error as _rel
from operators import FanBeamCT, MultiCoilMRI, NonCartesianMRI, ParallelBeamCT, SingleCoilMRI, trajectories
from operators.image import Blur, Downsample, Inpainting
from recon import samplers
from recon.priors.gaussian import GaussianDenoiser, gaussian_posterior
from recon.priors.prior import DiffusionPrior, Normalization
from recon.priors.schedules import karras_sigmas
from recon.samplers.base import noise_like
from recon.samplers.daps import DAPS
from recon.samplers.pnp_dm import PnPDM

N = 1000


def _mu(prior):
    mu = prior.denoiser.mu
    return torch.complex(mu[:24], mu[24:]).reshape(4, 6)


def _smoothed_posterior(prior, A, y, noise, rho):
    """The closed-form posterior of ``mri_problem`` for data of noise std ``noise`` (E|n|^2) and the likelihood
    widened by rho^2 per real component (A A^H = I on the measured samples): PnP-DM's target at coupling rho."""
    Ar = real_matrix(A, (4, 6), True)
    yr = torch.cat([y.real.flatten(), y.imag.flatten()]).double()
    m, c = gaussian_posterior(prior.denoiser.mu, prior.denoiser.cov, Ar, yr, math.hypot(noise / math.sqrt(2), rho))
    return torch.complex(m[:24], m[24:]).reshape(4, 6), (c.diagonal()[:24] + c.diagonal()[24:]).reshape(4, 6)


# --- the closed-form Gaussian posterior -------------------------------------------------------------------------
def test_daps_posterior_mean_on_a_correlated_gaussian():
    """DAPS approximates p(x0 | x_t) by a Gaussian of variance r_t^2: an approximate sampler. Its mean comes within
    20% of the posterior mean (the prior mean is 70% away, the tolerance of the other approximate samplers in
    test_samplers) and its marginal variance is in the posterior's range."""
    prior, A, y, m, v = mri_problem()
    assert _rel(_mu(prior), m) > 0.6
    s = DAPS(annealing_steps=50, langevin_steps=50, sigma_y=0.05)
    mean, var = _stats(s(y, A, prior, n_samples=400, generator=torch.Generator().manual_seed(2)))
    assert _rel(mean, m) < 0.2
    assert 0.6 < float((var / v).mean()) < 1.4


def test_pnpdm_samples_its_target_posterior():
    """At a fixed coupling rho the split Gibbs chain's x-marginal is the posterior for data of noise variance
    beta_y^2 + rho^2 per real component (A A^H = I on the measured samples here). After the annealing to rho_min,
    300 iterations at rho_min mix the chain (its slowest direction forgets at the rate rho^2 / lambda_max per
    iteration): the sample mean is within 4.5 standard errors of the target's mean in every pixel, and each pixel's
    variance within 20% of the target's (the variance of a variance estimate from N complex Gaussian samples is
    1/N relative, 4.5 standard errors are 14% at N = 1000; the prior step's discretisation on 30 EDM levels adds
    a few percent). The target is within 5% of the true posterior."""
    prior, A, y, m_true, _ = mri_problem()
    m, v = _smoothed_posterior(prior, A, y, 0.05, 0.1)
    s = PnPDM(iterations=340, rho_min=0.1, edm_steps=30, sigma_y=0.05)
    mean, var = _stats(s(y, A, prior, n_samples=N, generator=torch.Generator().manual_seed(1)))
    z = (mean - m).abs() / (v / N).sqrt()
    assert z.max() < 4.5, z
    assert ((var / v) - 1).abs().max() < 0.2
    assert _rel(m, m_true) < 0.05


def test_pnpdm_with_noisy_data_samples_the_noisy_posterior_and_the_floor_alone_does_not():
    """At a high noise level (std 0.6) the stated noise gives the posterior's mean and spread (mean of the
    per-pixel variance ratios within 10% of 1); weighing the same data as noiseless (the floor) gives too narrow a
    spread and a mean that follows the noise."""
    prior, A, y, m_true, v_true = mri_problem(noise=0.6)
    m, v = _smoothed_posterior(prior, A, y, 0.6, 0.1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    kw = dict(iterations=150, rho_min=0.1, edm_steps=30)
    mean, var = _stats(PnPDM(sigma_y=0.6, **kw)(y, A, prior, n_samples=600, generator=g()))
    assert _rel(mean, m) < 0.05 and abs(float((var / v).mean()) - 1) < 0.1
    assert _rel(m, m_true) < 0.01
    mean0, var0 = _stats(PnPDM(sigma_y=0.0, **kw)(y, A, prior, n_samples=600, generator=g()))
    assert float((var0 / v).mean()) < 0.8 and _rel(mean0, m) > 10 * _rel(mean, m)


def test_daps_weighs_noisy_data_by_their_noise():
    """At noise std 0.6 the noise-aware default (the stated noise, the step relative to the Langevin target's
    curvature) lands within 15% of the posterior mean; the DAPS code's fixed weight (tau = 0.01, as if the data
    were nearly noiseless) fits the noise and lands further away."""
    prior, A, y, m, v = mri_problem(noise=0.6)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    kw = dict(annealing_steps=50, langevin_steps=50)
    aware = _rel(_stats(DAPS(sigma_y=0.6, **kw)(y, A, prior, n_samples=400, generator=g()))[0], m)
    fixed = _rel(_stats(DAPS(tau=0.01, **kw)(y, A, prior, n_samples=400, generator=g()))[0], m)
    assert aware < 0.15 and fixed > aware + 0.05


# --- invariance, equivariance, reproducibility ------------------------------------------------------------------
SMALL = {"daps": lambda **kw: DAPS(annealing_steps=6, ode_steps=2, langevin_steps=5, **kw),
         "pnp-dm": lambda **kw: PnPDM(iterations=6, edm_steps=20, **kw)}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("sigma_y", ["auto", 0.2])
def test_invariant_to_c_y_c_A_and_equivariant_to_c_y(name, sigma_y):
    """(c y, c A) gives the samples of (y, A); with a data-scaled prior (c y, A) gives c times them. A noise level
    stated in the measurement's units scales with it."""
    prior, A, y, _, _ = mri_problem(noise=0.2)
    prior.normalization = Normalization("max")
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    sig = lambda c: sigma_y if sigma_y == "auto" else c * sigma_y  # noqa: E731
    a = SMALL[name](sigma_y=sig(1))(y, A, prior, n_samples=3, generator=g())
    b = SMALL[name](sigma_y=sig(1000))(1000 * y, 1000 * A, prior, n_samples=3, generator=g())
    c = SMALL[name](sigma_y=sig(1000))(1000 * y, A, prior, n_samples=3, generator=g())
    assert float((b - a).abs().max() / a.abs().max()) < 1e-4  # float32 rounding, through CG's conditioning
    assert float((c - 1000 * a).abs().max() / (1000 * a).abs().max()) < 1e-4


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_samples_different_seed_different(name):
    prior, A, y, _, _ = mri_problem()
    s = SMALL[name]()
    a = s(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(0))
    b = s(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(0))
    c = s(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 6) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])
    chunked = SMALL[name](max_batch=2)(y, A, prior, n_samples=3, generator=torch.Generator().manual_seed(0))
    assert chunked.shape == (3, 4, 6) and torch.isfinite(chunked.abs()).all()


# --- each paper's update rule, written out ----------------------------------------------------------------------
def _euler_ode(prior, x, levels):
    for a, b in zip(levels[:-1], levels[1:]):
        x = x + (b - a) * (x - prior.denoise(x, a)) / a
    return x


def _daps_written_out(prior, A, y, seed, levels, ode, lr, var, langevin_steps):
    """Alg. 1 of the DAPS paper: x_T = sigma_0 z; per level the ODE to x0_hat, Langevin on x0 with the step
    ``lr(k, r)``, re-noising to the next level."""
    g = torch.Generator().manual_seed(seed)
    yb = y[None]
    x = noise_like(A.H(yb), g) * levels[0]
    for k, (s, sn) in enumerate(zip(levels[:-1], levels[1:])):
        x0_hat = _euler_ode(prior, x, ode(s))
        eta = lr(k, s)
        x0 = x0_hat
        for _ in range(langevin_steps):
            grad = -(x0 - x0_hat) / s ** 2 - A.H(A(x0) - yb) / var
            x0 = x0 + eta * grad + math.sqrt(2 * eta) * noise_like(x0, g)
        x = x0 + sn * noise_like(x0, g) if sn > 0 else x0
    return x


def test_daps_steps_are_the_papers_update():
    """The default: rho = 7 levels from 100 to 0.1 then 0; the ODE by Euler steps on rho = 7 levels to 0.01, then
    to 0; Langevin with beta_y^2 = sigma_y^2 / 2 per real component (complex data) and the step
    lr (1 + k/(K - 1)(lr_min_ratio - 1)) / (sigma_y_min^2 (1 / beta_y^2 + 1 / r^2)), r = sigma_t."""
    prior, A, y, _, _ = mri_problem()
    s = DAPS(annealing_steps=3, ode_steps=2, langevin_steps=2, lr=1e-4, lr_min_ratio=0.1, sigma_y=0.05)
    out = s(y, A, prior, generator=torch.Generator().manual_seed(7))
    levels = [float(v) for v in karras_sigmas(0.1, 100.0, 3)] + [0.0]
    var = 0.05 ** 2 / 2

    def ode(sig):
        return [float(v) for v in karras_sigmas(0.01, sig, 2)] + [0.0]

    def lr(k, r):
        return 1e-4 * (1 + k / 2 * (0.1 - 1)) / (1e-4 * (1 / var + 1 / r ** 2))

    ref = _daps_written_out(prior, A, y, 7, levels, ode, lr, var, 2)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_daps_reference_preset_is_the_codes_update():
    """The DAPS code's discretisation: the first K of K + 1 rho = 7 levels from 100 to 0.1, then 0; the ODE's
    Euler steps over ode_steps + 1 levels ending at 0.01 (no step to 0); the step lr (1 + k/(K + 1)(ratio - 1));
    the loss ||A x - y||^2 / tau^2 (beta_y^2 = tau^2 / 2), whatever the noise."""
    prior, A, y, _, _ = mri_problem()
    s = samplers.get("daps", preset="reference", annealing_steps=3, ode_steps=2, langevin_steps=2)
    assert (s.lr, s.tau, s.lr_min_ratio, s.sigma_max, s.sigma_min, s.ode_sigma_min) == (1e-4, 0.01, 0.01, 100.0,
                                                                                       0.1, 0.01)
    out = s(y, A, prior, generator=torch.Generator().manual_seed(8))
    levels = [float(v) for v in karras_sigmas(0.1, 100.0, 4)[:3]] + [0.0]

    def ode(sig):
        return [float(v) for v in karras_sigmas(0.01, sig, 3)]

    ref = _daps_written_out(prior, A, y, 8, levels, ode, lambda k, r: 1e-4 * (1 + k / 4 * (0.01 - 1)),
                            0.01 ** 2 / 2, 2)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    ref_preset = DAPS.from_preset("reference")
    assert ref_preset.nfe() == 1000 and ref_preset.langevin_steps == 100
    assert DAPS.from_preset("daps-4k").nfe() == 4000


def _gaussian_draw(A, y, x, rho, var, n1, n2):
    """z = (A^T A / var + I / rho^2)^-1 (A^T (y + sqrt(var) n1) / var + (x + rho n2) / rho^2), in the real
    coordinates of the complex image, by a dense solve."""
    Ar = real_matrix(A, (4, 6), True)
    yr = torch.cat([(y + math.sqrt(var) * n1).real.flatten(), (y + math.sqrt(var) * n1).imag.flatten()]).double()
    xr = x + rho * n2
    xr = torch.cat([xr.real.flatten(), xr.imag.flatten()]).double()
    Q = Ar.T @ Ar / var + torch.eye(48, dtype=torch.float64) / rho ** 2
    z = torch.linalg.solve(Q, Ar.T @ yr / var + xr / rho ** 2)
    return torch.complex(z[:24], z[24:]).reshape(1, 4, 6).to(torch.complex64)


@pytest.mark.parametrize("convention", ["paper", "code"])
def test_pnpdm_iterations_are_the_papers_split_gibbs_steps(convention):
    """Two iterations from x_0 = A^+ y: the likelihood step's Gaussian draw (a dense solve of its normal equations
    with the same perturbations), then the prior step from z at rho_k = max(10 0.9^k, rho_min): Euler-Maruyama in
    sigma^2 from rho_k over the EDM levels below it, the Tweedie estimate at the end (the default), or the code's
    Euler-Maruyama in sigma from the first level below rho_k, ending at 2 D - x ("reference")."""
    prior, A, y, _, _ = mri_problem()
    if convention == "code":
        s = samplers.get("pnp-dm", preset="reference", iterations=2, edm_steps=40, sigma_y=0.05)
        assert (s.rho_start, s.rho_decay, s.rho_min) == (10.0, 0.9, 0.3)
    else:
        s = PnPDM(iterations=2, edm_steps=40, rho_decay=0.5, sigma_y=0.05)
    seen = []
    out = s(y, A, prior, generator=torch.Generator().manual_seed(9), callback=seen.append)
    g = torch.Generator().manual_seed(9)
    yb, var = y[None], 0.05 ** 2 / 2
    levels = [float(v) for v in karras_sigmas(0.002, 80.0, 40)]
    x = A.pinv(yb)
    for k in range(2):
        rho = max(s.rho_start * s.rho_decay ** k, s.rho_min)
        n1, n2 = noise_like(yb, g), noise_like(x, g)
        z = _gaussian_draw(A, y, x[0], rho, var, n1[0], n2[0])
        assert torch.allclose(seen[k]["z"], z, atol=1e-4), k
        below = [v for v in levels if v < rho]
        if convention == "code":
            x = z
            for a, b in zip(below, below[1:] + [0.0]):
                d = prior.denoise(x, a)
                x = x + 2 * (b - a) * (x - d) / a
                if b > 0:
                    x = x + math.sqrt(2 * a * (a - b)) * noise_like(x, g)
        else:
            x = z
            sched = [rho] + below
            for a, b in zip(sched, below + [0.0]):
                d = prior.denoise(x, a)
                if b == 0:
                    x = d
                else:
                    x = x + (a * a - b * b) / (a * a) * (d - x) + math.sqrt(a * a - b * b) * noise_like(x, g)
    assert torch.allclose(out, x, atol=1e-4)


# --- the operators it runs on, the priors it refuses ------------------------------------------------------------
def _real_prior(shape, seed=3):
    mu, cov = smooth_gaussian(shape, 1, seed=seed)
    return DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real"), mu[0]


def _image_domain():
    mask = (torch.arange(36).reshape(6, 6) % 3 != 0).float()
    return {"inpainting": Inpainting(mask), "blur": Blur(Blur.gaussian(1.0), shape=(6, 6)),
            "downsample": Downsample((6, 6), 2), "parallel-beam": ParallelBeamCT(6, 5, n_detectors=9),
            "fan-beam": FanBeamCT(6, 5, 30.0, 15.0)}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("op", ["inpainting", "blur", "downsample", "parallel-beam", "fan-beam"])
def test_runs_on_ct_and_image_domain_operators_with_a_real_prior(name, op):
    prior, mu = _real_prior((6, 6))
    A = _image_domain()[op]
    y = A(mu.float())
    out = SMALL[name]()(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 6, 6) and out.dtype == torch.float32 and torch.isfinite(out).all()
    complex_prior = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 6, 6), torch.eye(72)), channels="complex")
    with pytest.raises(ValueError, match=f"{name}: a complex prior"):
        SMALL[name]()(y, A, complex_prior)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("channels", ["complex", "magnitude"])
def test_runs_on_non_cartesian_mri_with_complex_and_magnitude_priors(name, channels):
    n = 16
    maps = torch.ones(2, n, n, dtype=torch.complex64) / math.sqrt(2)
    A = NonCartesianMRI(maps, trajectories.radial(8, 32))
    x = torch.complex(torch.linspace(0, 1, n * n), torch.linspace(1, 0, n * n)).reshape(n, n)
    y = A(x) + 0.01 * torch.randn(A.oshape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    shape = (2, n, n) if channels == "complex" else (n, n)
    d = math.prod(shape)
    prior = DiffusionPrior(GaussianDenoiser(torch.zeros(shape, dtype=torch.float64),
                                            0.3 * torch.eye(d, dtype=torch.float64)), channels=channels)
    out = SMALL[name]()(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, n, n) and out.dtype == torch.complex64 and torch.isfinite(out.abs()).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_runs_on_multicoil_mri_and_with_a_magnitude_prior_on_ct(name):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 6, dtype=torch.complex64, generator=g)
    A = MultiCoilMRI(maps / maps.abs().square().sum(0).sqrt(), torch.tensor([[1.0, 0, 1, 1, 0, 1]]))
    prior, _, _, _, _ = mri_problem()
    y = A(torch.randn(4, 6, dtype=torch.complex64, generator=g))
    out = SMALL[name]()(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 6) and torch.isfinite(out.abs()).all()
    real, mu = _real_prior((6, 6))
    magnitude = DiffusionPrior(real.denoiser, channels="magnitude")
    ct = _image_domain()["parallel-beam"]
    out = SMALL[name]()(ct(mu.float()), ct, magnitude, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 6, 6) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_real_prior_on_complex_mri_images_is_refused_by_name(name):
    prior, _ = _real_prior((4, 6))
    A = SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1]]), shape=(4, 6))
    y = A(torch.ones(4, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match=f"{name}: a real-valued prior"):
        SMALL[name]()(y, A, prior)


def test_noiseless_data_and_unknown_noise_use_the_floor():
    """sigma_y = 0, None and 'auto' where the operator cannot estimate its noise (inpainting) all weigh the data
    with the floor sigma_y_min: the same samples."""
    prior, A, y, _, _ = inpainting_problem()
    for make in SMALL.values():
        runs = [make(sigma_y=s)(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(4))
                for s in (0.0, None, "auto")]
        assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
        other = make(sigma_y_min=0.02)(y, A, prior, n_samples=2, generator=torch.Generator().manual_seed(4))
        assert not torch.allclose(runs[0], other)


# --- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    ({"lr": 1e-3}, "too large"), ({"sigma_min": 200.0}, "ode_sigma_min < sigma_min < sigma_max"),
    ({"tau": 0.01, "sigma_y": 0.1}, "one way"), ({"sigma_y": "estimate"}, "sigma_y must be"),
    ({"sigma_y": -1.0}, "sigma_y must be"), ({"lr_min_ratio": 2.0}, "lr_min_ratio"),
    ({"convention": "dps"}, "convention"), ({"annealing_steps": 0}, "annealing_steps"),
])
def test_daps_refuses_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DAPS(**kw)


@pytest.mark.parametrize("kw,msg", [
    ({"rho_decay": 1.5}, "rho_decay"), ({"rho_min": 20.0}, "rho_min <= rho_start"), ({"edm_steps": 1}, "edm_steps"),
    ({"sigma_y": float("nan")}, "sigma_y must be"), ({"cg_iter": 0}, "cg_iter"), ({"convention": "x"}, "convention"),
])
def test_pnpdm_refuses_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PnPDM(**kw)


def test_registered_with_their_lengths_and_presets():
    assert samplers.sampler_class("daps") is DAPS and samplers.sampler_class("pnp-dm") is PnPDM
    prior, A, _, _, _ = mri_problem()
    assert samplers.for_problem("daps", A, prior, steps=40).annealing_steps == 40
    assert samplers.for_problem("pnp-dm", A, prior, preset="reference", steps=30).iterations == 30
    ref = PnPDM.from_preset("reference")
    assert ref.rhos()[:3] == [10.0, 9.0, 10.0 * 0.9 ** 2] and ref.rhos()[-1] == 0.3 and ref.convention == "code"
    with pytest.raises(ValueError, match="no preset"):
        samplers.get("pnp-dm", preset="daps-4k")
