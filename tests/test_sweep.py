"""recon sweep: one row per run, resumable after an interruption, split across torchrun ranks."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recon.apps import sweep
from recon.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, **extra):
    out = tmp_path / "sweep.csv"
    text = (f'out = "{out}"\nmasks = ["random", "poisson"]\naccelerations = [4]\n'
            f'methods = ["zero-filled", "cg-sense"]\nseeds = [0, 1]\nslices = "0:1"\n')
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    (tmp_path / "sweep.toml").write_text(text)
    return tmp_path / "sweep.toml", out


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_rows_and_resumes(tmp_path, monkeypatch):
    cfg, out = _config(tmp_path)
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    rows = _rows(out)
    assert len(rows) == 8 and out.with_suffix(".png").exists()
    psnr = {(r["mask"], r["seed"], r["method"]): float(r["psnr"]) for r in rows}
    for mask in ("random", "poisson"):
        for seed in ("0", "1"):
            assert psnr[(mask, seed, "cg-sense")] > psnr[(mask, seed, "zero-filled")] + 2
    # interrupt: keep the header and 3 rows, as if the run had died; the rerun completes only the rest
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:4]) + "\n")
    calls = []
    real = sweep.run_one
    monkeypatch.setattr(sweep, "run_one", lambda row, c, p: calls.append(row) or real(row, c, p))
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    assert len(calls) == 5 and len(_rows(out)) == 8
    assert _rows(out)[:3] == rows[:3]


@pytest.mark.parametrize("text,message", [("masks = [\n", "not valid TOML"),
                                          ('out = "x.csv"\nmasks = ["spiral"]\naccelerations = [4]\n'
                                           'methods = ["dds"]\n', "unknown mask"),
                                          ('out = "x.csv"\nmasks = ["random"]\naccelerations = [0.5]\n'
                                           'methods = ["dds"]\n', "acceleration must be >= 1"),
                                          ('out = "x.csv"\n', "missing")])
def test_bad_configs(tmp_path, capsys, text, message):
    (tmp_path / "c.toml").write_text(text)
    assert main(["sweep", str(tmp_path / "c.toml")]) == 2
    assert message in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "nope.toml")]) == 2


def test_sweep_split_across_two_ranks(tmp_path):
    cfg, out = _config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "recon.cli", "--quiet", "sweep", str(cfg)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == 8 and len({tuple(sorted(x.items())) for x in rows}) == 8
    assert not list(tmp_path.glob("sweep.csv.rank*"))
