"""The ``recon`` command.

    recon demo [--out out/demo.png]          DDS with the bundled prior on a simulated 8-coil held-out brain slice (4x)
    recon demo --ct                          DDS with the bundled CT prior on a 30-view sparse-view phantom stack
    recon reconstruct FILE.h5 [--sampler dds] reconstruct slices of a fastMRI file into an HDF5 result
    recon reconstruct-ct FILE [--views 30]   sparse-view / limited-angle CT from a sinogram, image or DICOM
    recon uncertainty FILE.h5 --samples 32   mean, std and quantile maps from repeated posterior samples
    recon sweep CONFIG.toml                  mask sweep, one CSV row per run, resumable, with summary plots
    recon info FILE.h5                       what a fastMRI file holds
    recon simulate OUT.h5                    write held-out brain slices as a fastMRI multi-coil file
    recon train CONFIG.json                  train a prior (see recon.priors.train.TrainConfig)
    recon synthesize | inpaint | insert | denoise | super-resolve | anomaly   generative tasks (PNG figures)

Errors are reported as one line (``recon: error: ...``) with exit status 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def _parse_slices(text: str):
    if ":" in text:
        a, b = text.split(":", 1)
        return slice(int(a) if a else None, int(b) if b else None)
    return int(text)


def cmd_info(args) -> int:
    from recon.data import load_fastmri

    vol = load_fastmri(args.file)
    h = vol.header
    lines = [
        f"file:          {vol.path}",
        f"k-space:       {vol.shape[0]} slices x {vol.num_coils} coils x {vol.shape[2]} x {vol.shape[3]} "
        f"({'multi-coil' if vol.is_multicoil else 'single-coil'})",
        f"acquisition:   {vol.attrs.get('acquisition', 'unknown')}",
        f"encoding size: {vol.encoding_size}",
        f"recon size:    {vol.recon_size}",
        f"target:        {vol.target_key if vol.has_target else 'none'}",
        f"mask:          {'yes (acceleration %.2f)' % (vol.mask.numel() / vol.mask.sum().item()) if vol.mask is not None else 'none'}",
        f"header:        {'ISMRMRD XML' if h is not None else 'none'}",
    ]
    extra = {k: v for k, v in vol.attrs.items() if k != "acquisition"}
    if extra:
        lines.append(f"attributes:    {extra}")
    print("\n".join(lines))
    return 0


def cmd_simulate(args) -> int:
    from recon.data import brain, rss, simulate, write_fastmri
    from operators import ifft2c

    x = brain.load_heldout(args.size)[_parse_slices(args.slices)]
    if x.dim() == 2:
        x = x[None]
    maps = simulate.coil_maps(args.coils, tuple(x.shape[-2:]))
    k = simulate.simulate_multicoil(x, maps, snr_db=args.snr, seed=args.seed)
    target = rss(ifft2c(k))
    path = write_fastmri(args.out, k, target=target, attrs={"acquisition": "SIMULATED_MNI152", "patient_id": "mni152"})
    print(f"wrote {path}: {tuple(k.shape)} k-space, SNR {args.snr} dB")
    return 0


DEMO_FILE = "recon/data/samples/mni152-demo-8coil.h5"


CT_DEMO_FILE = "recon/data/samples/ct-phantom-demo.h5"


def cmd_demo_ct(args) -> int:
    from recon import plots
    from recon.data.ct import window
    from recon.data.phantoms import mu_to_hu
    from recon.reconstruct_ct import CTSettings, operator, read_input, reconstruct, score, simulate

    t0 = time.time()
    path = Path(__file__).resolve().parent.parent / CT_DEMO_FILE
    img, _, _ = read_input(path)
    img = img[:1]
    prior_name = args.prior or "bundled:ct-phantom-128"
    base = CTSettings(views=args.views, prior=prior_name, seed=args.seed)
    op = operator(base, tuple(img.shape[-2:]))
    sino = simulate(img, op, base, torch.Generator().manual_seed(args.seed))
    from recon import priors
    prior = priors.load(prior_name)
    results = {}
    for name, method in (("FBP", "fbp"), ("TV", "tv"), (f"DDS ({args.steps} NFE)", "dds")):
        st = CTSettings(method=method, views=args.views, prior=prior_name, steps=args.steps, seed=args.seed)
        t = time.time()
        results[name] = (reconstruct(sino, op, st, prior)[0, 0], time.time() - t)
    print(f"demo: {CT_DEMO_FILE} (procedural phantom, slice 0), parallel beam, {args.views} views over 180 degrees, "
          f"noiseless; prior {prior_name}; metrics on mu/mu_water, data range = reference max")
    print(f"{'method':<16}{'PSNR':>8}{'SSIM':>8}{'NMSE':>9}{'seconds':>9}")
    for name, (x, sec) in results.items():
        e = score(img[0], x)
        print(f"{name:<16}{e['psnr']:>8.2f}{e['ssim']:>8.4f}{e['nmse']:>9.4f}{sec:>9.2f}")
    w = lambda v: window(mu_to_hu(v))  # noqa: E731
    panels = [("reference", w(img[0]))] + [(n, w(x)) for n, (x, _) in results.items()]
    out = plots.save_panels(panels, args.out or "out/demo-ct.png", vmax=1.0,
                            title=f"recon demo --ct: {args.views} views (soft-tissue window)")
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0


def cmd_reconstruct_ct(args) -> int:
    from recon.reconstruct_ct import CTSettings, reconstruct_file

    limited = tuple(float(v) for v in args.limited.split(",")) if args.limited else None
    st = CTSettings(method=args.sampler, geometry=args.geometry, views=None if limited else args.views,
                    limited=limited, noise=args.noise, noise_level=args.noise_level, prior=args.prior,
                    samples=args.samples, seed=args.seed, steps=args.steps, tv_z=args.tv_z, device=args.device,
                    pixel_mm=args.pixel_mm)
    sl = _parse_slices(args.slices) if args.slices else None
    if isinstance(sl, slice):
        sl = list(range(sl.start or 0, sl.stop))
    elif isinstance(sl, int):
        sl = [sl]
    res = reconstruct_file(args.file, args.out, st, sl, png=args.png, progress=not args.quiet)
    if res["metrics"]:
        for m, e in res["metrics"].items():
            print(f"{m:<10} PSNR {e['psnr']:.2f}  SSIM {e['ssim']:.4f}  NMSE {e['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0


def cmd_demo(args) -> int:
    if args.ct:
        return cmd_demo_ct(args)
    args.prior = args.prior or "bundled:mni-brain-128"
    args.out = args.out or "out/demo.png"
    from pathlib import Path

    from recon import metrics, plots, priors
    from recon.data import load_fastmri
    from recon.reconstruct import Settings, reconstruct_slice

    t0 = time.time()
    path = Path(__file__).resolve().parent.parent / DEMO_FILE
    vol = load_fastmri(path)
    k, ref = vol.kspace(0), vol.target(0)
    maxval = float(vol.attrs.get("max", ref.max()))
    prior = priors.load(args.prior)
    results = {}
    for name, method in (("zero-filled", "zero-filled"), ("CG-SENSE", "cg-sense"), (f"DDS ({args.steps} NFE)", "dds")):
        st = Settings(method=method, mask=args.mask, acceleration=args.acceleration, center_fraction=0.12,
                      steps=args.steps, prior=args.prior, seed=args.seed)
        t = time.time()
        x, m, _ = reconstruct_slice(k, None, st, prior, args.seed)
        results[name] = (x[0], time.time() - t)
    from operators import masks
    print(f"demo: {DEMO_FILE} (held-out MNI152 slice, 8 coils, 30 dB), {args.mask} mask, acceleration "
          f"{masks.acceleration(m, tuple(k.shape[-2:])):.2f}, prior {args.prior}; reference: the file's RSS")
    print(f"{'method':<16}{'PSNR':>8}{'SSIM':>8}{'NMSE':>9}{'seconds':>9}")
    for name, (x, sec) in results.items():
        e = metrics.evaluate(ref, x.abs(), maxval)
        print(f"{name:<16}{e['psnr']:>8.2f}{e['ssim']:>8.4f}{e['nmse']:>9.4f}{sec:>9.2f}")
    x_dds = list(results.values())[-1][0]
    panels = [("reference (RSS)", ref)] + [(n, x.abs()) for n, (x, _) in results.items()]
    panels.append(("|DDS - reference| x5", 5 * (x_dds.abs() - ref).abs()))
    out = plots.save_panels(panels, args.out, vmax=maxval, title=f"recon demo: {args.mask} mask, R={args.acceleration:g}")
    print(f"wrote {out} in {time.time() - t0:.1f} s")
    return 0


def _settings(args):
    """The reconstruction settings shared by ``reconstruct`` and ``uncertainty``."""
    from recon.reconstruct import Settings

    return Settings(method=args.sampler, mask=args.mask, acceleration=args.acceleration,
                    center_fraction=args.center_fraction, prior=args.prior, samples=args.samples,
                    seed=args.seed, steps=args.steps, device=args.device)


def cmd_reconstruct(args) -> int:
    from recon.reconstruct import reconstruct_file

    settings = _settings(args)
    res = reconstruct_file(args.file, args.out, _parse_slices(args.slices) if args.slices else None, settings,
                           png=args.png, progress=not args.quiet)
    for r in res["metrics"]:
        print(f"slice {r['slice']:>3}: PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  NMSE {r['nmse']:.4f}")
    if res["summary"]:
        s = res["summary"]
        print(f"mean:      PSNR {s['psnr']:.2f}  SSIM {s['ssim']:.4f}  NMSE {s['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0


def cmd_uncertainty(args) -> int:
    from recon.uncertainty import uncertainty_file

    settings = _settings(args)
    res = uncertainty_file(args.file, args.out, args.slice, settings, png=args.png, level=args.level)
    if "coverage" in res:
        print(f"std/|error| correlation {res['std_error_correlation']:.3f}, coverage of the {res['level']:.0%} "
              f"intervals {res['coverage']:.3f}, mean std in the object {res['mean_std_in_object']:.4g}")
    print(f"wrote {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from recon.sweep import run

    out = run(args.config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _task_image(args) -> torch.Tensor:
    """The input image of a task: a held-out brain slice (default) or a .npy/.pt/.png file, scaled to its 99th
    percentile like the bundled prior's training data."""
    if args.image:
        from pathlib import Path
        p = Path(args.image)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        if p.suffix == ".npy":
            import numpy as np
            x = torch.as_tensor(np.load(p))
        elif p.suffix == ".pt":
            x = torch.load(p, weights_only=True)
        elif p.suffix == ".png":
            import matplotlib.image as mpimg
            a = torch.as_tensor(mpimg.imread(str(p))).float()
            x = a[..., :3].mean(-1) if a.dim() == 3 else a
        else:
            raise ValueError(f"{p}: expected a .npy, .pt or .png image")
        if x.dim() != 2:
            raise ValueError(f"{p}: expected a 2-D image, got shape {tuple(x.shape)}")
        return x.to(torch.complex64)
    from recon.data import brain
    return brain.load_heldout(128)[args.heldout]


