"""Sizes declared by inputs are checked before anything is allocated (``recon.memory``): the fuzz contract's runner
(exit 0, or 2 with one ``recon: error:`` line, inputs unchanged) on files, headers and configs that declare
k-space of 100000 x 100000, 10^6 coils, a 100000^2 recon or image matrix, a 6 x 10^9-run sweep, ...

Each hostile file costs a few kB on disk (HDF5 datasets of a huge declared shape are chunked and never written,
.npy/.png files are a bare header, a .pt tensor is one element expanded), so reading any of them would ask for
tens of GiB to TiB. Every case must answer with exit status 2 and the expected word, and fast: well within
``FAST`` seconds, and with the Python heap (numpy's arrays, which h5py reads into, are traced) under ``HEAP``.
"""
import shutil
import struct
import time
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
import torch

from recon import memory
from recon.apps import sweep
from recon.cli import main
from recon.data.fastmri import FastMRIHeader, load_fastmri
from recon.uncertainty import local_rms
from tests.test_fuzz_contract import run, work  # noqa: F401 - the fixture is used by name

FAST = 3.0  # seconds; reading any of these inputs would take minutes or fail for want of memory
HEAP = 64 << 20  # bytes of traced Python/numpy memory a refusal may use
BIG = 100_000


def _huge(path, name="kspace", shape=(1, 4, BIG, BIG), dtype=np.complex64, chunks=None, **others):
    """An HDF5 file with a dataset of a huge declared shape that is never written (a few kB on disk)."""
    with h5py.File(path, "w") as f:
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks or (1,) * (len(shape) - 2) + (64, 64))
        for key, value in others.items():
            f.create_dataset(key, data=value)


