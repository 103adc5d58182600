"""Hostile inputs, part C: declared CT sizes, inputs that used to be taken silently, and the edges of the one-line
promise (control characters in names, warnings, Ctrl-C, a full disk, a perfect score, reruns, non-Cartesian
files where only Cartesian ones are read).

The table runs ``recon`` through the contract runner of ``tests/test_fuzz_contract.py`` (exit 0 with a finite,
readable result, or exit 2 with exactly one ``recon: error:`` line, every input byte-identical afterwards) and
checks a word of the line. The cases that need more than the runner (subprocesses, patched writers, folders)
follow the table.
"""
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from recon.cli import main, one_line
from tests.test_fuzz_contract import _h5, run, work  # noqa: F401 (work is the shared fixture)

ROOT = Path(__file__).resolve().parents[1]


def _dicom(path, rows=8, cols=8, pixels=None, photometric="MONOCHROME2", samples=1):
    """A small CT DICOM file whose header may declare more than its pixel data hold."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    bits = 8 if samples > 1 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.ImagePositionPatient = [0, 0, 0]
    if pixels is None:
        pixels = np.full((8, 8) + ((samples,) if samples > 1 else ()), 1024, np.uint16)
    ds.PixelData = pixels.astype(np.uint8 if samples > 1 else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def hostile(work):
    d = work
    with h5py.File(d / "sim.h5") as f:
        k, rss, header = f["kspace"][()], f["reconstruction_rss"][()], f["ismrmrd_header"][()]
        attrs = dict(f.attrs)
    with h5py.File(d / "ct.h5") as f:
        img = f["image"][()]
    with h5py.File(d / "sino.h5") as f:
        sino, th = f["sinogram"][()], f["angles"][()]
    # CT: declared sizes
    _h5(d / "huge_grid.h5", sinogram=sino, angles=th, attrs={"image_size": 100000})
    with h5py.File(d / "huge_sino.h5", "w") as f:  # declared, never written: the file stays small
        f.create_dataset("sinogram", shape=(1, 30, 10 ** 9), dtype="f4")
        f.create_dataset("angles", data=np.linspace(0, 3, 30))
        f.attrs["image_size"] = 32
    with h5py.File(d / "huge_projector.h5", "w") as f:  # a 20000-pixel grid seen by 90 views x 28285 detectors
        f.create_dataset("sinogram", shape=(1, 90, 28285), dtype="f4")
        f.create_dataset("angles", data=np.linspace(0, np.pi, 90, endpoint=False))
        f.attrs["image_size"] = 20000
    _dicom(d / "huge.dcm", rows=60000, cols=60000)
    _dicom(d / "rgb.dcm", photometric="RGB", samples=3)
    # CT: silent inputs
    _h5(d / "zero_angles.h5", sinogram=sino, angles=np.zeros_like(th), attrs={"image_size": 32})
    _h5(d / "degree_angles.h5", sinogram=sino, angles=np.rad2deg(th) + 10, attrs={"image_size": 32})
    _h5(d / "plain_sino.h5", sinogram=sino, angles=th, attrs={"image_size": 32})  # no geometry attribute
    _h5(d / "huge_image.h5", image=np.full_like(img, 1e30))
    _h5(d / "hu_image.h5", image=(img - 1) * 1000)
    _h5(d / "negative_image.h5", image=np.full_like(img, -0.5))
    _h5(d / "loud_sino.h5", sinogram=sino * 1e30, angles=th, attrs={"image_size": 32})
    _h5(d / "negative_sino.h5", sinogram=-sino - 1, angles=th, attrs={"image_size": 32})
    # MRI: silent inputs
    _h5(d / "half_mask.h5", kspace=k, mask=np.full(k.shape[-1], 0.5, np.float32))
    _h5(d / "zero_k.h5", kspace=np.zeros_like(k), reconstruction_rss=rss, ismrmrd_header=header)
    zk = k.copy()
    zk[1] = 0
    _h5(d / "zero_slice.h5", kspace=zk, reconstruction_rss=rss, ismrmrd_header=header)
    _h5(d / "zero_ref.h5", kspace=k, reconstruction_rss=np.zeros_like(rss), ismrmrd_header=header,
        attrs={"max": float(attrs["max"])})
    _h5(d / "bad_header.h5", kspace=k, reconstruction_rss=rss, ismrmrd_header=np.bytes_(b"<ismrmrdHeader><oops"))
    _h5(d / "bad_header_no_target.h5", kspace=k, ismrmrd_header=np.bytes_(b"<ismrmrdHeader><oops"))
    # names with control characters (a copy of a file with NaN k-space, so that the error names it)
    with h5py.File(d / "nan_k.h5") as f:
        nan_k = f["kspace"][()]
    _h5(d / "new\nline.h5", kspace=nan_k)
    _h5(d / "esc\x1b[2Jname.h5", kspace=nan_k)
    # a non-Cartesian file
    assert main(["--quiet", "simulate", str(d / "radial.h5"), "--slices", "0:2", "--size", "32", "--coils", "2",
                 "--trajectory", "radial", "--spokes", "24"]) == 0
    (d / "sweep_radial.toml").write_text(f'out = "{d / "out_sweep_radial.csv"}"\nfiles = ["{d / "radial.h5"}"]\n'
                                         f'masks = ["random"]\naccelerations = [4]\nmethods = ["zero-filled"]\n'
                                         f'seeds = [0]\nslices = "0:1"\n')
    return d


CT = "reconstruct-ct {} --sampler fbp --out r_c.h5"
MRI = "reconstruct {} --sampler zero-filled --center-fraction 0.25 --out r_m.h5"
CASES = [
    # item 3: declared CT sizes against the memory budget, one line naming what would not fit
    (CT.format("huge_grid.h5"), 2, "image grid of 2 x 100000 x 100000"),
    (CT.format("huge_sino.h5"), 2, "'sinogram' of shape 1 x 30 x 1000000000"),
    ("--memory 16 " + CT.format("huge_projector.h5"), 2, "projector of a 20000 x 20000 grid"),
    ("--memory 16 " + CT.format("huge.dcm"), 2, "DICOM pixel data of 1 x 60000 x 60000"),
    # item 4, CT: inputs that were taken silently
    (CT.format("sino.h5") + " --views 60", 2, "--views 60"),
    (CT.format("sino.h5") + " --views 12", 2, "own 12 views"),
    (CT.format("sino.h5") + " --limited 0,120", 2, "--limited"),
    (CT.format("sino.h5") + " --geometry fan", 2, "geometry: parallel"),
    (CT.format("sino.h5") + " --geometry parallel", 0, ""),
    (CT.format("plain_sino.h5") + " --geometry fan", 0, ""),  # no geometry attribute: the option states it
    (CT.format("zero_angles.h5"), 2, "one direction"),
    (CT.format("degree_angles.h5"), 2, "radians"),
    (CT.format("huge_image.h5"), 2, "mu/mu_water"),
    (CT.format("hu_image.h5"), 2, "HU"),
    (CT.format("negative_image.h5"), 2, "negative everywhere"),
    (CT.format("loud_sino.h5"), 2, "line integrals"),
    (CT.format("negative_sino.h5"), 2, "negative everywhere"),
    (CT.format("rgb.dcm"), 2, "colour"),
    # item 4, MRI
    (MRI.format("half_mask.h5"), 2, "0 or 1"),
    (MRI.format("zero_k.h5"), 2, "k-space is all zero in slices 0, 1"),
    (MRI.format("zero_slice.h5"), 2, "all zero in slice 1"),
    (MRI.format("zero_slice.h5") + " --slices 0", 0, ""),
    ("uncertainty half_mask.h5 --samples 2 --steps 2 --out r_u.h5", 2, "0 or 1"),
    ("uncertainty zero_k.h5 --samples 2 --steps 2 --center-fraction 0.25 --out r_u.h5", 2, "all zero"),
    # item 5: the edges of the one-line promise
    (MRI.format("bad_header.h5"), 0, ""),
    (MRI.format("bad_header_no_target.h5"), 2, "ismrmrd_header cannot be read"),
    ("reconstruct 'new\nline.h5' --sampler zero-filled --out r_x.h5", 2, "new\\nline.h5"),
    ("reconstruct 'esc\x1b[2Jname.h5' --sampler zero-filled --out r_x.h5", 2, "esc\\x1b[2Jname.h5"),
    ("reconstruct 'missing\nfile.h5' --sampler zero-filled --out r_x.h5", 2, "missing\\nfile.h5: no such file"),
    ("uncertainty radial.h5 --samples 2 --steps 2 --out r_u.h5", 2, "recon uncertainty supports Cartesian"),
    ("calibrate radial.h5 --samples 2 --steps 2 --out out_cal.json", 2, "recon calibrate supports Cartesian"),
    ("sweep sweep_radial.toml", 2, "recon sweep supports Cartesian"),
]


@pytest.mark.parametrize("command,status,word", CASES)
def test_table(hostile, capsys, command, status, word):
    rc, _, err = run(hostile, capsys, command)
    assert rc == status, (command, err)
    assert word in err, (command, err)


def test_one_line_escapes_every_control_character():
    assert one_line("a\nb\rc\td\x1be\x00f\u2028g\x85h") == "a\\nb\\rc\\td\\x1be\\x00f\\u2028g\\x85h"
    assert one_line("ünïcode stays, spaces too") == "ünïcode stays, spaces too"
    assert len(one_line("line one\nline two").splitlines()) == 1


def test_a_reference_that_is_all_zero_is_not_scored_and_said_so(hostile, capsys):
    with pytest.warns(UserWarning, match="reconstruction_rss is all zero in slices 0, 1.*without metrics"):
        rc, out, _ = run(hostile, capsys, MRI.format("zero_ref.h5").replace("r_m.h5", "r_zref.h5"))
    assert rc == 0 and "PSNR" not in out
    with h5py.File(hostile / "r_zref.h5") as f:
        assert "metrics" not in f.attrs and "psnr" not in f.attrs and np.isfinite(f["reconstruction"][()]).all()


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, even where the tests run as a background job


def _recon(*args):
    return subprocess.Popen([sys.executable, "-m", "recon", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)


def test_a_warning_is_one_clean_line(hostile, tmp_path):
    """A garbage ismrmrd_header (the file has a target, so the header is not needed) exits 0 with one warning
    line instead of Python's two-line warning with its source line."""
    p = _recon("--quiet", "reconstruct", str(hostile / "bad_header.h5"), "--sampler", "zero-filled",
               "--center-fraction", "0.25", "--out", str(tmp_path / "r.h5"))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("recon: warning: ")]
    assert len(err.splitlines()) == 1 and "unreadable ismrmrd_header" in err, err


