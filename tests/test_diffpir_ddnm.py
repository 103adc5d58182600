"""DiffPIR and DDNM/DDNM+ against the truth: closed-form Gaussian posteriors, exact data consistency, their papers'
update rules written out (in the VP coordinates of the papers and their code), scale invariance, reproducibility,
noisy data, and the operators and priors they run on."""
import math

import numpy as np
import pytest
import torch

from gaussian_problems import inpainting_problem, mri_problem, smooth_gaussian, stationary_mri_problem
from gaussian_problems import sample_stats as _stats, relative_error as _rel
from operators import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI, fft2c, ifft2c, trajectories
from operators.ct import FanBeamCT, ParallelBeamCT
from operators.image import Blur, Downsample, Inpainting
from recon import samplers
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.prior import DiffusionPrior
from recon.samplers.base import noise_like
from recon.samplers.ddnm import DDNM, travel_indices
from recon.samplers import diffpir
from recon.samplers.diffpir import DiffPIR, quad_sigmas

N = 400
T = 1000
ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)  # DDPM's linear schedule
SAMPLERS = {"diffpir": lambda **kw: samplers.get("diffpir", **{"steps": 50, **kw}),
            "ddnm": lambda **kw: samplers.get("ddnm", **{"steps": 50, **kw})}


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _prior_mean(prior, shape):
    mu = prior.denoiser.mu
    return torch.complex(mu[: mu.numel() // 2], mu[mu.numel() // 2:]).reshape(shape) if len(shape) == 2 and \
        prior.channels == "complex" else mu.reshape(shape)


class LadderedGaussian(GaussianDenoiser):
    """The exact Gaussian denoiser seen through a DDPM ladder of 1000 timesteps (linear betas): the schedules
    "leading", "auto" and "quad" are then the published codes' timesteps."""

    @property
    def discrete_sigmas(self):
        return ((1 - ABAR) / ABAR).sqrt()


def _laddered(prior):
    return DiffusionPrior(LadderedGaussian(prior.denoiser.mu.reshape(prior.denoiser.shape), prior.denoiser.cov,
                                           sigma_min=1e-3, sigma_max=200.0), channels=prior.channels)


# --- the closed-form posterior ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("problem", ["mri", "inpainting"])
def test_posterior_mean_on_a_correlated_gaussian(name, problem):
    """Neither method claims to sample the posterior; their sample mean is within 0.2 (relative) of the
    posterior mean, as for the other approximate samplers (test_samplers), while the prior mean is far from it."""
    prior, A, y, m, v = (mri_problem if problem == "mri" else inpainting_problem)(noise=0.05)
    assert _rel(_prior_mean(prior, m.shape), m) > 0.5
    mean, _ = _stats(SAMPLERS[name](sigma_y=0.05)(y, A, prior, n_samples=N, generator=_g(2)))
    assert _rel(mean, m) < 0.2


def test_ddnm_with_ancestral_steps_is_exact_when_fourier_coefficients_are_independent():
    """Independent Fourier coefficients and a Cartesian mask: the posterior keeps the measured coefficients and
    the prior's distribution of the others, the range-null-space correction is exactly that split, and DDNM with
    ancestral steps (eta = 1, DDIM's convention) samples the posterior: its mean and variance per coefficient."""
    prior, A, y, k_mean, k_var = stationary_mri_problem()
    x = DDNM(steps=100, eta=1.0, eta_convention="ddim", sigma_y=None)(y, A, prior, n_samples=1000, generator=_g(1))
    mean, var = _stats(fft2c(x.to(torch.complex128)))
    un = k_var > 0
    assert ((mean - k_mean).abs()[un] / (k_var[un] / 1000).sqrt()).max() < 4.5
    assert ((var[un] / k_var[un]) - 1).abs().max() < 0.15
    assert (mean - k_mean).abs()[~un].max() < 1e-5 and var[~un].max() < 1e-10


def _sense_problem():
    prior, A, _, _, _ = mri_problem()
    maps = torch.randn(2, 4, 6, dtype=torch.complex64, generator=_g(9))
    A = MultiCoilMRI(maps, A.mask)
    x = torch.randn(4, 6, dtype=torch.complex64, generator=_g(10))
    return prior, A, A(x)


def _noiseless_problems():
    prior, A, y, _, _ = mri_problem(noise=0.0)
    out = {"single-coil": (prior, A, y), "sense": _sense_problem()}
    rp, Ai, yi, _, _ = inpainting_problem(noise=0.0)
    out["inpainting"] = (rp, Ai, yi)
    mu, cov = smooth_gaussian((4, 4), 1, seed=4)
    Ad = Downsample((4, 4), 2)
    out["downsample"] = (DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real"), Ad, Ad(mu[0].float()))
    return out


@pytest.mark.parametrize("op", ["single-coil", "sense", "inpainting", "downsample"])
def test_noiseless_ddnm_and_diffpir_results_satisfy_the_data(op):
    """With noiseless data the last step of both returns an estimate on {x : A x = y}: the range-null-space
    correction (DDNM) and the projection that is DiffPIR's rho -> 0 limit. Exact (rounding) for masks and block
    averaging, whose A^+ CG finds in one or two iterations; to CG's tolerance for SENSE with coil maps."""
    prior, A, y = _noiseless_problems()[op]
    tol = 1e-3 if op == "sense" else 1e-5
    for s in (DDNM(steps=8, sigma_y=None), DiffPIR(steps=8, sigma_y=None, cg_iter=50)):
        x = s(y, A, prior, n_samples=3, generator=_g(0))
        err = (A(x) - y).abs().flatten(1).norm(dim=1) / y.abs().norm()
        assert float(err.max()) < tol, (type(s).__name__, err)


# --- the update rules, written out in the papers' VP coordinates ----------------------------------------------
def _abar(s):
    return 1.0 / (1.0 + s * s)


def _start(y, A, seed, sigma):
    g = _g(seed)
    z = noise_like(A.H(y[None]), g)
    return g, sigma * z


def test_diffpir_step_is_the_papers_algorithm_1():
    """Three steps of DiffPIR against Alg. 1 in VP coordinates x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
    with the data step in closed form (in k-space for a Cartesian mask: (M y + rho F x0) / (M + rho), the code's
    inpainting solution), rho_t = lam sigma_n^2 / sigma_t^2, sigma_n the noise std per real component."""
    prior, A, y, _, _ = mri_problem(noise=0.3)
    lam, zeta, sy = 1.5, 0.4, 0.3
    out = DiffPIR(steps=3, lam=lam, zeta=zeta, sigma_y=sy)(y, A, prior, generator=_g(5))
    sig = [float(s) for s in prior.sigmas(3, "auto")] + [0.0]
    g, x_ve = _start(y, A, 5, sig[0])
    M, yb = A.mask, y[None]
    for s, sn in zip(sig[:-1], sig[1:]):
        rho = lam * (sy * sy / 2) / (s * s)
        x0 = ifft2c((M * yb + rho * fft2c(prior.denoise(x_ve, s))) / (M + rho))
        if sn == 0:
            break
        a, an = _abar(s), _abar(sn)
        x_vp = math.sqrt(a) * x_ve
        eps = (x_vp - math.sqrt(a) * x0) / math.sqrt(1 - a)
        z = noise_like(x0, g)
        x_vp = math.sqrt(an) * x0 + math.sqrt(1 - an) * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * z)
        x_ve = x_vp / math.sqrt(an)
    assert sig[1] > sy  # the middle step weighs data and estimate both
    assert torch.allclose(out, x0, atol=1e-5), float((out - x0).abs().max())


@pytest.mark.parametrize("rule", ["none", "spectral", "scalar"])
def test_ddnm_step_is_the_range_null_space_correction_then_ddim(rule):
    """Three steps of DDNM (noiseless) and DDNM+ (both noise rules) against the paper's Eqs. 12-13 and 17-19 with
    the DDNM code's DDIM step in VP coordinates, x_{t-1} = sqrt(abar') x0^ + sqrt(1 - abar') (eta z +
    sqrt(1 - eta^2) eps) scaled in its noise by gamma_t; for a mask A^+ = A^H = F^H M, and the spectral rule's
    (A^H A + delta I)^{-1} A^H is (M / (M + delta)) in k-space."""
    prior, A, y, _, _ = mri_problem(noise=0.3)
    eta, sy = 0.85, 0.3
    kw = {"sigma_y": None} if rule == "none" else {"sigma_y": sy, "noise_rule": rule}
    out = DDNM(steps=3, eta=eta, **kw)(y, A, prior, generator=_g(6))
    sig = [float(s) for s in prior.sigmas(3, "auto")] + [0.0]
    g, x_ve = _start(y, A, 6, sig[0])
    M, yb = A.mask, y[None]
    std = sy / math.sqrt(2)
    for s, sn in zip(sig[:-1], sig[1:]):
        x0 = prior.denoise(x_ve, s)
        r = yb - A(x0)
        if rule == "none":
            x0h, gain = x0 + A.H(r), 1.0
        elif sn == 0:
            x0h, gain = x0, 0.0
        elif rule == "scalar":
            lam = min(1.0, sn / std)
            x0h, gain = x0 + lam * A.H(r), math.sqrt(sn * sn - (lam * std) ** 2) / sn
        else:
            delta = std * std / (sn * sn)
            c = std * sn * sn / (sn * sn + std * std)
            x0h, gain = x0 + ifft2c(M * r / (M + delta)), math.sqrt(sn * sn - c * c) / sn
        if sn == 0:
            x_ve = x0h
            break
        a, an = _abar(s), _abar(sn)
        x_vp = math.sqrt(a) * x_ve
        et = (x_vp - math.sqrt(a) * x0) / math.sqrt(1 - a)
        noise = math.sqrt(1 - an) * (eta * noise_like(x0, g) + math.sqrt(1 - eta * eta) * et)
        x_ve = (math.sqrt(an) * x0h + gain * noise) / math.sqrt(an)
    assert torch.allclose(out, x_ve, atol=1e-5), float((out - x_ve).abs().max())


def test_ddnm_reference_preset_is_the_codes_loop():
    """The "reference" preset against the DDNM code's noiseless loop (``svd_ddnm.ddnm_diffusion``, T_sampling 100,
    no time travel, eta 0.85) in VP coordinates on a 1000-step DDPM ladder: timesteps 990, 980, ..., 0, the start
    x_T ~ N(0, I), the last step returning x0^."""
    p, A, y, _, _ = mri_problem(noise=0.0)
    prior = _laddered(p)
    out = samplers.get("ddnm", preset="reference")(y, A, prior, generator=_g(7))
    g = _g(7)
    x = noise_like(A.H(y[None]), g)  # x_T in VP coordinates
    yb, eta = y[None], 0.85
    for i in range(990, -1, -10):
        at = float(ABAR[i])
        an = float(ABAR[i - 10]) if i > 0 else 1.0
        x0 = prior.denoise(x / math.sqrt(at), math.sqrt((1 - at) / at))
        et = (x - math.sqrt(at) * x0) / math.sqrt(1 - at)
        x0h = x0 - A.H(A(x0) - yb)
        if i == 0:
            x = x0h
        else:
            x = math.sqrt(an) * x0h + math.sqrt(1 - an) * (eta * noise_like(x0, g) + math.sqrt(1 - eta ** 2) * et)
    assert _rel(out, x) < 1e-4
    assert float((A(out) - y).abs().max()) < 1e-5


def test_diffpir_reference_preset_is_the_codes_loop():
    """The "reference" preset against the DiffPIR code's loop (``main_ddpir.py``: 100 levels at the "quad"
    timesteps, zeta 0.3, the start from the measurement's image, the iterate at t = 0 as the result) in VP
    coordinates on a 1000-step DDPM ladder, with the code's inpainting data step (m y + rho x0) / (m + rho). The
    code's lambda 7 is 7 / 4 in consistent units (module docstring)."""
    p, A, y, _, _ = inpainting_problem(noise=0.05)
    prior = _laddered(p)
    out = samplers.get("diffpir", preset="reference", sigma_y=0.05)(y, A, prior, generator=_g(8))
    seq = [int(s) for s in np.sqrt(np.linspace(0, T ** 2, 100))]
    seq[-1] -= 1
    ts = [T - 1 - k for k in seq]
    g = _g(8)
    m, yb, lam, zeta, sn = A.w, y[None], 7.0 / 4, 0.3, 0.05
    z = noise_like(yb, g)
    x = math.sqrt(float(ABAR[ts[0]])) * (m * yb) + math.sqrt(1 - float(ABAR[ts[0]])) * z
    for t, tn in zip(ts[:-1], ts[1:]):
        at, an = float(ABAR[t]), float(ABAR[tn])
        s = math.sqrt((1 - at) / at)
        x0 = prior.denoise(x / math.sqrt(at), s)
        rho = lam * sn * sn / (s * s)
        x0 = (m * yb + rho * x0) / (m + rho)
        eps = (x - math.sqrt(at) * x0) / math.sqrt(1 - at)
        x = math.sqrt(an) * x0 + math.sqrt(1 - an) * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * noise_like(x, g))
    ref = x / math.sqrt(float(ABAR[0]))
    assert _rel(out, ref) < 1e-4


def test_quad_schedule_is_the_codes_timesteps():
    p, _, _, _, _ = mri_problem()
    prior = _laddered(p)
    lv = quad_sigmas(prior, 100)
    ladder = ((1 - ABAR) / ABAR).sqrt()
    assert len(lv) == 100 and lv[0] == pytest.approx(float(ladder[999])) and lv[-1] == pytest.approx(float(ladder[0]))
    assert lv[1] == pytest.approx(float(ladder[999 - 100]))  # floor(sqrt(1/99) 1000) = 100
    assert all(a > b for a, b in zip(lv, lv[1:]))


# --- invariance, reproducibility, noise -------------------------------------------------------------------------
def _noisy_16():
    """Single-coil Cartesian MRI on 16 x 16 (enough k-space for ``A.noise_std``) with a white complex prior."""
    m = (torch.rand(1, 16, generator=_g(0)) < 0.6).float()
    m[0, 6:10] = 1
    A = SingleCoilMRI(m, shape=(16, 16))
    prior = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 16, 16, dtype=torch.float64),
                                            0.1 * torch.eye(512, dtype=torch.float64)), channels="complex")
    x = 0.3 * torch.randn(16, 16, dtype=torch.complex64, generator=_g(1))
    return prior, A, A(x) + 0.2 * m * torch.randn(16, 16, dtype=torch.complex64, generator=_g(2))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("sigma_y", [0.2, "default"])
