"""The "reference" presets of DPS and DDS against their papers' update rules, written out here in the network's
VP coordinates (x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z, eps = the network's noise prediction) on tiny
random-weight ADM UNets (the published architecture: learned variance, scale-shift norm, up/down-sampling
ResBlocks, attention).

The toolkit runs every sampler with the unit-norm operator A_n = A / ||A|| and the measurement in the prior's
range, y_n = y / (||A|| s) with s the prior's data scale (``samplers.base``). The references below get the same
normalised A_n and y_n, and then run the published update in the network's coordinates: for a "range" prior
(images u in [0, 1], network images v = -1 + 2 u) the network's measurement is A_n(v_true) = A_n(-1) + 2 y_n.
Both runs draw their noise from one seeded torch.Generator in the same order: the start x_T, then one draw per
step that injects noise (complex images: shape + (2,), the real and imaginary parts).
"""
import math

import pytest
import torch

from operators import MultiCoilMRI
from operators.ct import ParallelBeamCT
from operators.image import Inpainting
from recon import samplers
from recon.priors.adm import ADMUNet
from recon.priors.parametrizations import VPModel
from recon.priors.prior import DiffusionPrior, Normalization

T = 1000
BETAS = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)   # DDPM's linear schedule (DPS and DDS configs)
ABAR = torch.cumprod(1 - BETAS, 0)


def _net(channels: int, seed: int, size: int = 8) -> ADMUNet:
    """A tiny ADM with random weights. Its output layer is scaled down so that eps is small and smooth in x: with
    full-size random outputs, whose Jacobian is O(1) where a trained network's cancels the 1/sqrt(abar) of the
    Tweedie estimate, DPS's clipped gradient steps make the run chaotic, and two runs that differ by rounding
    part after a few steps, however right both are."""
    torch.manual_seed(seed)
    net = ADMUNet(image_size=size, in_channels=channels, model_channels=32, num_res_blocks=1,
                  attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=16, learn_sigma=True,
                  use_scale_shift_norm=True, resblock_updown=True).eval()
    with torch.no_grad():  # the output convolution starts at zero: give every weight a say
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
        net.out[2].weight.mul_(0.1)
        net.out[2].bias.mul_(0.1)
    return net


def _prior(net, channels, normalization):
    return DiffusionPrior(VPModel(net, "linear", T, "eps", learned_sigma=True), channels=channels,
                          normalization=normalization)


def _rel(a, b):
    return float((a - b).abs().norm() / b.abs().norm())


def _eps_and_v(net, x, t):
    """The network on a VP image batch (N, C, H, W) at the integer timestep t: (eps, variance channels)."""
    out = net(x, torch.full((x.shape[0],), float(t)))
    c = x.shape[1]
    return out[:, :c], out[:, c:]


# --- DPS (Chung et al., ICLR 2023, Alg. 1 with the code's norm, clip and learned-range variance) ----------------
def _space_timesteps(n):
    """guided-diffusion's space_timesteps(1000, [n]): round(i (T - 1)/(n - 1)), i = 0..n-1."""
    return [round(i * (T - 1) / (n - 1)) for i in range(n)] if n > 1 else [0]


def _dps_reference(net, y_net, A_n, zeta, steps, g):
    """DPS in the network's VP coordinates. With the kept timesteps tau_0 < ... < tau_{K-1} the respaced process
    has abar_k = abar(tau_k), abar_{-1} = 1, beta_k = 1 - abar_k / abar_{k-1},
    beta~_k = beta_k (1 - abar_{k-1}) / (1 - abar_k):

        x0   = clip((x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k), -1, 1)
        mean = beta_k sqrt(abar_{k-1}) / (1 - abar_k) x0 + (1 - abar_{k-1}) sqrt(1 - beta_k) / (1 - abar_k) x_k
        x'   = mean + exp(log var / 2) z  (k > 0),  log var = (v + 1)/2 log beta_k + (1 - v)/2 log beta~_k
        x_{k-1} = x' - zeta grad_{x_k} ||y - A_n x0||           (also at k = 0)"""
    tau = _space_timesteps(steps)
    x = torch.randn(y_net.shape[:1] + (3, 8, 8), generator=g)
    for k in reversed(range(len(tau))):
        a = float(ABAR[tau[k]])
        a_prev = float(ABAR[tau[k - 1]]) if k > 0 else 1.0
        beta = 1 - a / a_prev
        x = x.detach().requires_grad_(True)
        eps, v = _eps_and_v(net, x, tau[k])
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        norm = (y_net - A_n(x0)).flatten(1).norm(dim=1).sum()
        (grad,) = torch.autograd.grad(norm, x)
        with torch.no_grad():
            mean = beta * math.sqrt(a_prev) / (1 - a) * x0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a) * x
            if k > 0:
                tilde = beta * (1 - a_prev) / (1 - a)
                frac = (v + 1) / 2
                log_var = frac * math.log(beta) + (1 - frac) * math.log(tilde)
                mean = mean + torch.exp(0.5 * log_var) * torch.randn(x.shape, generator=g)
            x = mean - zeta * grad
    return x.detach()


