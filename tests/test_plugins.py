"""Samplers written outside the package: ``samplers.register``, the ``diffrecon.samplers`` entry points and
plugin modules or files (``recon.plugins``)."""
import sys
import textwrap

import pytest
import torch

from recon import plugins, samplers


PLUGIN = textwrap.dedent('''
    from recon import samplers
    from recon.samplers.base import Sampler, noise_like


    class Zero(Sampler):
        """Returns the pseudo-inverse image of the data in the prior's range (no prior used)."""
        name = "zero-plugin"

        def _run(self, x, data, prior, generator, callback, bar):
            return data.A.pinv(data.y) + 0 * noise_like(x, generator)


    samplers.register("zero-plugin", Zero, replace=True)
''')


@pytest.fixture
def clean_registry():
    posterior, unconditional = dict(samplers.REGISTRY), dict(samplers.UNCONDITIONAL)
    yield
    samplers.REGISTRY.clear()
    samplers.REGISTRY.update(posterior)
    samplers.UNCONDITIONAL.clear()
    samplers.UNCONDITIONAL.update(unconditional)


def test_register_makes_a_sampler_known_and_refuses_bad_names_and_classes(clean_registry):
    class Mine(samplers.DDS):
        pass

    assert samplers.register("my-dds", Mine) is Mine
    assert "my-dds" in samplers.available()
    assert isinstance(samplers.get("my-dds", steps=3), Mine)
    with pytest.raises(ValueError, match="taken by recon.samplers.dds.DDS"):
        samplers.register("dds", Mine)
    with pytest.raises(ValueError, match="lower-case"):
        samplers.register("My Sampler", Mine)
    with pytest.raises(TypeError, match="subclass of recon.samplers.Sampler"):
        samplers.register("not-a-sampler", dict)
    samplers.register("dds", Mine, replace=True)
    assert samplers.sampler_class("dds") is Mine


def test_a_plugin_file_registers_its_sampler_and_it_runs(tmp_path, clean_registry):
    path = tmp_path / "zero_plugin.py"
    path.write_text(PLUGIN)
    plugins.import_plugins([str(path)])
    assert "zero-plugin" in samplers.available()
    from tests.gaussian_problems import mri_problem

    prior, A, y, _, _ = mri_problem()
    out = samplers.get("zero-plugin")(y, A, prior, n_samples=2)
    assert out.shape == (2, 4, 6)
    assert torch.allclose(out[0], A.pinv(y), atol=1e-5)


def test_a_broken_or_missing_plugin_is_named(tmp_path):
    with pytest.raises(ImportError, match="no such file"):
        plugins.import_plugins([str(tmp_path / "missing.py")])
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('broken on purpose')\n")
    with pytest.raises(ImportError, match="bad_plugin.py failed to import: RuntimeError: broken on purpose"):
        plugins.import_plugins([str(bad)])
    with pytest.raises(ImportError, match="'no_such_module_xyz' failed to import"):
        plugins.import_plugins(["no_such_module_xyz"])


def test_entry_points_of_an_installed_distribution_register_samplers(tmp_path, monkeypatch, clean_registry):
    """A distribution on sys.path whose entry_points.txt names a sampler in ``diffrecon.samplers``."""
    (tmp_path / "ep_sampler_mod.py").write_text(PLUGIN.replace('samplers.register("zero-plugin", Zero, '
                                                               'replace=True)', ""))
    dist = tmp_path / "ep_sampler-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-sampler\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[diffrecon.samplers]\nzero-ep = ep_sampler_mod:Zero\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(samplers, "_PLUGINS_READ", False)
    assert "zero-ep" in samplers.available()
    assert samplers.sampler_class("zero-ep").__name__ == "Zero"
    sys.modules.pop("ep_sampler_mod", None)


COMMAND_PLUGIN = textwrap.dedent('''
    """A sampler written outside the package: the pseudo-inverse image plus a little noise."""
    from recon import samplers
    from recon.samplers.base import Sampler, noise_like


    class PinvNoise(Sampler):
        name = "pinv-noise"

        def _run(self, x, data, prior, generator, callback, bar):
            return data.A.pinv(data.y) + 0.01 * noise_like(x, generator)


    samplers.register("pinv-noise", PinvNoise, replace=True)
''')


