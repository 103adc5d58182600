"""recon reconstruct on a fastMRI-format file: every method, the result file, and bad input."""
import json

import h5py
import numpy as np
import pytest

from recon.cli import main


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    f = d / "sim.h5"
    assert main(["simulate", str(f), "--slices", "4:6", "--coils", "4"]) == 0
    return f


@pytest.mark.parametrize("method,extra", [("zero-filled", []), ("cg-sense", []), ("dds", ["--steps", "10"]),
                                          ("score-mri", ["--steps", "10"]), ("dps", ["--steps", "5"]),
                                          ("score-ald", ["--steps", "3"])])
def test_every_method_writes_a_result(sim, tmp_path, method, extra, capsys):
    out = tmp_path / "r.h5"
    classical = method in ("zero-filled", "cg-sense")
    argv = ["--quiet", "reconstruct", str(sim), "--slices", "0:2", "--sampler", method, "--out", str(out)] + \
        ([] if classical else ["--samples", "2"]) + extra
    assert main(argv) == 0
    with h5py.File(out) as f:
        n = 1 if method in ("zero-filled", "cg-sense") else 2
        assert f["samples"].shape == (2, n, 128, 128) and f["reconstruction"].shape == (2, 128, 128)
        assert f["std"].shape == (2, 128, 128) and f["maps"].shape == (2, 4, 128, 128)
        assert f["mask"].shape == (2, 128, 128)
        assert json.loads(f.attrs["settings"])["method"] == method
        assert len(json.loads(f.attrs["metrics"])) == 2 and np.isfinite(f.attrs["psnr"])
    assert "PSNR" in capsys.readouterr().out
    if classical:  # one deterministic result: --samples and --steps are refused, not ignored
        assert main(argv + ["--samples", "2"]) == 2 and "takes no steps" in capsys.readouterr().err


def test_cg_sense_beats_zero_filled_and_png(sim, tmp_path):
    psnr = {}
    for m in ("zero-filled", "cg-sense"):
        out = tmp_path / f"{m}.h5"
        assert main(["--quiet", "reconstruct", str(sim), "--slices", "1", "--sampler", m, "--out", str(out),
                     "--png", str(tmp_path / f"{m}.png")]) == 0
        with h5py.File(out) as f:
            psnr[m] = f.attrs["psnr"]
        assert (tmp_path / f"{m}.png").exists()
    assert psnr["cg-sense"] > psnr["zero-filled"] + 3


@pytest.mark.parametrize("argv,message", [
    (["reconstruct", "MISSING.h5"], "no such file"),
    (["reconstruct", "DIR"], "directory"),
    (["reconstruct", "SIM", "--slices", "5:9"], "reaches outside the volume"),
    (["reconstruct", "SIM", "--slices", "2:2"], "empty"),
    (["reconstruct", "SIM", "--slices", "7"], "out of range"),
    (["reconstruct", "SIM", "--acceleration", "0.5"], "acceleration must be a finite number >= 1"),
    (["reconstruct", "SIM", "--mask", "spiral"], "unknown mask"),
    (["reconstruct", "SIM", "--out", "NOFOLDER/r.h5"], "does not exist"),
    (["reconstruct", "SIM", "--prior", "bundled:nope"], "no bundled prior"),
])
def test_bad_input_is_one_line(sim, tmp_path, capsys, argv, message):
    subs = {"MISSING.h5": str(tmp_path / "missing.h5"), "DIR": str(tmp_path), "SIM": str(sim),
            "NOFOLDER/r.h5": str(tmp_path / "nofolder" / "r.h5")}
    argv = [subs.get(a, a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "r.h5")]
    assert main(["--quiet"] + argv + ["--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r.h5").exists()


def test_file_written_by_plain_h5py_reconstructs(tmp_path):
    """A fastMRI-layout file made without the toolkit (no ISMRMRD header, 'max' attribute only)."""
    import torch

    from recon.data import simulate
    from operators import fft2c

    x = simulate.phantom((128, 128), seed=3)
    maps = simulate.coil_maps(4, (128, 128))
    k = simulate.simulate_multicoil(x, maps, snr_db=35, seed=4)
    f = tmp_path / "plain.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("kspace", data=np.stack([k.numpy()] * 2))
        rss = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                                 dim=(-2, -1)).abs().square().sum(0).sqrt()
        h.create_dataset("reconstruction_rss", data=np.stack([rss.numpy()] * 2))
        h.attrs["max"] = float(rss.max())
    assert torch.allclose(fft2c(maps * x), k, atol=1)  # sanity of the inline simulation
    for method, extra in (("cg-sense", []), ("dds", ["--steps", "5"])):
        out = tmp_path / f"{method}.h5"
        assert main(["--quiet", "reconstruct", str(f), "--slices", "0", "--sampler", method, "--out", str(out)]
                    + extra) == 0
        with h5py.File(out) as h:
            assert h["reconstruction"].shape == (1, 128, 128) and np.isfinite(h["reconstruction"][()]).all()


def test_fully_convolutional_prior_runs_on_another_grid(tmp_path, capsys):
    """The bundled 128 x 128 prior runs on a 96 x 90 grid (padded to its multiple of 8 and cropped back)."""
    from recon.data import write_fastmri
    import torch

    f = tmp_path / "k96.h5"
    write_fastmri(f, torch.randn(1, 2, 96, 90, dtype=torch.complex64))
    assert main(["--quiet", "reconstruct", str(f), "--out", str(tmp_path / "r.h5"), "--steps", "2",
                 "--center-fraction", "0.2"]) == 0
    with h5py.File(tmp_path / "r.h5") as h:
        assert h["reconstruction"].shape == (1, 96, 90) and np.isfinite(h["reconstruction"][()]).all()
    assert main(["reconstruct", str(f), "--sampler", "ddpm", "--out", str(tmp_path / "r.h5")]) == 2
    assert "unknown method 'ddpm'" in capsys.readouterr().err
