"""Joseph's ray-driven projector and its exact adjoint for the CT operators (``operators.ct._RayCT``).

The geometry is the operator's: ray origins p0 and unit directions d, (A, D, 2) float64, image pixel (i, j)
at (x, y) = (j - (W-1)/2, (H-1)/2 - i). One thread per ray (angle, detector) and image of the batch:

- steep ray (|d_y| >= |d_x|): for each row k, y_k = (H-1)/2 - k, s = (y_k - p0_y) / d_y, fractional column
  c = p0_x + s d_x + (W-1)/2; the pixels (k, floor c) and (k, floor c + 1) get the weights (1 - frac) / |d_y|
  and frac / |d_y|;
- flat ray: the same over the columns, x_k = k - (W-1)/2, s = (x_k - p0_x) / d_x, fractional row
  (H-1)/2 - (p0_y + s d_y), weights over 1 / |d_x|.

The positions are computed in double precision with the operator's formulas in the same order (the module is
built with --fmad=false), the weights rounded to float32 as the torch plan does, so the projection matches
``_RayCT._trace`` up to the order of the float32 sums. ``radon_backproject`` scatters y * weight into the
same two pixels per step with ``atomicAdd``: it is the exact transpose, so <A x, y> = <x, A^T y> holds to
rounding (float atomics make its summation order, hence its last bits, vary from run to run; with
``torch.use_deterministic_algorithms(True)`` the backprojection takes the torch path).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .dispatch import use_kernels
from .runtime import BLOCK, Module, as_kernel_tensor, runtime

MODULE = Module("radon", r"""
// The two interpolation taps of ray (p0, d) at step k: flat pixel indices (-1 when outside) and weights.
__device__ __forceinline__ void joseph_taps(double px, double py, double dx, double dy, bool steep, int h, int w,
                                            int k, double step_len, int* i0, int* i1, float* w0, float* w1)
{
    double pos;
    if (steep) {
        double s = ((h - 1) / 2.0 - k - py) / dy;
        pos = px + s * dx + (w - 1) / 2.0;
    } else {
        double s = (k - (w - 1) / 2.0 - px) / dx;
        pos = (h - 1) / 2.0 - (py + s * dy);
    }
    double lo = floor(pos);
    double frac = pos - lo;
    int n_other = steep ? w : h;
    *i0 = -1;
    *i1 = -1;
    if (lo >= -1.0 && lo < (double)n_other) {
        int l = (int)lo;
        if (l >= 0) *i0 = steep ? k * w + l : l * w + k;
        if (l + 1 < n_other) *i1 = steep ? k * w + l + 1 : (l + 1) * w + k;
    }
    *w0 = (float)((1.0 - frac) * step_len);
    *w1 = (float)(frac * step_len);
}

// sino[b, ray] = sum over the ray's steps of the interpolated image (B, H, W) -> (B, n_rays).
// Grid: (ceil(n_rays / BLOCK), B).
extern "C" __global__ void radon_project(const float* __restrict__ img, const double* __restrict__ p0,
                                         const double* __restrict__ dir, float* __restrict__ sino, int h, int w,
                                         int n_rays)
{
    int ray = blockIdx.x * BLOCK + threadIdx.x;
    if (ray >= n_rays) return;
    const float* im = img + (long long)blockIdx.y * h * w;
    double px = p0[2 * ray], py = p0[2 * ray + 1], dx = dir[2 * ray], dy = dir[2 * ray + 1];
    bool steep = fabs(dy) >= fabs(dx);
    int n_step = steep ? h : w;
    double step_len = 1.0 / (steep ? fabs(dy) : fabs(dx));
    float acc = 0.0f;
    for (int k = 0; k < n_step; ++k) {
        int i0, i1;
        float w0, w1;
        joseph_taps(px, py, dx, dy, steep, h, w, k, step_len, &i0, &i1, &w0, &w1);
        if (i0 >= 0) acc += w0 * im[i0];
        if (i1 >= 0) acc += w1 * im[i1];
    }
    sino[(long long)blockIdx.y * n_rays + ray] = acc;
}

