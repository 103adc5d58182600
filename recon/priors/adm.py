"""The ADM UNet of Dhariwal & Nichol (2021, "Diffusion Models Beat GANs"), as published in openai/guided-diffusion
and reused unchanged by DDS (Chung, Lee & Ye, ICLR 2024, HJ-harry/DDS) and DPS (Chung et al., ICLR 2023,
DPS2022/diffusion-posterior-sampling).

Module and parameter names follow the published checkpoints exactly (``time_embed.0.weight``,
``input_blocks.1.0.in_layers.2.weight``, ``middle_block.1.qkv.weight``, ``out.2.weight``, ...), so their raw
state dicts load strictly with ``recon.priors.load_state_strict``.

The math, for ``forward(x, t)``:

- timestep embedding: e(t) = [cos(t f_k), sin(t f_k)], f_k = 10000^(-k/half), k < half = model_channels/2, with t
  the (possibly fractional) DDPM step index in [0, T) (DDS and DPS feed the integer index, no rescaling);
  then Linear -> SiLU -> Linear to 4 * model_channels, plus ``label_emb(y)`` for a class-conditional model;
- ResBlock: h = conv(SiLU(GN(x))) (resampled between the SiLU and the conv when it is an up/down block);
  with scale-shift norm  h = GN(h) (1 + s) + b, (s, b) = Linear(SiLU(emb)), else h = GN(h + Linear(SiLU(emb)));
  then SiLU -> dropout -> zero-initialised conv, plus the skip (identity, or a 1x1 conv when channels change);
- attention over the H W positions with heads of ``num_head_channels`` (or ``num_heads`` heads); both q and k
  are scaled by ch^(-1/4) and the softmax is taken in float32; the legacy order (default, used by every
  checkpoint here) splits heads before q/k/v, ``use_new_attention_order`` splits q/k/v first;
- GroupNorm has 32 groups and always computes in float32; the final conv and each attention's ``proj_out``
  start at zero.

Output: (B, out_channels, H, W); with ``learn_sigma`` the first ``in_channels`` channels are eps and the rest
the interpolation coefficient v of the learned variance (Nichol & Dhariwal 2021, "learned_range").
H and W must be divisible by 2^(len(channel_mult) - 1).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

# Default channel multipliers by image size, as guided-diffusion's script_util (DDS adds 320 -> same as 256).
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    320: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features (B, dim) of timesteps t (B,): [cos(t f), sin(t f)], f_k = max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32 whatever the input dtype, cast back after."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class EmbedSequential(nn.Sequential):
    """A sequence whose ResBlocks also receive the embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Resample(nn.Module):
    """Nearest-neighbour 2x upsampling or 2x downsampling (strided 3x3 conv or 2x2 average pooling),
    with the conv stored as ``conv`` (up) or ``op`` (down) as in the checkpoints."""

    def __init__(self, channels: int, up: bool, use_conv: bool):
        super().__init__()
        self.up, self.use_conv = up, use_conv
        if up and use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        elif not up:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        if not self.up:
            return self.op(x)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: Optional[int] = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if self.updown:
            self.h_upd = Resample(channels, up=up, use_conv=False)
            self.x_upd = Resample(channels, up=up, use_conv=False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(),
                                        nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.new_order = new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def attention(self, qkv: torch.Tensor) -> torch.Tensor:
        b, width, n = qkv.shape
        ch = width // (3 * self.num_heads)
        if self.new_order:  # (3, heads, ch): split q/k/v, then heads
            q, k, v = (z.reshape(b * self.num_heads, ch, n) for z in qkv.chunk(3, dim=1))
        else:  # (heads, 3, ch): split heads, then q/k/v
            q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, n).split(ch, dim=1)
        scale = ch ** -0.25
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        return torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, n)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


def _resolutions(value) -> tuple:
    if isinstance(value, str):
        return tuple(int(r) for r in value.split(",") if r.strip())
    if isinstance(value, int):
        return (value,)
    return tuple(int(r) for r in value)


# Settings shared by every published ADM checkpoint here (guided-diffusion's, as DDS and DPS use them).
_ADM_COMMON = dict(num_heads=4, num_head_channels=64, num_heads_upsample=-1, dropout=0.0, conv_resample=True,
                   use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=False,
                   learn_sigma=True, num_classes=None, use_fp16=False)


