"""The operator contract (norm, pinv, support, combine through the algebra) and scale-free sampling: every
sampler gives the same samples for (c y, c A) as for (y, A), and c times them for (c y, A)."""
import math

import pytest
import torch

from operators import CoilwiseMRI, Multiply, MultiCoilMRI, SingleCoilMRI
from operators.ct import ParallelBeamCT, angles
from operators.image import Blur, Downsample, Inpainting
from operators.linop import Compose, Scaled
from operators.linop import power_iteration
from recon import classical, samplers
from recon.priors import EDM, DiffusionPrior, Normalization
from recon.priors.unet import UNet


def _random_prior(channels: str, kind: str = "percentile") -> DiffusionPrior:
    """A small UNet with random weights: a nonlinear denoiser, so a scale error cannot hide in linearity."""
    n = 2 if channels == "complex" else 1
    g = torch.Generator().manual_seed(0)
    net = UNet(n, n, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return DiffusionPrior(EDM(net, sigma_min=0.01, sigma_max=20.0), channels=channels,
                          normalization=Normalization(kind, 99.0, 2.0)).eval()


def _mri(seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(3, 16, 16, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = (torch.rand(1, 16, generator=g) < 0.5).float()
    mask[:, 6:10] = 1
    x = torch.randn(16, 16, dtype=torch.complex64, generator=g)
    A = MultiCoilMRI(maps, mask)
    return A, A(x) * 1e-3  # k-space in arbitrary small units


def _ct(seed=0):
    g = torch.Generator().manual_seed(seed)
    A = ParallelBeamCT(16, angles(views=8))
    x = torch.rand(16, 16, generator=g)
    return A, A(x)


# --- the contract on every operator ------------------------------------------------------------------------
OPERATORS = {
    "single-coil": lambda: SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1, 0, 1]]), shape=(6, 8)),
    "multi-coil": lambda: _mri()[0],
    "coil-wise": lambda: CoilwiseMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1]]), n_coils=2, shape=(4, 6)),
    "ct": lambda: _ct()[0],
    "inpainting": lambda: Inpainting((torch.arange(30).reshape(5, 6) % 3 != 0).float()),
    "downsample": lambda: Downsample((8, 8), 2),
    "blur": lambda: Blur(Blur.gaussian(1.0), shape=(9, 9)),
    "weights": lambda: Multiply(torch.linspace(0.5, 2.0, 12).reshape(3, 4)),
}


def _input(A, g):
    return torch.randn(A.ishape, generator=g, dtype=A.input_dtype)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_norm_is_the_largest_singular_value_and_exact_under_scaling(name):
    A = OPERATORS[name]()
    x = _input(A, torch.Generator().manual_seed(1))
    ref = math.sqrt(power_iteration(A.normal, x, n_iter=500, tol=1e-10))
    assert A.norm() == pytest.approx(ref, rel=2e-3)
    for c in (0.01, -3.0, 2j):
        assert (c * A).norm() == abs(c) * A.norm()
    assert (2.0 * (0.5 * A)).norm() == A.norm()
    assert A.normalized().norm() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_pinv_is_a_pseudo_inverse_and_invariant_under_scaling(name):
    A = OPERATORS[name]()
    g = torch.Generator().manual_seed(2)
    y = A(_input(A, g))
    x = A.pinv(y)
    assert x.shape == A.H(y).shape
    if name not in ("multi-coil", "ct"):  # SENSE: the zero-filled coil combination; CT: FBP (cheap, not exact)
        tol = 2e-2 if name == "blur" else 1e-4  # blur: 30 CG steps on an ill-conditioned system
        assert (A(x) - y).norm() <= tol * y.norm()  # A A^+ y = y for y in the range
    for c in (0.01, 100.0, -2.0):  # exact up to rounding, which CG on the ill-conditioned blur amplifies
        assert ((c * A).pinv(c * y) - x).norm() <= (3e-2 if name == "blur" else 1e-5) * x.norm()


def test_pinv_of_sense_is_the_coil_combined_zero_filled_image_and_ct_is_fbp():
    from operators.ct import fbp
    A, y = _mri()
    w = A.maps.abs().square().sum(0)
    assert torch.allclose(A.pinv(y), A.H(y) / w, atol=1e-6 * float(A.H(y).abs().max()))
    C, s = _ct()
    assert C.pinv_method == "fbp" and torch.equal(C.pinv(s), fbp(s, C))
    assert (0.5 * C).pinv_method == "fbp" and torch.allclose((0.5 * C).pinv(0.5 * s), fbp(s, C))


