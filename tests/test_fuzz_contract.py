"""The bad-input contract, enforced on every ``recon`` subcommand and the main public constructors.

Contract (README, ``recon.cli``): a command either exits 0 with a finite, readable result, or exits 2 with exactly
one ``recon: error:`` line (no traceback, no "internal error"), and every input file is byte-identical afterwards.
A public constructor or function either returns a finite result or raises ValueError/TypeError with a message.

A table of hand-picked hostile inputs (``CASES``) plus Hypothesis-generated command lines and constructor
arguments; all on tiny inputs (a 2-slice 32 x 32 simulated file, 2-3 sampler steps) so the suite stays fast.
``RECON_FUZZ_EXAMPLES=500`` runs a longer, randomised Hypothesis search.
"""
import hashlib
import json
import math
import os
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from recon.cli import main

DEEP = int(os.environ.get("RECON_FUZZ_EXAMPLES", "0"))  # e.g. 500: a longer, randomised search (not in CI)
HYPOTHESIS = settings(max_examples=DEEP or 25, deadline=None, database=None, derandomize=not DEEP,
                      suppress_health_check=list(HealthCheck))


# --- the inputs -------------------------------------------------------------------------------------------------
def _h5(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
        for k, v in attrs.items():
            f.attrs[k] = v


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    assert main(["--quiet", "simulate", str(d / "sim.h5"), "--slices", "0:2", "--size", "32", "--coils", "2"]) == 0
    with h5py.File(d / "sim.h5") as f:
        k, rss = f["kspace"][()], f["reconstruction_rss"][()]
    from recon.data import phantoms
    img = phantoms.hu_to_mu(phantoms.ct_phantom_stack(2, 32, torch.Generator().manual_seed(0)))  # mu/mu_water
    img = img.numpy().astype(np.float32)
    _h5(d / "ct.h5", image=img)
    from operators.ct import ParallelBeamCT, angles
    th = angles(views=12)
    sino = ParallelBeamCT(32, th)(torch.from_numpy(img)).numpy()
    _h5(d / "sino.h5", sinogram=sino, angles=th.numpy(), attrs={"geometry": "parallel", "image_size": 32})
    bad_k = k.copy()
    bad_k[0, 0, 0, 0] = np.nan
    _h5(d / "nan_k.h5", kspace=bad_k)
    _h5(d / "real_k.h5", kspace=k.real)
    _h5(d / "no_k.h5", image=img)
    _h5(d / "zero_mask.h5", kspace=k, mask=np.zeros(32, np.float32))
    bad_t = rss.copy()
    bad_t[1] = np.inf
    _h5(d / "nan_target.h5", kspace=k, reconstruction_rss=bad_t)
    _h5(d / "nan_max.h5", kspace=k, reconstruction_rss=rss, attrs={"max": np.nan})
    nan_img = img.copy()
    nan_img[0, 3, 3] = np.nan
    _h5(d / "nan_ct.h5", image=nan_img)
    _h5(d / "bad_angles.h5", sinogram=sino, angles=th.numpy()[:5], attrs={"image_size": 32})
    _h5(d / "bad_geometry.h5", sinogram=sino, angles=th.numpy(), attrs={"geometry": "cone", "image_size": 32})
    _h5(d / "bad_size.h5", sinogram=sino, angles=th.numpy(), attrs={"image_size": -3})
    _h5(d / "no_size.h5", sinogram=sino, angles=th.numpy())
    (d / "garbage.h5").write_bytes(b"not an hdf5 file")
    (d / "empty.h5").write_bytes(b"")
    rng = np.random.default_rng(0)
    np.save(d / "img.npy", rng.random((32, 32)).astype(np.float32))
    np.save(d / "zeros.npy", np.zeros((32, 32), np.float32))
    np.save(d / "nan.npy", np.full((32, 32), np.nan, np.float32))
    np.save(d / "cube.npy", np.zeros((2, 32, 32), np.float32))
    np.save(d / "tiny.npy", np.ones((4, 4), np.float32))
    np.save(d / "ints.npy", (rng.random((32, 32)) * 255).astype(np.int16))
    torch.save({"a": 1}, d / "dict.pt")
    torch.save(torch.rand(32, 32), d / "img.pt")
    (d / "img.png").write_bytes(b"\x89PNG not really")
    (d / "sweep.toml").write_text(f'out = "{d / "sweep.csv"}"\nmasks = ["random"]\naccelerations = [4]\n'
                                  f'methods = ["zero-filled"]\nseeds = [0]\nslices = "0:1"\n')
    train = {"out": str(d / "prior"), "data": "ct-phantoms", "image_size": 16, "channels": "real",
             "network": {"name": "unet", "base": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": []},
             "batch_size": 2, "steps": 1, "ckpt_every": 1, "sample_every": 0, "amp": False, "warmup": 1}
    (d / "train.json").write_text(json.dumps(train))
    (d / "notjson.json").write_text("{out: nope")
    (d / "list.json").write_text("[1, 2]")
    for name, change in (("typo.json", {"stpes": 3}), ("steps0.json", {"steps": 0}), ("lr.json", {"lr": "fast"}),
                         ("nanlr.json", {"lr": float("nan")}), ("loss.json", {"loss": "l2"}),
                         ("size.json", {"image_size": 3}), ("seed.json", {"seed": -1}),
                         ("amp.json", {"amp": "yes"}), ("sigma.json", {"sigma_min": 5.0, "sigma_max": 1.0})):
        (d / name).write_text(json.dumps({**train, **change}))
    (d / "folder").mkdir()
    (d / "subm").mkdir()
    return d


def _digest(path: Path) -> str:
    if path.is_dir():
        return "dir"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(work: Path) -> dict:
    """Every input file of the work folder (outputs are named out_*, r_* or are a sweep's CSV and figure)."""
    return {p: _digest(p) for p in sorted(work.iterdir()) if p.is_file() and p.suffix in (".h5", ".npy", ".pt",
                                                                                          ".toml", ".json")
            and not p.name.startswith(("out", "r_"))} | {work / "img.png": _digest(work / "img.png")}


def _check_result(path: Path) -> None:
    """An output of a successful command: readable and finite."""
    assert path.exists() and path.stat().st_size > 0, path
    if path.suffix == ".h5":
        with h5py.File(path) as f:
            for key, ds in f.items():
                if isinstance(ds, h5py.Dataset) and ds.dtype.kind in "fc":
                    assert np.isfinite(ds[()]).all(), (path, key)
            for key, v in f.attrs.items():
                if isinstance(v, (float, np.floating)):
                    assert math.isfinite(v), (path, key)
    elif path.suffix == ".png":
        import matplotlib.image as mpimg
        assert np.isfinite(mpimg.imread(str(path))).all()
    elif path.suffix == ".csv":
        import csv
        with open(path) as f:
            rows = list(csv.DictReader(f))
        assert rows and all(math.isfinite(float(r["psnr"])) for r in rows)


def _outputs(argv) -> list:
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "--png")]
    if argv[0] == "simulate":
        outs.append(argv[1])
    return [Path(o) for o in outs]


