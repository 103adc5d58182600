"""Conjugate gradient for Hermitian positive (semi-)definite systems, batched.

Solves  M x = b  for  M = A^H A + lam I  (``solve_normal``) or any Hermitian operator given as a
function (``conjugate_gradient``). The vector of the system is formed by the last ``ndim`` dimensions;
leading dimensions are independent systems, each with its own step sizes. The inner product is
Hermitian, <u, v> = sum conj(u) v, as required for complex data (Hestenes & Stiefel, 1952).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

import kernels

if TYPE_CHECKING:
    from .linop import Linop


def inner(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """Hermitian inner product <a, b> = sum conj(a) b over the last ``ndim`` dimensions."""
    dims = tuple(range(-ndim, 0))
    return (a.conj() * b).sum(dim=dims) if a.is_complex() else (a * b).sum(dim=dims)


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       x0: Optional[torch.Tensor] = None, max_iter: int = 10, tol: float = 0.0,
                       ndim: int = 2) -> torch.Tensor:
    """Run at most ``max_iter`` CG iterations on ``apply(x) = b`` starting from ``x0`` (default 0).

    Stops early when every system's residual norm is below ``tol`` times its right-hand side norm. A system
    whose residual has reached rounding level (relative to its start or its right-hand side) stays where it
    is, so singular but consistent systems (A^H A x = A^H y with a sampling mask) remain finite."""
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if b.dim() < ndim:
        raise ValueError(f"b must have at least ndim={ndim} dimensions, got shape {tuple(b.shape)}")
    out = kernels.cg.conjugate_gradient(apply, b, x0=x0, max_iter=max_iter, tol=tol, ndim=ndim)
    if out is not None:  # CUDA kernels ran; None: the torch reference below
        return out
    shape = b.shape[: b.dim() - ndim] + (1,) * ndim
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = inner(r, r, ndim).real
    bb = inner(b, b, ndim).real
    # a system whose residual has fallen to rounding level relative to where it started is converged:
    # further steps would divide rounding noise by rounding noise (singular A^H A, e.g. a Cartesian mask)
    floor = (100 * torch.finfo(rr.dtype).eps) ** 2 * torch.maximum(rr, bb)
    for _ in range(max_iter):
        if tol > 0 and bool((rr <= (tol ** 2) * bb).all()):
            break
        active = ~(rr <= floor)  # NaN stays active, so a NaN propagates instead of being skipped
        if not bool(active.any()):
            break
        ap = apply(p)
        pap = inner(p, ap, ndim).real
        ok = active & (pap > 0)
        alpha = torch.where(ok, rr / torch.where(ok, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * ap
        rr_new = inner(r, r, ndim).real
        beta = torch.where(ok, rr_new / torch.where(ok, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta.reshape(shape) * p
        rr = torch.where(ok, rr_new, rr)
    return x


def solve_normal(A: Linop, b: torch.Tensor, lam: float = 0.0, x0: Optional[torch.Tensor] = None,
                 max_iter: int = 10, tol: float = 0.0) -> torch.Tensor:
    """Solve (A^H A + lam I) x = b by CG, using ``A.normal`` (fused where the operator has it)."""
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    ndim = len(A.ishape)
    out = kernels.cg.conjugate_gradient(A.normal, b, x0=x0, max_iter=max_iter, tol=tol, ndim=ndim, lam=lam)
    if out is not None:
        return out

    def apply(x):
        return A.normal(x) + lam * x if lam else A.normal(x)

    return conjugate_gradient(apply, b, x0=x0, max_iter=max_iter, tol=tol, ndim=ndim)
