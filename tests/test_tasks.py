"""Generative tasks through the same prior: mechanics on an exact Gaussian prior, exactness where it is owed."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gaussian_problems import smooth_gaussian  # noqa: E402

from recon import samplers, tasks  # noqa: E402
from recon.priors.gaussian import GaussianDenoiser  # noqa: E402
from recon.priors.prior import DiffusionPrior, Normalization  # noqa: E402


def _prior(n=8):
    mu, cov = smooth_gaussian((n, n), 1, length=2.0, seed=0)
    return DiffusionPrior(GaussianDenoiser(mu[0] + 2.0, cov, sigma_min=0.002, sigma_max=30.0), channels="real",
                          image_size=(n, n)), mu[0] + 2.0, cov


def test_inpainting_keeps_the_observed_pixels_and_fills_the_region():
    prior, mu, cov = _prior()
    g = torch.Generator().manual_seed(1)
    x = (mu.flatten() + torch.linalg.cholesky(cov) @ torch.randn(64, generator=g, dtype=torch.float64)).reshape(8, 8)
    x = x.float()
    hole = tasks.region((8, 8), (4, 4), 2.0)
    out = tasks.inpaint(x, hole, prior, n_samples=200, sampler=samplers.DDS(steps=50, tv_xy=0))  # exact Gaussian
    assert torch.equal(out[:, ~hole], x[~hole].expand(200, -1))
    # the conditional mean of the hole given the rest, in closed form
    o, h = (~hole).flatten(), hole.flatten()
    c = cov.double()
    cond = mu.flatten()[h] + c[h][:, o] @ torch.linalg.solve(c[o][:, o], x.flatten()[o].double() - mu.flatten()[o])
    err = (out[:, hole].double().mean(0) - cond).norm() / (x[hole].double() - cond).norm()
    assert err < 0.3


def test_denoise_is_the_exact_mmse_estimate_and_samples_differ():
    prior, mu, cov = _prior()
    g = torch.Generator().manual_seed(2)
    y = (mu + 0.3 * torch.randn(8, 8, generator=g, dtype=torch.float64)).float()
    ref = prior.denoise(y[None], 0.3)[0]  # exact Tweedie: the prior's normalisation is "none", its units are y's
    assert torch.allclose(tasks.denoise(y, 0.3, prior), ref, atol=1e-5)
    prior.normalization = Normalization("max")  # a prior trained on max-normalised images: Tweedie in its units
    scale = float(y.abs().max())
    ref = prior.denoise(y[None] / scale, 0.3 / scale)[0] * scale
    assert torch.allclose(tasks.denoise(y, 0.3, prior), ref, atol=1e-5)
    a = tasks.denoise(y, 0.3, prior, sample=True, seed=0)
    b = tasks.denoise(y, 0.3, prior, sample=True, seed=1)
    assert a.shape == (8, 8) and not torch.allclose(a, b)


def test_super_resolution_is_consistent_with_the_low_resolution_image():
    from operators.image import Downsample

    prior, mu, _ = _prior()
    low = Downsample((8, 8), 2)(mu.float())
    hi = tasks.super_resolve(low, 2, prior, n_samples=2)
    assert hi.shape == (2, 8, 8)
    assert torch.allclose(Downsample((8, 8), 2)(hi), low.expand(2, 4, 4), atol=1e-3)


def test_super_resolution_hands_the_prior_its_data_at_image_scale(monkeypatch):
    """The prior takes its data scale from A^+ y, the upsampled image (A^H y alone would be 4x too dim at 2x)."""
    from operators.image import Downsample

    prior, mu, _ = _prior()
    seen = []
    original = Normalization.scale
    monkeypatch.setattr(Normalization, "scale", lambda self, ref, ndim=2: seen.append(ref) or original(self, ref, ndim))
    low = Downsample((8, 8), 2)(mu.float())
    hi = tasks.super_resolve(low, 2, prior)
    up = low.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert seen and torch.allclose(seen[0].reshape(8, 8), up, atol=1e-5)
    assert torch.allclose(Downsample((8, 8), 2)(hi), low.expand(1, 4, 4), atol=1e-3)


def test_ddim_inversion_round_trip_and_interpolation_endpoints():
    prior, mu, _ = _prior()
    x = mu.float()
    z = tasks.invert(x, prior, steps=60)
    back = tasks.generate(z, prior, steps=60)
    assert (back - x).norm() / x.norm() < 0.02
    # the fixed-point refinement inverts the generating steps exactly (up to its convergence), even with few steps
    v = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    plain = (tasks.generate(tasks.invert(v, prior, steps=10), prior, steps=10) - v).norm()
    fixed = (tasks.generate(tasks.invert(v, prior, steps=10, refine=5), prior, steps=10) - v).norm()
    assert fixed < 0.1 * plain and fixed / v.norm() < 5e-3, (plain, fixed)
    path = tasks.interpolate(x, x.flip(-1), prior, [0.0, 0.5, 1.0], steps=60)
    assert path.shape == (3, 8, 8) and (path[0] - x).norm() / x.norm() < 0.02


def test_insert_and_anomaly_shapes_and_locality():
    prior, mu, _ = _prior(16)
    x = mu.float()
    out = tasks.insert(x, (8, 8), prior, radius=2.0, contrast=0.8, strength=0.5)
    far = ~tasks.region((16, 16), (8, 8), 4.0)
    assert out.shape == (16, 16) and (out - x)[far].abs().max() < 1e-2 * float(x.abs().max())
    assert (out - x)[tasks.region((16, 16), (8, 8), 2.0)].mean() > 0.2 * float(x.abs().max())
    healthy, resid = tasks.anomaly(x, prior, strength=0.5)
    assert healthy.shape == resid.shape == (16, 16)


def test_biharmonic_fill_is_exact_on_cubics_and_matches_scikit_image():
    from skimage.restoration import inpaint_biharmonic
    yy, xx = torch.meshgrid(torch.arange(40.0, dtype=torch.float64), torch.arange(48.0, dtype=torch.float64),
                            indexing="ij")
    cubic = ((yy - 12) ** 2 * (xx - 5) / 1000 + xx ** 3 / 5000 - yy * xx / 50).double()
    hole = tasks.region((40, 48), (20, 22), 7.0) | tasks.region((40, 48), (6, 40), 3.0, "box")
    fill = tasks.biharmonic(cubic, hole, clip=False)
    assert torch.equal(fill[~hole], cubic[~hole])
    assert float((fill - cubic)[hole].abs().max()) < 1e-6          # Delta^2 of a cubic is 0
    clipped = tasks.biharmonic(cubic, hole)
    assert float(clipped.max()) <= float(cubic[~hole].max()) and float(clipped.min()) >= float(cubic[~hole].min())
    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 44, 52, generator=g, dtype=torch.float64), 5, 1)[0, 0]
    ref = torch.as_tensor(inpaint_biharmonic(img.numpy(), hole.numpy()))
    assert float((tasks.biharmonic(img, hole) - ref).abs().max()) < 1e-10
    # complex images: the fill is linear in the image (without the range clip)
    z = tasks.biharmonic(torch.complex(img, 2 * img.flip(0)), hole, clip=False)
    assert float((z.real - tasks.biharmonic(img, hole, clip=False)).abs().max()) < 1e-10
    assert float((z.imag - 2 * tasks.biharmonic(img.flip(0), hole, clip=False)).abs().max()) < 1e-10


def test_biharmonic_refuses_what_it_cannot_fill():
    img = torch.rand(8, 8)
    with pytest.raises(ValueError, match="does not match"):
        tasks.biharmonic(img, torch.zeros(8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="whole image"):
        tasks.biharmonic(img, torch.ones(8, 8, dtype=torch.bool))
    bad = img.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tasks.biharmonic(bad, tasks.region((8, 8), (4, 4), 2.0))
    bad_inside = img.clone()
    bad_inside[4, 4] = float("nan")     # inside the region: it is filled, not read
    assert torch.isfinite(tasks.biharmonic(bad_inside, tasks.region((8, 8), (4, 4), 2.0))).all()


def test_inpainting_from_the_biharmonic_fill_moves_towards_the_conditional_mean():
    """CCDF inpainting (the default): from the biharmonic fill at a small strength it stays near that fill; at
    a strength of the prior's size its mean moves to the closed-form conditional mean, closer than the fill."""
    prior, mu, cov = _prior()
    g = torch.Generator().manual_seed(1)
    x = (mu.flatten() + torch.linalg.cholesky(cov) @ torch.randn(64, generator=g, dtype=torch.float64)).reshape(8, 8)
    x = x.float()
    hole = tasks.region((8, 8), (4, 4), 2.0)
    o, h = (~hole).flatten(), hole.flatten()
    c = cov.double()
    cond = mu.flatten()[h] + c[h][:, o] @ torch.linalg.solve(c[o][:, o], x.flatten()[o].double() - mu.flatten()[o])
    fill = tasks.biharmonic(x, hole)[hole].double()
    near = tasks.inpaint(x, hole, prior, n_samples=50, strength=0.01, seed=2)
    assert torch.equal(near[:, ~hole], x[~hole].expand(50, -1))
    assert float((near[:, hole].double() - fill).abs().max()) < 0.1
    far = tasks.inpaint(x, hole, prior, n_samples=200, strength=5.0, seed=2)
    assert torch.equal(far[:, ~hole], x[~hole].expand(200, -1))
    err = (far[:, hole].double().mean(0) - cond).norm()
    assert err < 0.5 * (fill - cond).norm()
    assert torch.equal(far, tasks.inpaint(x, hole, prior, n_samples=200, strength=5.0, seed=2))   # same seed


