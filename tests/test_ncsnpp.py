"""NCSN++ (recon.priors.ncsnpp): the published Score-MRI parameter layout, a tiny forward pass, score_sde
checkpoint conversion, and numerical agreement with the reference implementation: always against the stored
outputs of ``fixtures/ncsnpp_tiny_reference.pt`` (made once by score_sde_pytorch / Score-MRI themselves, see its
``provenance`` field; weights stored as int8 codes times a power-of-two scale, exact in float32), and live when a
score_sde_pytorch / Score-MRI source tree is given in SCORE_SDE_SRC."""
import ast
import importlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recon.priors import CheckpointError, load_state_strict
from recon.priors.ncsnpp import SCORE_MRI_FASTMRI_KNEE, NCSNpp, state_from_score_sde_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "ncsnpp_fastmri_knee_params.txt"
REFERENCE_FIXTURE = Path(__file__).parent / "fixtures" / "ncsnpp_tiny_reference.pt"
TINY = dict(image_size=32, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), num_scales=50)


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return NCSNpp.score_mri_fastmri_knee(**{**TINY, **overrides}).eval()


# (a) the published network's state dict, names, order and shapes --------------------------------------------

def test_fastmri_knee_state_dict_matches_published_checkpoint_layout():
    expected = [line.split(" ") for line in FIXTURE.read_text().splitlines() if line and not line.startswith("#")]
    with torch.device("meta"):
        net = NCSNpp.score_mri_fastmri_knee()
    got = [[k, "x".join(map(str, v.shape))] for k, v in net.state_dict().items()]
    assert len(got) == len(expected) == 522
    assert got == expected
    assert net.state_dict()["sigmas"].dtype == torch.float64  # as score_sde stores it
    # the Fourier features are the only parameter outside the EMA (not trainable)
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["all_modules.0.W"]


def test_fastmri_knee_config_is_score_mri():
    with torch.device("meta"):
        net = NCSNpp.score_mri_fastmri_knee()
    cfg = net.config
    assert (cfg["image_size"], cfg["num_channels"], cfg["nf"], cfg["ch_mult"]) == (320, 1, 128, [1, 2, 2, 2])
    assert (cfg["sigma_min"], cfg["sigma_max"], cfg["num_scales"], cfg["centered"]) == (0.01, 378.0, 2000, False)
    assert cfg == SCORE_MRI_FASTMRI_KNEE
    assert json.loads(json.dumps(cfg)) == cfg and NCSNpp.registry_name == "ncsnpp"


# (b) forward on a tiny config -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [dict(num_channels=2, centered=True),
                                       dict(embedding_type="positional", progressive="output_skip",
                                            progressive_input="input_skip", progressive_combine="cat")])
def test_tiny_forward_shape_and_finite(overrides):
    net = tiny(**overrides)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, net.config["num_channels"], 32, 32, generator=g)
    cond = torch.tensor([0.5, 20.0]) if net.config["embedding_type"] == "fourier" else torch.tensor([3, 40])
    with torch.no_grad():
        y = net(x, cond)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


def test_scale_by_sigma_divides_output_by_sigma():
    scaled, plain = tiny(seed=1), tiny(seed=2, scale_by_sigma=False)
    with torch.no_grad():
        for p in scaled.parameters():  # the published init zeroes the output layer; make it matter
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    plain.load_state_dict(scaled.state_dict())
    x, sigma = torch.rand(2, 1, 32, 32), torch.tensor([0.1, 7.0])
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, sigma) * sigma[:, None, None, None], plain(x, sigma))
        torch.testing.assert_close(scaled(x, 7.0), scaled(x, torch.tensor([7.0, 7.0])))


# (c) score_sde / Score-MRI checkpoints ----------------------------------------------------------------------

def score_sde_checkpoint(net):
    """A checkpoint as score_sde's run_lib saves it: DataParallel-prefixed raw weights and an EMA whose shadow
    parameters (here raw + 1, to tell them apart) follow model.parameters() over trainable parameters."""
    return {"model": {"module." + k: v.clone() for k, v in net.state_dict().items()},
            "ema": {"decay": 0.999, "num_updates": 7,
                    "shadow_params": [p.detach() + 1 for p in net.parameters() if p.requires_grad]},
            "optimizer": {"state": {}, "param_groups": []}, "step": 7}


