"""Cartesian MRI forward models.

With F the centered orthonormal 2-D FFT (``operators.fft``), P a real sampling mask and S_c coil
sensitivity maps:

    SingleCoilMRI(mask):        y = P F x,        x: (..., H, W)      -> y: (..., H, W)
    MultiCoilMRI(maps, mask):   y_c = P F S_c x,  x: (..., H, W)      -> y: (..., C, H, W)   (SENSE)
    CoilwiseMRI(mask):          y_c = P F x_c,    x: (..., C, H, W)   -> y: (..., C, H, W)

Adjoints: F^H P y, sum_c conj(S_c) F^H P y_c, and F^H P y_c per coil. The normal operators use
P^H P = P^2, so weighted (non-binary) masks are exact too.

The operator contract (``operators.linop``): ``norm()`` is max|P| for the single-coil and coil-wise models
(F is unitary) and a power iteration for SENSE; ``pinv(y)`` is F^H P^+ y (P^+ = 1/P where P > 0, else 0),
for SENSE combined over the coils, sum_c conj(S_c) F^H P^+ y_c / sum_c |S_c|^2 (0 where no coil sees the
pixel); ``support`` of SENSE is where sum_c |S_c|^2 > 0; the coil-wise model's ``combine`` is the
root-sum-of-squares over the coils. For CUDA tensors the SENSE normal operator runs
the fused CuPy kernels (``kernels.sense``) when they are usable.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

import kernels

from .fft import fft2c, ifft2c
from .checks import as_tensor
from .linop import Linop, ShapeError, check_shape


def as_mask(mask, name: str = "mask") -> torch.Tensor:
    """Validate a sampling mask and return it as a real float tensor with at least 2 dims.

    A 1-D mask of length W is a line mask and becomes ``(1, W)``."""
    mask = torch.as_tensor(mask)
    if mask.is_complex():
        raise ValueError(f"{name} must be real (0/1 or non-negative weights), got dtype {mask.dtype}")
    if mask.dtype == torch.bool or not mask.is_floating_point():
        mask = mask.float()
    if mask.dim() == 0:
        raise ShapeError(f"{name} must have at least 1 dimension (a line mask (W,) or (1, W), or (H, W)), got a scalar")
    if mask.dim() == 1:
        mask = mask[None, :]
    if not torch.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if (mask < 0).any():
        raise ValueError(f"{name} must be non-negative")
    return mask


def _broadcast_to(mask: torch.Tensor, shape: tuple, what: str) -> None:
    try:
        out = torch.broadcast_shapes(tuple(mask.shape), shape)
    except RuntimeError:
        out = None
    if out != shape:
        raise ShapeError(f"mask of shape {tuple(mask.shape)} does not broadcast to {what} of shape {shape}")


def _mask_pinv(mask: torch.Tensor) -> torch.Tensor:
    """P^+: 1/P where P > 0, 0 elsewhere."""
    return torch.where(mask > 0, 1 / torch.where(mask > 0, mask, torch.ones_like(mask)), torch.zeros_like(mask))


NOISE_BLOCKS = 8  # k-space is cut into NOISE_BLOCKS x NOISE_BLOCKS blocks for the noise estimate
NOISE_MIN_SAMPLES = 64
NOISE_PICK = 2    # the blocks of least energy the estimate pools


def kspace_noise_std(y: torch.Tensor, mask: torch.Tensor, coil_dims: int = 0, blocks: int = NOISE_BLOCKS,
                     pick: int = NOISE_PICK) -> Optional[torch.Tensor]:
    """The noise std of measured Cartesian k-space, per batch element, from the blocks of k-space with the least
    energy.

    Noise is white in k-space and the object's energy falls off away from the centre, so in the outer blocks
    |y|^2 is mostly noise. For complex Gaussian noise of std s (E|n|^2 = s^2), |n|^2 / s^2 is Exp(1), whose
    median is ln 2. k-space is cut into ``blocks`` x ``blocks`` blocks and its samples into two interleaved
    halves (the parity of row + column). The ``pick`` blocks whose first half has the smallest median |y|^2
    are chosen, and the estimate is median(|y|^2) / ln 2 over the second half of those blocks: choosing and
    measuring on independent samples keeps the choice from biasing the estimate low. Only measured samples
    count (mask > 0 and y != 0, so zero-padded and dead lines do not), all coils together, and only blocks
    with at least ``NOISE_MIN_SAMPLES`` in each half (the blocks are made coarser until ``pick`` of them
    have that many). An object with energy in every block gives an upper bound. ``y`` is (..., [coils], H,
    W) with ``coil_dims`` coil dimensions before the plane; the result has y's other leading dimensions (None
    if no block has enough samples)."""
    h, w = y.shape[-2:]
    rows, cols = torch.arange(h, device=y.device), torch.arange(w, device=y.device)
    half = ((rows[:, None] + cols[None, :]) % 2).bool().reshape(-1)
    keep = y.dim() - 2 - coil_dims
    e = y.abs().square().reshape(y.shape[:keep] + (-1, h * w))
    m = torch.broadcast_to(mask > 0, y.shape).reshape(e.shape)

    def groups(n):
        return (((rows * n) // h)[:, None] * n + ((cols * n) // w)[None, :]).reshape(-1), n * n
    return grouped_noise_std(e, m, groups, half, blocks, pick)


def grouped_noise_std(e: torch.Tensor, measured: torch.Tensor, groups, half: torch.Tensor, n: int,
                      pick: int = NOISE_PICK) -> Optional[torch.Tensor]:
    """The core of the k-space noise estimates. ``e`` (..., C, N): |y|^2 of N sample positions for C coils;
    ``measured`` like ``e``; ``groups(n)`` -> (group id of each position (N,), number of groups), coarser for
    smaller n; ``half`` (N,) bool splits the positions into two interleaved halves. Returns the std of shape
    ``e.shape[:-2]`` (None if no group has enough samples); see ``kspace_noise_std``."""
    lead = e.shape[:-2]
    e = e.reshape((-1,) + e.shape[-2:])
    m = measured.reshape(e.shape) & (e > 0)
    out = torch.empty(e.shape[0], dtype=e.dtype, device=e.device)
    for b in range(e.shape[0]):
        k = n
        while True:  # coarser groups where sparse sampling leaves too few samples in each
            gid, count = groups(k)
            first, second = [], []
            for g in range(count):
                sel = m[b] & (gid == g)
                a, c = e[b][sel & ~half], e[b][sel & half]
                if a.numel() >= NOISE_MIN_SAMPLES and c.numel() >= NOISE_MIN_SAMPLES:
                    first.append(float(a.median()))
                    second.append(c)
            if len(first) >= min(pick, count) or k == 1:
                break
            k //= 2
        if not first:
            return None
        order = sorted(range(len(first)), key=first.__getitem__)[:pick]
        out[b] = torch.cat([second[i] for i in order]).median() / math.log(2.0)
    return out.sqrt().reshape(lead)


def _noise_std(op: Linop, y, coil_dims: int) -> Optional[torch.Tensor]:
    y = as_tensor(f"the input of {op.name}.noise_std", y)
    check_shape(y, op.oshape, f"{op.name}.noise_std")
    return kspace_noise_std(y, op.mask, coil_dims=coil_dims)


def _plane(mask: torch.Tensor) -> tuple:
    """The (H, W) a mask fixes: H is free (None) for a line mask (1, W)."""
    h, w = mask.shape[-2:]
    return (None if h == 1 else h, w)


class SingleCoilMRI(Linop):
    """y = P F x: masked centered 2-D Fourier transform of a (complex) image."""

    sampling = "cartesian"

    def __init__(self, mask, shape: Optional[tuple] = None):
        self.mask = as_mask(mask)
        plane = _plane(self.mask) if shape is None else tuple(shape)
        if shape is not None:
            _broadcast_to(self.mask, tuple(self.mask.shape[:-2]) + tuple(shape), "k-space")
        lead = tuple(self.mask.shape[:-2])
        super().__init__(lead + plane, lead + plane)

    def _apply(self, x):
        return self.mask * fft2c(x)

    def _adjoint(self, y):
        return ifft2c(self.mask * y)

    def _normal(self, x):
        return ifft2c(self.mask.square() * fft2c(x))

    pinv_method = "zero-filled"

    def norm(self, like=None) -> float:
        return float(self.mask.max()) if self.mask.numel() else 0.0

    def _pinv(self, y):
        return ifft2c(_mask_pinv(self.mask) * y)

    def noise_std(self, y):
        """Noise std of the k-space ``y`` from its outer blocks (``kspace_noise_std``), per batch element."""
        return _noise_std(self, y, self._coil_dims)

    _coil_dims = 0


class CoilwiseMRI(SingleCoilMRI):
    """y_c = P F x_c: each coil image sampled independently (Score-MRI's coil-wise variant).

    ``n_coils`` fixes the coil dimension of the input shape; ``None`` accepts any number of coils."""

    def __init__(self, mask, n_coils: Optional[int] = None, shape: Optional[tuple] = None):
        super().__init__(mask, shape)
        m = self.mask
        if m.dim() >= 3 and m.shape[-3] not in (1, n_coils) and n_coils is not None:
            raise ShapeError(f"mask of shape {tuple(m.shape)} does not broadcast to {n_coils} coils")
        plane = self.ishape[-2:]
        lead = tuple(m.shape[:-3]) if m.dim() >= 3 else ()
        self.ishape = self.oshape = lead + (n_coils,) + plane

    def combine(self, x):
        """Root-sum-of-squares over the coils (Score-MRI's SSOS), as a complex tensor with zero phase."""
        return x.abs().square().sum(dim=-3).sqrt().to(x.dtype)

    _coil_dims = 1


class MultiCoilMRI(Linop):
    """y_c = P F S_c x (SENSE); adjoint sum_c conj(S_c) F^H P y_c.

    ``maps`` is ``(..., C, H, W)`` complex (leading dims, e.g. slices, are kept in the shapes);
    ``mask`` must broadcast to the maps' shape."""

    sampling = "cartesian"

    def __init__(self, maps: torch.Tensor, mask):
        maps = torch.as_tensor(maps)
        if maps.dim() < 3:
            raise ShapeError(f"maps must have shape (..., C, H, W), got {tuple(maps.shape)}")
        if not maps.is_complex():
            maps = maps.to(torch.complex64)
        if not torch.isfinite(torch.view_as_real(maps)).all():
            raise ValueError("maps contain NaN or Inf")
        self.maps = maps
        self.mask = as_mask(mask)
        _broadcast_to(self.mask, tuple(maps.shape), "the maps/k-space")
        lead, (c, h, w) = tuple(maps.shape[:-3]), maps.shape[-3:]
        super().__init__(lead + (h, w), lead + (c, h, w))

    @property
    def n_coils(self) -> int:
        return self.maps.shape[-3]

    @property
    def support(self) -> torch.Tensor:
        """Pixels some coil sees (sum_c |S_c|^2 > 0), e.g. the object region of ESPIRiT maps with a crop;
        outside it the model predicts no signal, so the MVUE there is 0."""
        return self.maps.abs().square().sum(dim=-3) > 0

    def _apply(self, x):
        return self.mask * fft2c(self.maps * x.unsqueeze(-3))

    def _adjoint(self, y):
        return (self.maps.conj() * ifft2c(self.mask * y)).sum(dim=-3)

    pinv_method = "sense-zero-filled"

    def _pinv(self, y):
        w = self.maps.abs().square().sum(dim=-3)
        inv = torch.where(w > 0, 1 / torch.where(w > 0, w, torch.ones_like(w)), torch.zeros_like(w))
        return (self.maps.conj() * ifft2c(_mask_pinv(self.mask) * y)).sum(dim=-3) * inv

    def noise_std(self, y):
        """Noise std of the k-space ``y`` from its outer blocks (``kspace_noise_std``, all coils together),
        per batch element (slice)."""
        return _noise_std(self, y, 1)

    def _normal(self, x):
        out = kernels.sense.normal(x, self.maps, self.mask)  # CUDA kernels; None: the torch reference below
        if out is not None:
            return out
        k = self.mask.square() * fft2c(self.maps * x.unsqueeze(-3))
        return (self.maps.conj() * ifft2c(k)).sum(dim=-3)