def test_inpainting_refuses_bad_settings():
    prior, mu, _ = _prior()
    hole = tasks.region((8, 8), (4, 4), 2.0)
    with pytest.raises(ValueError, match="init"):
        tasks.inpaint(mu.float(), hole, prior, init="telea")
    for bad in (0.0, -1.0, 1e9, float("nan"), "0.2"):
        with pytest.raises(ValueError, match="strength"):
            tasks.inpaint(mu.float(), hole, prior, strength=bad)
    with pytest.raises(ValueError, match="n_samples"):
        tasks.inpaint(mu.float(), hole, prior, n_samples=0)


def _prior24():
    n = 24
    mu, cov = smooth_gaussian((n, n), 1, length=2.0, seed=0)
    prior = DiffusionPrior(GaussianDenoiser(mu[0] + 2.0, cov, sigma_min=0.002, sigma_max=30.0), channels="real",
                           image_size=(n, n))
    return prior, mu[0] + 2.0, cov


def test_pseudo_regions_are_copies_of_the_region_in_known_pixels_apart_from_it_and_each_other():
    x = torch.ones(24, 24)
    hole = tasks.region((24, 24), (12, 12), 2.5)
    probes = tasks.probe_regions(x, hole)
    assert len(probes) == tasks.PROBES
    blocked = tasks._dilate(hole, 2)
    for k, p in enumerate(probes):
        assert int(p.sum()) == int(hole.sum())
        assert not bool((p & blocked).any())                               # gap to the region
        assert not p[:2].any() and not p[-2:].any() and not p[:, :2].any() and not p[:, -2:].any()
        for q in probes[k + 1:]:
            assert not bool((tasks._dilate(p, 2) & q).any())                  # gap between the copies
    assert tasks.probe_regions(x, tasks.region((24, 24), (12, 12), 11.0)) == []   # no room


