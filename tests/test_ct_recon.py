"""CT reconstruction pipeline: phantoms, slice coupling along z, baselines, files and the command."""
import h5py
import pytest
import torch

from operators.ct import ParallelBeamCT
from recon.data import phantoms
from recon.data.ct_files import read_input
from recon.pipelines.ct import CTSettings, operator, reconstruct, reconstruct_file, \
    score, simulate
from recon.samplers.dc import TVConsistency, TVzConsistency, dz, dz_adjoint


def test_phantoms_have_ct_intensities_and_are_reproducible():
    a = phantoms.ct_phantom(4, 64, torch.Generator().manual_seed(0))
    b = phantoms.ct_phantom(4, 64, torch.Generator().manual_seed(0))
    c = phantoms.ct_phantom(4, 64, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 64, 64)
    assert float(a[:, 0, 0].max()) == -1000.0              # air in the corners
    assert float(a.max()) > 500                              # bone
    centre = a[:, 24:40, 24:40]
    assert ((centre > -1000) & (centre < 300)).float().mean() > 0.5  # soft tissue / lung inside the body
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        phantoms.ct_phantom(1, 64)
    with pytest.raises(ValueError, match="region"):
        phantoms.ct_phantom(1, 64, torch.Generator(), region="head")


def test_phantom_stack_is_coherent_along_z():
    s = phantoms.ct_phantom_stack(5, 64, torch.Generator().manual_seed(3), spacing=0.01)
    indep = phantoms.ct_phantom(2, 64, torch.Generator().manual_seed(3))
    step = (s[1:] - s[:-1]).abs().mean()
    assert step < 0.2 * (indep[1] - indep[0]).abs().mean()
    assert step > 0  # but not constant: lesions and outline change


