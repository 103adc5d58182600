"""``--preset`` on the commands and the sweep: the sampler a command builds is the preset's, with only the options
a user states on top; a preset a sampler does not have, or one given to a classical method, is refused."""
import h5py
import pytest
import torch

from recon import samplers
from recon.apps import sweep
from recon.pipelines import ct as reconstruct_ct
from recon.pipelines.mri import MRISettings, sampler_for
from recon.cli import main


def _settings(sampler) -> dict:
    return {k: v for k, v in vars(sampler).items() if not k.startswith("_")}


@pytest.mark.parametrize("method", ["dds", "dps", "score-mri", "score-ald"])
def test_the_mri_command_builds_the_preset_of_python(method):
    built = sampler_for(MRISettings(method=method, preset="reference"))
    assert _settings(built) == _settings(samplers.get(method, preset="reference"))
    assert _settings(built) != _settings(samplers.get(method))


def test_a_stated_length_goes_on_top_of_the_preset():
    built = sampler_for(MRISettings(method="dds", preset="reference", steps=7))
    assert _settings(built) == _settings(samplers.get("dds", preset="reference", steps=7))
    ct = reconstruct_ct.sampler_for(reconstruct_ct.CTSettings(method="score-ald", preset="reference", steps=12))
    assert _settings(ct) == _settings(samplers.get("score-ald", preset="reference", n_levels=12))


@pytest.mark.parametrize("settings,word", [
    (dict(method="dds", preset="fast"), "presets (reference)"),
    (dict(method="cg-sense", preset="reference"), "classical method 'cg-sense' has none"),
])
def test_bad_presets_are_refused_by_name(settings, word):
    with pytest.raises(ValueError, match=word.replace("(", r"\(").replace(")", r"\)")):
        MRISettings(**settings).check()


def test_preset_through_the_commands(tmp_path, capsys):
    sim = tmp_path / "sim.h5"
    assert main(["--quiet", "simulate", str(sim), "--slices", "0:1", "--size", "32", "--coils", "2"]) == 0
    out = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct", str(sim), "--sampler", "score-ald", "--preset", "reference", "--steps",
                 "3", "--center-fraction", "0.25", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert torch.isfinite(torch.from_numpy(f["reconstruction"][()])).all()
    capsys.readouterr()
    # DDS's published code runs a network with discrete timesteps; the bundled prior (EDM) has none: one line
    assert main(["--quiet", "reconstruct", str(sim), "--sampler", "dds", "--preset", "reference", "--steps", "3",
                 "--center-fraction", "0.25", "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("recon: error:") == 1 and "discrete timesteps" in err
    assert main(["--quiet", "reconstruct", str(sim), "--sampler", "dds", "--preset", "nope", "--out",
                 str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("recon: error:") == 1 and "'nope'" in err and "reference" in err
    assert main(["--quiet", "reconstruct-ct", str(tmp_path / "missing.h5"), "--sampler", "fbp", "--preset",
                 "reference"]) == 2
    assert "classical method 'fbp' has none" in capsys.readouterr().err


def test_a_sweep_applies_its_preset_to_every_sampler(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'out = "{tmp_path / "s.csv"}"\nmasks = ["random"]\naccelerations = [4]\n'
                   f'methods = ["zero-filled", "dds"]\nseeds = [0]\nslices = "0:1"\npreset = "reference"\n'
                   f'[steps]\ndds = 2\n')
    loaded = sweep.load_config(cfg)
    row = {"source": "heldout", "slice": 0, "mask": "random", "acceleration": 4.0, "method": "dds", "seed": 0}
    built = sweep.resolved_settings(row, loaded)["sampler"]
    assert built["eta_convention"] == "dds" and built["start"] == "vp" and built["steps"] == 2
    cfg.write_text(cfg.read_text().replace('preset = "reference"', 'preset = "fastest"'))
    with pytest.raises(ValueError, match="fastest"):
        sweep.load_config(cfg)