def _png_header(path, height, width):
    """A PNG whose IHDR declares height x width pixels, with no image data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile(work):  # noqa: F811
    d = work
    _huge(d / "big_k.h5")                                                     # 298 GiB a slice
    _huge(d / "big_coils.h5", shape=(1, 10 ** 6, 128, 128))                   # 122 GiB a slice
    _huge(d / "big_single.h5", shape=(2, BIG, BIG))                           # single-coil, 75 GiB a slice
    _huge(d / "big_slices.h5", shape=(10 ** 9, 2, 32, 32), chunks=(1, 1, 32, 32))  # a billion small slices
    with h5py.File(d / "sim.h5") as f:
        k, rss, xml = f["kspace"][()], f["reconstruction_rss"][()], f["ismrmrd_header"][()]
    h = FastMRIHeader.from_xml(xml, (32, 32, 1), (32, 32, 1))
    with h5py.File(d / "big_recon.h5", "w") as f:
        f["kspace"], f["reconstruction_rss"] = k, rss
        f["ismrmrd_header"] = FastMRIHeader(h.encoding_size, (BIG, BIG, 1), h.encoding_limits, h.xml).to_xml()
    with h5py.File(d / "big_target.h5", "w") as f:
        f["kspace"], f["ismrmrd_header"] = k, xml
        f.create_dataset("reconstruction_rss", shape=(2, BIG, BIG), dtype=np.float32, chunks=(1, 64, 64))
    with h5py.File(d / "big_mask.h5", "w") as f:
        f["kspace"] = k
        f.create_dataset("mask", shape=(10 ** 11,), dtype=np.float32, chunks=(4096,))
    with h5py.File(d / "big_header.h5", "w") as f:
        f["kspace"] = k
        f.create_dataset("ismrmrd_header", shape=(10 ** 11,), dtype="S1", chunks=(4096,))
    # non-Cartesian: a 100000^2 image matrix, a huge trajectory, huge density weights
    assert main(["--quiet", "simulate", str(d / "nc.h5"), "--slices", "0:1", "--size", "32", "--coils", "2",
                 "--trajectory", "radial", "--spokes", "16"]) == 0
    from recon.data.noncartesian_io import _header_xml
    shutil.copy(d / "nc.h5", d / "nc_matrix.h5")
    with h5py.File(d / "nc_matrix.h5", "a") as f:
        del f["ismrmrd_header"], f["reconstruction_rss"]
        f["ismrmrd_header"] = _header_xml((BIG, BIG), "radial")
        f.attrs["matrix_size"] = [BIG, BIG]
    with h5py.File(d / "nc_traj.h5", "w") as f:
        f.create_dataset("data", shape=(1, 2, BIG, BIG), dtype=np.complex64, chunks=(1, 1, 64, 64))
        f.create_dataset("traj", shape=(BIG, BIG, 2), dtype=np.float32, chunks=(64, 64, 2))
        f.attrs["matrix_size"] = [32, 32]
    shutil.copy(d / "nc.h5", d / "nc_density.h5")
    with h5py.File(d / "nc_density.h5", "a") as f:
        del f["density_weights"]
        f.create_dataset("density_weights", shape=(BIG, BIG), dtype=np.float32, chunks=(64, 64))
    with h5py.File(d / "nc.h5") as src, h5py.File(d / "nc_slices.h5", "w") as f:
        f.create_dataset("data", shape=(10 ** 9, *src["data"].shape[1:]), dtype=np.complex64,
                         chunks=(1, *src["data"].shape[1:]))
        f["traj"], f.attrs["matrix_size"] = src["traj"][()], [32, 32]
    shutil.copy(d / "nc.h5", d / "nc_header.h5")
    with h5py.File(d / "nc_header.h5", "a") as f:
        del f["ismrmrd_header"]
        f.create_dataset("ismrmrd_header", shape=(10 ** 11,), dtype="S1", chunks=(4096,))
    # images of the generative tasks
    from numpy.lib import format as npy
    with open(d / "big.npy", "wb") as f:
        npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (BIG, BIG)})
    with open(d / "big2.npy", "wb") as f:
        npy.write_array_header_2_0(f, {"descr": "<c16", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
    with open(d / "big3d.npy", "wb") as f:
        npy.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (BIG, BIG, BIG)})
    torch.save(torch.zeros(1).expand(BIG, BIG), d / "big.pt")
    _png_header(d / "big.png", BIG, BIG)
    import matplotlib.pyplot as plt
    plt.imsave(d / "real.png", np.random.default_rng(0).random((32, 32)), cmap="gray")
    # sweeps: 6 x 10^9 runs, and max_runs
    seeds = ", ".join(str(s) for s in range(10_000))
    accs = ", ".join(f"{1 + a / 1000:g}" for a in range(1000))
    from operators import masks
    assert len(masks.available()) == 10
    (d / "sweep_big.toml").write_text(  # 10 masks x 1000 accelerations x 6 methods x 10^4 seeds x 10 slices
        f'out = "{d / "out_sweep_big.csv"}"\nmasks = {list(masks.available())}\naccelerations = [{accs}]\n'
        'methods = ["zero-filled", "cg-sense", "tv", "l1-wavelet", "dds", "dps"]\n'
        f'seeds = [{seeds}]\nslices = "0:10"\n')
    base = f'out = "{d / "out_sweep_cap.csv"}"\nmasks = ["random", "poisson"]\naccelerations = [4, 8]\n' \
           'methods = ["zero-filled"]\nseeds = [0]\nslices = "0:1"\n'
    (d / "sweep_cap.toml").write_text(base + "max_runs = 3\n")
    (d / "sweep_cap_ok.toml").write_text(base + "max_runs = 4\n")
    (d / "sweep_cap_high.toml").write_text(base + "max_runs = 100000000\n")
    (d / "sweep_slices.toml").write_text(
        f'out = "{d / "out_sweep_slices.csv"}"\nmasks = ["random"]\naccelerations = [4]\nmethods = ["zero-filled"]\n'
        f'files = ["{d / "big_slices.h5"}"]\nslices = "0:1000000000"\n')
    (d / "sweep_file.toml").write_text(
        f'out = "{d / "out_sweep_file.csv"}"\nmasks = ["random"]\naccelerations = [4]\nmethods = ["zero-filled"]\n'
        f'files = ["{d / "big_k.h5"}"]\n')
    return d


ZF = "--sampler zero-filled --out r_x.h5"
CASES = [
    # fastMRI k-space: a slice of 298 GiB, 122 GiB (10^6 coils), 75 GiB single-coil
    (f"reconstruct big_k.h5 {ZF}", "memory budget"), (f"reconstruct big_k.h5 {ZF}", "4 coils x 100000 x 100000"),
    (f"reconstruct big_coils.h5 {ZF}", "1000000 coils"), (f"reconstruct big_single.h5 {ZF}", "memory budget"),
    ("uncertainty big_k.h5 --samples 2 --steps 2 --out r_x.h5", "memory budget"),
    ("calibrate big_k.h5 --samples 2 --steps 2 --out out_cal.json", "memory budget"),
    # the header's recon matrix, a target, a mask and the header itself of a huge declared size
    (f"reconstruct big_recon.h5 {ZF}", "recon matrix (100000, 100000)"),
    (f"reconstruct big_target.h5 {ZF}", "reconstruction_rss"),
    ("info big_mask.h5", "mask"), (f"reconstruct big_mask.h5 {ZF}", "mask"),
    ("info big_header.h5", "ismrmrd_header"),
    # a billion slices: the commands list a volume's slices and hold a result per slice
    (f"reconstruct big_slices.h5 {ZF}", "1000000000 slices"), ("info big_slices.h5", "at most 100000"),
    (f"reconstruct nc_slices.h5 {ZF}", "1000000000 slices"),
    # non-Cartesian: a 100000^2 matrix, a trajectory and density weights of 10^10 samples, the header
    (f"reconstruct nc_matrix.h5 {ZF}", "100000 x 100000 matrix"), (f"reconstruct nc_traj.h5 {ZF}", "'traj'"),
    (f"reconstruct nc_density.h5 {ZF}", "density_weights"), (f"reconstruct nc_header.h5 {ZF}", "ismrmrd_header"),
    # images of the generative tasks: the header's shape is checked before the pixels are read
    ("denoise --image big.npy --out out_x.png", "(100000, 100000)"),
    ("denoise --image big2.npy --out out_x.png", "(1000000, 1000000)"),
    ("denoise --image big3d.npy --out out_x.png", "2-D"),
    ("denoise --image big.pt --out out_x.png", "(100000, 100000)"),
    ("denoise --image big.png --out out_x.png", "(100000, 100000)"),
    # calibrate --smooth: a window of 3e9 pixels
    ("calibrate sim.h5 --samples 2 --steps 2 --smooth 1e9 --out out_cal.json", "--smooth"),
    ("calibrate sim.h5 --samples 2 --steps 2 --smooth 11 --out out_cal.json", "--smooth"),
    # sweeps: counted before they are expanded
    ("sweep sweep_big.toml", "6,000,000,000 runs"), ("sweep sweep_big.toml", "max_runs = 100,000"),
    ("sweep sweep_cap.toml", "4 runs"), ("sweep sweep_cap_high.toml", "max_runs"),
    ("sweep sweep_slices.toml", "1,000,000,000 runs"), ("sweep sweep_file.toml", "memory budget"),
    # a stated budget
    (f"--memory 0.0001 reconstruct sim.h5 {ZF}", "--memory"),
    (f"--memory 0.0001 reconstruct nc.h5 {ZF}", "--memory"),
    ("--memory 0.00001 denoise --image img.npy --out out_x.png", "32 x 32 pixels"),
    (f"--memory 0 reconstruct sim.h5 {ZF}", "--memory"), (f"--memory nan reconstruct sim.h5 {ZF}", "--memory"),
]


def _timed(work, capsys, command):
    tracemalloc.start()
    try:
        t = time.perf_counter()
        result = run(work, capsys, command)
        seconds = time.perf_counter() - t
        heap = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, seconds, heap


@pytest.mark.parametrize("command,word", CASES, ids=[c[0][:70] for c in CASES])
def test_declared_sizes_are_refused_before_allocation(hostile, capsys, command, word):
    run(hostile, capsys, "info sim.h5")  # the lazy imports of the commands, outside the timing
    (rc, _, err), seconds, heap = _timed(hostile, capsys, command)
    assert rc == 2 and word in err, (command, err)
    assert seconds < FAST and heap < HEAP, (command, seconds, heap)


def test_legitimate_files_still_work(hostile, capsys):
    assert run(hostile, capsys, f"reconstruct sim.h5 {ZF}")[0] == 0
    assert run(hostile, capsys, "reconstruct nc.h5 --sampler zero-filled --out r_nc.h5")[0] == 0
    assert run(hostile, capsys, "sweep sweep_cap_ok.toml")[0] == 0
    for image in ("img.npy", "img.pt", "ints.npy", "real.png"):
        assert run(hostile, capsys, f"denoise --image {image} --out out_den.png")[0] == 0, image
    rc, out, _ = run(hostile, capsys, "info sim.h5")
    assert rc == 0 and "within the budget" in out


def test_a_stated_budget_refuses_what_the_default_allows(hostile, capsys, monkeypatch):
    assert run(hostile, capsys, f"reconstruct sim.h5 {ZF}")[0] == 0
    rc, _, err = run(hostile, capsys, f"--memory 0.0001 reconstruct sim.h5 {ZF}")
    assert rc == 2 and "sim.h5" in err and "memory budget of 105 kiB (--memory" in err, err
    assert run(hostile, capsys, f"--memory 1 reconstruct sim.h5 {ZF}")[0] == 0
    monkeypatch.setenv(memory.ENVIRONMENT, "0.0001")
    rc, _, err = run(hostile, capsys, f"reconstruct sim.h5 {ZF}")
    assert rc == 2 and memory.ENVIRONMENT in err, err
    assert run(hostile, capsys, f"--memory 1 reconstruct sim.h5 {ZF}")[0] == 0  # the option wins


def test_a_dataset_run_fails_the_huge_volume_by_name(hostile, capsys):
    """A dataset run reports a volume that cannot run by name and goes on (exit status 1, recon.apps.datasets)."""
    capsys.readouterr()
    t = time.perf_counter()
    rc = main(["--quiet", "reconstruct", str(hostile / "big_k.h5"), str(hostile / "sim.h5"), "--sampler",
               "zero-filled", "--center-fraction", "0.25", "--out", str(hostile / "subm_sizes") + "/"])
    err = capsys.readouterr().err
    assert rc == 1 and time.perf_counter() - t < 30
    assert "big_k.h5" in err and "memory budget" in err and "sim.h5" not in err.replace("big_k.h5", ""), err
    assert (hostile / "subm_sizes" / "sim.h5").exists()


def test_info_describes_a_huge_file_without_reading_it(hostile, capsys):
    (rc, out, _), seconds, heap = _timed(hostile, capsys, "info big_k.h5")
    assert rc == 0 and "4 coils x 100000 x 100000" in out and "298 GiB a slice" in out
    assert "above the budget" in out and seconds < FAST and heap < HEAP


def test_the_slice_check_counts_the_working_copies(hostile):
    from recon.data.fastmri import WORKING_COPIES
    vol = load_fastmri(hostile / "sim.h5")
    assert vol.slice_nbytes == 2 * 32 * 32 * 8
    assert vol.memory_needed(3) == 3 * vol.slice_nbytes + WORKING_COPIES * vol.slice_nbytes
    with memory.budget(vol.memory_needed(1) / memory.GIB * 1.01):
        vol.kspace(0)
        with pytest.raises(ValueError, match="reading 2 k-space slices"):
            vol.kspace(slice(0, 2))
        assert vol.target(slice(0, 2)).shape == (2, 32, 32)


def test_a_sweep_states_its_count(hostile, capsys):
    assert main(["sweep", str(hostile / "sweep_cap_ok.toml")]) == 0
    out = capsys.readouterr().out
    assert "sweep: 4 runs, " in out and " to run" in out
    cfg = sweep.load_config(hostile / "sweep_cap_ok.toml")
    assert sweep.count_runs(cfg) == len(sweep.rows_of(cfg)) == 4


def test_local_rms_refuses_a_window_wider_than_the_image_at_once():
    t = time.perf_counter()
    with pytest.raises(ValueError, match="too wide"):
        local_rms(torch.ones(32, 32), 1e9)
    assert time.perf_counter() - t < 0.5
    assert local_rms(torch.ones(32, 32), 2.0).shape == (32, 32)
