"""``recon simulate OUT.h5``: held-out MNI152 brain slices as a fastMRI multi-coil file (birdcage coil maps,
complex Gaussian noise at a stated SNR, the RSS of the noisy coil images as ``reconstruction_rss``). Sizes other
than the bundled 128 are resampled from it (``recon.data.brain.load_heldout``).

With ``--trajectory`` (``operators.trajectories``: radial, golden-angle, spiral) the slices are sampled along
that trajectory instead (``operators.NonCartesianMRI``, finufft at 1e-9 in double precision) and written in the
non-Cartesian layout of ``recon.data.noncartesian_io``, with the trajectory, Pipe-Menon density weights and the
noiseless RSS (the magnitude, as the maps are normalised) as reference. The noise per sample is the one a
fully sampled Cartesian acquisition of the same slice has at the stated SNR (the receiver's noise does not
depend on the trajectory), so a radial and a Cartesian file at the same ``--snr`` carry the same noise level.
"""
from __future__ import annotations

import torch

from operators import NonCartesianMRI, ifft2c, trajectories
from operators.checks import check_choice, check_int, check_real
from recon.data import results as io
from recon.pipelines.settings import SliceSpec, check_seed, select_slices
from recon.data import brain, noncartesian_io, rss, simulate, write_fastmri

RADIAL = ("radial", "golden-angle")
DEFAULT_SPOKES, DEFAULT_INTERLEAVES = 48, 16


def command(out, slices: SliceSpec = "0:10", coils: int = 8, snr: float = 30.0, size: int = 128,
            seed: int = 0, trajectory=None, spokes=None, interleaves=None) -> int:
    check_int("coils", coils, 1, 64)
    check_real("snr (dB)", snr, minimum=-40.0, maximum=200.0)
    check_int("size", size, 8, 1024)
    check_seed(seed)
    params = _trajectory_params(trajectory, spokes, interleaves)
    out = io.check_output(out, option="simulate output")
    vol = brain.load_heldout(size)
    x = vol[select_slices(slices, len(vol))]
    maps = simulate.coil_maps(coils, tuple(x.shape[-2:]))
    if trajectory is not None:
        return _noncartesian(out, x, maps, snr, seed, trajectory, params)
    k = simulate.simulate_multicoil(x, maps, snr_db=snr, seed=seed)
    target = rss(ifft2c(k))
    path = write_fastmri(out, k, target=target, attrs={"acquisition": "SIMULATED_MNI152", "patient_id": "mni152"})
    print(f"wrote {path}: {tuple(k.shape)} k-space, SNR {snr} dB")
    return 0


def _trajectory_params(trajectory, spokes, interleaves) -> dict:
    """The trajectory family's parameters from ``--spokes`` / ``--interleaves``, each only where it applies."""
    if trajectory is None:
        for option, value in (("--spokes", spokes), ("--interleaves", interleaves)):
            if value is not None:
                raise ValueError(f"{option} needs --trajectory (one of {', '.join(trajectories.available())})")
        return {}
    check_choice("trajectory", trajectory, trajectories.available())
    if trajectory in RADIAL:
        if interleaves is not None:
            raise ValueError(f"--interleaves is for spiral trajectories; the {trajectory} trajectory takes --spokes")
        return {"n_spokes": check_int("spokes", DEFAULT_SPOKES if spokes is None else spokes, 1, 10_000)}
    if spokes is not None:
        raise ValueError(f"--spokes is for radial trajectories; the {trajectory} trajectory takes --interleaves")
    return {"n_interleaves": check_int("interleaves", DEFAULT_INTERLEAVES if interleaves is None else interleaves,
                                       1, 10_000)}


def _noncartesian(out, x, maps, snr: float, seed: int, family: str, params: dict) -> int:
    shape = tuple(x.shape[-2:])
    traj = trajectories.get(family, **params)(shape)
    dcf = trajectories.density_compensation(traj, shape)
    A = NonCartesianMRI(maps.to(torch.complex128), traj, eps=1e-9)
    coil_images = maps.to(torch.complex128) * x.to(torch.complex128).unsqueeze(-3)
    y = A(x.to(torch.complex128))  # (S, C, K)
    # the per-sample noise of the fully sampled Cartesian k-space of each slice (fft2c is unitary)
    std = simulate.snr_to_noise_std(coil_images, snr, 3).reshape(-1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    y = y + std * torch.randn(y.shape, dtype=y.dtype, generator=g)
    data = y.to(torch.complex64).reshape(*y.shape[:2], *traj.shape[:2])
    target = rss(coil_images).to(torch.float32)
    path = noncartesian_io.write_noncartesian(
        out, data, traj, shape, density=dcf, target=target, family=family, params=params,
        attrs={"acquisition": "SIMULATED_MNI152", "patient_id": "mni152", "snr_db": float(snr)})
    readouts = "spokes" if family in RADIAL else "interleaves"
    print(f"wrote {path}: {tuple(data.shape[:2])} slices x coils, {traj.shape[0]} {family} {readouts} of "
          f"{traj.shape[1]} samples on a {shape[0]}x{shape[1]} grid, SNR {snr} dB")
    return 0

