"""The ``recon`` command.

    recon demo [--out out/demo.png]          DDS with the bundled prior on a simulated 8-coil held-out brain slice (4x)
    recon demo --ct                          DDS with the bundled CT prior on a 30-view sparse-view phantom stack
    recon reconstruct FILE.h5 [--sampler dds] reconstruct slices of a fastMRI file into an HDF5 result
    recon reconstruct PATH... --out DIR/     folders/globs of fastMRI files -> submission files (torchrun-sharded;
                                             exit status 1 when some volumes failed)
    recon evaluate --target D --predictions D   leaderboard NMSE/PSNR/SSIM of a submission folder
    recon reconstruct-ct FILE [--views 30]   sparse-view / limited-angle CT from a sinogram, image or DICOM
    recon uncertainty FILE.h5 --samples 32   mean, std and quantile maps from repeated posterior samples
    recon calibrate FILE.h5... --out C.json  calibrate the intervals of a sampler (conformal risk control)
    recon sweep CONFIG.toml                  mask sweep, one CSV row per run, resumable, with summary plots
    recon info FILE.h5                       what a fastMRI file (or an ISMRMRD/MRD raw file) holds
    recon convert FILE.mrd.h5 OUT.h5         an ISMRMRD/MRD raw file in fastMRI's layout (prewhitened)
    recon export RESULT.h5 --format dicom    a result as a DICOM study or (--format nifti) a NIfTI volume
    recon simulate OUT.h5                    write held-out brain slices as a fastMRI multi-coil file
    recon train CONFIG.json                  train a prior (see recon.training.TrainConfig)
    recon synthesize | inpaint | insert | denoise | super-resolve | anomaly   generative tasks (PNG figures)

This module only parses the options and dispatches to the commands of ``recon.apps``. The contract of every
command: it exits 0 with a finite, readable result, or exits 2 with exactly one line ``recon: error: ...`` naming
the option or the file, the value and what is allowed (usage errors included; ``--debug`` shows the traceback),
and every file it reads is byte-identical afterwards: the inputs are protected against writes
(``recon.atomic.protected``), results are written atomically and never when not finite (``recon.data.results``).
An unexpected exception is reported on the same one line as an internal error. The line stays one line
whatever the message holds: control characters (a newline in a file name, a multi-line library message) are
escaped (``one_line``); warnings are printed as single ``recon: warning: ...`` lines; Ctrl-C at any time, start-up
included (the console entry is ``recon.__main__.main``, which imports this module inside its handling), prints
``recon: interrupted`` and exits 130.
"""
from __future__ import annotations

import _thread
import argparse
import os
import signal
import sys
import unicodedata
import warnings
from pathlib import Path

from recon.apps import (calibrate, convert, datasets, demo, evaluate, export, info, reconstruct, reconstruct_ct,
                        simulate, sweep, tasks,
                        train, uncertainty)
from recon.pipelines import ct as ct_pipeline, mri as mri_pipeline
from recon.samplers import dds as dds_defaults
from recon.priors import bundled


CARTESIAN_OPTIONS = {"--mask": "mask", "--acceleration": "acceleration", "--center-fraction": "center_fraction",
                     "--protocol": "protocol"}  # option -> MRISettings field; None on the command line: the default


def _mri_settings(args) -> mri_pipeline.MRISettings:
    """The MRI settings shared by ``reconstruct`` and ``uncertainty``."""
    cartesian = {field: getattr(args, field) for field in CARTESIAN_OPTIONS.values()
                 if getattr(args, field) is not None}
    return mri_pipeline.MRISettings(method=args.sampler, prior=args.prior, samples=args.samples, seed=args.seed,
                                   steps=args.steps, device=args.device, normalization=args.normalization,
                                   preset=args.preset, prewhiten=not args.no_prewhiten,
                                   **cartesian, **({} if args.noise_std is None else {"noise_std": args.noise_std}),
                                   **({} if args.dds_tv is None else {"dds_tv": args.dds_tv}))


