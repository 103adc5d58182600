"""Hostile priors and training checkpoints: pickle payloads, paths out of a prior's folder, and network sizes
taken from configs.

The command-line cases use the runner of ``tests/test_fuzz_contract.py`` (exit status 0, or 2 with one
``recon: error:`` line, inputs unchanged) on its work folder, plus the files made here; each hostile case names
a word its error line must contain. The unit tests check what must not happen: a planted payload never runs
(its unpickling would create a marker file), and a network that does not match its weights or the memory
budget is never built off the meta device.
"""
import builtins
import json
import shutil
from pathlib import Path

import pytest
import torch

from recon import memory, priors
from recon.priors import networks
from recon.priors.parametrizations import EDM
from recon.priors.prior import DiffusionPrior, Normalization
from recon.priors.unet import UNet
from recon.training import TrainConfig, train
from tests.test_fuzz_contract import run, work  # noqa: F401 (work: the module's fixture)

TINY = {"name": "unet", "base": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": []}


class Payload:
    """A pickled object whose unpickling creates ``marker`` (as a real payload would run a command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _tiny_prior(channels="complex"):
    torch.manual_seed(0)
    n = 2 if channels == "complex" else 1
    net = UNet(n, n, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=())
    return DiffusionPrior(EDM(net), channels, (16, 16), Normalization("percentile", 99.0), name="tiny")


def _variant(src: Path, dst: Path, weights=None, **network):
    """A copy of the prior folder ``src`` at ``dst`` whose config names ``weights`` and changes ``network``."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "prior.json").read_text())
    if weights is not None:
        cfg["weights"] = weights
    cfg["network"].update(network)
    (dst / "prior.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def hostile(work):  # noqa: F811 (the imported fixture)
    """The hostile files, in the work folder: prior folders p_*, training output folders out_*, train configs."""
    d = work
    priors.save(_tiny_prior(), d / "p_ok" / "prior", half=True)
    ok = d / "p_ok"
    _variant(ok, d / "p_up", weights="../img.pt")
    _variant(ok, d / "p_abs", weights=str(ok / "prior.pt"))
    _variant(ok, d / "p_dots", weights="sub/../../p_ok/prior.pt")
    (_variant(ok, d / "p_link") / "prior.pt").unlink()
    (d / "p_link" / "prior.pt").symlink_to(ok / "prior.pt")
    _variant(ok, d / "p_empty", weights="")
    _variant(ok, d / "p_big", base=20000)
    _variant(ok, d / "p_blocks", num_blocks=10 ** 9)
    _variant(ok, d / "p_shape", base=16)
    _variant(ok, d / "p_kwarg", bogus=1)
    torch.save([torch.zeros(3)], _variant(ok, d / "p_list") / "prior.pt")
    torch.save({"inp.weight": Payload(d / "MARKER_prior")}, _variant(ok, d / "p_payload") / "prior.pt")
    cfg = json.loads((d / "train.json").read_text())
    for name, network in (("train_big.json", {**cfg["network"], "base": 20000}),
                          ("train_blocks.json", {**cfg["network"], "num_blocks": 10 ** 9}),
                          ("train_net.json", {"name": "nope"})):
        (d / name).write_text(json.dumps({**cfg, "network": network}))
    # a finished run whose checkpoint the hostile ones are made from
    from recon.cli import main
    assert main(["--quiet", "train", str(d / "train.json"), "--out", str(d / "out_base")]) == 0
    state = torch.load(d / "out_base" / "train_state.pt", weights_only=True)
    for folder, planted in (("out_pay", {**state, "opt": Payload(d / "MARKER_train")}),
                            ("out_pay_restart", {**state, "opt": Payload(d / "MARKER_restart")}),
                            ("out_renamed", {**state, "net": {("x" + k): v for k, v in state["net"].items()}}),
                            ("out_ranks", {**state, "generators": []}),
                            ("out_history", {**state, "history": state["history"] * 2})):
        (d / folder).mkdir()
        torch.save(planted, d / folder / "train_state.pt")
    (d / "out_junk").mkdir()
    (d / "out_junk" / "train_state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    return d


DDS = "reconstruct sim.h5 --sampler dds --steps 2 --center-fraction 0.25 --out r_prior.h5 --prior"
CASES = [
    (f"{DDS} p_ok", 0, ""),
    (f"{DDS} p_up", 2, "resolves outside the prior's folder"),
    (f"{DDS} p_abs", 2, "resolves outside"),
    (f"{DDS} p_dots", 2, "resolves outside"),
    (f"{DDS} p_link", 2, "resolves outside"),
    (f"{DDS} p_empty", 2, "weights must name a file"),
    (f"--memory 1 {DDS} p_big", 2, "memory budget"),
    (f"{DDS} p_blocks", 2, "modules"),
    (f"{DDS} p_shape", 2, "mis-shaped keys"),
    (f"{DDS} p_kwarg", 2, "bogus"),
    (f"{DDS} p_list", 2, "state dict"),
    ("--memory 1 train train_big.json --out out_big", 2, "memory budget"),
    ("train train_blocks.json --out out_blocks", 2, "modules"),
    ("train train_net.json --out out_net", 2, "unknown network 'nope'"),
    ("train train.json --out out_pay", 2, "not tensors or plain containers (a pickled io.open); refusing to load"),
    ("train train.json --out out_junk", 2, "cannot be read as a training checkpoint"),
    ("train train.json --out out_renamed", 2, "missing keys"),
    ("train train.json --out out_ranks", 2, "random state of 0 processes"),
    ("train train.json --out out_history", 2, "history"),
]


@pytest.mark.parametrize("command,status,word", CASES, ids=[c[0][-50:] for c in CASES])
def test_table(hostile, capsys, command, status, word):
    rc, _, err = run(hostile, capsys, command)
    assert rc == status, (command, err)
    assert word in err, (command, err)
    if "train_state" in err:
        assert "train_state.pt" in err and "--restart" in err, err


def test_planted_payloads_run_nothing_and_restart_trains_over_them(hostile, capsys):
    rc, _, err = run(hostile, capsys, f"{DDS} p_payload")
    assert rc == 2 and "cannot be read as a torch checkpoint" in err, err
    rc, _, err = run(hostile, capsys, "train train.json --out out_pay")
    assert rc == 2 and "out_pay/train_state.pt holds objects" in err, err
    rc, _, err = run(hostile, capsys, "train train.json --out out_pay_restart --restart")
    assert rc == 0, err
    assert not any((hostile / m).exists() for m in ("MARKER_prior", "MARKER_train", "MARKER_restart"))
    state = torch.load(hostile / "out_pay_restart" / "train_state.pt", weights_only=True)  # overwritten
    assert state["step"] == 1


# --- unit tests ---------------------------------------------------------------------------------------------------
def _train_cfg(tmp_path, **kw):
    torch.save(torch.rand(16, 8, 8, generator=torch.Generator().manual_seed(0)), tmp_path / "g.pt")
    base = dict(out=str(tmp_path / "run"), data=str(tmp_path / "g.pt"), image_size=8, channels="real",
                network=TINY, batch_size=2, steps=2, ckpt_every=1, sample_every=0, amp=False, warmup=1)
    return TrainConfig(**{**base, **kw})


def test_a_payload_in_train_state_is_refused_and_never_runs(tmp_path):
    cfg = _train_cfg(tmp_path)
    train(cfg, progress=False)
    path = tmp_path / "run" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    live = tmp_path / "live"
    torch.save({**state, "opt": Payload(live)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload is real: an unsafe load runs it
    assert live.exists()
    marker = tmp_path / "marker"
    for where in ("opt", "ema", "history"):
        torch.save({**state, where: Payload(marker)}, path)
        cfg.steps = 3
        with pytest.raises(priors.CheckpointError, match=rf"^{path} holds objects that are not tensors or plain "
                                                         r"containers \(a pickled io\.open\); refusing to load it "
                                                         r"\(delete it or use --restart\)$"):
            train(cfg, progress=False)
        assert not marker.exists()
    assert train(cfg, resume=False, progress=False).exists()  # --restart trains over it
    assert torch.load(path, weights_only=True)["step"] == 3 and not marker.exists()


def test_resume_is_exact_from_a_state_read_with_weights_only(tmp_path):
    """Two steps, then one more after a resume, equal three straight steps bit for bit, and each saved state
    loads with ``weights_only=True``."""
    straight = _train_cfg(tmp_path, out=str(tmp_path / "a"), steps=3)
    train(straight, progress=False)
    half = _train_cfg(tmp_path, out=str(tmp_path / "b"), steps=2)
    train(half, progress=False)
    half.steps = 3
    train(half, progress=False)
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    assert all(torch.equal(a["opt"]["state"][i]["exp_avg_sq"], b["opt"]["state"][i]["exp_avg_sq"])
               for i in a["opt"]["state"])
    assert torch.equal(a["generators"][0], b["generators"][0]) and a["history"] == b["history"]


def test_resume_refuses_a_state_that_does_not_match_the_run(tmp_path):
    cfg = _train_cfg(tmp_path)
    train(cfg, progress=False)
    path = tmp_path / "run" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    cfg.steps = 3
    for change, message in (({"ema": state["ema"][:-1]}, "'ema' must be a list of"),
                            ({"ema": [e[:1] for e in state["ema"]]}, "'ema' does not match"),
                            ({"step": -1}, "'step' must be"),
                            ({"generators": [torch.zeros(3, dtype=torch.uint8)]}, "generator"),
                            ({"opt": {"state": {}, "param_groups": []}}, "optimiser")):
        torch.save({**state, **change}, path)
        with pytest.raises(priors.CheckpointError, match=message):
            train(cfg, progress=False)
    other = _train_cfg(tmp_path, network={**TINY, "base": 16}, steps=3)
    torch.save(state, path)
    with pytest.raises(priors.CheckpointError, match=f"{path} does not match the UNet network: mis-shaped keys"):
        train(other, progress=False)


@pytest.fixture
def builds(monkeypatch):
    """The devices networks are built on (``networks.build`` is spied on; 'meta' for the checking builds)."""
    seen = []
    real = networks.build

    def spy(config):
        seen.append(torch.empty(0).device.type)
        return real(config)

    monkeypatch.setattr(networks, "build", spy)
    return seen


def _saved(tmp_path, **network):
    path = priors.save(_tiny_prior(), tmp_path / "p", half=False)
    cfg = json.loads(path.read_text())
    cfg["network"].update(network)
    path.write_text(json.dumps(cfg))
    return path


def test_a_mismatched_or_oversized_network_is_never_built(tmp_path, builds):
    with pytest.raises(priors.CheckpointError, match=r"p\.pt does not match the UNet network: mis-shaped keys: down"):
        priors.load(_saved(tmp_path, base=16))
    assert builds == ["meta"]
    builds.clear()
    with memory.budget(1.0), pytest.raises(ValueError, match=r"prior config .*p\.json: network \(unet, "
                                                             r"[0-9,]+ parameters\) would need .* memory budget"):
        priors.load(_saved(tmp_path, base=20000))
    assert builds == ["meta"]
    builds.clear()
    with pytest.raises(priors.CheckpointError, match="more than 10000 modules"):
        priors.load(_saved(tmp_path, num_blocks=10 ** 9))
    assert builds == ["meta"]
    builds.clear()
    assert priors.load(_saved(tmp_path)).name == "tiny"
    assert builds == ["meta", "cpu"]


def test_budget_counts_every_parameter_and_buffer(tmp_path):
    net = UNet(2, 2, base=8, channel_mult=(1, 2), num_blocks=1, attn_levels=())
    meta = networks.on_meta({"name": "unet", **net.config})
    assert networks.nbytes(meta) == sum(t.numel() * t.element_size() for t in net.state_dict().values())
    nbytes = networks.nbytes(meta)
    path = _saved(tmp_path)
    with memory.budget(nbytes / 2 ** 30):
        priors.load(path)
    with memory.budget((nbytes - 1) / 2 ** 30), pytest.raises(ValueError, match="memory budget"):
        priors.load(path)
    # training holds five copies: weights, gradients, EMA and Adam's two moments
    cfg = _train_cfg(tmp_path, network={k: v for k, v in net.config.items() if k not in ("in_channels",
                                                                                       "out_channels")},
                     channels="complex")
    with memory.budget(5 * nbytes / 2 ** 30):
        cfg.check()
    with memory.budget((5 * nbytes - 1) / 2 ** 30), pytest.raises(ValueError, match="held 5 times in training"):
        cfg.check()


def test_a_huge_train_network_is_refused_before_anything_is_built(tmp_path, builds):
    cfg = _train_cfg(tmp_path, network={**TINY, "base": 20000})
    with memory.budget(1.0), pytest.raises(ValueError, match=r"^network \(unet, [0-9,]+ parameters, held 5 times"):
        train(cfg, progress=False)
    assert builds == ["meta"] and not (tmp_path / "run" / "train_state.pt").exists()
    (tmp_path / "t.json").write_text(json.dumps({"out": str(tmp_path / "o"),
                                                 "network": {**TINY, "num_blocks": 10 ** 9}}))
    with pytest.raises(ValueError, match=r"train config .*: network \(unet\): network 'unet' would have more"):
        TrainConfig.from_file(tmp_path / "t.json")


def test_prior_files_must_lie_in_the_prior_folder(tmp_path):
    path = priors.save(_tiny_prior(), tmp_path / "prior" / "prior", half=False)
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(tmp_path / "prior" / "prior.pt", outside)
    cfg = json.loads(path.read_text())
    for weights in ("../elsewhere.pt", str(outside), "./../elsewhere.pt", "/etc/passwd"):
        path.write_text(json.dumps({**cfg, "weights": weights}))
        with pytest.raises(priors.CheckpointError, match=rf"^prior config {path}: weights '{weights}' resolves "
                                                         r"outside the prior's folder"):
            priors.load(path)
    for weights in (None, 3, ""):
        path.write_text(json.dumps({**cfg, "weights": weights}))
        with pytest.raises(priors.CheckpointError, match="weights must name a file in the prior's folder"):
            priors.load(path)
    # a symlink out of the folder is refused; one within it, or a subfolder, is followed
    (tmp_path / "prior" / "link.pt").symlink_to(outside)
    path.write_text(json.dumps({**cfg, "weights": "link.pt"}))
    with pytest.raises(priors.CheckpointError, match=rf"resolves outside the prior's folder .*\(to {outside}\)"):
        priors.load(path)
    (tmp_path / "prior" / "sub").mkdir()
    (tmp_path / "prior" / "prior.pt").rename(tmp_path / "prior" / "sub" / "w.pt")
    (tmp_path / "prior" / "inside.pt").symlink_to(tmp_path / "prior" / "sub" / "w.pt")
    for weights in ("inside.pt", "sub/w.pt", "sub/../sub/w.pt"):
        path.write_text(json.dumps({**cfg, "weights": weights}))
        assert priors.load(path).name == "tiny"
    # a folder reached through a symlink is the folder it links to
    (tmp_path / "alias").symlink_to(tmp_path / "prior")
    assert priors.load(tmp_path / "alias").name == "tiny"


def test_bundled_priors_resolve_inside_their_folders():
    for name in priors.available():
        path = priors.bundled.config_path(name)
        assert path.parent.name == name and path.is_file()


def test_published_checkpoints_are_checked_on_the_meta_device(tmp_path, builds):
    from recon.priors.adm import ADMUNet
    from recon.priors.ncsnpp import NCSNpp

    tiny_adm = dict(image_size=16, in_channels=2, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                    channel_mult=(1, 2), num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True,
                    resblock_updown=True)
    torch.save(ADMUNet(**tiny_adm).state_dict(), tmp_path / "dds.pt")
    builds.clear()
    with pytest.raises(priors.CheckpointError, match="mis-shaped keys"):
        priors.load(tmp_path / "dds.pt", network={**tiny_adm, "model_channels": 64})
    assert builds == ["meta"]
    builds.clear()
    with memory.budget(1.0), pytest.raises(ValueError, match=r"dds\.pt: network dds-fastmri \(adm, .* memory budget"):
        priors.load(tmp_path / "dds.pt", network={**tiny_adm, "model_channels": 32000})
    assert builds == ["meta"]
    builds.clear()
    assert priors.load(tmp_path / "dds.pt", network=tiny_adm).channels == "complex"
    assert builds == ["meta", "cpu"]

    tiny_ncsnpp = dict(image_size=16, num_channels=1, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
    net = NCSNpp(**tiny_ncsnpp)
    torch.save({"model": net.state_dict(), "ema": {"shadow_params": [p.detach() for p in net.parameters() if p.requires_grad]},
                "optimizer": {}, "step": 1}, tmp_path / "score.pth")
    builds.clear()
    with pytest.raises(priors.CheckpointError, match="num_scales must be an integer"):
        priors.load(tmp_path / "score.pth", network={**tiny_ncsnpp, "num_scales": 10 ** 12})
    with pytest.raises(priors.CheckpointError, match="'model' does not match the NCSNpp network"):
        priors.load(tmp_path / "score.pth", network={**tiny_ncsnpp, "nf": 16})
    assert set(builds) == {"meta"}
