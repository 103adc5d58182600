"""Published checkpoints as their training code writes them, through ``priors.load``: a score_sde / Score-MRI
training checkpoint (numpy scalars in the optimizer state), csgm's list, guided-diffusion's separate EMA files,
EMA vs raw weights, the ``module.`` prefix, a stray JSON next to a checkpoint, and DPS's RGB [-1, 1] convention.

The training steps below follow the reference code line by line (yang-song/score_sde_pytorch @ cb1f359:
``losses.get_optimizer``, ``losses.optimization_manager``, ``losses.get_step_fn``, ``models/ema.py``,
``utils.save_checkpoint``, ``models/utils.create_model`` (DataParallel); ajiljalal/ncsnv2 @ ef1eae3:
``runners/ncsn_runner.py``, ``models/ema.EMAHelper``; openai/guided-diffusion ``train_util.TrainLoop.save``).
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

from recon import priors
from recon.priors.adm import ADMUNet
from recon.priors.ncsnpp import NCSNpp
from recon.priors.ncsnv2 import NCSNv2
from recon.priors.parametrizations import VPModel
from recon.priors.prior import DiffusionPrior, Normalization

# the tiny NCSN++ of tests/test_ncsnpp.py (the Score-MRI architecture, scaled down)
TINY_NCSNPP = dict(image_size=32, nf=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], num_scales=50)
TINY_V2 = dict(image_size=16, channels=2, ngf=8, num_classes=10, variant="plain")
V2_PAR = {"type": "ve_score", "sigma_min": 0.0066, "sigma_max": 232.0, "conditioning": "index", "n_levels": 10}
TINY_ADM = dict(image_size=16, in_channels=3, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                channel_mult=(1, 2), num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True,
                resblock_updown=True)


# --- score_sde_pytorch's training code, as it is ---------------------------------------------------------------
class ExponentialMovingAverage:
    """score_sde_pytorch models/ema.py (the parts a training step uses)."""

    def __init__(self, parameters, decay, use_num_updates=True):
        self.decay = decay
        self.num_updates = 0 if use_num_updates else None
        self.shadow_params = [p.clone().detach() for p in parameters if p.requires_grad]

    def update(self, parameters):
        decay = self.decay
        if self.num_updates is not None:
            self.num_updates += 1
            decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        with torch.no_grad():
            parameters = [p for p in parameters if p.requires_grad]
            for s_param, param in zip(self.shadow_params, parameters):
                s_param.sub_((1.0 - decay) * (s_param - param))

    def state_dict(self):
        return dict(decay=self.decay, num_updates=self.num_updates, shadow_params=self.shadow_params)


def score_sde_training_checkpoint(path, steps=4, lr=1e-2, warmup=5, seed=0):
    """Train the tiny NCSN++ for a few steps exactly as score_sde's run_lib does and save it with its
    ``save_checkpoint``; returns the (DataParallel) model and the EMA."""
    torch.manual_seed(seed)
    model = nn.DataParallel(NCSNpp.score_mri_fastmri_knee(**TINY_NCSNPP))          # models/utils.create_model
    ema = ExponentialMovingAverage(model.parameters(), decay=0.999)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):                                                            # losses.get_step_fn
        batch = torch.rand(2, 1, 32, 32, generator=g)                                 # magnitudes in [0, 1]
        optimizer.zero_grad()
        t = torch.rand(2, generator=g) * (1 - 1e-5) + 1e-5
        std = 0.01 * (378.0 / 0.01) ** t                                              # VESDE.marginal_prob
        z = torch.randn(batch.shape, generator=g)
        score = model(batch + std[:, None, None, None] * z, std)
        loss = torch.square(score * std[:, None, None, None] + z).reshape(2, -1).sum(-1).mean()
        loss.backward()
        for group in optimizer.param_groups:                                          # losses.optimization_manager
            group["lr"] = lr * np.minimum(state["step"] / warmup, 1.0)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        state["step"] += 1
        state["ema"].update(model.parameters())
    saved_state = {"optimizer": state["optimizer"].state_dict(), "model": state["model"].state_dict(),
                   "ema": state["ema"].state_dict(), "step": state["step"]}           # utils.save_checkpoint
    torch.save(saved_state, path)
    return model, ema


def test_score_sde_training_checkpoint_loads_safely_with_ema_and_raw_weights(tmp_path):
    path = tmp_path / "checkpoint_4.pth"
    model, ema = score_sde_training_checkpoint(path)
    assert isinstance(torch.load(path, weights_only=False)["optimizer"]["param_groups"][0]["lr"], np.floating)
    with pytest.raises(Exception, match="numpy"):  # what a plain safe load says about this file
        torch.load(path, weights_only=True)
    with_ema, raw = priors.load(path, network=TINY_NCSNPP), priors.load(path, network=TINY_NCSNPP, ema=False)
    assert with_ema.channels == "magnitude" and with_ema.normalization == Normalization("max")
    trainable = [(n, p) for n, p in model.module.named_parameters() if p.requires_grad]
    got_ema, got_raw = dict(with_ema.denoiser.net.named_parameters()), dict(raw.denoiser.net.named_parameters())
    assert all(torch.equal(got_ema[n], s) for (n, _), s in zip(trainable, ema.shadow_params))
    assert all(torch.equal(got_raw[n], p) for n, p in model.module.named_parameters())
    assert torch.equal(got_ema["all_modules.0.W"], model.module.all_modules[0].W)  # not in the EMA: from 'model'
    x = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1)).to(torch.complex64)
    with torch.no_grad():
        d_ema, d_raw = with_ema.denoise(x, 0.5), raw.denoise(x, 0.5)
    assert torch.isfinite(torch.view_as_real(d_ema)).all()
    assert (d_ema - d_raw).abs().max() > 1e-3 * d_raw.abs().max()


def test_numpy_scalars_pickled_by_numpy_1_are_read_and_nothing_else_is(tmp_path):
    """A file written with numpy < 2 (as the published Score-MRI checkpoint was) names the scalar reconstructor
    numpy.core.multiarray.scalar; arrays, and any other object, stay refused."""
    obj = {"lr": np.float64(3e-5), "n": np.int64(4), "w": torch.ones(2)}
    torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    assert data.count(b"numpy._core.multiarray\nscalar") == 1
    (tmp_path / "numpy1.pt").write_bytes(data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    from recon.priors.format import torch_load
    for name in ("legacy.pt", "numpy1.pt"):
        got = torch_load(tmp_path / name)
        assert got["lr"] == np.float64(3e-5) and got["n"] == 4 and torch.equal(got["w"], obj["w"])
    torch.save({"a": np.zeros(3)}, tmp_path / "array.pt")
    torch.save({"f": np.random.default_rng}, tmp_path / "function.pt")
    for name in ("array.pt", "function.pt"):
        with pytest.raises(priors.CheckpointError, match="cannot be read as a torch checkpoint.*only tensors"):
            priors.load(tmp_path / name)
    assert not any("numpy" in str(g) for g in torch.serialization.get_safe_globals())  # nothing left allowed


def test_score_sde_module_prefix_all_or_none(tmp_path):
    path = tmp_path / "checkpoint_4.pth"
    score_sde_training_checkpoint(path, steps=2)
    ckpt = torch.load(path, weights_only=False)
    ckpt["model"] = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}  # saved unwrapped: loads too
    torch.save(ckpt, tmp_path / "plain.pth")
    assert priors.load(tmp_path / "plain.pth", network=TINY_NCSNPP, ema=False).name.endswith("plain.pth")
    ckpt["model"]["module.sigmas"] = ckpt["model"].pop("sigmas")
    torch.save(ckpt, tmp_path / "partial.pth")
    with pytest.raises(priors.CheckpointError, match=r"1 of \d+ keys carry .*module\. prefix"):
        priors.load(tmp_path / "partial.pth", network=TINY_NCSNPP)


def test_a_training_config_next_to_a_checkpoint_does_not_hijack_it(tmp_path):
    path = tmp_path / "checkpoint_4.pth"
    score_sde_training_checkpoint(path, steps=1)
    (tmp_path / "checkpoint_4.json").write_text(json.dumps({"training": {"batch_size": 2}, "model": {"nf": 16}}))
    assert priors.load(path, network=TINY_NCSNPP).name == "score-mri:checkpoint_4.pth"
    (tmp_path / "checkpoint_4.json").write_text("not json at all")
    assert priors.load(path, network=TINY_NCSNPP).channels == "magnitude"
    # a toolkit config next to it that names another weights file is not this file's config either
    (tmp_path / "checkpoint_4.json").write_text(json.dumps({"format": "diffrecon-prior/1", "weights": "other.pt"}))
    assert priors.load(path, network=TINY_NCSNPP).name == "score-mri:checkpoint_4.pth"
    # a toolkit config that names it is: it is read, and its problems are reported
    (tmp_path / "checkpoint_4.json").write_text(json.dumps({"format": "diffrecon-prior/9", "weights": path.name}))
    with pytest.raises(priors.CheckpointError, match="unknown format 'diffrecon-prior/9'"):
        priors.load(path)


# --- csgm-mri-langevin / ncsnv2 ----------------------------------------------------------------------------------
class EMAHelper:
    """ajiljalal/ncsnv2 models/ema.py: the shadow is keyed by the unwrapped parameter names."""

    def __init__(self, mu=0.999):
        self.mu, self.shadow = mu, {}

    def register(self, module):
        module = module.module if isinstance(module, nn.DataParallel) else module
        self.shadow = {n: p.data.clone() for n, p in module.named_parameters() if p.requires_grad}

    def update(self, module):
        module = module.module if isinstance(module, nn.DataParallel) else module
        for n, p in module.named_parameters():
            if p.requires_grad:
                self.shadow[n].data = (1. - self.mu) * p.data + self.mu * self.shadow[n].data

    def state_dict(self):
        return self.shadow


def csgm_checkpoint(path, steps=3):
    """ncsn_runner.train: DataParallel score, Adam, EMA helper; states = [model, optimizer, epoch, step, ema]."""
    torch.manual_seed(0)
    score = nn.DataParallel(NCSNv2(**TINY_V2))
    optimizer = torch.optim.Adam(score.parameters(), lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), amsgrad=False,
                                 eps=1e-3)
    ema_helper = EMAHelper(mu=0.999)
    ema_helper.register(score)
    g = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        x = torch.rand(2, 2, 16, 16, generator=g)
        labels = torch.randint(0, 10, (2,), generator=g)
        sig = score.module.sigmas[labels].view(-1, 1, 1, 1)
        noise = torch.randn(x.shape, generator=g) * sig
        loss = (((score(x + noise, labels) + noise / sig ** 2) * sig) ** 2).sum() / 2  # anneal_dsm_score_estimation
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema_helper.update(score)
    torch.save([score.state_dict(), optimizer.state_dict(), 1, steps, ema_helper.state_dict()], path)
    return score, ema_helper


def test_csgm_checkpoint_ema_and_raw_weights(tmp_path):
    path = tmp_path / "checkpoint_3.pth"
    score, ema_helper = csgm_checkpoint(path)
    assert all(k.startswith("module.") for k in torch.load(path)[0])
    assert not any(k.startswith("module.") for k in torch.load(path)[-1])
    with_ema = priors.load(path, network=TINY_V2, parametrization=V2_PAR)
    raw = priors.load(path, network=TINY_V2, parametrization=V2_PAR, ema=False)
    assert with_ema.channels == "complex" and with_ema.normalization == Normalization("percentile", 99.0)
    got_ema, got_raw = dict(with_ema.denoiser.net.named_parameters()), dict(raw.denoiser.net.named_parameters())
    assert all(torch.equal(got_ema[n], v) for n, v in ema_helper.shadow.items())
    assert all(torch.equal(got_raw[n], p) for n, p in score.module.named_parameters())
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d_ema, d_raw = with_ema.denoise(x, 1.0), raw.denoise(x, 1.0)
    assert (d_ema - d_raw).abs().max() > 1e-3 * d_raw.abs().max()
    states = torch.load(path)
    torch.save(states[:4], tmp_path / "no_ema.pth")  # saved with config.model.ema false
    assert priors.load(tmp_path / "no_ema.pth", network=TINY_V2, parametrization=V2_PAR, ema=False)
    with pytest.raises(priors.CheckpointError, match="no EMA shadow.*ema=False"):
        priors.load(tmp_path / "no_ema.pth", network=TINY_V2, parametrization=V2_PAR)
    states[0]["module.extra.weight"] = torch.zeros(1)  # csgm's load_state_dict(strict=True) refuses it
    torch.save(states, tmp_path / "added.pth")
    with pytest.raises(priors.CheckpointError, match=r"states\[0\].*unexpected keys: extra\.weight"):
        priors.load(tmp_path / "added.pth", network=TINY_V2, parametrization=V2_PAR)


# --- guided-diffusion / DDS / DPS: raw state dicts, the EMA in its own file ------------------------------------------
def _adm(seed, **overrides):
    torch.manual_seed(seed)
    net = ADMUNet(**{**TINY_ADM, **overrides})
    with torch.no_grad():  # the output conv starts at zero; make the weights matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return net


def test_guided_diffusion_ema_is_a_separate_file(tmp_path):
    raw, avg = _adm(0, in_channels=2), _adm(1, in_channels=2)
    torch.save(raw.state_dict(), tmp_path / "model000010.pt")           # train_util.TrainLoop.save
    torch.save(avg.state_dict(), tmp_path / "ema_0.9999_000010.pt")
    net = dict(TINY_ADM, in_channels=2)
    loaded = priors.load(tmp_path / "ema_0.9999_000010.pt", network=net, ema=True)
    assert loaded.name == "dds-fastmri:ema_0.9999_000010.pt"
    assert torch.equal(loaded.denoiser.net.out[2].weight, avg.out[2].weight)
    assert torch.equal(priors.load(tmp_path / "model000010.pt", network=net, ema=False).denoiser.net.out[2].weight,
                       raw.out[2].weight)
    assert priors.load(tmp_path / "model000010.pt", network=net).name == "dds-fastmri:model000010.pt"
    with pytest.raises(priors.CheckpointError, match=r"separate file.*load ema_0\.9999_000010\.pt instead"):
        priors.load(tmp_path / "model000010.pt", network=net, ema=True)
    with pytest.raises(priors.CheckpointError, match=r"EMA file; its raw weights are model000010\.pt"):
        priors.load(tmp_path / "ema_0.9999_000010.pt", network=net, ema=False)
    torch.save(raw.state_dict(), tmp_path / "fastmri_knee_320_complex_1m.pt")  # a released file: one set of weights
    with pytest.raises(priors.CheckpointError, match="holds one set of weights"):
        priors.load(tmp_path / "fastmri_knee_320_complex_1m.pt", network=net, ema=True)


def test_raw_state_dict_module_prefix_is_stripped_only_when_on_every_key(tmp_path):
    net = _adm(0)
    state = {"module." + k: v for k, v in net.state_dict().items()}  # saved from a DDP-wrapped model
    torch.save(state, tmp_path / "ddp.pt")
    loaded = priors.load(tmp_path / "ddp.pt", network=TINY_ADM)
    assert torch.equal(loaded.denoiser.net.input_blocks[0][0].weight, net.input_blocks[0][0].weight)
    state["out.2.bias"] = state.pop("module.out.2.bias")
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(priors.CheckpointError, match=r"module\. prefix.*out\.2\.bias|out\.2\.bias.*module\. prefix"):
        priors.load(tmp_path / "partial.pt", network=TINY_ADM)


# --- DPS: RGB images in [-1, 1] ----------------------------------------------------------------------------------
def test_dps_checkpoint_is_an_rgb_prior_in_minus_one_one(tmp_path):
    net = _adm(0)
    torch.save(net.state_dict(), tmp_path / "ffhq_10m.pt")
    prior = priors.load(tmp_path / "ffhq_10m.pt", network=TINY_ADM)
    assert prior.name == "dps-ffhq:ffhq_10m.pt" and prior.channels == "rgb" and prior.image_size == (3, 16, 16)
    assert prior.normalization == Normalization("range", value=1.0, lo=-1.0, hi=1.0)
    vp = VPModel(net, "linear", 1000, "eps", learned_sigma=True)
    assert prior.sigma_max == pytest.approx(vp.sigma_max / 2) and prior.sigma_min == pytest.approx(vp.sigma_min / 2)
    assert torch.allclose(prior.sigmas(5, "auto"), vp.sigmas[torch.linspace(999, 0, 5).round().long()].double() / 2)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2, 3, 16, 16, generator=g)                 # images in [0, 1], as DPS's ToTensor gives them
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        d = prior.denoise(u, sigma)
        # DPS's network sees 2u - 1 with noise 2 sigma: the same Tweedie estimate, mapped back to [0, 1]
        want = (vp(2 * u - 1, 2 * sigma) + 1) / 2
        assert d.shape == u.shape and torch.allclose(d, want, atol=1e-5)
        s = sigma.reshape(2, 1, 1, 1)
        assert torch.allclose(prior.score(u, sigma), (d - u) / s ** 2, atol=1e-5)
        assert torch.allclose(prior.eps(u, sigma), (u - d) / s, atol=1e-5)
        assert prior.denoise(u[None], 0.5).shape == (1, 2, 3, 16, 16)
        # normalization= overrides the recorded convention: the network then sees u itself
        plain = priors.load(tmp_path / "ffhq_10m.pt", network=TINY_ADM, normalization={"kind": "fixed", "value": 1.0})
        assert torch.allclose(plain.denoise(u, sigma), vp(u, sigma), atol=1e-5)
        # the toolkit's own format keeps the convention
        again = priors.load(priors.save(prior, tmp_path / "dps", half=False))
        assert again.config() == prior.config() and torch.allclose(again.denoise(u, sigma), d, atol=1e-6)
    x = torch.rand(1, 8, 8)
    assert torch.equal(prior.normalize(x, x, _Identity()), x) and torch.equal(prior.denormalize(x, x, _Identity()), x)
    with pytest.raises(ValueError, match=r"rgb prior denoises \(\.\.\., 3, H, W\)"):
        prior.denoise(torch.rand(2, 16, 16), 0.5)
    with pytest.raises(ValueError, match="real-valued prior cannot denoise a complex"):
        prior.denoise(torch.rand(1, 3, 16, 16).to(torch.complex64), 0.5)


def test_dps_imagenet_kind_and_kind_inference(tmp_path):
    cfg = dict(TINY_ADM, model_channels=256, num_head_channels=128, channel_mult=(1,))  # width 256: ImageNet's
    net = _adm(0, **cfg)
    torch.save(net.state_dict(), tmp_path / "imagenet256.pt")
    assert priors.load(tmp_path / "imagenet256.pt", network=cfg).name == "dps-imagenet:imagenet256.pt"
    assert priors.load(tmp_path / "imagenet256.pt", network=cfg, kind="dps-ffhq").channels == "rgb"
    torch.save({"conv.weight": torch.zeros(1, 5, 3, 3)}, tmp_path / "unknown.pt")
    with pytest.raises(priors.CheckpointError, match="pass kind="):
        priors.load(tmp_path / "unknown.pt")


def test_rgb_and_range_conventions_are_validated():
    den = VPModel(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="image size of an rgb prior is"):
        DiffusionPrior(den, "rgb", image_size=(16, 16))
    with pytest.raises(ValueError, match="'range' normalization .* not channels='complex'"):
        DiffusionPrior(den, "complex", normalization=Normalization("range"))
    with pytest.raises(ValueError, match="hi > lo"):
        Normalization("range", lo=1.0, hi=-1.0)
    x = torch.rand(1, 4, 4) * 7
    assert Normalization("range", value=255.0).scale(x).item() == 255.0  # data in [0, 255] -> [0, 1]
    assert Normalization("max").affine == (0.0, 1.0) and Normalization("range").affine == (-1.0, 2.0)


class _Identity:
    """Just what ``DiffusionPrior.data_scale`` asks of an operator."""
    ishape = (8, 8)

    def pinv(self, y):
        return y