def _dps_problem():
    gen = torch.Generator().manual_seed(3)
    truth = torch.rand(3, 8, 8, generator=gen)
    mask = (torch.rand(8, 8, generator=gen) < 0.5).float().expand(3, 8, 8).contiguous()
    A = Inpainting(mask)
    return A, A(truth)


@pytest.mark.parametrize("units", ["range", "network"])
def test_dps_reference_preset_is_the_published_update(units):
    """DPS with zeta 0.3 on image-domain inpainting, with a prior in [0, 1] ("range": the network sees 2u - 1 and
    noise 2 sigma) and with the same network as a prior in its own units: both runs are the published one. The
    preset runs 50 of the 1000 timesteps here (the code's ``timestep_respacing: 50``) to keep the test fast; its
    1000 timesteps are checked in ``test_dps_reference_timesteps_are_the_codes``."""
    net = _net(3, 0)
    if units == "range":
        norm, lo, gain = Normalization("range", value=1.0, lo=-1.0, hi=1.0), -1.0, 2.0
    else:
        norm, lo, gain = Normalization("none"), 0.0, 1.0
    prior = _prior(net, "rgb", norm)
    A, y = _dps_problem()
    if units == "network":
        y = 2 * y - A(torch.ones(3, 8, 8))  # the same object in the network's [-1, 1]
    steps, zeta = 50, 0.3
    s = samplers.get("dps", preset="reference", steps=steps, zeta=zeta)
    with torch.no_grad():
        out = s(y, A, prior, generator=torch.Generator().manual_seed(11))

    nrm = A.norm(like=y)
    scale = float(prior.data_scale(y[None], A).reshape(-1)[0])
    A_n = lambda v: A(v) / nrm  # noqa: E731
    y_n = y[None] / (nrm * scale)
    y_net = lo * A_n(torch.ones(1, 3, 8, 8)) + gain * y_n
    ref = _dps_reference(net, y_net, A_n, zeta, steps, torch.Generator().manual_seed(11))
    ref_u = (ref - lo) / gain * scale
    err = _rel(out, ref_u)
    assert err < 1e-3, err
    if units == "range":  # the data moved the run away from the unconditional one
        with torch.no_grad():
            free = samplers.get("dps", preset="reference", steps=steps, zeta=0.0)(
                y, A, prior, generator=torch.Generator().manual_seed(11))
        assert _rel(out, free) > 0.05


def test_dps_reference_timesteps_are_the_codes():
    prior = _prior(_net(3, 0), "rgb", Normalization("range", value=1.0, lo=-1.0, hi=1.0))
    ladder = ((1 - ABAR) / ABAR).sqrt()
    ref = samplers.DPS.PRESETS["reference"]
    assert ref["steps"] == 1000
    for n in (1000, 100, 50):
        want = ladder[list(reversed(_space_timesteps(n)))] / 2
        assert torch.allclose(prior.sigmas(n, ref["schedule"]), want, rtol=1e-6)


# --- DDS (Chung, Lee & Ye, ICLR 2024, Eqs. 7.39-7.40 and the code's eta) -------------------------------------------
def _cg(normal, b, x, n_iter):
    """Conjugate gradients on normal(x) = b from x, Hermitian inner product <u, v> = sum conj(u) v."""
    dot = lambda u, v: torch.vdot(u.reshape(-1), v.reshape(-1)).real  # noqa: E731
    r = b - normal(x)
    p, rr = r.clone(), dot(r, r)
    for _ in range(n_iter):
        q = normal(p)
        alpha = rr / dot(p, q)
        x, r = x + alpha * p, r - alpha * q
        rr_new = dot(r, r)
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def _dds_reference(net, y_n, A_n, AH_n, shape, complex_, eta, cg_iter, g):
    """DDS at the timesteps 980, 960, ..., 0 (range(0, 1000, 20)); from t to t' (abar_{-1} = 1 after t = 0):

        x0   = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        x0'  = cg_iter CG steps on A_n^H A_n x = A_n^H y_n from x0
        x_t' = sqrt(abar_t') x0' + sqrt(1 - abar_t') (eta z + sqrt(1 - eta^2) eps)      (t' >= 0)
        result: x0' at t = 0."""
    def draw():
        z = torch.randn(shape + ((2,) if complex_ else ()), generator=g)
        return torch.view_as_complex(z) if complex_ else z

    def eps_of(x, t):
        if complex_:
            e, _ = _eps_and_v(net, torch.view_as_real(x).permute(0, 3, 1, 2).contiguous(), t)
            return torch.complex(e[:, 0], e[:, 1])
        return _eps_and_v(net, x[:, None], t)[0][:, 0]

    times = list(range(0, T, 20))
    x = draw()
    for t in reversed(times):
        a = float(ABAR[t])
        with torch.no_grad():
            eps = eps_of(x, t)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x0c = _cg(lambda v: AH_n(A_n(v)), AH_n(y_n), x0, cg_iter)
        if t == 0:
            return x0c
        an = float(ABAR[t - 20])
        noise = draw() if eta > 0 else 0.0
        x = math.sqrt(an) * x0c + math.sqrt(1 - an) * (eta * noise + math.sqrt(1 - eta ** 2) * eps)


