"""The app layer's shared parts: slice selection, the settings base, the device check and the atomic writer."""
import json
import os

import h5py
import numpy as np
import pytest
import torch

from recon.data import results as io
from recon.pipelines.mri import MRISettings
from recon.pipelines.ct import CTSettings
from recon.pipelines.settings import BaseSettings, check_device, select_slices


@pytest.mark.parametrize("spec,expected", [
    (None, [0, 1, 2, 3, 4]), ("3", [3]), ("-1", [4]), ("0:4", [0, 1, 2, 3]), (":", [0, 1, 2, 3, 4]),
    ("2:", [2, 3, 4]), (":2", [0, 1]), (" 1:3 ", [1, 2]), ("3:5", [3, 4]), (2, [2]), (-5, [0]),
    ([4, 0, -2], [4, 0, 3]), ((1,), [1]), (slice(1, 3), [1, 2]), (slice(None, None, 2), [0, 2, 4]),
    (np.int64(1), [1]),
])
def test_select_slices_valid(spec, expected):
    assert select_slices(spec, 5) == expected


@pytest.mark.parametrize("spec,error,message", [
    ("5", IndexError, r"slice 5 out of range: the volume has 5 slices \(valid 0\.\.4\)"),
    ("-6", IndexError, r"slice -6 out of range: the volume has 5 slices \(valid 0\.\.4\)"),
    ([0, 7], IndexError, r"slice 7 out of range.*valid 0\.\.4"),
    ("5:5", ValueError, r"the slice selection 5:5 is empty \(the volume has 5 slices, valid 0\.\.4\)"),
    ("5:9", IndexError, r"slice range 5:9 reaches outside the volume of 5 slices"),
    ("0:99", IndexError, r"slice range 0:99 reaches outside"),
    ("-9:", IndexError, r"slice range -9: reaches outside"),
    ([1, 1], ValueError, r"names slice\(s\) \[1\] more than once"),
    (slice(0, 4, 0), ValueError, r"slice step must be an integer >= 1"),
    ("3:1", ValueError, "is empty"),
    ([], ValueError, "is empty"),
    ("abc", ValueError, r"slices must be an index or a range a:b \(e\.g\. 3, 0:4, :\), got 'abc'"),
    ("1:2:3", ValueError, "slices must be an index or a range a:b"),
    ("", ValueError, "slices must be an index or a range a:b"),
    (1.5, TypeError, "slices must be None, an index, a list of indices or a slice, got 1.5"),
    (True, TypeError, "slices must be None"),
    (["1"], TypeError, "slices must be None"),
])
def test_select_slices_invalid(spec, error, message):
    with pytest.raises(error, match=message):
        select_slices(spec, 5)


def test_select_slices_of_an_empty_volume():
    with pytest.raises(IndexError, match="no valid index"):
        select_slices(0, 0)


def test_settings_base_checks_the_shared_fields():
    for cls in (MRISettings, CTSettings):
        assert issubclass(cls, BaseSettings)
        cls().check()
        for kw, msg in (({"samples": 0}, "samples must be an integer >= 1 and <= 1024, got 0"),
                        ({"seed": 1.5}, "seed must be an integer"), ({"seed": -1}, "seed must be an integer >= 0"),
                        ({"steps": 0}, r"steps must be an integer >= 1 and <= 10000, got 0"),
                        ({"steps": 2.0}, r"steps must be an integer"), ({"prior": ""}, "prior must be"),
                        ({"device": "gpu"}, r"device must be 'cpu' or 'cuda\[:N\]', got 'gpu'")):
            with pytest.raises(ValueError, match=msg):
                cls(**kw).check()
    assert MRISettings().prior == "bundled:brain-synth-128" and CTSettings().prior == "auto"
    with pytest.raises(TypeError):
        MRISettings("dds")  # keyword-only: no field can be set by position by mistake


def test_device_check():
    check_device("cpu")
    for bad in ("cuda:x", "CPU", "", "cuda:"):
        with pytest.raises(ValueError, match="device must be"):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            check_device("cuda:0")


def test_writers_round_trip(tmp_path):
    arrays = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "z": np.ones(2, np.complex64)}
    p = io.write_h5(tmp_path / "a.h5", arrays, {"note": "hi", "n": 3})
    with h5py.File(p) as f:
        assert f["x"].dtype == np.float32 and (f["x"][()] == arrays["x"].numpy()).all()
        assert f["z"].dtype == np.complex64 and f.attrs["note"] == "hi" and f.attrs["n"] == 3
    assert json.loads(io.write_json(tmp_path / "a.json", {"a": [1, 2]}).read_text()) == {"a": [1, 2]}
    io.write_csv(tmp_path / "a.csv", [{"a": 1, "b": 2}], ["a", "b"])
    assert (tmp_path / "a.csv").read_text().splitlines() == ["a,b", "1,2"]
    assert io.write_png(tmp_path / "a.png", [("x", torch.rand(8, 8))]).stat().st_size > 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.csv", "a.h5", "a.json", "a.png"]