def test_invariant_to_c_y_c_A_and_equivariant_to_c_y(name, sigma_y):
    """(c y, c A) gives the samples of (y, A); (c y, A) gives c times them for a prior whose scale comes from the
    data; a stated sigma_y is in the measurement's units (c sigma_y for c y) and 'default' estimates it."""
    prior, A, y = _noisy_16()
    prior.normalization.kind = "max"
    c = 1000.0
    cs = lambda s: s if isinstance(s, str) else c * s  # noqa: E731
    a = SAMPLERS[name](steps=8, sigma_y=sigma_y)(y, A, prior, n_samples=2, generator=_g(4))
    b = SAMPLERS[name](steps=8, sigma_y=cs(sigma_y))(c * y, c * A, prior, n_samples=2, generator=_g(4))
    e = SAMPLERS[name](steps=8, sigma_y=cs(sigma_y))(c * y, A, prior, n_samples=2, generator=_g(4))
    assert _rel(b, a) < 1e-4
    assert _rel(e, c * a) < 1e-4
    if sigma_y == "default":  # the estimate was used: not the noiseless run
        assert _rel(SAMPLERS[name](steps=8, sigma_y=None)(y, A, prior, n_samples=2, generator=_g(4)), a) > 1e-2


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_samples_different_seed_different(name):
    prior, A, y, _, _ = mri_problem()
    s = SAMPLERS[name](steps=5)
    a, b, c = (s(y, A, prior, n_samples=3, generator=_g(k)) for k in (0, 0, 1))
    assert a.shape == (3, 4, 6) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_noisy_data_follow_the_posterior_mean_better_when_the_noise_is_stated(name):
    """At a high noise level the noiseless rules (DDNM's exact correction, DiffPIR's projection) fit the noise;
    DDNM+ and DiffPIR's weighted data step with the stated noise land near the closed-form posterior mean."""
    prior, A, y, m, _ = mri_problem(noise=0.6)
    plain = SAMPLERS[name](sigma_y=None)(y, A, prior, n_samples=N, generator=_g(2))
    noisy = SAMPLERS[name](sigma_y=0.6)(y, A, prior, n_samples=N, generator=_g(2))
    assert _rel(_stats(plain)[0], m) > 0.3
    assert _rel(_stats(noisy)[0], m) < 0.15


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_noise_auto_uses_the_operators_estimate_and_falls_back_to_noiseless(name, monkeypatch):
    monkeypatch.setattr(diffpir, "_WARNED", set())  # said once per process: as if no run had warned yet
    prior, A, y = _noisy_16()
    est = float(A.noise_std(y))
    auto = SAMPLERS[name](steps=6, sigma_y="auto")(y, A, prior, generator=_g(3))
    stated = SAMPLERS[name](steps=6, sigma_y=est)(y, A, prior, generator=_g(3))
    assert torch.allclose(auto, stated, rtol=1e-4, atol=1e-5)
    pi, Ai, yi, _, _ = inpainting_problem()
    with pytest.warns(UserWarning, match="cannot estimate its noise"):
        a = SAMPLERS[name](steps=6, sigma_y="auto")(yi, Ai, pi, generator=_g(3))
    for s in ("default", None, 0.0):
        assert torch.equal(a, SAMPLERS[name](steps=6, sigma_y=s)(yi, Ai, pi, generator=_g(3)))


