"""The recon command: the demo runs, info describes a file, errors are one line with exit status 2."""
import h5py
import numpy as np

from recon.cli import main


def test_demo_writes_figure_and_beats_zero_filled(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["--quiet", "demo", "--out", str(out), "--steps", "20"]) == 0
    assert out.exists() and out.stat().st_size > 10_000
    text = capsys.readouterr().out
    rows = {line[:16].strip(): float(line[16:24]) for line in text.splitlines()
            if line.startswith(("zero-filled", "CG-SENSE", "DDS"))}
    assert rows["CG-SENSE"] > rows["zero-filled"] + 3
    assert rows["DDS (20 NFE)"] > rows["zero-filled"] + 3


def test_simulate_then_info(tmp_path, capsys):
    f = tmp_path / "sim.h5"
    assert main(["simulate", str(f), "--slices", "0:2", "--coils", "4"]) == 0
    with h5py.File(f) as h:
        assert h["kspace"].shape == (2, 4, 128, 128) and "reconstruction_rss" in h
    assert main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "2 slices x 4 coils x 128 x 128 (multi-coil)" in out and "reconstruction_rss" in out


def test_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    for argv in (["info", str(tmp_path / "missing.h5")], ["info", str(bad)], ["info", str(tmp_path)],
                 ["demo", "--prior", "bundled:nope", "--out", str(tmp_path / "x.png")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("recon: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_generative_task_commands(tmp_path, capsys):
    for task, extra in (("synthesize", ["--n", "2", "--steps", "4"]), ("inpaint", ["--steps", "4"]),
                        ("insert", ["--steps", "6"]), ("denoise", []), ("super-resolve", ["--steps", "4"]),
                        ("anomaly", ["--steps", "6"])):
        out = tmp_path / f"{task}.png"
        assert main(["--quiet", task, "--out", str(out)] + extra) == 0, task
        assert out.exists()
    assert main(["inpaint", "--image", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_ct_demo_and_reconstruct_ct(tmp_path, capsys):
    out = tmp_path / "ct.png"
    assert main(["--quiet", "demo", "--ct", "--out", str(out), "--steps", "10"]) == 0
    assert out.exists() and out.stat().st_size > 10_000
    text = capsys.readouterr().out
    rows = {line[:16].strip(): float(line[16:24]) for line in text.splitlines() if line.startswith(("FBP", "TV", "DDS"))}
    assert rows["TV"] > rows["FBP"] + 5 and rows["DDS (10 NFE)"] > rows["FBP"] + 5
    res = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct-ct", "recon/data/samples/ct-phantom-demo.h5", "--slices", "0:2",
                 "--sampler", "dds", "--steps", "5", "--limited", "0,120", "--tv-z", "0.01", "--out", str(res)]) == 0
    with h5py.File(res) as f:
        assert f["reconstruction"].shape == (2, 128, 128) and f["sinogram"].shape[:2] == (2, 120)
    assert "dds" in capsys.readouterr().out
    assert main(["reconstruct-ct", "recon/data/samples/ct-phantom-demo.h5", "--sampler", "sart"]) == 2
    assert "unknown CT method 'sart'" in capsys.readouterr().err


def test_reconstruct_noise_std_option_sets_the_dds_data_weight(tmp_path, capsys):
    from recon.pipelines import mri as reconstruct
    s = reconstruct.MRISettings()
    assert s.noise_std == "auto" and reconstruct.sampler_for(s).sigma_y == "auto"
    none = reconstruct.sampler_for(reconstruct.MRISettings(noise_std="none"))
    assert none.sigma_y is None and none.cg_iter == 5
    assert reconstruct.sampler_for(reconstruct.MRISettings(noise_std="0.02")).sigma_y == 0.02
    f = "recon/data/samples/mni152-demo-8coil.h5"
    assert main(["reconstruct", f, "--out", str(tmp_path / "a.h5"), "--noise-std", "bogus"]) == 2
    assert "noise_std must be 'auto', 'none' or a noise std" in capsys.readouterr().err
    assert main(["reconstruct", f, "--out", str(tmp_path / "b.h5"), "--sampler", "score-mri", "--noise-std", "0.1"]) == 2
    assert "does not take it" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()


def test_image_tasks_tile_the_attention_above_the_training_grid_and_refuse_oversized_batches(tmp_path, capsys,
                                                                                          monkeypatch):
    import numpy as np
    from recon.priors.prior import DiffusionPrior
    seen, denoise = [], DiffusionPrior.denoise

    def spy(self, x, sigma):
        seen.append((tuple(x.shape[-2:]), self.attention_window))
        return denoise(self, x, sigma)

    monkeypatch.setattr(DiffusionPrior, "denoise", spy)
    rng = np.random.default_rng(0)
    for side, window in ((256, 128), (128, None)):
        img = tmp_path / f"img{side}.npy"
        np.save(img, rng.random((side, side)).astype(np.float32))
        seen.clear()
        assert main(["--quiet", "denoise", "--image", str(img), "--out", str(tmp_path / f"d{side}.png")]) == 0
        assert seen and {w for _, w in seen} == {window}, (side, seen)
    big = tmp_path / "big.npy"
    np.save(big, np.ones((2048, 2048), dtype=np.float32))
    out = tmp_path / "never.png"
    assert main(["inpaint", "--image", str(big), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "33.6 M pixels in one batch" in err and "use --n 2 or fewer" in err and not out.exists()
