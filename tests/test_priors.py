"""The prior layer: schedules, parametrisations (VP <-> VE exactness), channel conventions, the exact
Gaussian prior, saving/loading (own format and published layouts), and the bundled prior."""
import json

import pytest
import torch
from torch import nn

from recon import priors
from recon.priors import networks, schedules
from recon.priors.format import from_config, save
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.parametrizations import EDM, PhaseEquivariant, VEScore, VPModel
from recon.priors.prior import DiffusionPrior, Normalization
from recon.priors.unet import UNet


class TinyNet(nn.Module):
    """A small conditional conv net: out = conv(x) * (1 + a c) + b c (any parametrisation's raw network)."""

    def __init__(self, ch=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.a, self.b = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(-0.2))

    def forward(self, x, c):
        c = c.float().reshape(-1, 1, 1, 1) / 100.0
        return self.conv(x) * (1 + self.a * c) + self.b * c


# --- schedules ---------------------------------------------------------------------------------------------
def test_vp_ve_change_of_variables_is_exact():
    abar = schedules.alphas_cumprod(schedules.linear_betas(1000))
    sig = schedules.abar_to_sigma(abar)
    assert torch.allclose(schedules.sigma_to_abar(sig), abar, rtol=1e-12)
    t = torch.tensor([0.0, 10.0, 999.0, 417.0])
    assert torch.allclose(schedules.sigma_to_t(sig[t.long()], sig), t.double(), atol=1e-9)
    assert torch.allclose(schedules.t_to_sigma(schedules.sigma_to_t(torch.tensor([0.5, 3.0]), sig), sig),
                          torch.tensor([0.5, 3.0], dtype=torch.float64), rtol=1e-9)
    cos = schedules.cosine_betas(1000)
    assert cos.max() <= 0.999 and (cos > 0).all()
    g = schedules.geometric_sigmas(0.01, 378, 2000)
    assert g[0] == pytest.approx(378) and g[-1] == pytest.approx(0.01)
    k = schedules.karras_sigmas(0.002, 80, 10)
    assert k[0] == pytest.approx(80) and k[-1] == pytest.approx(0.002) and (k.diff() < 0).all()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vp_model_in_ve_coordinates_gives_its_own_tweedie_estimate(prediction):
    net = TinyNet()
    den = VPModel(net, "linear", 1000, prediction=prediction)
    abar = schedules.alphas_cumprod(schedules.linear_betas(1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 8, 8, generator=g)
    t = torch.tensor([5, 300, 900])
    ab = abar[t].float().reshape(-1, 1, 1, 1)
    x_vp = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=g)
    out = net(x_vp, t.float())
    # the DDPM's own estimate of x_0, in VP coordinates
    ref = {"eps": (x_vp - (1 - ab).sqrt() * out) / ab.sqrt(), "x0": out,
           "v": ab.sqrt() * x_vp - (1 - ab).sqrt() * out}[prediction]
    sigma = schedules.abar_to_sigma(abar[t]).float()
    got = den(x_vp / ab.sqrt(), sigma)  # x_ve = x_vp / sqrt(abar)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_learned_sigma_uses_first_half_of_channels():
    net = TinyNet(ch=2)
    wide = nn.Module()
    wide.forward = lambda x, c: torch.cat([net(x, c), 100 + net(x, c)], dim=1)
    den = VPModel(wide, learned_sigma=True)
    plain = VPModel(net)
    x, s = torch.randn(2, 2, 8, 8), torch.tensor([0.5, 2.0])
    assert torch.allclose(den(x, s), plain(x, s))


def test_ve_score_and_edm_formulas():
    net = TinyNet()
    x, s = torch.randn(2, 2, 8, 8), torch.tensor([0.1, 5.0])
    ve = VEScore(net, 0.01, 50, conditioning="sigma")
    assert torch.allclose(ve(x, s), x + s.reshape(-1, 1, 1, 1) ** 2 * net(x, s))
    idx = VEScore(net, 0.01, 50, conditioning="index", n_levels=10)
    ladder = schedules.geometric_sigmas(0.01, 50, 10)
    assert idx.cond(ladder[[3, 7]].float()).tolist() == [3, 7]
    edm = EDM(net, sigma_data=0.5)
    sd = 0.5
    sb = s.reshape(-1, 1, 1, 1)
    ref = sd ** 2 / (sb ** 2 + sd ** 2) * x + sb * sd / (sb ** 2 + sd ** 2).sqrt() * net(
        x / (sb ** 2 + sd ** 2).sqrt(), s.log() / 4)
    assert torch.allclose(edm(x, s), ref, atol=1e-6)