def run(work: Path, capsys, command: str):
    """Run ``recon --quiet COMMAND`` (NAME words resolved in the work folder) and assert the contract."""
    argv = [str(work / a) + ("/" if a.endswith("/") else "") if (work / a).exists() or a.startswith(("out", "r_"))
            else a for a in shlex.split(command)]
    before = _inputs(work)
    capsys.readouterr()
    rc = main(["--quiet"] + argv)
    out, err = capsys.readouterr()
    assert rc in (0, 2), (command, rc, err)
    assert "Traceback" not in err and "internal error" not in err, (command, err)
    if rc == 2:
        lines = [line for line in err.splitlines() if line.startswith("recon: error:")]
        assert len(lines) == 1 and err.endswith("\n") and lines[0] == err.splitlines()[-1], (command, err)
        assert len(lines[0]) > len("recon: error: ") + 10, (command, err)
    else:
        for o in _outputs(argv):
            _check_result(o)
    after = {p: _digest(p) for p in before}
    changed = [p.name for p in before if before[p] != after[p]]
    assert not changed, (command, changed)
    return rc, out, err


# --- the table: (command, expected exit status, a word the error must contain) ---------------------------------
REC = "reconstruct sim.h5 --sampler zero-filled --center-fraction 0.25 --out r_mri.h5"
CT = "reconstruct-ct ct.h5 --sampler fbp --out r_ct.h5"
UNC = "uncertainty sim.h5 --samples 2 --steps 2 --center-fraction 0.25 --out r_unc.h5"
CASES = [
    # reconstruct: values of every option
    (REC, 0, ""), (REC + " --png out_rec.png", 0, ""),
    ("reconstruct sim.h5 --sampler dds --steps 2 --center-fraction 0.25 --out r_dds.h5", 0, ""),
    ("reconstruct sim.h5 --sampler cg-sense --slices 1 --center-fraction 0.25 --out r_cg.h5", 0, ""),
    ("reconstruct sim.h5 --sampler tv --mask gaussian2d --acceleration 1.5 --out r_tv.h5", 0, ""),
    ("reconstruct sim.h5 --sampler l1-wavelet --mask uniform2d --acceleration 1.5 --out r_l1.h5", 0, ""),
    ("reconstruct sim.h5 --sampler score-ald --steps 2 --center-fraction 0.25 --out r_ald.h5", 0, ""),
    ("reconstruct sim.h5 --sampler dds --steps 2 --samples 2 --center-fraction 0.25 --out r_dds2.h5", 0, ""),
    (REC + " --steps 0", 2, "steps"), (REC + " --steps -3", 2, "steps"), (REC + " --steps 100000", 2, "steps"),
    (REC + " --steps 2.5", 2, "--steps"), (REC + " --acceleration inf", 2, "acceleration"),
    (REC + " --acceleration nan", 2, "acceleration"), (REC + " --acceleration 0.5", 2, "acceleration"),
    (REC + " --acceleration 1e9", 2, "acceleration"), (REC + " --acceleration 100", 2, "not reachable"),
    (REC + " --acceleration four", 2, "--acceleration"), (REC + " --center-fraction 0", 2, "center_fraction"),
    (REC + " --center-fraction 1.5", 2, "center_fraction"), (REC + " --center-fraction=-inf", 2, "center_fraction"),
    (REC + " --slices 0:99", 2, "outside"), (REC + " --slices 5", 2, "out of range"), (REC + " --slices -3", 2, "range"),
    (REC + " --slices 1:1", 2, "empty"), (REC + " --slices a:b", 2, "slices"), (REC + " --slices 0:1:2", 2, "slices"),
    (REC + " --slices -1", 0, ""), (REC + " --seed -1", 2, "seed"), (REC + " --seed 99999999999", 2, "seed"),
    (REC + " --samples 0", 2, "samples"), (REC + " --samples 5000", 2, "samples"), (REC + " --mask spiral", 2, "mask"),
    (REC + " --mask randm", 2, "did you mean 'random'"), ("reconstruct sim.h5 --sampler ddss --out r_x.h5", 2, "dds"),
    (REC + " --mask equispaced --acceleration 2.5", 2, "integer"), (REC + " --mask poisson --acceleration 1", 2, "> 1"),
    (REC + " --device gpu", 2, "device"), (REC + " --device cuda:7", 2, "cuda"), (REC + " --protocol crop", 2, "protocol"),
    (REC + " --normalization bogus", 2, "normalization"), (REC + " --prior bundled:nope", 2, "nope"),
    ("reconstruct sim.h5 --sampler dds --steps 2 --prior sim.h5 --out r_x.h5", 2, "sim.h5"),
    ("reconstruct sim.h5 --sampler dds --steps 2 --prior folder --out r_x.h5", 2, "folder"),
    ("reconstruct sim.h5 --sampler score-mri --steps 1 --out r_x.h5", 2, "steps"),
    # reconstruct: outputs
    ("reconstruct sim.h5 --sampler zero-filled --out sim.h5", 2, "input file"),
    ("reconstruct sim.h5 --sampler zero-filled --out ./sim.h5", 2, "input file"),
    (REC + " --png sim.h5", 2, "--png"), (REC + " --png r_mri.h5", 2, "--png"),
    (REC + " --png out_same.png --out out_same.png", 2, "another output"),
    ("reconstruct sim.h5 --sampler zero-filled --out folder", 2, "directory"),
    ("reconstruct sim.h5 --sampler zero-filled --out nofolder/x.h5", 2, "does not exist"),
    # reconstruct: file contents
    ("reconstruct missing.h5 --sampler zero-filled --out r_x.h5", 2, "no such file"),
    ("reconstruct folder --sampler zero-filled --out r_x.h5", 2, "directory"),
    ("reconstruct garbage.h5 --sampler zero-filled --out r_x.h5", 2, "HDF5"),
    ("reconstruct empty.h5 --sampler zero-filled --out r_x.h5", 2, "HDF5"),
    ("reconstruct nan_k.h5 --sampler zero-filled --out r_x.h5", 2, "NaN"),
    ("reconstruct real_k.h5 --sampler zero-filled --out r_x.h5", 2, "complex"),
    ("reconstruct no_k.h5 --sampler zero-filled --out r_x.h5", 2, "kspace"),
    ("reconstruct zero_mask.h5 --sampler zero-filled --out r_x.h5", 2, "mask"),
    ("reconstruct nan_target.h5 --sampler zero-filled --out r_x.h5", 2, "NaN"),
    ("reconstruct nan_max.h5 --sampler zero-filled --out r_x.h5", 2, "max"),
    ("reconstruct ct.h5 --sampler zero-filled --out r_x.h5", 2, "kspace"),
    ("reconstruct", 2, "file"), ("reconstruct sim.h5 --bogus 1", 2, "--bogus"), ("bogus", 2, "invalid choice"),
    ("", 2, "command"),
    # reconstruct-ct
    (CT, 0, ""), (CT + " --png out_ct.png", 0, ""), ("reconstruct-ct ct.h5 --sampler tv --views 8 --out r_tv.h5", 0, ""),
    ("reconstruct-ct ct.h5 --sampler dds --steps 2 --views 8 --out r_ctdds.h5", 0, ""),
    ("reconstruct-ct ct.h5 --sampler fbp --geometry fan --views 16 --out r_fan.h5", 0, ""),
    ("reconstruct-ct ct.h5 --sampler fbp --noise poisson --noise-level 1e5 --out r_p.h5", 0, ""),
    ("reconstruct-ct ct.h5 --sampler fbp --noise gaussian --noise-level 0.1 --out r_g.h5", 0, ""),
    ("reconstruct-ct ct.h5 --sampler fbp --limited 0,120 --out r_lim.h5", 0, ""),
    ("reconstruct-ct sino.h5 --sampler fbp --out r_sino.h5", 0, ""),
    (CT + " --noise poisson --noise-level 1e5 --pixel-mm 0", 2, "pixel_mm"),
    (CT + " --noise poisson --noise-level 1e5 --pixel-mm nan", 2, "pixel_mm"),
    (CT + " --noise poisson --noise-level inf", 2, "noise_level"),
    (CT + " --noise poisson --noise-level 0", 2, "noise_level"),
    (CT + " --noise poisson --noise-level 1e300", 2, "noise_level"),
    (CT + " --noise gaussian --noise-level inf", 2, "noise_level"),
    (CT + " --noise gaussian --noise-level -1", 2, "noise_level"), (CT + " --noise-level 5", 2, "noise"),
    (CT + " --noise laplace", 2, "--noise"), (CT + " --limited 0,100000", 2, "limited"),
    (CT + " --limited 90,10", 2, "limited"), (CT + " --limited 0,nan", 2, "limited"), (CT + " --limited 0", 2, "limited"),
    (CT + " --limited a,b", 2, "limited"), (CT + " --limited 0,120 --views 10", 2, "not both"),
    (CT + " --views 0", 2, "views"), (CT + " --views 1000000", 2, "views"), (CT + " --tv-z -1", 2, "tv_z"),
    (CT + " --tv-z nan", 2, "tv_z"), ("reconstruct-ct ct.h5 --sampler sart --out r_x.h5", 2, "sart"),
    (CT + " --geometry cone", 2, "--geometry"), (CT + " --slices 0:9", 2, "outside"), (CT + " --steps 0", 2, "steps"),
    ("reconstruct-ct ct.h5 --sampler fbp --out ct.h5", 2, "input file"), (CT + " --png ct.h5", 2, "--png"),
    ("reconstruct-ct nan_ct.h5 --sampler fbp --out r_x.h5", 2, "NaN"),
    ("reconstruct-ct bad_angles.h5 --sampler fbp --out r_x.h5", 2, "angles"),
    ("reconstruct-ct bad_geometry.h5 --sampler fbp --out r_x.h5", 2, "geometry"),
    ("reconstruct-ct bad_size.h5 --sampler fbp --out r_x.h5", 2, "image_size"),
    ("reconstruct-ct no_size.h5 --sampler fbp --out r_x.h5", 2, "image_size"),
    ("reconstruct-ct sino.h5 --sampler fbp --noise gaussian --noise-level 1 --out r_x.h5", 2, "sinogram"),
    ("reconstruct-ct garbage.h5 --sampler fbp --out r_x.h5", 2, "HDF5"),
    ("reconstruct-ct sim.h5 --sampler fbp --out r_x.h5", 2, "image"),
    ("reconstruct-ct missing.h5 --sampler fbp --out r_x.h5", 2, "no such file"),
    # uncertainty
    (UNC, 0, ""), (UNC + " --png out_unc.png", 0, ""), (UNC + " --level 2", 2, "level"),
    (UNC + " --level nan", 2, "level"), (UNC + " --level 0", 2, "level"), (UNC + " --slice 9", 2, "range"),
    ("uncertainty sim.h5 --samples 1 --steps 2 --out r_x.h5", 2, "2 samples"),
    ("uncertainty sim.h5 --sampler cg-sense --out r_x.h5", 2, "classical"),
    ("uncertainty sim.h5 --samples 2 --steps 2 --out sim.h5", 2, "input file"),
    (UNC + " --png r_unc.h5", 2, "--png"), (UNC + " --acceleration inf", 2, "acceleration"),
    ("uncertainty nan_k.h5 --samples 2 --steps 2 --out r_x.h5", 2, "NaN"),
    (UNC + " --calibration missing.json", 2, "no such file"), (UNC + " --calibration ct.h5", 2, "JSON"),
    # calibrate, evaluate and dataset runs (their partial failures exit 1 by design; these inputs give 0 or 2)
    ("calibrate sim.h5 --samples 2 --steps 2 --out sim.h5", 2, "--out"),
    ("calibrate sim.h5 --level 2 --out out_cal.json", 2, "level"),
    ("calibrate sim.h5 --samples 1 --out out_cal.json", 2, "samples"),
    ("calibrate sim.h5 --samples 2 --steps 2 --method crc --out out_cal.json", 2, "slices"),
    ("calibrate sim.h5 --samples 2 --steps 2 --slices 0 --out out_cal.json", 2, "at least 2 slices"),
    ("calibrate sim.h5 --method bonferroni --out out_cal.json", 2, "method"),
    ("calibrate sim.h5 --sampler cg-sense --out out_cal.json", 2, "classical"),
    ("calibrate missing.h5 --out out_cal.json", 2, "missing.h5"),
    ("evaluate --target folder --predictions folder", 2, "no .h5"),
    ("evaluate --target missing --predictions folder", 2, "not a folder"),
    ("evaluate --target sim.h5 --predictions folder", 2, "not a folder"),
    ("reconstruct sim.h5 --sampler zero-filled --center-fraction 0.25 --out subm/", 0, ""),
    ("reconstruct sim.h5 ct.h5 --sampler zero-filled --out sim.h5", 2, "folder"),
    ("reconstruct sim.h5 --sampler zero-filled --batch-slices 0 --out subm", 2, "--batch-slices"),
    ("reconstruct nomatch*.h5 --sampler zero-filled --out subm", 2, "matches no file"),
    ("reconstruct sim.h5 --sampler zero-filled --png out_x.png --out subm/", 2, "--png"),
    # info and simulate
    ("info sim.h5", 0, ""), ("info missing.h5", 2, "no such file"), ("info garbage.h5", 2, "HDF5"),
    ("info zero_mask.h5", 2, "mask"), ("info folder", 2, "directory"), ("info ct.h5", 2, "kspace"),
    ("simulate out_sim.h5 --slices 0:1 --size 16 --coils 2", 0, ""),
    ("simulate out_sim.h5 --slices 0:99", 2, "outside"), ("simulate out_sim.h5 --coils 0", 2, "coils"),
    ("simulate out_sim.h5 --coils 1000", 2, "coils"), ("simulate out_sim.h5 --snr nan", 2, "snr"),
    ("simulate out_sim.h5 --snr inf", 2, "snr"), ("simulate out_sim.h5 --size 0", 2, "size"),
    ("simulate out_sim.h5 --size 5000", 2, "size"), ("simulate out_sim.h5 --seed -1", 2, "seed"),
    ("simulate folder", 2, "directory"), ("simulate nofolder/x.h5", 2, "does not exist"),
    # sweep
    ("sweep sweep.toml", 0, ""), ("sweep missing.toml", 2, "no such file"), ("sweep garbage.h5", 2, "TOML"),
    # train
    ("train train.json --out out_prior", 0, ""), ("train train.json --steps 0", 2, "steps"),
    ("train train.json --steps -1", 2, "steps"), ("train typo.json", 2, "did you mean 'steps'"),
    ("train steps0.json", 2, "steps"), ("train lr.json", 2, "lr"), ("train nanlr.json", 2, "lr"),
    ("train loss.json", 2, "loss"), ("train size.json", 2, "image_size"), ("train seed.json", 2, "seed"),
    ("train amp.json", 2, "amp"), ("train sigma.json", 2, "sigma_max"), ("train notjson.json", 2, "JSON"),
    ("train list.json", 2, "object"), ("train missing.json", 2, "no such file"),
    ("train train.json --out train.json", 2, "file"),
    # generative tasks
    ("synthesize --n 1 --steps 2 --out out_syn.png", 0, ""), ("synthesize --n 0 --out out_x.png", 2, "n must"),
    ("synthesize --n -1 --out out_x.png", 2, "n must"), ("synthesize --n 1 --steps 0 --out out_x.png", 2, "steps"),
    ("synthesize --n 1 --heldout 3 --out out_x.png", 2, "does not use --heldout"),
    ("synthesize --n 1 --steps 2 --size 96x64 --out out_syn2.png", 0, ""),
    ("synthesize --n 1 --size 320y320 --out out_x.png", 2, "--size must be N or HxW"),
    ("synthesize --n 1 --size 4 --out out_x.png", 2, "size must"),
    ("synthesize --n 1 --size 99999 --out out_x.png", 2, "size must"),
    ("inpaint --image img.npy --size 64 --out out_x.png", 2, "does not use --size"),
    ("synthesize --n 1 --steps 2 --out out_x.txt", 2, "--out"), ("synthesize --n 1 --seed -4 --out out_x.png", 2, "seed"),
    ("inpaint --image img.npy --steps 2 --out out_inp.png", 0, ""),
    ("inpaint --image img.pt --steps 2 --radius 4 --shape box --out out_inp2.png", 0, ""),
    ("inpaint --image ints.npy --steps 2 --out out_inp3.png", 0, ""),
    ("inpaint --image zeros.npy --steps 2 --out out_x.png", 2, "all zeros"),
    ("inpaint --image nan.npy --steps 2 --out out_x.png", 2, "NaN"),
    ("inpaint --image cube.npy --steps 2 --out out_x.png", 2, "2-D"),
    ("inpaint --image tiny.npy --steps 2 --out out_x.png", 2, "8.."),
    ("inpaint --image dict.pt --steps 2 --out out_x.png", 2, "tensor"),
    ("inpaint --image img.png --steps 2 --out out_x.png", 2, "PNG"),
    ("inpaint --image sim.h5 --steps 2 --out out_x.png", 2, ".npy"),
    ("inpaint --image missing.npy --out out_x.png", 2, "no such file"),
    ("inpaint --image img.npy --out img.npy", 2, "--out"),
    ("inpaint --image img.npy --heldout 2 --out out_x.png", 2, "not both"),
    ("inpaint --image img.npy --row 1000 --steps 2 --out out_x.png", 2, "outside"),
    ("inpaint --image img.npy --radius -5 --out out_x.png", 2, "radius"),
    ("inpaint --image img.npy --radius nan --out out_x.png", 2, "radius"),
    ("inpaint --image img.npy --row nan --out out_x.png", 2, "row"),
    ("inpaint --heldout 99 --out out_x.png", 2, "heldout"), ("inpaint --heldout -1 --out out_x.png", 2, "heldout"),
    ("insert --image img.npy --n 3 --out out_x.png", 2, "does not use --n"),
    ("inpaint --image img.npy --n 0 --out out_x.png", 2, "n"),
    ("insert --image img.npy --steps 2 --out out_ins.png", 0, ""),
    ("insert --image img.npy --steps 2 --strength 2 --out out_ins2.png", 0, ""),
    ("insert --image img.npy --strength 1e9 --steps 2 --out out_x.png", 2, "strength"),
    ("insert --image img.npy --strength 0 --out out_x.png", 2, "strength"),
    ("insert --image img.npy --strength nan --out out_x.png", 2, "strength"),
    ("insert --image img.npy --contrast inf --out out_x.png", 2, "contrast"),
    ("insert --image img.npy --col -3 --out out_x.png", 2, "col"),
    ("denoise --image img.npy --out out_den.png", 0, ""), ("denoise --image zeros.npy --out out_x.png", 2, "zeros"),
    ("denoise --image img.npy --noise 0 --out out_x.png", 2, "noise"),
    ("denoise --image img.npy --noise -1 --out out_x.png", 2, "noise"),
    ("denoise --image img.npy --noise nan --out out_x.png", 2, "noise"),
    ("denoise --image img.npy --noise 1e6 --out out_x.png", 2, "noise"),
    ("denoise --image img.npy --steps 3 --out out_x.png", 2, "does not use --steps"),
    ("super-resolve --image img.npy --steps 2 --out out_sr.png", 0, ""),
    ("super-resolve --image img.npy --factor 3 --out out_x.png", 2, "factor"),
    ("super-resolve --image img.npy --factor 0 --out out_x.png", 2, "factor"),
    ("super-resolve --image img.npy --factor 1000 --out out_x.png", 2, "factor"),
    ("anomaly --image img.npy --steps 2 --out out_ano.png", 0, ""),
    ("anomaly --image img.npy --strength -1 --out out_x.png", 2, "strength"),
    ("anomaly --image img.npy --strength 1e9 --out out_x.png", 2, "strength"),
    ("anomaly --image img.npy --factor 2 --out out_x.png", 2, "does not use --factor"),
    # demo (errors only: each is refused before any work)
    ("demo --steps 0 --out out_x.png", 2, "steps"), ("demo --acceleration nan --out out_x.png", 2, "acceleration"),
    ("demo --mask nope --out out_x.png", 2, "mask"), ("demo --slice 12 --out out_x.png", 2, "slice"),
    ("demo --views 10 --out out_x.png", 2, "--views"), ("demo --ct --mask random --out out_x.png", 2, "--mask"),
    ("demo --ct --views 0 --out out_x.png", 2, "views"), ("demo --ct --steps -1 --out out_x.png", 2, "steps"),
    ("demo --out out_x.h5", 2, "--out"), ("demo --seed -2 --out out_x.png", 2, "seed"),
]