def test_support_and_combine_survive_scaling_and_composition():
    maps = torch.ones(2, 4, 6, dtype=torch.complex64) / 2 ** 0.5
    maps[:, :, 0] = 0
    A = MultiCoilMRI(maps, torch.ones(1, 6))
    assert torch.equal((3 * A).support, A.support)
    assert (Multiply(torch.ones(2, 4, 6)) @ (2 * A)).support is not None  # the input is A's: its support
    assert torch.equal((Multiply(torch.ones(2, 4, 6)) @ (2 * A)).support, A.support)
    assert (A @ Multiply(torch.ones(4, 6))).support is None  # the input is the weights': every pixel
    C = CoilwiseMRI(torch.ones(1, 6), n_coils=2)
    x = torch.randn(2, 4, 6, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    rss = x.abs().square().sum(0).sqrt()
    for op in (C, 2 * C, C * 0.5, -1 * (3 * C)):
        assert torch.allclose(op.combine(x).real, rss)
    assert torch.equal(SingleCoilMRI(torch.ones(1, 6)).combine(x), x)


def test_scaling_by_something_other_than_a_number_is_refused():
    A = SingleCoilMRI(torch.ones(1, 6))
    with pytest.raises(TypeError, match="number"):
        "a" * A
    with pytest.raises(TypeError, match="scalar"):
        torch.ones(3) * A
    with pytest.raises(ValueError, match="finite"):
        float("nan") * A
    assert isinstance(torch.tensor(2.0) * A, Scaled) and (torch.tensor(2.0) * A).norm() == 2.0


def test_ct_operators_take_the_angles_keyword():
    from operators.ct import FanBeamCT
    th = angles(views=4)
    assert torch.equal(ParallelBeamCT(16, angles=th).angles, th)
    assert torch.equal(FanBeamCT(16, angles=th, source_distance=40.0, detector_distance=20.0).angles, th)


# --- scale-free sampling -----------------------------------------------------------------------------------
FAST = {
    "dds": lambda: samplers.DDS(steps=6),
    "dps": lambda: samplers.DPS(steps=6, zeta=0.5),
    "score-ald": lambda: samplers.ScoreALD(sigma_start=2.0, sigma_end=0.05, n_levels=4, steps_each=2, step_lr=1e-3,
                                           denoise_last=True),
    "score-mri": lambda: samplers.ScoreMRI(steps=6),
    "score-sde": lambda: samplers.ScoreSDE(steps=6, inverse="pinv"),
}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("problem", ["mri", "ct"])
def test_every_sampler_is_invariant_to_the_operator_scale_and_equivariant_to_the_data_scale(name, problem):
    A, y = _mri() if problem == "mri" else _ct()
    prior = _random_prior("complex" if problem == "mri" else "real")
    run = lambda yy, AA: FAST[name]()(yy, AA, prior, n_samples=2, generator=torch.Generator().manual_seed(3))  # noqa
    ref = run(y, A)
    for c in (0.01, 100.0):
        assert _rel(run(c * y, c * A), ref) < 1e-3, c
    assert _rel(run(7.0 * y, A), 7.0 * ref) < 1e-3
    composed = Compose(A, Multiply(torch.linspace(0.5, 1.5, A.ishape[-1]), shape=A.ishape))  # weights, then A
    out = run(y, composed)
    assert out.shape == ref.shape and torch.isfinite(torch.view_as_real(out) if out.is_complex() else out).all()
    assert _rel(run(0.01 * y, 0.01 * composed), out) < 1e-3


def test_a_prior_in_physical_units_keeps_the_invariance():
    A, y = _ct()
    prior = _random_prior("real", kind="fixed")
    run = lambda yy, AA: samplers.DDS(steps=6)(yy, AA, prior, generator=torch.Generator().manual_seed(0))  # noqa
    assert _rel(run(0.01 * y, 0.01 * A), run(y, A)) < 1e-3


def test_bundled_prior_dds_is_invariant_on_the_simulated_brain():
    from recon import priors
    from recon.problems import multicoil_problem
    p = multicoil_problem(slice_index=0)
    prior = priors.load("bundled:mni-brain-128")
    run = lambda yy, AA: samplers.DDS(steps=8)(yy, AA, prior, generator=torch.Generator().manual_seed(0))  # noqa
    ref = run(p.y, p.A)
    assert _rel(run(0.01 * p.y, 0.01 * p.A), ref) < 1e-3 and _rel(run(100 * p.y, 100 * p.A), ref) < 1e-3


def test_coilwise_scaled_operator_is_still_combined():
    A = 2 * CoilwiseMRI(torch.tensor([[1.0, 0, 1, 1]]), n_coils=2, shape=(4, 4))
    y = A(torch.randn(2, 4, 4, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)))
    prior = DiffusionPrior(EDM(UNet(2, 2, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=())),
                           normalization=Normalization("max"))
    x = samplers.ScoreMRI(steps=4)(y, A, prior, n_samples=3)
    assert x.shape == (3, 4, 4) and torch.allclose(x.imag, torch.zeros(()))


