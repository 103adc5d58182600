"""Batched conjugate gradient with fused vector updates and reductions, no host synchronisation.

Solves (apply + lam I) x = b for each of the S independent systems formed by the leading dimensions of ``b``
(the last ``ndim`` dimensions are one system's vector), exactly as ``operators.cg.conjugate_gradient`` does:
same initialisation, same per-system ``active``/``ok`` guards, same early stop (every residual below
``tol`` times its right-hand side, or no system active), Hermitian inner product. Complex vectors are
handled as interleaved float pairs: Re<u, v> = sum of the products of the float components.

Per iteration, after q = apply(p) (any torch callable, e.g. the SENSE kernel):

1. ``cg_dot``:       q <- q + lam p (when lam != 0); per-block partial sums of <p, q>;
2. ``cg_update``:    every block reduces its system's partials (fixed order), alpha = rr / <p, q> where ok;
                     x += alpha p, r -= alpha q; partial sums of <r, r>;
3. ``cg_direction``: beta = <r, r>_new / rr where ok; p = r + beta p; block 0 stores the new rr and counts the
                     converged and inactive systems for the next iteration's stop test.

Reductions are two-pass in double precision and deterministic (no floating-point atomics). The stop test
is evaluated on the device by every kernel, so the loop never waits for the host and can be captured in a
CUDA graph; once stopped, the remaining iterations leave x unchanged. Returns ``None`` whenever the torch
reference must run instead (CPU tensors, torch backend, other dtypes, gradients).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .dispatch import use_kernels
from .runtime import BLOCK, Module, as_kernel_tensor, runtime

MODULE = Module("cg", r"""
// Counts of the previous iteration: [converged, inactive]; stop when all converged (with tol) or none active.
__device__ __forceinline__ bool cg_stopped(const int* counts, int n_sys, int use_tol)
{
    return (use_tol && counts[0] >= n_sys) || counts[1] >= n_sys;
}

// Grid (nblk, n_sys): q <- q + lam p, part[s, b] = sum over block b's elements of p q (system s).
extern "C" __global__ void cg_dot(const float* __restrict__ p, float* __restrict__ q, double* __restrict__ part,
                                  const int* __restrict__ counts, int it, float lam, long long n, int nblk,
                                  int n_sys, int use_tol)
{
    __shared__ double sh[BLOCK];
    if (cg_stopped(counts + 2 * it, n_sys, use_tol)) return;
    int s = blockIdx.y;
    const float* ps = p + (long long)s * n;
    float* qs = q + (long long)s * n;
    double acc = 0.0;
    for (long long k = (long long)blockIdx.x * BLOCK + threadIdx.x; k < n; k += (long long)nblk * BLOCK) {
        float pv = ps[k];
        float qv = qs[k];
        if (lam != 0.0f) {
            qv = qv + lam * pv;
            qs[k] = qv;
        }
        acc += (double)pv * (double)qv;
    }
    double tot = block_sum(acc, sh);
    if (threadIdx.x == 0) part[s * nblk + blockIdx.x] = tot;
}

// Grid (nblk, n_sys): alpha from the <p, q> partials, x += alpha p, r -= alpha q, partials of <r, r>.
extern "C" __global__ void cg_update(float* __restrict__ x, float* __restrict__ r, const float* __restrict__ p,
                                     const float* __restrict__ q, const double* __restrict__ part_pq,
                                     const float* __restrict__ rr_buf, const float* __restrict__ floor_,
                                     const int* __restrict__ counts, int it, double* __restrict__ part_rr,
                                     int* __restrict__ ok_out, long long n, int nblk, int n_sys, int use_tol)
{
    __shared__ double sh[BLOCK];
    if (cg_stopped(counts + 2 * it, n_sys, use_tol)) return;
    int s = blockIdx.y;
    int t = threadIdx.x;
    float pq = (float)block_sum(t < nblk ? part_pq[s * nblk + t] : 0.0, sh);
    float rr = rr_buf[(it & 1) * n_sys + s];
    bool active = !(rr <= floor_[s]);
    bool ok = active && pq > 0.0f;
    float alpha = ok ? rr / pq : 0.0f;
    if (blockIdx.x == 0 && t == 0) ok_out[s] = ok ? 1 : 0;
    long long off = (long long)s * n;
    double acc = 0.0;
    for (long long k = (long long)blockIdx.x * BLOCK + t; k < n; k += (long long)nblk * BLOCK) {
        long long i = off + k;
        x[i] = x[i] + alpha * p[i];
        float rv = r[i] - alpha * q[i];
        r[i] = rv;
        acc += (double)rv * (double)rv;
    }
    double tot = block_sum(acc, sh);
    if (t == 0) part_rr[s * nblk + blockIdx.x] = tot;
}