@pytest.mark.parametrize("command,status,word", CASES, ids=[c[0][:60] for c in CASES])
def test_table(work, capsys, command, status, word):
    rc, _, err = run(work, capsys, command)
    assert rc == status, (command, err)
    assert word in err, (command, err)


def test_demo_succeeds_with_a_finite_figure(work, capsys):
    rc, _, err = run(work, capsys, "demo --steps 2 --slice 3 --acceleration 3 --out out_demo.png")
    assert rc == 0, err


# --- Hypothesis: command lines built from valid and hostile tokens ---------------------------------------------
NUMBERS = st.sampled_from(["0", "-1", "1", "2", "3", "0.5", "1e9", "nan", "inf", "-inf", "1e-300", "x", "", "2.5"])
INTS = st.sampled_from(["0", "-1", "1", "2", "3", "99", "2.0", "a"])
SLICES = st.sampled_from(["0", "1", "-1", "-2", "2", "0:1", "0:2", "1:", ":", "3:9", "1:0", "a", "0:1:1", "::"])


@HYPOTHESIS
@given(sampler=st.sampled_from(["zero-filled", "cg-sense", "tv", "dds", "dps", "score-ald", "nope"]),
       mask=st.sampled_from(["random", "equispaced", "gaussian1d", "gaussian2d", "poisson", "radial", "x"]),
       acc=NUMBERS, cf=NUMBERS, steps=INTS, slices=SLICES, seed=INTS)
