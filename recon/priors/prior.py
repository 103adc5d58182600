"""``DiffusionPrior``: one interface for every score network, in variance-exploding coordinates.

For a noisy image x_sigma = x_0 + sigma z the prior answers three equivalent questions
(Tweedie's formula, chapter 7 Lemma 7.1):

    denoise(x, sigma) = E[x_0 | x_sigma]
    score(x, sigma)   = (denoise(x, sigma) - x) / sigma^2
    eps(x, sigma)     = (x - denoise(x, sigma)) / sigma

Images are (..., H, W), complex for MRI or real, or (..., 3, H, W) for rgb. ``DiffusionPrior`` composes:

- the parametrisation (``parametrizations``): the network as a denoiser D(x, sigma) in VE coordinates;
- the channel convention (``channels.ChannelConvention``): images to network channels and back;
- the data normalisation (``normalization.Normalization``): how the training data were scaled, so that samplers
  never hard-code a scale, and the affine map into the network's range of a "range" normalisation;
- the noise levels (``noise.NoiseLevels``): the trained range and the schedules drawn from it;
- the grid policy (``grid.GridPolicy``): padding to the network's multiple, coarse denoising at high noise and
  attention within tiles. ``for_grid`` answers for a grid with a configured view (``configured``): a prior that
  shares the network and its weights and has its own policy; the prior it is asked of is not changed.
"""
from __future__ import annotations

import copy

from dataclasses import asdict
from typing import Optional, Sequence, Union

import torch
from torch import nn

from operators import checks

from . import grid
from .channels import CHANNELS, ChannelConvention, convention
from .noise import NoiseLevels
from .normalization import KINDS, Normalization
from .parametrizations import Denoiser, learned_range_std

__all__ = ["DiffusionPrior", "Normalization", "CHANNELS", "KINDS", "KEEP"]


class _Keep:
    """The default of ``DiffusionPrior.configured``'s arguments: the setting of the prior it is asked of."""

    def __repr__(self):
        return "KEEP"


KEEP = _Keep()


