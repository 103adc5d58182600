"""Configured views of a prior: the grid policy asked for a grid, without changing the prior or its network."""
import threading

import pytest
import torch
from torch import nn

from recon import priors
from recon.priors import grid
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.parametrizations import EDM
from recon.priors.prior import KEEP, DiffusionPrior
from recon.priors.unet import Attention, UNet


def _unet(seed=0, levels=(1,)):
    torch.manual_seed(seed)
    net = UNet(in_channels=1, out_channels=1, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=levels)
    with torch.no_grad():  # random weights everywhere (the output layers start at zero)
        for w in net.parameters():
            w.normal_(0, 0.2)
    return net.eval()


def _prior(net=None, **kw):
    return DiffusionPrior(EDM(net if net is not None else _unet()), channels="real", image_size=(16, 16),
                          name="tiny", **kw)


def _windows(net):
    return {m.window for m in net.modules() if isinstance(m, Attention)}


def _x(shape=(2, 32, 32), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- the old rules, as the commands applied them before the views: the expected behaviour -----------------------
OLD_COARSE_ABOVE = {4: 2.0, 2: 0.5}
OLD_COARSE_ABOVE_LIMITED = {4: 1.0, 2: 0.2}


def old_attention_window(shape, limited, prior):
    """reconstruct_ct.attention_window with the coverage test replaced by ``limited``."""
    if getattr(prior, "attention_window", None) is not None:
        return prior.attention_window
    size = getattr(prior, "image_size", None)
    net = getattr(getattr(prior, "denoiser", None), "net", None)
    if not size or not hasattr(net, "set_attention_window") or shape is None:
        return None
    side = max(size[-2:])
    if max(shape[-2:]) <= side or limited:
        return None
    return int(side)


def old_coarse_levels(shape, limited, prior):
    """reconstruct_ct.coarse_levels with the coverage test replaced by ``limited``."""
    if getattr(prior, "coarse", None):
        return prior.coarse
    size = getattr(prior, "image_size", None)
    if not size or shape is None:
        return None
    side, g = max(size[-2:]), min(shape[-2:])
    table = OLD_COARSE_ABOVE_LIMITED if limited else OLD_COARSE_ABOVE
    levels = [(above, f) for f, above in table.items() if g >= f * side]
    return levels or None


def old_tiled_window(prior, shape):
    """The window that tasks.tiled_attention set while its block ran (the prior's own when it set none)."""
    side = max(prior.image_size[-2:]) if getattr(prior, "image_size", None) else None
    net = getattr(getattr(prior, "denoiser", None), "net", None)
    if (side is None or max(int(v) for v in tuple(shape)[-2:]) <= side
            or getattr(prior, "attention_window", None) is not None or not hasattr(net, "set_attention_window")):
        return prior.attention_window
    return int(side)


def _rule_priors():
    net = _unet()
    gauss = GaussianDenoiser(torch.zeros(4, 4), torch.eye(16))
    return {
        "unet": _prior(net),
        "rect": DiffusionPrior(EDM(net), channels="real", image_size=(16, 24)),
        "no-windows": DiffusionPrior(gauss, channels="real", image_size=(16, 16)),
        "no-size": DiffusionPrior(EDM(net), channels="real"),
        "recorded-window": _prior(_unet(), attention_window=24),
        "recorded-coarse": _prior(net, coarse=[(1.0, 2)]),
        "recorded-both": _prior(_unet(), attention_window=16, coarse=[(0.3, 2), (3.0, 4)]),
    }


GRIDS = [None, (16, 16), (8, 12), (17, 16), (24, 24), (31, 32), (32, 32), (32, 40), (48, 100), (63, 64),
         (64, 64), (64, 200), (3, 128, 96), (130, 130)]


@pytest.mark.parametrize("name", list(_rule_priors()))
def test_for_grid_gives_the_settings_of_the_old_rules(name):
    prior = _rule_priors()[name]
    state = lambda: (prior.attention_window, prior.coarse,  # noqa: E731
                     _windows(prior.denoiser.net) if prior.has_attention_window else None)
    before = state()
    for shape in GRIDS:
        for limited in (False, True):
            view = prior.for_grid(shape, limited_angle=limited, coarse=True)
            assert view.attention_window == old_attention_window(shape, limited, prior), (shape, limited)
            assert view.coarse == old_coarse_levels(shape, limited, prior), (shape, limited)
            assert view.denoiser is prior.denoiser
        if shape is not None:  # what the image tasks tiled: no coarse levels beyond the recorded ones
            tasks = prior.for_grid(shape)
            assert tasks.attention_window == old_tiled_window(prior, shape), shape
            assert tasks.coarse == prior.coarse
    assert state() == before                                           # the prior and its network are as they were


def test_for_grid_uses_the_published_constants():
    assert grid.COARSE_ABOVE == OLD_COARSE_ABOVE and grid.COARSE_ABOVE_LIMITED == OLD_COARSE_ABOVE_LIMITED


def test_a_view_shares_the_weights_and_keeps_its_own_window():
    net = _unet()
    prior = _prior(net)
    x = _x()
    c = torch.full((2,), 0.7)
    with torch.no_grad():
        ref_global, ref_tiled = prior.denoise(x, 0.7), None
        view = prior.configured(attention_window=16)
        assert view is not prior and view.denoiser is prior.denoiser
        assert {id(p) for p in view.parameters()} == {id(p) for p in prior.parameters()}  # no copy of the weights
        assert view.attention_window == 16 and prior.attention_window is None
        ref_tiled = view.denoise(x, 0.7)
        assert not torch.allclose(ref_tiled, ref_global, atol=1e-4)
        for _ in range(2):                                         # alternately: each its own window
            assert torch.equal(prior.denoise(x, 0.7), ref_global)
            assert torch.equal(view.denoise(x, 0.7), ref_tiled)
        assert _windows(net) == {None}                             # the network's modules were never set
        # the same numbers as the network called with the window, and as a prior that records the window
        assert torch.equal(ref_tiled, EDM(_Windowed(net, 16))(x[:, None], c)[:, 0])
        recorded = _prior(net, attention_window=16)
        assert torch.equal(recorded.denoise(x, 0.7), ref_tiled)
        assert torch.equal(recorded.configured(attention_window=None).denoise(x, 0.7), ref_global)
        net.set_attention_window(None)  # the network's own default, which the recording prior set
    # a view of a view, and KEEP
    v2 = view.configured(coarse=[(0.5, 2)])
    assert v2.attention_window == 16 and v2.coarse == [(0.5, 2)] and view.coarse is None
    assert prior.configured(attention_window=KEEP, coarse=KEEP).attention_window is None


class _Windowed(nn.Module):
    """The network called with a stated window."""

    def __init__(self, net, pixels):
        super().__init__()
        self.inner, self.pixels = net, pixels

    def forward(self, x, c):
        return self.inner(x, c, attention_window=self.pixels)


def test_the_unet_takes_its_window_per_call_over_its_default():
    net = _unet()
    x, c = torch.randn(1, 1, 32, 32), torch.zeros(1)
    with torch.no_grad():
        ref, tiled = net(x, c), net(x, c, attention_window=16)
        assert not torch.allclose(ref, tiled, atol=1e-4)
        net.set_attention_window(16)
        assert torch.equal(net(x, c), tiled) and torch.equal(net(x, c, attention_window=None), ref)
        with net.windowed(None):
            assert torch.equal(net(x, c), ref)
            assert torch.equal(net(x, c, attention_window=16), tiled)  # a stated window wins
        assert torch.equal(net(x, c), tiled)
        net.set_attention_window(None)
        other = _unet(seed=1)
        with net.windowed(16):  # the scope is this network's only
            assert torch.equal(net(x, c), tiled)
            assert torch.equal(other(x, c), other(x, c, attention_window=None))
        assert _windows(net) == {None}
    for bad in (0, 1, 2.5, True, "16"):
        with pytest.raises(ValueError, match="attention window"):
            net(x, c, attention_window=bad)


def test_a_window_scope_is_per_thread():
    net = _unet()
    x, c = torch.randn(1, 1, 32, 32), torch.zeros(1)
    with torch.no_grad():
        ref = net(x, c)
        got = {}
        with net.windowed(16):
            t = threading.Thread(target=lambda: got.setdefault("out", net(x, c)))
            t.start()
            t.join()
        assert torch.equal(got["out"], ref)


def test_coarse_views_match_a_prior_that_records_the_levels_and_leave_the_prior_alone():
    net = _unet(levels=())
    prior = _prior(net)
    x = _x((3, 64, 48), seed=1)
    sig = torch.tensor([5.0, 1.0, 0.2])
    levels = [(2.0, 4), (0.5, 2)]
    with torch.no_grad():
        view = prior.configured(coarse=levels)
        out = view.denoise(x, sig)
        assert prior.coarse is None and view.coarse == levels
        recorded = _prior(net, coarse=levels)
        assert torch.equal(recorded.denoise(x, sig), out)
        assert torch.equal(prior.denoise(x[2:], sig[2:])[0], out[2])  # below every threshold: the same call
        assert not torch.allclose(prior.denoise(x, sig)[0], out[0], atol=1e-4)


def test_views_refuse_what_the_prior_refuses():
    gauss = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 2), torch.eye(4)), channels="real")
    assert gauss.configured(attention_window=None).attention_window is None
    with pytest.raises(ValueError, match="no windowed attention"):
        gauss.configured(attention_window=16)
    prior = _prior()
    for bad in (0, 1, 2.5, True, "16"):
        with pytest.raises(ValueError, match="attention window"):
            prior.configured(attention_window=bad)
    with pytest.raises(ValueError, match="int >= 2"):
        prior.configured(coarse=[(0.5, 1)])
    with pytest.raises(ValueError, match="once"):
        prior.configured(coarse=[(0.5, 2), (1.0, 2)])
    assert prior.attention_window is None and prior.coarse is None