class ADMUNet(nn.Module):
    """The guided-diffusion ``UNetModel`` (2-D), parameter-compatible with its checkpoints.

    ``attention_resolutions`` are feature-map *resolutions* in pixels, as in the configs (``"16"``, ``(32, 16, 8)``,
    an int or a comma-separated string); like guided-diffusion's ``script_util`` they become downsample factors
    ``image_size // r``, and attention is placed where the factor 2^level equals one of them. Hence for
    DDS's 320-px fastMRI model ``"16"`` gives 20, which no level reaches: that model has attention only in the
    middle block (as its checkpoint does). ``self.attention_ds`` lists the factors.

    ``channel_mult`` defaults from ``image_size`` (``DEFAULT_CHANNEL_MULT``); ``out_channels`` defaults to
    ``in_channels * (2 if learn_sigma else 1)``. ``use_fp16`` runs the encoder/middle/decoder convolutions in
    float16 like guided-diffusion's ``convert_to_fp16`` (embeddings, norms and the output head stay float32).
    ``num_heads_upsample=-1`` means ``num_heads``. ``forward(x, t, y=None)``: t per batch element (or a scalar),
    y the class labels when ``num_classes`` is set.
    """

    registry_name = "adm"

    # Diffusion settings of each published model: ``parametrization`` is the toolkit's VPModel config
    # (``parametrizations.build(net, ...)``); the rest documents what the reference code does.
    DIFFUSION = {
        "dds_fastmri": {
            "parametrization": {"type": "vp", "betas": "linear", "n_timesteps": 1000, "prediction": "eps",
                                "learned_sigma": True},
            "beta_start": 1e-4, "beta_end": 0.02,
            "timestep_input": "integer DDPM index t in 0..999, not rescaled",
            "variance": "learned channels ignored: DDS samples with DDIM (var_type 'fixedsmall' in its config)",
            "channels": "complex image as 2 channels (real, imag)",
            "checkpoint": "fastmri_knee_320_complex_1m.pt (HJ-harry/DDS, configs/vp/fastmri_knee_320_complex.yml)",
        },
        "dds_aapm": {
            "parametrization": {"type": "vp", "betas": "linear", "n_timesteps": 1000, "prediction": "eps",
                                "learned_sigma": True},
            "beta_start": 1e-4, "beta_end": 0.02,
            "timestep_input": "integer DDPM index t in 0..999, not rescaled",
            "variance": "learned channels ignored: DDS samples with DDIM (var_type 'fixedsmall' in its config)",
            "channels": "1 real CT channel",
            "checkpoint": "AAPM256_1M.pt (HJ-harry/DDS, configs/vp/AAPM256.yml)",
        },
        "dps_ffhq": {
            "parametrization": {"type": "vp", "betas": "linear", "n_timesteps": 1000, "prediction": "eps",
                                "learned_sigma": True},
            "beta_start": 1e-4, "beta_end": 0.02,
            "timestep_input": "integer DDPM index t in 0..999 (rescale_timesteps False)",
            "variance": "learned_range (DPS's ancestral DDPM sampler uses it)",
            "channels": "RGB in [-1, 1]",
            "checkpoint": "ffhq_10m.pt (DPS2022/diffusion-posterior-sampling, configs/model_config.yaml)",
        },
        "dps_imagenet": {
            "parametrization": {"type": "vp", "betas": "linear", "n_timesteps": 1000, "prediction": "eps",
                                "learned_sigma": True},
            "beta_start": 1e-4, "beta_end": 0.02,
            "timestep_input": "integer DDPM index t in 0..999 (rescale_timesteps False)",
            "variance": "learned_range",
            "channels": "RGB in [-1, 1]",
            "checkpoint": "imagenet256.pt = guided-diffusion's 256x256_diffusion_uncond.pt "
                          "(DPS configs/imagenet_model_config.yaml)",
        },
    }

    def __init__(self, image_size: int, in_channels: int, model_channels: int, num_res_blocks: int,
                 attention_resolutions: Union[str, int, Sequence[int]] = (16,), out_channels: Optional[int] = None,
                 dropout: float = 0.0, channel_mult: Optional[Sequence[float]] = None, conv_resample: bool = True,
                 num_classes: Optional[int] = None, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, learn_sigma: bool = False, use_fp16: bool = False):
        super().__init__()
        if channel_mult is None:
            if image_size not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"no default channel_mult for image_size {image_size}; "
                                 f"give channel_mult (defaults exist for {sorted(DEFAULT_CHANNEL_MULT)})")
            channel_mult = DEFAULT_CHANNEL_MULT[image_size]
        channel_mult = tuple(channel_mult)
        attention_resolutions = _resolutions(attention_resolutions)
        expected_out = in_channels * (2 if learn_sigma else 1)
        if out_channels is None:
            out_channels = expected_out
        elif out_channels != expected_out:
            raise ValueError(f"out_channels={out_channels} contradicts learn_sigma={learn_sigma} with "
                             f"in_channels={in_channels} (expected {expected_out})")
        self.config = dict(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels,
            out_channels=out_channels, num_res_blocks=num_res_blocks,
            attention_resolutions=list(attention_resolutions), dropout=dropout, channel_mult=list(channel_mult),
            conv_resample=conv_resample, num_classes=num_classes, num_heads=num_heads,
            num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
            use_new_attention_order=use_new_attention_order, learn_sigma=learn_sigma, use_fp16=use_fp16)
        self.in_channels, self.out_channels, self.model_channels = in_channels, out_channels, model_channels
        self.num_classes, self.learn_sigma, self.n_levels = num_classes, learn_sigma, len(channel_mult)
        self.attention_ds = tuple(image_size // r for r in attention_resolutions)
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_dim = 4 * model_channels

        def res(cin, cout, **kw):
            return ResBlock(cin, emb_dim, dropout, cout, use_scale_shift_norm, **kw)

        def attn(c, heads):
            return AttentionBlock(c, heads, num_head_channels, use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in self.attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Resample(ch, up=False, use_conv=conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skips.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in self.attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown
                                  else Resample(ch, up=True, use_conv=conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), _zero(nn.Conv2d(input_ch, out_channels, 3, padding=1)))

        if use_fp16:
            for part in (self.input_blocks, self.middle_block, self.output_blocks):
                for m in part.modules():
                    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                        m.half()

    def forward(self, x: torch.Tensor, t, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, hgt, wid = x.shape
        f = 2 ** (self.n_levels - 1)
        if hgt % f or wid % f:
            raise ValueError(f"image size {hgt}x{wid} is not divisible by {f} (2^(levels-1))")
        if (y is None) != (self.num_classes is None):
            raise ValueError("give class labels y if and only if the model is class-conditional "
                             f"(num_classes={self.num_classes})")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(timestep_embedding(t.reshape(b), self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        h, hs = x.type(self.input_blocks[0][0].weight.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))

    # --- published configurations (``PRESETS``: constructor arguments, by name) ----------------------------
    PRESETS = {
        "dds_fastmri": dict(_ADM_COMMON, image_size=320, in_channels=2, model_channels=256, num_res_blocks=1,
                            attention_resolutions=(16,)),
        "dds_aapm": dict(_ADM_COMMON, image_size=256, in_channels=1, model_channels=256, num_res_blocks=1,
                         attention_resolutions=(16,)),
        "dps_ffhq": dict(_ADM_COMMON, image_size=256, in_channels=3, model_channels=128, num_res_blocks=1,
                         attention_resolutions=(16,)),
        "dps_imagenet": dict(_ADM_COMMON, image_size=256, in_channels=3, model_channels=256, num_res_blocks=2,
                             attention_resolutions=(32, 16, 8)),
    }

    @classmethod
    def dds_fastmri(cls, **overrides) -> "ADMUNet":
        """DDS multi-coil fastMRI knee prior (complex, 2 channels, 320 px): fastmri_knee_320_complex_1m.pt."""
        return cls(**{**cls.PRESETS["dds_fastmri"], **overrides})

    @classmethod
    def dds_aapm(cls, **overrides) -> "ADMUNet":
        """DDS AAPM CT prior (1 channel, 256 px): AAPM256_1M.pt."""
        return cls(**{**cls.PRESETS["dds_aapm"], **overrides})

    @classmethod
    def dps_ffhq(cls, **overrides) -> "ADMUNet":
        """DPS FFHQ 256 prior (RGB): ffhq_10m.pt."""
        return cls(**{**cls.PRESETS["dps_ffhq"], **overrides})

    @classmethod
    def dps_imagenet(cls, **overrides) -> "ADMUNet":
        """DPS ImageNet 256 prior = guided-diffusion's unconditional 256x256_diffusion_uncond.pt (RGB)."""
        return cls(**{**cls.PRESETS["dps_imagenet"], **overrides})
