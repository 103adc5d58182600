"""recon train: learns the exact denoiser of Gaussian data, resumes to the same state, runs under torchrun."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from recon import priors
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.prior import DiffusionPrior
from recon.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = {"name": "unet", "base": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": []}


def _gaussian_data(path, n=4000, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    cov = 0.25 * torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * 2.0 ** 2)) + 1e-3 * torch.eye(size * size)
    mu = 0.5 * torch.cos(pos[:, 0] / 3).reshape(size, size)
    L = torch.linalg.cholesky(cov)
    x = mu.reshape(-1) + torch.randn(n, size * size, generator=g, dtype=torch.float64) @ L.T
    torch.save(x.reshape(n, size, size).float(), path)
    return mu, cov


def _cfg(tmp_path, data, **kw):
    base = dict(out=str(tmp_path / "run"), data=str(data), image_size=8, channels="real", loss="edm",
                network=TINY_NET, batch_size=64, lr=2e-3, warmup=20, steps=250, ema_decay=0.98, ckpt_every=250,
                sample_every=0, seed=0, sigma_min=0.02, sigma_max=20.0, p_mean=-0.8, p_std=1.0, amp=False)
    base.update(kw)
    return TrainConfig(**base)


def test_trained_network_approaches_the_exact_gaussian_denoiser(tmp_path):
    mu, cov = _gaussian_data(tmp_path / "g.pt")
    path = train(_cfg(tmp_path, tmp_path / "g.pt"), progress=False)
    learned = priors.load(path)
    exact = DiffusionPrior(GaussianDenoiser(mu, cov), channels="real")
    g = torch.Generator().manual_seed(1)
    x0 = torch.load(tmp_path / "g.pt")[:256]
    for sigma in (0.1, 0.3, 1.0):
        x = x0 + sigma * torch.randn(x0.shape, generator=g)
        d_exact = exact.denoise(x, sigma)
        err = (learned.denoise(x, sigma) - d_exact).pow(2).mean()
        baseline = (x - d_exact).pow(2).mean()  # doing nothing
        assert err < 0.15 * baseline, (sigma, float(err), float(baseline))


def test_resume_reaches_the_same_state(tmp_path):
    _gaussian_data(tmp_path / "g.pt", n=200)
    straight = _cfg(tmp_path, tmp_path / "g.pt", out=str(tmp_path / "a"), steps=6, ckpt_every=3, batch_size=8)
    train(straight, progress=False)
    half = _cfg(tmp_path, tmp_path / "g.pt", out=str(tmp_path / "b"), steps=3, ckpt_every=3, batch_size=8)
    train(half, progress=False)
    half.steps = 6
    train(half, progress=False)  # resumes from b/train_state.pt at step 3
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    assert [h[1] for h in a["history"]] == [h[1] for h in b["history"]]
    assert (tmp_path / "b" / "loss.csv").read_text().count("\n") == 7


def test_vp_and_ve_losses_run(tmp_path):
    _gaussian_data(tmp_path / "g.pt", n=100)
    for loss in ("ve", "vp"):
        p = train(_cfg(tmp_path, tmp_path / "g.pt", out=str(tmp_path / loss), steps=3, ckpt_every=3, batch_size=4,
                       loss=loss), progress=False)
        prior = priors.load(p)
        out = prior.denoise(torch.randn(2, 8, 8), 0.5)
        assert out.shape == (2, 8, 8) and torch.isfinite(out).all()


def test_two_process_torchrun(tmp_path):
    _gaussian_data(tmp_path / "g.pt", n=100)
    cfg = _cfg(tmp_path, tmp_path / "g.pt", steps=4, ckpt_every=2, batch_size=4)
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "recon.cli", "--quiet", "train", str(tmp_path / "cfg.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "run" / "prior.json").read_text())["meta"]
    assert meta["world_size"] == 2 and meta["steps"] == 4
    st = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert len(st["generators"]) == 2


def test_training_sources_nifti_png_and_fastmri(tmp_path):
    import matplotlib.image as mpimg
    import nibabel
    import numpy as np

    from recon.data import write_fastmri
    from recon.data.sources import open_source

    vol = np.zeros((16, 16, 5), dtype=np.float32)
    vol[4:12, 4:12, 1:4] = 100.0
    nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    src = open_source(str(tmp_path / "v.nii.gz"), 8)
    assert src.images.shape == (3, 8, 8)  # empty slices dropped
    assert torch.allclose(torch.quantile(src.images.reshape(3, -1), 0.99, dim=1), torch.ones(3), atol=1e-5)

    pngs = tmp_path / "png"
    pngs.mkdir()
    for i in range(2):
        mpimg.imsave(pngs / f"{i}.png", np.random.default_rng(i).random((12, 12)), cmap="gray")
    assert open_source(str(pngs), 8).images.shape == (2, 8, 8)

    h5 = tmp_path / "h5"
    h5.mkdir()
    k = torch.randn(3, 2, 16, 16, dtype=torch.complex64)
    write_fastmri(h5 / "a.h5", k, target=torch.rand(3, 16, 16) + 0.1)
    assert open_source(str(h5), 8).images.shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(str(tmp_path / "missing"), 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \.pt, \.nii"):
        open_source(str(tmp_path / "empty"), 8)


def test_mvue_source_recovers_the_complex_images_of_a_multicoil_file(tmp_path):
    """Noiseless 8-coil k-space of held-out complex brain slices: the MVUE training images have the true
    magnitudes inside the head (up to the percentile scaling) and keep a phase (ESPIRiT fixes the maps' phase
    relative to a reference coil, so the phase is the object's plus that coil's smooth phase)."""
    from recon.data import brain, coil_maps, simulate_multicoil, write_fastmri
    from recon.data.sources import open_source

    x = brain.load_heldout(128)[:2]
    k = simulate_multicoil(x, coil_maps(8, (128, 128)))
    write_fastmri(tmp_path / "m.h5", k)
    src = open_source(str(tmp_path / "m.h5") + ":mvue", 128)
    assert src.images.shape == (2, 128, 128) and src.images.is_complex()
    obj = x.abs() > 0.1 * x.abs().amax((-2, -1), keepdim=True)
    for i in range(2):
        a, b = src.images[i][obj[i]].abs(), x[i][obj[i]].abs()
        corr = (a * b).sum() / (a.norm() * b.norm())
        assert corr > 0.995
        assert src.images[i].imag.norm() > 0.1 * src.images[i].abs().norm()
    single = tmp_path / "s.h5"
    write_fastmri(single, k[:, :1, 0])
    with pytest.raises(ValueError, match="multi-coil"):
        open_source(str(single) + ":mvue", 128)


def test_phase_equivariant_training_and_init_from_a_saved_prior(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.polar(torch.rand(64, 8, 8, generator=g) + 0.5, torch.rand(64, 1, 1, generator=g) * 6.28)
    torch.save(x, tmp_path / "c.pt")
    cfg = _cfg(tmp_path, tmp_path / "c.pt", out=str(tmp_path / "a"), channels="complex", phase_equivariant=True,
               phase_smooth=2.0, steps=3, ckpt_every=3, batch_size=4)
    prior = priors.load(train(cfg, progress=False))
    assert prior.denoiser.config()["type"] == "phase_equivariant"
    rot = torch.polar(torch.ones(()), torch.tensor(2.0))
    xn = x[:4] + 0.3 * torch.randn(4, 8, 8, dtype=torch.complex64, generator=g)
    assert torch.allclose(prior.denoise(rot * xn, 0.3), rot * prior.denoise(xn, 0.3), atol=1e-5)
    # fine-tuning: with lr 0 the weights stay those of the prior it starts from
    tuned = _cfg(tmp_path, tmp_path / "c.pt", out=str(tmp_path / "b"), channels="complex", phase_equivariant=True,
                 phase_smooth=2.0, steps=1, ckpt_every=1, batch_size=4, lr=0.0, init=str(tmp_path / "a" / "prior.json"))
    b = priors.load(train(tuned, progress=False))
    for (k, va), vb in zip(prior.denoiser.net.state_dict().items(), b.denoiser.net.state_dict().values()):
        assert torch.equal(va, vb), k
    # a prior whose network does not match is refused by name
    other = _cfg(tmp_path, tmp_path / "c.pt", out=str(tmp_path / "c"), channels="complex", steps=1, ckpt_every=1,
                 batch_size=4, network={**TINY_NET, "base": 8}, init=str(tmp_path / "a" / "prior.json"))
    with pytest.raises(priors.CheckpointError, match="does not match"):
        train(other, progress=False)
    with pytest.raises(ValueError, match="phase_equivariant needs channels='complex'"):
        train(_cfg(tmp_path, tmp_path / "c.pt", out=str(tmp_path / "d"), channels="magnitude",
                   phase_equivariant=True, steps=1), progress=False)


def test_cosine_schedule_warms_up_then_decays_to_its_final_rate(tmp_path):
    from recon.training.train import learning_rate
    cfg = _cfg(tmp_path, "unused", lr=1e-3, warmup=10, steps=111, lr_schedule="cosine", lr_final=0.1)
    rates = [learning_rate(cfg, s) for s in range(cfg.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    after = rates[10:]
    assert all(a >= b for a, b in zip(after, after[1:]))          # never rises after the warm-up
    assert after[-1] == pytest.approx(1e-4)                       # lr_final * lr at the last step
    assert after[50] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-6)   # half-way: the mean of the two
    const = _cfg(tmp_path, "unused", lr=1e-3, warmup=10, steps=110)
    assert [learning_rate(const, s) for s in range(10, 110)] == [1e-3] * 100
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(tmp_path, "unused", lr_schedule="linear").check()
