"""Native fastMRI geometry: the three protocols the field uses to put raw k-space onto a reconstruction grid.

Raw fastMRI k-space is ``(C, H, W)`` with the readout (H) oversampled 2x (knee 640 x 368..372, brain
640 x 320, 768 x 396, ...), phase-encode lines (W) that are exactly zero at the edges ("dead" lines: outside the
header's ``kspace_encoding_step_1`` limits, or never acquired), and a header naming a recon matrix (320 x 320).

- ``full-fov`` (fastMRI, VarNet): the operator covers the encoded phase-encode FOV; readout oversampling is
  removed first (inverse FFT along the fully sampled readout, centre crop to the recon matrix's rows, FFT
  back: exact, since every readout line is complete); the image is cropped to the recon matrix at the end.
  Dead lines are never treated as measured. Prospective data (the file's own mask) are used as acquired.
- ``image-crop`` (DDS, Score-MRI): the fully sampled coil images are centre-cropped to the grid size (the
  prior's, or the recon matrix for a prior that runs at any size), transformed back, and undersampled
  retrospectively. Cropping in image space mixes all of k-space, so prospective data are refused.
- ``kspace-crop`` (csgm-mri-langevin, ``MVU_Estimator_Knees``): dead lines removed (an even number on each
  side, as csgm does), a centred phase-encode k-space crop (or zero-pad) to the grid width, and the readout
  FOV crop (inverse FFT, image crop to the grid height, FFT). Every step keeps a subset of the acquired
  samples, so prospective data are allowed; the mask follows the same column operations. The grid's pixels
  are not those of the file's ``reconstruction_rss`` (the phase-encode resolution changes), so the reference
  is the root-sum-of-squares of the same cropped, fully sampled k-space.

Centring follows the centred FFT (and sigpy's ``resize``): a crop of n to m starts at n // 2 - m // 2.

The recon matrix is the header's word: one larger than the k-space is refused before anything is allocated (no
protocol pads up to it), and a grid the prior asks for that zero-pads the k-space is checked against the memory
budget (``recon.memory``) first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from operators.fft import fft2c, ifft2c
from recon import memory

PROTOCOLS = ("full-fov", "image-crop", "kspace-crop")
PROSPECTIVE = {"full-fov": True, "image-crop": False, "kspace-crop": True}


@dataclass
class SliceGrid:
    """One slice on its reconstruction grid.

    kspace: (C, H', W') data on the grid (fully sampled for retrospective use, as acquired for prospective);
    mask: (1, W') the acquired lines of prospective data (None: undersample retrospectively), dead lines 0;
    alive: (1, W') the lines that hold data (retrospective masks are multiplied by it);
    crop: (h, w) the final image crop; reference: (h, w) RSS of the fully sampled grid data cropped, when the
    protocol's pixels are not those of the file's target (kspace-crop), else None."""

    kspace: torch.Tensor
    mask: Optional[torch.Tensor]
    alive: torch.Tensor
    crop: tuple
    reference: Optional[torch.Tensor] = None


def _centered(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Centre crop or zero-pad ``x`` along ``dim`` to ``size`` (start n // 2 - size // 2, as sigpy.resize)."""
    n = x.shape[dim]
    if size <= n:
        return x.narrow(dim, n // 2 - size // 2, size)
    shape = list(x.shape)
    shape[dim] = size
    out = x.new_zeros(shape)
    out.narrow(dim, size // 2 - n // 2, n).copy_(x)
    return out


def _fft1(x: torch.Tensor, dim: int, inverse: bool = False) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=dim)
    x = torch.fft.ifft(x, dim=dim, norm="ortho") if inverse else torch.fft.fft(x, dim=dim, norm="ortho")
    return torch.fft.fftshift(x, dim=dim)


def crop_readout(k: torch.Tensor, rows: int) -> torch.Tensor:
    """Remove readout oversampling: inverse FFT along the readout (dim -2), centre crop to ``rows``, FFT back.
    Exact for data whose readout lines are complete (every Cartesian fastMRI acquisition)."""
    if rows > k.shape[-2]:
        raise ValueError(f"cannot crop the readout of {k.shape[-2]} samples to {rows} rows: the recon matrix is "
                         "larger than the encoded one")
    return _fft1(_centered(_fft1(k, -2, inverse=True), rows, -2), -2)


def crop_image(k: torch.Tensor, size: tuple) -> torch.Tensor:
    """Coil images centre-cropped to ``size`` and transformed back (image-crop)."""
    x = ifft2c(k)
    if size[0] > x.shape[-2] or size[1] > x.shape[-1]:
        raise ValueError(f"cannot crop coil images of {tuple(x.shape[-2:])} to {tuple(size)}")
    return fft2c(_centered(_centered(x, size[0], -2), size[1], -1))


def alive_lines(k: torch.Tensor, limits: Optional[tuple] = None, encoded_width: Optional[int] = None) -> torch.Tensor:
    """(1, W) float: phase-encode lines holding data: not exactly zero over all coils and rows, and inside the
    header's encoding limits where given (fastMRI: pad_left = W_enc // 2 - center, pad_right = pad_left +
    maximum + 1). For prospective data, where unacquired lines are zero as well, only the limits count."""
    alive = (k.abs().sum(dim=tuple(range(k.dim() - 1))) > 0)
    if limits is not None and encoded_width:
        center, maximum = limits
        left = encoded_width // 2 - center
        right = left + maximum + 1
        if 0 <= left < right <= k.shape[-1]:
            inside = torch.zeros_like(alive)
            inside[left:right] = True
            alive = alive & inside
    return alive.float()[None]


def _dead_columns(alive: torch.Tensor) -> torch.Tensor:
    """Indices of the dead lines csgm removes: all of them, keeping the count on each side of the centre even."""
    dead = torch.nonzero(alive[0] == 0).flatten()
    mid = alive.shape[-1] // 2
    front, back = dead[dead < mid], dead[dead >= mid]
    if len(front) % 2:
        front = front[1:]
    if len(back) % 2:
        back = back[:-1]
    return torch.cat([front, back])


def _keep(width: int, dead: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(width, dtype=torch.bool)
    keep[dead] = False
    return keep


def prepare(k: torch.Tensor, protocol: str, recon_size: tuple, size: Optional[tuple] = None,
            file_mask: Optional[torch.Tensor] = None, limits: Optional[tuple] = None,
            encoded_width: Optional[int] = None) -> SliceGrid:
    """Put one slice ``k`` (C, H, W) on the grid of ``protocol``.

    recon_size: the header's recon matrix (h, w); size: the grid the prior needs ((h, w)), or None when it
    runs at any size (then the grid follows the recon matrix); file_mask: the file's own (1, W) mask
    (prospective data); limits, encoded_width: the header's encoding limits (center, maximum) and width."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    if file_mask is not None and not PROSPECTIVE[protocol]:
        raise ValueError(f"protocol {protocol!r} cannot use prospective data (the file's own mask): it crops coil "
                         f"images, which mixes unacquired k-space into the data; use "
                         f"{' or '.join(p for p in PROTOCOLS if PROSPECTIVE[p])}")
    rh, rw = int(recon_size[0]), int(recon_size[1])
    H, W = k.shape[-2:]
    if rh < 1 or rw < 1:
        raise ValueError(f"the recon matrix {tuple(recon_size)} is empty; the header names no usable size")
    if rh > H or rw > W:
        raise ValueError(f"the recon matrix {(rh, rw)} (the header's reconSpace matrixSize) is larger than the "
                         f"encoded k-space {(H, W)}; expected at most {(H, W)}")
    if file_mask is None:
        alive = alive_lines(k, limits, encoded_width)
        mask = None
    else:  # unacquired lines are zero too: only the header's limits say which lines are dead
        alive = alive_lines(torch.ones_like(k[..., :1, :1, :]).expand(1, 1, W), limits, encoded_width)
        mask = torch.as_tensor(file_mask, dtype=torch.float32).reshape(1, -1) * alive
    if protocol == "full-fov":
        kk = crop_readout(k, rh) if H > rh else k
        return SliceGrid(kk * alive, mask, alive, (rh, rw))
    grid = tuple(size) if size is not None else (rh, rw)
    if grid[0] * grid[1] > H * W:  # zero-padded: the grid's coil images, k-space and their FFTs' copies
        memory.check_allocation(4 * memory.nbytes((k.shape[-3], *grid), 8),
                                f"the {protocol} grid of {k.shape[-3]} coils x {grid[0]} x {grid[1]}")
    if protocol == "image-crop":
        kk = crop_image(k * alive, grid)
        return SliceGrid(kk, None, torch.ones(1, grid[1]), (min(rh, grid[0]), min(rw, grid[1])))
    # kspace-crop
    keep = _keep(W, _dead_columns(alive))
    kk = _centered(crop_readout(k[..., keep], grid[0]), grid[1], -1)
    al = _centered(alive[..., keep], grid[1], -1)
    m = None if mask is None else _centered(mask[..., keep], grid[1], -1)
    reference = None if mask is not None else ifft2c(kk).abs().square().sum(-3).sqrt()
    return SliceGrid(kk * al, m, al, grid, reference)
