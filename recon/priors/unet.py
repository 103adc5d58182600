"""A compact UNet for the bundled priors: small enough for a laptop CPU, the usual diffusion ingredients.

Residual blocks with GroupNorm/SiLU and a scale-shift noise embedding (as in ADM), self-attention at the
coarsest resolutions, skip connections by concatenation. ``forward(x, c)`` takes images (B, C, H, W) and a
conditioning scalar of order one per image (EDM's c_noise = log(sigma)/4), embedded with sinusoidal features.
H and W must be divisible by 2^(len(channel_mult) - 1).

Attention within tiles (``Attention``) is set per call: ``forward(x, c, attention_window=pixels)``, or for every
call of one network within a block, ``with net.windowed(pixels):`` (what ``DiffusionPrior`` does, so that
priors sharing one network each keep their own window). ``set_attention_window`` sets the network's own default,
used by calls that state none.
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal(c: torch.Tensor, dim: int, max_freq: float = 100.0) -> torch.Tensor:
    """Sinusoidal features of a scalar of order one (e.g. log(sigma)/4), frequencies 1..max_freq."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0, math.log(max_freq), half, device=c.device))
    args = c.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Own:
    """The default of a window argument: the layer's (or network's) own setting."""

    def __repr__(self):
        return "OWN"


OWN = _Own()
# the windows of the networks called within ``UNet.windowed`` blocks, by id(network): per thread and task
_SCOPED = contextvars.ContextVar("unet_attention_windows", default={})


def _spans(n: int, window: int) -> list:
    """Split 0..n into ceil(n / window) contiguous spans of near-equal length (none longer than ``window``)."""
    k = -(-n // window)
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


class Attention(nn.Module):
    """Self-attention over the positions of a feature map. With ``window`` (positions per side) set and the map
    larger than it, each position attends only within its tile of a grid of near-equal tiles no larger than
    ``window`` per side: on a grid larger than the training one, every tile then sees as many positions as the
    whole training image did (attention over many more positions than trained spreads its weights thinner), and
    the cost grows with the area instead of its square."""

    def __init__(self, ch: int, heads: int = 1):
        super().__init__()
        self.norm, self.qkv, self.out, self.heads = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1), heads
        self.window = None  # the default (positions per side); a call may state its own
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _attend(self, qkv):
        b, _, c, h, w = qkv.shape
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return a.transpose(-1, -2).reshape(b, c, h, w)

    def forward(self, x, window=OWN):
        """``x`` plus attention over its positions, within tiles of ``window`` positions per side (None: the
        whole map; ``OWN``: this layer's ``window``)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h, w)
        win = self.window if window is OWN else window
        if win is None or (h <= win and w <= win):
            return x + self.out(self._attend(qkv))
        rows = [torch.cat([self._attend(qkv[..., r0:r1, c0:c1]) for c0, c1 in _spans(w, win)], dim=-1)
                for r0, r1 in _spans(h, win)]
        return x + self.out(torch.cat(rows, dim=-2))


class UNet(nn.Module):
    registry_name = "unet"

    def __init__(self, in_channels: int = 2, out_channels: int = 2, base: int = 32,
                 channel_mult=(1, 2, 2, 2), num_blocks: int = 2, attn_levels=(3,), dropout: float = 0.0):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base=base,
                           channel_mult=list(channel_mult), num_blocks=num_blocks, attn_levels=list(attn_levels),
                           dropout=dropout)
        emb = 4 * base
        self.emb_dim = base
        self.embed = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(in_channels, base, 3, padding=1)
        chans = [base * m for m in channel_mult]
        self.down, skips, ch = nn.ModuleList(), [base], base
        for lvl, c in enumerate(chans):
            for _ in range(num_blocks):
                self.down.append(nn.ModuleList([ResBlock(ch, c, emb, dropout),
                                                self._attention(c, lvl) if lvl in attn_levels else nn.Identity()]))
                ch = c
                skips.append(ch)
            if lvl < len(chans) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, dropout), self._attention(ch, len(chans) - 1),
                                  ResBlock(ch, ch, emb, dropout)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(chans))):
            c = chans[lvl]
            for _ in range(num_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), c, emb, dropout),
                                              self._attention(c, lvl) if lvl in attn_levels else nn.Identity()]))
                ch = c
            if lvl > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.factor = 2 ** (len(chans) - 1)

    @staticmethod
    def _attention(ch: int, level: int) -> Attention:
        a = Attention(ch)
        a.level = level  # the feature map is 2^level times smaller than the image per side
        return a

    def check_attention_window(self, pixels) -> None:
        """Refuse (ValueError) a window that is neither None nor an int of at least the network's multiple."""
        if pixels is not None and (isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < self.factor):
            raise ValueError(f"the attention window must be an int of at least {self.factor} pixels, got {pixels!r}")

    @staticmethod
    def _layer_window(pixels, level: int):
        """A layer's share of a window of ``pixels`` image pixels: ``pixels / 2^level`` positions of its map."""
        return None if pixels is None else max(1, pixels // 2 ** level)

    def set_attention_window(self, pixels) -> None:
        """Set the network's own default: every attention layer attends within tiles of ``pixels`` image pixels
        per side (its own map's share of them: ``pixels / 2^level`` positions), or over the whole map (None, the
        default), in calls that state no window. Weights are unchanged; on grids no larger than ``pixels`` the
        network computes exactly what it did before."""
        self.check_attention_window(pixels)
        for m in self.modules():
            if isinstance(m, Attention):
                m.window = self._layer_window(pixels, m.level)

    @contextlib.contextmanager
    def windowed(self, pixels):
        """Within the block, calls of this network that state no window attend within tiles of ``pixels`` image
        pixels per side (None: over the whole image), whatever its default; the modules are not changed, and the
        setting holds for the calls made in this thread or task only."""
        self.check_attention_window(pixels)
        token = _SCOPED.set({**_SCOPED.get(), id(self): pixels})
        try:
            yield self
        finally:
            _SCOPED.reset(token)

    def _attend(self, m: nn.Module, h: torch.Tensor, pixels) -> torch.Tensor:
        if pixels is OWN or not isinstance(m, Attention):
            return m(h)
        return m(h, self._layer_window(pixels, m.level))

    def forward(self, x, c, attention_window=OWN):
        """The output for images ``x`` (B, C, H, W) and conditioning ``c``. ``attention_window``: image pixels per
        side of the tiles within which attention runs (None: the whole image); by default the window of the
        enclosing ``windowed`` block, else the network's own (``set_attention_window``)."""
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"UNet needs H and W divisible by {self.factor}, got {tuple(x.shape[-2:])}")
        pixels = _SCOPED.get().get(id(self), OWN) if attention_window is OWN else attention_window
        if pixels is not OWN:
            self.check_attention_window(pixels)
        c = c.reshape(-1).expand(x.shape[0]) if c.numel() == 1 else c.reshape(-1)
        e = self.embed(sinusoidal(c, self.emb_dim))
        h = self.inp(x)
        hs = [h]
        for mods in self.down:
            if len(mods) == 1:
                h = mods[0](h)
            else:
                h = self._attend(mods[1], mods[0](h, e), pixels)
            hs.append(h)
        h = self.mid[2](self._attend(self.mid[1], self.mid[0](h, e), pixels), e)
        for mods in self.up:
            if isinstance(mods[0], nn.Upsample):
                h = mods[1](mods[0](h))
            else:
                h = self._attend(mods[1], mods[0](torch.cat([h, hs.pop()], dim=1), e), pixels)
        return self.out(h)
