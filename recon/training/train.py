"""Training a prior by denoising score matching (``recon train``).

Losses, for clean x_0, noise n ~ N(0, I):
- "edm" (Karras et al. 2022): ln sigma ~ N(P_mean, P_std^2); lambda(sigma) ||D(x_0 + sigma n, sigma) - x_0||^2
  with lambda = (sigma^2 + sd^2)/(sigma sd)^2 and the EDM preconditioning.
- "ve" (Song & Ermon 2019; Song et al. 2021): sigma log-uniform in [sigma_min, sigma_max];
  || sigma s(x_0 + sigma n, sigma) + n ||^2 (DSM with weight sigma^2).
- "vp" (Ho et al. 2020): t uniform in {0..T-1}; || eps(sqrt(abar_t) x_0 + sqrt(1 - abar_t) n, t) - n ||^2.

With an exponential moving average of the weights (decay min(ema_decay, (1 + step)/(10 + step)); the EMA
weights are what is saved as the prior),
gradient clipping, bf16 autocast (on CUDA, and on CPUs with native bf16), periodic checkpoints that resume exactly (weights, EMA,
optimiser, step and every random generator), a progress bar with the loss, periodic sample grids, and data
parallelism through torch.distributed (launch with ``torchrun``; gloo on CPU, NCCL on GPU).
All randomness comes from one ``torch.Generator`` per process, seeded by ``seed`` and the rank.

The network a config asks for is built on the meta device first and its weights, gradients, EMA and Adam's two
moments are checked against the memory budget (``recon.memory``) before anything is allocated. The checkpoint
``train_state.pt`` holds tensors and plain containers only (state dicts, lists, numbers, strings) and is read
back with ``torch.load(weights_only=True)``: a file holding anything else (a pickled object, whose unpickling
could run code) is refused by name and never unpickled, as is one that does not match the run it resumes.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from operators.checks import check_choice, check_int, check_keys, check_real
from recon import priors
from recon.atomic import atomic_path, write_text
from recon.data.sources import open_source, to_channels
from recon.priors import DiffusionPrior, networks, parametrizations
from recon.priors.format import CheckpointError, check_state, load_state_strict, network_on_meta

# copies of the network's parameters that training holds: weights, gradients, EMA, Adam's two moments
TRAINING_COPIES = 5


@dataclass
class TrainConfig:
    out: str
    data: str = "mni152"
    image_size: int = 128
    channels: str = "complex"           # complex | magnitude | real
    loss: str = "edm"                   # edm | ve | vp
    network: dict = field(default_factory=lambda: {"name": "unet", "base": 24, "channel_mult": [1, 2, 3, 4],
                                                   "num_blocks": 1, "attn_levels": [3]})
    batch_size: int = 8
    lr: float = 2e-4
    warmup: int = 200
    lr_schedule: str = "constant"       # constant | cosine (after the warm-up, down to lr_final * lr at the end)
    lr_final: float = 0.1
    steps: int = 5000
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    ckpt_every: int = 500
    sample_every: int = 1000
    seed: int = 0
    amp: bool = True
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    betas: str = "linear"
    n_timesteps: int = 1000
    name: str = ""
    phase_equivariant: bool = False     # complex priors: exact equivariance to a global phase
    phase_smooth: float = 0.0           # ... turning by a smooth phase map (Gaussian width in pixels), 0: global
    init: str = ""                      # start from this saved prior's weights (path or "bundled:<name>")

    @staticmethod
    def from_file(path) -> "TrainConfig":
        """The config of a JSON file, checked (``check``); a misspelled key is refused with the closest name."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"train config {p}: no such file")
        try:
            raw = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"train config {p}: not valid JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"train config {p}: expected a JSON object of TrainConfig fields, got "
                             f"{type(raw).__name__}")
        names = [f.name for f in fields(TrainConfig)]
        check_keys(f"train config {p}", raw, names)
        if "out" not in raw:
            raise ValueError(f"train config {p}: missing 'out' (the output folder)")
        cfg = TrainConfig(**raw)
        try:
            cfg.check()
        except ValueError as e:
            raise ValueError(f"train config {p}: {e}") from None
        return cfg

    def check(self) -> None:
        """Type and range of every field (errors name the field, the value and what is allowed), and the network's
        size: built on the meta device, its training copies must fit the memory budget (``network_config``)."""
        for name in ("out", "data", "channels", "loss", "betas", "name", "init", "lr_schedule"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.out:
            raise ValueError("out must name the output folder, got ''")
        if not self.data:
            raise ValueError("data must name the training data (mni152, ct-phantoms, a file or a folder)")
        check_choice("channels", self.channels, ("complex", "magnitude", "real"))
        check_choice("loss", self.loss, ("edm", "ve", "vp"))
        check_choice("betas", self.betas, ("linear", "cosine"))
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_real("lr_final", self.lr_final, minimum=0.0, maximum=1.0)
        if not isinstance(self.network, dict) or not isinstance(self.network.get("name", "unet"), str):
            raise ValueError(f"network must be an object with a 'name' and the network's options, got "
                             f"{self.network!r}")
        check_int("image_size", self.image_size, 8, 1024)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_real("lr", self.lr, above=0.0, maximum=1.0)
        check_int("warmup", self.warmup, 0)
        check_int("steps", self.steps, 1, 10_000_000)
        check_real("ema_decay", self.ema_decay, minimum=0.0, below=1.0)
        check_real("grad_clip", self.grad_clip, above=0.0)
        check_int("ckpt_every", self.ckpt_every, 1)
        check_int("sample_every", self.sample_every, 0)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_real("sigma_min", self.sigma_min, above=0.0)
        check_real("sigma_max", self.sigma_max, above=self.sigma_min)
        check_real("sigma_data", self.sigma_data, above=0.0)
        check_real("p_mean", self.p_mean, minimum=-20.0, maximum=20.0)
        check_real("p_std", self.p_std, above=0.0, maximum=20.0)
        check_int("n_timesteps", self.n_timesteps, 2, 100_000)
        for name in ("amp", "phase_equivariant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_real("phase_smooth", self.phase_smooth, minimum=0.0)
        network_config(self)


def network_config(cfg: TrainConfig) -> dict:
    """The network config of ``cfg`` with its input and output channels, after building it on the meta device and
    checking its ``TRAINING_COPIES`` copies against the memory budget (ValueError naming the network otherwise)."""
    n_in = 2 if cfg.channels == "complex" else 1
    net_cfg = {"name": "unet", **cfg.network, "in_channels": n_in, "out_channels": n_in}
    network_on_meta(net_cfg, "network", copies=TRAINING_COPIES,
                    holds=f", held {TRAINING_COPIES} times in training: weights, gradients, EMA and Adam's moments")
    return net_cfg


def _cpu_has_bf16() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 instructions (AVX512-BF16 / AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _dist_info():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_prior(cfg: TrainConfig, normalization) -> DiffusionPrior:
    """The prior ``cfg`` trains, with initial weights drawn from ``cfg.seed``; its network is checked against the
    memory budget before it is built (``network_config``)."""
    net_cfg = network_config(cfg)
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG state left untouched
        torch.manual_seed(cfg.seed)
        net = networks.build(net_cfg)
    if cfg.loss == "edm":
        den = parametrizations.EDM(net, cfg.sigma_data, cfg.sigma_min, cfg.sigma_max)
    elif cfg.loss == "ve":
        den = parametrizations.VEScore(net, cfg.sigma_min, cfg.sigma_max, conditioning="log_sigma")
    elif cfg.loss == "vp":
        den = parametrizations.VPModel(net, cfg.betas, cfg.n_timesteps, prediction="eps")
    else:
        raise ValueError(f"loss must be 'edm', 've' or 'vp', got {cfg.loss!r}")
    if cfg.phase_equivariant:
        if cfg.channels != "complex":
            raise ValueError(f"phase_equivariant needs channels='complex', got {cfg.channels!r}")
        if cfg.loss != "edm":
            raise ValueError(f"phase_equivariant is supported with the 'edm' loss, got {cfg.loss!r}")
        den = parametrizations.PhaseEquivariant(den, cfg.phase_smooth)
    return DiffusionPrior(den, cfg.channels, (cfg.image_size, cfg.image_size), normalization, cfg.name)


class DSMLoss(torch.nn.Module):
    """The training loss as a module (so DistributedDataParallel can wrap it); randomness is drawn by ``draw``."""

    def __init__(self, den, cfg: TrainConfig):
        super().__init__()
        self.den, self.cfg = den, cfg

    def draw(self, x0: torch.Tensor, g: torch.Generator):
        """Noise n and noise level (sigma, or timestep for VP) for a batch, from generator ``g``."""
        b, cfg = x0.shape[0], self.cfg
        n = torch.randn(x0.shape, generator=g)
        if cfg.loss == "edm":
            level = (torch.randn(b, generator=g) * cfg.p_std + cfg.p_mean).exp()
        elif cfg.loss == "ve":
            u = torch.rand(b, generator=g)
            level = (math.log(cfg.sigma_min) + u * (math.log(cfg.sigma_max) - math.log(cfg.sigma_min))).exp()
        else:
            level = torch.randint(len(self.den.sigmas), (b,), generator=g).float()
        return n.to(x0.device), level.to(x0.device)

    def forward(self, x0, n, level):
        den, cfg = self.den, self.cfg
        if cfg.loss == "edm":
            w = parametrizations.edm_loss_weight(level, cfg.sigma_data).reshape(-1, 1, 1, 1)
            d = den(x0 + level.reshape(-1, 1, 1, 1) * n, level)
            return (w * (d - x0) ** 2).mean()
        if cfg.loss == "ve":
            s = level.reshape(-1, 1, 1, 1)
            score = den.net(x0 + s * n, den.cond(level))
            return ((s * score + n) ** 2).mean()
        abar = (1 / (1 + den.sigmas[level.long()] ** 2)).float().reshape(-1, 1, 1, 1)
        eps = den.net(abar.sqrt() * x0 + (1 - abar).sqrt() * n, level)
        if den.learned_sigma:
            eps = eps[:, : x0.shape[1]]
        return ((eps - n) ** 2).mean()


def _save_grid(prior: DiffusionPrior, path: Path, n: int, seed: int) -> None:
    from recon import plots
    from recon.samplers import Heun

    x = Heun(steps=18)(prior=prior, n_samples=n, generator=torch.Generator().manual_seed(seed),
                       shape=prior.image_size or (64, 64))
    plots.save_grid(x.abs().cpu() if x.is_complex() else x.cpu(), path, title=f"{prior.name} samples")


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True, device: Optional[str] = None) -> Path:
    """Train (or resume) and return the path of the saved prior's JSON config."""
    owns_group = dist.is_available() and not dist.is_initialized()
    rank, world = _dist_info()
    owns_group = owns_group and world > 1
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    source = open_source(cfg.data, cfg.image_size)
    if cfg.channels == "real" and source.is_complex:
        raise ValueError("channels='real' needs real training images; use 'complex' or 'magnitude'")
    prior = build_prior(cfg, source.normalization).to(dev)
    den = prior.denoiser
    net = den.net
    if cfg.init:
        _init_from(net, cfg.init, dev)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    step, history = 0, []
    state_path = out / "train_state.pt"
    if resume and state_path.exists():
        step, history = _resume(state_path, net, ema, opt, g, rank, world)
    loss_fn = DSMLoss(den, cfg)
    model = torch.nn.parallel.DistributedDataParallel(loss_fn) if world > 1 else loss_fn
    if rank == 0:
        write_text(out / "config.json", json.dumps(asdict(cfg), indent=2))
    use_amp = cfg.amp and (dev.type == "cuda" or _cpu_has_bf16())
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, desc="train", dynamic_ncols=True)
    t0 = time.time()
    while step < cfg.steps:
        x0 = to_channels(source.batch(cfg.batch_size, g), cfg.channels).to(dev)
        for pg in opt.param_groups:
            pg["lr"] = learning_rate(cfg, step)
        n, level = loss_fn.draw(x0, g)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = model(x0, n, level)
        opt.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"train: the loss is {loss.item()} at step {step + 1}; nothing was saved for "
                                     f"this step (lower lr, check the data)")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():  # EMA with warm-up, so early averages are not dominated by the initial weights
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - decay)
        step += 1
        history.append((step, loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1][1]:.4f}")
        last = step == cfg.steps
        if step % cfg.ckpt_every == 0 or last:
            _checkpoint(prior, net, ema, opt, g, step, history, cfg, out, rank, world, time.time() - t0)
        if rank == 0 and cfg.sample_every and (step % cfg.sample_every == 0 or last):
            _with_ema(prior, net, ema, lambda: _save_grid(prior, out / f"samples_{step:07d}.png", 16, 0))
    bar.close()
    if world > 1:
        # every rank waits until rank 0 has written its files; a rank that exits while the process group is up
        # kills gloo's threads and aborts ("terminate called without an active exception")
        dist.barrier()
        if owns_group:
            dist.destroy_process_group()
    return out / "prior.json"


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of (0-based) ``step``: a linear warm-up over ``warmup`` steps, then constant or a cosine
    decay that reaches ``lr_final * lr`` at the last step."""
    lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
    if cfg.lr_schedule == "cosine" and step >= cfg.warmup:
        span = max(cfg.steps - 1 - cfg.warmup, 1)
        t = min(1.0, (step - cfg.warmup) / span)
        lr = cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))
    return lr


def _init_from(net: torch.nn.Module, spec: str, dev) -> None:
    """Copy the weights of a saved prior into ``net`` (fine-tuning); the networks must match key for key."""
    src = priors.load(spec, map_location=dev).network
    try:
        priors.load_state_strict(net, {k: v.float() for k, v in src.state_dict().items()}, source=spec)
    except priors.CheckpointError as e:
        raise priors.CheckpointError(f"init: the prior {spec!r} does not match the network in this config: {e}") \
            from None


def read_state(path: Path) -> dict:
    """The training checkpoint ``path`` read with ``torch.load(weights_only=True)`` onto the CPU: tensors and plain
    containers only. Anything else is refused, unpickled by nothing, with a ``CheckpointError`` naming the file,
    the object it holds and the way out (delete it or ``--restart``)."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling fails in many types; each is reported as one line
        msg = str(e)
        if "WeightsUnpickler error" in msg:
            found = re.search(r"GLOBAL (\S+)", msg)
            what = f" (a pickled {found.group(1)})" if found else ""
            raise CheckpointError(f"{path} holds objects that are not tensors or plain containers{what}; refusing "
                                  f"to load it (delete it or use --restart)") from None
        reason = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as a training checkpoint ({type(e).__name__}: {reason}); "
                              f"delete it or use --restart") from None
    keys = ("net", "ema", "opt", "generators", "step", "history")
    if not isinstance(st, dict) or not all(k in st for k in keys):
        raise CheckpointError(f"{path} is not a training checkpoint: expected a dict with {', '.join(keys)}; "
                              f"delete it or use --restart")
    return st


