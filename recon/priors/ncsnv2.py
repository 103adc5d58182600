"""NCSNv2 (Song & Ermon, "Improved Techniques for Training Score-Based Generative Models", NeurIPS 2020),
with the parameter names and shapes of the published checkpoints, so that they load directly.

This is the score network of Score-ALD / csgm-mri-langevin (Jalal et al., "Robust Compressed Sensing MRI
with Deep Generative Priors", NeurIPS 2021), which uses ``NCSNv2Deepest`` from its ncsnv2 fork
(ajiljalal/ncsnv2 @ ef1eae3, where ``ConvMeanPool`` averages with ``AvgPool2d(2)`` so any image size works).

The network is a RefineNet: residual encoder stages (instance-norm++ / ELU / 3x3 convs; stride-2 mean pooling
in the first stages, dilated convolutions in the last two), then RefineNet blocks (residual conv units,
multi-resolution fusion by bilinear upsampling, chained residual max-pooling) back up to full resolution.
It is *unconditional* inside: the noise level enters only through the output scaling

    s(x, i) = f(x) / sigma_i,     sigma_i = sigma_begin (sigma_end / sigma_begin)^(i / (L - 1)),

where ``i`` is an integer noise-level label in ``[0, L)`` (``L = num_classes``; label 0 is the largest sigma).
Unless ``logit_transform`` or ``rescaled`` is set the input is mapped to ``2 x - 1`` first (csgm sets neither).
The geometric ``sigmas`` are a persistent buffer, so they are part of the state dict (key ``sigmas``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operators.checks import check_int

from .format import CheckpointError, check_state, load_state_strict, strip_module_prefix, torch_load

# The network of the csgm-mri-langevin checkpoint ``ncsnv2-mri-mvue/logs/mri-mvue/checkpoint_100000.pth``
# (``langevin_config`` in csgm's configs/file/*.yaml; brain_T2.yaml states image_size 384, the others 320 --
# the network is fully convolutional, so the size changes no parameter).
CSGM_MRI_CONFIG = dict(image_size=384, channels=2, ngf=128, num_classes=2311, sigma_begin=232.0, sigma_end=0.0066,
                       sigma_dist="geometric", normalization="InstanceNorm++", nonlinearity="elu",
                       logit_transform=False, rescaled=False, variant="deepest")

# Encoder stages per variant: (stage, its RefineNet block, in/out width in units of ngf, resample="down", dilation).
# A "down" stage without dilation halves the resolution; with dilation it keeps it (but still has a shortcut conv).
_STAGES = {
    "plain": [("res1", "refine4", 1, 1, False, None), ("res2", "refine3", 1, 2, True, None),
              ("res3", "refine2", 2, 2, True, 2), ("res4", "refine1", 2, 2, True, 4)],
    "deeper": [("res1", "refine5", 1, 1, False, None), ("res2", "refine4", 1, 2, True, None),
               ("res3", "refine3", 2, 2, True, None), ("res4", "refine2", 2, 4, True, 2),
               ("res5", "refine1", 4, 4, True, 4)],
    "deepest": [("res1", "refine5", 1, 1, False, None), ("res2", "refine4", 1, 2, True, None),
                ("res3", "refine3", 2, 2, True, None), ("res31", "refine31", 2, 2, True, None),
                ("res4", "refine2", 2, 4, True, 2), ("res5", "refine1", 4, 4, True, 4)],
}


class Swish(nn.Module):
    """x * sigmoid(x), computed as ncsnv2 does (torch's fused SiLU rounds differently in the last bits)."""

    def forward(self, x):
        return x * torch.sigmoid(x)


_ACTS = {"elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2), "swish": Swish}


def geometric_sigmas(sigma_begin: float, sigma_end: float, num_classes: int, dist: str = "geometric") -> torch.Tensor:
    """NCSNv2's noise levels (float64 numpy, then float32), largest first."""
    if dist == "geometric":
        s = np.exp(np.linspace(np.log(sigma_begin), np.log(sigma_end), num_classes))
    elif dist == "uniform":
        s = np.linspace(sigma_begin, sigma_end, num_classes)
    else:
        raise ValueError(f"unknown sigma_dist {dist!r}; expected 'geometric' or 'uniform'")
    return torch.tensor(s, dtype=torch.float32)


class InstanceNorm2dPlus(nn.Module):
    """Instance norm that keeps the per-channel means (NCSNv2 "InstanceNorm++"):
    gamma * (IN(x) + alpha * standardised channel means) + beta; the means are standardised across channels."""

    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        means = x.mean(dim=(2, 3))
        means = (means - means.mean(-1, keepdim=True)) / torch.sqrt(means.var(-1, keepdim=True) + 1e-5)
        h = F.instance_norm(x, eps=1e-5) + means[..., None, None] * self.alpha[:, None, None]
        return self.gamma[:, None, None] * h + self.beta[:, None, None]


class VarianceNorm2d(nn.Module):
    """alpha * x / sqrt(Var_spatial(x) + 1e-5) (unbiased variance, no centring)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))

    def forward(self, x):
        return self.alpha[:, None, None] * (x / torch.sqrt(x.var(dim=(2, 3), keepdim=True) + 1e-5))


def _norm(kind: str, features: int, num_classes: int = 0) -> nn.Module:
    """The unconditional normalisation layer ``kind``.

    ``num_classes > 0`` builds the network's final normaliser, which ncsnv2 creates as ``norm(ngf, num_classes)``:
    the second positional argument is ``bias`` for InstanceNorm++ (truthy: it has ``beta``, as every NCSNv2
    InstanceNorm++ layer does) and ``eps`` for torch's InstanceNorm2d / BatchNorm2d (so their eps is
    num_classes). Reproduced, so that a checkpoint computes the same function here as there.
    """
    final = num_classes > 0
    if kind == "InstanceNorm++":
        return InstanceNorm2dPlus(features)
    if kind == "InstanceNorm":
        return nn.InstanceNorm2d(features, eps=num_classes) if final else nn.InstanceNorm2d(features)
    if kind == "BatchNorm":
        return nn.BatchNorm2d(features, eps=num_classes) if final else nn.BatchNorm2d(features)
    if kind == "VarianceNorm":
        return VarianceNorm2d(features)
    if kind == "NoneNorm":
        return nn.Identity()
    raise ValueError(f"unknown normalization {kind!r}; expected InstanceNorm++, InstanceNorm, BatchNorm, "
                     "VarianceNorm or NoneNorm")


def _conv3x3(cin: int, cout: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution ('same' padding), then 2x2 mean pooling (floor for odd sizes, as AvgPool2d)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: conv2(act(norm2(conv1(act(norm1(x)))))) + shortcut(x).

    ``down`` without dilation: conv1 keeps the width, conv2 and the 1x1 shortcut are ConvMeanPools (half size).
    ``down`` with dilation: dilated 3x3 convs and a dilated 3x3 shortcut, resolution kept.
    Otherwise: conv1 changes the width; identity shortcut unless the width changes (1x1 or dilated 3x3 conv).
    """

    def __init__(self, cin: int, cout: int, act: nn.Module, norm: str, down: bool = False, dilation=None):
        super().__init__()
        self.act = act
        mid = cin if down else cout
        d = dilation or 1
        # registration order of the checkpoints: conv1, normalize2, conv2, shortcut, normalize1
        self.conv1 = _conv3x3(cin, mid, dilation=d)
        self.normalize2 = _norm(norm, mid)
        pool = down and dilation is None
        self.conv2 = ConvMeanPool(cin, cout, 3) if pool else _conv3x3(mid, cout, dilation=d)
        if not (down or cin != cout):
            self.shortcut = None
        elif pool:
            self.shortcut = ConvMeanPool(cin, cout, 1)
        else:
            self.shortcut = _conv3x3(cin, cout, dilation=d) if dilation else nn.Conv2d(cin, cout, 1)
        self.normalize1 = _norm(norm, cin)

    def forward(self, x):
        h = self.conv1(self.act(self.normalize1(x)))
        h = self.conv2(self.act(self.normalize2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class RCUBlock(nn.Module):
    """Residual conv units: ``n_blocks`` times x <- x + (act, conv3x3) x n_stages; bias-free convs ``i_j_conv``."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: nn.Module):
        super().__init__()
        self.act, self.n_blocks, self.n_stages = act, n_blocks, n_stages
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                self.add_module(f"{i}_{j}_conv", _conv3x3(features, features, bias=False))

    def forward(self, x):
        for i in range(1, self.n_blocks + 1):
            h = x
            for j in range(1, self.n_stages + 1):
                h = getattr(self, f"{i}_{j}_conv")(self.act(h))
            x = h + x
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: x <- act(x); path <- conv(maxpool5x5(path)) and x <- x + path, ``n_stages`` times."""

    def __init__(self, features: int, n_stages: int, act: nn.Module):
        super().__init__()
        self.act = act
        self.convs = nn.ModuleList(_conv3x3(features, features, bias=False) for _ in range(n_stages))

    def forward(self, x):
        x = self.act(x)
        path = x
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: sum of conv3x3(x_i) bilinearly resized (align_corners=True) to ``shape``."""

    def __init__(self, in_planes, features: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, features) for c in in_planes)

    def forward(self, xs, shape):
        out = 0
        for conv, x in zip(self.convs, xs):
            out = out + F.interpolate(conv(x), size=tuple(shape), mode="bilinear", align_corners=True)
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU(2x2) per input, fusion (if several inputs), CRP(2), output RCU (3 blocks at the end)."""

    def __init__(self, in_planes, features: int, act: nn.Module, start: bool = False, end: bool = False):
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
        self.msf = None if start else MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2, act)

    def forward(self, xs, shape):
        hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, shape)
        return self.output_convs(self.crp(h))


class NCSNv2(nn.Module):
    """NCSNv2 score network; ``variant`` is ``"plain"`` (NCSNv2), ``"deeper"`` (NCSNv2Deeper) or ``"deepest"``
    (NCSNv2Deepest, the csgm-mri-langevin network). Defaults are csgm's MRI config (``CSGM_MRI_CONFIG``).

    ``forward(x, labels)``: ``x`` (B, channels, H, W) float, ``labels`` (B,) integer noise-level indices into
    ``sigmas`` (an int or 0-d tensor is broadcast); returns the score estimate f(x) / sigmas[labels].
    ``image_size`` is recorded only (the training resolution): the network is fully convolutional.
    """

    registry_name = "ncsnv2"
    PRESETS = {"csgm_mri": CSGM_MRI_CONFIG}

    @property
    def size_multiple(self) -> int:
        """2 to the number of stages that halve the resolution (down without dilation)."""
        return 2 ** sum(1 for s in self._stages if s[4] and s[5] is None)

    def __init__(self, image_size: int = 384, channels: int = 2, ngf: int = 128, num_classes: int = 2311,
                 sigma_begin: float = 232.0, sigma_end: float = 0.0066, sigma_dist: str = "geometric",
                 normalization: str = "InstanceNorm++", nonlinearity: str = "elu", logit_transform: bool = False,
                 rescaled: bool = False, variant: str = "deepest"):
        super().__init__()
        if variant not in _STAGES:
            raise ValueError(f"unknown NCSNv2 variant {variant!r}; expected one of {sorted(_STAGES)}")
        if nonlinearity.lower() not in _ACTS:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected one of {sorted(_ACTS)}")
        check_int("num_classes", num_classes, 1, 1_000_000)  # the noise levels are computed here, before any check
        self.config = dict(image_size=int(image_size), channels=int(channels), ngf=int(ngf),
                           num_classes=int(num_classes), sigma_begin=float(sigma_begin), sigma_end=float(sigma_end),
                           sigma_dist=sigma_dist, normalization=normalization, nonlinearity=nonlinearity,
                           logit_transform=bool(logit_transform), rescaled=bool(rescaled), variant=variant)
        self.shift_input = not (logit_transform or rescaled)
        self.act = act = _ACTS[nonlinearity.lower()]()
        self.register_buffer("sigmas", geometric_sigmas(sigma_begin, sigma_end, num_classes, sigma_dist))
        self.begin_conv = nn.Conv2d(channels, ngf, 3, padding=1)
        self.normalizer = _norm(normalization, ngf, num_classes=num_classes)
        self.end_conv = nn.Conv2d(ngf, channels, 3, padding=1)

        self._stages = _STAGES[variant]
        refines = {}
        for k, (res, ref, cin, cout, down, dil) in enumerate(self._stages):
            cin, cout = cin * ngf, cout * ngf
            self.add_module(res, nn.ModuleList([ResidualBlock(cin, cout, act, normalization, down, dil),
                                                ResidualBlock(cout, cout, act, normalization, False, dil)]))
            start, end = k == len(self._stages) - 1, k == 0
            refines[ref] = RefineBlock([cout] if start else [cout, cout], cin, act, start=start, end=end)
        for ref in sorted(refines):  # the checkpoints register refine1, refine2, refine3, refine31, refine4, ...
            self.add_module(ref, refines[ref])

    def forward(self, x: torch.Tensor, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=self.sigmas.device)
        if labels.is_floating_point() or labels.is_complex():
            raise TypeError("NCSNv2 labels are integer noise-level indices into `sigmas`, not sigma values")
        labels = labels.expand(x.shape[0]) if labels.ndim == 0 else labels
        h = self.begin_conv(2 * x - 1 if self.shift_input else x)
        skips = []
        for res, *_ in self._stages:
            for block in getattr(self, res):
                h = block(h)
            skips.append(h)
        h = None
        for (_, ref, *_), skip in reversed(list(zip(self._stages, skips))):
            h = getattr(self, ref)([skip] if h is None else [skip, h], skip.shape[2:])
        out = self.end_conv(self.act(self.normalizer(h)))
        return out / self.sigmas[labels].view(-1, *([1] * (x.ndim - 1)))


def _tensor_dict(obj, what: str) -> dict:
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"not a csgm-mri-langevin / ncsnv2 checkpoint: {what} is not a state dict of tensors "
                              f"(got {type(obj).__name__})")
    return dict(obj)