def test_checkpoint_round_trip_loads_ema_weights(tmp_path):
    src, dst = tiny(seed=1), tiny(seed=2)
    path = tmp_path / "checkpoint_7.pth"
    torch.save(score_sde_checkpoint(src), path)
    load_state_strict(dst, state_from_score_sde_checkpoint(path, dst), str(path))
    for (name, a), (_, b) in zip(src.named_parameters(), dst.named_parameters()):
        torch.testing.assert_close(b, a + 1 if a.requires_grad else a, msg=name)  # EMA, except the fixed W
    torch.testing.assert_close(dst.sigmas, src.sigmas)
    raw = state_from_score_sde_checkpoint(torch.load(path, weights_only=True), dst, ema=False)
    torch.testing.assert_close(raw["all_modules.4.Conv_0.weight"], src.all_modules[4].Conv_0.weight)


@pytest.mark.parametrize("edit, names", [
    (lambda m: m.pop("module.all_modules.0.W"), ["missing", "all_modules.0.W"]),
    (lambda m: m.__setitem__("module.sigma", m.pop("module.sigmas")), ["missing", "sigmas", "unexpected", "sigma"]),
    (lambda m: m.__setitem__("module.extra.weight", torch.zeros(1)), ["unexpected", "extra.weight"]),
])
def test_checkpoint_with_missing_or_renamed_key_is_refused(edit, names):
    src, dst = tiny(seed=1), tiny(seed=2)
    ckpt = score_sde_checkpoint(src)
    edit(ckpt["model"])
    with pytest.raises(CheckpointError) as err:
        load_state_strict(dst, state_from_score_sde_checkpoint(ckpt, dst), "checkpoint_7.pth")
    assert all(n in str(err.value) for n in names)


def test_checkpoint_with_mismatched_ema_is_refused():
    src, dst = tiny(seed=1), tiny(seed=2)
    last = [n for n, p in dst.named_parameters() if p.requires_grad][-1]
    ckpt = score_sde_checkpoint(src)
    ckpt["ema"]["shadow_params"].pop()
    with pytest.raises(ValueError, match=last.replace(".", r"\.")):
        state_from_score_sde_checkpoint(ckpt, dst)
    ckpt = score_sde_checkpoint(src)
    ckpt["ema"]["shadow_params"][3] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"all_modules\.2\.bias"):  # trainable parameter 3 (W is skipped)
        state_from_score_sde_checkpoint(ckpt, dst)
    with pytest.raises(ValueError):  # a checkpoint of another size
        state_from_score_sde_checkpoint(score_sde_checkpoint(tiny(nf=32)), dst)
    with pytest.raises(ValueError, match="no 'ema' entry"):
        state_from_score_sde_checkpoint({"model": score_sde_checkpoint(src)["model"]}, dst)


# (d) agreement with score_sde's own implementation ----------------------------------------------------------

# Three spots of the reference do not run on current PyTorch (none is reached by the Score-MRI config, which only
# uses FIR up/down-sampling without convolution, the fused FIR down-convolution and no nearest upsampling):
# negative-step slicing and a TensorFlow-style 4-element stride in upsample_conv_2d, and a positional 'nearest'
# passed as F.interpolate's scale_factor. They are patched to their evident meaning before the comparison.
REFERENCE_PATCHES = {
    "models/up_or_down_sampling.py": [("w[..., ::-1, ::-1]", "torch.flip(w, [-2, -1])"),
                                      ("stride = [1, 1, factor, factor]", "stride = [factor, factor]")],
    "models/layerspp.py": [("(H * 2, W * 2), 'nearest')", "(H * 2, W * 2), mode='nearest')")],
}