def test_auto_strength_keeps_the_exact_classical_fill_and_uses_a_prior_that_fits():
    """strength='auto' scores the candidates on pseudo-regions: on a ramp (the biharmonic fill is exact there)
    it keeps the fill; on a draw from the (exact Gaussian) prior it lets the prior in, and is closer to the
    closed-form conditional mean than the fill."""
    prior, mu, cov = _prior24()
    n = 24
    hole = tasks.region((n, n), (12, 12), 2.5)
    yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
    ramp = 2.0 + 0.02 * yy + 0.01 * xx
    rep = {}
    out = tasks.inpaint(ramp, hole, prior, n_samples=4, seed=0, report=rep)
    assert rep["strength"] == 0.0 and rep["weight"] == 0.0 and rep["probes"] == tasks.PROBES
    assert rep["errors"][0.0] < 1e-10 < min(v for s, v in rep["errors"].items() if s > 0)
    assert float((out - ramp).abs().max()) < 1e-5
    assert torch.equal(out[0], tasks.biharmonic(ramp, hole)) and torch.equal(out[3], out[0])   # exactly the fill
    g = torch.Generator().manual_seed(1)
    x = (mu.flatten() + torch.linalg.cholesky(cov) @ torch.randn(n * n, generator=g, dtype=torch.float64))
    x = x.reshape(n, n).float()
    rep = {}
    out = tasks.inpaint(x, hole, prior, n_samples=16, seed=0, report=rep)
    assert rep["strength"] > 0 and rep["errors"][rep["strength"]] == min(rep["errors"].values())
    assert rep["weight"] in tasks.WEIGHTS
    assert torch.equal(out[:, ~hole], x[~hole].expand(16, -1))
    o, h = (~hole).flatten(), hole.flatten()
    c = cov.double()
    cond = mu.flatten()[h] + c[h][:, o] @ torch.linalg.solve(c[o][:, o], x.flatten()[o].double() - mu.flatten()[o])
    fill = tasks.biharmonic(x, hole)[hole].double()
    assert (out[:, hole].double().mean(0) - cond).norm() < (fill - cond).norm()
    assert torch.equal(out, tasks.inpaint(x, hole, prior, n_samples=16, seed=0))     # same seed, same result
    big_hole = tasks.region((n, n), (12, 12), 11.0)
    with pytest.warns(UserWarning, match="cannot test the prior"):
        big = tasks.inpaint(x, big_hole, prior, n_samples=2, seed=0, report=rep)
    assert rep["strength"] == 0.0 and torch.equal(big[1], tasks.biharmonic(x, big_hole))


