"""``DiffusionPrior``: one interface for every score network, in variance-exploding coordinates.

For a noisy image x_sigma = x_0 + sigma z the prior answers three equivalent questions
(Tweedie's formula, chapter 7 Lemma 7.1):

    denoise(x, sigma) = E[x_0 | x_sigma]
    score(x, sigma)   = (denoise(x, sigma) - x) / sigma^2
    eps(x, sigma)     = (x - denoise(x, sigma)) / sigma

Images are (..., H, W), complex for MRI or real. The channel convention maps them to the network:
"complex" -> 2 channels (Re, Im); "magnitude" -> a 1-channel real network applied to Re and Im
separately (Score-MRI's trick, chapter 7 Alg. 7.1); "real" -> 1 channel; "rgb" -> a real (..., 3, H, W)
batch as 3 channels (natural-image priors such as DPS's FFHQ/ImageNet models; the image shape is (3, H, W)).
``Normalization`` records how the training data were scaled, so that samplers never hard-code a scale.

A "range" normalisation also records an affine map into the network's range: the prior works on
u = x / scale in [0, 1] and the network on v = lo + (hi - lo) u (DPS: v = 2u - 1 in [-1, 1]). Noise maps with it,
v_sigma = v + (hi - lo) sigma z, so denoise(u, sigma) = (D_net(lo + g u, g sigma) - lo) / g with g = hi - lo, and
the prior's noise range is the network's divided by g; samplers see only u.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

from operators import checks

from . import schedules
from .parametrizations import Denoiser, learned_range_std

CHANNELS = ("complex", "magnitude", "real", "rgb")
KINDS = ("percentile", "max", "fixed", "none", "range")


@dataclass
class Normalization:
    """How training images were scaled: x_train = x / scale, with scale from the image itself.

    kind "percentile": scale = the q-th percentile of |x| (per image); "max": scale = max |x|;
    "fixed": scale = ``value`` (data in physical units, e.g. CT in mu / mu_water); "none": scale = 1;
    "range": scale = ``value`` (data in [0, value]), and the network's input is lo + (hi - lo) x / scale
    (``affine``; DPS: [0, 1] images to [-1, 1] with lo = -1, hi = 1).
    At reconstruction the scale is taken from the operator's pseudo-inverse image A^+ y (``Linop.pinv``:
    SENSE-combined zero-filled for MRI, FBP for CT), which does not change when (y, A) becomes (c y, c A)."""

    kind: str = "percentile"
    q: float = 99.0
    value: float = 1.0
    lo: float = -1.0
    hi: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"normalization kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 < self.q <= 100:
            raise ValueError(f"percentile q must be in (0, 100], got {self.q}")
        if self.kind == "range" and not (self.hi > self.lo and self.value > 0):
            raise ValueError(f"a range normalization needs hi > lo and value > 0, got lo={self.lo}, hi={self.hi}, "
                             f"value={self.value}")

    @property
    def affine(self) -> tuple:
        """(offset, gain) of the map from the prior's coordinates u = x / scale to the network's, lo + (hi - lo) u
        for kind "range", (0, 1) otherwise."""
        return (float(self.lo), float(self.hi - self.lo)) if self.kind == "range" else (0.0, 1.0)

    def scale(self, ref: torch.Tensor, ndim: int = 2) -> torch.Tensor:
        """Scale of ``ref`` over its last ``ndim`` dimensions (one image: 2; a stack or coil images taken as
        one image: 3), shaped ``ref.shape[:-ndim] + (1,) * ndim``."""
        if ref.dim() < ndim:
            raise ValueError(f"the reference image needs at least {ndim} dimensions, got shape {tuple(ref.shape)}")
        lead = ref.shape[: ref.dim() - ndim]
        ones = (1,) * ndim
        if self.kind in ("fixed", "none", "range"):
            v = 1.0 if self.kind == "none" else self.value
            return torch.full(lead + ones, v, dtype=ref.real.dtype, device=ref.device)
        mag = ref.abs().reshape(lead + (-1,)).float()
        s = mag.amax(-1) if self.kind == "max" else torch.quantile(mag, self.q / 100, dim=-1)
        return s.clamp_min(torch.finfo(s.dtype).tiny).reshape(lead + ones).to(ref.real.dtype)


class DiffusionPrior(nn.Module):
    """A denoiser in VE coordinates plus its channel convention, noise range and data normalisation."""

    def __init__(self, denoiser: Denoiser, channels: str = "complex", image_size: Optional[tuple] = None,
                 normalization: Optional[Normalization] = None, name: str = "", max_grid: Optional[int] = None,
                 attention_window: Optional[int] = None, coarse: Optional[Sequence] = None):
        super().__init__()
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
        normalization = normalization or Normalization("none")
        if normalization.kind == "range" and channels not in ("real", "rgb"):
            raise ValueError(f"a 'range' normalization (an offset) is for real or rgb images, not channels={channels!r}")
        image_size = tuple(image_size) if image_size is not None else None
        if channels == "rgb" and image_size is not None and (len(image_size) != 3 or image_size[0] != 3):
            raise ValueError(f"the image size of an rgb prior is (3, H, W), got {image_size}")
        self.denoiser = denoiser
        self.channels = channels
        self.image_size = image_size
        self.normalization = normalization
        self.name = name
        if max_grid is not None and (isinstance(max_grid, bool) or not isinstance(max_grid, int) or max_grid < 2):
            raise ValueError(f"max_grid must be an int >= 2 (pixels per side), got {max_grid!r}")
        # the largest grid (pixels per side) whose pixel scale the training covered, for a prior trained on
        # zoomed crops; None: not recorded (the commands then assume a small multiple of image_size)
        self.max_grid = max_grid
        self.attention_window = None
        if attention_window is not None:
            self.set_attention_window(attention_window)
        self.coarse = None
        self.set_coarse(coarse)

    def set_coarse(self, levels: Optional[Sequence]) -> None:
        """Denoise at high noise on the image pooled ``factor`` x ``factor``: ``levels`` is a list of
        ``(above, factor)`` pairs; a noise level sigma above ``above`` is denoised on the image average-pooled by
        ``factor`` (noise sigma / factor there) and the estimate is brought back by bilinear upsampling. The largest
        factor whose ``above`` sigma exceeds wins. None or [] denoises every level on the image's own grid.

        At such noise the fine scales of x carry no information about the image, so the pooled image holds what
        the Tweedie estimate needs, and a network trained on a small grid sees a large image whole, at a pixel
        scale its training covered (experiments/RESULTS.md, "Coarse denoising at high noise"). Factors must be
        integers >= 2 and thresholds finite and > 0."""
        if not levels:
            self.coarse = None
            return
        out = []
        for item in levels:
            try:
                above, factor = item
            except (TypeError, ValueError):
                raise ValueError(f"coarse levels are (above, factor) pairs, got {item!r}") from None
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
                raise ValueError(f"a coarse factor must be an int >= 2, got {factor!r}")
            if isinstance(above, bool) or not isinstance(above, (int, float)) or not math.isfinite(above) \
                    or above <= 0:
                raise ValueError(f"a coarse threshold must be a finite sigma > 0, got {above!r}")
            out.append((float(above), int(factor)))
        if len({f for _, f in out}) != len(out):
            raise ValueError(f"each coarse factor may appear once, got {levels!r}")
        self.coarse = sorted(out, key=lambda t: -t[1])

    def set_attention_window(self, pixels: Optional[int]) -> None:
        """Attend within tiles of ``pixels`` image pixels per side on larger grids (None: over the whole image).
        Only for networks that offer it (the bundled UNets, ``UNet.set_attention_window``); others are refused."""
        net = getattr(self.denoiser, "net", None)
        if not hasattr(net, "set_attention_window"):
            raise ValueError(f"the network of prior {self.name!r} ({type(net).__name__}) has no windowed attention; "
                             f"attention_window must be None")
        net.set_attention_window(pixels)
        self.attention_window = pixels

    # --- noise range and schedules ---------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return self.denoiser.sigma_min / self.normalization.affine[1]

    @property
    def sigma_max(self) -> float:
        return self.denoiser.sigma_max / self.normalization.affine[1]

    def sigmas(self, n: int, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
        """A decreasing schedule of n levels over the prior's trained range: "karras" (EDM's rho-schedule),
        "geometric", or "auto": for a network with discrete timesteps (DDPM/ADM) ``n`` evenly spaced levels of
        its own ladder from its last timestep T - 1 to 0 (rounded, as guided-diffusion's ``space_timesteps``),
        otherwise "karras"; "leading" (discrete ladders only): the timesteps (n - 1) k, ..., k, 0 with the stride
        k = T // n (DDIM's "uniform" skip, ``range(0, T, k)``, as the DDS code steps)."""
        if n < 1:
            raise ValueError(f"a schedule needs at least 1 level, got {n}")
        ladder = self.denoiser.discrete_sigmas
        if kind == "leading":
            if ladder is None or n > len(ladder):
                raise ValueError(f"a 'leading' schedule needs a network with discrete timesteps and n <= their "
                                 f"number, got n={n} for prior {self.name!r}")
            idx = torch.arange(n - 1, -1, -1) * (len(ladder) // n)
            return ladder[idx].double() / self.normalization.affine[1]
        if kind == "auto" and ladder is not None:
            idx = torch.linspace(len(ladder) - 1, 0, n).round().long()
            return ladder[idx].double() / self.normalization.affine[1]
        if kind in ("karras", "auto"):
            return schedules.karras_sigmas(self.sigma_min, self.sigma_max, n, rho)
        if kind == "geometric":
            return schedules.geometric_sigmas(self.sigma_min, self.sigma_max, n)
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'auto', 'leading', 'karras' or 'geometric'")

    # --- the three questions -----------------------------------------------------------------------
    @property
    def image_ndim(self) -> int:
        """Trailing dimensions of one image: 3 for rgb (3, H, W), else 2 (H, W)."""
        return 3 if self.channels == "rgb" else 2

    def denoise(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        """Tweedie estimate E[x_0 | x] for x = x_0 + sigma z, for a batch (..., H, W) ((..., 3, H, W) for rgb).
        ``x`` must be finite and ``sigma`` finite and > 0 (ValueError otherwise; ``score`` and ``eps`` too)."""
        return self._denoise(x, sigma, False)

    def denoise_with_variance(self, x: torch.Tensor, sigma: float, sigma_next: float):
        """(denoise(x, sigma), std): std is the per-pixel noise std of the ancestral step from ``sigma`` to
        ``sigma_next`` (both in the prior's units, as the result) under the variance the network learned
        (Nichol & Dhariwal's "learned_range", ``parametrizations.learned_range_std``; 0 for sigma_next = 0),
        from the same network evaluation. For real or rgb priors whose network learned its variance (the ADM
        checkpoints of guided-diffusion, DPS and DDS); others are refused."""
        if self.channels not in ("real", "rgb"):
            raise ValueError(f"the learned variance is available for real or rgb priors, "
                             f"not channels={self.channels!r}")
        d, v = self._denoise(x, sigma, True)
        gain = self.normalization.affine[1]
        return d, learned_range_std(v, gain * float(sigma), gain * float(sigma_next)) / gain

    def _denoise(self, x, sigma, variance: bool):
        x = checks.as_tensor("denoise: x", x).resolve_conj()
        s_chk = torch.as_tensor(sigma).detach()
        if s_chk.is_complex() or not bool((torch.isfinite(s_chk) & (s_chk > 0)).all()):
            raise ValueError(f"sigma must be finite and > 0, got {s_chk.tolist() if s_chk.numel() < 5 else s_chk}")
        if not checks.is_finite(x):
            raise ValueError("denoise: x contains NaN or Inf")
        nd = self.image_ndim
        if nd == 3 and (x.dim() < 3 or x.shape[-3] != 3):
            raise ValueError(f"an rgb prior denoises (..., 3, H, W) images, got shape {tuple(x.shape)}")
        lead, img = x.shape[:-nd], tuple(x.shape[-nd:])
        sig = self._sigma(sigma, lead, x.device)
        xb = x.reshape((-1,) + img)
        if self.channels == "complex":
            if not x.is_complex():
                xb = xb.to(torch.complex64)
            net_in = torch.view_as_real(xb).permute(0, 3, 1, 2)
            out = self._net(net_in.contiguous(), sig)
            d = torch.complex(out[:, 0], out[:, 1])
        elif self.channels == "magnitude" and x.is_complex():
            parts = torch.cat([xb.real, xb.imag])[:, None]
            out = self._net(parts, sig.repeat(2))[:, 0]
            n = xb.shape[0]
            d = torch.complex(out[:n], out[n:])
        else:
            if x.is_complex():
                raise ValueError("a real-valued prior cannot denoise a complex image; pass a real image")
            if variance:
                d, v = self._net(xb if nd == 3 else xb[:, None], sig, True)
                return tuple(t.reshape(x.shape).to(x.dtype) for t in (d, v))
            d = self._net(xb, sig) if nd == 3 else self._net(xb[:, None], sig)[:, 0]
        return d.reshape(x.shape).to(x.dtype)

    def _net(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False):
        """The denoiser on network channels, through the normalisation's affine map (identity unless "range"),
        pooled at high noise (``set_coarse``), on the grid the network needs (``_padded``). With ``variance``:
        (estimate, the network's variance channels)."""
        off, gain = self.normalization.affine
        if variance:
            out = self._scaled(off + gain * u, gain * sig, True)
            c = u.shape[1]
            return (out[:, :c] - off) / gain, out[:, c:]
        if (off, gain) == (0.0, 1.0):
            return self._scaled(u, sig)
        return (self._scaled(off + gain * u, gain * sig) - off) / gain

    def _factors(self, sig: torch.Tensor) -> torch.Tensor:
        """The pooling factor (1: none) for each noise level of the batch, in network units."""
        f = torch.ones(sig.shape, dtype=torch.long)
        if self.coarse:
            gain = self.normalization.affine[1]
            s = sig.detach().cpu().double() / gain
            for above, factor in reversed(self.coarse):  # smallest factor first; larger ones overwrite
                f[s > above] = factor
        return f

    def _scaled(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False) -> torch.Tensor:
        if not self.coarse:
            return self._padded(u, sig, variance)
        f = self._factors(sig)
        if bool((f == f[0]).all()):  # one factor for the whole batch (a sampler's step): no regrouping
            factor = int(f[0])
            return self._padded(u, sig, variance) if factor == 1 else self._pooled(u, sig, factor, variance)
        out = None
        for factor in f.unique().tolist():
            idx = (f == factor).nonzero()[:, 0].to(u.device)
            ub, sb = u.index_select(0, idx), sig.index_select(0, idx)
            part = self._padded(ub, sb, variance) if factor == 1 else self._pooled(ub, sb, factor, variance)
            if out is None:
                out = part.new_empty((u.shape[0],) + tuple(part.shape[1:]))
            out[idx] = part
        return out

    def _pooled(self, u: torch.Tensor, sig: torch.Tensor, factor: int, variance: bool = False) -> torch.Tensor:
        """Denoise (B, C, H, W) at noise ``sig`` on the image average-pooled by ``factor`` (noise sig / factor),
        then upsample the estimate bilinearly to the image's grid. A side that is not a multiple of the factor is
        padded by replication first; a grid that pooling would shrink below one pixel is denoised as it is."""
        F = torch.nn.functional
        h, w = u.shape[-2:]
        if h < factor or w < factor:
            return self._padded(u, sig, variance)
        ph, pw = -h % factor, -w % factor
        up = F.pad(u, (0, pw, 0, ph), mode="replicate") if ph or pw else u
        small = F.avg_pool2d(up, factor)
        d = self._padded(small, sig / factor, variance)
        big = F.interpolate(d, scale_factor=factor, mode="bilinear", align_corners=False)
        return big[..., :h, :w]

    @property
    def size_multiple(self) -> int:
        """The network's input sides must be multiples of this (2^(levels - 1) for the UNets)."""
        net = self.denoiser.net
        m = getattr(net, "size_multiple", None)
        if m is None:
            cfg = getattr(net, "config", {}) or {}
            mult = cfg.get("ch_mult", cfg.get("channel_mult"))
            m = 2 ** (len(mult) - 1) if mult else 1
        return int(m)

    def check_grid(self, shape) -> None:
        """Refuse, by name, a grid (H, W) this prior's network cannot run on. Fully convolutional networks run
        on any grid (padded to their multiple); one that records ``any_size = False`` only on its own."""
        net = self.denoiser.net
        h, w = (int(v) for v in tuple(shape)[-2:])
        if getattr(net, "any_size", True) is False and self.image_size and (h, w) != tuple(self.image_size):
            raise ValueError(f"the prior {self.name or type(net).__name__!r} ({type(net).__name__}) runs only on its "
                             f"training grid {tuple(self.image_size)}, not on {(h, w)}; use a protocol that crops "
                             f"to it (--protocol image-crop or kspace-crop)")

    def _padded(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False) -> torch.Tensor:
        """Pad (B, C, H, W) by reflection to the network's multiple, denoise, crop back. Reflection keeps the
        noise statistics at the border (zeros would be a noise-free region the network never saw)."""
        net = self.denoiser.forward_variance if variance else self.denoiser
        m = self.size_multiple
        h, w = u.shape[-2:]
        ph, pw = -h % m, -w % m
        if ph == 0 and pw == 0:
            return net(u, sig)
        self.check_grid((h, w))
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        mode = "reflect" if ph < h and pw < w else "replicate"
        out = net(torch.nn.functional.pad(u, pad, mode=mode), sig)
        return out[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = self._sigma_b(sigma, x)
        return (self.denoise(x, sigma) - x) / s ** 2

    def eps(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = self._sigma_b(sigma, x)
        return (x - self.denoise(x, sigma)) / s

    forward = denoise

    # --- data scaling --------------------------------------------------------------------------
    def data_scale(self, y: torch.Tensor, A) -> torch.Tensor:
        """The scale that maps measured data to the training range, from the pseudo-inverse image A^+ y over
        the operator's whole input (shaped ``batch + (1,) * len(A.ishape)``)."""
        return self.normalization.scale(A.pinv(y), ndim=len(A.ishape))

    def normalize(self, x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        return x / self.data_scale(y, A)

    def denormalize(self, x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        return x * self.data_scale(y, A)

    # --- helpers -------------------------------------------------------------------------------
    def _sigma(self, sigma, lead, device) -> torch.Tensor:
        n = 1
        for d in lead:
            n *= d
        s = torch.as_tensor(sigma, dtype=torch.float32, device=device)
        if s.numel() == 1:
            return s.reshape(1).expand(n)
        if tuple(s.shape) != tuple(lead):
            raise ValueError(f"sigma must be a scalar or have the batch shape {tuple(lead)}, got {tuple(s.shape)}")
        return s.reshape(n)

    def _sigma_b(self, sigma, x) -> torch.Tensor:
        s = torch.as_tensor(sigma, device=x.device, dtype=x.real.dtype)
        return s.reshape(s.shape + (1,) * self.image_ndim) if s.dim() else s

    def config(self) -> dict:
        return {"channels": self.channels, "image_size": list(self.image_size) if self.image_size else None,
                "normalization": asdict(self.normalization), "parametrization": self.denoiser.config(),
                "name": self.name, **({"max_grid": self.max_grid} if self.max_grid else {}),
                **({"attention_window": self.attention_window} if self.attention_window else {}),
                **({"coarse": [list(t) for t in self.coarse]} if self.coarse else {})}
