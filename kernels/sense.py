"""SENSE normal operator A^H A x = sum_c conj(S_c) F^H M^2 F (S_c x) with the shifts folded into indices.

F is fastMRI's centered orthonormal FFT, F = P_f DFT P_i with P_i = ifftshift and P_f = fftshift (index
permutations, P_i P_f = I). A diagonal matrix conjugated by a permutation is the permuted diagonal, so
P_i diag(m) P_f = diag(P_i m) and

    F^H M^2 F = P_f IDFT diag(ifftshift(M)^2) DFT P_i,
    A^H A x   = fftshift( sum_c conj(S'_c) IDFT( M'^2 DFT( S'_c x' ) ) ),   ' = ifftshift over (H, W).

This is exact for even and odd sizes (a checkerboard (-1)^(i+j) replaces the shifts only for even sizes, so it
is not used). Nothing is shifted in memory: ifftshift(z)[i'] = z[(i' + H//2) % H], so the kernel that forms
the coil images reads x and S at the unshifted pixel of each shifted position it writes, the mask kernel reads
M there, and the coil-combination kernel writes its sum back to the unshifted pixel.

A line mask (constant along H, shape (..., 1, W)) commutes with the FFT along H, so F_H^H F_H = I cancels:
F^H M^2 F = I_H (x) F_W^H diag(m^2) F_W and only 1-D FFTs along W are needed (no shift along H).

Launches per application: expand (coil images, C per pixel), cuFFT forward, mask (scale M'^2 / n), cuFFT
inverse (both unnormalised, via torch.fft), combine. ``normal_folded_torch`` is the same computation in torch
(rolls instead of index arithmetic), so the folding can be checked on the CPU.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .dispatch import use_kernels
from .runtime import BLOCK, Module, as_kernel_tensor, runtime

MODULE = Module("sense", r"""
// The unshifted position (i, j) of pixel pix of the shifted frame (i', j') = (pix / w, pix % w):
// i = (i' + sh) % h, j = (j' + sw) % w. Returns i * w + j.
__device__ __forceinline__ int unshifted(int pix, int h, int w, int sh, int sw)
{
    int ip = pix / w;
    int jp = pix - ip * w;
    int i = ip + sh; if (i >= h) i -= h;
    int j = jp + sw; if (j >= w) j -= w;
    return i * w + j;
}

// Coil images in the shifted frame: u[img, c, i', j'] = S[l, c, i, j] x[img, i, j],
// img = n * n_lead + l, (i, j) = ((i' + sh) % h, (j' + sw) % w). Grid: (ceil(h w / BLOCK), n_img).
extern "C" __global__ void sense_expand(const float2* __restrict__ x, const float2* __restrict__ maps,
                                        float2* __restrict__ u, int n_coils, int h, int w, int sh, int sw,
                                        int n_lead)
{
    int hw = h * w;
    int pix = blockIdx.x * BLOCK + threadIdx.x;
    if (pix >= hw) return;
    int img = blockIdx.y;
    int l = img % n_lead;
    int src = unshifted(pix, h, w, sh, sw);
    float2 xv = x[(long long)img * hw + src];
    const float2* s = maps + (long long)l * n_coils * hw + src;
    float2* out = u + (long long)img * n_coils * hw + pix;
    for (int c = 0; c < n_coils; ++c) {
        float2 m = s[(long long)c * hw];
        out[(long long)c * hw] = make_float2(m.x * xv.x - m.y * xv.y, m.x * xv.y + m.y * xv.x);
    }
}

// k[plane, i', j'] *= scale * M[l, c, i, j]^2 for plane = img * n_coils + c; the mask is read through its
// strides (0 along the dimensions it broadcasts). Grid: (ceil(h w / BLOCK), n_img * n_coils).
extern "C" __global__ void sense_mask(float2* __restrict__ k, const float* __restrict__ mask, int n_coils,
                                      int h, int w, int sh, int sw, int n_lead, int m_sl, int m_sc, int m_sh,
                                      int m_sw, float scale)
{
    int hw = h * w;
    int pix = blockIdx.x * BLOCK + threadIdx.x;
    if (pix >= hw) return;
    int plane = blockIdx.y;
    int c = plane % n_coils;
    int l = (plane / n_coils) % n_lead;
    int src = unshifted(pix, h, w, sh, sw);
    int i = src / w;
    int j = src - i * w;
    float m = mask[l * m_sl + c * m_sc + i * m_sh + j * m_sw];
    float g = m * m * scale;
    long long idx = (long long)plane * hw + pix;
    float2 v = k[idx];
    v.x = v.x * g;
    v.y = v.y * g;
    k[idx] = v;
}