def _refuse_cartesian_options(args, path) -> None:
    """A non-Cartesian file takes none of the Cartesian sampling options: one line naming the first one given."""
    from recon.data import noncartesian_io

    given = [opt for opt, field in CARTESIAN_OPTIONS.items() if getattr(args, field) is not None]
    if given and noncartesian_io.is_noncartesian(path):
        raise ValueError(f"{given[0]} is a Cartesian sampling option, but {path} holds non-Cartesian samples "
                         f"(reconstructed by NonCartesianMRI along the file's own trajectory); drop "
                         f"{', '.join(given)}")


def _limited(text):
    """``--limited START,STOP`` (degrees) -> (start, stop)."""
    if text is None:
        return None
    parts = str(text).split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(float(v) for v in parts)
    except ValueError:
        raise ValueError(f"--limited must be START,STOP in degrees (e.g. 0,120), got {text!r}") from None


def _ct_settings(args) -> ct_pipeline.CTSettings:
    limited = _limited(args.limited)
    if limited and args.views is not None:
        raise ValueError("give --views (sparse view) or --limited (limited angle), not both")
    if args.views is None and not limited:
        args.views = 30
    return ct_pipeline.CTSettings(method=args.sampler, geometry=args.geometry,
                                     views=None if limited else args.views, limited=limited, noise=args.noise,
                                     noise_level=args.noise_level, prior=args.prior, samples=args.samples,
                                     seed=args.seed, steps=args.steps, tv_z=args.tv_z, dds_tv=args.dds_tv,
                                     device=args.device,
                                     pixel_mm=args.pixel_mm, normalization=args.normalization, preset=args.preset)


def _demo(args) -> int:
    mri_only = {"--mask": args.mask, "--acceleration": args.acceleration, "--slice": args.slice}
    if args.ct:
        given = [k for k, v in mri_only.items() if v is not None]
        if given:
            raise ValueError(f"demo --ct does not use {', '.join(given)}")
        return demo.ct(out=args.out, prior=args.prior, steps=args.steps, views=30 if args.views is None else args.views,
                       seed=args.seed)
    if args.views is not None:
        raise ValueError("--views is for the CT demo (demo --ct)")
    return demo.mri(out=args.out, prior=args.prior, steps=args.steps, mask=args.mask or "random",
                    acceleration=4.0 if args.acceleration is None else args.acceleration, seed=args.seed,
                    slice_index=demo.DEMO_SLICE if args.slice is None else args.slice)


def _reconstruct(args) -> int:
    dataset_only = (args.challenge, args.acquisition, args.batch_slices, args.extras or None,
                    args.distributed or None)  # options that make it a dataset run
    if datasets.is_dataset_run(args.file, args.out, any(v is not None for v in dataset_only) or
                               int(os.environ.get("WORLD_SIZE", "1")) > 1):
        if args.png:
            raise ValueError("--png is for one file; a dataset run (--out DIR) writes no figures")
        out = args.out
        if out is None or (Path(out).suffix.lower() in (".h5", ".hdf5") and not Path(out).is_dir()):
            raise ValueError(f"a dataset run (several inputs, a directory or a glob) writes one file per volume: "
                             f"--out must be a folder (e.g. out/), got {out!r}")
        return datasets.command(args.file, out, _mri_settings(args), args.slices or None, challenge=args.challenge,
                                acquisition=args.acquisition, extras=args.extras,
                                batch_slices=1 if args.batch_slices is None else args.batch_slices,
                                distributed=args.distributed, progress=not args.quiet)
    _refuse_cartesian_options(args, args.file[0])
    return reconstruct.command(args.file[0], "result.h5" if args.out is None else args.out, _mri_settings(args),
                               args.slices or None, png=args.png, progress=not args.quiet)


def _evaluate(args) -> int:
    return evaluate.command(args.target, args.predictions, challenge=args.challenge, acquisition=args.acquisition,
                            by=args.by, out=args.out)


def _reconstruct_ct(args) -> int:
    given = {opt: v for opt, v in (("--views", args.views), ("--limited", args.limited),
                                   ("--geometry", args.geometry)) if v is not None}  # before the defaults fill in
    if args.geometry is None:
        args.geometry = "parallel"
    return reconstruct_ct.command(args.file, args.out, _ct_settings(args), args.slices or None, png=args.png,
                                  progress=not args.quiet, given=given)


