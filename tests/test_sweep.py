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
                                           'methods = ["dds"]\n', "acceleration must be a finite number >= 1"),
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


def test_sweep_keys_and_values_are_checked(tmp_path, capsys):
    base = ('out = "{out}"\nmasks = ["random"]\naccelerations = [4]\nmethods = ["zero-filled"]\n')
    out = tmp_path / "s.csv"
    for extra, message in (("acclerations = [2]\n", "unknown key 'acclerations'.*did you mean 'accelerations'"),
                           ("seeds = []\n", "seeds must be a non-empty list"),
                           ("seeds = [1.5]\n", r"seed must be an integer.*\(in seeds\)"),
                           ("slices = \"2:1\"\n", "slices must be a range"),
                           ("center_fraction = 1.5\n", "center_fraction must be"),
                           ("files = [\"nope.h5\"]\n", "nope.h5: no such file"),
                           ("[steps]\nddss = 3\n", "unknown method 'ddss' in \\[steps\\]; did you mean 'dds'"),
                           ("[steps]\ndds = 0\n", "steps.dds must be an integer >= 1"),
                           ("[steps]\ncg-sense = 3\n", "takes no steps")):
        (tmp_path / "c.toml").write_text(base.format(out=out) + extra)
        assert main(["--quiet", "sweep", str(tmp_path / "c.toml")]) == 2
        err = capsys.readouterr().err
        assert err.count("recon: error:") == 1 and __import__("re").search(message, err), (extra, err)
    for text, message in (('out = "{out}"\nmasks = []\naccelerations = [4]\nmethods = ["tv"]\n', "non-empty list"),
                          ('out = "{out}"\nmasks = "random"\naccelerations = [4]\nmethods = ["tv"]\n', "list"),
                          ('out = "{out}"\nmasks = ["random"]\naccelerations = ["4"]\nmethods = ["tv"]\n',
                           "acceleration must be a finite number"),
                          ('out = "{out}"\nmasks = ["random", "random"]\naccelerations = [4]\nmethods = ["tv"]\n',
                           "more than once"),
                          ('out = "x.png"\nmasks = ["random"]\naccelerations = [4]\nmethods = ["tv"]\n', ".csv")):
        (tmp_path / "c.toml").write_text(text.format(out=out))
        assert main(["--quiet", "sweep", str(tmp_path / "c.toml")]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_torn_row_is_reported_and_recomputed_and_a_changed_setting_gives_new_rows(tmp_path, capsys):
    cfg, out = _config(tmp_path)
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    rows = _rows(out)
    assert len(rows) == 8 and len({r["settings_hash"] for r in rows}) == 8
    for r in rows:  # each row carries the settings that made it, and its key is their hash
        settings = __import__("json").loads(r["settings"])
        assert sweep.settings_hash(settings) == r["settings_hash"] and settings["mask"] == r["mask"]
    # a power cut in the middle of the last row, and a corrupted row in the middle
    lines = out.read_text().splitlines()
    lines[3] = lines[3].replace(rows[2]["psnr"], "garbage")
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    capsys.readouterr()
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "line 9 is torn" in err and "line 4 is psnr is not a number" in err, err
    again = _rows(out)
    assert sorted(r["settings_hash"] for r in again) == sorted(r["settings_hash"] for r in rows)
    assert (tmp_path / "sweep.csv.rejected").read_text().count("\n") == 2
    # a changed setting: the classical rows are unchanged, a DDS step count gives new rows, nothing is lost
    cfg.write_text(cfg.read_text().replace('["zero-filled", "cg-sense"]', '["zero-filled", "dds"]') +
                   "[steps]\ndds = 2\n")
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    cfg.write_text(cfg.read_text().replace("dds = 2", "dds = 3"))
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    final = _rows(out)
    assert len(final) == 8 + 4 + 4 and len({r["settings_hash"] for r in final}) == len(final)
    dds = [r for r in final if r["method"] == "dds"]
    assert sorted(int(r["steps"]) for r in dds) == [2] * 4 + [3] * 4
    assert all(__import__("json").loads(r["settings"])["sampler"]["steps"] == int(r["steps"]) for r in dds)
    # an old-layout file (no settings columns) keeps its rows, which are recomputed
    old = tmp_path / "old.csv"
    old.write_text("source,slice,mask,acceleration,method,seed,actual_acceleration,psnr,ssim,nmse,nfe,seconds\n"
                   "heldout,0,random,4.0,zero-filled,0,3.9,20.0,0.5,0.1,0,0.1\n")
    cfg.write_text(cfg.read_text().replace(str(out), str(old)))
    assert main(["--quiet", "sweep", str(cfg)]) == 0
    assert "older layout" in capsys.readouterr().err and len(_rows(old)) == 1 + 8
