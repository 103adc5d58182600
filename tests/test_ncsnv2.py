"""NCSNv2 (csgm-mri-langevin's score network): published parameter names/shapes, outputs against the reference
implementation, and loading csgm checkpoints.

Fixtures were generated from the reference code (ajiljalal/ncsnv2 @ ef1eae3, the ncsnv2 submodule of
utcsilab/csgm-mri-langevin), which is not part of this repository:
- ncsnv2_csgm_mri_params.txt: ``name [shape]`` of every state-dict entry of their NCSNv2Deepest built with
  csgm's ``langevin_config`` (identical for image_size 384 and 320);
- ncsnv2_tiny_reference.pt: tiny configs of all variants with random weights, an input, labels and their output,
  plus their ``get_sigmas`` for csgm's config.
"""
import json
from pathlib import Path

import pytest
import torch

from recon.priors import CheckpointError, load_state_strict
from recon.priors.ncsnv2 import (CSGM_MRI_CONFIG, NCSNv2, geometric_sigmas, load_csgm_checkpoint,
                                 state_from_csgm_checkpoint)

FIX = Path(__file__).parent / "fixtures"
REF = torch.load(FIX / "ncsnv2_tiny_reference.pt", weights_only=True)
CASES = {c["name"]: c for c in REF["cases"]}


def _listing(net):
    return [(k, list(v.shape)) for k, v in net.state_dict().items()]


def test_csgm_network_matches_published_state_dict():
    expected = []
    for line in (FIX / "ncsnv2_csgm_mri_params.txt").read_text().splitlines():
        name, shape = line.split(" ", 1)
        expected.append((name, json.loads(shape)))
    with torch.device("meta"):
        net = NCSNv2(**CSGM_MRI_CONFIG)
        default = NCSNv2()
    assert _listing(net) == expected  # names, order and shapes
    assert _listing(default) == expected and default.config == net.config
    assert expected[0] == ("sigmas", [2311])


def test_csgm_sigmas_match_reference():
    s = geometric_sigmas(CSGM_MRI_CONFIG["sigma_begin"], CSGM_MRI_CONFIG["sigma_end"], CSGM_MRI_CONFIG["num_classes"])
    assert s.dtype == torch.float32 and torch.equal(s, REF["csgm_sigmas"])
    assert s[0].item() == pytest.approx(232.0) and s[-1].item() == pytest.approx(0.0066)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_reference_implementation(name):
    case = CASES[name]
    net = NCSNv2(**case["config"]).eval()
    assert list(net.state_dict()) == list(case["state"])
    load_state_strict(net, case["state"], name)
    with torch.no_grad():
        out = net(case["x"], case["labels"])
    ref = case["out"]
    assert out.shape == ref.shape
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_score_is_output_over_sigma_of_label():
    case = CASES["deepest_csgm"]
    net = NCSNv2(**case["config"]).eval()
    load_state_strict(net, case["state"])
    x = case["x"][:1]
    with torch.no_grad():
        a, b = net(x, torch.tensor([2])), net(x, 5)  # an int label is broadcast over the batch
    torch.testing.assert_close(a * net.sigmas[2], b * net.sigmas[5], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="integer"):
        net(x, torch.tensor([0.5]))


def test_config_is_json_and_rebuilds_the_network():
    net = NCSNv2(**CASES["plain_28_swish_variancenorm"]["config"])
    assert NCSNv2.registry_name == "ncsnv2"
    rebuilt = NCSNv2(**json.loads(json.dumps(net.config)))
    assert _listing(rebuilt) == _listing(net) and rebuilt.config == net.config


@pytest.mark.parametrize("bad", [dict(variant="deepester"), dict(normalization="GroupNorm"),
                                 dict(nonlinearity="gelu"), dict(sigma_dist="cosine")])
def test_unknown_options_are_refused(bad):
    with pytest.raises(ValueError):
        NCSNv2(**{**CASES["deeper_nonenorm"]["config"], **bad})


