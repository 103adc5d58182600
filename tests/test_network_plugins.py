"""Networks written outside the package: registered by name or found through the ``diffrecon.networks`` entry
points, then built, saved and loaded like the built-in ones."""
import importlib.metadata
import textwrap

import pytest
import torch
from torch import nn

from recon import priors
from recon.priors import networks
from recon.priors.format import save
from recon.priors.parametrizations import EDM
from recon.priors.prior import DiffusionPrior


class TinyPluginNet(nn.Module):
    """A network a user writes: records its constructor arguments and its registry name."""

    registry_name = "tiny-plugin"

    def __init__(self, ch: int = 1, width: int = 4):
        super().__init__()
        self.config = dict(ch=ch, width=width)
        self.a = nn.Conv2d(ch, width, 3, padding=1)
        self.b = nn.Conv2d(width, ch, 3, padding=1)

    def forward(self, x, c):
        return self.b(torch.tanh(self.a(x)) * (1 + c.reshape(-1, 1, 1, 1)))


@pytest.fixture
def registry(monkeypatch):
    """The network registry as it is, restored after the test; entry points read afresh."""
    monkeypatch.setattr(networks, "NETWORKS", dict(networks.NETWORKS))
    monkeypatch.setattr(networks, "_PLUGINS_READ", False)
    return networks.NETWORKS


def _round_trip(tmp_path, name):
    torch.manual_seed(0)
    net = networks.build({"name": name, "ch": 1, "width": 3})
    prior = DiffusionPrior(EDM(net), channels="real", image_size=(8, 8), name="plugged")
    stem = save(prior, tmp_path / "plugged", half=False)
    loaded = priors.load(str(stem))
    x = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.denoise(x, 0.5), prior.denoise(x, 0.5))
    return loaded


def test_a_registered_network_class_builds_saves_and_loads(registry, tmp_path):
    assert "tiny-plugin" not in networks.available()
    with pytest.raises(ValueError, match="unknown network 'tiny-plugin'"):
        networks.build({"name": "tiny-plugin"})
    assert networks.register("tiny-plugin", TinyPluginNet) is TinyPluginNet
    assert "tiny-plugin" in networks.available() and networks.network_class("tiny-plugin") is TinyPluginNet
    loaded = _round_trip(tmp_path, "tiny-plugin")
    assert type(loaded.denoiser.net) is TinyPluginNet and loaded.denoiser.net.config == {"ch": 1, "width": 3}
    assert networks.config_of(loaded.denoiser.net) == {"name": "tiny-plugin", "ch": 1, "width": 3}
    networks.register("tiny-plugin", TinyPluginNet)              # the same again: nothing to refuse


def test_registration_is_refused_by_name(registry):
    with pytest.raises(ValueError, match="taken by recon.priors.unet:UNet"):
        networks.register("unet", "elsewhere:UNet")
    with pytest.raises(ValueError, match="records the registry name 'tiny-plugin'"):
        networks.register("other", TinyPluginNet)
    for bad in ("Tiny", "a b", "", "-x", 3):
        with pytest.raises(ValueError, match="network name"):
            networks.register(bad, TinyPluginNet)
    for bad in (object, "no-colon", "a:", 3):
        with pytest.raises((TypeError, ValueError), match="module:Class"):
            networks.register("x", bad)
    assert networks.NETWORKS["unet"] == "recon.priors.unet:UNet"
    networks.register("unet", "recon.priors.unet:UNet")          # the same target again
    networks.register("tiny-plugin", "no_such_module_here:Net")
    with pytest.raises(ImportError, match="network 'tiny-plugin' .*failed to load"):
        networks.network_class("tiny-plugin")
    networks.register("tiny-plugin", TinyPluginNet, replace=True)
    assert networks.network_class("tiny-plugin") is TinyPluginNet


def _plugin_module(tmp_path, monkeypatch, module):
    """A module on the path that defines a network registered under its lower-case class name."""
    tmp_path = tmp_path / "plugins"
    tmp_path.mkdir()
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Widenet(nn.Module):
            def __init__(self, ch=1, width=4):
                super().__init__()
                self.config = dict(ch=ch, width=width)
                self.conv = nn.Conv2d(ch, ch, 3, padding=1)
                self.scale = nn.Parameter(torch.tensor(float(width)))

            def forward(self, x, c):
                return self.conv(x) * self.scale / (1 + c.reshape(-1, 1, 1, 1) ** 2)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_a_network_named_as_module_and_class_is_imported_on_first_use(registry, tmp_path, monkeypatch):
    module = _plugin_module(tmp_path, monkeypatch, "plugin_nets_by_name")
    networks.register("widenet", f"{module}:Widenet")
    loaded = _round_trip(tmp_path, "widenet")
    assert type(loaded.denoiser.net).__name__ == "Widenet"


def test_entry_points_of_diffrecon_networks_are_read_on_first_use(registry, tmp_path, monkeypatch):
    module = _plugin_module(tmp_path, monkeypatch, "plugin_nets_by_entry_point")
    found = [importlib.metadata.EntryPoint("widenet", f"{module}:Widenet", "diffrecon.networks"),
             importlib.metadata.EntryPoint("unet", "elsewhere:UNet", "diffrecon.networks"),
             importlib.metadata.EntryPoint("broken", "no_such_module_here:Net", "diffrecon.networks")]
    original = importlib.metadata.entry_points

    def entry_points(**kw):
        return found if kw.get("group") == "diffrecon.networks" else original(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert {"widenet", "broken"} <= set(networks.available())
    assert networks.NETWORKS["unet"] == "recon.priors.unet:UNet"  # a built-in name is not taken over
    loaded = _round_trip(tmp_path, "widenet")
    assert type(loaded.denoiser.net).__name__ == "Widenet"
    with pytest.raises(ImportError, match="plugin 'broken' of diffrecon.networks"):
        networks.build({"name": "broken"})