def test_auto_strength_shrinks_the_prior_towards_the_fill(monkeypatch):
    """The share w of the prior is chosen on the pseudo-regions: a stand-in prior whose samples overshoot the truth
    by exactly the fill's error (sample = 2 x - fill) is best at w = 0.5, where the shrunk fill is the truth."""
    prior, _, _ = _prior24()
    n = 24
    yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
    x = 2.0 + torch.sin(yy / 3.0) * torch.cos(xx / 4.0)
    hole = tasks.region((n, n), (12, 12), 2.5)

    def overshoot(image, prior, strength, hold, steps, g, eta=0.0, n=1):
        sc = float(x[0, 0]) / float(image[0, 0])        # the image is the fill in the prior's units
        return (2 * x / sc - image)[None].expand(n, *image.shape)

    monkeypatch.setattr(tasks, "_sdedit", overshoot)
    rep = {}
    out = tasks.inpaint(x, hole, prior, n_samples=2, seed=0, report=rep)
    assert rep["weight"] == 0.5 and rep["strength"] > 0
    assert rep["errors"][rep["strength"]] < 1e-8 < rep["errors"][0.0]
    assert float((out - x).abs().max()) < 1e-4

    def wild(image, prior, strength, hold, steps, g, eta=0.0, n=1):
        return (image + 10.0)[None].expand(n, *image.shape)

    monkeypatch.setattr(tasks, "_sdedit", wild)   # a prior far off: the fill wins, and only the region changes
    out = tasks.inpaint(x, hole, prior, n_samples=2, seed=0, report=rep)
    assert rep["strength"] == 0.0 and rep["weight"] == 0.0
    assert torch.equal(out[:, ~hole], x[~hole].expand(2, -1))

    def slightly_better(f):   # samples whose error is the fill's times f at every pixel: best at w = 1
        def run(image, prior, strength, hold, steps, g, eta=0.0, n=1):
            sc = float(x[0, 0]) / float(image[0, 0])
            return (x / sc + f * (image - x / sc))[None].expand(n, *image.shape)
        return run

    # error f^2 times the fill's: f^2 = 0.97 is not clearly better (within MARGIN), f^2 = 0.9 is
    for f2, wins in ((0.97, False), (0.9, True)):
        monkeypatch.setattr(tasks, "_sdedit", slightly_better(f2 ** 0.5))
        tasks.inpaint(x, hole, prior, n_samples=2, seed=0, report=rep)
        assert (rep["strength"] > 0) == wins, (f2, rep)
        assert min(rep["errors"].values()) == pytest.approx(f2 * rep["errors"][0.0], rel=1e-4)
        assert rep["weight"] == (1.0 if wins else 0.0)