def test_reconstruct_fuzz(work, capsys, sampler, mask, acc, cf, steps, slices, seed):
    if sampler in ("dds", "dps", "score-ald") and steps not in ("2", "3"):
        steps = "2"
    cmd = (f"reconstruct sim.h5 --sampler {sampler} --mask {mask} --acceleration {shlex.quote(acc)} "
           f"--center-fraction {shlex.quote(cf)} --steps {steps} --slices {shlex.quote(slices)} --seed {seed} "
           f"--out r_fuzz.h5")
    run(work, capsys, cmd)


@HYPOTHESIS
@given(sampler=st.sampled_from(["fbp", "tv", "fbp", "dds"]), geometry=st.sampled_from(["parallel", "fan"]),
       views=INTS, noise=st.sampled_from(["none", "gaussian", "poisson"]), level=NUMBERS, pixel=NUMBERS,
       limited=st.sampled_from([None, "0,120", "0,100000", "10,10", "-90,90", "0,360", "nan,1", "0,1"]))
def test_reconstruct_ct_fuzz(work, capsys, sampler, geometry, views, noise, level, pixel, limited):
    cmd = (f"reconstruct-ct ct.h5 --sampler {sampler} --geometry {geometry} --noise {noise} --steps 2 "
           f"--noise-level {shlex.quote(level)} --pixel-mm {shlex.quote(pixel)} --out r_ctfuzz.h5 "
           + (f"--limited {shlex.quote(limited)}" if limited else f"--views {views}"))
    run(work, capsys, cmd)


