"""ISMRMRD/MRD input: the gain of noise prewhitening on correlated coil noise, and the read speed of a large file.

1. Prewhitening. Held-out MNI152 slices (128 x 128) inside a 2x oversampled readout (encoded 256 x 128), 8
   birdcage coils (sum |S|^2 = 1), written with the ``ismrmrd`` package by ``recon.data.mrd_simulate``: noise
   readouts, imaging lines every 3rd phase encode, a separate calibration block of 16 central lines, 2 averages,
   reverse readouts, navigator / phase-correction / dummy readouts, and coil noise with a correlated covariance
   (channel noise std differing by up to 9x, correlations up to 0.6). Each slice is read with and without
   prewhitening (``load_mrd(..., prewhiten=False)``) and reconstructed on the full-fov protocol with ESPIRiT maps
   from the calibration lines (for whitened data rescaled by ``prewhiten.intensity_preserving_maps``): CG-SENSE
   (``recon.classical``, 30 iterations) and DDS (``samplers.DDS()``, the bundled ``brain-synth-128`` prior) with
   the noise weight estimated from the data (``sigma_y="auto"``) or, for whitened data, the level the noise
   acquisitions give (``sigma_y=vol.noise_std``). PSNR and SSIM of the magnitude against the simulated image.
2. Read speed. A 15-coil 640 x 372 x 30-slice file (11160 readouts of 640 samples, 256 noise readouts; 0.86 GB):
   opening it (header, acquisition table, noise covariance), reading every slice as (15, 640, 372) k-space
   (placement, prewhitening), and, for comparison, reading its acquisitions one by one with the ``ismrmrd``
   package's ``Dataset.read_acquisition``.

    OMP_NUM_THREADS=2 python experiments/mrd_prewhitening.py --slices 3 --out experiments/results/mrd_prewhitening.json
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import ismrmrd
import numpy as np
import torch

from operators import MultiCoilMRI, espirit
from recon import classical, metrics, priors, samplers
from recon.data import brain, center_crop, geometry, mrd, mrd_simulate, simulate
from recon.data.prewhiten import intensity_preserving_maps

COILS, N = 8, 128


def covariance(n_coils: int, seed: int = 0) -> np.ndarray:
    """A coil noise covariance with unequal channel levels and strong correlations, normalised to trace C."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_coils, n_coils)) + 1j * rng.standard_normal((n_coils, n_coils))
    levels = np.diag(np.linspace(0.5, 3.0, n_coils))
    cov = levels @ (a @ a.conj().T / n_coils + 0.2 * np.eye(n_coils)) @ levels
    return cov / np.real(np.trace(cov)) * n_coils