# --- DiffusionPrior ------------------------------------------------------------------------------------------
def _gaussian(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = n * n
    L = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return torch.randn(n, n, generator=g, dtype=torch.float64), L @ L.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_gaussian_prior_has_the_exact_score():
    mu, cov = _gaussian()
    prior = DiffusionPrior(GaussianDenoiser(mu, cov), channels="real")
    x = torch.randn(5, 4, 4, dtype=torch.float64)
    for sigma in (0.05, 1.0, 20.0):
        prec = torch.linalg.inv(cov + sigma ** 2 * torch.eye(16, dtype=torch.float64))
        score = -((x.reshape(5, -1) - mu.reshape(-1)) @ prec).reshape(5, 4, 4)
        assert torch.allclose(prior.score(x, sigma), score, atol=1e-8)
        assert torch.allclose(prior.eps(x, sigma), -sigma * score, atol=1e-8)


def test_channel_conventions():
    net = TinyNet(ch=1)
    den = VEScore(net, conditioning="sigma")
    mag = DiffusionPrior(den, channels="magnitude")
    real = DiffusionPrior(den, channels="real")
    z = torch.randn(3, 8, 8, dtype=torch.complex64)
    # magnitude-only prior on complex data: Re and Im denoised separately (Score-MRI, Alg. 7.1)
    assert torch.allclose(mag.denoise(z, 0.3), torch.complex(real.denoise(z.real, 0.3), real.denoise(z.imag, 0.3)),
                          atol=1e-6)
    cplx = DiffusionPrior(VEScore(TinyNet(ch=2), conditioning="sigma"), channels="complex")
    out = cplx.denoise(z.reshape(3, 1, 8, 8), torch.tensor([[0.1], [0.2], [0.3]]))
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.complex64
    # a lazily conjugated view (x.conj()) is an ordinary input
    assert torch.equal(cplx.denoise(z.conj(), 0.2), cplx.denoise(z.conj().resolve_conj(), 0.2))
    with pytest.raises(ValueError, match="real-valued prior cannot denoise a complex"):
        real.denoise(z, 0.3)
    with pytest.raises(ValueError, match="sigma must be a scalar or have the batch shape"):
        cplx.denoise(z, torch.tensor([0.1, 0.2]))


def test_normalization_scales():
    x = torch.arange(1, 101, dtype=torch.float32).reshape(1, 10, 10) * (1 + 1j)
    p = Normalization("percentile", 99.0).scale(x)
    assert p.shape == (1, 1, 1) and p.item() == pytest.approx(torch.quantile(x.abs().flatten(), 0.99).item())
    assert Normalization("max").scale(x).item() == pytest.approx(100 * 2 ** 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="normalization kind"):
        Normalization("zscore")


# --- saving and loading ------------------------------------------------------------------------------------
def _small_prior():
    torch.manual_seed(0)
    net = UNet(2, 2, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=(1,))
    return DiffusionPrior(EDM(net), "complex", (16, 16), Normalization("percentile", 99.0), name="tiny")


def test_own_format_round_trip(tmp_path):
    prior = _small_prior()
    path = save(prior, tmp_path / "p", half=False)
    loaded = priors.load(path)
    x = torch.randn(2, 16, 16, dtype=torch.complex64)
    assert torch.allclose(loaded.denoise(x, 0.7), prior.denoise(x, 0.7), atol=1e-6)
    assert loaded.config() == prior.config()
    assert priors.load(tmp_path / "p.pt").name == "tiny"  # the weights file finds its config


def test_phase_equivariant_wrapper_is_exact_and_round_trips(tmp_path):
    """D(e^{it} x) = e^{it} D(x) for any network; a denoiser that is already equivariant is left unchanged."""
    base = _small_prior()
    with torch.no_grad():  # the last layer starts at zero, which would make any network trivially equivariant
        for i, p in enumerate(base.denoiser.net.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    prior = DiffusionPrior(PhaseEquivariant(base.denoiser), "complex", (16, 16), base.normalization, "pe")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 16, 16, dtype=torch.complex64, generator=g) + 0.5
    for t in (0.4, 2.5, -3.0):
        rot = torch.polar(torch.ones(()), torch.tensor(t))
        assert torch.allclose(prior.denoise(rot * x, 0.5), rot * prior.denoise(x, 0.5), atol=1e-5)
    # the plain network is not equivariant, so the wrapper changes its output
    rot = torch.polar(torch.ones(()), torch.tensor(2.5))
    assert not torch.allclose(base.denoise(rot * x, 0.5), rot * base.denoise(x, 0.5), atol=1e-3)
    # an equivariant denoiser (the exact one of a circular complex Gaussian, D = x / (1 + sigma^2)) is unchanged
    class Shrink(EDM):
        def forward(self, x, sigma):
            return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
    exact = DiffusionPrior(Shrink(TinyNet()), "complex")
    wrapped = DiffusionPrior(PhaseEquivariant(Shrink(TinyNet())), "complex")
    assert torch.allclose(wrapped.denoise(x, 0.8), exact.denoise(x, 0.8), atol=1e-6)
    path = save(prior, tmp_path / "pe", half=False)
    loaded = priors.load(path)
    assert loaded.config() == prior.config()
    assert torch.allclose(loaded.denoise(x, 0.5), prior.denoise(x, 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="already phase-equivariant"):
        PhaseEquivariant(prior.denoiser)
    # with a smooth phase map: still exactly equivariant to a global phase, and an image with a smooth phase
    # is turned to (almost) real and positive before the network sees it
    smooth = DiffusionPrior(PhaseEquivariant(base.denoiser, smooth=3.0), "complex", (16, 16), name="pe-smooth")
    for t in (0.4, -3.0):
        rot = torch.polar(torch.ones(()), torch.tensor(t))
        assert torch.allclose(smooth.denoise(rot * x, 0.5), rot * smooth.denoise(x, 0.5), atol=1e-5)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    img = torch.polar(1 + 0.2 * torch.cos(3 * xx), 1.0 * xx + 0.5 * yy ** 2 + 2.0)[None]
    pe = smooth.denoiser
    net_in = torch.view_as_real(img).permute(0, 3, 1, 2)
    c, s = pe.phase(net_in)
    turned = pe._turn(net_in, c, -s)
    assert (turned[:, 0] > 0).all() and turned[:, 1].pow(2).sum() < 0.01 * turned[:, 0].pow(2).sum()
    before = torch.view_as_real(img)
    assert before[..., 1].pow(2).sum() > 0.3 * before[..., 0].pow(2).sum()  # it was not real to begin with
    assert from_config(json.loads(save(smooth, tmp_path / "s", half=False).read_text()),
                       smooth.denoiser.net.state_dict()).denoiser.smooth == 3.0


def test_mismatched_checkpoint_is_refused_by_name(tmp_path):
    prior = _small_prior()
    path = save(prior, tmp_path / "p", half=False)
    state = torch.load(tmp_path / "p.pt")
    state["renamed.weight"] = state.pop("inp.weight")
    torch.save(state, tmp_path / "p.pt")
    with pytest.raises(priors.CheckpointError, match=r"missing keys: inp\.weight.*unexpected keys: renamed\.weight"):
        priors.load(path)
    cfg = json.loads(path.read_text())
    cfg["network"]["base"] = 16
    path.write_text(json.dumps(cfg))
    with pytest.raises(priors.CheckpointError, match="mis-shaped keys"):
        priors.load(path)
    with pytest.raises(priors.CheckpointError, match="no such file"):
        priors.load(tmp_path / "nothing.json")
    with pytest.raises(priors.CheckpointError, match="no bundled prior named"):
        priors.load("bundled:does-not-exist")



def test_bare_bundled_name_loads_the_bundled_prior_unless_a_path_of_that_name_exists(tmp_path, monkeypatch):
    assert "ct-phantom-128" in priors.available()
    bare, named = priors.load("ct-phantom-128"), priors.load("bundled:ct-phantom-128")
    assert bare.config() == named.config()
    assert all(torch.equal(a, b) for a, b in zip(bare.state_dict().values(), named.state_dict().values()))
    save(_small_prior(), tmp_path / "ct-phantom-128" / "prior", half=False)  # a folder of that name wins
    monkeypatch.chdir(tmp_path)
    assert priors.load("ct-phantom-128").name == "tiny"
    with pytest.raises(priors.CheckpointError, match="no bundled prior") as err:
        priors.load("no-such-prior")
    assert all(name in str(err.value) for name in priors.available())


def test_load_overrides_apply_to_recorded_metadata_and_are_refused_where_meaningless(tmp_path):
    prior = priors.load("bundled:ct-phantom-128", channels="magnitude", normalization={"kind": "fixed", "value": 3.0})
    assert prior.channels == "magnitude" and prior.normalization == Normalization("fixed", value=3.0)
    path = save(_small_prior(), tmp_path / "p", half=False)
    own = priors.load(path, normalization={"kind": "max"})
    assert own.normalization == Normalization("max") and own.channels == "complex"
    for key, val in (("network", {"base": 4}), ("parametrization", {"type": "edm"}), ("kind", "csgm"), ("ema", True)):
        with pytest.raises(priors.CheckpointError, match=f"{key}= only for published checkpoints"):
            priors.load(path, **{key: val})
    with pytest.raises(TypeError, match="allowed: .*channels, normalization, kind, network, parametrization"):
        priors.load(path, chanels="real")


def test_every_registered_network_resolves_and_only_registered_networks_save():
    for name in networks.available():
        assert networks.network_class(name).registry_name == name
    net = networks.build({"name": "unet", "base": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": []})
    assert networks.build(networks.config_of(net)).config == net.config
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        networks.build({"name": "nope"})
    unregistered = TinyNet()
    unregistered.config = {}
    with pytest.raises(ValueError, match="not a registered network"):
        networks.config_of(unregistered)

def test_published_layouts_load_strictly_through_load(tmp_path):
    from recon.priors.adm import ADMUNet
    from recon.priors.ncsnpp import NCSNpp
    from recon.priors.ncsnv2 import NCSNv2

    tiny_ncsnpp = dict(image_size=16, num_channels=1, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
    net = NCSNpp(**tiny_ncsnpp)
    ckpt = {"model": {"module." + k: v for k, v in net.state_dict().items()},
            "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": [p.detach() + 1 for p in net.parameters() if p.requires_grad]},
            "optimizer": {}, "step": 10}
    torch.save(ckpt, tmp_path / "score.pth")
    prior = priors.load(tmp_path / "score.pth", network=tiny_ncsnpp)
    assert prior.channels == "magnitude" and prior.sigma_max == 378.0
    loaded = dict(prior.denoiser.net.named_parameters())
    trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert all(torch.equal(loaded[n], p + 1) for n, p in trained)  # the EMA shadow, not the raw weights
    x = torch.randn(1, 16, 16, dtype=torch.complex64)
    assert torch.isfinite(torch.view_as_real(prior.denoise(x, 1.0))).all()

    tiny_adm = dict(image_size=16, in_channels=2, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                    channel_mult=(1, 2), num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True,
                    resblock_updown=True)
    adm = ADMUNet(**tiny_adm)
    torch.save(adm.state_dict(), tmp_path / "dds.pt")
    prior = priors.load(tmp_path / "dds.pt", network=tiny_adm)
    assert prior.channels == "complex" and prior.denoiser.learned_sigma
    state = adm.state_dict()
    state.pop("out.2.bias")
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(priors.CheckpointError, match=r"missing keys: out\.2\.bias"):
        priors.load(tmp_path / "broken.pt", network=tiny_adm)

    tiny_v2 = dict(image_size=16, channels=2, ngf=8, num_classes=10, variant="plain")
    v2 = NCSNv2(**tiny_v2)
    sd = {"module." + k: v for k, v in v2.state_dict().items()}
    shadow = {k: v for k, v in v2.state_dict().items() if k != "sigmas"}  # EMAHelper unwraps DataParallel
    torch.save([sd, {}, 1, 2, shadow], tmp_path / "csgm.pth")
    prior = priors.load(tmp_path / "csgm.pth", network=tiny_v2,
                        parametrization={"type": "ve_score", "sigma_min": 0.0066, "sigma_max": 232.0,
                                         "conditioning": "index", "n_levels": 10})
    assert prior.channels == "complex"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(priors.CheckpointError, match="cannot be read as a torch checkpoint"):
        priors.load(tmp_path / "junk.pt")


def test_bundled_mri_prior_denoises_held_out_slices_and_is_phase_equivariant():
    from recon.data import brain
    from recon.samplers.base import noise_like

    prior = priors.load("bundled:mni-brain-128")
    assert prior.channels == "complex" and prior.image_size == (128, 128)
    assert prior.denoiser.config()["type"] == "phase_equivariant"
    x = brain.load_heldout(128)[:2]
    x = x / torch.quantile(x.abs().reshape(2, -1), 0.99, dim=1)[:, None, None]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sigma, gain in ((0.05, 10.0), (0.5, 50.0)):  # MSE reduction factors well below what it reaches
            noisy = x + sigma * noise_like(x, g)
            d = prior.denoise(noisy, sigma)
            assert (noisy - x).abs().square().mean() > gain * (d - x).abs().square().mean(), sigma
        rot = torch.polar(torch.ones(()), torch.tensor(1.3))
        assert torch.allclose(prior.denoise(rot * noisy, 0.5), rot * d, atol=2e-4)


def test_attention_spans_tile_any_length_without_exceeding_the_window():
    from recon.priors.unet import _spans
    for n in (1, 7, 16, 17, 40, 64, 80):
        for win in (1, 5, 16):
            sp = _spans(n, win)
            assert sp[0][0] == 0 and sp[-1][1] == n
            assert all(a1 == b0 for (_, a1), (b0, _) in zip(sp[:-1], sp[1:]))
            lengths = [b - a for a, b in sp]
            assert max(lengths) <= win and max(lengths) - min(lengths) <= 1
            assert len(sp) == -(-n // win)


def test_windowed_attention_is_local_and_exact_on_grids_within_the_window():
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=(1,))
    with torch.no_grad():  # random weights everywhere (the output layers start at zero)
        for w in net.parameters():
            w.normal_(0, 0.2)
    x, c = torch.randn(1, 1, 32, 32), torch.zeros(1)
    ref = net(x, c)
    net.set_attention_window(32)  # the whole grid fits in one tile: nothing changes
    assert torch.equal(net(x, c), ref)
    net.set_attention_window(16)
    assert not torch.allclose(net(x, c), ref, atol=1e-4)
    net.set_attention_window(None)
    assert torch.equal(net(x, c), ref)

    # one attention layer with its normalisation removed: positions in one tile do not see the other tiles
    from recon.priors.unet import Attention
    a = Attention(4)
    nn.init.normal_(a.out.weight, std=0.5)
    a.norm = nn.Identity()
    a.window = 4
    f = torch.randn(1, 4, 8, 8)
    g = f.clone()
    g[..., 4:, 4:] += torch.randn(1, 4, 4, 4)  # change the lower right tile only
    with torch.no_grad():
        d = (a(g) - a(f)).abs()
    assert d[..., :4, :].max() == 0 and d[..., :, :4].max() == 0
    assert d[..., 4:, 4:].max() > 1e-3
    a.window = None
    with torch.no_grad():
        assert (a(g) - a(f))[..., :4, :4].abs().max() > 1e-4  # global attention does see it


def test_attention_window_round_trips_and_bad_values_are_refused(tmp_path):
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1)
    p = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), name="w", attention_window=16)
    save(p, tmp_path / "w")
    q = priors.load(str(tmp_path / "w.json"))
    assert q.attention_window == 16
    assert {m.window for m in q.denoiser.net.modules() if m.__class__.__name__ == "Attention"} == {8}
    for bad in (0, 1, 2.5, True, "16"):
        with pytest.raises(ValueError, match="attention window"):
            DiffusionPrior(EDM(UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1)),
                           channels="real", attention_window=bad)
    with pytest.raises(ValueError, match="no windowed attention"):
        DiffusionPrior(GaussianDenoiser(torch.zeros(2, 2), torch.eye(4)), channels="real", attention_window=16)


