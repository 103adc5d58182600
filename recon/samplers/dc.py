"""Data-consistency steps shared by the samplers.

- ``project``: x <- x + A^H (y - A x) (chapter 7, Eq. 7.27). For a Cartesian mask without coil maps
  (A A^H = P, a projector) this is the exact projection onto {x : A x = y}; with SENSE maps it is one
  Landweber step of unit size.
- ``likelihood_gradient``: A^H (A x - y) / (sigma_y^2 + gamma^2) (Score-ALD, Eq. 7.31).
- ``cg_consistency``: M conjugate-gradient steps on (I + gamma A^H A) x = x0 + gamma A^H y, or on
  A^H A x = A^H y when ``gamma`` is None (noiseless), warm-started at x0 (DDS, Eq. 7.40); CG lives with the
  operators and uses ``A.normal`` (fused where the operator has one).
- ``TVzConsistency``: for a stack of slices (..., S, H, W) reconstructed slice by slice, data consistency
  with a total-variation coupling along the slice axis (DDS for 3-D, after DiffusionMBIR): one ADMM
  iteration per diffusion step on 1/2 ||A x - y||^2 + lam ||D_z x||_1, its split variables carried from
  step to step, the x-update by CG warm-started at the Tweedie estimate.
- ``TVConsistency``: the same with an in-plane isotropic total variation, 1/2 ||A x - y||^2 + lam ||D x||_{2,1}
  with D the forward differences along the image rows and columns: the learned prior proposes, and TV keeps what
  the data leave open from being filled with texture the prior invents (DDS's ``tv_xy``).
"""
from __future__ import annotations

import torch

from operators.cg import conjugate_gradient
from operators.transforms import FiniteDifference, group_soft_threshold


def project(x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
    return x + A.H(y - A(x))


def likelihood_gradient(x: torch.Tensor, y: torch.Tensor, A, sigma_y, gamma: float) -> torch.Tensor:
    """A^H ((A x - y) / (sigma_y^2 + gamma^2)); ``sigma_y`` a number or a tensor broadcastable to y."""
    return A.H((A(x) - y) / (sigma_y ** 2 + gamma ** 2))


def cg_consistency(x0: torch.Tensor, y: torch.Tensor, A, n_iter: int = 5, gamma=None) -> torch.Tensor:
    """``gamma``: None (noiseless), a number > 0, or a tensor of them broadcastable to x0 (one per image)."""
    ndim = len(A.ishape)
    if gamma is None:
        return conjugate_gradient(A.normal, A.H(y), x0=x0, max_iter=n_iter, ndim=ndim)
    if not bool((torch.as_tensor(gamma) > 0).all()):
        raise ValueError(f"gamma must be > 0 (or None for the noiseless normal equations), got {gamma}")
    return conjugate_gradient(lambda v: v + gamma * A.normal(v), x0 + gamma * A.H(y), x0=x0, max_iter=n_iter,
                              ndim=ndim)


def dz(x: torch.Tensor) -> torch.Tensor:
    """Forward differences along the slice axis (dim -3): (..., S, H, W) -> (..., S - 1, H, W)."""
    return x[..., 1:, :, :] - x[..., :-1, :, :]


def dz_adjoint(d: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(d[..., :1, :, :])
    return torch.cat([z, d], dim=-3) - torch.cat([d, z], dim=-3)


class TVzConsistency:
    """ADMM state for the slice-coupled data consistency. ``lam`` and ``rho`` are relative to the largest
    eigenvalue L = ||A||^2 of A^H A (``A.norm()``, 1 for the samplers' unit-norm operators):
    lam_abs = lam L, rho_abs = rho L."""

    def __init__(self, lam: float, rho: float = 0.01, cg_iter: int = 5):
        if lam <= 0 or rho <= 0 or cg_iter < 1:
            raise ValueError(f"TV-z coupling needs lam > 0, rho > 0 and cg_iter >= 1, got {lam}, {rho}, {cg_iter}")
        self.lam, self.rho, self.cg_iter = lam, rho, cg_iter
        self.z = self.u = None
        self.L = None

    def __call__(self, x0: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
        if x0.dim() < 3 or x0.shape[-3] < 2:
            raise ValueError(f"TV-z coupling needs a stack of at least 2 slices (..., S, H, W), got {tuple(x0.shape)}")
        if self.L is None:
            self.L = max(A.norm(like=x0) ** 2, 1e-30)
            self.z = dz(x0)
            self.u = torch.zeros_like(self.z)
        r = self.rho * self.L
        aty = A.H(y)
        x = conjugate_gradient(lambda v: A.normal(v) + r * dz_adjoint(dz(v)), aty + r * dz_adjoint(self.z - self.u),
                               x0=x0, max_iter=self.cg_iter, ndim=x0.dim())
        v = dz(x) + self.u
        t = self.lam / self.rho
        self.z = torch.sign(v) * (v.abs() - t).clamp_min(0)
        self.u = v - self.z
        return x


class TVConsistency:
    """ADMM state for data consistency with an in-plane isotropic TV, one ADMM iteration per diffusion step:

        x <- argmin 1/2 ||A x - y||^2 + r/2 ||D x - z + u||^2   (``cg_iter`` CG steps warm-started at x0)
        z <- group-shrink(D x + u, t / r),   u <- D x + u - z

    with the weights of ``recon.classical.tv``: t = lam max|A^H y| (fixed at the first call), r = rho lam, so
    ``lam`` means what the TV baseline's weight means. z, u and A^H y carry from step to step (one instance per
    run: y and A stay fixed); x0 is the step's Tweedie estimate. With ``gamma`` (a number or a tensor broadcastable to x0: noisy data weighed against the Tweedie
    estimate as in ``cg_consistency``) the x-update adds the proximal term ||x - x0||^2 / (2 gamma)."""

    def __init__(self, lam: float, rho: float = 10.0, cg_iter: int = 5):
        if not (lam > 0 and rho > 0 and cg_iter >= 1):
            raise ValueError(f"TV consistency needs lam > 0, rho > 0 and cg_iter >= 1, got {lam}, {rho}, {cg_iter}")
        self.lam, self.rho, self.cg_iter = lam, rho, cg_iter
        self.z = self.u = self.t = self.aty = None

    def __call__(self, x0: torch.Tensor, y: torch.Tensor, A, gamma=None) -> torch.Tensor:
        D = FiniteDifference(tuple(x0.shape[-2:]))
        if self.z is None:  # y and A are the run's: A^H y once
            self.aty = aty = A.H(y)
            self.t = max(self.lam * float(aty.abs().max()), 1e-30)
            self.z = D(x0)
            self.u = torch.zeros_like(self.z)
        r = self.rho * self.lam
        rhs = self.aty + r * D.H(self.z - self.u)
        if gamma is None:
            normal = lambda v: A.normal(v) + r * D.normal(v)  # noqa: E731
        else:
            w = 1.0 / gamma
            normal = lambda v: A.normal(v) + r * D.normal(v) + w * v  # noqa: E731
            rhs = rhs + w * x0
        x = conjugate_gradient(normal, rhs, x0=x0, max_iter=self.cg_iter, ndim=x0.dim())
        v = D(x) + self.u
        self.z = group_soft_threshold(v, self.t / r)
        self.u = v - self.z
        return x