def _bundled():
    from recon import priors
    return priors.load("bundled:brain-synth-128")


def test_cascade_base_grid_keeps_the_aspect_and_the_network_multiple():
    p = _bundled()
    assert tasks.base_shape(p, (320, 320)) == (128, 128)
    assert tasks.base_shape(p, (640, 320)) == (128, 64)
    assert tasks.base_shape(p, (100, 96)) == (100, 96)          # not above the training grid: itself
    h, w = tasks.base_shape(p, (300, 170))
    assert max(h, w) == 128 and h % p.size_multiple == 0 and w % p.size_multiple == 0
    with pytest.raises(ValueError, match="positive"):
        tasks.base_shape(p, (0, 320))
    # an elongated grid holds its object in a central core of aspect ASPECT
    assert tasks.core_shape((640, 320)) == (320, 320) and tasks.core_shape((100, 400)) == (100, 100)
    assert tasks.core_shape((320, 320)) == (320, 320) and tasks.core_shape((300, 250)) == (250, 250)
    with pytest.raises(ValueError, match="positive"):
        tasks.core_shape((5, 0))
    with pytest.raises(ValueError, match="cascade"):
        tasks.synthesize(p, 1, shape=(192, 192), cascade="yes")
    with pytest.raises(ValueError, match="strength"):
        tasks.synthesize(p, 1, shape=(192, 192), refine=0.0)


def test_cascade_refines_the_upsampled_base_sample_and_is_seeded():
    p = _bundled()
    base = tasks.synthesize(p, 2, shape=(128, 128), steps=12, seed=3)
    x = tasks.synthesize(p, 2, shape=(192, 192), steps=12, seed=3)
    assert x.shape == (2, 192, 192) and x.dtype == torch.complex64 and bool(torch.isfinite(x).all())
    assert torch.equal(x, tasks.synthesize(p, 2, shape=(192, 192), steps=12, seed=3))
    assert not torch.equal(x, tasks.synthesize(p, 2, shape=(192, 192), steps=12, seed=4))
    # the layout is the base sample's: low-passed, the refined sample and the upsampled base agree closely,
    # and each refined sample matches its own base, not the other one
    up = tasks._upsample(base, (192, 192))
    low = lambda v: torch.nn.functional.avg_pool2d(v.abs()[:, None], 8)[:, 0].flatten(1)  # noqa: E731
    a, b = low(x), low(up)
    corr = lambda u, v: float(torch.corrcoef(torch.stack([u, v]))[0, 1])  # noqa: E731
    assert corr(a[0], b[0]) > 0.9 and corr(a[1], b[1]) > 0.9
    assert corr(a[0], b[0]) > corr(a[0], b[1]) + 0.1
    # and it adds detail that bicubic upsampling does not have: more energy at the finest scales in the object
    hp = lambda v: (v - torch.nn.functional.avg_pool2d(v[:, None], 3, 1, 1, count_include_pad=False)[:, 0])  # noqa
    obj = up.abs() > 0.1 * up.abs().amax((-2, -1), keepdim=True)
    assert float(hp(x.abs())[obj].square().mean()) > 1.3 * float(hp(up.abs())[obj].square().mean())
    # cascade=False samples the large grid directly: another image
    direct = tasks.synthesize(p, 2, shape=(192, 192), steps=12, seed=3, cascade=False)
    assert direct.shape == x.shape and not torch.allclose(direct, x)