# --- time travel, registration, settings --------------------------------------------------------------------
def test_time_travel_schedule_and_run():
    assert travel_indices(5, 1, 1) == [4, 3, 2, 1, 0, -1]
    order = travel_indices(10, 2, 3)
    assert order[0] == 9 and order[-1] == -1 and all(abs(a - b) == 1 for a, b in zip(order, order[1:]))
    downs = sum(1 for a, b in zip(order, order[1:]) if b < a)
    assert downs == 10 + 2 * 2 * len(range(0, 10 - 2, 2))  # each jump point reruns l levels r - 1 times
    s = DDNM(steps=10, travel_length=2, travel_repeat=3, sigma_y=None)
    assert s.nfe() == downs and s.steps_total() == len(order) - 1
    prior, A, y, _, _ = mri_problem(noise=0.0)
    seen = []
    x = s(y, A, prior, n_samples=2, generator=_g(0), callback=lambda d: seen.append((d["sigma"], d["sigma_next"])))
    assert len(seen) == len(order) - 1 and sum(1 for a, b in seen if b > a) == len(order) - 1 - downs
    assert float((A(x) - y).abs().max()) < 1e-5


def test_registered_with_presets_and_for_problem():
    assert samplers.sampler_class("diffpir") is DiffPIR and samplers.sampler_class("ddnm") is DDNM
    prior, A, _, _, _ = mri_problem()
    for name in ("diffpir", "ddnm"):
        ref = samplers.get(name, preset="reference")
        assert ref.steps == 100 and samplers.for_problem(name, A, prior, steps=7).steps == 7
    assert samplers.get("diffpir", preset="reference").nfe() == 99  # the code's last evaluation is discarded
    assert samplers.get("ddnm", preset="reference").nfe() == 100