def _tiny_prior(channels="real", coarse=None):
    ch = 2 if channels == "complex" else 1
    return DiffusionPrior(EDM(TinyNet(ch=ch)), channels=channels, image_size=(16, 16), name="c", coarse=coarse)


@pytest.mark.parametrize("channels", ["real", "complex"])
def test_coarse_denoising_pools_above_its_thresholds_and_is_exact_below(channels):
    F = torch.nn.functional
    plain, coarse = _tiny_prior(channels), _tiny_prior(channels, coarse=[(2.0, 4), (0.5, 2)])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 12, generator=g, dtype=torch.float32)
    if channels == "complex":
        x = torch.complex(x, torch.randn(2, 16, 12, generator=g))
    with torch.no_grad():
        assert torch.equal(coarse.denoise(x, 0.3), plain.denoise(x, 0.3))  # below every threshold: the same call

        def pooled(s, f):  # the estimate on the image pooled f x f at noise s / f, upsampled bilinearly
            parts = torch.view_as_real(x).permute(0, 3, 1, 2) if channels == "complex" else x[:, None]
            small = F.avg_pool2d(parts, f)
            small = torch.complex(small[:, 0], small[:, 1]) if channels == "complex" else small[:, 0]
            d = plain.denoise(small, s / f)
            d = torch.view_as_real(d).permute(0, 3, 1, 2) if channels == "complex" else d[:, None]
            up = F.interpolate(d, scale_factor=f, mode="bilinear", align_corners=False)
            return torch.complex(up[:, 0], up[:, 1]) if channels == "complex" else up[:, 0]

        for s, f in ((1.0, 2), (5.0, 4)):
            out = coarse.denoise(x, s)
            assert out.shape == x.shape and out.dtype == x.dtype
            assert torch.allclose(out, pooled(s, f), atol=1e-6)
            assert not torch.allclose(out, plain.denoise(x, s), atol=1e-3)
        # a batch of mixed noise levels is denoised element by element at each one's own factor
        sig = torch.tensor([5.0, 0.3])
        out = coarse.denoise(x, sig)
        assert torch.allclose(out[0], coarse.denoise(x[:1], 5.0)[0], atol=1e-6)
        assert torch.equal(out[1], plain.denoise(x[1:], 0.3)[0])
        # a side that is not a multiple of the factor keeps its shape
        odd = coarse.denoise(x[..., :15, :11], 5.0)
        assert odd.shape == (2, 15, 11) and bool(torch.isfinite(torch.view_as_real(odd) if odd.is_complex()
                                                                   else odd).all())


def test_coarse_levels_round_trip_and_bad_values_are_refused(tmp_path):
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1)
    p = DiffusionPrior(EDM(net), channels="real", image_size=(16, 16), name="c", coarse=[(0.5, 2), (2.0, 4)])
    assert p.coarse == [(2.0, 4), (0.5, 2)]  # largest factor first
    save(p, tmp_path / "c")
    q = priors.load(str(tmp_path / "c.json"))
    assert q.coarse == p.coarse
    q = q.configured(coarse=None)
    assert q.coarse is None and "coarse" not in q.config()
    for bad, match in ((([0.5, 1],), "int >= 2"), (([0.5, 2.0],), "int >= 2"), (([0.0, 2],), "sigma > 0"),
                       (([float("nan"), 2],), "sigma > 0"), (([0.5, 2], [1.0, 2]), "once"), (([0.5],), "pairs"),
                       ((["a", 2],), "sigma > 0")):
        with pytest.raises(ValueError, match=match):
            _tiny_prior(coarse=list(bad))
