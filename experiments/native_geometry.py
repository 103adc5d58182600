"""fastMRI files at their native geometry: the three protocols against the reference preprocessing, and
CG-SENSE, DDS and Score-MRI end to end through ``recon reconstruct`` on fastMRI-realistic files.

Files (written with plain h5py by ``recon.data.simulate.write_raw_fastmri``, held-out MNI152 slices resized
into the field): knee-like 15 coils x 640 x 372 (readout oversampled 2x, 2 + 2 dead phase-encode lines, an
object 344 columns wide, wider than the 320 crop), brain-like 16 x 640 x 320, and a knee-like test file holding
only the lines of its own fastMRI random 4x mask and no target. Recon matrix 320 x 320 in every header.

1. Protocol conformance on the same raw slice (relative max difference of the grid k-space / images):
   - full-fov: the RSS target as fastMRI computes it (``fastmri.ifft2c``, ``fastmri.rss``, ``center_crop``)
     against ours from the full-fov grid, and our dead lines against the padding fastMRI's ``SliceDataset``
     derives from the header;
   - image-crop: the coil images centre-cropped with ``fastmri.data.transforms.complex_center_crop`` (the
     offline preparation DDS and Score-MRI load) against ``geometry.crop_image``;
   - kspace-crop: csgm-mri-langevin's ``MVU_Estimator_Knees`` steps written with sigpy (dead-line removal with
     its even-count rule, ``sp.resize`` of the phase encode, readout FOV crop by ``sp.ifft``/``sp.resize``/
     ``sp.fft``) against ``geometry.prepare(..., "kspace-crop")``.
2. Reconstructions with the defaults of ``recon reconstruct`` (protocol auto = full-fov, fastMRI random 4x,
   centre fraction 0.08, bundled prior), PSNR/SSIM as the leaderboard computes them, seconds per slice; and the
   time of ESPIRiT at 640 x 372 (raw) and on the 320 x 372 full-fov grid.

    python experiments/native_geometry.py --slices 2 --out experiments/results/native_geometry.csv
"""
import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from operators import espirit, masks
from recon.data import results as io
from recon.pipelines.mri import MRISettings, reconstruct_file
from recon.data import brain, center_crop, geometry, load_fastmri, simulate

FILES = {"knee-like": dict(n_coils=15, encoded=(640, 372), obj=(300, 344), dead=(2, 2)),
         "brain-like": dict(n_coils=16, encoded=(640, 320), obj=(300, 300), dead=(0, 0))}