def _uncertainty(args) -> int:
    return uncertainty.command(args.file, args.out, _mri_settings(args), args.slice, png=args.png, level=args.level,
                               calibration=args.calibration)


def _offset(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or auto, got {text!r}") from None


def _calibrate(args) -> int:
    return calibrate.command(args.file, args.out, _mri_settings(args), args.slices or None, level=args.level,
                             kind=args.heuristic, progress=not args.quiet, method=args.method,
                             offset=args.offset, smooth=args.smooth)


def _sweep(args) -> int:
    return sweep.command(args.config, progress=not args.quiet)


def _task(args) -> int:
    return tasks.command(args.task, prior=args.prior, out=args.out, image=args.image, heldout=args.heldout,
                         steps=args.steps, seed=args.seed, n=args.n, row=args.row, col=args.col, radius=args.radius,
                         shape=args.shape, contrast=args.contrast, strength=args.strength, noise=args.noise,
                         factor=args.factor, size=args.size)


def _info(args) -> int:
    return info.command(args.file)


def _convert(args) -> int:
    from recon.data import results
    results.check_output(args.out, source=args.file)
    return convert.command(args.file, args.out, prewhiten=not args.no_prewhiten)


def _export(args) -> int:
    return export.command(args.result, args.out, args.format)


def _simulate(args) -> int:
    return simulate.command(args.out, args.slices, coils=args.coils, snr=args.snr, size=args.size, seed=args.seed,
                            trajectory=args.trajectory, spokes=args.spokes, interleaves=args.interleaves)


def _train(args) -> int:
    return train.command(args.config, out=args.out, steps=args.steps, restart=args.restart, progress=not args.quiet)


PRESET_HELP = ("the sampler's named settings: 'reference' follows its published code step for step (timesteps, "
               "eta convention, clipping, first and last steps, start noise); default: the toolkit's defaults")


class UsageError(Exception):
    """A command line argparse cannot parse (reported like every other error: one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _mri_options(p, sampler_help: str) -> None:
    """The sampling, mask, geometry and prior options shared by reconstruct, uncertainty and calibrate."""
    p.add_argument("--sampler", default="dds", help=sampler_help)
    p.add_argument("--mask", help="Cartesian mask (operators.masks.available()); default random")
    p.add_argument("--acceleration", type=float, help="Cartesian mask acceleration; default 4")
    p.add_argument("--center-fraction", type=float, help="line masks: fully sampled centre fraction; default 0.08")
    p.add_argument("--protocol", help="geometry protocol: auto, full-fov, image-crop or kspace-crop "
                   "(recon.data.geometry; default auto: full-fov, or a crop to the prior's grid when it needs one)")
    p.add_argument("--normalization", help="override the prior's data convention: none, max, percentile[:Q], "
                   "fixed:VALUE, range:VALUE")
    p.add_argument("--prior", default=bundled.DEFAULT_MRI)
    p.add_argument("--steps", type=int, help="sampler steps (levels for score-ald); default: the paper's")
    p.add_argument("--preset", help=PRESET_HELP)
    p.add_argument("--no-prewhiten", action="store_true",
                   help="ISMRMRD/MRD files: do not whiten the coil noise with the file's noise acquisitions")
    p.add_argument("--noise-std", help="DDS's data weight: auto (the default: the noise std estimated from the "
                   "k-space periphery), none (the paper's noiseless CG), or the k-space noise std")
    p.add_argument("--dds-tv", type=float, help="DDS's in-plane TV weight in its data consistency (default 3e-4 "
                   "for reconstruct, 0 for uncertainty and calibrate, whose samples should be posterior-like; "
                   "0: the paper's plain CG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="recon", description="MRI/CT reconstruction with diffusion priors")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--memory", type=float, metavar="GiB",
                    help="memory budget that sizes declared by files, configs and options are checked against "
                         "(default: RECON_MEMORY_GIB, else the machine's memory; recon.memory)")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py",
                    help="import a module or .py file that registers samplers, networks or priors (repeatable; also "
                         "RECON_PLUGINS=a,b; installed plugins are found by their entry points: recon.plugins)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="reconstruct a simulated multi-coil slice with DDS and write a figure")
    p.add_argument("--out", help="figure path (default out/demo.png, or out/demo-ct.png with --ct)")
    p.add_argument("--prior", help=f"default {bundled.DEFAULT_MRI}, or {bundled.DEFAULT_CT} with --ct")
    p.add_argument("--steps", type=int, default=50, help="DDS steps (network evaluations)")
    p.add_argument("--mask", help="mask name (operators.masks.available()); default random")
    p.add_argument("--acceleration", type=float, help="default 4")
    p.add_argument("--slice", type=int, help="held-out slice index (0..9; default 5, the bundled file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ct", action="store_true", help="the CT demo: sparse-view phantom with the bundled CT prior")
    p.add_argument("--views", type=int, help="CT demo: number of views over 180 degrees (default 30)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("reconstruct", help="reconstruct fastMRI files: one file, or folders/globs into a submission")
    p.add_argument("file", nargs="+", metavar="file", help="a fastMRI file; several, folders or globs with --out DIR")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    _mri_options(p, f"one of {', '.join(mri_pipeline.methods())}")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--out", help="result file (one input; default result.h5) or a folder (several inputs, a folder "
                   "or a glob; 'DIR/' for one file): one file per volume in the fastMRI submission layout")
    p.add_argument("--png")
    p.add_argument("--challenge", choices=list(datasets.CHALLENGES), help="dataset run: only these files")
    p.add_argument("--acquisition", help="dataset run: only files of this acquisition (e.g. CORPD_FBK, AXT2)")
    p.add_argument("--extras", action="store_true", help="dataset run: also samples, mean, std, mask, maps")
    p.add_argument("--batch-slices", type=int, help="dataset run: slices a rank reads and works through at once "
                   "(default 1; the sampler still runs slice by slice)")
    p.add_argument("--distributed", action="store_true", help="dataset run under torchrun (implied by WORLD_SIZE>1)")
    p.set_defaults(func=_reconstruct)

    p = sub.add_parser("evaluate", help="score a folder of reconstructions as the fastMRI leaderboard does")
    p.add_argument("--target", required=True, help="folder of fastMRI files with reconstruction_rss/_esc")
    p.add_argument("--predictions", required=True, help="folder of submission files (dataset 'reconstruction')")
    p.add_argument("--challenge", choices=list(evaluate.KEYS), help="default: the target each file holds")
    p.add_argument("--acquisition", help="only volumes of this acquisition")
    p.add_argument("--by", choices=["acquisition"], help="also one table row per acquisition")
    p.add_argument("--out", help="writes OUT.csv and OUT.json (default PREDICTIONS/evaluation)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("reconstruct-ct", help="sparse-view / limited-angle CT reconstruction")
    p.add_argument("file", help="HDF5 with 'sinogram' (+ 'angles') or 'image' (mu/mu_water), or DICOM file/folder")
    p.add_argument("--slices", help="an index or a range a:b (default: all)")
    p.add_argument("--sampler", default="dds", help=f"one of {', '.join(ct_pipeline.methods())}")
    p.add_argument("--geometry", choices=["parallel", "fan"], help="default parallel; a sinogram file's "
                   "'geometry' attribute, when it has one, is its geometry")
    p.add_argument("--views", type=int, help="sparse view: number of angles (when simulating from an image; "
                   "default 30; a measured sinogram has its own)")
    p.add_argument("--limited", help="limited angle: START,STOP in degrees, e.g. 0,120 (when simulating from an "
                   "image)")
    p.add_argument("--noise", default="none", choices=["none", "gaussian", "poisson"])
    p.add_argument("--noise-level", type=float, default=0.0, help="Gaussian std, or incident photons (Poisson)")
    p.add_argument("--pixel-mm", type=float, default=3.0, help="pixel size for the photon statistics (Poisson)")
    p.add_argument("--normalization", help="override the prior's data convention: none, max, percentile[:Q], "
                   "fixed:VALUE, range:VALUE")
    p.add_argument("--prior", default=ct_pipeline.AUTO_PRIOR,
                   help=f"a bundled name or checkpoint; default {ct_pipeline.AUTO_PRIOR}: {bundled.DEFAULT_CT} for "
                        f"grids under {bundled.CT_NATIVE_FROM} pixels per side, {bundled.DEFAULT_CT_NATIVE} from there")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--steps", type=int, help="sampler steps; default: the paper's (DDS: 50; "
                   f"{dds_defaults.STEPS_LIMITED} when the views cover under "
                   f"{dds_defaults.LIMITED_BELOW:g} degrees; for fewer than 30 views per 128 pixels of the grid "
                   f"side, 50 x the shortfall, up to {dds_defaults.STEPS_SPARSE_MAX}: 30 views on 512 x 512 "
                   f"get {dds_defaults.STEPS_SPARSE_MAX})")
    p.add_argument("--preset", help=PRESET_HELP)
    p.add_argument("--tv-z", type=float, default=0.0, help="DDS: TV coupling of the slices along z, relative weight (0: off; 1e-4 is a good start)")
    p.add_argument("--dds-tv", type=float, default=ct_pipeline.DDS_TV,
                   help="DDS on noiseless data: in-plane TV weight in the data consistency (0: the paper's plain CG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="result-ct.h5")
    p.add_argument("--png")
    p.set_defaults(func=_reconstruct_ct)

    p = sub.add_parser("uncertainty", help="posterior samples of one slice: mean, std and quantile maps")
    p.add_argument("file")
    p.add_argument("--slice", type=int, default=0)
    p.add_argument("--samples", type=int, default=32)
    _mri_options(p, "a posterior sampler: dds, score-mri, score-ald, score-sde, dps")
    p.add_argument("--level", type=float, default=0.9, help="central interval for the coverage check")
    p.add_argument("--calibration", help="a calibration file of recon calibrate (same sampler, mask, acceleration): "
                   "also write the calibrated interval lo/hi")
    p.add_argument("--out", default="uncertainty.h5")
    p.add_argument("--png")
    p.set_defaults(func=_uncertainty)

    p = sub.add_parser("calibrate", help="calibrate a sampler's per-pixel intervals on fully sampled fastMRI slices "
                       "(conformal risk control) -> calibration JSON")
    p.add_argument("file", nargs="+", metavar="FILE", help="fastMRI files with fully sampled k-space")
    p.add_argument("--slices", help="an index or a range a:b of every file (default: all)")
    p.add_argument("--samples", type=int, default=16, help="posterior samples per slice")
    _mri_options(p, "a posterior sampler: dds, score-mri, score-ald, score-sde, dps")
    p.add_argument("--level", type=float, default=0.9, help="nominal coverage of the calibrated intervals")
    p.add_argument("--method", choices=("empirical", "crc"), default="empirical",
                   help="empirical: empirical miscoverage <= 1 - level (near-nominal coverage; guaranteed expected "
                        "miscoverage <= (1 - level) + level/(n+1)); crc: conformal risk control, expected "
                        "miscoverage <= 1 - level (over-covers with few slices; needs >= 9 slices at 0.9)")
    p.add_argument("--heuristic", default="learned", choices=["learned", "quantile", "std"],
                   help="interval shape scaled by the calibration: learned (default: the |error| a 5-weight "
                        "log-linear model fitted on the calibration slices predicts from the samples' spread, "
                        "brightness and edges), the sample quantiles, or the std")
    p.add_argument("--offset", default="auto", type=_offset,
                   help="floor added to the widths, in units of the slice's intensity (99th percentile of |mean|): "
                        "a number >= 0 (the guarantee holds exactly) or auto (the narrowest of 0 and 1e-4 ... 1 on "
                        "the calibration slices)")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="pool the widths over a Gaussian window of this many pixels (sigma; 0: per pixel)")
    p.add_argument("--out", default="calibration.json")
    p.set_defaults(func=_calibrate)

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
        d = tasks.DEFAULTS
        p.add_argument("--prior", help=f"default {tasks.TASK_DEFAULTS.get(task, {}).get('prior', d['prior'])}")
        p.add_argument("--image", help=".npy/.pt/.png image (default: a held-out brain slice)")
        p.add_argument("--heldout", type=int, help=f"held-out slice index 0..9 when no --image is given "
                                                   f"(default {d['heldout']})")
        p.add_argument("--steps", type=int, help=f"default {d['steps']}")
        p.add_argument("--seed", type=int, help="default 0")
        p.add_argument("--n", type=int, help=f"number of samples (synthesize, default {d['n']}; inpaint, whose figure "
                       f"shows their mean, default 8)")
        p.add_argument("--row", type=float, help="region/lesion centre row (default: the image centre)")
        p.add_argument("--col", type=float, help="region/lesion centre column (default: the image centre)")
        p.add_argument("--radius", type=float, help=f"default {d['radius']}")
        p.add_argument("--shape", choices=["circle", "box"], help="inpainting region (default circle)")
        p.add_argument("--contrast", type=float, help=f"lesion contrast (insert; default {d['contrast']})")
        p.add_argument("--strength", type=float, help=f"SDEdit noise level (insert, anomaly; default "
                                                      f"{d['strength']})")
        p.add_argument("--noise", type=float, help=f"noise std relative to the image maximum (denoise; default "
                                                   f"{d['noise']})")
        p.add_argument("--factor", type=int, help=f"super-resolution factor (default {d['factor']})")
        p.add_argument("--size", help="synthesis grid, N or HxW (synthesize; default the prior's training grid; "
                                      "above it, a base sample upsampled and refined; on an elongated grid such as "
                                      "640x320 the object fills a central square core on background)")
        p.add_argument("--out", default=f"out/{task}.png")
        p.set_defaults(func=_task, task=task)

    p = sub.add_parser("info", help="describe a fastMRI HDF5 file or an ISMRMRD/MRD raw file")
    p.add_argument("file")
    p.set_defaults(func=_info)

    p = sub.add_parser("convert", help="write an ISMRMRD/MRD raw file in fastMRI's layout (prewhitened)")
    p.add_argument("file", metavar="FILE.mrd.h5")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("--no-prewhiten", action="store_true", help="keep the coil noise as acquired")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="a result of reconstruct, reconstruct-ct or uncertainty as DICOM or NIfTI, "
                       "with the geometry of its raw data")
    p.add_argument("result", metavar="RESULT.h5")
    p.add_argument("--format", required=True, help=f"one of {', '.join(export.FORMATS)}")
    p.add_argument("--out", required=True, help="a folder (DICOM study) or a .nii/.nii.gz file")
    p.set_defaults(func=_export)

    p = sub.add_parser("simulate", help="write held-out brain slices as a fastMRI multi-coil file (or, with "
                       "--trajectory, a non-Cartesian file)")
    p.add_argument("out")
    p.add_argument("--slices", default="0:10")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory", help="sample along a non-Cartesian trajectory: radial, golden-angle or spiral "
                   "(operators.trajectories); writes the layout of recon.data.noncartesian_io")
    p.add_argument("--spokes", type=int, help=f"radial and golden-angle: number of spokes (default "
                   f"{simulate.DEFAULT_SPOKES})")
    p.add_argument("--interleaves", type=int, help=f"spiral: number of interleaves (default "
                   f"{simulate.DEFAULT_INTERLEAVES})")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("train", help="train a prior by denoising score matching")
    p.add_argument("config", help="JSON file with TrainConfig fields")
    p.add_argument("--out")
    p.add_argument("--steps", type=int)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=_train)
    return ap


def _inputs(args) -> list:
    """The files a command reads (protected against being written), as far as the command line names them."""
    paths = [getattr(args, k, None) for k in ("file", "config", "image", "calibration", "target", "predictions")]
    paths = [q for p in paths for q in (p if isinstance(p, list) else [p])]  # reconstruct takes several
    prior = getattr(args, "prior", None)
    if prior and not str(prior).startswith("bundled:"):
        paths += [prior, str(Path(prior).with_suffix(".pt")), str(Path(prior).with_suffix(".json"))]
    if args.command == "demo":
        paths += [demo._ROOT / demo.DEMO_FILE, demo._ROOT / demo.CT_DEMO_FILE]
    if args.command == "export":
        paths += export.result_inputs(args)
    return [p for p in paths if p]


_LINE_BREAKS = {"\u2028", "\u2029"}  # line and paragraph separators: str.splitlines breaks there too


def one_line(text: str) -> str:
    """``text`` on one line: every control character (a newline or escape in a file name, the lines of a library
    message) written as its Python escape (``\\n``, ``\\x1b``), so nothing splits or rewrites the line."""
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) == "Cc" or c in _LINE_BREAKS else c for c in text)


def _error(e: BaseException) -> str:
    msg = str(e).strip()
    return one_line(msg) if msg else type(e).__name__


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, ``recon: warning: MESSAGE`` (Python's default is two lines with the source)."""
    return f"recon: warning: {one_line(str(message).strip())}\n"


EXPECTED = (ValueError, OSError, IndexError, KeyError, TypeError, RuntimeError, ImportError, ArithmeticError,
            UsageError)
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT)