def test_hu_mu_round_trip_and_shepp_logan():
    hu = torch.tensor([-1000.0, 0.0, 1000.0])
    assert torch.allclose(phantoms.hu_to_mu(hu), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(phantoms.mu_to_hu(phantoms.hu_to_mu(hu)), hu)
    sl = phantoms.shepp_logan(64)
    assert sl.shape == (64, 64) and abs(float(sl.max()) - 1.0) < 1e-6 and float(sl.min()) >= 0


def test_dz_adjoint():
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(2, 5, 4, 3, generator=g), torch.randn(2, 4, 4, 3, generator=g)
    assert abs(float((dz(x) * d).sum() - (x * dz_adjoint(d)).sum())) < 1e-5


def test_tv_z_coupling_makes_slices_agree_and_keeps_the_data():
    """Three identical slices seen by a 6-view projector (underdetermined), different starting points: plain CG
    keeps them apart along the null space; the TV-z coupled update pulls them together and still fits the data."""
    from recon.samplers.dc import cg_consistency
    img = phantoms.hu_to_mu(phantoms.ct_phantom(1, 32, torch.Generator().manual_seed(0)))[0]
    A = ParallelBeamCT(32, 6)
    An = A.normalized()
    y = An(img.expand(3, 32, 32))
    x0 = img + 0.3 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = x0
    for _ in range(20):
        plain = cg_consistency(plain, y, An, 5)
    tvz = TVzConsistency(lam=0.05, rho=1.0, cg_iter=5)
    coupled = x0
    for _ in range(20):
        coupled = tvz(coupled, y, An)
    res = lambda v: float((An(v) - y).norm() / y.norm())  # noqa: E731
    assert res(coupled) < 0.05 and res(plain) < 0.05
    assert dz(coupled).norm() < 0.3 * dz(plain).norm()
    with pytest.raises(ValueError, match="stack of at least 2 slices"):
        TVzConsistency(0.1)(x0[:1], y[:1], An)


def test_in_plane_tv_consistency_iterated_is_the_tv_reconstruction():
    """Fed its own output, one ADMM iteration per call is ADMM for TV: it reaches recon.classical.tv at the same
    weight (the same meaning of lam), and the weight matters (a tiny one is the least-squares fit)."""
    from recon import classical
    img = phantoms.hu_to_mu(phantoms.ct_phantom(1, 32, torch.Generator().manual_seed(0)))[0]
    An = ParallelBeamCT(32, 12).normalized()
    y = An(img)
    ref = classical.tv(y, An, lam=1e-2, max_iter=60, rho=10.0, cg_iter=5)
    st = TVConsistency(1e-2, rho=10.0, cg_iter=5)
    x = An.H(y)
    for _ in range(60):
        x = st(x, y, An)
    assert float((x - ref).norm() / ref.norm()) < 1e-3
    x_small = An.H(y)
    st_small = TVConsistency(1e-7)
    for _ in range(60):
        x_small = st_small(x_small, y, An)
    tv = lambda v: float((v[1:] - v[:-1]).abs().sum() + (v[:, 1:] - v[:, :-1]).abs().sum())  # noqa: E731
    assert tv(x) < 0.8 * tv(x_small)
    with pytest.raises(ValueError, match="lam > 0"):
        TVConsistency(0.0)


def test_angular_coverage_and_limited_angle_dds_steps():
    """Sparse and dense full sets cover 180 degrees (parallel beam, whatever the start or order of the views);
    0-120 degrees covers 120 and gets the limited-angle step count; --steps still overrides it."""
    import math

    from operators.ct import FanBeamCT
    from recon.pipelines import ct as rc
    from recon.samplers import DDS, dds
    full = operator(CTSettings(views=30), (32, 32))
    assert full.angular_coverage == pytest.approx(180.0)
    assert operator(CTSettings(views=7), (32, 32)).angular_coverage == pytest.approx(180.0)
    shifted = ParallelBeamCT((32, 32), torch.flip(full.angles, (0,)) + math.pi * 0.9)
    assert shifted.angular_coverage == pytest.approx(180.0)
    lim = operator(CTSettings(views=None, limited=(0.0, 120.0)), (32, 32))
    assert lim.angular_coverage == pytest.approx(120.0)
    wrap = operator(CTSettings(views=None, limited=(150.0, 260.0)), (32, 32))   # 150-180 and 0-80 mod 180
    assert wrap.angular_coverage == pytest.approx(110.0)
    fan_short = FanBeamCT((32, 32), torch.deg2rad(torch.arange(0.0, 200.0)), 100.0, 100.0)
    assert fan_short.angular_coverage == pytest.approx(200.0) and DDS.steps_for(fan_short) == dds.STEPS
    assert DDS.steps_for(full) == dds.STEPS == rc.sampler_for(CTSettings(), None, full).steps
    assert DDS.steps_for(lim) == dds.STEPS_LIMITED == rc.sampler_for(CTSettings(), None, lim).steps
    assert rc.sampler_for(CTSettings(steps=7), None, lim).steps == 7
    assert rc.sampler_for(CTSettings(noise="gaussian", noise_level=0.1), 0.1, lim).steps == dds.STEPS_LIMITED


def test_dds_steps_grow_with_the_sparsity_of_the_views_for_the_grid():
    """30 views on 128 x 128 is the reference (50 steps); the same views on a larger grid are sparser for it and
    get proportionally more steps, up to the maximum; more views or a limited angle do not."""
    from recon.pipelines import ct as rc
    from recon.samplers import DDS, dds

    class Op:                  # DDS.steps_for asks the operator for its grid, its views and their coverage
        def __init__(self, n, views, limited=None):
            th = CTSettings(views=views if limited is None else None, limited=limited).angles()
            self.ishape, self.n_views = (n, n), len(th)
            self.angular_coverage = ParallelBeamCT(8, th).angular_coverage
    steps = DDS.steps_for
    assert steps(Op(128, 30)) == dds.STEPS == 50
    assert steps(Op(256, 30)) == 100
    assert steps(Op(512, 30)) == dds.STEPS_SPARSE_MAX == 200
    assert steps(Op(1024, 30)) == dds.STEPS_SPARSE_MAX             # capped
    assert steps(Op(512, 60)) == 100 and steps(Op(512, 180)) == 50
    assert steps(Op(64, 16)) == 50 and steps(Op(64, 10)) == 75     # in proportion between
    for n in (64, 128, 256, 512, 2048):                            # a limited angle: one count
        assert steps(Op(n, None, (0.0, 120.0))) == dds.STEPS_LIMITED == 200
    assert rc.sampler_for(CTSettings(), None, operator(CTSettings(views=30), (256, 256))).steps == 100

def test_ct_pipeline_states_its_noise_to_dds():
    """The CT pipeline knows the noise it simulates: the Gaussian std, or for Poisson counts the rms of the
    post-log std, which matches the empirical spread of simulated low-dose sinograms; DDS then weighs the data
    by it (noiseless data keep the noiseless CG, and a TV-z coupling keeps its own data step)."""
    import torch
    from recon.pipelines import ct as rc
    st = rc.CTSettings(views=30, noise="poisson", noise_level=1e4)
    op = rc.operator(st, (64, 64))
    img = torch.zeros(1, 64, 64)
    img[0, 16:48, 20:44] = 1.0
    clean = op(img)
    ys = torch.stack([rc.simulate(img, op, st, torch.Generator().manual_seed(k)) for k in range(40)])
    empirical = float((ys - clean).square().mean().sqrt())
    stated = rc.noise_std(ys[0], st)
    assert abs(stated / empirical - 1) < 0.1
    assert rc.noise_std(clean, rc.CTSettings(views=30, noise="gaussian", noise_level=0.3)) == 0.3
    assert rc.noise_std(clean, rc.CTSettings(views=30)) is None
    assert rc.sampler_for(st, stated).sigma_y == stated
    assert rc.sampler_for(rc.CTSettings(views=30), None).sigma_y is None
    coupled = rc.sampler_for(rc.CTSettings(views=30, tv_z=1e-4, noise="poisson", noise_level=1e4), stated)
    assert coupled.sigma_y is None and coupled.tv_z == 1e-4


def test_mri_settings_refuse_a_tv_weight_for_other_samplers_or_out_of_range():
    from recon.pipelines.mri import MRISettings, sampler_for
    assert sampler_for(MRISettings(dds_tv=0.0)).tv_xy == 0.0
    assert sampler_for(MRISettings()).tv_xy > 0
    with pytest.raises(ValueError, match="--dds-tv sets DDS"):
        MRISettings(method="cg-sense", dds_tv=1e-4).check()
    with pytest.raises(ValueError, match="dds_tv"):
        MRISettings(dds_tv=-1.0).check()


def test_uncertainty_samples_use_dds_without_the_tv_unless_asked():
    from recon.pipelines.mri import MRISettings, for_uncertainty, sampler_for
    assert sampler_for(for_uncertainty(MRISettings())).tv_xy == 0.0
    assert sampler_for(for_uncertainty(MRISettings(dds_tv=1e-4))).tv_xy == 1e-4
    assert for_uncertainty(MRISettings(method="score-mri")).dds_tv is None
    st = MRISettings()
    for_uncertainty(st)
    assert st.dds_tv is None                                   # the caller's settings are not changed


def test_a_grid_much_larger_than_the_priors_is_warned_about():
    from recon.pipelines import ct as rc

    class P:
        image_size, name = (16, 16), "tiny"
    with pytest.warns(UserWarning, match="trained on 16 x 16"):
        rc._warn_scale(P(), (64, 64))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc._warn_scale(P(), (24, 24))
        P.image_size = None
        rc._warn_scale(P(), (512, 512))
    P.image_size, P.max_grid = (16, 16), 100           # a prior trained on zoomed crops records the grids it covers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc._warn_scale(P(), (100, 100))
    with pytest.warns(UserWarning, match="covers grids up to 100 pixels"):
        rc._warn_scale(P(), (101, 64))


def _for_op(prior, op):
    """The prior's answer for the grid and views of the CT operator ``op`` (what ``reconstruct`` asks)."""
    from recon.samplers import dds
    return prior.for_grid(tuple(op.ishape), limited_angle=op.angular_coverage < dds.LIMITED_BELOW, coarse=True)


def test_attention_is_windowed_on_large_grids_with_full_coverage_only_and_the_prior_is_left_as_given(monkeypatch):
    from operators.ct import angles
    from recon.priors.gaussian import GaussianDenoiser
    from recon.priors.parametrizations import EDM
    from recon.priors.prior import DiffusionPrior
    from recon.priors.unet import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=(1,))
    prior = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), name="tiny", max_grid=64)
    sparse, wedge = ParallelBeamCT(32, angles(views=8)), ParallelBeamCT(32, angles(limited=(0, 120)))
    assert _for_op(prior, sparse).attention_window == 16                 # tiles of the training grid
    assert _for_op(prior, wedge).attention_window is None                # a missing wedge: the whole image
    assert _for_op(prior, ParallelBeamCT(16, angles(views=8))).attention_window is None  # the training grid itself
    gauss = DiffusionPrior(GaussianDenoiser(torch.zeros(4, 4), torch.eye(16)), channels="real", image_size=(4, 4))
    assert _for_op(gauss, ParallelBeamCT(16, angles(views=8))).attention_window is None  # no windows to offer
    recorded = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), attention_window=24)
    assert _for_op(recorded, wedge).attention_window == 24               # what a prior's config records wins
    net.set_attention_window(None)                                      # the network's own default, as built

    seen = []
    denoise = DiffusionPrior.denoise
    monkeypatch.setattr(DiffusionPrior, "denoise",
                        lambda self, *a, **k: (seen.append(self.attention_window), denoise(self, *a, **k))[1])
    x = torch.zeros(32, 32)
    x[8:24, 10:22] = 1.0
    st = CTSettings(views=8, steps=2, prior="bundled:ct-anatomy-v2-128")
    out = reconstruct(sparse(x), sparse, st, prior=prior)
    assert out.shape == (1, 32, 32) and torch.isfinite(out).all()
    assert set(seen) == {16} and prior.attention_window is None           # windowed for the run; the prior as given
    seen.clear()
    reconstruct(wedge(x), wedge, CTSettings(limited=(0, 120), views=None, steps=2, prior="bundled:ct-anatomy-v2-128"),
                prior=prior)
    assert set(seen) == {None}                                           # global attention


