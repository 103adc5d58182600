"""An exact prior for testing: data x_0 ~ N(mu, Sigma) on images (H, W), flattened to d = H W.

Its Tweedie denoiser is known in closed form,

    E[x_0 | x_sigma] = mu + Sigma (Sigma + sigma^2 I)^{-1} (x_sigma - mu),

so a ``DiffusionPrior`` around ``GaussianDenoiser`` has the exact score, and for a linear operator with
Gaussian noise the posterior is Gaussian too (``gaussian_posterior``): the ground truth samplers are checked
against.
"""
from __future__ import annotations

import torch

from .parametrizations import Denoiser


class GaussianDenoiser(Denoiser):
    """Exact denoiser of N(mu, cov) for 1-channel real images of shape (H, W); cov is (H W, H W)."""

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor, sigma_min: float = 1e-3, sigma_max: float = 100.0):
        super().__init__(torch.nn.Identity())
        d = mu.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov must be ({d}, {d}) for mu of {d} entries, got {tuple(cov.shape)}")
        self.shape = tuple(mu.shape)
        self.register_buffer("mu", mu.reshape(-1).double())
        self.register_buffer("cov", cov.double())
        evals, evecs = torch.linalg.eigh(self.cov)
        self.register_buffer("evals", evals.clamp_min(0))
        self.register_buffer("evecs", evecs)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def forward(self, x, sigma):
        b = x.shape[0]
        v = x.reshape(b, -1).double() - self.mu
        s2 = sigma.double().reshape(b, 1) ** 2
        coef = self.evals / (self.evals + s2)                       # (b, d) shrinkage in the eigenbasis
        out = self.mu + ((v @ self.evecs) * coef) @ self.evecs.T
        return out.to(x.dtype).reshape(x.shape)

    def config(self) -> dict:
        return {"type": "gaussian"}


def gaussian_posterior(mu: torch.Tensor, cov: torch.Tensor, A: torch.Tensor, y: torch.Tensor, noise_std: float):
    """Mean and covariance of x | y for x ~ N(mu, cov), y = A x + n, n ~ N(0, noise_std^2 I) (A a real matrix)."""
    mu, cov, A, y = mu.reshape(-1).double(), cov.double(), A.double(), y.reshape(-1).double()
    S = A @ cov @ A.T + noise_std ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
    K = torch.linalg.solve(S, A @ cov).T                          # cov A^T S^{-1}
    return mu + K @ (y - A @ mu), cov - K @ A @ cov
