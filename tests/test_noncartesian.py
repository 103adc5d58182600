"""Non-Cartesian MRI: the NUFFT against a direct non-uniform DFT, adjointness, the Toeplitz normal operator,
trajectories and density compensation, coil maps from non-Cartesian data, the samplers running unchanged, the
HDF5 layout and the command line."""
import math

import h5py
import pytest
import torch

from operators import MultiCoilMRI, NonCartesianMRI, adjoint_error, fft2c, nufft, trajectories
from operators.noncartesian import calibration_maps, calibration_width, coil_images
from recon import classical, metrics, priors, samplers
from recon.data import DataError, brain, noncartesian_io, simulate

BACKENDS = [b for b in ("finufft", "torchkbnufft") if b in nufft.available()]


def _random_points(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi).to(dtype)


def _complex(shape, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.complex128).to(dtype)


@pytest.fixture(scope="module")
def radial_problem():
    """A held-out brain slice at 64 x 64, 8 birdcage coils, 40 golden-angle spokes, Cartesian-equivalent 30 dB."""
    n = 64
    x = brain.load_heldout(n)[5]
    maps = simulate.coil_maps(8, (n, n))
    traj = trajectories.get("golden-angle", n_spokes=40)((n, n))
    dcf = trajectories.density_compensation(traj, (n, n))
    y = NonCartesianMRI(maps, traj)(x)
    g = torch.Generator().manual_seed(0)
    std = simulate.snr_to_noise_std(maps * x, 30.0, 3)
    y = y + std * torch.randn(y.shape, dtype=y.dtype, generator=g)
    return x, maps, traj, dcf, y


# --------------------------------------------------------------------------- the transform


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_nufft_equals_a_direct_nonuniform_dft(backend, dtype):
    """32 x 32 image, 500 random frequencies: 1e-4 relative (finufft ~2e-6, torchkbnufft ~5e-5)."""
    om = _random_points(500)
    for h, w in ((32, 32), (31, 33)):
        x = _complex((h, w), 1, torch.complex128)
        ref = nufft.direct_nudft(x, om) / math.sqrt(h * w)
        A = NonCartesianMRI(torch.ones(1, h, w, dtype=dtype), om, backend=backend)
        y = A(x.to(dtype))[0].to(torch.complex128)
        assert float((y - ref).norm() / ref.norm()) < 1e-4


