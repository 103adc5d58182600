"""The "reference" presets of the VE samplers against their published update rules, written out here from the
papers' equations and the codes' schedules (Score-MRI: Chung & Ye 2022, chapter 7 Algs. 7.1/7.2 with score_sde's
predictor-corrector, HJ-harry/score-MRI; Score-ALD: Jalal et al. 2021, utcsilab/csgm-mri-langevin), on tiny
random-weight networks of the published architectures (NCSN++, NCSNv2).

Each reference run draws its noise from the same ``torch.Generator`` in the same order as the sampler
(``base.noise_like``: standard normal (..., 2) for Re and Im; U[0, 1) drawn the same way), and works in the
toolkit's normalised coordinates: the operator A / ||A|| and the measurement y / (||A|| s), s the data scale
(Score-MRI: max |A^+ y|, the published prior's normalisation; csgm: the 99th percentile of its MVUE), computed
here independently; the result is multiplied back by s.
"""
import math

import pytest
import torch

from operators import CoilwiseMRI, MultiCoilMRI, SingleCoilMRI
from recon import samplers
from recon.priors.ncsnpp import NCSNpp
from recon.priors.ncsnv2 import NCSNv2, geometric_sigmas as csgm_sigmas
from recon.priors.parametrizations import VEScore
from recon.priors.prior import DiffusionPrior, Normalization
from recon.priors.schedules import geometric_sigmas
from recon.samplers.score_ald import CSGM_SIGMA_START, ScoreALD
from recon.samplers import loop
from recon.samplers.score_mri import ScoreMRI, score_sde_schedule
from recon.samplers.steps import langevin

H = W = 16
SMIN, SMAX = 0.01, 378.0  # Score-MRI's VE SDE (configs/default_lsun_configs.py)


def fft(x):  # centered orthonormal; Score-MRI's fftshift(fft2(x)) gives the same projection F^H (1 - M) F
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft(k):
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def rel(a, b):
    return float((a - b).abs().norm() / b.abs().norm())


def smooth_image(seed, lead=()):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    blob = torch.exp(-(yy ** 2 + (xx / 0.7) ** 2) * 2.0) + 0.1 * torch.randn(lead + (H, W), generator=g)
    phase = 0.6 * xx + 0.3 * yy ** 2
    return (blob * torch.exp(1j * phase)).to(torch.complex64)