def _ct_problem():
    """16 x 16 pixels, 6 views over 180 degrees: 138 line integrals for 256 unknowns."""
    gen = torch.Generator().manual_seed(5)
    truth = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 16, 16, generator=gen), 3, 1, 1)[0, 0]
    A = ParallelBeamCT(16, 6)
    return A, A(truth), 16


def _mri_problem():
    """8 x 8 pixels, 4 coils with smooth random maps, 3 of 8 phase-encoding lines."""
    gen = torch.Generator().manual_seed(6)
    r = torch.linspace(-1, 1, 8)
    basis = torch.stack([torch.ones(8, 8), r[:, None].expand(8, 8), r[None, :].expand(8, 8)])
    coef = torch.complex(torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen))
    maps = torch.einsum("ck,khw->chw", coef, basis.to(torch.complex64))
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = torch.zeros(8, 8)
    mask[:, [0, 3, 4]] = 1
    truth = torch.complex(torch.rand(8, 8, generator=gen), 0.3 * torch.rand(8, 8, generator=gen))
    A = MultiCoilMRI(maps, mask)
    return A, A(truth), 8


@pytest.mark.parametrize("eta", [0.0, 0.85])
@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_dds_reference_preset_is_the_published_update(modality, eta):
    """DDS, 50 steps, 5 noiseless CG iterations, eta in the DDS convention, on real sparse-view CT and complex
    4-coil MRI, with the prior's "max" data scale (as the published DDS priors)."""
    complex_ = modality == "mri"
    A, y, size = _mri_problem() if complex_ else _ct_problem()
    net = _net(2 if complex_ else 1, 1, size)
    prior = _prior(net, "complex" if complex_ else "real", Normalization("max"))
    s = samplers.get("dds", preset="reference", eta=eta)
    out = s(y, A, prior, generator=torch.Generator().manual_seed(9))

    ref_img = A.pinv(y)
    nrm = A.norm(like=ref_img)
    scale = float(prior.data_scale(y, A))
    y_n = y[None] / (nrm * scale)
    A_n = lambda v: A(v) / nrm  # noqa: E731
    AH_n = lambda v: A.H(v) / nrm  # noqa: E731
    ref = _dds_reference(net, y_n, A_n, AH_n, (1, size, size), complex_, eta, 5, torch.Generator().manual_seed(9))
    err = _rel(out, ref * scale)
    assert err < 1e-3, err
    if eta and complex_:  # the prior and the noise matter: DDIM's eta convention gives another run
        ddim = samplers.get("dds", preset="reference", eta=eta, eta_convention="ddim")
        assert _rel(ddim(y, A, prior, generator=torch.Generator().manual_seed(9)), out) > 1e-2


def test_dds_reference_timesteps_and_settings():
    prior = _prior(_net(1, 1), "real", Normalization("max"))
    ladder = ((1 - ABAR) / ABAR).sqrt()
    assert torch.allclose(prior.sigmas(50, "leading"), ladder[list(range(980, -1, -20))], rtol=1e-6)
    s = samplers.DDS.from_preset("reference")
    assert (s.steps, s.eta, s.eta_convention, s.cg_iter, s.sigma_y, s.tv_xy, s.gamma, s.start) == \
        (50, 0.85, "dds", 5, None, 0.0, None, "vp")
    d = samplers.DPS.from_preset("reference", zeta=0.5)
    assert (d.steps, d.zeta, d.clip, d.variance, d.final_gradient, d.start) == (1000, 0.5, (-1.0, 1.0), "learned",
                                                                               True, "vp")
    with pytest.raises(ValueError, match="eta_convention"):
        samplers.DDS(eta_convention="paper")
    with pytest.raises(ValueError, match="variance"):
        samplers.DPS(variance="large")
    with pytest.raises(ValueError, match="clip"):
        samplers.DPS(clip=(1.0, -1.0))
    with pytest.raises(ValueError, match="leading"):
        DiffusionPrior(VPModel(torch.nn.Identity()), channels="real").sigmas(2000, "leading")
    x = torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="no learned variance"):  # DPS's learned variance needs a network with one
        DiffusionPrior(VPModel(torch.nn.Identity()), channels="real").denoise_with_variance(x, 1.0, 0.5)
    with pytest.raises(ValueError, match="real or rgb"):
        _prior(_net(2, 1), "complex", Normalization("max")).denoise_with_variance(x.to(torch.complex64), 1.0, 0.5)
    d, std = prior.denoise_with_variance(x, 1.0, 0.0)  # the last step adds no noise
    assert torch.equal(std, torch.zeros_like(x)) and torch.allclose(d, prior.denoise(x, 1.0))