@HYPOTHESIS
@given(task=st.sampled_from(["inpaint", "insert", "denoise", "super-resolve", "anomaly", "synthesize"]),
       option=st.sampled_from(["--row", "--col", "--radius", "--contrast", "--strength", "--noise", "--factor",
                               "--n", "--heldout", "--seed"]), value=NUMBERS)
def test_task_fuzz(work, capsys, task, option, value):
    image = "" if task == "synthesize" or option == "--heldout" else "--image img.npy"
    n = "--n 1" if task == "synthesize" and option != "--n" else ""
    run(work, capsys, f"{task} {image} {n} --steps 2 {option} {shlex.quote(value)} --out out_task.png")


@HYPOTHESIS
@given(key=st.sampled_from(["masks", "accelerations", "methods", "seeds", "slices", "center_fraction", "acclerations",
                            "steps", "files", "prior", "out"]),
       value=st.sampled_from(['[]', '["random"]', '[4, 4]', '[0.5]', '["x"]', '"0:1"', '"3:1"', '[-1]', '0.2',
                              '1.5', '"nan"', 'nan', 'inf', '[inf]', '{dds = 0}', '{ddss = 2}', '["missing.h5"]',
                              '"bundled:nope"', '"x.png"', '4', '[2.5]', '[true]']))