def _csgm_checkpoint(ema_state):
    """A checkpoint laid out as ncsnv2's runner saves it: DataParallel model state, optimizer, epoch, step, EMA."""
    raw = {"module." + k: (v if k == "sigmas" else v + 1.0) for k, v in ema_state.items()}
    shadow = {k: v.clone() for k, v in ema_state.items() if k != "sigmas"}
    optim = {"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(len(shadow)))}]}
    return [raw, optim, 3, 1000, shadow]


def test_csgm_checkpoint_round_trip(tmp_path):
    case = CASES["deepest_csgm"]
    ckpt = _csgm_checkpoint(case["state"])
    net = NCSNv2(**case["config"]).eval()
    state = state_from_csgm_checkpoint(ckpt, net)
    assert list(state) == list(case["state"])  # EMA parameters + sigmas buffer, no "module." prefix
    for k, v in case["state"].items():
        assert torch.equal(state[k], v), k
    raw = state_from_csgm_checkpoint(ckpt, net, ema=False)
    assert torch.equal(raw["begin_conv.weight"], case["state"]["begin_conv.weight"] + 1.0)

    load_state_strict(net, state, "synthetic csgm checkpoint")
    with torch.no_grad():
        # float32 sums in a different order (thread count) move the deepest network by ~1e-4 relative
        torch.testing.assert_close(net(case["x"], case["labels"]), case["out"], rtol=2e-4,
                                   atol=2e-4 * float(case["out"].abs().max()))

    path = tmp_path / "checkpoint_100000.pth"
    torch.save(ckpt, path)
    loaded = load_csgm_checkpoint(path, **case["config"])
    assert not loaded.training
    assert torch.equal(loaded.state_dict()["res31.0.conv1.weight"], case["state"]["res31.0.conv1.weight"])


def test_renamed_or_missing_keys_are_refused_by_name():
    case = CASES["deepest_csgm"]
    net = NCSNv2(**case["config"])

    ckpt = _csgm_checkpoint(case["state"])
    ckpt[-1]["refine31.crp.convs.0.kernel"] = ckpt[-1].pop("refine31.crp.convs.0.weight")
    with pytest.raises(CheckpointError, match=r"missing keys: refine31\.crp\.convs\.0\.weight") as e:
        load_state_strict(net, state_from_csgm_checkpoint(ckpt, net), "renamed")
    assert "unexpected keys: refine31.crp.convs.0.kernel" in str(e.value)

    # a parameter missing from the EMA shadow is not silently taken from the raw weights
    ckpt = _csgm_checkpoint(case["state"])
    del ckpt[-1]["res5.1.normalize1.gamma"]
    with pytest.raises(CheckpointError, match=r"missing keys: res5\.1\.normalize1\.gamma"):
        load_state_strict(net, state_from_csgm_checkpoint(ckpt, net), "missing")

    ckpt = _csgm_checkpoint(case["state"])
    ckpt[-1]["end_conv.weight"] = ckpt[-1]["end_conv.weight"][:1]
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: end_conv\.weight"):
        load_state_strict(net, state_from_csgm_checkpoint(ckpt, net), "mis-shaped")


def test_states0_is_loaded_as_strictly_as_csgm_does():
    """csgm's main.py: DataParallel(score).load_state_dict(states[0], strict=True), then the EMA shadow over it:
    a renamed or added key in states[0] is an error even though the shadow would cover the parameters."""
    case = CASES["deepest_csgm"]
    net = NCSNv2(**case["config"])
    for ema in (True, False):
        ckpt = _csgm_checkpoint(case["state"])
        ckpt[0]["module.begin_conv.kernel"] = ckpt[0].pop("module.begin_conv.weight")
        with pytest.raises(CheckpointError, match=r"states\[0\].*missing keys: begin_conv\.weight.*"
                                                  r"unexpected keys: begin_conv\.kernel"):
            state_from_csgm_checkpoint(ckpt, net, ema=ema)
        ckpt = _csgm_checkpoint(case["state"])
        ckpt[0]["module.extra.weight"] = torch.zeros(2)
        with pytest.raises(CheckpointError, match=r"states\[0\].*unexpected keys: extra\.weight"):
            state_from_csgm_checkpoint(ckpt, net, ema=ema)
    ckpt = _csgm_checkpoint(case["state"])
    ckpt[0]["begin_conv.bias"] = ckpt[0].pop("module.begin_conv.bias")  # one key without the DataParallel prefix
    with pytest.raises(CheckpointError, match=r"module\. prefix") as err:
        state_from_csgm_checkpoint(ckpt, net)
    assert "begin_conv.bias" in str(err.value)
    ckpt = _csgm_checkpoint(case["state"])
    ckpt[-1]["extra.weight"] = torch.zeros(2)  # csgm's EMAHelper.ema would ignore it; a strict load does not
    with pytest.raises(CheckpointError, match=r"EMA shadow.*unexpected keys: extra\.weight"):
        state_from_csgm_checkpoint(ckpt, net)
    ckpt = _csgm_checkpoint(case["state"])
    ckpt[-1]["sigmas"] = ckpt[0]["module.sigmas"]  # a buffer is not an EMA parameter
    with pytest.raises(CheckpointError, match=r"EMA shadow.*unexpected keys: sigmas"):
        state_from_csgm_checkpoint(ckpt, net)


def _broken(kind):
    ckpt = _csgm_checkpoint(CASES["deepest_csgm"]["state"])
    return {"dict": lambda: {"begin_conv.weight": torch.zeros(1)}, "short": lambda: ckpt[:1],
            "first": lambda: ["not a state dict"] + ckpt[1:], "no ema": lambda: ckpt[:4],
            "last": lambda: ckpt[:4] + [{"a": "b"}]}[kind]()


@pytest.mark.parametrize("kind, match", [("dict", "expected a list"), ("short", "expected a list"),
                                         ("first", "first element"), ("no ema", "no EMA shadow"),
                                         ("last", "last element")])
def test_not_a_csgm_checkpoint_is_refused(kind, match):
    net = NCSNv2(**CASES["deepest_csgm"]["config"])
    with pytest.raises(CheckpointError, match=match):
        state_from_csgm_checkpoint(_broken(kind), net)