// Grid (nblk, n_sys): beta from the <r, r> partials, p = r + beta p; block 0 of each system writes its new rr
// (ping-pong buffer) and adds it to the counts of converged / inactive systems for the next iteration.
extern "C" __global__ void cg_direction(float* __restrict__ p, const float* __restrict__ r,
                                        const double* __restrict__ part_rr, float* __restrict__ rr_buf,
                                        const int* __restrict__ ok, const float* __restrict__ floor_,
                                        const float* __restrict__ thr, int* __restrict__ counts, int it,
                                        long long n, int nblk, int n_sys, int use_tol)
{
    __shared__ double sh[BLOCK];
    int s = blockIdx.y;
    int t = threadIdx.x;
    const float* rr_cur = rr_buf + (it & 1) * n_sys;
    float* rr_next = rr_buf + ((it + 1) & 1) * n_sys;
    const int* c_prev = counts + 2 * it;
    int* c_next = counts + 2 * (it + 1);
    bool lead = blockIdx.x == 0 && t == 0;
    if (cg_stopped(c_prev, n_sys, use_tol)) {
        if (lead) {
            rr_next[s] = rr_cur[s];
            if (s == 0) {
                c_next[0] = c_prev[0];
                c_next[1] = c_prev[1];
            }
        }
        return;
    }
    float rr_new = (float)block_sum(t < nblk ? part_rr[s * nblk + t] : 0.0, sh);
    float rr = rr_cur[s];
    int okv = ok[s];
    float beta = okv ? rr_new / rr : 0.0f;
    if (lead) {
        float upd = okv ? rr_new : rr;
        rr_next[s] = upd;
        atomicAdd(&c_next[0], (use_tol && upd <= thr[s]) ? 1 : 0);
        atomicAdd(&c_next[1], upd <= floor_[s] ? 1 : 0);
    }
    long long off = (long long)s * n;
    for (long long k = (long long)blockIdx.x * BLOCK + t; k < n; k += (long long)nblk * BLOCK) {
        long long i = off + k;
        p[i] = r[i] + beta * p[i];
    }
}
""")

MAX_SYSTEMS = 65535


def _inner_real(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """Re <a, b> over the last ``ndim`` dims (``operators.linop.inner``'s formula; kernels import no operators)."""
    dims = tuple(range(-ndim, 0))
    return ((a.conj() * b).sum(dim=dims) if a.is_complex() else (a * b).sum(dim=dims)).real


def _shares_memory(a: torch.Tensor, *others: torch.Tensor) -> bool:
    p = a.untyped_storage().data_ptr()
    return any(p == o.untyped_storage().data_ptr() for o in others)


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       x0: Optional[torch.Tensor] = None, max_iter: int = 10, tol: float = 0.0, ndim: int = 2,
                       lam: float = 0.0) -> Optional[torch.Tensor]:
    """CG on (apply + lam I) x = b with the kernels, or ``None`` when the torch reference should run (arguments
    as in ``operators.cg.conjugate_gradient``; ``lam`` is fused into the first kernel)."""
    if not use_kernels(b):
        return None
    if b.dtype not in (torch.float32, torch.complex64) or b.dim() < ndim or b.numel() == 0:
        return None
    if x0 is not None and (x0.dtype != b.dtype or x0.shape != b.shape or x0.device != b.device):
        return None
    if torch.is_grad_enabled() and (b.requires_grad or (x0 is not None and x0.requires_grad)):
        return None
    vec = int(np.prod(b.shape[b.dim() - ndim:]))
    n_sys = b.numel() // vec
    n = vec * (2 if b.is_complex() else 1)   # floats per system
    if n_sys > MAX_SYSTEMS:
        return None
    nblk = min(BLOCK, -(-n // BLOCK))

    b = as_kernel_tensor(b)
    x = torch.zeros_like(b) if x0 is None else as_kernel_tensor(x0).clone()
    if x0 is not None:
        ax = apply(x) + lam * x if lam else apply(x)
        if ax.requires_grad or ax.shape != b.shape or ax.dtype != b.dtype:
            return None  # the torch reference keeps the gradient / promotes the dtype
        r = as_kernel_tensor(b - ax)
    else:
        r = b.clone()
    p = r.clone()
    rr = _inner_real(r, r, ndim).reshape(-1)
    bb = _inner_real(b, b, ndim).reshape(-1)
    floor = ((100 * torch.finfo(rr.dtype).eps) ** 2 * torch.maximum(rr, bb)).contiguous()
    thr = ((tol ** 2) * bb).contiguous()
    dev = b.device
    rr_buf = torch.stack([rr, rr]).contiguous()
    counts = torch.zeros(max_iter + 1, 2, dtype=torch.int32, device=dev)
    if tol > 0:
        counts[0, 0] = (rr <= thr).sum()
    counts[0, 1] = (rr <= floor).sum()
    part_pq = torch.empty(n_sys, nblk, dtype=torch.float64, device=dev)
    part_rr = torch.empty_like(part_pq)
    ok = torch.zeros(n_sys, dtype=torch.int32, device=dev)

    grid, block = (nblk, n_sys), (BLOCK,)
    tail = (np.int64(n), np.int32(nblk), np.int32(n_sys), np.int32(tol > 0))
    with runtime().session(dev) as k:
        xa, ra, pa = k.array(x), k.array(r), k.array(p)
        pqa, rra, oka, cta = k.array(part_pq), k.array(part_rr), k.array(ok), k.array(counts)
        rrb, fla, tha = k.array(rr_buf), k.array(floor), k.array(thr)
        for it in range(max_iter):
            q = apply(p)
            if q.requires_grad or q.shape != b.shape or q.dtype != b.dtype:
                if it == 0:  # nothing changed yet: the torch reference keeps the gradient / promotes the dtype
                    return None
                raise RuntimeError(f"CG: the operator's output changed to {tuple(q.shape)} {q.dtype} "
                                   f"(requires_grad={q.requires_grad}) during the solve")
            q = as_kernel_tensor(q)
            if _shares_memory(q, x, r, p):
                q = q.clone()
            qa = k.array(q)
            i32 = np.int32(it)
            k.launch(MODULE, "cg_dot", grid, block, (pa, qa, pqa, cta, i32, np.float32(lam)) + tail)
            k.launch(MODULE, "cg_update", grid, block, (xa, ra, pa, qa, pqa, rrb, fla, cta, i32, rra, oka) + tail)
            k.launch(MODULE, "cg_direction", grid, block, (pa, ra, rra, rrb, oka, fla, tha, cta, i32) + tail)
    return x
