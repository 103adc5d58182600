"""The generative tasks as commands (``recon synthesize | inpaint | insert | denoise | super-resolve | anomaly``):
each reads an image, runs the task of the library ``recon.tasks`` with the prior and writes a PNG figure.

Every option is checked before the prior is loaded, and an option the task does not use is refused (``--n`` is
for ``synthesize``, ``--factor`` for ``super-resolve``, ...) instead of being ignored. The input image must be a
finite, non-zero 2-D array of at least 8 x 8 pixels.

An image's shape is its file's word: the .npy header, the .pt tensor (loaded memory-mapped) and the PNG header are
checked (2-D, sides 8..``MAX_IMAGE_SIDE``, the memory budget of ``recon.memory``) before any pixel is read, so a
header declaring 100000 x 100000 pixels is refused at once.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import torch

from operators.checks import check_choice, check_int, check_real, is_finite
from recon import memory
from recon.data import results as io
from recon.pipelines.settings import MAX_IMAGE_SIDE, check_prior, check_seed, check_steps, parse_size
from recon.priors import bundled

TASKS = ("synthesize", "inpaint", "insert", "denoise", "super-resolve", "anomaly")
IMAGE_SUFFIXES = (".npy", ".pt", ".png")
HELDOUT_SLICES = 10
MAX_SYNTHESIS = 256
# pixels (samples x H x W) a task may hold in one batch: with attention within tiles of the training grid the
# bundled UNets peak near 1.5 kB a pixel, so this is about 12 GB (experiments/RESULTS.md, "Synthesis memory")
MAX_BATCH_PIXELS = 1 << 23

DEFAULTS = {"prior": bundled.DEFAULT_MRI, "heldout": 5, "steps": 50, "seed": 0, "n": 16, "row": None,
            "col": None, "radius": 8.0, "shape": "circle", "contrast": 0.5, "strength": 0.3, "noise": 0.1,
            "factor": 2}
TASK_DEFAULTS = {"inpaint": {"n": 8},  # inpaint shows the mean of n samples (the posterior-mean fill)
                 "synthesize": {"prior": bundled.DEFAULT_SYNTHESIS}}  # whole brain slices (bundled.py)
_COMMON = {"prior", "seed", "out"}
_IMAGE = {"image", "heldout"}
OPTIONS = {  # the options each task uses
    "synthesize": _COMMON | {"steps", "n", "size"},
    "inpaint": _COMMON | _IMAGE | {"steps", "row", "col", "radius", "shape", "n"},
    "insert": _COMMON | _IMAGE | {"steps", "row", "col", "radius", "contrast", "strength"},
    "denoise": _COMMON | _IMAGE | {"noise"},
    "super-resolve": _COMMON | _IMAGE | {"steps", "factor"},
    "anomaly": _COMMON | _IMAGE | {"steps", "strength"},
}


def _check_shape(p: Path, shape: tuple, itemsize: int = 8) -> None:
    """An image of ``shape`` is 2-D with sides 8..MAX_IMAGE_SIDE, and it and its complex64 copy fit the memory
    budget; checked on the declared shape, before the pixels are read."""
    if len(shape) != 2:
        raise ValueError(f"{p}: expected a 2-D image, got shape {tuple(shape)}")
    if min(shape) < 8 or max(shape) > MAX_IMAGE_SIDE:
        raise ValueError(f"{p}: image sides must be 8..{MAX_IMAGE_SIDE} pixels, got {tuple(shape)}")
    memory.check_allocation(memory.nbytes(shape, itemsize + 8), f"{p}: an image of {shape[0]} x {shape[1]} pixels")


def _npy_header(p: Path):
    """(shape, dtype) from a .npy file's header, without reading its data."""
    import numpy as np
    from numpy.lib import format as npy

    try:
        with open(p, "rb") as f:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(f)
            else:  # 3.0 (utf-8 field names): numpy reads only the header when memory-mapping
                a = np.load(p, mmap_mode="r", allow_pickle=False)
                shape, dtype = a.shape, a.dtype
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{p}: not a readable .npy array ({str(e).splitlines()[0]})") from None
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _png_size(p: Path) -> tuple:
    """(height, width) from a PNG's IHDR chunk, without decoding it."""
    with open(p, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{p}: not a readable PNG image (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def _load_image(p: Path) -> torch.Tensor:
    if p.suffix == ".npy":
        import numpy as np
        shape, dtype = _npy_header(p)
        if dtype.kind not in "biufc":
            raise ValueError(f"{p}: expected a numeric array, got {dtype}")
        _check_shape(p, shape, dtype.itemsize)
        try:
            a = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{p}: not a readable .npy array ({str(e).splitlines()[0]})") from None
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biufc":
            raise ValueError(f"{p}: expected a numeric array, got {getattr(a, 'dtype', type(a).__name__)}")
        return torch.as_tensor(a)
    if p.suffix == ".pt":
        # the zip format loads memory-mapped: a tensor's declared shape costs nothing until it is checked
        mapped = zipfile.is_zipfile(p)
        if not mapped:  # the legacy format reads everything: at most what the file holds
            memory.check_allocation(p.stat().st_size, f"{p}: a torch file of the legacy (non-zip) format")
        try:
            x = torch.load(p, weights_only=True, mmap=mapped)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one error
            raise ValueError(f"{p}: not a readable torch tensor file ({type(e).__name__})") from None
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{p}: expected a tensor, got {type(x).__name__}")
        _check_shape(p, tuple(x.shape), x.element_size())
        return x
    _check_shape(p, _png_size(p), 16)  # RGBA float32 as decoded
    import matplotlib.image as mpimg
    try:
        a = torch.as_tensor(mpimg.imread(str(p))).float()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: not a readable PNG image ({type(e).__name__})") from None
    return a[..., :3].mean(-1) if a.dim() == 3 else a


def task_image(image=None, heldout: int = 5) -> torch.Tensor:
    """The input image of a task: a .npy/.pt/.png file, or held-out brain slice ``heldout`` (scaled to its 99th
    percentile like the bundled prior's training data). The image must be 2-D, at least 8 x 8, finite and not all
    zero."""
    if image:
        p = Path(image)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        if p.suffix not in IMAGE_SUFFIXES:
            raise ValueError(f"{p}: expected a .npy, .pt or .png image")
        x = _load_image(p)
        if x.dim() != 2:
            raise ValueError(f"{p}: expected a 2-D image, got shape {tuple(x.shape)}")
        if min(x.shape) < 8 or max(x.shape) > MAX_IMAGE_SIDE:
            raise ValueError(f"{p}: image sides must be 8..{MAX_IMAGE_SIDE} pixels, got {tuple(x.shape)}")
        x = x.to(torch.complex64) if x.is_complex() else x.to(torch.float32).to(torch.complex64)
        if not is_finite(x):
            raise ValueError(f"{p}: the image contains NaN or Inf")
        if not bool((x != 0).any()):
            raise ValueError(f"{p}: the image is all zeros; there is nothing to work on")
        return x
    from recon.data import brain
    check_int("heldout", heldout, 0, HELDOUT_SLICES - 1)
    return brain.load_heldout(128)[heldout]


def check_options(task: str, given: dict) -> dict:
    """The task's options with defaults filled in; an option the task does not use is refused, every value is
    checked (type, range, finiteness)."""
    check_choice("task", task, TASKS)
    unused = sorted(k for k, v in given.items() if v is not None and k not in OPTIONS[task])
    if unused:
        raise ValueError(f"{task} does not use {', '.join('--' + k for k in unused)}; it takes "
                         f"{', '.join('--' + k for k in sorted(OPTIONS[task] - {'out'}))}")
    if given.get("image") is not None and given.get("heldout") is not None:
        raise ValueError("give --image or --heldout, not both")
    o = {**DEFAULTS, **TASK_DEFAULTS.get(task, {}), "image": None, "out": None,
         **{k: v for k, v in given.items() if v is not None}}
    check_prior(o["prior"])
    check_steps(o["steps"])
    check_seed(o["seed"])
    check_int("n", o["n"], 1, MAX_SYNTHESIS)
    for k in ("row", "col"):
        if o[k] is not None:
            check_real(k, o[k], minimum=0.0)
    check_real("radius", o["radius"], above=0.0, maximum=MAX_IMAGE_SIDE)
    check_choice("shape", o["shape"], ("circle", "box"))
    check_real("contrast", o["contrast"], minimum=-10.0, maximum=10.0)
    check_real("strength", o["strength"], above=0.0)
    check_real("noise", o["noise"], above=0.0, maximum=10.0)
    check_int("factor", o["factor"], 2, 64)
    if o.get("size") is not None:
        o["size"] = parse_size(o["size"])
    io.check_figure_path(o.get("out"), sources=[o.get("image"), o["prior"]], option="--out")
    return o


def _strength(prior, strength: float) -> None:
    lo, hi = float(prior.sigma_min), float(prior.sigma_max)
    if not lo < strength <= hi:
        raise ValueError(f"strength must be in the prior's noise range ({lo:.3g}, {hi:.3g}], got {strength!r}")


def command(task: str, *, prior=None, out, image=None, heldout=None, steps=None, seed=None, n=None, row=None,
            col=None, radius=None, shape=None, contrast=None, strength=None, noise=None, factor=None,
            size=None) -> int:
    """Run ``task`` and write its figure to ``out``: the input and the result side by side (a grid of samples
    for ``synthesize``). Unset options (None) take the task's defaults (``DEFAULTS``); the lesion/region centre
    defaults to the image centre."""
    from recon import priors
    from recon import tasks as generative

    o = check_options(task, dict(prior=prior, out=out, image=image, heldout=heldout, steps=steps, seed=seed, n=n,
                                 row=row, col=col, radius=radius, shape=shape, contrast=contrast,
                                 strength=strength, noise=noise, factor=factor, size=size))
    img = None if task == "synthesize" else task_image(o["image"], o["heldout"])
    if img is not None:
        h, w = img.shape
        r = o["row"] if o["row"] is not None else (h - 1) / 2
        c = o["col"] if o["col"] is not None else (w - 1) / 2
        if task in ("inpaint", "insert") and not (r < h and c < w):
            raise ValueError(f"the centre (row {r:g}, col {c:g}) is outside the {h} x {w} image")
        if task == "super-resolve" and (h % o["factor"] or w % o["factor"]):
            raise ValueError(f"factor {o['factor']} does not divide the {h} x {w} image")
        n_batch = o["n"] if task == "inpaint" else 1
        if n_batch * h * w > MAX_BATCH_PIXELS:
            fit = MAX_BATCH_PIXELS // (h * w)
            raise ValueError(f"{task} on a {h} x {w} image with {n_batch} sample(s) would hold "
                             f"{n_batch * h * w / 1e6:.1f} M pixels in one batch (about "
                             f"{1.5e3 * n_batch * h * w / 1e9:.0f} GB); the limit is {MAX_BATCH_PIXELS / 1e6:.1f} M: "
                             + (f"use --n {fit} or fewer" if fit >= 1 else "use a smaller image"))
    net = priors.load(o["prior"])
    steps, seed = o["steps"], o["seed"]
    if task == "synthesize":
        from recon import plots
        x = generative.synthesize(net, o["n"], shape=o.get("size"), steps=steps, seed=seed)
        io.check_finite_result(out, {"samples": x})
        grid = "x".join(str(v) for v in x.shape[-2:])
        plots.save_grid(x.abs(), out, title=f"{o['n']} sample{'s' if o['n'] > 1 else ''} of {net.name} ({grid})")
        print(f"wrote {out}")
        return 0
    if task in ("insert", "anomaly"):
        _strength(net, o["strength"])
    # above the training grid the prior attends within tiles of it (its answer for the grid, ``for_grid``)
    panels = _run_image_task(task, generative, net.for_grid(img.shape), img, o, r, c, steps, seed)
    io.write_png(out, panels, vmax=float(img.abs().max()), title=task)
    print(f"wrote {out}")
    return 0


def _run_image_task(task, generative, net, img, o, r, c, steps, seed) -> list:
    """The figure's panels of an image task, with ``net`` the prior configured for the image's grid."""
    if task == "inpaint":
        hole = generative.region(img.shape, (r, c), o["radius"], o["shape"])
        if not bool(hole.any()):
            raise ValueError(f"the {o['shape']} of radius {o['radius']:g} at (row {r:g}, col {c:g}) holds no pixel")
        res = generative.inpaint(img, hole, net, steps=2 * steps, n_samples=o["n"], seed=seed).mean(0)
        panels = [("input", img.abs() * (~hole)), ("inpainted", res.abs())]
    elif task == "insert":
        res = generative.insert(img, (r, c), net, radius=o["radius"], contrast=o["contrast"],
                                strength=o["strength"], steps=steps, seed=seed)
        panels = [("input", img.abs()), ("with lesion", res.abs()), ("difference", (res.abs() - img.abs()).abs())]
    elif task == "denoise":
        g = torch.Generator().manual_seed(seed)
        level = o["noise"] * float(img.abs().max())
        noisy = img + level * torch.randn(img.shape, generator=g, dtype=img.dtype)
        res = generative.denoise(noisy, level / (2 ** 0.5 if img.is_complex() else 1), net)
        panels = [("input", img.abs()), ("noisy", noisy.abs()), ("denoised", res.abs())]
    elif task == "super-resolve":
        from operators.image import Downsample
        low = Downsample(tuple(img.shape), o["factor"])(img)
        res = generative.super_resolve(low, o["factor"], net, steps=steps, seed=seed)[0]
        panels = [("input", img.abs()), (f"low-res /{o['factor']}", low.abs()), ("super-resolved", res.abs())]
    else:  # anomaly
        res, resid = generative.anomaly(img, net, strength=o["strength"], steps=steps, seed=seed)
        panels = [("input", img.abs()), ("pseudo-healthy", res.abs()), ("residual", resid)]
    return panels