def state_from_csgm_checkpoint(obj, net: nn.Module, ema: bool = True, source: str = "csgm checkpoint") -> dict:
    """The state dict for ``net`` from a csgm-mri-langevin / ncsnv2 checkpoint object (as ``torch.load`` returns it).

    ncsnv2's ``runners/ncsn_runner.py`` saves ``states = [score.state_dict(), optimizer.state_dict(), epoch,
    step]`` and, when ``config.model.ema``, appends ``ema_helper.state_dict()``; ``score`` is wrapped in
    DataParallel, so the keys of ``states[0]`` start with ``module.``, while the EMA helper
    (``models/ema.EMAHelper``) unwraps it in ``register``: its shadow is ``{name: tensor}`` over the trainable
    parameters, without the prefix. csgm's ``main.py`` loads ``states[0]`` with ``load_state_dict(strict=True)``
    into its DataParallel network and then, as its config has ``ema: true``, registers an EMA helper, replaces its
    shadow by ``states[-1]`` and copies it into every trainable parameter (``EMAHelper.ema``).

    Here the same: ``states[0]`` (prefix stripped; a prefix on only some keys is an error) must match ``net``
    exactly, as csgm's ``strict=True`` demands (renamed, added or mis-shaped keys are errors). With ``ema=True``
    the last element must hold exactly the trainable parameters of ``net`` with their shapes (csgm fails on a
    missing one; an extra one, which csgm would ignore, is refused too) and replaces them; the buffers
    (``sigmas``) come from ``states[0]``. With ``ema=False`` ``states[0]`` (the raw weights) is returned.
    Raises ``CheckpointError`` (a ``ValueError``) naming the keys, or for an object not in this format.
    """
    if not isinstance(obj, (list, tuple)) or len(obj) < 2:
        got = type(obj).__name__ + (f" of length {len(obj)}" if isinstance(obj, (list, tuple)) else "")
        raise CheckpointError(f"{source}: not a csgm-mri-langevin / ncsnv2 checkpoint: expected a list "
                              f"[model state, optimizer state, epoch, step(, ema shadow)], got {got}")
    raw = strip_module_prefix(_tensor_dict(obj[0], "its first element (the model)"), f"{source}: states[0]")
    check_state(net.state_dict(), raw, f"{source}: states[0] (the model, loaded strictly as csgm does)",
                f"the {type(net).__name__} network")
    if not ema:
        return raw
    if not isinstance(obj[-1], Mapping):
        raise CheckpointError(f"{source}: csgm/ncsnv2 checkpoint has no EMA shadow: its last element is a "
                              f"{type(obj[-1]).__name__}, not a state dict (saved with config.model.ema false?); "
                              "pass ema=False for the raw weights")
    shadow = strip_module_prefix(_tensor_dict(obj[-1], "its last element (the EMA shadow)"), f"{source}: states[-1]")
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    check_state(trainable, shadow, f"{source}: states[-1] (the EMA shadow)",
                f"the trainable parameters of the {type(net).__name__} network")
    return {**raw, **shadow}


def load_csgm_checkpoint(path, map_location="cpu", ema: bool = True, **config) -> NCSNv2:
    """Build ``NCSNv2(**config)`` (csgm's MRI config by default) and load a csgm checkpoint file into it strictly."""
    net = NCSNv2(**config)
    obj = torch_load(path, map_location)
    load_state_strict(net, state_from_csgm_checkpoint(obj, net, ema=ema, source=str(path)), source=str(path))
    return net.eval()