@pytest.fixture(scope="module")
def reference_ncsnpp(tmp_path_factory):
    """score_sde's NCSNpp class, imported from a copy of $SCORE_SDE_SRC with the CUDA op replaced by the
    reference's own pure-torch ``upfirdn2d_native``."""
    src = os.environ.get("SCORE_SDE_SRC")
    if not src:
        pytest.skip("set SCORE_SDE_SRC to a score_sde_pytorch or Score-MRI checkout to compare with the reference")
    src, dst = Path(src), tmp_path_factory.mktemp("score_sde")
    (dst / "models").mkdir()
    for f in (src / "models").glob("*.py"):
        text = f.read_text()
        for old, new in REFERENCE_PATCHES.get(f"models/{f.name}", []):
            text = text.replace(old, new)
        (dst / "models" / f.name).write_text(text)
    (dst / "sde_lib.py").write_text((src / "sde_lib.py").read_text())
    op_src = (src / "op" / "upfirdn2d.py").read_text()
    native = next(n for n in ast.parse(op_src).body if getattr(n, "name", None) == "upfirdn2d_native")
    (dst / "op").mkdir()
    (dst / "op" / "__init__.py").write_text(
        "import torch\nfrom torch.nn import functional as F\n\n" + ast.get_source_segment(op_src, native) +
        "\n\ndef upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):\n"
        "    return upfirdn2d_native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])\n")
    names = ("models", "sde_lib", "op")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
    sys.path.insert(0, str(dst))
    try:
        yield importlib.import_module("models.ncsnpp").NCSNpp
    finally:
        sys.path.remove(str(dst))
        for k in [k for k in sys.modules if k.split(".")[0] in names]:
            del sys.modules[k]
        sys.modules.update(saved)


def reference_config(cfg):
    data = ("image_size", "num_channels", "centered")
    return SimpleNamespace(
        model=SimpleNamespace(name="ncsnpp", **{k: v for k, v in cfg.items() if k not in data}),
        data=SimpleNamespace(**{k: cfg[k] for k in data}), training=SimpleNamespace(continuous=True))


@pytest.mark.parametrize("overrides", [
    {},                                                       # the Score-MRI knee architecture, scaled down
    dict(num_channels=2, centered=True, fir=False, progressive_input="none", ch_mult=(1, 2, 2),
         attn_resolutions=(16, 8)),
    dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat",
         embedding_type="positional"),
    dict(resblock_type="ddpm", progressive="residual", skip_rescale=False),
])
def test_matches_reference_implementation(reference_ncsnpp, overrides):
    cfg = tiny(**overrides).config
    ref, ours = reference_ncsnpp(reference_config(cfg)).eval(), NCSNpp(**cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():  # random weights everywhere (the published init zeroes output layers)
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    load_state_strict(ours, ref.state_dict(), "reference")
    x = torch.rand(2, cfg["num_channels"], 32, 32, generator=g)
    cond = torch.tensor([0.02, 50.0]) if cfg["embedding_type"] == "fourier" else torch.tensor([0, 37])
    with torch.no_grad():
        want, got = ref(x, cond), ours(x, cond)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()



# (e) agreement with score_sde's outputs stored in a fixture (the configurations of (d); no reference code needed)

@pytest.fixture(scope="module")
def reference_outputs():
    return {c["name"]: c for c in torch.load(REFERENCE_FIXTURE, weights_only=True)["cases"]}


@pytest.mark.parametrize("name", [
    "score_mri_knee",                          # Score-MRI (score-MRI's code): fourier, biggan, residual input, FIR
    "fir_off_no_progressive_centered",
    "positional_output_skip_input_skip_cat",   # positional embedding, output_skip / input_skip / cat
    "ddpm_resblock_residual_no_rescale",
])
def test_output_equals_stored_reference_output(reference_outputs, name):
    case = reference_outputs[name]
    cfg = case["config"]
    assert cfg == tiny(**case["overrides"]).config  # the fixture holds the configurations of test (d)
    net = NCSNpp(**cfg).eval()
    # our sigmas are score_sde's get_sigmas (np.exp of a linspace of logs): equal to the last bit or two, as
    # numpy's vectorised exp/log differ by an ulp between releases
    assert torch.allclose(net.sigmas, case["buffers"]["sigmas"], rtol=1e-15, atol=0)
    state = {k: q.float() * s for k, (q, s) in case["state"].items()}
    load_state_strict(net, {**state, **case["buffers"]}, f"fixture {name}")
    with torch.no_grad():
        got = net(case["x"], case["cond"])
    want = case["out"]  # float64 for the positional case, where score_sde divides by its float64 sigmas
    assert got.shape == want.shape and got.dtype == case["x"].dtype
    for i, (g, w) in enumerate(zip(got.to(want.dtype), want)):  # per sample: scale_by_sigma sets each sample's magnitude
        assert w.abs().max() > 0 and (g - w).abs().max() <= 1e-5 * w.abs().max(), (i, (g - w).abs().max())