def cmd_task(args) -> int:
    from recon import plots, priors, tasks

    prior = priors.load(args.prior)
    if args.task == "synthesize":
        x = tasks.synthesize(prior, args.n, steps=args.steps, seed=args.seed)
        plots.save_grid(x.abs(), args.out, title=f"{args.n} samples of {prior.name}")
        print(f"wrote {args.out}")
        return 0
    img = _task_image(args)
    if args.task == "inpaint":
        hole = tasks.region(img.shape, (args.row, args.col), args.radius, args.shape)
        out = tasks.inpaint(img, hole, prior, steps=2 * args.steps, seed=args.seed)[0]
        panels = [("input", img.abs() * (~hole)), ("inpainted", out.abs())]
    elif args.task == "insert":
        out = tasks.insert(img, (args.row, args.col), prior, radius=args.radius, contrast=args.contrast,
                           strength=args.strength, steps=args.steps, seed=args.seed)
        panels = [("input", img.abs()), ("with lesion", out.abs()), ("difference", (out.abs() - img.abs()).abs())]
    elif args.task == "denoise":
        g = torch.Generator().manual_seed(args.seed)
        noisy = img + args.noise * float(img.abs().max()) * torch.randn(img.shape, generator=g, dtype=img.dtype)
        out = tasks.denoise(noisy, args.noise * float(img.abs().max()) / (2 ** 0.5 if img.is_complex() else 1), prior)
        panels = [("input", img.abs()), ("noisy", noisy.abs()), ("denoised", out.abs())]
    elif args.task == "super-resolve":
        from operators.image import Downsample
        low = Downsample(tuple(img.shape), args.factor)(img)
        out = tasks.super_resolve(low, args.factor, prior, steps=args.steps, seed=args.seed)[0]
        panels = [("input", img.abs()), (f"low-res /{args.factor}", low.abs()), ("super-resolved", out.abs())]
    else:  # anomaly
        out, resid = tasks.anomaly(img, prior, strength=args.strength, steps=args.steps, seed=args.seed)
        panels = [("input", img.abs()), ("pseudo-healthy", out.abs()), ("residual", resid)]
    plots.save_panels(panels, args.out, vmax=float(img.abs().max()), title=args.task)
    print(f"wrote {args.out}")
    return 0