def _importing_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("when", ["importing", 0.5, 1.5, "working"])
def test_ctrl_c_at_any_time_is_one_line_and_status_130(hostile, tmp_path, when):
    """SIGINT while torch is being imported (start-up), at fixed times, or during the work: no traceback, one
    line, exit status 130, no output file and no temporary file."""
    out = tmp_path / "r.h5"
    args = ["reconstruct", str(hostile / "sim.h5"), "--sampler", "dds", "--steps", "1000", "--center-fraction",
            "0.25", "--out", str(out)]
    p = _recon(*(["--quiet"] if when != "working" else []), *args)
    if when == "importing":
        if not Path(f"/proc/{p.pid}/maps").exists():
            p.kill()
            pytest.skip("needs /proc to see the start-up")
        deadline = time.time() + 60
        while not _importing_torch(p.pid) and p.poll() is None and time.time() < deadline:
            time.sleep(0.002)
    elif when == "working":  # the command says which compute path it takes once it runs: then interrupt it
        first = p.stderr.readline()
        assert first and not first.startswith("recon: error"), first
        time.sleep(1.0)
    else:
        time.sleep(when)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.endswith("recon: interrupted\n") and err.count("recon:") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".r.tmp*"))


def test_the_console_script_is_the_light_entry_point():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'recon = "recon.__main__:main"' in text
    code = "import sys, recon.__main__; print('torch' in sys.modules, 'recon.cli' in sys.modules)"
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert got.stdout.split() == ["False", "False"], got  # importing the entry imports nothing heavy