// img[b, pixel] += weight * sino[b, ray] along the same taps (the transpose of radon_project); img zeroed first.
extern "C" __global__ void radon_backproject(const float* __restrict__ sino, const double* __restrict__ p0,
                                             const double* __restrict__ dir, float* __restrict__ img, int h, int w,
                                             int n_rays)
{
    int ray = blockIdx.x * BLOCK + threadIdx.x;
    if (ray >= n_rays) return;
    float v = sino[(long long)blockIdx.y * n_rays + ray];
    if (v == 0.0f) return;
    float* im = img + (long long)blockIdx.y * h * w;
    double px = p0[2 * ray], py = p0[2 * ray + 1], dx = dir[2 * ray], dy = dir[2 * ray + 1];
    bool steep = fabs(dy) >= fabs(dx);
    int n_step = steep ? h : w;
    double step_len = 1.0 / (steep ? fabs(dy) : fabs(dx));
    for (int k = 0; k < n_step; ++k) {
        int i0, i1;
        float w0, w1;
        joseph_taps(px, py, dx, dy, steep, h, w, k, step_len, &i0, &i1, &w0, &w1);
        if (i0 >= 0 && w0 != 0.0f) atomicAdd(&im[i0], w0 * v);
        if (i1 >= 0 && w1 != 0.0f) atomicAdd(&im[i1], w1 * v);
    }
}
""")

MAX_BATCH = 65535


def _rays(p0: torch.Tensor, d: torch.Tensor, device: torch.device, cache: dict):
    key = str(device)
    if key not in cache:
        cache[key] = (as_kernel_tensor(p0.to(device=device, dtype=torch.float64)),
                      as_kernel_tensor(d.to(device=device, dtype=torch.float64)))
    return cache[key]


def _project(x: torch.Tensor, p0: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    n_rays = p0.shape[0] * p0.shape[1]
    xb = as_kernel_tensor(x)
    out = torch.empty(x.shape[:-2] + tuple(p0.shape[:2]), dtype=torch.float32, device=x.device)
    n_b = xb.numel() // (h * w)
    with runtime().session(x.device) as k:
        k.launch(MODULE, "radon_project", (-(-n_rays // BLOCK), n_b), (BLOCK,),
                 (k.array(xb), k.array(p0), k.array(d), k.array(out), np.int32(h), np.int32(w), np.int32(n_rays)))
    return out


def _backproject(y: torch.Tensor, p0: torch.Tensor, d: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n_rays = p0.shape[0] * p0.shape[1]
    yb = as_kernel_tensor(y)
    out = torch.zeros(y.shape[:-2] + (h, w), dtype=torch.float32, device=y.device)
    n_b = yb.numel() // n_rays
    with runtime().session(y.device) as k:
        k.launch(MODULE, "radon_backproject", (-(-n_rays // BLOCK), n_b), (BLOCK,),
                 (k.array(yb), k.array(p0), k.array(d), k.array(out), np.int32(h), np.int32(w), np.int32(n_rays)))
    return out


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p0, d):
        ctx.save_for_backward(p0, d)
        ctx.hw = tuple(x.shape[-2:])
        return _project(x, p0, d)

    @staticmethod
    def backward(ctx, g):
        p0, d = ctx.saved_tensors
        return _backproject(g, p0, d, *ctx.hw), None, None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, p0, d, h, w):
        ctx.save_for_backward(p0, d)
        return _backproject(y, p0, d, h, w)

    @staticmethod
    def backward(ctx, g):
        p0, d = ctx.saved_tensors
        return _project(g, p0, d), None, None, None, None


def _usable(t: torch.Tensor, n_per_item: int) -> bool:
    return (use_kernels(t) and t.dtype == torch.float32 and t.numel() > 0
            and t.numel() // n_per_item <= MAX_BATCH)


def project(x: torch.Tensor, p0: torch.Tensor, d: torch.Tensor, cache: dict) -> Optional[torch.Tensor]:
    """Line integrals (..., H, W) -> (..., A, D) along the rays (p0, d) with the kernel, or ``None`` when the
    torch reference should run (CPU tensors, torch backend, dtypes other than float32). ``cache`` keeps the rays
    on the device (a dict owned by the operator)."""
    if not _usable(x, x.shape[-1] * x.shape[-2]):
        return None
    p0, d = _rays(p0, d, x.device, cache)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Project.apply(x, p0, d)
    return _project(x, p0, d)


def backproject(y: torch.Tensor, p0: torch.Tensor, d: torch.Tensor, h: int, w: int,
                cache: dict) -> Optional[torch.Tensor]:
    """The exact adjoint of ``project``: (..., A, D) -> (..., H, W), or ``None`` for the torch reference (also
    when torch's deterministic algorithms are requested: the kernel's float atomics are not)."""
    if not _usable(y, y.shape[-1] * y.shape[-2]) or torch.are_deterministic_algorithms_enabled():
        return None
    p0, d = _rays(p0, d, y.device, cache)
    if torch.is_grad_enabled() and y.requires_grad:
        return _Backproject.apply(y, p0, d, h, w)
    return _backproject(y, p0, d, h, w)