def _resume(path: Path, net, ema: list, opt, g: torch.Generator, rank: int, world: int):
    """Restore the weights, EMA, optimiser and this rank's generator from ``path`` (``read_state``), each checked
    against this run first; returns ``(step, history)``. A mismatch is a ``CheckpointError`` naming the file."""
    st = read_state(path)
    fix = "; delete it or use --restart"
    if not isinstance(st["net"], dict):
        raise CheckpointError(f"{path}: 'net' is not a state dict{fix}")
    names = [n for n, _ in net.named_parameters()]
    if not isinstance(st["ema"], list) or len(st["ema"]) != len(names):
        raise CheckpointError(f"{path}: 'ema' must be a list of {len(names)} tensors, one per parameter{fix}")
    try:
        check_state(net.state_dict(), st["net"], str(path), f"the {type(net).__name__} network")
        check_state(dict(net.named_parameters()), dict(zip(names, st["ema"])), f"{path}: 'ema'",
                    f"the parameters of the {type(net).__name__} network")
    except CheckpointError as e:
        raise CheckpointError(f"{e}{fix}") from None
    gens, step, history = st["generators"], st["step"], st["history"]
    if not isinstance(gens, list) or len(gens) < world or not all(isinstance(s, torch.Tensor) for s in gens):
        n = len(gens) if isinstance(gens, list) else type(gens).__name__
        raise CheckpointError(f"{path} holds the random state of {n} processes, this run has {world}; resume "
                              f"with at most {n} processes{fix}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(history, list) \
            or len(history) != step or not all(isinstance(h, (tuple, list)) and len(h) == 2 for h in history):
        raise CheckpointError(f"{path}: 'step' must be the number of steps taken and 'history' one (step, loss) "
                              f"per step, got step {step!r} and {type(history).__name__} history{fix}")
    try:
        opt.load_state_dict(st["opt"])
        g.set_state(gens[rank])
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} does not match this run's optimiser or generator ({reason}){fix}") from None
    for p in net.parameters():
        for key, v in opt.state.get(p, {}).items():
            if key in ("exp_avg", "exp_avg_sq") and (not isinstance(v, torch.Tensor) or v.shape != p.shape):
                raise CheckpointError(f"{path}: the optimiser's {key} of a parameter of shape {tuple(p.shape)} has "
                                      f"shape {_shape_of(v)}{fix}")
    load_state_strict(net, st["net"], source=str(path))
    with torch.no_grad():
        for e, v in zip(ema, st["ema"]):
            e.copy_(v)
    return step, [tuple(h) for h in history]


def _shape_of(v):
    return tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__


def _with_ema(prior, net, ema, fn):
    backup = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p, e in zip(net.parameters(), ema):
            p.copy_(e)
    try:
        return fn()
    finally:
        with torch.no_grad():
            for p, b in zip(net.parameters(), backup):
                p.copy_(b)


def _checkpoint(prior, net, ema, opt, g, step, history, cfg, out, rank, world, seconds):
    gens = [None] * world
    if world > 1:
        dist.all_gather_object(gens, g.get_state())
    else:
        gens = [g.get_state()]
    if rank != 0:
        return
    st = {"net": net.state_dict(), "ema": ema, "opt": opt.state_dict(), "generators": gens, "step": step,
          "history": history, "config": asdict(cfg)}
    with atomic_path(out / "train_state.pt") as tmp:
        torch.save(st, tmp)
    meta = {"steps": step, "train_seconds_this_run": round(seconds, 1), "data": cfg.data, "loss": cfg.loss,
            "parameters": sum(p.numel() for p in net.parameters()), "world_size": world}
    _with_ema(prior, net, ema, lambda: priors.save(prior, out / "prior", half=True, meta=meta))
    with atomic_path(out / "loss.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows(history)