class _Interrupts:
    """Ctrl-C during a command: raise KeyboardInterrupt (so writers remove their temporary files) and remember
    it, so that whatever the interrupt breaks on its way out (an import interrupted inside an extension module
    fails later with another error) is still reported as the interrupt. An interrupt raised inside a callback
    that Python cannot propagate from (a weakref callback, ``__del__``: it would print "Exception ignored" and
    carry on) is raised again in the main thread's code."""

    def __init__(self):
        self.seen = self.closing = self.installed = False
        self.previous = self.hook = None

    def install(self) -> None:
        try:
            if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:  # ignored (a script's background job): stays so
                self.previous = signal.signal(signal.SIGINT, self._raise)
                self.hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
                self.installed = True
        except ValueError:  # not the main thread: the caller owns the signal handling
            pass

    def _raise(self, signum, frame):
        if self.closing:  # the command has finished or is reporting: nothing is left to interrupt
            return
        self.seen = True
        raise KeyboardInterrupt

    def _unraisable(self, info) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            _thread.interrupt_main(signal.SIGINT)  # the handler runs again at the main thread's next instruction
            return
        self.hook(info)

    def restore(self) -> None:
        self.closing = True
        if self.installed:  # a handler set outside Python reads as None: the default then
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.previous is None else self.previous)
            sys.unraisablehook = self.hook