def test_a_failing_writer_leaves_the_target_and_no_temporary_file(tmp_path):
    """Each writer fails half-way (a value it cannot store): the old file is byte-identical, nothing else is left."""
    targets = {"r.h5": lambda p: io.write_h5(p, {"ok": np.zeros(3), "bad": object()}),
               "r2.h5": lambda p: io.write_h5(p, {"ok": np.zeros(3)}, {"bad": {"a": 1}}),
               "r.json": lambda p: io.write_json(p, {"bad": object()}),
               "r.csv": lambda p: io.write_csv(p, [{"a": 1}, {"unknown": 2}], ["a"]),
               "r.png": lambda p: io.write_png(p, [("bad", "not an image")])}
    for name, write in targets.items():
        (tmp_path / name).write_bytes(b"old contents")
        with pytest.raises(Exception):
            write(tmp_path / name)
        assert (tmp_path / name).read_bytes() == b"old contents", name
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(targets)


def test_a_failing_writer_without_a_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        io.write_h5(tmp_path / "new.h5", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_output_checks(tmp_path):
    src = tmp_path / "in.h5"
    src.write_bytes(b"input")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        io.write_h5(tmp_path, {"x": np.zeros(1)})
    with pytest.raises(FileNotFoundError, match="output folder .* does not exist"):
        io.write_json(tmp_path / "no" / "x.json", {})
    with pytest.raises(ValueError, match="is the input file"):
        io.check_output(tmp_path / "." / "in.h5", source=src)
    assert src.read_bytes() == b"input"
    assert io.check_output(tmp_path / "out.h5", source=src) == tmp_path / "out.h5"


def test_commands_share_the_slice_selection_and_never_write_onto_the_input(tmp_path, capsys):
    from recon.cli import main

    sim, ct = tmp_path / "sim.h5", "recon/data/samples/ct-phantom-demo.h5"
    assert main(["simulate", str(sim), "--slices", "0:2", "--coils", "2"]) == 0
    before = sim.read_bytes()
    out = str(tmp_path / "r.h5")
    for argv, message in (
            (["reconstruct", str(sim), "--sampler", "zero-filled", "--slices", "x", "--out", out],
             "slices must be an index or a range a:b"),
            (["reconstruct", str(sim), "--sampler", "zero-filled", "--out", str(sim)], "is the input file"),
            (["uncertainty", str(sim), "--slice", "2", "--out", out],
             "slice 2 out of range: the volume has 2 slices (valid 0..1)"),
            (["reconstruct-ct", ct, "--sampler", "fbp", "--slices", "4", "--out", out], "(valid 0..3)"),
            (["reconstruct-ct", ct, "--sampler", "fbp", "--slices", "9:", "--out", out], "reaches outside"),
            (["reconstruct-ct", ct, "--sampler", "fbp", "--slices", "4:4", "--out", out], "is empty")):
        assert main(["--quiet"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("recon: error: ") and message in err and err.count("\n") == 1, err
    assert sim.read_bytes() == before and not (tmp_path / "r.h5").exists()
    assert main(["--quiet", "reconstruct-ct", ct, "--sampler", "fbp", "--slices", "2:", "--out", out]) == 0
    with h5py.File(out) as f:
        assert f["reconstruction"].shape == (2, 128, 128)


def test_writers_refuse_non_finite_results(tmp_path):
    """Nothing non-finite is ever written: an array, an attribute, a number inside JSON text, a CSV cell, a panel."""
    cases = {"a.h5": lambda p: io.write_h5(p, {"reconstruction": np.array([1.0, np.nan])}),
             "b.h5": lambda p: io.write_h5(p, {"x": np.zeros(2)}, {"psnr": float("inf")}),
             "c.h5": lambda p: io.write_h5(p, {"x": np.zeros(2)}, {"metrics": json.dumps([{"psnr": float("nan")}])}),
             "d.h5": lambda p: io.write_h5(p, {"z": torch.tensor([1 + 1j, complex("nan")])}),
             "e.json": lambda p: io.write_json(p, {"a": [1.0, float("nan")]}),
             "f.csv": lambda p: io.write_csv(p, [{"a": float("inf")}], ["a"]),
             "g.png": lambda p: io.write_png(p, [("mean", torch.full((4, 4), float("nan")))])}
    for name, write in cases.items():
        with pytest.raises(FloatingPointError, match="refusing to write .*not finite|refusing to write .*NaN"):
            write(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from recon.atomic import stale_temporaries, temporary_name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".r.tmp{dead}.h5"
    stale.write_bytes(b"torn")
    mine = temporary_name(tmp_path / "other.h5")
    mine.write_bytes(b"in progress")  # a live process's temporary file of another target stays
    live = tmp_path / f".r.tmp{os.getppid()}.h5"
    live.write_bytes(b"a live writer")
    assert stale_temporaries(tmp_path / "r.h5") == [stale]
    io.write_json(tmp_path / "r.h5", {"a": 1})
    assert not stale.exists() and mine.exists() and live.exists()


def test_protected_inputs_are_never_replaced(tmp_path):
    from recon.atomic import protected
    src = tmp_path / "in.h5"
    src.write_bytes(b"input")
    link = tmp_path / "link.h5"
    os.link(src, link)
    with protected(src):
        for target in (src, tmp_path / "." / "in.h5", link):
            with pytest.raises(ValueError, match="is the input file"):
                io.write_json(target, {"a": 1})
        with pytest.raises(ValueError, match="is the input file"):
            io.write_h5(src, {"x": np.zeros(1)})
        io.write_json(tmp_path / "out.json", {"a": 1})
    assert src.read_bytes() == b"input" and link.read_bytes() == b"input"
    with pytest.raises(ValueError, match="also another output"):
        io.check_output(tmp_path / "a.png", others=[tmp_path / "a.png"])
