"""The demos (``recon demo``, ``recon demo --ct``): a bundled sample reconstructed by two baselines and DDS with
the bundled prior; a table of PSNR/SSIM/NMSE and seconds on stdout, and a figure.

- MRI: the 8-coil k-space simulated from a held-out MNI152 slice (30 dB) in ``recon/data/samples`` (slice 5;
  ``--slice`` simulates another of the 10 the same way), undersampled retrospectively; zero-filled, CG-SENSE and
  DDS against the RSS reference.
- CT: slice 0 of the bundled procedural phantom stack, noiseless parallel-beam views over 180 degrees; FBP, TV
  and DDS, scored on mu/mu_water with data range = the reference maximum.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from recon.data import results as io
from recon.priors import bundled

DEMO_FILE = "recon/data/samples/mni152-demo-8coil.h5"
CT_DEMO_FILE = "recon/data/samples/ct-phantom-demo.h5"
DEMO_SLICE = 5  # the held-out slice in DEMO_FILE
_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the recon package


def _table(rows: dict, scores) -> None:
    print(f"{'method':<16}{'PSNR':>8}{'SSIM':>8}{'NMSE':>9}{'seconds':>9}")
    for name, (x, sec) in rows.items():
        e = scores(x)
        print(f"{name:<16}{e['psnr']:>8.2f}{e['ssim']:>8.4f}{e['nmse']:>9.4f}{sec:>9.2f}")


def _check(out, prior, steps, seed) -> None:
    from recon.pipelines.settings import check_prior, check_seed, check_steps
    check_steps(steps)
    check_seed(seed)
    if prior is not None:
        check_prior(prior)
    if out is not None:
        io.check_figure_path(out, sources=[prior, _ROOT / DEMO_FILE, _ROOT / CT_DEMO_FILE], option="--out")


def _sample(slice_index: int):
    """k-space (C, H, W) and RSS reference of held-out slice ``slice_index``: the bundled file for slice 5, else
    the same simulation (8 birdcage coils, 30 dB, seed 0) of that slice."""
    from operators import ifft2c
    from recon.data import brain, load_fastmri, rss, simulate

    if slice_index == DEMO_SLICE:
        vol = load_fastmri(_ROOT / DEMO_FILE)
        k, ref = vol.kspace(0), vol.target(0)
        return k, ref, float(vol.attrs.get("max", ref.max()))
    x = brain.load_heldout(128)[slice_index]
    k = simulate.simulate_multicoil(x[None], simulate.coil_maps(8, tuple(x.shape)), snr_db=30.0, seed=0)[0]
    ref = rss(ifft2c(k))
    return k, ref, float(ref.max())


def mri(out: Optional[str] = None, prior: Optional[str] = None, steps: int = 50, mask: str = "random",
        acceleration: float = 4.0, seed: int = 0, slice_index: int = DEMO_SLICE) -> int:
    from operators import masks
    from operators.checks import check_int
    from recon import metrics, priors
    from recon.pipelines.mri import MRISettings, reconstruct_slice

    _check(out, prior, steps, seed)
    check_int("slice", slice_index, 0, 9)
    prior_name = prior or bundled.DEFAULT_MRI
    MRISettings(method="dds", mask=mask, acceleration=acceleration, center_fraction=0.12, steps=steps,
                prior=prior_name, seed=seed).check()
    t0 = time.time()
    k, ref, maxval = _sample(slice_index)
    net = priors.load(prior_name)
    results = {}
    for name, method in (("zero-filled", "zero-filled"), ("CG-SENSE", "cg-sense"), (f"DDS ({steps} NFE)", "dds")):
        st = MRISettings(method=method, mask=mask, acceleration=acceleration, center_fraction=0.12, steps=steps,
                         prior=prior_name, seed=seed)
        t = time.time()
        r = reconstruct_slice(k, None, st, net, seed)
        m = r.mask
        results[name] = (r.samples[0], time.time() - t)
    source = DEMO_FILE if slice_index == DEMO_SLICE else f"held-out MNI152 slice {slice_index} simulated"
    print(f"demo: {source} (held-out MNI152 slice, 8 coils, 30 dB), {mask} mask, acceleration "
          f"{masks.acceleration(m, tuple(k.shape[-2:])):.2f}, prior {prior_name}; reference: the file's RSS")
    _table(results, lambda x: metrics.evaluate(ref, x.abs(), maxval))
    x_dds = list(results.values())[-1][0]
    panels = [("reference (RSS)", ref)] + [(n, x.abs()) for n, (x, _) in results.items()]
    panels.append(("|DDS - reference| x5", 5 * (x_dds.abs() - ref).abs()))
    path = io.write_png(out or "out/demo.png", panels, vmax=maxval,
                        title=f"recon demo: {mask} mask, R={acceleration:g}")
    print(f"wrote {path} in {time.time() - t0:.1f} s")
    return 0


def ct(out: Optional[str] = None, prior: Optional[str] = None, steps: int = 50, views: int = 30,
       seed: int = 0) -> int:
    from recon import priors
    from recon.data.ct_files import read_input
    from recon.pipelines.ct import CTSettings, operator, reconstruct, score, simulate
    from recon.data.ct import window
    from recon.data.phantoms import mu_to_hu

    _check(out, prior, steps, seed)
    prior_name = prior or bundled.DEFAULT_CT
    CTSettings(views=views, prior=prior_name, steps=steps, seed=seed).check()
    t0 = time.time()
    img, _, _ = read_input(_ROOT / CT_DEMO_FILE)
    img = img[:1]
    base = CTSettings(views=views, prior=prior_name, seed=seed)
    op = operator(base, tuple(img.shape[-2:]))
    sino = simulate(img, op, base, torch.Generator().manual_seed(seed))
    net = priors.load(prior_name)
    results = {}
    for name, method in (("FBP", "fbp"), ("TV", "tv"), (f"DDS ({steps} NFE)", "dds")):
        st = CTSettings(method=method, views=views, prior=prior_name, steps=steps if method == "dds" else None,
                        seed=seed)
        t = time.time()
        results[name] = (reconstruct(sino, op, st, net)[0, 0], time.time() - t)
    print(f"demo: {CT_DEMO_FILE} (procedural phantom, slice 0), parallel beam, {views} views over 180 degrees, "
          f"noiseless; prior {prior_name}; metrics on mu/mu_water, data range = reference max")
    _table(results, lambda x: score(img[0], x))
    w = lambda v: window(mu_to_hu(v))  # noqa: E731
    panels = [("reference", w(img[0]))] + [(n, w(x)) for n, (x, _) in results.items()]
    path = io.write_png(out or "out/demo-ct.png", panels, vmax=1.0,
                        title=f"recon demo --ct: {views} views (soft-tissue window)")
    print(f"wrote {path} in {time.time() - t0:.1f} s")
    return 0