def _images(n, size):
    x = brain.load_heldout(128)[:n]
    parts = [F.interpolate(p[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for p in (x.real, x.imag)]
    return torch.complex(*parts)


def write_files(folder: Path, n: int) -> dict:
    paths = {}
    for name, spec in FILES.items():
        paths[name] = simulate.write_raw_fastmri(folder / f"{name}.h5", _images(n, spec["obj"]), spec["n_coils"],
                                                 spec["encoded"], (320, 320), spec["dead"])
    m = masks.RandomMask([0.08], [4])((1, 372), seed=3)
    spec = FILES["knee-like"]
    paths["knee-like test"] = simulate.write_raw_fastmri(folder / "knee-like-test.h5", _images(n, spec["obj"]),
                                                         spec["n_coils"], spec["encoded"], (320, 320), spec["dead"],
                                                         mask=m)
    return paths


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def conformance(path: Path) -> list:
    import fastmri
    import fastmri.data.transforms as T
    import sigpy as sp
    from fastmri.data.mri_data import SliceDataset

    vol = load_fastmri(path)
    k = vol.kspace(0)
    limits, width = vol.header.encoding_limits, vol.encoding_size[1]
    rows = []
    # full-fov: fastMRI's RSS target and its header padding
    g = geometry.prepare(k, "full-fov", (320, 320), limits=limits, encoded_width=width)
    ours = center_crop(geometry.ifft2c(g.kspace).abs().square().sum(0).sqrt(), (320, 320))
    ref = T.center_crop(fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(T.to_tensor(k.numpy())))), (320, 320))
    ds = SliceDataset(path.parent, challenge="multicoil", transform=None)
    attrs = next(a for (_, _, _, a, fname, _) in (ds[i] for i in range(len(ds))) if fname == path.name)
    fm_alive = np.zeros(k.shape[-1])
    fm_alive[attrs["padding_left"]:attrs["padding_right"]] = 1
    rows.append(dict(protocol="full-fov", reference="fastmri ifft2c + rss + center_crop (target)",
                     max_rel_diff=_rel(ours, ref.numpy()), dead_lines_agree=bool(np.array_equal(g.alive[0].numpy(),
                                                                                             fm_alive))))
    # image-crop: fastMRI's complex_center_crop of the coil images, back to k-space
    ours = geometry.crop_image(k, (320, 320))
    ref = fastmri.fft2c(T.complex_center_crop(fastmri.ifft2c(T.to_tensor(k.numpy())), (320, 320)))
    rows.append(dict(protocol="image-crop", reference="fastmri complex_center_crop (DDS / Score-MRI data)",
                     max_rel_diff=_rel(torch.view_as_real(ours).numpy(), ref.numpy()), dead_lines_agree=""))
    # kspace-crop: csgm-mri-langevin's MVU_Estimator_Knees steps with sigpy
    kn = k.numpy()
    energy = (np.abs(kn) ** 2).sum(axis=(0, 1))
    dead = np.where(energy < 1e-12)[0]
    front, back = np.sum(dead < kn.shape[-1] // 2), np.sum(dead > kn.shape[-1] // 2)
    if front % 2:
        dead = np.delete(dead, 0)
    if back % 2:
        dead = np.delete(dead, -1)
    ref = np.delete(kn, dead, axis=-1)
    ref = sp.resize(ref, (ref.shape[0], ref.shape[1], 320))
    ref = sp.fft(sp.resize(sp.ifft(ref, axes=(-2,)), (ref.shape[0], 320, ref.shape[2])), axes=(-2,))
    g = geometry.prepare(k, "kspace-crop", (320, 320), size=(320, 320), limits=limits, encoded_width=width)
    rows.append(dict(protocol="kspace-crop", reference="csgm MVU_Estimator_Knees steps (sigpy)",
                     max_rel_diff=_rel(g.kspace.numpy(), ref), dead_lines_agree=""))
    return rows


def timings(path: Path) -> dict:
    vol = load_fastmri(path)
    k = vol.kspace(0)
    m = masks.RandomMask([0.08], [4])((1, k.shape[-1]), seed=0)
    t = time.time()
    espirit.maps_for_mask(m * k, m)
    raw = time.time() - t
    g = geometry.prepare(k, "full-fov", (320, 320), limits=vol.header.encoding_limits,
                         encoded_width=vol.encoding_size[1])
    t = time.time()
    espirit.maps_for_mask(m * g.kspace, m)
    return {"espirit_raw_640x372_s": round(raw, 2), "espirit_grid_320x372_s": round(time.time() - t, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=2)
    ap.add_argument("--out", default="experiments/results/native_geometry.csv")
    ap.add_argument("--score-mri-steps", type=int, default=100)
    ap.add_argument("--prior", default=None, help="prior of the samplers (default: recon reconstruct's)")
    ap.add_argument("--files", default=None, help="comma-separated subset of: knee-like, brain-like, knee-like test")
    ap.add_argument("--methods", default="cg-sense,dds,score-mri")
    ap.add_argument("--skip-conformance", action="store_true", help="only the reconstructions")
    ap.add_argument("--prior-scale", action="store_true",
                    help="only: held-out slice 0 at the prior's own 128 x 128 scale in the 15 x 640 x 372 geometry, "
                         "CG-SENSE and DDS")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.prior_scale:
        with tempfile.TemporaryDirectory() as d:
            path = simulate.write_raw_fastmri(Path(d) / "prior-scale.h5", brain.load_heldout(128)[:1], 15,
                                              (640, 372), (320, 320), (2, 2))
            for method in ("cg-sense", "dds"):
                s = reconstruct_file(path, Path(d) / f"{method}.h5", MRISettings(method=method), progress=False)
                print(method, {k: round(v, 4) for k, v in s["summary"].items()})
        return
    with tempfile.TemporaryDirectory() as d:
        paths = write_files(Path(d), args.slices)
        conf, tim = [], {}
        if not args.skip_conformance:
            conf = conformance(paths["knee-like"])
            print("| protocol | reference | max relative difference | dead lines as fastMRI |\n|---|---|---|---|")
            for r in conf:
                print(f"| {r['protocol']} | {r['reference']} | {r['max_rel_diff']:.2e} | {r['dead_lines_agree']} |")
            tim = timings(paths["knee-like"])
            print(f"ESPIRiT (15 coils, 4x random mask): {tim}")
        rows = []
        chosen = args.files.split(",") if args.files else list(paths)
        all_methods = (("cg-sense", None), ("dds", 50), ("score-mri", args.score_mri_steps))
        for name, path in ((n, p) for n, p in paths.items() if n in chosen):
            for method, steps in (m for m in all_methods if m[0] in args.methods.split(",")):
                st = MRISettings(method=method, steps=steps, **({"prior": args.prior} if args.prior else {}))
                t = time.time()
                res = reconstruct_file(path, Path(d) / f"{name}-{method}.h5", st, progress=False)
                sec = (time.time() - t) / len(res["slices"])
                with h5py.File(Path(d) / f"{name}-{method}.h5") as h:
                    shape, protocol = h["reconstruction"].shape, h.attrs["protocol_used"]
                s = res["summary"]
                row = dict(file=name, method=method, prior=st.prior if method != "cg-sense" else "", steps=steps or "", protocol=protocol, shape="x".join(map(str, shape)),
                           psnr=round(s["psnr"], 2) if s else "", ssim=round(s["ssim"], 4) if s else "",
                           seconds_per_slice=round(sec, 1))
                rows.append(row)
                print(row, flush=True)
    io.write_csv(args.out, rows, list(rows[0]))
    io.write_json(Path(args.out).with_suffix(".json"), {"conformance": conf, "timings": tim})
    print("| file | method | protocol | output | PSNR | SSIM | s/slice |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['method']}{' (' + str(r['steps']) + ' steps)' if r['steps'] else ''} | "
              f"{r['protocol']} | {r['shape']} | {r['psnr']} | {r['ssim']} | {r['seconds_per_slice']} |")


if __name__ == "__main__":
    main()
