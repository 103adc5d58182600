"""Data-consistency steps shared by the samplers.

- ``project``: x <- x + A^H (y - A x) (chapter 7, Eq. 7.27). For a Cartesian mask without coil maps
  (A A^H = P, a projector) this is the exact projection onto {x : A x = y}; with SENSE maps it is one
  Landweber step of unit size.
- ``likelihood_gradient``: A^H (A x - y) / (sigma_y^2 + gamma^2) (Score-ALD, Eq. 7.31).
- ``cg_consistency``: M conjugate-gradient steps on (I + gamma A^H A) x = x0 + gamma A^H y, or on
  A^H A x = A^H y when ``gamma`` is None (noiseless), warm-started at x0 (DDS, Eq. 7.40); CG lives with the
  operators and uses ``A.normal`` (fused where the operator has one).
"""
from __future__ import annotations

from typing import Optional

import torch

from operators.cg import conjugate_gradient


def project(x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
    return x + A.H(y - A(x))


def likelihood_gradient(x: torch.Tensor, y: torch.Tensor, A, sigma_y: float, gamma: float) -> torch.Tensor:
    return A.H(A(x) - y) / (sigma_y ** 2 + gamma ** 2)


def cg_consistency(x0: torch.Tensor, y: torch.Tensor, A, n_iter: int = 5, gamma: Optional[float] = None) -> torch.Tensor:
    ndim = len(A.ishape)
    if gamma is None:
        return conjugate_gradient(A.normal, A.H(y), x0=x0, max_iter=n_iter, ndim=ndim)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0 (or None for the noiseless normal equations), got {gamma}")
    return conjugate_gradient(lambda v: v + gamma * A.normal(v), x0 + gamma * A.H(y), x0=x0, max_iter=n_iter,
                              ndim=ndim)
