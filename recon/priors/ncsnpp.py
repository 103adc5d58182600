"""NCSN++, the score network of score_sde_pytorch (Song et al., ICLR 2021) as trained by Score-MRI
(Chung & Ye, Medical Image Analysis 2022), in plain PyTorch.

The network is a UNet of BigGAN- or DDPM-style residual blocks with GroupNorm and SiLU, self-attention at the
resolutions listed in ``attn_resolutions``, anti-aliased resampling with a FIR filter (StyleGAN2's upfirdn2d with
kernel [1, 3, 3, 1], written here with ordinary convolutions), optional input/output pyramids ("progressive"
paths), and a noise embedding that is either Gaussian Fourier features of log(sigma) (continuous VE training)
or sinusoidal features of a discrete timestep. With ``scale_by_sigma`` the output is divided by sigma, so the
network returns the score s(x, sigma) ~ -eps / sigma of a variance-exploding model directly.

Parameter names and order are those of score_sde: every layer sits in one flat ``nn.ModuleList`` called
``all_modules`` (``all_modules.0.W``, ``all_modules.3.weight``, ``all_modules.4.Conv_0.weight``, ...) and the
buffer ``sigmas`` holds the geometric noise ladder sigma_max -> sigma_min of ``num_scales`` steps (float64, as
score_sde stores it). A score_sde / Score-MRI checkpoint therefore loads strictly once its EMA weights are
extracted with ``state_from_score_sde_checkpoint``.

``forward(x, sigma_or_t)``: x is (B, num_channels, H, W); with Fourier embedding the second argument is the noise
level sigma (B,) (score_sde's continuous VE label), with positional embedding it is the discrete noise index
(B,) into ``sigmas``. When ``centered`` is False (data in [0, 1], as Score-MRI trains) the network maps its input
to 2x - 1 first, exactly as score_sde does.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from operators.checks import check_int

from .format import CheckpointError, check_state, strip_module_prefix, torch_load

# Score-MRI's configs/ve/fastmri_knee_320_ncsnpp_continuous.py on top of configs/default_lsun_configs.py
# (github HJ-harry/score-MRI @ 8359aae): a magnitude prior (1 channel, data in [0, 1], not centered),
# trained with the continuous VE SDE, sigma in [0.01, 378], 2000 discrete scales.
SCORE_MRI_FASTMRI_KNEE = dict(
    image_size=320, num_channels=1, nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=4, attn_resolutions=[16],
    dropout=0.0, resamp_with_conv=True, fir=True, fir_kernel=[1, 3, 3, 1], skip_rescale=True,
    resblock_type="biggan", progressive="none", progressive_input="residual", progressive_combine="sum",
    init_scale=0.0, fourier_scale=16.0, conv_size=3, embedding_type="fourier", conditional=True,
    scale_by_sigma=True, centered=False, nonlinearity="swish", sigma_min=0.01, sigma_max=378.0, num_scales=2000,
)

_ACTIVATIONS = {"swish": F.silu, "elu": F.elu, "relu": F.relu,
                "lrelu": functools.partial(F.leaky_relu, negative_slope=0.2)}


# ----------------------------------------------------------------------------------------------------------
# Initialisation (DDPM's variance scaling: fan_avg, uniform; a zero scale means 1e-10) and layer helpers

def _ddpm_init_(w: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(w.shape[2:])
    fan_avg = (w.shape[0] + w.shape[1]) * receptive / 2
    bound = math.sqrt(3 * scale / fan_avg)
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def _conv(cin: int, cout: int, k: int = 3, init_scale: float = 1.0, stride: int = 1,
          padding: Optional[int] = None) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding)
    _ddpm_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(cin: int, cout: int) -> nn.Linear:
    lin = nn.Linear(cin, cout)
    _ddpm_init_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def _group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(ch // 4, 32), ch, eps=1e-6)


def _skip(x: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    return (x + h) / math.sqrt(2.0) if rescale else x + h


# ----------------------------------------------------------------------------------------------------------
# FIR resampling (StyleGAN2's upfirdn2d and the fused resample-convolutions), plain torch

def _fir(k: Sequence[float], gain: float, like: torch.Tensor) -> torch.Tensor:
    """The separable 2-D filter outer(k, k), normalised to sum ``gain``."""
    k = torch.as_tensor(k, dtype=torch.float64, device="cpu")
    k = torch.outer(k, k) if k.ndim == 1 else k
    return (k * (gain / k.sum())).to(device=like.device, dtype=like.dtype)


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Insert ``up - 1`` zeros between samples, pad both sides of H and W by ``pad`` = (before, after),
    convolve every channel with the 2-D filter ``k`` (a true convolution: ``k`` is flipped) and keep every
    ``down``-th sample."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x.reshape(n * c, 1, *x.shape[2:]), k.flip(0, 1)[None, None])
    x = x.reshape(n, c, *x.shape[2:])
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_2d(x: torch.Tensor, fir_kernel: Sequence[float]) -> torch.Tensor:
    """2x upsampling with the FIR filter (gain 4, so constant images stay constant)."""
    p = len(fir_kernel) - 2
    return upfirdn2d(x, _fir(fir_kernel, 4.0, x), up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample_2d(x: torch.Tensor, fir_kernel: Sequence[float]) -> torch.Tensor:
    """2x downsampling after low-pass filtering with the FIR filter."""
    p = len(fir_kernel) - 2
    return upfirdn2d(x, _fir(fir_kernel, 1.0, x), down=2, pad=((p + 1) // 2, p // 2))


class FIRConv2d(nn.Module):
    """StyleGAN2's fused resample-convolution (score_sde's ``up_or_down_sampling.Conv2d``): up: a stride-2
    transposed convolution then the FIR filter; down: the FIR filter then a stride-2 convolution."""

    def __init__(self, cin: int, cout: int, kernel: int, up: bool = False, down: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if up == down or kernel % 2 != 1:
            raise ValueError("FIRConv2d resamples in exactly one direction with an odd kernel")
        self.weight = nn.Parameter(_ddpm_init_(torch.empty(cout, cin, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.up, self.fir_kernel = up, list(fir_kernel)

    def forward(self, x):
        kw = self.weight.shape[-1]
        if self.up:
            p = (len(self.fir_kernel) - 2) - (kw - 1)
            x = F.conv_transpose2d(x, self.weight.flip(2, 3).transpose(0, 1), stride=2)
            x = upfirdn2d(x, _fir(self.fir_kernel, 4.0, x), pad=((p + 1) // 2 + 1, p // 2 + 1))
        else:
            p = (len(self.fir_kernel) - 2) + (kw - 1)
            x = upfirdn2d(x, _fir(self.fir_kernel, 1.0, x), pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, self.weight, stride=2)
        return x + self.bias[None, :, None, None]


# ----------------------------------------------------------------------------------------------------------
# Layers (attribute names are score_sde's, so that state-dict keys match)

class FourierEmbedding(nn.Module):
    """Gaussian Fourier features [sin(2 pi W s), cos(2 pi W s)] with a fixed (not trained) W ~ N(0, scale^2)."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, s):
        proj = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """Transformer sinusoidal features of a (discrete) timestep, as in DDPM."""
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -step)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class NIN(nn.Module):
    """A 1x1 convolution stored as a (in, out) matrix ``W`` and bias ``b``."""

    def __init__(self, cin: int, cout: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(_ddpm_init_(torch.empty(cin, cout), init_scale))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, softmax(q k^T / sqrt(C)) v, residual."""

    def __init__(self, ch: int, skip_rescale: bool, init_scale: float):
        super().__init__()
        self.GroupNorm_0 = _group_norm(ch)
        self.NIN_0, self.NIN_1, self.NIN_2 = NIN(ch, ch), NIN(ch, ch), NIN(ch, ch)
        self.NIN_3 = NIN(ch, ch, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(b, c, hh * ww).transpose(1, 2) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        a = F.scaled_dot_product_attention(q, k, v)
        return _skip(x, self.NIN_3(a.transpose(1, 2).reshape(b, c, hh, ww)), self.skip_rescale)


class ResBlock(nn.Module):
    """Residual block. ``biggan``: may resample (FIR or nearest/average) both paths, 1x1 ``Conv_2`` shortcut;
    ``ddpm``: no resampling, ``NIN_0`` shortcut. The noise embedding adds a per-channel bias."""

    def __init__(self, act, cin: int, cout: Optional[int], temb_dim: int, dropout: float, skip_rescale: bool,
                 init_scale: float, biggan: bool, resample: Optional[str] = None, fir: bool = True,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        cout = cout or cin
        self.GroupNorm_0 = _group_norm(cin)
        self.Conv_0 = _conv(cin, cout)
        self.Dense_0 = _linear(temb_dim, cout)
        self.GroupNorm_1 = _group_norm(cout)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(cout, cout, init_scale=init_scale)
        self.shortcut = None  # name of the shortcut layer, if any
        if biggan and (cin != cout or resample):
            self.Conv_2, self.shortcut = _conv(cin, cout, 1), "Conv_2"
        elif not biggan and cin != cout:
            self.NIN_0, self.shortcut = NIN(cin, cout), "NIN_0"
        self.act, self.skip_rescale, self.resample = act, skip_rescale, resample
        self.fir, self.fir_kernel = fir, list(fir_kernel)

    def _resample(self, x):
        if self.resample == "up":
            return upsample_2d(x, self.fir_kernel) if self.fir else F.interpolate(x, scale_factor=2, mode="nearest")
        return downsample_2d(x, self.fir_kernel) if self.fir else F.avg_pool2d(x, 2)

    def forward(self, x, temb=None):
        h = self.act(self.GroupNorm_0(x))
        if self.resample:
            h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.shortcut is not None:
            x = getattr(self, self.shortcut)(x)
        return _skip(x, h, self.skip_rescale)


class Resample(nn.Module):
    """score_sde's Upsample/Downsample: FIR (``Conv2d_0`` fused convolution, or the bare filter) or
    nearest/strided (``Conv_0`` 3x3 convolution, or nearest/average pooling)."""

    def __init__(self, direction: str, cin: int, cout: Optional[int] = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        cout = cout or cin
        self.up, self.with_conv, self.fir, self.fir_kernel = direction == "up", with_conv, fir, list(fir_kernel)
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(cin, cout, 3, up=self.up, down=not self.up, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = _conv(cin, cout, 3, stride=1 if self.up else 2, padding=1 if self.up else 0)

    def forward(self, x):
        if self.fir:
            if self.with_conv:
                return self.Conv2d_0(x)
            return upsample_2d(x, self.fir_kernel) if self.up else downsample_2d(x, self.fir_kernel)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.Conv_0(x) if self.with_conv else x
        return self.Conv_0(F.pad(x, (0, 1, 0, 1))) if self.with_conv else F.avg_pool2d(x, 2)


class Combine(nn.Module):
    """Merge the input pyramid into the feature map: 1x1 convolution, then sum or concatenation."""

    def __init__(self, cin: int, cout: int, method: str):
        super().__init__()
        self.Conv_0 = _conv(cin, cout, 1)
        self.method = method

    def forward(self, x, y):
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


# ----------------------------------------------------------------------------------------------------------

class NCSNpp(nn.Module):
    """NCSN++ with score_sde's parameter names; see the module docstring. Keyword arguments are score_sde's
    ``config.model`` fields plus ``image_size``, ``num_channels`` and ``centered`` from ``config.data``;
    ``sigma_min``, ``sigma_max``, ``num_scales`` define the ``sigmas`` buffer. Defaults are Score-MRI's
    fastMRI-knee model. Attention is placed by the resolutions of ``image_size`` (score_sde decides by the
    input's width, which is the same thing for inputs of the configured size)."""

    registry_name = "ncsnpp"
    PRESETS = {"score_mri_fastmri_knee": SCORE_MRI_FASTMRI_KNEE}

    def __init__(self, *, image_size: int = 320, num_channels: int = 1, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.0, resamp_with_conv: bool = True,
                 fir: bool = True, fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 resblock_type: str = "biggan", progressive: str = "none", progressive_input: str = "residual",
                 progressive_combine: str = "sum", init_scale: float = 0.0, fourier_scale: float = 16.0,
                 conv_size: int = 3, embedding_type: str = "fourier", conditional: bool = True,
                 scale_by_sigma: bool = True, centered: bool = False, nonlinearity: str = "swish",
                 sigma_min: float = 0.01, sigma_max: float = 378.0, num_scales: int = 2000):
        super().__init__()
        resblock_type, progressive = resblock_type.lower(), progressive.lower()
        progressive_input, progressive_combine = progressive_input.lower(), progressive_combine.lower()
        embedding_type, nonlinearity = embedding_type.lower(), nonlinearity.lower()
        for name, value, allowed in [("resblock_type", resblock_type, ("biggan", "ddpm")),
                                     ("progressive", progressive, ("none", "output_skip", "residual")),
                                     ("progressive_input", progressive_input, ("none", "input_skip", "residual")),
                                     ("progressive_combine", progressive_combine, ("sum", "cat")),
                                     ("embedding_type", embedding_type, ("fourier", "positional")),
                                     ("nonlinearity", nonlinearity, tuple(_ACTIVATIONS))]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if conv_size != 3:
            raise ValueError("NCSN++ uses 3x3 convolutions (score_sde ignores conv_size); conv_size must be 3")
        check_int("num_scales", num_scales, 1, 1_000_000)  # the noise levels are computed here, before any check
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(ch_mult) - 1}")
        self.config = dict(
            image_size=image_size, num_channels=num_channels, nf=nf, ch_mult=list(ch_mult),
            num_res_blocks=num_res_blocks, attn_resolutions=list(attn_resolutions), dropout=dropout,
            resamp_with_conv=resamp_with_conv, fir=fir, fir_kernel=list(fir_kernel), skip_rescale=skip_rescale,
            resblock_type=resblock_type, progressive=progressive, progressive_input=progressive_input,
            progressive_combine=progressive_combine, init_scale=init_scale, fourier_scale=fourier_scale,
            conv_size=conv_size, embedding_type=embedding_type, conditional=conditional,
            scale_by_sigma=scale_by_sigma, centered=centered, nonlinearity=nonlinearity,
            sigma_min=sigma_min, sigma_max=sigma_max, num_scales=num_scales)
        sigmas = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
        self.register_buffer("sigmas", torch.tensor(sigmas))
        self.act = act = _ACTIVATIONS[nonlinearity]
        levels = len(ch_mult)
        self.attn_levels = {i for i in range(levels) if image_size // 2 ** i in attn_resolutions}
        biggan = resblock_type == "biggan"
        temb_dim = 4 * nf

        def block(cin, cout=None, resample=None):
            return ResBlock(act, cin, cout, temb_dim, dropout, skip_rescale, init_scale, biggan, resample,
                            fir, fir_kernel)

        def attn(ch):
            return AttnBlock(ch, skip_rescale, init_scale)

        m = []
        if embedding_type == "fourier":
            m.append(FourierEmbedding(nf, fourier_scale))
        if conditional:
            m += [_linear(2 * nf if embedding_type == "fourier" else nf, temb_dim), _linear(temb_dim, temb_dim)]
        if progressive_input == "input_skip":
            self.pyramid_downsample = Resample("down", num_channels, fir=fir, fir_kernel=fir_kernel)
        if progressive == "output_skip":
            self.pyramid_upsample = Resample("up", num_channels, fir=fir, fir_kernel=fir_kernel)

        # Downsampling path
        m.append(_conv(num_channels, nf))
        skips, ch, pyramid_ch = [nf], nf, num_channels
        for lvl in range(levels):
            for _ in range(num_res_blocks):
                m.append(block(ch, nf * ch_mult[lvl]))
                ch = nf * ch_mult[lvl]
                if lvl in self.attn_levels:
                    m.append(attn(ch))
                skips.append(ch)
            if lvl != levels - 1:
                m.append(block(ch, resample="down") if biggan
                         else Resample("down", ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                if progressive_input == "input_skip":
                    m.append(Combine(pyramid_ch, ch, progressive_combine))
                    ch = 2 * ch if progressive_combine == "cat" else ch
                elif progressive_input == "residual":
                    m.append(Resample("down", pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = ch
                skips.append(ch)

        # Middle
        m += [block(ch), attn(ch), block(ch)]

        # Upsampling path
        for lvl in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                m.append(block(ch + skips.pop(), nf * ch_mult[lvl]))
                ch = nf * ch_mult[lvl]
            if lvl in self.attn_levels:
                m.append(attn(ch))
            if progressive == "output_skip":
                m += [_group_norm(ch), _conv(ch, num_channels, init_scale=init_scale)]
            elif progressive == "residual" and lvl == levels - 1:
                m += [_group_norm(ch), _conv(ch, ch)]
                pyramid_ch = ch
            elif progressive == "residual":
                m.append(Resample("up", pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                pyramid_ch = ch
            if lvl != 0:
                m.append(block(ch, resample="up") if biggan
                         else Resample("up", ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
        if progressive != "output_skip":
            m += [_group_norm(ch), _conv(ch, num_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(m)

    @classmethod
    def score_mri_fastmri_knee(cls, **overrides) -> "NCSNpp":
        """The network of Score-MRI's published fastMRI-knee checkpoint (``SCORE_MRI_FASTMRI_KNEE``)."""
        return cls(**{**SCORE_MRI_FASTMRI_KNEE, **overrides})

    def forward(self, x: torch.Tensor, sigma_or_t) -> torch.Tensor:
        c = self.config
        cond = torch.as_tensor(sigma_or_t, device=x.device)
        if cond.ndim == 0:
            cond = cond.expand(x.shape[0])
        mods = iter(self.all_modules)
        act = self.act
        if c["embedding_type"] == "fourier":
            sigma = cond.to(x.dtype)
            temb = next(mods)(torch.log(sigma))
        else:
            sigma = self.sigmas[cond.long()].to(x.dtype)
            temb = timestep_embedding(cond, c["nf"])
        if c["conditional"]:
            temb = next(mods)(temb)
            temb = next(mods)(act(temb))
        else:
            temb = None
        if not c["centered"]:
            x = 2 * x - 1.0

        biggan, levels, rescale = c["resblock_type"] == "biggan", len(c["ch_mult"]), c["skip_rescale"]
        pyramid = x if c["progressive_input"] != "none" else None
        hs = [next(mods)(x)]
        for lvl in range(levels):
            for _ in range(c["num_res_blocks"]):
                h = next(mods)(hs[-1], temb)
                if lvl in self.attn_levels:
                    h = next(mods)(h)
                hs.append(h)
            if lvl != levels - 1:
                down = next(mods)
                h = down(hs[-1], temb) if biggan else down(hs[-1])
                if c["progressive_input"] == "input_skip":
                    pyramid = self.pyramid_downsample(pyramid)
                    h = next(mods)(pyramid, h)
                elif c["progressive_input"] == "residual":
                    pyramid = _skip(next(mods)(pyramid), h, rescale)
                    h = pyramid
                hs.append(h)

        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        out_pyramid = None
        for lvl in reversed(range(levels)):
            for _ in range(c["num_res_blocks"] + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if lvl in self.attn_levels:
                h = next(mods)(h)
            if c["progressive"] == "output_skip":
                norm, conv = next(mods), next(mods)
                skip = conv(act(norm(h)))
                out_pyramid = skip if lvl == levels - 1 else self.pyramid_upsample(out_pyramid) + skip
            elif c["progressive"] == "residual" and lvl == levels - 1:
                norm, conv = next(mods), next(mods)
                out_pyramid = conv(act(norm(h)))
            elif c["progressive"] == "residual":
                out_pyramid = _skip(next(mods)(out_pyramid), h, rescale)
                h = out_pyramid
            if lvl != 0:
                up = next(mods)
                h = up(h, temb) if biggan else up(h)

        if c["progressive"] == "output_skip":
            h = out_pyramid
        else:
            norm, conv = next(mods), next(mods)
            h = conv(act(norm(h)))
        assert next(mods, None) is None, "module walk out of step with construction"
        if c["scale_by_sigma"]:
            h = h / sigma.reshape(-1, *([1] * (h.ndim - 1)))
        return h


# ----------------------------------------------------------------------------------------------------------

def state_from_score_sde_checkpoint(obj, net: nn.Module, ema: bool = True, source: str = "score_sde checkpoint") -> dict:
    """The state dict for ``net`` from a score_sde / Score-MRI training checkpoint.

    score_sde_pytorch's ``utils.save_checkpoint`` writes ``dict(optimizer=optimizer.state_dict(),
    model=model.state_dict(), ema=ema.state_dict(), step=...)`` (``obj`` is that dict or the path of the file).
    ``model`` holds the raw weights, with every key prefixed ``module.`` (``models/utils.create_model`` wraps the
    network in DataParallel); ``ema`` is ``models/ema.ExponentialMovingAverage.state_dict()``, i.e.
    ``dict(decay, num_updates, shadow_params)`` with ``shadow_params`` an unnamed list in ``model.parameters()``
    order restricted to trainable parameters (so without the fixed Fourier features ``all_modules.0.W``).
    ``model`` must match ``net`` exactly (after the prefix is stripped; a partial prefix is an error). With
    ``ema=True`` (what score_sde's and Score-MRI's samplers use: ``ema.copy_to(model.parameters())``) every
    trainable parameter is then replaced by its shadow, matched by zipping ``net.named_parameters()`` (trainable
    ones) with ``shadow_params``; the buffers (``sigmas``) and ``all_modules.0.W`` come from ``model``. With
    ``ema=False`` the raw ``model`` weights are returned. Load the result with ``recon.priors.load_state_strict``.

    Raises ``CheckpointError`` (a ``ValueError``) if the checkpoint lacks ``model`` (or ``ema`` when ``ema``), if
    ``model`` does not match ``net`` (naming the keys), or if the number or the shapes of the shadow parameters
    disagree with ``net``, naming the first parameter that does not match. (Score-MRI's own
    ``utils.restore_checkpoint`` loads ``model`` non-strictly into an unwrapped network, which matches no key, so
    there the Fourier features stay at a fresh random draw; here they come from the checkpoint.)
    """
    if isinstance(obj, (str, Path)):
        source, obj = str(obj), torch_load(obj)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{source}: not a score_sde checkpoint: expected a dict with a 'model' state dict")
    state = strip_module_prefix(obj["model"], f"{source}: 'model'")
    check_state(net.state_dict(), state, f"{source}: 'model'", f"the {type(net).__name__} network")
    if not ema:
        return state
    shadow = obj.get("ema")
    if not isinstance(shadow, Mapping) or "shadow_params" not in shadow:
        raise CheckpointError(f"{source}: score_sde checkpoint has no 'ema' entry with 'shadow_params'; "
                              "pass ema=False for the raw weights")
    shadow = list(shadow["shadow_params"])
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    for i in range(max(len(shadow), len(trainable))):
        name = trainable[i][0] if i < len(trainable) else None
        if name is None or i >= len(shadow) or tuple(shadow[i].shape) != tuple(trainable[i][1].shape):
            got = tuple(shadow[i].shape) if i < len(shadow) else "nothing"
            want = f"{name} {tuple(trainable[i][1].shape)}" if name else "nothing"
            raise CheckpointError(f"{source}: EMA shadow parameter {i} does not match the network: checkpoint has "
                                  f"{got}, network expects {want} ({len(shadow)} shadow parameters, "
                                  f"{len(trainable)} trainable network parameters)")
    for (name, _), value in zip(trainable, shadow):
        state[name] = value
    return state