def test_sweep_config_fuzz(work, capsys, key, value):
    base = {"out": f'"{work / "sweep_fuzz.csv"}"', "masks": '["random"]', "accelerations": "[4]",
            "methods": '["zero-filled"]', "seeds": "[0]", "slices": '"0:1"'}
    base[key] = value
    (work / "sweep_fuzz.toml").write_text("".join(f"{k} = {v}\n" for k, v in base.items() if k != "steps") +
                                          (f"steps = {value}\n" if key == "steps" else ""))
    rc, _, err = run(work, capsys, "sweep sweep_fuzz.toml")
    if key == "acclerations":
        assert rc == 2 and "did you mean 'accelerations'" in err


# --- public constructors and functions --------------------------------------------------------------------------
def _api(fn):
    """Either a finite result or a ValueError/TypeError with a message; nothing else."""
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert str(e), repr(e)
        return None
    if isinstance(out, torch.Tensor) and (out.is_floating_point() or out.is_complex()):
        from operators.checks import is_finite
        assert is_finite(out)
    return out


VALUES = st.sampled_from([0, 1, 2, 4, -1, 0.0, 0.5, 1.5, 4.0, 24, float("nan"), float("inf"), -float("inf"), True,
                          None, "4", [4], 1e9])


@HYPOTHESIS
@given(name=st.sampled_from(["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d",
                             "gaussian2d", "uniform2d", "poisson", "radial"]), acc=VALUES, cf=VALUES, calib=VALUES)