def _import_plugins(argv) -> None:
    """Import the plugins of ``RECON_PLUGINS`` and of each ``--plugin`` before the options are parsed, so that
    the samplers they register are valid ``--sampler`` values of every command."""
    from recon import plugins

    given = []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            given.append(argv[i + 1])
        elif a.startswith("--plugin="):
            given.append(a.split("=", 1)[1])
    plugins.import_plugins()
    plugins.import_plugins(given)


def main(argv=None) -> int:
    from recon import memory
    from recon.atomic import protected

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    formatwarning = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _format_warning
    interrupts = _Interrupts()
    try:
        interrupts.install()
        _import_plugins(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        debug = args.debug
        memory.set_budget(args.memory)
        if getattr(args, "device", None) and not args.quiet:  # say once which compute path the operators take
            import kernels
            print(kernels.describe(args.device), file=sys.stderr)
        with protected(*_inputs(args)):
            return args.func(args)
    except KeyboardInterrupt:
        interrupts.closing = True
        print("recon: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the contract: one line, never a traceback
        interrupts.closing = True
        if interrupts.seen and not debug:  # an error the interrupt caused on its way out
            print("recon: interrupted", file=sys.stderr)
            return INTERRUPTED
        if debug:
            raise
        if isinstance(e, EXPECTED):
            print(f"recon: error: {_error(e)}", file=sys.stderr)
        else:
            print(f"recon: error: internal error ({type(e).__name__}: {_error(e)}); rerun with --debug and report "
                  f"it", file=sys.stderr)
        return 2
    finally:
        interrupts.restore()
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