class DiffusionPrior(nn.Module):
    """A denoiser in VE coordinates plus its channel convention (``channels``), noise range (``noise_levels``), data
    normalisation (``normalization``) and grid policy (``grid_policy``: padding, coarse denoising, attention windows).

    The grid policy of a prior is what its config records. For a grid, ``for_grid`` answers with a configured view
    (``configured``): a prior that shares this one's network and weights with its own policy, which the caller
    uses and drops; this prior is not changed."""

    def __init__(self, denoiser: Denoiser, channels: str = "complex", image_size: Optional[tuple] = None,
                 normalization: Optional[Normalization] = None, name: str = "", max_grid: Optional[int] = None,
                 attention_window: Optional[int] = None, coarse: Optional[Sequence] = None):
        super().__init__()
        convention(channels)
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
        self.grid_policy = grid.GridPolicy(grid.check_window(self.network, attention_window, name),
                                    grid.check_coarse(coarse))
        if attention_window is not None:  # the network's own default, for calls made to it directly
            self.network.set_attention_window(attention_window)

    # --- what callers ask instead of reaching into the network -------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The score network inside the parametrisation (shared by the prior's configured views)."""
        return getattr(self.denoiser, "net", None)

    @property
    def convention(self) -> ChannelConvention:
        """The channel convention of ``channels``."""
        return convention(self.channels)

    @property
    def noise_levels(self) -> NoiseLevels:
        """The noise range and schedules, in the prior's units."""
        return NoiseLevels(self.denoiser, self.normalization.affine[1], self.name)

    @property
    def training_grid(self) -> Optional[tuple]:
        """(H, W) of the training images, or None when the prior does not record it."""
        return tuple(int(v) for v in self.image_size[-2:]) if self.image_size else None

    @property
    def any_size(self) -> bool:
        """Whether the network runs on grids other than its training grid (padded to ``size_multiple`` and
        cropped back); False for a network that runs only on its own (``check_grid`` refuses other grids)."""
        return grid.any_size(self.network)

    @property
    def has_attention_window(self) -> bool:
        """Whether the network offers attention within tiles (``configured(attention_window=...)``)."""
        return grid.has_attention_window(self.network)

    @property
    def size_multiple(self) -> int:
        """The network's input sides must be multiples of this (2^(levels - 1) for the UNets)."""
        return grid.size_multiple(self.network)

    def check_grid(self, shape) -> None:
        """Refuse, by name, a grid (H, W) this prior's network cannot run on. Fully convolutional networks run
        on any grid (padded to their multiple); one that records ``any_size = False`` only on its own."""
        grid.check_grid(self.network, shape, self.image_size, self.name)

    # --- grid policy: configured views ---------------------------------------------------------------------
    @property
    def attention_window(self) -> Optional[int]:
        """Image pixels per side of the tiles within which the network attends on larger grids (None: the whole
        image)."""
        return self.grid_policy.attention_window

    @property
    def coarse(self) -> Optional[list]:
        """The coarse denoising levels, ``(above, factor)`` pairs, largest factor first (None: none)."""
        return list(self.grid_policy.coarse) if self.grid_policy.coarse else None

    def configured(self, *, attention_window=KEEP, coarse=KEEP) -> "DiffusionPrior":
        """A view of this prior with its own grid policy: it shares the network, its weights and everything else
        of this prior, and differs only in the settings given (``KEEP``: this prior's). This prior is not changed,
        and the two can be used alternately, each with its own policy.

        ``attention_window``: attend within tiles of this many image pixels per side on larger grids (None: over
        the whole image); only for networks that offer it (``has_attention_window``; others are refused unless
        None). ``coarse``: denoise at high noise on the image pooled ``factor`` x ``factor``, a list of
        ``(above, factor)`` pairs: a noise level sigma above ``above`` is denoised on the image average-pooled by
        ``factor`` (noise sigma / factor there) and the estimate brought back by bilinear upsampling; the largest
        factor whose ``above`` sigma exceeds wins; None or [] denoises every level on the image's own grid.
        Factors must be integers >= 2 and thresholds finite and > 0.

        At high noise the fine scales of x carry no information about the image, so the pooled image holds what
        the Tweedie estimate needs, and a network trained on a small grid sees a large image whole, at a pixel
        scale its training covered (experiments/RESULTS.md, "Coarse denoising at high noise")."""
        policy = self.grid_policy
        if attention_window is not KEEP:
            policy = policy.replace(attention_window=grid.check_window(self.network, attention_window, self.name))
        if coarse is not KEEP:
            policy = policy.replace(coarse=grid.check_coarse(coarse))
        return self._view(policy)

    def for_grid(self, shape, *, limited_angle: bool = False, coarse: bool = False) -> "DiffusionPrior":
        """A view of this prior (``configured``) with the grid policy for images on ``shape`` (..., H, W; None:
        this prior's own policy). What this prior records wins; otherwise (``grid.policy_for_grid``):

        - attention within tiles of the training grid's side on a grid larger than the training grid, for a
          network that offers it, unless ``limited_angle`` (measurements that leave a wedge of directions
          unmeasured, as CT views over less than the full angle), which the network fills better seeing the
          whole image;
        - with ``coarse`` (denoising at high noise on a pooled image, for reconstructions on large grids),
          the levels of ``grid.COARSE_ABOVE`` (``grid.COARSE_ABOVE_LIMITED`` with ``limited_angle``) whose pooled
          grid is still at least the training grid; without it, only the levels this prior records.

        The grid itself is not checked here (``check_grid``)."""
        return self._view(grid.policy_for_grid(self.grid_policy, self.training_grid, self.has_attention_window, shape,
                                               limited_angle=limited_angle, coarse=coarse))

    def with_network(self, net: nn.Module) -> "DiffusionPrior":
        """A view of this prior whose parametrisation calls ``net`` instead of its network (a wrapper of it: a
        compiled, reduced-precision or instrumented call with the same inputs and outputs); this prior is not
        changed."""
        denoiser = copy.copy(self.denoiser)
        denoiser._modules = dict(denoiser._modules, net=net)
        return self._view(self.grid_policy, denoiser)

    def _view(self, policy: grid.GridPolicy, denoiser: Optional[nn.Module] = None) -> "DiffusionPrior":
        view = DiffusionPrior(self.denoiser if denoiser is None else denoiser, self.channels, self.image_size,
                              self.normalization, self.name, self.max_grid)
        view.grid_policy = policy
        view.training = self.training
        return view

    # --- noise range and schedules ---------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return self.noise_levels.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.noise_levels.sigma_max

    def sigmas(self, n: int, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
        """A decreasing schedule of n levels over the prior's trained range (``noise.NoiseLevels.sigmas``:
        "karras", "geometric", "auto" or "leading")."""
        return self.noise_levels.sigmas(n, kind, rho)

    # --- the three questions -----------------------------------------------------------------------
    @property
    def image_ndim(self) -> int:
        """Trailing dimensions of one image: 3 for rgb (3, H, W), else 2 (H, W)."""
        return self.convention.image_ndim

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
        """Check the inputs, map the images to network channels (``convention``), run ``_net`` on them within
        this prior's attention window, and map the estimate back to images of ``x``'s shape and dtype."""
        x = checks.as_tensor("denoise: x", x).resolve_conj()
        s_chk = torch.as_tensor(sigma).detach()
        if s_chk.is_complex() or not bool((torch.isfinite(s_chk) & (s_chk > 0)).all()):
            raise ValueError(f"sigma must be finite and > 0, got {s_chk.tolist() if s_chk.numel() < 5 else s_chk}")
        if not checks.is_finite(x):
            raise ValueError("denoise: x contains NaN or Inf")
        conv = self.convention
        conv.check(x)
        nd = conv.image_ndim
        lead, img = x.shape[:-nd], tuple(x.shape[-nd:])
        sig = self._sigma(sigma, lead, x.device)
        xb = x.reshape((-1,) + img)
        with grid.windowed(self.network, self.grid_policy.attention_window):
            out = conv.apply(self._net, xb, sig, variance)
        if variance:
            return tuple(t.reshape(x.shape).to(x.dtype) for t in out)
        return out.reshape(x.shape).to(x.dtype)

    def _net(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False):
        """The denoiser on network channels, through the normalisation's affine map (identity unless "range",
        ``Normalization.network_call``), pooled at high noise (``coarse``), on the grid the network needs
        (``_padded``). With ``variance``: (estimate, the network's variance channels)."""
        return self.normalization.network_call(self._scaled, u, sig, variance)

    def _scaled(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False) -> torch.Tensor:
        """(B, C, H, W) denoised at noise ``sig`` (network units), each item at its pooling factor
        (``grid.pool_factors``): items of one factor together, on the pooled image (``_pooled``) or the image's
        own grid (``_padded``)."""
        levels = self.grid_policy.coarse
        if not levels:
            return self._padded(u, sig, variance)
        f = grid.pool_factors(levels, sig, self.normalization.affine[1])
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
        then upsample the estimate bilinearly to the image's grid (``grid.pool``, ``grid.unpool``). A side that is
        not a multiple of the factor is padded by replication first; a grid that pooling would shrink below one
        pixel is denoised as it is."""
        h, w = u.shape[-2:]
        if h < factor or w < factor:
            return self._padded(u, sig, variance)
        d = self._padded(grid.pool(u, factor), sig / factor, variance)
        return grid.unpool(d, factor, (h, w))

    def _padded(self, u: torch.Tensor, sig: torch.Tensor, variance: bool = False) -> torch.Tensor:
        """Pad (B, C, H, W) by reflection to the network's multiple, denoise, crop back (``grid.padding``,
        ``grid.pad``, ``grid.crop``). Reflection keeps the noise statistics at the border (zeros would be a
        noise-free region the network never saw)."""
        net = self.denoiser.forward_variance if variance else self.denoiser
        h, w = u.shape[-2:]
        pads = grid.padding((h, w), self.size_multiple)
        if pads is None:
            return net(u, sig)
        self.check_grid((h, w))
        return grid.crop(net(grid.pad(u, pads), sig), pads, (h, w))

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
