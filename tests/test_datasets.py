"""Datasets: folders of fastMRI files into the submission layout, resumable, failures by name, torchrun-sharded
(identical to one process), and `recon evaluate` equal to fastMRI's evaluate.py."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.apps import datasets
from recon.cli import main
from recon.data.simulate import write_raw_fastmri

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = (("a.h5", 3, "CORPD_FBK"), ("b.h5", 1, "AXT2"), ("c.h5", 2, "CORPD_FBK"))
FAST = ["--sampler", "cg-sense", "--center-fraction", "0.2"]


def _folder(path: Path, corrupt: bool = True) -> Path:
    path.mkdir()
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    disc = ((xx ** 2 + yy ** 2) < 0.6).to(torch.complex64)
    for name, n, acq in VOLUMES:
        imgs = disc * (1 + 0.3 * torch.randn(n, 32, 32, generator=g)).to(torch.complex64)
        write_raw_fastmri(path / name, imgs, n_coils=2, encoded=(64, 40), recon=(32, 32), dead=(0, 0),
                          acquisition=acq, seed=len(name) + n)
    if corrupt:
        (path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really hdf5" * 64)
    return path


def _summary(out: Path) -> dict:
    return json.loads((out / datasets.SUMMARY).read_text())


def _status(out: Path) -> dict:
    return {v["name"]: v["status"] for v in _summary(out)["volumes"]}


def test_folder_with_a_corrupt_file_gives_submission_files_and_names_the_failure(tmp_path, capsys):
    src = _folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["--quiet", "reconstruct", str(src), "--out", f"{out}/", *FAST]) == datasets.FAILED_STATUS
    err = capsys.readouterr().err
    assert "broken.h5" in err and "corrupt" in err and "a.h5" not in err
    assert _status(out) == {"a.h5": "done", "b.h5": "done", "c.h5": "done", "broken.h5": "failed"}
    for name, n, acq in VOLUMES:
        with h5py.File(out / name, "r") as f:                      # plain h5py: the submission layout
            assert list(f) == ["reconstruction"]
            rec = f["reconstruction"][()]
            assert rec.dtype == np.float32 and rec.shape == (n, 32, 32) and np.isfinite(rec).all()
            assert f.attrs["acquisition"] == acq
    assert not (out / "broken.h5").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # only the corrupt file makes the status non-zero; a glob of the good files, with extras, exits 0
    out2 = tmp_path / "out2"
    assert main(["--quiet", "reconstruct", str(src / "[abc].h5"), "--out", f"{out2}/", "--extras", *FAST]) == 0
    with h5py.File(out2 / "a.h5", "r") as f:
        assert {"reconstruction", "samples", "mean", "std", "mask", "maps"} <= set(f)
        assert f["samples"].shape == (3, 1, 32, 32)
    # filters: the acquisition and the challenge
    out3 = tmp_path / "out3"
    assert main(["--quiet", "reconstruct", str(src / "a.h5"), str(src / "b.h5"), "--out", str(out3),
                 "--acquisition", "AXT2", *FAST]) == 0
    assert _status(out3) == {"a.h5": "filtered", "b.h5": "done"}
    assert main(["--quiet", "reconstruct", str(src / "b.h5"), "--out", f"{out3}/", "--challenge", "singlecoil",
                 *FAST]) == 0
    assert _status(out3) == {"b.h5": "filtered"}


def test_single_file_with_an_output_file_keeps_the_full_result_layout(tmp_path):
    src = _folder(tmp_path / "in", corrupt=False)
    assert main(["--quiet", "reconstruct", str(src / "b.h5"), "--out", str(tmp_path / "r.h5"), *FAST]) == 0
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert {"reconstruction", "samples", "mask", "maps"} <= set(f)
    assert main(["--quiet", "reconstruct", str(src), "--out", str(tmp_path / "r.h5"), *FAST]) == 2  # not a folder


def test_interrupted_run_resumes_with_only_the_missing_volumes(tmp_path):
    src = _folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    assert main(["--quiet", "reconstruct", str(src), "--out", f"{out}/", *FAST]) == 0
    kept = (out / "c.h5").read_bytes()
    # as a run killed midway leaves it: one volume missing, one torn output, a dead writer's temporary file
    (out / "a.h5").unlink()
    (out / "b.h5").write_bytes(b"torn")
    (out / ".a.tmp999999999.h5").write_bytes(b"partial")
    stamp = (out / "c.h5").stat().st_mtime_ns
    assert main(["--quiet", "reconstruct", str(src), "--out", f"{out}/", *FAST]) == 0
    assert _status(out) == {"a.h5": "done", "b.h5": "done", "c.h5": "skipped"}
    assert (out / "c.h5").read_bytes() == kept and (out / "c.h5").stat().st_mtime_ns == stamp
    assert not (out / ".a.tmp999999999.h5").exists()
    # other settings: every volume is recomputed
    assert main(["--quiet", "reconstruct", str(src), "--out", f"{out}/", *FAST, "--seed", "1"]) == 0
    assert set(_status(out).values()) == {"done"}


def test_evaluate_equals_fastmri_evaluate(tmp_path, capsys):
    import fastmri.evaluate as reference

    src = _folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    assert main(["--quiet", "reconstruct", str(src), "--out", f"{out}/", *FAST]) == 0
    assert main(["--quiet", "evaluate", "--target", str(src), "--predictions", str(out), "--challenge", "multicoil",
                 "--by", "acquisition", "--out", str(tmp_path / "scores")]) == 0
    assert "CORPD_FBK" in capsys.readouterr().out
    got = json.loads((tmp_path / "scores.json").read_text())
    for acq in (None, "CORPD_FBK"):
        ref = reference.evaluate(argparse.Namespace(target_path=src, predictions_path=out, acquisition=acq,
                                                    acceleration=None), "reconstruction_rss").means()
        mean = got["mean"] if acq is None else got["by"]["acquisition"][acq]
        for name in ("NMSE", "PSNR", "SSIM"):
            assert mean[name.lower()] == pytest.approx(np.asarray(ref[name]).item(), rel=1e-6, abs=1e-6), (acq, name)
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "file,acquisition,slices,nmse,psnr,ssim,perfect_match" and len(lines) == 4
    # a missing prediction is named and makes the status 1; the others are still scored
    (out / "b.h5").unlink()
    assert main(["--quiet", "evaluate", "--target", str(src), "--predictions", str(out)]) == 1
    assert "b.h5" in capsys.readouterr().err
    assert json.loads((out / "evaluation.json").read_text())["mean"]["volumes"] == 2


def test_shard_balances_slices_deterministically():
    assert datasets.shard([3, 1, 2], 2) == [[0], [1, 2]]
    assert datasets.shard([5, 5, 5, 5], 3) == [[0, 3], [1], [2]]
    parts = datasets.shard([40, 10, 30, 20, 35, 16], 3)
    loads = [sum([40, 10, 30, 20, 35, 16][i] for i in p) for p in parts]
    assert sorted(i for p in parts for i in p) == list(range(6)) and max(loads) - min(loads) <= 10
    assert datasets.shard([1, 2], 4) == [[1], [0], [], []]


def _recon(out: Path, launcher: list, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    cmd = launcher + ["-m", "recon", "--quiet", "reconstruct", str(src), "--out", f"{out}/", "--sampler", "dds",
                      "--steps", "2", "--center-fraction", "0.2", "--batch-slices", "2"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_torchrun_two_processes_equal_one_process(tmp_path):
    src = _folder(tmp_path / "in")
    one = _recon(tmp_path / "one", [sys.executable], src)
    assert one.returncode == datasets.FAILED_STATUS, one.stderr[-2000:]
    two = _recon(tmp_path / "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2"], src)
    assert two.returncode != 0 and "broken.h5" in two.stderr, two.stderr[-2000:]
    summary = _summary(tmp_path / "two")
    assert summary["world_size"] == 2
    ranks = {v["name"]: v["rank"] for v in summary["volumes"]}
    assert ranks["a.h5"] != ranks["c.h5"]                   # 3 slices vs 2 + 1: both ranks have work
    for name, _, _ in VOLUMES:
        with h5py.File(tmp_path / "one" / name, "r") as f1, h5py.File(tmp_path / "two" / name, "r") as f2:
            a, b = f1["reconstruction"][()], f2["reconstruction"][()]
            assert a.tobytes() == b.tobytes(), name
    shutil.rmtree(tmp_path / "in")