def simulate_file(path: Path, n_slices: int, noise: float, seed: int) -> torch.Tensor:
    x = brain.load_heldout(N)[:n_slices]
    img = torch.zeros(n_slices, 2 * N, N, dtype=torch.complex64)
    img[:, N // 2:N // 2 + N] = x
    maps = simulate.coil_maps(COILS, (2 * N, N))
    lines = np.zeros(N, bool)
    lines[::3] = True
    mrd_simulate.simulate_cartesian(path, img, maps, noise ** 2 * covariance(COILS, seed), lines=lines,
                                    calibration=16, averages=2, noise_readouts=256, noise_bandwidth=0.79,
                                    noise_dwell_us=5.0, dwell_us=7.8, seed=seed)
    return x.abs()


def reconstruct(vol, i: int, prior, method: str, sigma_y="auto") -> torch.Tensor:
    grid = geometry.prepare(vol.kspace(i), "full-fov", vol.recon_size[:2], file_mask=vol.mask_of(i),
                            limits=vol.header.encoding_limits, encoded_width=vol.encoding_size[1])
    y, m = grid.kspace, grid.mask
    maps = espirit.maps_for_mask(y, m)
    if vol.prewhitened:
        maps = intensity_preserving_maps(maps, vol.prewhitener.inverse())
    A = MultiCoilMRI(maps, m)
    if method == "cg-sense":
        x = classical.cg_sense(y, A, max_iter=30)
    else:
        x = samplers.DDS(sigma_y=sigma_y)(y, A, prior, generator=torch.Generator().manual_seed(i))[0]
    return center_crop(x, grid.crop).abs()


def prewhitening_study(folder: Path, n_slices: int, noise: float, dds: bool) -> list:
    path = folder / "correlated.mrd.h5"
    truth = simulate_file(path, n_slices, noise, seed=1)
    white, plain = mrd.load_mrd(path), mrd.load_mrd(path, prewhiten=False)
    prior = priors.load("bundled:brain-synth-128") if dds else None
    runs = [("CG-SENSE", plain, "cg-sense", None), ("CG-SENSE", white, "cg-sense", None)]
    if dds:
        runs += [("DDS, sigma_y auto", plain, "dds", "auto"), ("DDS, sigma_y auto", white, "dds", "auto"),
                 ("DDS, sigma_y = noise_std", white, "dds", white.noise_std)]
    rows = []
    for name, vol, method, sigma in runs:
        t = time.perf_counter()
        p, s = [], []
        for i in range(n_slices):
            x = reconstruct(vol, i, prior, method, sigma)
            ref = truth[i]
            p.append(metrics.psnr(ref, x, float(ref.max())))
            s.append(metrics.ssim(ref, x, float(ref.max())))
        rows.append({"method": name, "prewhitened": vol.prewhitened, "psnr": float(np.mean(p)),
                     "ssim": float(np.mean(s)), "psnr_per_slice": p,
                     "seconds_per_slice": (time.perf_counter() - t) / n_slices})
    rows.append({"noise_std": white.noise_std, "prewhitener": white.prewhitener.describe()})
    return rows


def read_speed(folder: Path, compare_package: bool) -> dict:
    path = folder / "large.mrd.h5"
    C, H, W, S = 15, 640, 372, 30
    t = time.perf_counter()
    maps = torch.ones(C, H, W, dtype=torch.complex64) / C ** 0.5
    rng = np.random.default_rng(0)
    acqs = [mrd_simulate.acquisition(mrd_simulate.correlated_noise((C, H), np.eye(C), rng),
                                     [ismrmrd.ACQ_IS_NOISE_MEASUREMENT]) for _ in range(256)]
    hdr = mrd_simulate.header((H, W, 1), (H // 2, 320, 1), (440.0, 220.0, 3.0), (220.0, 220.0, 3.0), C,
                              {"kspace_encoding_step_1": (0, W - 1, W // 2), "slice": (0, S - 1, 0)})
    line = (maps * 1e-3)[:, :, 0].numpy()
    for ky in range(W):                       # interleaved multi-slice order: every slice at one line, then the next
        for s in range(S):
            acqs.append(mrd_simulate.acquisition(line + mrd_simulate.correlated_noise((C, H), np.eye(C), rng, 1e-5),
                                                 kspace_encode_step_1=ky, slice=s, center_sample=H // 2,
                                                 position=(0.0, 0.0, 3.0 * s), read_dir=(1, 0, 0),
                                                 phase_dir=(0, 1, 0), slice_dir=(0, 0, 1)))
    mrd_simulate.write(path, hdr, acqs)
    del acqs
    out = {"file_gb": path.stat().st_size / 1e9, "write_s": time.perf_counter() - t}
    t = time.perf_counter()
    vol = mrd.load_mrd(path)
    out["open_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(vol.num_slices):
        k = vol.kspace(i)
    out["read_all_slices_s"] = time.perf_counter() - t
    out["shape"] = [vol.num_slices, *k.shape]
    out["prewhitened"] = vol.prewhitened
    if compare_package:
        t = time.perf_counter()
        ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r")
        for j in range(ds.number_of_acquisitions()):
            ds.read_acquisition(j)
        ds.close()
        out["ismrmrd_read_acquisition_s"] = time.perf_counter() - t
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.02, help="coil noise scale (the image's maximum is about 1)")
    ap.add_argument("--no-dds", action="store_true")
    ap.add_argument("--no-package-read", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = prewhitening_study(folder, args.slices, args.noise, not args.no_dds)
        print("| method | prewhitened | PSNR (dB) | SSIM | s / slice |\n|---|---|---|---|---|")
        for r in rows[:-1]:
            print(f"| {r['method']} | {'yes' if r['prewhitened'] else 'no'} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                  f"{r['seconds_per_slice']:.1f} |")
        print(f"noise: {rows[-1]['prewhitener']}; whitened noise std {rows[-1]['noise_std']:.4g}")
        speed = read_speed(folder, not args.no_package_read)
        print(f"\n15 coils x 640 x 372 x 30 slices ({speed['file_gb']:.2f} GB, written in {speed['write_s']:.1f} s): "
              f"open {speed['open_s']:.2f} s, every slice read and prewhitened {speed['read_all_slices_s']:.2f} s"
              + (f"; ismrmrd Dataset.read_acquisition of every readout {speed['ismrmrd_read_acquisition_s']:.1f} s"
                 if "ismrmrd_read_acquisition_s" in speed else ""))
    if args.out:
        args.out.write_text(json.dumps({"prewhitening": rows, "read_speed": speed, "args": vars(args) | {
            "out": str(args.out)}}, indent=1))


if __name__ == "__main__":
    main()