def test_large_grids_are_denoised_coarse_at_high_noise_and_the_prior_is_left_as_given(monkeypatch):
    from operators.ct import angles
    from recon.priors.grid import COARSE_ABOVE, COARSE_ABOVE_LIMITED
    from recon.priors.parametrizations import EDM
    from recon.priors.prior import DiffusionPrior
    from recon.priors.unet import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1)
    prior = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), name="tiny", max_grid=64)
    op = lambda n: ParallelBeamCT(n, angles(views=8))  # noqa: E731
    assert _for_op(prior, op(16)).coarse is None                       # the training grid: no pooling
    assert _for_op(prior, op(24)).coarse is None                       # pooled 2 x 2 it would be below it
    assert _for_op(prior, op(32)).coarse == [(COARSE_ABOVE[2], 2)]
    assert _for_op(prior, op(64)).coarse == [(COARSE_ABOVE[4], 4), (COARSE_ABOVE[2], 2)]
    wedge = ParallelBeamCT(64, angles(limited=(0, 120)))                 # a missing wedge pools further down
    assert _for_op(prior, wedge).coarse == [(COARSE_ABOVE_LIMITED[4], 4), (COARSE_ABOVE_LIMITED[2], 2)]
    recorded = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), coarse=[(1.0, 2)])
    assert _for_op(recorded, op(64)).coarse == [(1.0, 2)]              # what a prior's config records wins

    sigmas = []
    forward = DiffusionPrior._pooled
    monkeypatch.setattr(DiffusionPrior, "_pooled", lambda self, u, s, f, *rest: (
        sigmas.append((float(s.max()), f)), forward(self, u, s, f, *rest))[1])
    x = torch.zeros(64, 64)
    x[16:48, 20:44] = 1.0
    out = reconstruct(op(64)(x), op(64), CTSettings(views=8, steps=6, prior="bundled:ct-anatomy-v2-128"), prior=prior)
    assert out.shape == (1, 64, 64) and torch.isfinite(out).all()
    assert prior.coarse is None                                        # pooled for the run; the prior as given
    assert {f for _, f in sigmas} == {2, 4}                           # the high-noise steps ran pooled ...
    assert all(s > COARSE_ABOVE[f] for s, f in sigmas)                # ... each above its factor's threshold


