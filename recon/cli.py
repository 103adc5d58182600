"""The ``recon`` command.

    recon demo [--out out/demo.png]          DDS with the bundled prior on a simulated 8-coil held-out brain slice (4x)
    recon demo --ct                          DDS with the bundled CT prior on a 30-view sparse-view phantom stack
    recon reconstruct FILE.h5 [--sampler dds] reconstruct slices of a fastMRI file into an HDF5 result
    recon reconstruct-ct FILE [--views 30]   sparse-view / limited-angle CT from a sinogram, image or DICOM
    recon uncertainty FILE.h5 --samples 32   mean, std and quantile maps from repeated posterior samples
    recon sweep CONFIG.toml                  mask sweep, one CSV row per run, resumable, with summary plots
    recon info FILE.h5                       what a fastMRI file holds
    recon simulate OUT.h5                    write held-out brain slices as a fastMRI multi-coil file
    recon train CONFIG.json                  train a prior (see recon.training.TrainConfig)
    recon synthesize | inpaint | insert | denoise | super-resolve | anomaly   generative tasks (PNG figures)

This module only parses the options and dispatches to the commands of ``recon.apps``. Errors are reported as one
line (``recon: error: ...``) with exit status 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys

from recon.apps import demo, info, reconstruct, reconstruct_ct, simulate, sweep, tasks, train, uncertainty


def _mri_settings(args) -> reconstruct.MRISettings:
    """The MRI settings shared by ``reconstruct`` and ``uncertainty``."""
    return reconstruct.MRISettings(method=args.sampler, mask=args.mask, acceleration=args.acceleration,
                                   center_fraction=args.center_fraction, prior=args.prior, samples=args.samples,
                                   seed=args.seed, steps=args.steps, device=args.device, protocol=args.protocol,
                                   normalization=args.normalization)


def _ct_settings(args) -> reconstruct_ct.CTSettings:
    limited = tuple(float(v) for v in args.limited.split(",")) if args.limited else None
    return reconstruct_ct.CTSettings(method=args.sampler, geometry=args.geometry,
                                     views=None if limited else args.views, limited=limited, noise=args.noise,
                                     noise_level=args.noise_level, prior=args.prior, samples=args.samples,
                                     seed=args.seed, steps=args.steps, tv_z=args.tv_z, device=args.device,
                                     pixel_mm=args.pixel_mm, normalization=args.normalization)


def _demo(args) -> int:
    if args.ct:
        return demo.ct(out=args.out, prior=args.prior, steps=args.steps, views=args.views, seed=args.seed)
    return demo.mri(out=args.out, prior=args.prior, steps=args.steps, mask=args.mask,
                    acceleration=args.acceleration, seed=args.seed)


def _reconstruct(args) -> int:
    return reconstruct.command(args.file, args.out, _mri_settings(args), args.slices or None, png=args.png,
                               progress=not args.quiet)


def _reconstruct_ct(args) -> int:
    return reconstruct_ct.command(args.file, args.out, _ct_settings(args), args.slices or None, png=args.png,
                                  progress=not args.quiet)


def _uncertainty(args) -> int:
    return uncertainty.command(args.file, args.out, _mri_settings(args), args.slice, png=args.png, level=args.level)


def _sweep(args) -> int:
    return sweep.command(args.config, progress=not args.quiet)


def _task(args) -> int:
    return tasks.command(args.task, prior=args.prior, out=args.out, image=args.image, heldout=args.heldout,
                         steps=args.steps, seed=args.seed, n=args.n, row=args.row, col=args.col, radius=args.radius,
                         shape=args.shape, contrast=args.contrast, strength=args.strength, noise=args.noise,
                         factor=args.factor)


def _info(args) -> int:
    return info.command(args.file)


def _simulate(args) -> int:
    return simulate.command(args.out, args.slices, coils=args.coils, snr=args.snr, size=args.size, seed=args.seed)


def _train(args) -> int:
    return train.command(args.config, out=args.out, steps=args.steps, restart=args.restart, progress=not args.quiet)


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
    p.set_defaults(func=_demo)

    p = sub.add_parser("reconstruct", help="reconstruct slices of a fastMRI file")
    p.add_argument("file")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    p.add_argument("--sampler", default="dds", help=f"one of {', '.join(reconstruct.METHODS)}")
    p.add_argument("--mask", default="random")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--protocol", default="auto", help="geometry protocol: auto, full-fov, image-crop or kspace-crop "
                   "(recon.data.geometry; auto: full-fov, or a crop to the prior's grid when it needs one)")
    p.add_argument("--normalization", help="override the prior's data convention: none, max, percentile[:Q], "
                   "fixed:VALUE, range:VALUE")
    p.add_argument("--prior", default="bundled:mni-brain-128")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int, help="sampler steps (levels for score-ald); default: the paper's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="result.h5")
    p.add_argument("--png")
    p.set_defaults(func=_reconstruct)

    p = sub.add_parser("reconstruct-ct", help="sparse-view / limited-angle CT reconstruction")
    p.add_argument("file", help="HDF5 with 'sinogram' (+ 'angles') or 'image' (mu/mu_water), or DICOM file/folder")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    p.add_argument("--sampler", default="dds", help=f"one of {', '.join(reconstruct_ct.METHODS)}")
    p.add_argument("--geometry", default="parallel", choices=["parallel", "fan"])
    p.add_argument("--views", type=int, default=30, help="sparse view: number of angles (when simulating)")
    p.add_argument("--limited", help="limited angle: START,STOP in degrees, e.g. 0,120 (when simulating)")
    p.add_argument("--noise", default="none", choices=["none", "gaussian", "poisson"])
    p.add_argument("--noise-level", type=float, default=0.0, help="Gaussian std, or incident photons (Poisson)")
    p.add_argument("--pixel-mm", type=float, default=3.0, help="pixel size for the photon statistics (Poisson)")
    p.add_argument("--normalization", help="override the prior's data convention: none, max, percentile[:Q], "
                   "fixed:VALUE, range:VALUE")
    p.add_argument("--prior", default="bundled:ct-phantom-128")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int)
    p.add_argument("--tv-z", type=float, default=0.0, help="DDS: TV coupling of the slices along z, relative weight (0: off; 1e-4 is a good start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="result-ct.h5")
    p.add_argument("--png")
    p.set_defaults(func=_reconstruct_ct)

    p = sub.add_parser("uncertainty", help="posterior samples of one slice: mean, std and quantile maps")
    p.add_argument("file")
    p.add_argument("--slice", type=int, default=0)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--sampler", default="dds", help="a posterior sampler: dds, score-mri, score-ald, dps")
    p.add_argument("--mask", default="random")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--protocol", default="auto", help="geometry protocol: auto, full-fov, image-crop or kspace-crop "
                   "(recon.data.geometry; auto: full-fov, or a crop to the prior's grid when it needs one)")
    p.add_argument("--normalization", help="override the prior's data convention: none, max, percentile[:Q], "
                   "fixed:VALUE, range:VALUE")
    p.add_argument("--prior", default="bundled:mni-brain-128")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--level", type=float, default=0.9, help="central interval for the coverage check")
    p.add_argument("--out", default="uncertainty.h5")
    p.add_argument("--png")
    p.set_defaults(func=_uncertainty)

    p = sub.add_parser("sweep", help="masks x accelerations x methods x seeds -> one CSV row per run (resumable)")
    p.add_argument("config", help="TOML file (see recon.apps.sweep)")
    p.set_defaults(func=_sweep)

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
        p.set_defaults(func=_task, task=task)

    p = sub.add_parser("info", help="describe a fastMRI HDF5 file")
    p.add_argument("file")
    p.set_defaults(func=_info)

    p = sub.add_parser("simulate", help="write held-out brain slices as a fastMRI multi-coil file")
    p.add_argument("out")
    p.add_argument("--slices", default="0:10")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_simulate)

    p = sub.add_parser("train", help="train a prior by denoising score matching")
    p.add_argument("config", help="JSON file with TrainConfig fields")
    p.add_argument("--out")
    p.add_argument("--steps", type=int)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=_train)
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