def test_a_plugin_sampler_runs_through_every_command(tmp_path, capsys, clean_registry):
    """Registered from a file named by --plugin, the sampler is a valid --sampler of reconstruct, reconstruct-ct,
    uncertainty and a sweep, with no other change."""
    import h5py
    import numpy as np

    from recon.cli import main
    from recon.data import phantoms

    plugin = tmp_path / "pinv_plugin.py"
    plugin.write_text(COMMAND_PLUGIN)
    sim = tmp_path / "sim.h5"
    assert main(["--quiet", "simulate", str(sim), "--slices", "0:1", "--size", "32", "--coils", "2"]) == 0
    ct = tmp_path / "ct.h5"
    with h5py.File(ct, "w") as f:
        hu = phantoms.ct_phantom_stack(1, 32, torch.Generator().manual_seed(0))
        f["image"] = phantoms.hu_to_mu(hu).numpy().astype(np.float32)
    pre = ["--plugin", str(plugin), "--quiet"]
    runs = [["reconstruct", str(sim), "--center-fraction", "0.25", "--out", str(tmp_path / "r.h5")],
            ["reconstruct-ct", str(ct), "--views", "12", "--out", str(tmp_path / "c.h5")],
            ["uncertainty", str(sim), "--samples", "2", "--center-fraction", "0.25", "--out", str(tmp_path / "u.h5")]]
    for argv in runs:
        capsys.readouterr()
        assert main(pre + argv + ["--sampler", "pinv-noise"]) == 0, (argv, capsys.readouterr().err)
        with h5py.File(argv[argv.index("--out") + 1]) as f:
            key = "mean" if argv[0] == "uncertainty" else "reconstruction"
            assert np.isfinite(f[key][()]).all() and np.abs(f[key][()]).max() > 0
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(f'out = "{tmp_path / "sweep.csv"}"\nmasks = ["random"]\naccelerations = [4]\n'
                   f'methods = ["pinv-noise"]\nseeds = [0]\nslices = "0:1"\n')
    assert main(pre + ["sweep", str(cfg)]) == 0, capsys.readouterr().err
    assert "pinv-noise" in (tmp_path / "sweep.csv").read_text()
    capsys.readouterr()
    assert main(["--quiet", "--plugin", str(tmp_path / "nope.py"), "reconstruct", str(sim)]) == 2
    err = capsys.readouterr().err
    assert err.count("recon: error:") == 1 and "nope.py: no such file" in err


def test_a_prior_plugin_is_loaded_by_name_and_accepted_by_the_commands(tmp_path, monkeypatch, capsys):
    """An installed distribution whose ``diffrecon.priors`` entry point names a prior's folder: ``priors.load`` and
    every command's ``--prior`` take ``plugin:<name>`` or the bare name."""
    import shutil

    from recon import priors
    from recon.cli import main
    from recon.priors import bundled

    folder = tmp_path / "knee_prior"
    shutil.copytree(bundled.config_path("brain-synth-128").parent, folder)
    (tmp_path / "ep_prior_mod.py").write_text(f"PATH = {str(folder)!r}\n\n\ndef path():\n    return PATH\n")
    dist = tmp_path / "ep_prior-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-prior\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[diffrecon.priors]\nknee-prior = ep_prior_mod:path\n"
                                           "broken-prior = ep_prior_mod:NOPE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a = priors.load("plugin:knee-prior")
    assert a.name == priors.load("bundled:brain-synth-128").name and priors.load("knee-prior") is not a
    with pytest.raises(ImportError, match="broken-prior"):
        priors.load("plugin:broken-prior")
    sim = tmp_path / "sim.h5"
    assert main(["--quiet", "simulate", str(sim), "--slices", "0:1", "--size", "32", "--coils", "2"]) == 0
    assert main(["--quiet", "reconstruct", str(sim), "--steps", "2", "--center-fraction", "0.25", "--prior",
                 "plugin:knee-prior", "--out", str(tmp_path / "r.h5")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["--quiet", "reconstruct", str(sim), "--prior", "plugin:elbow", "--out", str(tmp_path / "x.h5")]) == 2
    assert "knee-prior" in capsys.readouterr().err
    sys.modules.pop("ep_prior_mod", None)