// out[img, i, j] = sum_c conj(S[l, c, i, j]) v[img, c, i', j'] (the fftshift back folded into the write).
extern "C" __global__ void sense_combine(const float2* __restrict__ v, const float2* __restrict__ maps,
                                         float2* __restrict__ out, int n_coils, int h, int w, int sh, int sw,
                                         int n_lead)
{
    int hw = h * w;
    int pix = blockIdx.x * BLOCK + threadIdx.x;
    if (pix >= hw) return;
    int img = blockIdx.y;
    int l = img % n_lead;
    int src = unshifted(pix, h, w, sh, sw);
    const float2* s = maps + (long long)l * n_coils * hw + src;
    const float2* t = v + (long long)img * n_coils * hw + pix;
    float re = 0.0f, im = 0.0f;
    for (int c = 0; c < n_coils; ++c) {
        float2 m = s[(long long)c * hw];
        float2 z = t[(long long)c * hw];
        re += m.x * z.x + m.y * z.y;
        im += m.x * z.y - m.y * z.x;
    }
    out[(long long)img * hw + src] = make_float2(re, im);
}
""")

MAX_GRID_Y = 65535


def _mask_layout(mask: torch.Tensor, maps_shape: tuple):
    """The mask as a contiguous float32 (Lm, Cm, Hm, Wm) tensor and its element strides over (l, c, i, j),
    0 along the dimensions it broadcasts (Lm and Cm are 1 or the maps' lead size and coil count)."""
    lead, (c, h, w) = tuple(maps_shape[:-3]), maps_shape[-3:]
    m = mask.to(torch.float32)
    m = m.reshape((1,) * (len(maps_shape) - m.dim()) + tuple(m.shape))
    m_lead = tuple(m.shape[:-3])
    if any(s != 1 for s in m_lead):
        m = m.expand(lead + tuple(m.shape[-3:]))
    n_l = 1 if all(s == 1 for s in m_lead) else int(np.prod(lead))
    cm, hm, wm = m.shape[-3:]
    m = as_kernel_tensor(m.reshape(n_l, cm, hm, wm))
    strides = (cm * hm * wm if n_l > 1 else 0, hm * wm if cm > 1 else 0, wm if hm > 1 else 0, 1 if wm > 1 else 0)
    return m, strides


def _run(x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lead, (c, h, w) = tuple(maps.shape[:-3]), tuple(maps.shape[-3:])
    n_lead = int(np.prod(lead))
    n_img = x.numel() // (h * w)
    line = mask.shape[-2] == 1            # constant along H: 1-D FFTs along W only
    sh, sw = (0 if line else h // 2), w // 2
    x = as_kernel_tensor(x)
    maps = as_kernel_tensor(maps)
    m, (sl, sc, smh, smw) = _mask_layout(mask, tuple(maps.shape))
    scale = 1.0 / (w if line else h * w)
    u = torch.empty(x.shape[:-2] + (c, h, w), dtype=torch.complex64, device=x.device)
    out = torch.empty_like(x)
    grid = (-(-h * w // BLOCK), n_img)
    ints = (np.int32(c), np.int32(h), np.int32(w), np.int32(sh), np.int32(sw), np.int32(n_lead))
    with runtime().session(x.device) as k:
        xa, sa, ma = k.array(x), k.array(maps), k.array(m)
        k.launch(MODULE, "sense_expand", grid, (BLOCK,), (xa, sa, k.array(u)) + ints)
        kspace = (torch.fft.fft(u, dim=-1) if line else torch.fft.fft2(u)).contiguous()
        del u
        k.launch(MODULE, "sense_mask", (grid[0], n_img * c), (BLOCK,),
                 (k.array(kspace), ma) + ints + (np.int32(sl), np.int32(sc), np.int32(smh), np.int32(smw),
                                                np.float32(scale)))
        img = torch.fft.ifft(kspace, dim=-1, norm="forward") if line else torch.fft.ifft2(kspace, norm="forward")
        img = img.contiguous()
        del kspace
        k.launch(MODULE, "sense_combine", grid, (BLOCK,), (k.array(img), sa, k.array(out)) + ints)
    return out


class _Normal(torch.autograd.Function):
    """A^H A is Hermitian, so the gradient of x -> A^H A x is A^H A applied to the incoming gradient."""

    @staticmethod
    def forward(ctx, x, maps, mask):
        ctx.maps, ctx.mask = maps, mask
        return _run(x, maps, mask)

    @staticmethod
    def backward(ctx, g):
        return _run(g, ctx.maps, ctx.mask), None, None


def normal(x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> Optional[torch.Tensor]:
    """A^H A x for ``MultiCoilMRI(maps, mask)`` with the kernels, or ``None`` when the torch reference should
    run: CPU tensors, the torch backend, dtypes other than complex64 x and maps and a float32 mask (the torch
    path promotes other combinations), gradients wanted for the maps
    or the mask, or more images than a grid dimension holds (or maps too large for 32-bit mask indices)."""
    if not use_kernels(x):
        return None
    if x.dtype != torch.complex64 or maps.dtype != torch.complex64 or mask.dtype != torch.float32:
        return None
    if maps.device != x.device or mask.device != x.device:
        return None
    h, w = maps.shape[-2:]
    n_img = x.numel() // max(h * w, 1)
    if x.numel() == 0 or n_img * maps.shape[-3] > MAX_GRID_Y or maps.numel() >= 2 ** 31:
        return None
    grad = torch.is_grad_enabled()
    if grad and (maps.requires_grad or mask.requires_grad):
        return None
    if grad and x.requires_grad:
        return _Normal.apply(x, maps.detach(), mask.detach())
    return _run(x, maps, mask)


def normal_folded_torch(x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The kernels' computation in torch: ifftshift-ed x, maps and mask, unnormalised FFTs (1-D along W for a
    line mask), M'^2 / n, coil combination, fftshift back. Equal to ``MultiCoilMRI(maps, mask).normal(x)``."""
    h, w = maps.shape[-2:]
    line = mask.shape[-2] == 1
    sh, sw = (0 if line else h // 2), w // 2
    dims = (-2, -1)
    xs = torch.roll(x, (-sh, -sw), dims)
    ss = torch.roll(maps, (-sh, -sw), dims)
    ms = torch.roll(mask, (-sh if mask.shape[-2] > 1 else 0, -sw if mask.shape[-1] > 1 else 0), dims)
    u = ss * xs.unsqueeze(-3)
    k = torch.fft.fft(u, dim=-1) if line else torch.fft.fft2(u)
    k = k * (ms.square() / (w if line else h * w))
    v = torch.fft.ifft(k, dim=-1, norm="forward") if line else torch.fft.ifft2(k, norm="forward")
    return torch.roll((ss.conj() * v).sum(dim=-3), (sh, sw), dims)