@pytest.mark.parametrize("make,msg", [
    (lambda: DiffPIR(zeta=1.5), "zeta must be in"), (lambda: DiffPIR(lam=0.0), "lam must be"),
    (lambda: DiffPIR(schedule="cosine"), "schedule must be"), (lambda: DiffPIR(steps=1, end="iterate"), "steps >= 2"),
    (lambda: DiffPIR(sigma_y="estimate"), "sigma_y must be"), (lambda: DDNM(sigma_y=-1.0), "sigma_y must be"),
    (lambda: DDNM(eta=2.0), "eta must be"), (lambda: DDNM(pinv="fbp"), "pinv must be"),
    (lambda: DDNM(pinv="operator", noise_rule="spectral"), "needs pinv='cg'"),
    (lambda: DDNM(steps=4, travel_length=5), "travel_length"), (lambda: DDNM(noise_rule="svd"), "noise_rule"),
])
def test_bad_settings_are_refused_by_name(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_quad_needs_at_most_1000_levels():
    prior, A, y, _, _ = mri_problem()
    with pytest.raises(ValueError, match="'quad' schedule"):
        DiffPIR(steps=1001, schedule="quad")(y, A, prior)


# --- the operators and priors they run on -------------------------------------------------------------------
def _real_prior(shape, seed=3):
    mu, cov = smooth_gaussian(shape, 1, seed=seed)
    return DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real"), mu[0]


OPERATORS = {
    "inpainting": lambda: Inpainting((torch.arange(36).reshape(6, 6) % 3 != 0).float()),
    "blur": lambda: Blur(Blur.gaussian(1.0), shape=(6, 6)),
    "downsample": lambda: Downsample((6, 6), 2),
    "parallel-beam": lambda: ParallelBeamCT(6, 5, n_detectors=9),
    "fan-beam": lambda: FanBeamCT(6, 5, 30.0, 15.0),
}


@pytest.mark.parametrize("name,kw", [("diffpir", {}), ("ddnm", {"pinv": "cg"}), ("ddnm", {"pinv": "operator"})])
@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_runs_on_ct_and_image_domain_operators_with_a_real_prior(name, kw, op):
    prior, mu = _real_prior((6, 6))
    A = OPERATORS[op]()
    y = A(mu.float())
    y = y + 0.01 * torch.randn(y.shape, generator=_g(1))
    out = SAMPLERS[name](steps=5, sigma_y=0.01, **kw)(y, A, prior, n_samples=2, generator=_g(0))
    assert out.shape == (2, 6, 6) and out.dtype == torch.float32 and torch.isfinite(out).all()
    complex_prior = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 6, 6), torch.eye(72)), channels="complex")
    with pytest.raises(ValueError, match=f"{name}: a complex prior"):
        SAMPLERS[name](steps=5)(y, A, complex_prior)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("channels", ["complex", "magnitude"])
