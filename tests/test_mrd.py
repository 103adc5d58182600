"""ISMRMRD/MRD input: files written with the ``ismrmrd`` package from a known image, coil maps and coil noise
covariance, read back exactly (placement, reverse readouts, averages, skipped readouts, calibration, partial
Fourier, readout oversampling), prewhitened (identity noise covariance, better CG-SENSE), non-Cartesian, converted
to fastMRI's layout, and bad files refused in one line naming the field, byte-identical afterwards."""
import hashlib
import math

import h5py
import numpy as np
import pytest
import torch
from ismrmrd import constants as K

from operators import MultiCoilMRI, NonCartesianMRI, espirit, trajectories
from operators.fft import fft2c, ifft2c
from recon import classical, metrics
from recon.atomic import protected
from recon.data import geometry, load_fastmri, mrd, mrd_simulate as ms, simulate
from recon.data.coils import center_crop
from recon.data import noncartesian_io
from recon.data.prewhiten import Prewhitener, intensity_preserving_maps, noise_covariance

H, W, C, S = 64, 48, 4, 2     # encoded readout (2x oversampled), phase encoding, coils, slices


def _object(seed=0):
    """(S, H, W) complex images on the encoded grid: a phantom in the central H/2 rows (the recon field of view)."""
    img = torch.zeros(S, H, W, dtype=torch.complex64)
    for s in range(S):
        img[s, H // 4:H // 4 + H // 2] = simulate.phantom((H // 2, W), seed=seed + s) * (1 + 0.2 * s)
    return img


def _covariance(scale=1e-3, seed=3):
    """A strongly correlated coil noise covariance with unequal channel levels."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((C, C)) + 1j * rng.standard_normal((C, C))
    levels = np.diag([1.0, 2.0, 0.7, 3.0])
    cov = levels @ (a @ a.conj().T / C + 0.3 * np.eye(C)) @ levels
    return scale * cov / np.real(np.trace(cov)) * C


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def maps():
    return simulate.coil_maps(C, (H, W))


@pytest.fixture(scope="module")
def exact(tmp_path_factory, maps):
    """Noiseless (1e-30 noise): undersampled imaging lines, a separate calibration block, 2 averages, reverse
    readouts, junk navigator/phase-correction/dummy readouts, 4 partial Fourier lines."""
    path = tmp_path_factory.mktemp("mrd") / "exact.mrd.h5"
    lines = np.zeros(W, bool)
    lines[::3] = True
    sim = ms.simulate_cartesian(path, _object(), maps, 1e-30 * np.eye(C), lines=lines, calibration=10, averages=2,
                                partial_fourier=4)
    return path, sim


def test_placement_is_exact(exact):
    path, sim = exact
    vol = mrd.load_mrd(path, prewhiten=False)
    assert isinstance(vol, mrd.MRDVolume) and vol.shape == (S, C, H, W) and vol.num_slices == S
    assert vol.skipped == {"navigator": S, "phase correction": S, "dummy scan": S}
    k = vol.kspace(slice(None)).numpy()
    m = sim["mask"]
    assert m[:4].sum() == 0 and vol.prospective
    np.testing.assert_array_equal(vol.mask.numpy()[0], m.astype(np.float32))
    truth = sim["kspace"]
    err = np.abs(k[..., m] - truth[..., m]).max() / np.abs(truth).max()
    assert err < 1e-6                                  # reverse readouts flipped, averages combined, junk skipped
    assert np.abs(k[..., ~m]).max() == 0
    assert vol.encoding_size == (H, W, 1) and vol.recon_size == (H // 2, W, 1)
    assert vol.header.encoding_limits == (W // 2, W - 1) and "ismrmrdHeader" in vol.header.xml
    assert vol.target(0) is None and not vol.has_target and vol.attrs["source_format"] == "ISMRMRD"
    assert vol.kspace(-1).shape == (C, H, W)


def test_calibration_separate(exact):
    path, sim = exact
    vol = mrd.load_mrd(path, prewhiten=False, calibration="separate")
    np.testing.assert_array_equal(vol.mask_of(0).numpy()[0].astype(bool), sim["imaging"])
    cal = vol.calibration_kspace(1).numpy()
    cols = np.flatnonzero(np.abs(cal).sum((0, 1)) > 0)
    assert len(cols) == 10 and np.allclose(cal[..., cols], sim["kspace"][1][..., cols], atol=1e-5)


def test_readout_oversampling_removed_exactly(tmp_path, maps):
    path = tmp_path / "full.h5"
    img = _object()
    sim = ms.simulate_cartesian(path, img, maps, 1e-30 * np.eye(C), reverse=False, extras=False)
    vol = mrd.load_mrd(path, prewhiten=False)
    assert vol.mask is None and not vol.prospective            # fully sampled: retrospective use, as fastMRI
    grid = geometry.prepare(vol.kspace(0), "full-fov", vol.recon_size[:2], limits=vol.header.encoding_limits,
                            encoded_width=vol.encoding_size[1])
    coil_images = center_crop(maps * img[0], (H // 2, W))       # the recon field of view, no oversampling
    expected = fft2c(coil_images)
    assert grid.kspace.shape == (C, H // 2, W)
    assert (grid.kspace - expected).abs().max() / expected.abs().max() < 1e-5
    assert sim["recon"] == (H // 2, W)


def test_averages_and_noise_level(tmp_path, maps):
    sigma = 0.05
    path = tmp_path / "avg.h5"
    sim = ms.simulate_cartesian(path, _object(), maps, sigma ** 2 * np.eye(C), averages=2, noise_readouts=400,
                                noise_bandwidth=0.79, noise_dwell_us=4.0, dwell_us=12.0, seed=1)
    vol = mrd.load_mrd(path)
    assert vol.prewhitened and np.allclose(vol.prewhitener.noise_std, sigma, rtol=0.05)
    m = sim["mask"]
    w = vol.prewhitener.matrix()
    truth = np.einsum("ij,...jhw->...ihw", w, sim["kspace"])
    resid = (vol.kspace(slice(None)).numpy() - truth)[..., m]
    measured = np.sqrt(np.mean(np.abs(resid) ** 2))
    assert abs(measured / (sigma / math.sqrt(2)) - 1) < 0.05          # two averages: sigma / sqrt(2)
    assert abs(vol.noise_std / measured - 1) < 0.06


def test_prewhitening_gives_identity_covariance(tmp_path, maps):
    cov = _covariance()
    path = tmp_path / "corr.h5"
    sim = ms.simulate_cartesian(path, _object(), maps, cov, noise_readouts=200, noise_bandwidth=0.8,
                                noise_dwell_us=5.0, dwell_us=10.0, seed=2)
    vol = mrd.load_mrd(path)
    pw = vol.prewhitener
    assert np.allclose(pw.covariance_at(10.0), cov, atol=0.1 * np.abs(cov).max())   # the bandwidth model undone
    w = pw.matrix()
    resid = vol.kspace(slice(None)).numpy() - np.einsum("ij,...jhw->...ihw", w, sim["kspace"])
    white = noise_covariance(resid.transpose(1, 0, 2, 3).reshape(C, -1)) / pw.noise_std ** 2
    assert np.abs(white - np.eye(C)).max() < 0.1
    raw = mrd.load_mrd(path, prewhiten=False).kspace(slice(None)).numpy() - sim["kspace"]
    before = noise_covariance(raw.transpose(1, 0, 2, 3).reshape(C, -1))
    before = before / np.sqrt(np.outer(np.diag(before).real, np.diag(before).real))
    assert np.abs(before - np.eye(C)).max() > 0.3                     # the data's noise was correlated


def _cg_sense(vol, i):
    """Prospective CG-SENSE on the full-fov protocol, ESPIRiT maps from the calibration lines (intensity preserved
    for whitened data), cropped to the recon matrix."""
    grid = geometry.prepare(vol.kspace(i), "full-fov", vol.recon_size[:2], file_mask=vol.mask_of(i),
                            limits=vol.header.encoding_limits, encoded_width=vol.encoding_size[1])
    y, m = grid.kspace, grid.mask
    maps = espirit.maps_for_mask(y, m)
    if vol.prewhitened:
        maps = intensity_preserving_maps(maps, vol.prewhitener.inverse())
    x = classical.cg_sense(y, MultiCoilMRI(maps, m), max_iter=30)
    return center_crop(x, grid.crop).abs()


def test_prewhitening_improves_cg_sense(tmp_path, maps):
    path = tmp_path / "psnr.h5"
    lines = np.zeros(W, bool)
    lines[::2] = True
    img = _object()
    ms.simulate_cartesian(path, img, maps, _covariance(2e-3), lines=lines, calibration=12, noise_readouts=200, seed=4)
    truth = center_crop(img.abs(), (H // 2, W))
    white, plain = mrd.load_mrd(path), mrd.load_mrd(path, prewhiten=False)
    for i in range(S):
        gain = metrics.psnr(truth[i], _cg_sense(white, i)) - metrics.psnr(truth[i], _cg_sense(plain, i))
        assert gain > 1.0, gain


def test_no_noise_scans_warns_once(tmp_path, maps):
    path = tmp_path / "nonoise.h5"
    ms.simulate_cartesian(path, _object(), maps, 1e-6 * np.eye(C), noise_readouts=0, extras=False)
    with pytest.warns(UserWarning, match="not prewhitened") as record:
        vol = mrd.load_mrd(path)
    assert len(record) == 1 and not vol.prewhitened and vol.noise_std is None


def test_partial_fourier_pocs(tmp_path, maps):
    path = tmp_path / "pf.h5"
    x = _object()
    sim = ms.simulate_cartesian(path, x, maps, 1e-30 * np.eye(C), partial_fourier=10, extras=False)
    zero = mrd.load_mrd(path, prewhiten=False)
    pocs = mrd.load_mrd(path, prewhiten=False, partial_fourier="pocs")
    assert pocs.mask_of(0).sum() > zero.mask_of(0).sum()
    truth = torch.from_numpy(sim["kspace"][0])
    err_zero = (zero.kspace(0) - truth).norm() / truth.norm()
    err_pocs = (pocs.kspace(0) - truth).norm() / truth.norm()
    assert err_pocs < 0.5 * err_zero


def test_noncartesian(tmp_path, maps):
    n = 32
    x = _object()[:, H // 2 - n // 2:H // 2 + n // 2, W // 2 - n // 2:W // 2 + n // 2]
    sm = simulate.coil_maps(C, (n, n))
    traj = trajectories.get("radial", n_spokes=24)((n, n)).to(torch.float32)        # radians per sample
    y = torch.stack([NonCartesianMRI(sm, traj)(x[s]) for s in range(S)]).reshape(S, C, *traj.shape[:2])
    cycles = traj.numpy() * n / (2 * np.pi)                                        # ISMRMRD: cycles per FOV
    path = tmp_path / "radial.h5"
    ms.simulate_noncartesian(path, y.numpy(), cycles, (n, n), 1e-30 * np.eye(C), averages=2)
    vol = mrd.load_mrd(path, prewhiten=False)
    assert isinstance(vol, mrd.MRDNonCartesianVolume) and vol.family == "radial"
    assert vol.shape == (S, C, 24, traj.shape[1]) and vol.matrix == (n, n)
    assert torch.allclose(vol.trajectory, traj, atol=1e-5)
    assert torch.allclose(vol.samples(1), y[1].reshape(C, -1), atol=1e-5 * float(y.abs().max()))
    normalised = tmp_path / "radial-normalised.h5"
    ms.simulate_noncartesian(normalised, y.numpy(), cycles / n, (n, n), 1e-30 * np.eye(C))
    assert torch.allclose(mrd.load_mrd(normalised, prewhiten=False).trajectory, traj, atol=1e-5)
    white = mrd.load_mrd(path)
    assert white.prewhitened and white.noise_std is not None
    out = mrd.convert(path, tmp_path / "radial-nc.h5", prewhiten=False)
    nc = noncartesian_io.load_noncartesian(out)
    assert torch.allclose(nc.samples(0), vol.samples(0)) and torch.allclose(nc.trajectory, vol.trajectory)


def test_convert_to_fastmri(tmp_path, exact, maps):
    path, sim = exact
    out = mrd.convert(path, tmp_path / "converted.h5", prewhiten=False)
    fm, vol = load_fastmri(out), mrd.load_mrd(path, prewhiten=False)
    assert fm.shape == vol.shape and torch.equal(fm.kspace(1), vol.kspace(1))
    assert torch.equal(fm.mask, vol.mask) and not fm.has_target
    assert fm.recon_size == vol.recon_size and fm.header.encoding_limits == vol.header.encoding_limits
    full = tmp_path / "full.h5"
    ms.simulate_cartesian(full, _object(), maps, 1e-4 * np.eye(C), extras=False)
    fm = load_fastmri(mrd.convert(full, tmp_path / "full-fastmri.h5"))
    assert fm.has_target and fm.mask is None and fm.target(0).shape == (H // 2, W)
    assert fm.attrs["prewhitened"] == 1 and fm.attrs["noise_std"] > 0
    white = mrd.load_mrd(full)
    with h5py.File(tmp_path / "full-fastmri.h5", "r") as f:
        winv = f["prewhitening_inverse"][()]
    assert np.allclose(winv, white.prewhitener.inverse(), rtol=1e-5)
    coils = torch.einsum("ij,jhw->ihw", torch.from_numpy(winv), ifft2c(white.kspace(0)))   # unwhitened intensity
    expected = center_crop(coils.abs().square().sum(0).sqrt(), (H // 2, W))
    assert torch.allclose(fm.target(0), expected, rtol=1e-5, atol=1e-6)
    unwhitened = center_crop(ifft2c(mrd.load_mrd(full, prewhiten=False).kspace(0)).abs().square().sum(0).sqrt(),
                             (H // 2, W))
    assert torch.allclose(fm.target(0), unwhitened, atol=0.05 * float(unwhitened.max()))
    before = _sha(path)
    with pytest.raises(ValueError, match="input"):
        mrd.convert(path, path)
    with protected(path), pytest.raises(ValueError, match="input"):
        mrd.convert(full, path)
    assert _sha(path) == before


def test_describe(exact):
    text = mrd.describe(exact[0])
    for word in ("ISMRMRD", "cartesian", "prospective", "noise", "separate calibration", "dummy scan"):
        assert word in text


# ------------------------------------------------------------------------------------------------ bad input


def _small(path, flags_step=None, hdr_limits=None, trajectory="cartesian", step2=0, traj=None, noise=True):
    """A tiny hand-written file: 8 coils... (2 coils, 16 x 8), optionally with broken fields."""
    limits = hdr_limits or {"kspace_encoding_step_1": (0, 7, 4)}
    hdr = ms.header((16, 8, 1), (8, 8, 1), (200.0, 100.0, 5.0), (100.0, 100.0, 5.0), 2, limits, trajectory=trajectory)
    rng = np.random.default_rng(0)
    acqs = [ms.acquisition(rng.standard_normal((2, 16)) + 0j, [K.ACQ_IS_NOISE_MEASUREMENT]) for _ in range(4)] \
        if noise else []
    for ky in range(8):
        acqs.append(ms.acquisition(np.ones((2, 16)), traj=traj, kspace_encode_step_1=(flags_step or {}).get(ky, ky),
                                   kspace_encode_step_2=step2, center_sample=8))
    return ms.write(path, hdr, acqs)


def _replace_xml(path, old, new):
    with h5py.File(path, "r+") as f:
        xml = f["dataset/xml"][0].decode()
        assert old in xml
        f["dataset/xml"][0] = xml.replace(old, new).encode()


BAD = {
    "truncated": ("truncated or corrupt", None),
    "foreign": ("not an ISMRMRD/MRD file", None),
    "limits": ("kspace_encoding_step_1", None),
    "step1": ("kspace_encode_step_1 = 9", None),
    "trajectory": ("trajectory = 'zigzag'", None),
    "no_traj": ("trajectory_dimensions", None),
    "missing": ("encoding[0]/encodedSpace/matrixSize/y: missing", None),
    "three_d": ("kspace_encode_step_2", None),
    "samples": ("declares", None),
    "contrast": ("contrast 1 is not in the file", {"contrast": 1}),
    "nan": ("NaN or Inf", None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_field(tmp_path, case):
    match, options = BAD[case]
    path = tmp_path / "bad.h5"
    if case == "truncated":
        _small(path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif case == "foreign":
        with h5py.File(path, "w") as f:
            f.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.complex64))
    elif case == "limits":
        _small(path, hdr_limits={"kspace_encoding_step_1": (0, 7, 0)})
    elif case == "step1":
        _small(path, flags_step={7: 9})
    elif case == "trajectory":
        _small(path)
        _replace_xml(path, ">cartesian<", ">zigzag<")
    elif case == "no_traj":
        _small(path, trajectory="radial")
    elif case == "missing":
        _small(path)
        _replace_xml(path, "<y>8</y>", "")
    elif case == "three_d":
        _small(path, step2=3)
    elif case == "samples":
        _small(path)
        with h5py.File(path, "r+") as f:
            rec = f["dataset/data"][5]
            rec["data"] = rec["data"][:-2]
            f["dataset/data"][5] = rec
    elif case == "contrast":
        _small(path)
    elif case == "nan":
        _small(path)
        with h5py.File(path, "r+") as f:
            rec = f["dataset/data"][6]
            rec["data"][3] = np.nan
            f["dataset/data"][6] = rec
    before = _sha(path)
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace("(", r"\(")) as info:
        vol = mrd.load_mrd(path, **(options or {}))
        vol.kspace(0)
    assert "\n" not in str(info.value)
    assert _sha(path) == before


def test_epi_and_options_refused(tmp_path):
    path = _small(tmp_path / "epi.h5", trajectory="epi")
    with pytest.raises(ValueError, match="EPI"):
        mrd.load_mrd(path)
    path = _small(tmp_path / "ok.h5")
    with pytest.raises(ValueError, match="calibration"):
        mrd.load_mrd(path, calibration="mix")
    with pytest.raises(ValueError, match="partial_fourier"):
        mrd.load_mrd(path, partial_fourier="homodyne")
    assert mrd.is_mrd(path) and not mrd.is_mrd(tmp_path / "none.h5")


def test_noise_file_and_channel_mismatch(tmp_path):
    data = _small(tmp_path / "data.h5", noise=False)
    noise = _small(tmp_path / "noise.h5")
    vol = mrd.load_mrd(data, noise=noise)
    assert vol.prewhitened and vol.prewhitener.samples == 4 * 16
    with pytest.raises(ValueError, match="noise samples for 2 channels"):
        Prewhitener.from_noise(np.ones((2, 1)), 1.0, 1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        Prewhitener.from_noise(np.ones((2, 100)), 1.0, 1.0)