def test_a_view_records_its_policy_and_keeps_the_rest():
    prior = _prior(max_grid=64).eval()
    view = prior.for_grid((64, 64), coarse=True)
    cfg = view.config()
    assert cfg["attention_window"] == 16 and cfg["coarse"] == [[2.0, 4], [0.5, 2]]
    assert "attention_window" not in prior.config() and "coarse" not in prior.config()
    assert {k: v for k, v in cfg.items() if k not in ("attention_window", "coarse")} == prior.config()
    assert view.training is False and view.normalization is prior.normalization and view.max_grid == 64
    assert view.for_grid(None).attention_window == 16                # a view's own policy is what it records


def test_callers_ask_the_prior_instead_of_its_network():
    class Fixed(nn.Module):
        any_size = False
        config = {}

        def forward(self, x, c):
            return torch.zeros_like(x)

    fixed = DiffusionPrior(EDM(Fixed()), image_size=(64, 64), name="fixed")
    assert fixed.any_size is False and fixed.training_grid == (64, 64) and fixed.has_attention_window is False
    assert fixed.size_multiple == 1
    unet = _prior()
    assert unet.any_size is True and unet.has_attention_window is True and unet.training_grid == (16, 16)
    assert unet.size_multiple == 2 and unet.network is unet.denoiser.net
    gauss = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 2), torch.eye(4)), channels="real")
    assert gauss.training_grid is None and gauss.has_attention_window is False and gauss.any_size is True
    rgb = DiffusionPrior(EDM(_unet()), channels="rgb", image_size=(3, 16, 24))
    assert rgb.training_grid == (16, 24)