def test_the_default_ct_prior_is_chosen_by_grid_and_recorded(tmp_path):
    from dataclasses import replace

    from recon import priors
    from recon.pipelines import ct as rc
    from recon.priors import bundled

    st = rc.CTSettings()
    assert st.prior == rc.AUTO_PRIOR
    st.check()                                                       # "auto" is a valid prior setting
    assert rc.resolve_prior(st, (128, 128)).prior == bundled.DEFAULT_CT
    assert rc.resolve_prior(st, (255, 100)).prior == bundled.DEFAULT_CT
    assert rc.resolve_prior(st, (100, 256)).prior == bundled.DEFAULT_CT_NATIVE
    assert rc.resolve_prior(st, (512, 512)).prior == bundled.DEFAULT_CT_NATIVE != bundled.DEFAULT_CT
    assert st.prior == rc.AUTO_PRIOR                                 # the caller's settings are not changed
    named = replace(st, prior=bundled.DEFAULT_CT)
    assert rc.resolve_prior(named, (512, 512)) is named               # a named prior is used as named
    with pytest.raises(ValueError, match="no bundled prior of that name"):
        replace(st, prior="autox").check()
    native = priors.load(bundled.DEFAULT_CT_NATIVE)
    assert native.max_grid == 853 and native.image_size == (128, 128)
    assert priors.load(bundled.DEFAULT_CT).max_grid is None
    from recon.priors import format as fmt
    copy = fmt.read(fmt.save(native, tmp_path / "copy"))                  # saved and read back
    assert copy.max_grid == 853
    import json
    cfg = json.loads(bundled.config_path("ct-anatomy-v3-128").read_text())
    with pytest.raises(ValueError, match="max_grid must be an int >= 2"):
        fmt.from_config({**cfg, "max_grid": 1})


def test_reconstruct_ct_file_records_the_prior_it_chose(tmp_path):
    import json

    import h5py

    from recon.pipelines import ct as rc
    from recon.data import phantoms
    from recon.priors import bundled

    img = phantoms.shepp_logan(256)[None]
    src = tmp_path / "ct.h5"
    with h5py.File(src, "w") as f:
        f["image"] = img.float().numpy()
    st = rc.CTSettings(views=12, steps=2)
    rc.reconstruct_file(src, tmp_path / "out.h5", st, progress=False)
    with h5py.File(tmp_path / "out.h5") as f:
        assert json.loads(f.attrs["settings"])["prior"] == bundled.DEFAULT_CT_NATIVE
    assert st.prior == rc.AUTO_PRIOR