def test_on_grid_frequencies_it_is_fft2c():
    for h, w in ((16, 16), (15, 18)):
        u = 2 * math.pi * (torch.arange(h, dtype=torch.float64) - h // 2) / h
        v = 2 * math.pi * (torch.arange(w, dtype=torch.float64) - w // 2) / w
        grid = torch.stack(torch.meshgrid(u, v, indexing="ij"), -1)  # (H, W, 2): K = H W in C order
        maps = _complex((3, h, w), 2)
        x = _complex((h, w), 3)
        A, B = NonCartesianMRI(maps, grid), MultiCoilMRI(maps, torch.ones(h, w))
        assert torch.allclose(A(x), B(x).reshape(3, -1), atol=1e-5)
        y = _complex((3, h * w), 4)
        assert torch.allclose(A.H(y), B.H(y.reshape(3, h, w)), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adjoint_batched_over_slices_and_samples(backend):
    maps = _complex((2, 4, 24, 20), 5)  # 2 slices sharing one trajectory
    traj = trajectories.radial(12, 48, golden_angle=True)
    A = NonCartesianMRI(maps, traj, backend=backend)
    assert A.ishape == (2, 24, 20) and A.oshape == (2, 4, 12 * 48)
    assert adjoint_error(A, batch=(3,)) < 1e-5
    assert adjoint_error(A.to(torch.float64), batch=(3,), dtype=torch.complex128) < 1e-12
    x = _complex((3, 2, 24, 20), 6)
    single = NonCartesianMRI(maps[1], traj, backend=backend)
    assert torch.allclose(A(x)[:, 1], single(x[:, 1]), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_toeplitz_normal_operator_equals_adjoint_of_forward(backend):
    maps = _complex((4, 32, 32), 7)
    A = NonCartesianMRI(maps, trajectories.radial(20, 64, golden_angle=True), backend=backend)
    x = _complex((2, 32, 32), 8)
    ref = A.H(A(x))
    assert float((A.normal(x) - ref).norm() / ref.norm()) < 1e-4
    u, v = _complex((32, 32), 9), _complex((32, 32), 10)  # exactly Hermitian: <u, N v> = conj <v, N u>
    assert abs(torch.vdot(u.flatten(), A.normal(v).flatten()) -
               torch.vdot(v.flatten(), A.normal(u).flatten()).conj()) < 1e-4 * float(u.norm() * v.norm())
    plain = NonCartesianMRI(maps, A.trajectory, backend=backend, toeplitz=False)
    assert torch.allclose(plain.normal(x), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_through_the_operator_are_the_adjoint(backend):
    """DPS differentiates ||y - A x||^2: its gradient (PyTorch's conjugate convention) is 2 A^H (A x - y)."""
    A = NonCartesianMRI(_complex((3, 16, 16), 11), trajectories.radial(8, 32), backend=backend)
    y = _complex((3, 8 * 32), 12)
    x = _complex((16, 16), 13).requires_grad_(True)
    (A(x) - y).abs().square().sum().backward()
    expected = 2 * A.H(A(x.detach()) - y)
    assert torch.allclose(x.grad, expected, atol=1e-4 * float(expected.abs().max()))


def test_contract_norm_pinv_support_and_scaling(radial_problem):
    x, maps, traj, dcf, y = radial_problem
    A = NonCartesianMRI(maps, traj, dcf=dcf)
    ref = A.to(torch.float64)
    assert abs(A.norm() - ref.norm()) < 1e-4 * ref.norm()
    assert abs((3 * A).norm() - 3 * A.norm()) < 1e-9 and A.normalized().norm() == pytest.approx(1.0, rel=1e-9)
    assert A.pinv_method == "cg" and A.support.all()
    assert torch.allclose((2.0 * A).pinv(2.0 * y), A.pinv(y), atol=1e-5 * float(A.pinv(y).abs().max()))
    grid = NonCartesianMRI(maps, traj, dcf=dcf, pinv_method="gridding")
    assert grid.pinv_method == "gridding" and (2.0 * grid).pinv_method == "gridding"
    assert torch.allclose(grid.pinv(y), A.gridding(y))
    gt = x.abs()
    assert metrics.psnr(gt, A.pinv(y).abs()) > metrics.psnr(gt, A.gridding(y).abs()) > 20


# --------------------------------------------------------------------------- trajectories and density


def test_noise_estimate_from_the_outer_rings(radial_problem):
    """Pure noise gives its std back; on the brain slice the outer rings still hold some signal, so the estimate
    is an upper bound of the right order; the estimate scales with the data and is one value per slice."""
    x, maps, traj, dcf, y = radial_problem
    A = NonCartesianMRI(maps, traj, dcf=dcf)
    noise = 0.02 * _complex(y.shape, seed=3)
    assert abs(float(A.noise_std(noise)) / 0.02 - 1) < 0.08
    std = float(simulate.snr_to_noise_std(maps * x, 30.0, 3))
    assert 0.9 < float(A.noise_std(y)) / std < 2.0
    assert torch.allclose(A.noise_std(5 * y), 5 * A.noise_std(y), rtol=1e-5)
    both = torch.stack([noise, 2 * noise])
    est = NonCartesianMRI(torch.stack([maps, maps]), traj).noise_std(both)
    assert est.shape == (2,) and torch.allclose(est[1], 2 * est[0], rtol=1e-5)


def test_trajectories_shapes_ranges_and_registry():
    r = trajectories.get("radial", n_spokes=10)((32, 32))
    assert r.shape == (10, 64, 2) and r.dtype == torch.float32
    pi32 = float(torch.tensor(math.pi))  # the bounds in the trajectory's own precision
    assert float(r.min()) >= -pi32 and float(r.max()) < pi32
    assert torch.allclose(r[:, 32], torch.zeros(10, 2))  # DC at the middle of each spoke
    angles = torch.atan2(r[:, -1, 0], r[:, -1, 1]).remainder(math.pi)
    assert torch.allclose(torch.diff(angles), torch.full((9,), math.pi / 10), atol=1e-5)
    ga = trajectories.get("golden-angle", n_spokes=5)((32, 32))
    ga_angles = torch.atan2(ga[:, -1, 0], ga[:, -1, 1]).remainder(math.pi)
    assert torch.allclose(torch.diff(ga_angles).remainder(math.pi), torch.full((4,), trajectories.GOLDEN_ANGLE),
                          atol=1e-5)
    assert not torch.equal(trajectories.get("radial", n_spokes=10)((32, 32), seed=3), r)
    sp = trajectories.get("spiral", n_interleaves=4)((32, 32))
    assert sp.shape[0] == 4 and float(sp.min()) >= -pi32 and float(sp.max()) < pi32
    radius = sp.norm(dim=-1)
    assert radius[:, 0].max() == 0 and radius.max() > 0.99 * math.pi
    # variable density: the first half of the samples stays inside radius pi / 2^alpha
    assert float(radius[:, : sp.shape[1] // 2].max()) <= math.pi * 0.5 ** 1.5 + 1e-3
    assert trajectories.available() == ["golden-angle", "radial", "spiral"]
    with pytest.raises(ValueError, match="did you mean 'radial'"):
        trajectories.get("radail", n_spokes=3)
    with pytest.raises(ValueError, match="needs the parameter"):
        trajectories.get("spiral")
    with pytest.raises(ValueError, match="unknown key 'spokes'"):
        trajectories.get("radial", spokes=3)


def test_pipe_menon_weights_are_the_radial_ramp_and_flatten_the_psf():
    """Nyquist-sampled radial at 64 x 64 (101 spokes): the weights equal the area per sample (ramp pi rho dr /
    n_spokes) to 6%, and the k-space of the density-compensated point-spread function is flat inside the disc,
    where without weights it varies like the sampling density."""
    n, spokes = 64, 101
    traj = trajectories.radial(spokes, 2 * n)
    w = trajectories.density_compensation(traj, (n, n))
    assert w.shape == (spokes, 2 * n)
    rho = traj.reshape(-1, 2).double().norm(dim=-1) * n / (2 * math.pi)
    ramp = 0.5 * math.pi * rho / spokes
    mid = (rho > 4) & (rho < n / 2 - 4)
    assert float(((w.reshape(-1) / ramp)[mid] - 1).abs().max()) < 0.06

    u = torch.arange(n) - n // 2
    inside = (u[:, None] ** 2 + u[None, :] ** 2).sqrt() < 0.8 * n / 2

    def psf_spectrum(weights):
        A = NonCartesianMRI(torch.ones(1, n, n, dtype=torch.complex64), traj, dcf=weights)
        return fft2c(A.gridding(torch.ones(1, A.n_points, dtype=torch.complex64))).abs()[inside]

    flat, raw = psf_spectrum(w), psf_spectrum(torch.ones_like(w))
    assert float(flat.std() / flat.mean()) < 0.1 and float(raw.std() / raw.mean()) > 0.5
    # in cell-area units the flat level is 1: gridding keeps the image's scale
    assert float(flat.mean()) == pytest.approx(1.0, abs=0.05)


def test_fully_sampled_centre_of_radial():
    traj = trajectories.radial(48, 256)
    width = calibration_width(traj, (128, 128))
    assert 16 <= width <= 24  # the spokes are a cell apart out to ~48 / pi cells
    assert calibration_width(trajectories.radial(4, 64), (32, 32)) < 4


def test_coil_maps_from_the_gridded_centre(radial_problem):
    """ESPIRiT on the inverse-NUFFT (density-preconditioned CG) k-space centre: maps within a few percent of the
    simulated sensitivities on the object and cropped to it; plain gridding (n_iter=0) is markedly worse."""
    x, maps_true, traj, dcf, y = radial_problem
    obj = x.abs() > 0.05

    def error(m):
        phase = (m.conj() * maps_true).sum(0)
        m = m * phase / phase.abs().clamp_min(1e-12)
        return float((m - maps_true).norm(dim=0)[obj].mean())

    maps = calibration_maps(y, traj, (64, 64), dcf)
    assert error(maps) < 0.03
    support = maps.abs().square().sum(0) > 0
    assert bool(support[obj].float().mean() > 0.99) and bool(support.float().mean() < 0.9)
    assert error(calibration_maps(y, traj, (64, 64), dcf, n_iter=0)) > 2 * error(maps)
    k = fft2c(coil_images(y, traj, (64, 64), dcf))
    centre = (slice(None), slice(28, 36), slice(28, 36))
    truth = fft2c(maps_true * x)[centre]
    assert float((k[centre] - truth).norm() / truth.norm()) < 0.03


# --------------------------------------------------------------------------- samplers and baselines


@pytest.fixture(scope="module")
def prior():
    return priors.load("bundled:mni-brain-128")


@pytest.mark.parametrize("sampler", [samplers.DDS(steps=8), samplers.ScoreMRI(steps=6),
                                     samplers.ScoreALD(n_levels=6, steps_each=1), samplers.DPS(steps=6)],
                         ids=lambda s: s.name)
def test_posterior_samplers_run_unchanged(sampler, prior):
    n = 32
    x = brain.load_heldout(n)[5]
    maps = simulate.coil_maps(4, (n, n))
    traj = trajectories.get("golden-angle", n_spokes=24)((n, n))
    A = NonCartesianMRI(maps, traj)
    out = sampler(A(x), A, prior, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, n, n) and out.dtype == torch.complex64 and torch.isfinite(out.abs()).all()


def test_dds_beats_cg_sense_and_gridding_at_128(prior):
    """The study's setting, shortened: a held-out slice at 128 x 128, 8 coils, 48 golden-angle spokes, ESPIRiT maps
    from the data; DDS with 20 steps (the study runs 50) already leads CG-SENSE (experiments/noncartesian.py)."""
    n = 128
    x = brain.load_heldout(n)[5]
    maps_true = simulate.coil_maps(8, (n, n))
    traj = trajectories.get("golden-angle", n_spokes=48)((n, n))
    dcf = trajectories.density_compensation(traj, (n, n))
    y = NonCartesianMRI(maps_true, traj)(x)
    std = simulate.snr_to_noise_std(maps_true * x, 30.0, 3)
    y = y + std * torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
    A = NonCartesianMRI(calibration_maps(y, traj, (n, n), dcf), traj, dcf=dcf)
    gt = x.abs()
    dds = samplers.DDS(steps=20)(y, A, prior, generator=torch.Generator().manual_seed(0))[0]
    cg = classical.cg_sense(y, A)
    assert metrics.psnr(gt, dds.abs()) > metrics.psnr(gt, cg.abs()) + 1 > metrics.psnr(gt, A.gridding(y).abs()) + 10
    assert torch.isfinite(classical.tv(y, A, lam=1e-4, max_iter=3).abs()).all()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_errors():
    maps = torch.ones(2, 16, 16, dtype=torch.complex64)
    traj = trajectories.radial(4, 32)
    cases = [
        (lambda: NonCartesianMRI(maps, traj * 1.1), r"\[-pi, pi\) radians per sample"),
        (lambda: NonCartesianMRI(maps, torch.full((3, 2), math.pi)), r"\[-pi, pi\)"),
        (lambda: NonCartesianMRI(maps, traj[..., :1]), r"shape \(\.\.\., K, 2\)"),
        (lambda: NonCartesianMRI(maps, torch.zeros(2)), r"shape \(\.\.\., K, 2\)"),
        (lambda: NonCartesianMRI(maps, traj.masked_fill(traj > 1, float("nan"))), "NaN or Inf"),
        (lambda: NonCartesianMRI(maps, traj, dcf=torch.ones(100)), r"one entry per trajectory point: shape \(4, 32\)"),
        (lambda: NonCartesianMRI(maps, traj, dcf=-torch.ones(4, 32)), ">= 0"),
        (lambda: NonCartesianMRI(maps, traj, pinv_method="gridding"), "needs the density weights"),
        (lambda: NonCartesianMRI(maps, traj, pinv_method="exact"), "unknown pinv_method 'exact'"),
        (lambda: NonCartesianMRI(maps, traj, backend="cufft"), "unknown NUFFT backend"),
        (lambda: NonCartesianMRI(maps[0, 0], traj), r"\(\.\.\., C, H, W\)"),
        (lambda: NonCartesianMRI(maps, traj)(torch.ones(8, 8, dtype=torch.complex64)), r"expects input of shape"),
        (lambda: NonCartesianMRI(maps, traj).H(torch.ones(2, 100, dtype=torch.complex64)), r"expects input of shape"),
        (lambda: NonCartesianMRI(maps, traj).gridding(torch.ones(2, 128, dtype=torch.complex64)), "density weights"),
        (lambda: calibration_maps(torch.ones(2, 128, dtype=torch.complex64), traj, (16, 16)), "at least 4 x 4"),
    ]
    for make, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as err:
            make()
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- files and the command line


def test_hdf5_round_trip_and_bad_files(tmp_path):
    traj = trajectories.radial(6, 32)
    data = _complex((2, 3, 6, 32), 14)
    target = torch.rand(2, 16, 16)
    dcf = trajectories.density_compensation(traj, (16, 16))
    path = noncartesian_io.write_noncartesian(tmp_path / "r.h5", data, traj, (16, 16), density=dcf, target=target,
                                              family="radial", params={"n_spokes": 6})
    assert noncartesian_io.is_noncartesian(path)
    vol = noncartesian_io.load_noncartesian(path)
    assert (vol.num_slices, vol.num_coils, vol.matrix, vol.family) == (2, 3, (16, 16), "radial")
    assert torch.equal(vol.samples(1), data[1].reshape(3, -1))
    assert torch.equal(vol.trajectory, traj) and torch.equal(vol.density, dcf) and torch.equal(vol.target(0), target[0])
    with h5py.File(path, "r") as f:
        assert f.attrs["number_of_samples"] == 32 and f.attrs["active_channels"] == 3
        assert b"<trajectory>radial</trajectory>" in f["ismrmrd_header"][()]
    with h5py.File(path, "a") as f:
        f["traj"][0, 0, 0] = 4.0
    with pytest.raises(DataError, match=r"r.h5: 'traj' must lie in \[-pi, pi\)"):
        noncartesian_io.load_noncartesian(path)
    with pytest.raises(DataError, match="density weights have shape"):
        noncartesian_io.write_noncartesian(tmp_path / "b.h5", data, traj, (16, 16), density=torch.ones(5))


def _recon(argv, capsys):
    from recon.cli import main
    code = main(["--quiet"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_and_reconstruct_from_the_command_line(tmp_path, capsys):
    sim = tmp_path / "radial.h5"
    code, out, _ = _recon(["simulate", str(sim), "--trajectory", "golden-angle", "--spokes", "24", "--size", "32",
                           "--slices", "0:1", "--coils", "4"], capsys)
    assert code == 0 and "24 golden-angle spokes of 64 samples" in out
    vol = noncartesian_io.load_noncartesian(sim)
    assert vol.shape == (1, 4, 24, 64) and vol.density is not None and vol.has_target
    res = tmp_path / "res.h5"
    code, out, err = _recon(["reconstruct", str(sim), "--sampler", "cg-sense", "--out", str(res)], capsys)
    assert code == 0, err
    psnr = float(out.split("PSNR")[1].split()[0])
    assert psnr > 25
    with h5py.File(res, "r") as f:
        assert f["reconstruction"].shape == (1, 32, 32) and f["traj"].shape == (24, 64, 2)
        assert f.attrs["protocol_used"] == "non-cartesian"
    before = sim.read_bytes()
    for option in (["--mask", "random"], ["--acceleration", "4"], ["--protocol", "full-fov"]):
        code, _, err = _recon(["reconstruct", str(sim), "--out", str(tmp_path / "x.h5")] + option, capsys)
        assert code == 2 and err.count("\n") == 1 and f"{option[0]} is a Cartesian sampling option" in err
    assert sim.read_bytes() == before
    code, _, err = _recon(["simulate", str(tmp_path / "s.h5"), "--trajectory", "spiral", "--spokes", "3"], capsys)
    assert code == 2 and "--spokes is for radial trajectories" in err
    code, _, err = _recon(["simulate", str(tmp_path / "s.h5"), "--interleaves", "3"], capsys)
    assert code == 2 and "--interleaves needs --trajectory" in err


@pytest.mark.skipif("finufft" not in BACKENDS or "torchkbnufft" not in BACKENDS, reason="needs both libraries")
def test_backends_agree_and_auto_is_finufft_on_the_cpu():
    maps = _complex((2, 20, 20), 15)
    traj = trajectories.get("spiral", n_interleaves=3)((20, 20))
    a = NonCartesianMRI(maps, traj)
    b = NonCartesianMRI(maps, traj, backend="torchkbnufft")
    assert a.backend_for("cpu") == "finufft" and b.backend_for("cpu") == "torchkbnufft"
    x = _complex((20, 20), 16)
    assert float((a(x) - b(x)).norm() / a(x).norm()) < 1e-4
    assert float((a.normal(x) - b.normal(x)).norm() / a.normal(x).norm()) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_it_matches_the_cpu():
    maps = _complex((4, 32, 32), 17)
    traj = trajectories.radial(16, 64, golden_angle=True)
    cpu = NonCartesianMRI(maps, traj)
    gpu = NonCartesianMRI(maps.cuda(), traj)
    assert gpu.backend_for("cuda") == "torchkbnufft"
    x = _complex((2, 32, 32), 18)
    assert float((gpu(x.cuda()).cpu() - cpu(x)).norm() / cpu(x).norm()) < 1e-4
    assert float((gpu.normal(x.cuda()).cpu() - cpu.normal(x)).norm() / cpu.normal(x).norm()) < 1e-4



def test_dds_default_tv_is_off_for_radial_data_unless_asked_for():
    """NonCartesianMRI samples non-Cartesian k-space, where DDS's default leaves the in-plane TV off (it cost PSNR on
    radial data); a normalised copy says so too, and an explicit tv_xy still wins."""
    from recon.samplers import dc
    maps = torch.ones(2, 16, 16, dtype=torch.complex64)
    A = NonCartesianMRI(maps, trajectories.radial(8, 32))
    assert A.sampling == "non-cartesian" and A.normalized().sampling == "non-cartesian"
    calls = []
    real = dc.TVConsistency.__call__

    def spy(self, *a, **k):
        calls.append(self.lam)
        return real(self, *a, **k)

    from recon.priors.gaussian import GaussianDenoiser
    from recon.priors.prior import DiffusionPrior
    prior = DiffusionPrior(GaussianDenoiser(torch.zeros(2, 16, 16, dtype=torch.float64),
                                            0.1 * torch.eye(512, dtype=torch.float64)), channels="complex")
    y = A(torch.ones(16, 16, dtype=torch.complex64))
    dc.TVConsistency.__call__ = spy
    try:
        samplers.DDS(steps=2)(y, A, prior, generator=torch.Generator().manual_seed(0))
        assert calls == []
        samplers.DDS(steps=2, tv_xy=1e-4)(y, A, prior, generator=torch.Generator().manual_seed(0))
        assert calls and set(calls) == {1e-4}
    finally:
        dc.TVConsistency.__call__ = real