def test_runs_on_non_cartesian_mri_with_complex_and_magnitude_priors(name, channels):
    n = 16
    maps = torch.ones(2, n, n, dtype=torch.complex64) / math.sqrt(2)
    A = NonCartesianMRI(maps, trajectories.radial(8, 32))
    x = torch.complex(torch.linspace(0, 1, n * n), torch.linspace(1, 0, n * n)).reshape(n, n)
    y = A(x) + 0.01 * torch.randn(A.oshape, dtype=torch.complex64, generator=_g(0))
    shape = (2, n, n) if channels == "complex" else (n, n)
    d = math.prod(shape)
    prior = DiffusionPrior(GaussianDenoiser(torch.zeros(shape, dtype=torch.float64),
                                            0.3 * torch.eye(d, dtype=torch.float64)), channels=channels)
    out = SAMPLERS[name](steps=5)(y, A, prior, n_samples=2, generator=_g(0))
    assert out.shape == (2, n, n) and out.dtype == torch.complex64 and torch.isfinite(out.abs()).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_real_prior_on_complex_mri_images_is_refused_by_name(name):
    prior, _ = _real_prior((4, 6))
    A = SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1]]), shape=(4, 6))
    y = A(torch.ones(4, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match=f"{name}: a real-valued prior"):
        SAMPLERS[name](steps=3)(y, A, prior)