def cmd_train(args) -> int:
    from recon.priors.train import TrainConfig, train

    cfg = TrainConfig.from_file(args.config)
    overrides = {k: v for k, v in (("out", args.out), ("steps", args.steps)) if v is not None}
    for k, v in overrides.items():
        setattr(cfg, k, v)
    path = train(cfg, resume=not args.restart, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"prior written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recon", description="MRI/CT reconstruction with diffusion priors")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="reconstruct a simulated multi-coil slice with DDS and write a figure")
    p.add_argument("--out", help="figure path (default out/demo.png, or out/demo-ct.png with --ct)")
    p.add_argument("--prior", help="default bundled:mni-brain-128, or bundled:ct-phantom-128 with --ct")
    p.add_argument("--steps", type=int, default=50, help="DDS steps (network evaluations)")
    p.add_argument("--mask", default="random", help="mask name (operators.masks.available())")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--slice", type=int, default=5, help="held-out slice index (0..9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ct", action="store_true", help="the CT demo: sparse-view phantom with the bundled CT prior")
    p.add_argument("--views", type=int, default=30, help="CT demo: number of views over 180 degrees")
    p.set_defaults(func=cmd_demo)

    from recon.reconstruct import METHODS
    p = sub.add_parser("reconstruct", help="reconstruct slices of a fastMRI file")
    p.add_argument("file")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    p.add_argument("--sampler", default="dds", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--mask", default="random")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--prior", default="bundled:mni-brain-128")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int, help="sampler steps (levels for score-ald); default: the paper's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="result.h5")
    p.add_argument("--png")
    p.set_defaults(func=cmd_reconstruct)

    from recon.reconstruct_ct import METHODS as CT_METHODS
    p = sub.add_parser("reconstruct-ct", help="sparse-view / limited-angle CT reconstruction")
    p.add_argument("file", help="HDF5 with 'sinogram' (+ 'angles') or 'image' (mu/mu_water), or DICOM file/folder")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    p.add_argument("--sampler", default="dds", help=f"one of {', '.join(CT_METHODS)}")
    p.add_argument("--geometry", default="parallel", choices=["parallel", "fan"])
    p.add_argument("--views", type=int, default=30, help="sparse view: number of angles (when simulating)")
    p.add_argument("--limited", help="limited angle: START,STOP in degrees, e.g. 0,120 (when simulating)")
    p.add_argument("--noise", default="none", choices=["none", "gaussian", "poisson"])
    p.add_argument("--noise-level", type=float, default=0.0, help="Gaussian std, or incident photons (Poisson)")
    p.add_argument("--pixel-mm", type=float, default=3.0, help="pixel size for the photon statistics (Poisson)")
    p.add_argument("--prior", default="bundled:ct-phantom-128")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int)
    p.add_argument("--tv-z", type=float, default=0.0, help="DDS: TV coupling of the slices along z, relative weight (0: off; 1e-4 is a good start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="result-ct.h5")
    p.add_argument("--png")
    p.set_defaults(func=cmd_reconstruct_ct)

    p = sub.add_parser("uncertainty", help="posterior samples of one slice: mean, std and quantile maps")
    p.add_argument("file")
    p.add_argument("--slice", type=int, default=0)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--sampler", default="dds", help="a posterior sampler: dds, score-mri, score-ald, dps")
    p.add_argument("--mask", default="random")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--prior", default="bundled:mni-brain-128")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--level", type=float, default=0.9, help="central interval for the coverage check")
    p.add_argument("--out", default="uncertainty.h5")
    p.add_argument("--png")
    p.set_defaults(func=cmd_uncertainty)

    p = sub.add_parser("sweep", help="masks x accelerations x methods x seeds -> one CSV row per run (resumable)")
    p.add_argument("config", help="TOML file (see recon.sweep)")
    p.set_defaults(func=cmd_sweep)

    for task, helptext in (("synthesize", "unconditional samples from a prior (PNG grid)"),
                           ("inpaint", "fill a circle/box region of an image"),
                           ("insert", "place a synthetic lesion at (row, col) and harmonise it"),
                           ("denoise", "add Gaussian noise of a stated level and denoise (MMSE)"),
                           ("super-resolve", "downsample by --factor and super-resolve"),
                           ("anomaly", "pseudo-healthy projection and residual map")):
        p = sub.add_parser(task, help=helptext)
        p.add_argument("--prior", default="bundled:mni-brain-128")
        p.add_argument("--image", help=".npy/.pt/.png image (default: a held-out brain slice)")
        p.add_argument("--heldout", type=int, default=5, help="held-out slice index when no --image is given")
        p.add_argument("--steps", type=int, default=50)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--n", type=int, default=16, help="number of samples (synthesize)")
        p.add_argument("--row", type=float, default=64.0)
        p.add_argument("--col", type=float, default=64.0)
        p.add_argument("--radius", type=float, default=8.0)
        p.add_argument("--shape", default="circle", choices=["circle", "box"])
        p.add_argument("--contrast", type=float, default=0.5)
        p.add_argument("--strength", type=float, default=0.3, help="SDEdit noise level (insert, anomaly)")
        p.add_argument("--noise", type=float, default=0.1, help="noise std relative to the image maximum")
        p.add_argument("--factor", type=int, default=2)
        p.add_argument("--out", default=f"out/{task}.png")
        p.set_defaults(func=cmd_task, task=task)

    p = sub.add_parser("info", help="describe a fastMRI HDF5 file")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("simulate", help="write held-out brain slices as a fastMRI multi-coil file")
    p.add_argument("out")
    p.add_argument("--slices", default="0:10")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="train a prior by denoising score matching")
    p.add_argument("config", help="JSON file with TrainConfig fields")
    p.add_argument("--out")
    p.add_argument("--steps", type=int)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=cmd_train)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None) and not args.quiet:  # say once which compute path the operators take
            import kernels
            print(kernels.describe(args.device), file=sys.stderr)
        return args.func(args)
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, IndexError, KeyError, TypeError, RuntimeError, ImportError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"recon: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
