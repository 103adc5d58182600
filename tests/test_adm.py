"""The ADM UNet (guided-diffusion / DDS / DPS): checkpoint-exact parameter names and shapes, outputs equal to
guided-diffusion's own UNetModel, and strict loading of raw state dicts.

Fixtures (made once from the fetched reference source, outside the repository):
- ``fixtures/adm_<config>_params.txt``: ``name shape`` of every state-dict entry of the reference model built
  as DDS (``guided_diffusion.script_util.create_model(**config.model)`` with configs/vp/*.yml) or DPS
  (``guided_diffusion.unet.create_model(**model_config)``) build it;
- ``fixtures/adm_tiny_reference.pt``: tiny openai/guided-diffusion ``UNetModel``s with random weights (stored as
  int8 codes times a power-of-two scale per tensor, exact in float32), an input, and their outputs.
"""
from pathlib import Path

import pytest
import torch

from recon.priors.adm import ADMUNet, timestep_embedding
from recon.priors import CheckpointError, load_state_strict

FIX = Path(__file__).parent / "fixtures"


def _shapes(net):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def _read_params(name):
    rows = []
    for line in (FIX / f"adm_{name}_params.txt").read_text().splitlines():
        key, shape = line.split()
        rows.append((key, tuple(int(s) for s in shape.split(",") if s)))
    return rows


@pytest.mark.parametrize("name", ["dds_fastmri", "dds_aapm", "dps_ffhq", "dps_imagenet"])
def test_published_configs_have_the_checkpoint_state_dict(name):
    with torch.device("meta"):
        net = getattr(ADMUNet, name)()
    assert _shapes(net) == _read_params(name)  # names, order and shapes
    assert name in ADMUNet.DIFFUSION and ADMUNet.DIFFUSION[name]["parametrization"]["type"] == "vp"


def test_dds_fastmri_has_attention_only_in_the_middle_block():
    with torch.device("meta"):
        net = ADMUNet.dds_fastmri()
    assert net.attention_ds == (20,)  # 320 // 16: no level reaches it, as in the published checkpoint
    assert [k for k in net.state_dict() if "qkv" in k] == ["middle_block.1.qkv.weight", "middle_block.1.qkv.bias"]
    assert net.out_channels == 4 and net.config["channel_mult"] == [1, 1, 2, 2, 4, 4]


def test_overrides_and_config_rebuild_the_same_network():
    import json
    with torch.device("meta"):
        net = ADMUNet.dps_ffhq(num_classes=10)
        again = ADMUNet(**json.loads(json.dumps(net.config)))
    assert net.config["num_classes"] == 10 and tuple(net.label_emb.weight.shape) == (10, 512)
    assert _shapes(net) == _shapes(again)


def _load_reference(case):
    ref = torch.load(FIX / "adm_tiny_reference.pt", weights_only=True)[case]
    state = {k: q.float() * s for k, (q, s) in ref["state"].items()}
    return ref, state


@pytest.mark.parametrize("case", ["tiny", "tiny_cond"])
def test_output_equals_guided_diffusion(case):
    ref, state = _load_reference(case)
    net = ADMUNet(**ref["config"]).eval()
    load_state_strict(net, state, f"fixture {case}")
    with torch.no_grad():
        out = net(ref["x"], ref["t"], ref["y"])
    assert out.shape == ref["out"].shape
    assert torch.allclose(out, ref["out"], atol=1e-5, rtol=1e-5), (out - ref["out"]).abs().max()


def test_fp16_torso_matches_guided_diffusion_convert_to_fp16():
    ref, state = _load_reference("tiny")
    net = ADMUNet(**ref["config"], use_fp16=True).eval()
    load_state_strict(net, state, "fixture tiny")
    assert net.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert net.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms stay float32
    with torch.no_grad():
        out = net(ref["x"], ref["t"])
    assert out.dtype == torch.float32
    # CPU half-precision convolutions accumulate in float16 on some instruction sets and in float32 on others, so
    # the fp16 torso is checked to half precision's budget (the reference fp16 and fp32 outputs differ by 4e-3 of
    # a maximum of 2.6); the dtypes above check which layers were converted.
    assert torch.allclose(out, ref["out_fp16"], atol=1e-2, rtol=1e-2), (out - ref["out_fp16"]).abs().max()


def test_scalar_timestep_broadcasts_and_shapes_are_checked():
    torch.manual_seed(0)
    net = ADMUNet(image_size=16, in_channels=1, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                  channel_mult=(1, 1), learn_sigma=True).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, 7.5), net(x, torch.full((3,), 7.5)))
        assert net(x, 7.5).shape == (3, 2, 16, 16)
        with pytest.raises(ValueError, match="divisible"):
            net(torch.randn(1, 1, 15, 16), 1.0)
        with pytest.raises(ValueError, match="class-conditional"):
            net(x, 1.0, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="out_channels"):
        ADMUNet(image_size=16, in_channels=1, model_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                out_channels=1, learn_sigma=True)
    with pytest.raises(ValueError, match="channel_mult"):
        ADMUNet(image_size=48, in_channels=1, model_channels=32, num_res_blocks=1)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 2.5])
    e = timestep_embedding(t, 8)
    f = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    assert torch.allclose(e, torch.cat([torch.cos(t[:, None] * f), torch.sin(t[:, None] * f)], 1), atol=1e-6)


def test_raw_state_dict_round_trip_and_strict_refusal(tmp_path):
    ref, state = _load_reference("tiny")
    net = ADMUNet(**ref["config"])
    path = tmp_path / "raw.pt"
    torch.save(state, path)  # a raw state dict, as the DDS/DPS checkpoints are
    other = ADMUNet(**ref["config"])
    load_state_strict(other, torch.load(path, weights_only=True), str(path))
    load_state_strict(net, state)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))

    renamed = dict(state)
    renamed["middle_block.1.qkv_renamed.weight"] = renamed.pop("middle_block.1.qkv.weight")
    with pytest.raises(CheckpointError) as err:
        load_state_strict(other, renamed, "renamed.pt")
    assert "middle_block.1.qkv.weight" in str(err.value) and "middle_block.1.qkv_renamed.weight" in str(err.value)

    missing = {k: v for k, v in state.items() if k != "out.2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: out\.2\.bias"):
        load_state_strict(other, missing, "missing.pt")

    with torch.device("meta"):
        wrong = ADMUNet(**{**ref["config"], "in_channels": 1, "out_channels": None})
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: input_blocks\.0\.0\.weight"):
        load_state_strict(wrong, state, "wrong.pt")