def test_synthesis_defaults_to_the_template_prior_and_the_other_tasks_to_the_general_one():
    from recon.apps import tasks as app
    from recon.priors import bundled
    assert app.check_options("synthesize", {})["prior"] == bundled.DEFAULT_SYNTHESIS != bundled.DEFAULT_MRI
    assert app.check_options("synthesize", {"prior": bundled.DEFAULT_MRI})["prior"] == bundled.DEFAULT_MRI
    for task in ("inpaint", "insert", "denoise", "super-resolve", "anomaly"):
        assert app.check_options(task, {})["prior"] == bundled.DEFAULT_MRI, task
    assert bundled.DEFAULT_SYNTHESIS.split(":")[1] in bundled.available()


def test_elongated_grid_places_one_object_in_its_core_on_background():
    p = _bundled()
    x = tasks.synthesize(p, 2, shape=(192, 96), steps=12, seed=1)
    assert x.shape == (2, 192, 96) and bool(torch.isfinite(x).all())
    assert torch.equal(x, tasks.synthesize(p, 2, shape=(192, 96), steps=12, seed=1))
    top = (192 - 96) // 2                      # core_shape((192, 96)) == (96, 96)
    band = torch.cat([x[:, :top - 4], x[:, top + 100:]], 1).abs()
    core = x[:, top:top + 96].abs()
    assert float(band.mean()) < 0.1 * float(core.mean())   # outside the core: background
    assert float(core.amax()) > 0.5
    # within the training grid a non-square grid is sampled directly, as before
    assert torch.equal(tasks.synthesize(p, 1, shape=(96, 64), steps=4, seed=2),
                       tasks.synthesize(p, 1, shape=(96, 64), steps=4, seed=2, cascade=False))
    # sampled directly, the object is stretched over the whole grid: tissue in the outer bands
    d = tasks.synthesize(p, 2, shape=(192, 96), steps=12, seed=1, cascade=False)
    d_band = torch.cat([d[:, :top - 4], d[:, top + 100:]], 1).abs()
    assert float(d_band.mean()) > 2 * float(band.mean())


def test_synthesis_runs_in_batches_with_tiled_attention_above_the_training_grid(monkeypatch):
    from recon.priors.prior import DiffusionPrior

    p = _bundled()
    seen, denoise = [], DiffusionPrior.denoise

    def spy(self, x, s):  # the prior or the view configured for the grid: the window of the one that denoises
        seen.append((x.shape[0], tuple(x.shape[-2:]), self.attention_window))
        return denoise(self, x, s)

    monkeypatch.setattr(DiffusionPrior, "denoise", spy)
    x = tasks.synthesize(p, 3, shape=(192, 192), steps=4, seed=5, max_pixels=2 * 192 * 192)
    assert x.shape == (3, 192, 192) and bool(torch.isfinite(x).all())
    assert {b for b, hw, _ in seen if hw == (192, 192)} == {1, 2}          # two batches: 2 samples, then 1
    assert {w for _, hw, w in seen if hw == (192, 192)} == {128}          # the refinement attends within tiles
    assert {w for _, hw, w in seen if hw == (128, 128)} == {None}         # the base sample on the training grid
    assert p.attention_window is None                                     # the prior is left as it was given
    assert torch.equal(x, tasks.synthesize(p, 3, shape=(192, 192), steps=4, seed=5, max_pixels=2 * 192 * 192))
    with pytest.raises(ValueError, match="max_pixels"):
        tasks.synthesize(p, 1, shape=(192, 192), max_pixels=0)