def test_score_sde_fbp_accepts_a_scaled_ct_operator():
    A, y = _ct()
    prior = _random_prior("real")
    s = samplers.ScoreSDE(steps=4, inverse="fbp")
    a = s(y, A, prior, generator=torch.Generator().manual_seed(0))
    b = s(y / A.norm(), A.normalized(), prior, generator=torch.Generator().manual_seed(0))  # the README's form
    assert _rel(b, a) < 1e-3


@pytest.mark.parametrize("method", [classical.tv, classical.l1_wavelet, classical.cg_sense])
def test_classical_methods_are_scale_free(method):
    A, y = _mri()
    kw = {"lam": 0.01} if method is classical.cg_sense else {}
    ref = method(y, A, **kw)
    assert _rel(method(100 * y, 100 * A, **kw), ref) < 1e-3
    assert _rel(method(0.1 * y, A, **kw), 0.1 * ref) < 1e-3


def test_unconditional_samplers_are_called_like_posterior_ones():
    prior = _random_prior("complex")
    for cls in samplers.UNCONDITIONAL.values():
        x = cls(steps=4)(prior=prior, n_samples=2, shape=(8, 8), generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 8, 8) and x.is_complex()
        with pytest.raises(ValueError, match="unconditional"):
            cls(steps=4)(torch.zeros(8, 8), SingleCoilMRI(torch.ones(8, 8)), prior)
    with pytest.raises(ValueError, match="shape"):
        samplers.Heun(steps=4)(prior=prior)
    with pytest.raises(ValueError, match="measurement y and the operator A"):
        samplers.DDS(steps=4)(prior=prior)
    with pytest.raises(ValueError, match="no prior"):
        samplers.DDS(steps=4)(torch.zeros(8, 8), SingleCoilMRI(torch.ones(8, 8)))


def test_callback_receives_one_dict_per_step_in_the_measurement_scale():
    A, y = _mri()
    prior = _random_prior("complex")
    for name, make in FAST.items():
        seen = []
        out = make()(y, A, prior, generator=torch.Generator().manual_seed(0), callback=seen.append)
        assert seen and all({"i", "sigma", "sigma_next", "x", "denoised"} <= set(d) for d in seen), name
        assert [d["i"] for d in seen] == list(range(len(seen))), name
        assert seen[-1]["denoised"].shape == out.shape, name
        big = []
        make()(1000 * y, A, prior, generator=torch.Generator().manual_seed(0), callback=big.append)
        assert _rel(big[-1]["x"], 1000 * seen[-1]["x"]) < 1e-3, name


def test_score_ald_noise_level_is_in_the_measurement_units():
    A, y = _mri()
    prior = _random_prior("complex")
    run = lambda yy, AA, sy: samplers.ScoreALD(sigma_start=2.0, sigma_end=0.05, n_levels=4, steps_each=2,  # noqa
                                               step_lr=1e-3, sigma_y=sy)(yy, AA, prior,
                                                                         generator=torch.Generator().manual_seed(0))
    sy = float(y.abs().mean())
    ref = run(y, A, sy)
    assert _rel(run(50 * y, 50 * A, 50 * sy), ref) < 1e-3  # the same measurement model in other units
    assert _rel(run(y, A, 0.0), ref) > 1e-2  # the noise level matters