def test_mask_constructors(name, acc, cf, calib):
    from operators import masks
    params = {"acceleration": acc}
    if name in ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d"):
        params["center_fraction"] = cf
    elif name != "radial":
        params["calib"] = calib
    fn = _api(lambda: masks.get(name, **params))
    if fn is not None:
        _api(lambda: fn((1, 32, 32), seed=0))


@HYPOTHESIS
@given(size=VALUES, n_angles=VALUES, n_det=VALUES, spacing=VALUES, fan=st.booleans())
def test_ct_constructors(size, n_angles, n_det, spacing, fan):
    from operators.ct import FanBeamCT, ParallelBeamCT
    if fan:
        op = _api(lambda: FanBeamCT(size, n_angles, 100.0, 50.0, n_det, spacing))
    else:
        op = _api(lambda: ParallelBeamCT(size, n_angles, n_det, spacing))
    if op is not None and op.ishape[0] <= 64 and op.oshape[0] * op.oshape[1] < 20000:
        _api(lambda: op(torch.rand(op.ishape)))


@HYPOTHESIS
@given(dtype=st.sampled_from([torch.complex64, torch.complex128, torch.float32, torch.int64, torch.bool, "numpy",
                              "list"]), calib=VALUES, kernel=VALUES, threshold=VALUES, crop=VALUES, nan=st.booleans())
