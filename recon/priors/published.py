"""Published checkpoints, as their training code writes them, loaded strictly.

- score_sde / Score-MRI (yang-song/score_sde_pytorch ``utils.save_checkpoint``; HJ-harry/score-MRI trains with
  the same code): ``{"optimizer", "model", "ema", "step"}``; ``model`` is the DataParallel state dict (keys
  ``module.*``), ``ema`` is ``{"decay", "num_updates", "shadow_params"}`` (``models/ema.py``), and the optimizer
  state holds numpy floats (``losses.optimization_manager``'s warm-up sets ``lr`` to one), which ``torch_load``
  admits and nothing else. ``ema=True`` (default): the shadow, as their samplers use; ``ema=False``: ``model``.
- csgm-mri-langevin (utcsilab/csgm-mri-langevin ``main.py``, ajiljalal/ncsnv2 ``runners/ncsn_runner.py``):
  a list ``[model state (module.*), optimizer state, epoch, step, EMA shadow]``; ``ema=True`` (default, csgm's
  config has ``ema: true``): the shadow ``states[-1]``; ``ema=False``: ``states[0]``.
- ADM (openai/guided-diffusion ``train_util.TrainLoop.save``, used by DDS and DPS): raw state dicts, one set of
  weights per file: ``model<step>.pt`` (raw), ``ema_<rate>_<step>.pt`` (the EMA), ``opt<step>.pt``. A file is
  loaded as given; ``ema=True`` is accepted only for an ``ema_*`` file and ``ema=False`` only for another file,
  otherwise the error names the file to load instead (the EMA is a separate file, never guessed).

The conversion to the network's state dict is the network module's (``ncsnpp.state_from_score_sde_checkpoint``,
``ncsnv2.state_from_csgm_checkpoint``); a ``module.`` prefix is stripped when every key carries it and is an error
when only some do; loading is ``load_state_strict``. The prior gets the settings in ``PUBLISHED``.

The file is memory-mapped (``torch_load(mmap=True)``), and the network is first built on the meta device
(``format.network_on_meta``: its size checked against the memory budget), where the conversion checks the
checkpoint's keys and shapes; only then is the network built and the weights copied into it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from . import networks, parametrizations
from .format import (CheckpointError, check_state, load_state_strict, network_on_meta, strip_module_prefix,
                     torch_load)
from .prior import DiffusionPrior, Normalization

# What each published checkpoint was trained with: the network as (registry name, preset in its ``PRESETS``),
# the parametrisation (a config dict, or the name of an entry of the network's ``DIFFUSION`` table), the channel
# convention and the data scaling, each from the code cited. Any of them can be overridden in ``load``.
PUBLISHED = {
    # Score-MRI (Chung & Ye 2022; HJ-harry/score-MRI): NCSN++ magnitude prior on fastMRI knee, VE SDE.
    # configs/ve/fastmri_knee_320_ncsnpp_continuous.py: is_complex False, centered False; utils.get_data_scaler:
    # "Assume data are always in [0, 1]"; utils.normalize min-max scales (img -= min; img /= max), and the sample
    # slices are |x| in [0, 1]. The multi-coil scripts (inference_multi-coil_SSOS.py, _hybrid.py) call
    # utils.normalize_complex on the whole coil stack: |x| min-max to [0, 1] and the phase angle(x) min-max
    # rescaled into [0, 1] rad as well. Here "max" (|x| / max|x|: linear, so it applies to k-space; min |x| ~ 0)
    # and the true phase, the magnitude prior denoising Re and Im separately.
    "score-mri": {"network": ("ncsnpp", "score_mri_fastmri_knee"),
                  "parametrization": {"type": "ve_score", "sigma_min": 0.01, "sigma_max": 378.0, "conditioning": "sigma"},
                  "channels": "magnitude", "normalization": {"kind": "max"}},
    # csgm-mri-langevin (Jalal et al. 2021; utcsilab/csgm-mri-langevin): NCSNv2-Deepest on the complex MVUE.
    # main.py normalize/unnormalize: scaling = torch.quantile(estimated_mvue.abs(), 0.99), with estimated_mvue =
    # utils.get_mvue(ref, maps) of ref = the undersampled k-space (dataloaders.py: 'ground_truth' is gt_ksp *= mask):
    # the 99th percentile of |MVUE| of the undersampled data, which is what A.pinv(y) gives here.
    "csgm": {"network": ("ncsnv2", "csgm_mri"),
             "parametrization": {"type": "ve_score", "sigma_min": 0.0066, "sigma_max": 232.0,
                                 "conditioning": "index", "n_levels": 2311},
             "channels": "complex", "normalization": {"kind": "percentile", "q": 99.0}},
    # DDS (Chung, Lee & Ye 2024; HJ-harry/DDS): ADM on complex fastMRI knee (2 channels) / AAPM CT (1 channel).
    # The scaling is not recorded: solver_2d.py uses the prepared slices (indist_samples/.../slice/*.npy) as they
    # are, with x_T ~ N(0, I), and guided_diffusion/image_datasets.NpyDataset trains on .npy files as they are, so
    # the files were scaled beforehand; its utils.py min-max helpers (normalize, normalize_complex,
    # img_wise_min_max) and its PSNR on normalize_np(|x|) imply magnitudes in [0, 1]: "max" is assumed.
    "dds-fastmri": {"network": ("adm", "dds_fastmri"), "parametrization": "dds_fastmri",
                    "channels": "complex", "normalization": {"kind": "max"}},
    "dds-aapm": {"network": ("adm", "dds_aapm"), "parametrization": "dds_aapm",
                 "channels": "real", "normalization": {"kind": "max"}},
    # DPS (Chung et al. 2023; DPS2022/diffusion-posterior-sampling): guided-diffusion UNet on RGB (create_model:
    # in_channels=3). sample_condition.py: transforms.ToTensor() ([0, 1]) then Normalize((0.5,)*3, (0.5,)*3),
    # i.e. 2x - 1 in [-1, 1]; configs/model_config.yaml (ffhq_10m.pt), imagenet_model_config.yaml (imagenet256.pt).
    "dps-ffhq": {"network": ("adm", "dps_ffhq"), "parametrization": "dps_ffhq",
                 "channels": "rgb", "normalization": {"kind": "range", "value": 1.0, "lo": -1.0, "hi": 1.0}},
    "dps-imagenet": {"network": ("adm", "dps_imagenet"), "parametrization": "dps_imagenet",
                     "channels": "rgb", "normalization": {"kind": "range", "value": 1.0, "lo": -1.0, "hi": 1.0}},
}

_EMA_FILE = re.compile(r"ema_[0-9.]+_(\d+)\.pt$")   # guided-diffusion: ema_<rate>_<step:06d>.pt
_MODEL_FILE = re.compile(r"model(\d+)\.pt$")        # guided-diffusion: model<step:06d>.pt


def _defaults(kind: str) -> dict:
    spec = PUBLISHED[kind]
    name, preset = spec["network"]
    par = spec["parametrization"]
    if isinstance(par, str):
        par = networks.network_class(name).DIFFUSION[par]["parametrization"]
    return {"network": networks.preset_config(name, preset), "parametrization": dict(par),
            "channels": spec["channels"], "normalization": dict(spec["normalization"])}


def detect_format(obj) -> str:
    """Which published layout a loaded checkpoint object has: 'score-sde', 'csgm' or 'state-dict'."""
    if isinstance(obj, dict) and {"model", "ema", "step"} <= set(obj):
        return "score-sde"
    if isinstance(obj, (list, tuple)) and len(obj) >= 2 and isinstance(obj[0], dict):
        return "csgm"
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state-dict"
    raise CheckpointError("not a recognised checkpoint: expected a Score-MRI/score_sde dict (model, ema, step), "
                          "a csgm list [state_dict, ..., ema_shadow], or a raw state dict")


def _infer_kind(fmt: str, state: dict, p: Path) -> str:
    if fmt == "score-sde":
        return "score-mri"
    if fmt == "csgm":
        return "csgm"
    w = state.get("input_blocks.0.0.weight")
    if w is None or w.dim() != 4 or w.shape[1] not in (1, 2, 3):
        raise CheckpointError(f"{p}: a raw state dict that is not an ADM model with 1, 2 or 3 input channels; "
                              f"pass kind= (one of {sorted(PUBLISHED)})")
    if w.shape[1] == 3:
        return "dps-imagenet" if w.shape[0] == 256 else "dps-ffhq"
    return "dds-fastmri" if w.shape[1] == 2 else "dds-aapm"


def _check_single_file_ema(p: Path, ema: Optional[bool]) -> None:
    """A raw state dict is one set of weights: refuse an ``ema=`` that the file cannot satisfy, naming the file to use."""
    is_ema = _EMA_FILE.search(p.name) is not None
    if ema is None or ema == is_ema:
        return
    if is_ema:
        step = _EMA_FILE.search(p.name).group(1)
        raise CheckpointError(f"{p}: ema=False, but this is guided-diffusion's EMA file; its raw weights are "
                              f"model{step}.pt")
    m = _MODEL_FILE.search(p.name)
    found = sorted(q.name for q in p.parent.glob(f"ema_*_{m.group(1)}.pt")) if m else []
    hint = f"load {', '.join(found)} instead" if found else "load that file (or leave ema unset to load this one)"
    raise CheckpointError(f"{p}: ema=True, but this raw state dict holds one set of weights; guided-diffusion "
                          f"(DDS, DPS) writes the EMA as a separate file ema_<rate>_<step>.pt: {hint}")


def load_published(path, kind: Optional[str] = None, network: Optional[dict] = None,
                   parametrization: Optional[dict] = None, channels: Optional[str] = None,
                   normalization: Optional[dict] = None, ema: Optional[bool] = None,
                   map_location="cpu") -> DiffusionPrior:
    """Load a published checkpoint file strictly into its network and wrap it as a ``DiffusionPrior``.

    ``kind`` is one of ``PUBLISHED`` (inferred from the file when omitted: a score_sde dict is 'score-mri', a list
    'csgm', a raw ADM state dict 'dds-aapm'/'dds-fastmri'/'dps-ffhq' for 1/2/3 input channels, 'dps-imagenet' for
    3 channels at width 256). ``ema``: None (default) gives what the reference samplers use (the EMA of a score_sde
    or csgm checkpoint, a raw state dict as given), True/False the EMA/raw weights (see the module docstring for
    raw state dicts). ``network``/``parametrization``/``channels``/``normalization`` override the defaults."""
    if ema not in (None, True, False):
        raise ValueError(f"ema must be True (EMA weights), False (raw weights) or None (the file's default), got {ema!r}")
    p = Path(path)
    obj = torch_load(p, map_location, mmap=True)
    fmt = detect_format(obj)
    if fmt == "state-dict":
        _check_single_file_ema(p, ema)
        obj = strip_module_prefix(obj, str(p))
    kind = kind or _infer_kind(fmt, obj, p)
    if kind not in PUBLISHED:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {sorted(PUBLISHED)}")
    cfg = _defaults(kind)
    if network is not None:
        cfg["network"] = {**cfg["network"], **network}
    for key, val in (("parametrization", parametrization), ("channels", channels), ("normalization", normalization)):
        if val is not None:
            cfg[key] = val
    meta = network_on_meta(cfg["network"], f"{p}: network {kind}")
    use_ema = True if ema is None else bool(ema)
    if fmt == "score-sde":
        from .ncsnpp import state_from_score_sde_checkpoint
        state = state_from_score_sde_checkpoint(obj, meta, ema=use_ema, source=str(p))
    elif fmt == "csgm":
        from .ncsnv2 import state_from_csgm_checkpoint
        state = state_from_csgm_checkpoint(obj, meta, ema=use_ema, source=str(p))
    else:
        state = obj
    check_state(meta.state_dict(), state, str(p), f"the {type(meta).__name__} network")
    net = networks.build(cfg["network"])
    load_state_strict(net, state, source=str(p))
    size = cfg["network"].get("image_size")
    prior = DiffusionPrior(parametrizations.build(net, cfg["parametrization"]), channels=cfg["channels"],
                           image_size=(3, size, size) if cfg["channels"] == "rgb" and size else None,
                           normalization=Normalization(**cfg["normalization"]), name=f"{kind}:{p.name}")
    return prior.eval()