H5PY_FULL = ("Can't synchronously write data (file write failed: time = Mon Jan  1 00:00:00 2024\n, filename = "
             "'x', file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, total "
             "write size = 4096, bytes this sub-write = 4096, bytes actually written = 18446744073709551615, "
             "offset = 0)")


def test_a_full_disk_is_one_line_naming_the_file(hostile, capsys, monkeypatch, tmp_path):
    def full(self, *args, **kw):
        raise OSError(H5PY_FULL)

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    out = tmp_path / "full.h5"
    rc, _, err = run(hostile, capsys, MRI.format("sim.h5").replace("r_m.h5", str(out)))
    assert rc == 2 and f"cannot write {out}: no space left on device (errno ENOSPC)" in err, err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_write_failures_of_every_writer_name_the_file_and_the_cause(tmp_path, monkeypatch):
    from recon.data import results as io
    from recon.atomic import atomic_path

    def enospc(self, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", enospc)
        with pytest.raises(OSError, match=r"cannot write .*r\.json: no space left on device") as e:
            io.write_json(tmp_path / "r.json", {"a": 1})
        assert e.value.errno == errno.ENOSPC
    (tmp_path / "rows.csv").write_text("a\n")
    with monkeypatch.context() as m:
        m.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.EDQUOT, "Disk quota exceeded")))
        with pytest.raises(OSError, match=r"rows\.csv: disk quota exceeded"):
            io.append_csv_row(tmp_path / "rows.csv", {"a": 1}, ["a"])
    # torch.save words a full disk as a RuntimeError without an errno: the folder's free space tells
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=100, used=100, free=0))
        with pytest.raises(OSError, match=r"ckpt\.pt: no space left on device"):
            with atomic_path(tmp_path / "ckpt.pt") as tmp:
                raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    # other failures are left as they are
    with pytest.raises(RuntimeError, match="a bug"):
        with atomic_path(tmp_path / "x.h5"):
            raise RuntimeError("a bug")
    assert sorted(os.listdir(tmp_path)) == ["rows.csv"]


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_evaluate_scores_a_perfect_prediction(hostile, tmp_path, capsys):
    """PSNR is infinite where the prediction equals the target (fastMRI's evaluate reports inf): the volume is
    scored, marked perfect_match, and the files stay valid JSON and finite CSV."""
    import csv

    target, pred = tmp_path / "target", tmp_path / "pred"
    target.mkdir()
    pred.mkdir()
    shutil.copy(hostile / "sim.h5", target / "a.h5")
    shutil.copy(hostile / "sim.h5", target / "b.h5")
    with h5py.File(hostile / "sim.h5") as f:
        rss = f["reconstruction_rss"][()]
    _h5(pred / "a.h5", reconstruction=rss)
    _h5(pred / "b.h5", reconstruction=rss * 0.9)
    before = {p: p.read_bytes() for p in target.iterdir()}
    capsys.readouterr()
    assert main(["--quiet", "evaluate", "--target", str(target), "--predictions", str(pred), "--out",
                 str(tmp_path / "scores")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "inf" in out and "1 perfect match" in out
    got = _strict_json((tmp_path / "scores.json").read_text())
    a, b = got["volumes"]
    assert a["perfect_match"] is True and a["psnr"] is None and a["nmse"] == 0 and a["ssim"] == pytest.approx(1)
    assert b["perfect_match"] is False and math.isfinite(b["psnr"])
    assert got["mean"]["psnr"] is None and got["mean"]["perfect_matches"] == 1 and got["mean"]["nmse"] > 0
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["perfect_match"] for r in rows] == ["True", "False"] and rows[0]["psnr"] == ""
    assert math.isfinite(float(rows[1]["psnr"]))
    assert {p: p.read_bytes() for p in target.iterdir()} == before
    # a target that is all zero cannot be scored: named, the others still scored, status 1
    _h5(target / "c.h5", reconstruction_rss=np.zeros_like(rss))
    _h5(pred / "c.h5", reconstruction=rss)
    assert main(["--quiet", "evaluate", "--target", str(target), "--predictions", str(pred)]) == 1
    assert "c.h5: reconstruction_rss is all zero" in capsys.readouterr().err


def test_a_dataset_run_with_its_output_inside_the_input_folder_can_be_rerun(hostile, tmp_path, capsys):
    src = tmp_path / "data"
    src.mkdir()
    for name in ("a.h5", "b.h5"):
        shutil.copy(hostile / "sim.h5", src / name)
    inputs = {p: p.read_bytes() for p in src.iterdir()}
    fast = ["--sampler", "zero-filled", "--center-fraction", "0.25"]
    for attempt in range(2):
        assert main(["--quiet", "reconstruct", str(src), *fast, "--out", f"{src / 'out'}/"]) == 0, \
            capsys.readouterr().err
        summary = json.loads((src / "out" / "recon_summary.json").read_text())
        assert {v["name"]: v["status"] for v in summary["volumes"]} == \
            ({"a.h5": "done", "b.h5": "done"} if attempt == 0 else {"a.h5": "skipped", "b.h5": "skipped"})
    # other settings: the outputs inside the input folder are recomputed, still not read as inputs
    assert main(["--quiet", "reconstruct", str(src), *fast, "--seed", "1", "--out", f"{src / 'out'}/"]) == 0
    # a glob that also finds the output folder, and the outputs of another run in a second output folder
    assert main(["--quiet", "reconstruct", str(src / "*"), *fast, "--out", f"{src / 'out2'}/"]) == 0
    assert main(["--quiet", "reconstruct", str(src / "*"), *fast, "--out", f"{src / 'out3'}/"]) == 0
    summary = json.loads((src / "out3" / "recon_summary.json").read_text())
    assert sorted(v["name"] for v in summary["volumes"]) == ["a.h5", "b.h5"]
    assert {p: p.read_bytes() for p in inputs} == inputs
    # only outputs: nothing to reconstruct, said so
    assert main(["--quiet", "reconstruct", str(src / "out"), *fast, "--out", f"{tmp_path / 'x'}/"]) == 2
    assert "outputs of dataset runs left out" in capsys.readouterr().err


def test_a_dataset_run_names_a_non_cartesian_file(hostile, tmp_path, capsys):
    assert main(["--quiet", "reconstruct", str(hostile / "radial.h5"), str(hostile / "sim.h5"), "--sampler",
                 "zero-filled", "--center-fraction", "0.25", "--out", f"{tmp_path}/"]) == 1
    err = capsys.readouterr().err
    assert "radial.h5 holds non-Cartesian samples" in err and (tmp_path / "sim.h5").exists()


def test_ct_python_api_refuses_a_limited_angle_on_a_measured_sinogram(hostile, tmp_path):
    from recon.pipelines.ct import CTSettings, reconstruct_file

    with pytest.raises(ValueError, match="own 12 views"):
        reconstruct_file(hostile / "sino.h5", tmp_path / "r.h5", CTSettings(method="fbp", views=None,
                                                                            limited=(0, 120)), progress=False)
    res = reconstruct_file(hostile / "sino.h5", tmp_path / "r.h5", CTSettings(method="fbp"), progress=False)
    with h5py.File(res["out"]) as f:
        assert f["angles"].shape == (12,)


def test_dicom_checks(hostile):
    from recon import memory
    from recon.data import ct

    with pytest.raises(ValueError, match=r"rgb\.dcm: a colour DICOM image \(PhotometricInterpretation RGB"):
        ct.read_dicom(hostile / "rgb.dcm")
    with memory.budget(16), pytest.raises(ValueError, match="memory budget"):
        ct.read_dicom(hostile / "huge.dcm")
    series = hostile / "series"
    series.mkdir()
    for i in range(3):  # 3 slices of 8 x 8: the series' total is what is checked
        _dicom(series / f"s{i}.dcm")
    assert ct.read_dicom(series).shape == (3, 8, 8)
    with memory.budget(3 * 64 * 10 / memory.GIB - 1e-12), pytest.raises(ValueError, match="series up to this file"):
        ct.read_dicom(series)