def test_espirit(dtype, calib, kernel, threshold, crop, nan):
    from operators import espirit
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    if nan:
        k[0, 8, 8] = float("nan")
    x = k.numpy() if dtype == "numpy" else k.tolist() if dtype == "list" else k.to(dtype) if dtype.is_complex \
        else k.real.to(dtype)
    kw = {k_: v for k_, v in (("calib_width", calib), ("kernel_width", kernel), ("threshold", threshold),
                              ("crop", crop)) if isinstance(v, (int, float)) and not isinstance(v, bool) and v}
    _api(lambda: espirit.maps(x, **kw))


@HYPOTHESIS
@given(name=st.sampled_from(["dds", "dps", "score-ald", "score-mri", "score-sde", "heun", "ddim", "pc"]),
       key=st.sampled_from(["steps", "n_levels", "eta", "zeta", "snr", "cg_iter", "step_lr", "n_corrector",
                            "sigma_y", "gamma", "max_batch"]), value=VALUES)
def test_sampler_constructors(name, key, value):
    from recon import samplers
    _api(lambda: samplers.get(name, **{key: value}))


@HYPOTHESIS
@given(data=st.sampled_from(["ok", "nan", "inf", "int", "numpy", "c128", "list", "real"]),
       method=st.sampled_from(["zero_filled", "cg_sense", "tv", "l1_wavelet"]), lam=VALUES, iters=VALUES)
def test_classical_methods(data, method, lam, iters):
    from operators import MultiCoilMRI
    from recon import classical
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = torch.zeros(1, 16)
    mask[:, ::2] = 1
    A = MultiCoilMRI(maps, mask)
    y = A(torch.randn(16, 16, dtype=torch.complex64, generator=g))
    y = {"ok": y, "nan": y * float("nan"), "inf": y / 0, "int": y.real.long(), "numpy": y.numpy(),
         "c128": y.to(torch.complex128), "list": y.tolist(), "real": y.real}[data]
    kw = {}
    if method != "zero_filled":
        kw = {"lam": lam, "max_iter": iters if isinstance(iters, int) and not isinstance(iters, bool) and
              0 <= iters <= 5 else 3}
    out = _api(lambda: getattr(classical, method)(y, A, **kw))
    if data in ("nan", "inf", "int", "list"):
        assert out is None


def test_python_api_items_of_the_issue():
    """The Python API items of issue 15, each with its stated rule."""
    from operators import MultiCoilMRI, espirit
    from recon import classical, priors, samplers
    from recon.problems import multicoil_problem

    p = multicoil_problem(size=128)
    A, y = p.A, p.y
    with pytest.raises(ValueError, match="NaN or Inf"):
        classical.cg_sense(y * float("nan"), A)
    prior = priors.load("bundled:mni-brain-128")
    x = torch.randn(1, 32, 32, dtype=torch.complex64)
    for sigma in (-1.0, float("nan"), 0.0, float("inf"), torch.tensor([-0.5])):
        for fn in (prior.denoise, prior.score, prior.eps):
            with pytest.raises(ValueError, match="sigma must be finite and > 0"):
                fn(x, sigma)
    with pytest.raises(ValueError, match="x contains NaN"):
        prior.denoise(x * float("nan"), 1.0)
    with pytest.raises(ValueError, match="steps must be an integer"):
        samplers.DDS(steps=float("nan"))
    with pytest.raises(ValueError, match="n_levels must be an integer >= 2"):
        samplers.ScoreALD(n_levels=1)
    with pytest.raises(TypeError, match="scaled by a number"):
        "a" * A  # noqa: B018
    with pytest.raises(TypeError, match="float or complex tensor, got dtype torch.int64"):
        A(torch.ones(128, 128, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be complex"):
        espirit.maps(torch.randn(8, 128, 128))
    assert A(p.x_true.to(torch.complex128)).dtype == torch.complex128       # used in its own precision
    assert torch.allclose(A(p.x_true.numpy()), A(p.x_true))                  # NumPy converted
    s = samplers.DDS(steps=2)(y.to(torch.complex128).numpy(), A, prior)      # samplers: single precision
    assert s.dtype == torch.complex64 and torch.isfinite(s.abs()).all()
    with pytest.raises(ValueError, match="no prior given"):
        samplers.DDS(steps=2)(y, A, None)
    with pytest.raises(TypeError, match="prior must be"):
        samplers.DDS(steps=2)(y, A, "bundled:mni-brain-128")
    with pytest.raises(TypeError, match="A must be an operator"):
        samplers.DDS(steps=2)(y, "A", prior)
    assert isinstance(MultiCoilMRI(p.maps.numpy(), p.mask.numpy()), MultiCoilMRI)