def line_mask(seed):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(W, generator=g) < 0.3).float()
    m[W // 2 - 2: W // 2 + 2] = 1
    return m.reshape(1, W)


@pytest.fixture(scope="module")
def ncsnpp():
    # init_scale=1: the published init_scale=0 starts the last layers at ~0, a network whose score is ~0
    torch.manual_seed(0)
    return NCSNpp.score_mri_fastmri_knee(image_size=H, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                                         attn_resolutions=(16,), num_scales=50, init_scale=1.0).eval()


def magnitude_prior(net):
    return DiffusionPrior(VEScore(net, SMIN, SMAX, conditioning="sigma"), channels="magnitude",
                          normalization=Normalization("max"))


def draw(shape, g):
    """Standard normal noise for Re and Im, as ``noise_like`` draws it for a complex image."""
    z = torch.randn(tuple(shape) + (2,), generator=g)
    return z[..., 0], z[..., 1]


# --- Score-MRI ---------------------------------------------------------------------------------------------
def score_sde_levels(n):
    """score_sde's VE discretisation written from its formulas (float64): t_i = 1 - i (1 - eps) / (N - 1), the
    network at sigma(t_i) = smin (smax / smin)^t_i, the predictor between the discrete levels
    d_k = smin (smax / smin)^(k / (N - 1)) at k = N - 1 - i and k - 1 (0 below d_0)."""
    out = []
    for i in range(n):
        t = 1 - i * (1 - 1e-5) / (n - 1)
        k = n - 1 - i
        d = [SMIN * (SMAX / SMIN) ** (j / (n - 1)) for j in (k, k - 1)]
        out.append((SMIN * (SMAX / SMIN) ** t, d[0], d[1] if k > 0 else 0.0))
    return out


def score_mri_reference(net, yk, mask, n, g, coilwise, snr=0.16, shared_step=False):
    """Score-MRI's published run in normalised coordinates (k-space data ``yk`` = y_n, mask M): two real
    streams Re and Im per image (per coil), each with its own network evaluation and Langevin step;
    projection x <- F^H ((1 - M) F x + y_n) after every predictor and corrector step (Eq. 7.27).
    Single-coil code: start F^H((1 - M) F (sigma_max z_real) + y_n), then at every t_i the corrector, then the
    predictor; coil-wise code: start sigma_max (z_re + i z_im) unprojected, then the predictor, then the corrector.
    Returns the last step's noise-free mean."""
    proj = lambda v: ifft((1 - mask) * fft(v) + yk)  # noqa: E731
    shape = yk.shape
    if coilwise:
        zr, zi = draw(shape, g)
        x = SMAX * torch.complex(zr, zi)
    else:
        x = proj((SMAX * torch.randn(shape, generator=g)).to(torch.complex64))

    def score(v, s):  # one real stream (H, W) through the network, batch of one
        return net(v[None, None].float(), torch.tensor([s], dtype=torch.float32))[0, 0]

    def streams(v):
        flat = v.reshape(-1, H, W)
        return [(c, part) for c in range(flat.shape[0]) for part in ("real", "imag")], flat

    def corrector(x, s):
        zr, zi = draw(shape, g)
        keys, flat = streams(x)
        zf = torch.complex(zr, zi).reshape(-1, H, W)
        grads = {key: score(getattr(flat[key[0]], key[1]), s) for key in keys}
        noise = {key: getattr(zf[key[0]], key[1]) for key in keys}
        if shared_step:  # one step for Re and Im from the complex norms (the rule this preset must not use)
            steps = {}
            for c in range(flat.shape[0]):
                gn = math.sqrt(sum(float(grads[(c, p)].square().sum()) for p in ("real", "imag")))
                zn = math.sqrt(sum(float(noise[(c, p)].square().sum()) for p in ("real", "imag")))
                steps[(c, "real")] = steps[(c, "imag")] = 2 * (snr * zn / gn) ** 2
        else:
            steps = {key: 2 * (snr * float(noise[key].norm()) / float(grads[key].norm())) ** 2 for key in keys}
        new, mean = torch.empty_like(flat), torch.empty_like(flat)
        for c in range(flat.shape[0]):
            parts = {}
            for p in ("real", "imag"):
                e = steps[(c, p)]
                m = getattr(flat[c], p) + e * grads[(c, p)]
                parts[p] = (m, m + math.sqrt(2 * e) * noise[(c, p)])
            mean[c] = torch.complex(parts["real"][0], parts["imag"][0])
            new[c] = torch.complex(parts["real"][1], parts["imag"][1])
        return proj(new.reshape(shape)), proj(mean.reshape(shape))

    def predictor(x, s, a, b):
        zr, zi = draw(shape, g)
        flat = x.reshape(-1, H, W)
        var = a * a - b * b
        sc = torch.stack([torch.complex(score(v.real, s), score(v.imag, s)) for v in flat]).reshape(shape)
        mean = x + var * sc
        return proj(mean + math.sqrt(var) * torch.complex(zr, zi)), proj(mean)

    for s, a, b in score_sde_levels(n):
        if coilwise:
            x, mean = predictor(x, s, a, b)
            x, mean = corrector(x, s)
        else:
            x, mean = corrector(x, s)
            x, mean = predictor(x, s, a, b)
    return mean


def test_score_sde_schedule_is_the_published_discretisation():
    for n in (500, 2000, 7):  # the coil-wise and single-coil codes' N, and a short run
        net, hi, lo = score_sde_schedule(SMIN, SMAX, n)
        for i, (s, a, b) in enumerate(score_sde_levels(n)):
            assert net[i] == pytest.approx(s, rel=2e-6) and hi[i] == pytest.approx(a, rel=2e-6)
            assert lo[i] == pytest.approx(b, rel=2e-6, abs=0.0)
        assert lo[-1] == 0.0 and hi[-1] == pytest.approx(SMIN, rel=1e-6)  # the final denoising step


def test_presets_are_the_published_settings():
    ref = samplers.get("score-mri", preset="reference")
    assert (ref.steps, ref.snr, ref.n_corrector, ref.order, ref.schedule, ref.start, ref.project_start) == \
        (2000, 0.16, 1, "corrector-first", "score-sde", "real", True)
    assert ref.nfe() == 4000 and ref.steps_total() == 2000
    coil = ScoreMRI.from_preset("reference-coilwise")
    assert (coil.steps, coil.order, coil.start, coil.project_start) == (500, "predictor-first", "gaussian", False)
    assert coil.nfe() == 1000
    assert ScoreMRI().nfe() == 1999 * 2  # the default: N levels, N - 1 predictor-corrector steps
    ald = samplers.get("score-ald", preset="reference")
    assert ald.nfe() == 1155 * 3 and ald.start == "uniform" and ald.likelihood_ratio == 5.0 and not ald.denoise_last
    # csgm's ladder: levels 1156 .. 2310 of 2311 geometric levels from 232 to 0.0066 (start_iter 1155)
    ladder = geometric_sigmas(ald.sigma_end, ald.sigma_start, ald.n_levels)
    csgm = csgm_sigmas(232.0, 0.0066, 2311)[1156:].double()
    assert ald.sigma_start == CSGM_SIGMA_START == pytest.approx(float(csgm[0]), rel=1e-6)
    assert float((ladder / csgm - 1).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="no preset"):
        ScoreMRI.from_preset("paper")
    with pytest.raises(ValueError, match="sigma_y and gamma_scale"):
        ScoreALD.from_preset("reference", sigma_y=0.1)


def test_score_mri_reference_single_coil_magnitude_prior(ncsnpp):
    prior = magnitude_prior(ncsnpp)
    mask = line_mask(1)
    x_true = smooth_image(2)
    yk = mask * fft(x_true)
    A = 2.5 * SingleCoilMRI(mask)  # the unit-norm convention: ||A|| = 2.5 is divided out
    y = A(x_true)
    assert torch.allclose(y, 2.5 * yk, atol=1e-5)
    s = float(ifft(yk).abs().max())  # max |A^+ y|
    n = 8
    out = ScoreMRI.from_preset("reference", steps=n)(y, A, prior, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = score_mri_reference(ncsnpp, yk[None] / s, mask, n, torch.Generator().manual_seed(3), coilwise=False)
        shared = score_mri_reference(ncsnpp, yk[None] / s, mask, n, torch.Generator().manual_seed(3),
                                     coilwise=False, shared_step=True)
    err = rel(out, s * ref)
    assert err < 1e-3, err
    assert rel(out, s * shared) > 3e-3  # one step for Re and Im from the complex norms: beyond the tolerance


def test_score_mri_reference_coilwise_magnitude_prior(ncsnpp):
    prior = magnitude_prior(ncsnpp)
    mask = line_mask(4)
    coils = smooth_image(5, lead=(2,)) * torch.tensor([1.0, 0.5j]).reshape(2, 1, 1).to(torch.complex64)
    A = CoilwiseMRI(mask, n_coils=2)
    y = A(coils)
    yk = mask * fft(coils)
    assert torch.allclose(y, yk, atol=1e-5)
    s = float(ifft(yk).abs().max())  # max |A^+ y| over the coil stack
    n = 6
    out = ScoreMRI.from_preset("reference-coilwise", steps=n, combine=False)(
        y, A, prior, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = score_mri_reference(ncsnpp, yk[None] / s, mask, n, torch.Generator().manual_seed(7), coilwise=True)
    assert out.shape == (1, 2, H, W)
    err = rel(out, s * ref)
    assert err < 1e-3, err
    rss = ScoreMRI.from_preset("reference-coilwise", steps=n)(y, A, prior, generator=torch.Generator().manual_seed(7))
    assert rel(rss.real, (s * ref).abs().square().sum(1).sqrt()) < 1e-3  # Alg. 7.2's SSOS


def test_langevin_gives_re_and_im_their_own_steps_for_a_magnitude_prior():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    score = torch.complex(100 * torch.randn(2, 8, 8, generator=g), 0.01 * torch.randn(2, 8, 8, generator=g))
    z = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    _, mean = langevin(x, score, 0.16, z, split_complex=True)
    e_re = 2 * (0.16 * z.real.flatten(1).norm(dim=1) / score.real.flatten(1).norm(dim=1)) ** 2
    e_im = 2 * (0.16 * z.imag.flatten(1).norm(dim=1) / score.imag.flatten(1).norm(dim=1)) ** 2
    assert (e_im / e_re).min() > 1e6  # very different score norms, very different steps
    assert torch.allclose(mean.real, x.real + e_re[:, None, None] * score.real, rtol=1e-5, atol=1e-6)
    assert torch.allclose(mean.imag, x.imag + e_im[:, None, None] * score.imag, rtol=1e-5, atol=1e-6)
    xs, _ = langevin(x, score, 0.16, z, split_complex=True)
    noise = torch.complex((2 * e_re).sqrt()[:, None, None] * z.real, (2 * e_im).sqrt()[:, None, None] * z.imag)
    assert torch.allclose(xs - mean, noise, rtol=1e-5, atol=1e-6)
    # the default (complex and real priors): one step per image from the complex norms
    _, shared = langevin(x, score, 0.16, z)
    e = 2 * (0.16 * z.flatten(1).norm(dim=1) / score.flatten(1).norm(dim=1)) ** 2
    assert torch.allclose(shared, x + e[:, None, None] * score, rtol=1e-5, atol=1e-5)


def test_score_mri_default_uses_separate_re_im_steps_for_a_magnitude_prior(ncsnpp, monkeypatch):
    """The default sampler's corrector: Re and Im steps from their own norms on a magnitude prior only."""
    mask = line_mask(1)
    A = SingleCoilMRI(mask)
    y = A(smooth_image(2))
    seen = []

    def spy(x, score, snr, z, split_complex=False):
        seen.append(split_complex)
        return langevin(x, score, snr, z, split_complex)

    monkeypatch.setattr(loop, "langevin", spy)  # the predictor-corrector loop's corrector
    ScoreMRI(steps=3)(y, A, magnitude_prior(ncsnpp))
    torch.manual_seed(0)
    net2 = NCSNpp.score_mri_fastmri_knee(image_size=H, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                                         attn_resolutions=(16,), num_scales=50, num_channels=2).eval()
    ScoreMRI(steps=3)(y, A, DiffusionPrior(VEScore(net2, SMIN, SMAX), channels="complex",
                                           normalization=Normalization("max")))
    assert seen == [True, True, False, False]


# --- Score-ALD / csgm-mri-langevin ----------------------------------------------------------------------------
L, START_ITER = 20, 9  # a tiny ladder (232 .. 0.0066 in 20 levels); the run covers levels 10 .. 19


def csgm_mvue(yk, maps):
    """csgm's ``get_mvue``: sum_c conj(S_c) F^H y_c / sqrt(sum_c |S_c|^2), in double precision."""
    yk, maps = yk.to(torch.complex128), maps.to(torch.complex128)
    return (ifft(yk) * maps.conj()).sum(-3) / maps.abs().square().sum(-3).sqrt()


def csgm_reference(net, yk, maps, mask, scale, g, step_lr=5e-5, mse=5.0, steps_each=3):
    """csgm's annealed Langevin run: x ~ U[0, 1) in both channels; at level c (from START_ITER + 1),
    eta = step_lr (sigma_c / sigma_L)^2 and steps_each times
        p = s(x, c);  d = sum_c conj(S_c) F^H (M F (S_c scale x) - y_c);  d <- mse ||p|| d / ||d||
        x <- x + eta (p - d) + sqrt(2 eta) z;
    the result is scale x (the last iterate)."""
    u = torch.rand((1, H, W, 2), generator=g)
    x = u.permute(0, 3, 1, 2).contiguous()  # (1, 2, H, W): Re, Im channels
    sig = net.sigmas.double()
    for c in range(START_ITER + 1, L):
        eta = step_lr * float(sig[c] / sig[-1]) ** 2
        for _ in range(steps_each):
            zr, zi = draw((1, H, W), g)
            z = torch.stack([zr, zi], 1)
            p = net(x, torch.tensor([c]))
            img = torch.complex(x[:, 0], x[:, 1]) * scale
            meas = mask * fft(maps * img[:, None])
            d = (ifft(meas - yk) * maps.conj()).sum(1)
            d = torch.stack([d.real, d.imag], 1)
            d = d / d.norm() * p.norm() * mse
            x = x + eta * (p - d) + math.sqrt(2 * eta) * z
    return scale * torch.complex(x[:, 0], x[:, 1])


def test_score_ald_reference_multicoil_complex_prior():
    torch.manual_seed(1)
    net = NCSNv2(image_size=H, channels=2, ngf=4, num_classes=L, sigma_begin=232.0, sigma_end=0.0066,
                 variant="deepest").eval()
    prior = DiffusionPrior(VEScore(net, 0.0066, 232.0, conditioning="index", n_levels=L), channels="complex",
                           normalization=Normalization("percentile", 99.0))
    g = torch.Generator().manual_seed(11)
    maps = torch.randn(3, H, W, dtype=torch.complex64, generator=g) + 2.0
    maps = maps / maps.abs().square().sum(0).sqrt()  # sum_c |S_c|^2 = 1, as ESPIRiT's are in the object
    mask = line_mask(12)
    A = MultiCoilMRI(maps, mask)
    x_true = smooth_image(13)
    noise = 0.01 * torch.randn(3, H, W, dtype=torch.complex64, generator=g)
    y = A(x_true) + mask * noise
    assert torch.allclose(A(x_true), mask * fft(maps * x_true), atol=1e-5)

    scale = torch.quantile(csgm_mvue(y, maps).abs().flatten(), 0.99)  # csgm: 99th percentile of |MVUE|
    ours = prior.data_scale(y, A)
    assert abs(float(ours) / float(scale) - 1) < 5e-7  # float32 |A^+ y| against csgm's double precision

    sampler = ScoreALD.from_preset("reference", sigma_start=float(net.sigmas[START_ITER + 1]),
                                   n_levels=L - 1 - START_ITER)
    assert sampler.nfe() == 30
    out = sampler(y, A, prior, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = csgm_reference(net, y[None], maps[None], mask, float(scale), torch.Generator().manual_seed(5))
    err = rel(out, ref)
    assert err < 1e-3, err
    # the paper's weighting 1/(sigma_y^2 + gamma^2) (the default) is another run
    paper = ScoreALD(sigma_start=float(net.sigmas[START_ITER + 1]), n_levels=L - 1 - START_ITER, start="uniform")
    assert rel(paper(y, A, prior, generator=torch.Generator().manual_seed(5)), ref) > 1e-2