@pytest.mark.parametrize("name, shape, window, levels", [
    ("bundled:ct-anatomy-v2-128", (256, 256), 128, [(0.5, 2)]),
    ("bundled:brain-synth-128", (192, 256), 128, None),
])
def test_bundled_views_give_the_numbers_of_priors_that_record_the_settings(name, shape, window, levels):
    prior = priors.load(name)
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2,) + shape, generator=g)
    if prior.channels == "complex":
        x = torch.complex(x, torch.randn((2,) + shape, generator=g))
    sig = torch.tensor([2.0, 0.1])
    with torch.no_grad():
        view = prior.for_grid(shape, coarse=levels is not None)
        assert view.attention_window == window and view.coarse == levels
        new = view.denoise(x, sig)
        recorded = DiffusionPrior(prior.denoiser, prior.channels, prior.image_size, prior.normalization, prior.name,
                                  prior.max_grid, attention_window=window, coarse=levels)
        old = recorded.denoise(x, sig)
        prior.network.set_attention_window(None)  # the network's own default, which the recording prior set
        assert torch.equal(new, old)
        assert not torch.equal(prior.denoise(x, sig), new)


def test_the_pieces_answer_what_the_prior_answers():
    from recon.priors.channels import convention
    from recon.priors.noise import NoiseLevels
    from recon.priors.normalization import Normalization

    norm = Normalization("range", value=2.0, lo=-1.0, hi=1.0)
    prior = DiffusionPrior(EDM(_unet()), channels="real", image_size=(16, 16), normalization=norm)
    assert prior.sigma_max == prior.noise_levels.sigma_max == 40.0 and prior.sigma_min == 0.001
    assert torch.equal(prior.sigmas(7), NoiseLevels(prior.denoiser, 2.0).sigmas(7))
    assert prior.convention is convention("real") and convention("rgb").image_ndim == 3
    with pytest.raises(ValueError, match="channels must be one of"):
        convention("grey")
    x = _x((2, 16, 16))
    with torch.no_grad():
        direct = norm.network_call(prior._padded, x[:, None], torch.full((2,), 0.3))[:, 0]
        assert torch.equal(prior.denoise(x, 0.3), direct)
        assert not torch.equal(prior.denoise(x, 0.3), DiffusionPrior(EDM(prior.network), channels="real").denoise(x, 0.3))


def test_with_network_calls_the_wrapper_and_leaves_the_prior_alone():
    net = _unet()
    prior = _prior(net)
    calls = []

    class Counting(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, c, **kw):
            calls.append(x.shape)
            return self.inner(x, c, **kw)

    view = prior.with_network(Counting(net))
    x = _x((2, 16, 16))
    with torch.no_grad():
        assert torch.equal(view.denoise(x, 0.5), prior.denoise(x, 0.5))
    assert len(calls) == 1 and prior.network is net and isinstance(view.network, Counting)
