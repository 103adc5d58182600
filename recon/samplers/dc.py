"""Data consistency: one small protocol, several interchangeable steps (in the spirit of deepinv's data fidelity).

A data-consistency object is configured once and bound to each run:

    dc = ConjugateGradient(cg_iter=5)                      # settings only
    step = dc.bind(y, A, noise_var=None, generator=g)      # a fresh instance for one run: y, A, its state
    x0 = step(x0, sigma)                                   # applied to the step's estimate at noise level sigma

``bind`` returns a new instance holding the per-run state (A^H y, the split variables of an ADMM iteration); the
configured object is never changed, so one sampler can run many times. ``y`` and ``A`` are the sampler's
measurement in the prior's range and its unit-norm operator (``base``); ``noise_var`` is sigma_y^2 in those units,
one value per image shaped to broadcast against the images (or None: noiseless, or unknown); ``generator`` is the
run's, for steps that draw noise. Samplers take ``dc=`` and default to their paper's step.

- ``Projection``: x <- x + A^H (y - A x) (Score-MRI; chapter 7 Eq. 7.27). For a Cartesian mask without coil
  maps (A A^H = P, a projector) this is the exact projection onto {x : A x = y}; with SENSE maps it is one
  Landweber step of unit size.
- ``GradientStep``: the likelihood gradient g(x) = A^H (A x - y) / (sigma_y^2 + gamma^2) of Score-ALD (Jalal et
  al. 2021; chapter 7 Eq. 7.31), used inside its Langevin step; as a step on its own, x <- x - g(x).
- ``ConjugateGradient``: CG on the normal equations, warm-started at the estimate x0 (DDS, Chung, Lee & Ye 2024;
  chapter 7 Eq. 7.40): noiseless A^H A x = A^H y, a fixed weight (I + gamma A^H A) x = x0 + gamma A^H y, or
  the weight of DiffPIR (Zhu et al., CVPR 2023) from the noise, gamma_t = sigma_t^2 / (lam sigma_y^2).
- ``TV``: one ADMM iteration per step of 1/2 ||A x - y||^2 + tv_xy max|A^H y| ||D x||_{2,1} (in-plane isotropic
  total variation; optionally with the noise-weighted proximal term of ``ConjugateGradient``).
- ``TVz``: one ADMM iteration per step of 1/2 ||A x - y||^2 + tv_z L ||D_z x||_1 for a stack of slices coupled
  along z (DDS's 3-D variant, after DiffusionMBIR).
- ``NoisedProjection``: Score-SDE's pull towards a noised measurement y + sigma A z (Song et al., ICLR 2022).
- ``HeldPixels``: pixels of a known image held in the estimate (SDEdit and inpainting: x <- m y + (1 - m) x).

The arithmetic the steps share is below them: ``project``, ``cg_consistency`` and the ADMM iterations
``TVConsistency`` and ``TVzConsistency``, which take (x0, y, A) and keep their split variables between calls; CG
lives with the operators and uses ``A.normal`` (fused where the operator has one) and the Hermitian inner product.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Union

import torch

from operators.cg import conjugate_gradient
from operators.transforms import FiniteDifference, group_soft_threshold

from .base import check_int, check_positive, noise_like


class DataConsistency:
    """The protocol (module docstring). Subclasses keep their settings in public attributes (they define the
    object's equality and repr), their per-run state in attributes starting with '_', set that state in
    ``_start`` and implement ``__call__(x, sigma)``."""

    _bound = False

    def bind(self, y: torch.Tensor, A, noise_var=None, generator: Optional[torch.Generator] = None):
        bound = copy.copy(self)
        bound._y, bound._A, bound._noise_var, bound._generator = y, A, noise_var, generator
        bound._bound = True
        bound._start()
        return bound

    def _start(self) -> None:
        """Set the per-run state from ``_y``, ``_A``, ``_noise_var``."""

    def _check_bound(self) -> None:
        if not self._bound:
            raise RuntimeError(f"{type(self).__name__}: bind it to a measurement first (dc.bind(y, A))")

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def settings(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.settings() == self.settings()

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"


def check_dc(dc, who: str):
    """A sampler's ``dc=`` setting: None (its paper's step) or a ``DataConsistency``."""
    if dc is not None and not isinstance(dc, DataConsistency):
        raise TypeError(f"{who}: dc must be a recon.samplers.dc.DataConsistency (e.g. dc.ConjugateGradient(5)), "
                        f"got {type(dc).__name__}")
    return dc


# --- the steps ------------------------------------------------------------------------------------------------

class Projection(DataConsistency):
    """x <- x + A^H (y - A x); sigma and the noise do not enter."""

    def __call__(self, x, sigma):
        self._check_bound()
        return project(x, self._y, self._A)


class GradientStep(DataConsistency):
    """The likelihood gradient at noise level sigma (Score-ALD),

        g(x, sigma) = A^H ((A x - y) / (sigma_y^2 + gamma^2)),    gamma = gamma_scale sigma,

    with sigma_y^2 the bound noise (0 without one). With ``ratio`` = r (csgm-mri-langevin's normalisation, its
    ``mse``) the direction d = A^H (A x - y) is rescaled per image to r times the norm of a reference (the
    score): g = r ||ref|| d / ||d||. ``step(x, sigma)`` is x - g(x, sigma) (a unit step; needs no reference);
    Score-ALD takes ``gradient(x, sigma, reference)`` into its Langevin step."""

    def __init__(self, gamma_scale: float = 1.0, ratio: Optional[float] = None):
        check_positive("gamma_scale", gamma_scale, allow_zero=True)
        if ratio is not None:
            check_positive("ratio", ratio)
        self.gamma_scale, self.ratio = gamma_scale, ratio

    def _start(self):
        nv, n_img = self._noise_var, len(self._A.ishape)
        if isinstance(nv, torch.Tensor):  # one value per image: shaped to broadcast against y instead
            batch = tuple(nv.shape[: max(nv.dim() - n_img, 0)])
            nv = nv.reshape(batch + (1,) * len(self._A.oshape))
        self._weight_var = 0.0 if nv is None else nv
        self._dims = tuple(range(-n_img, 0))

    def _norm(self, v):
        return v.abs().square().sum(dim=self._dims, keepdim=True).sqrt()

    def gradient(self, x, sigma, reference: Optional[torch.Tensor] = None):
        self._check_bound()
        A, y = self._A, self._y
        if self.ratio is None:
            return A.H((A(x) - y) / (self._weight_var + (self.gamma_scale * sigma) ** 2))
        if reference is None:
            raise ValueError("GradientStep(ratio=...): the gradient is scaled to a reference's norm; give one")
        d = A.H(A(x) - y)
        return d * (self.ratio * self._norm(reference) / self._norm(d).clamp_min(torch.finfo(d.real.dtype).tiny))

    def __call__(self, x, sigma):
        if self.ratio is not None:
            raise ValueError("GradientStep(ratio=...) scales to a reference's norm; use gradient(x, sigma, ref)")
        return x - self.gradient(x, sigma)


class ConjugateGradient(DataConsistency):
    """``cg_iter`` CG iterations warm-started at the estimate x0:

        gamma and lam None (noiseless):   A^H A x = A^H y
        gamma > 0 (a fixed weight):       (I + gamma A^H A) x = x0 + gamma A^H y
        lam > 0 (the noise's weight):     the same with gamma_t = sigma_t^2 / (lam sigma_y^2) at level sigma_t

    The last is DiffPIR's weighting (Zhu et al., CVPR 2023): the Tweedie estimate is trusted like data of
    variance sigma_t^2 / lam, so the data rule early and the prior late; without a bound noise (or a noise of 0)
    the system is the noiseless one."""

    def __init__(self, cg_iter: int = 5, gamma: Optional[float] = None, lam: Optional[float] = None):
        check_int("cg_iter", cg_iter, 0)
        if gamma is not None and lam is not None:
            raise ValueError("give the data weight one way: gamma (fixed) or lam (from the noise), not both")
        if gamma is not None:
            check_positive("gamma", gamma)
        if lam is not None:
            check_positive("lam", lam)
        self.cg_iter, self.gamma, self.lam = cg_iter, gamma, lam

    def __call__(self, x, sigma):
        self._check_bound()
        gamma = self.gamma
        if self.lam is not None and self._noise_var is not None:
            gamma = sigma * sigma / (self.lam * self._noise_var)
        return cg_consistency(x, self._y, self._A, self.cg_iter, gamma)


class TV(DataConsistency):
    """One ADMM iteration (``TVConsistency``) of the in-plane TV problem per step, its split variables carried
    from step to step; ``tv_xy`` has the meaning of ``recon.classical.tv``'s weight, ``rho`` is the ADMM penalty
    relative to it. With ``lam`` the x-update adds ||x - x0||^2 / (2 gamma_t), gamma_t as in
    ``ConjugateGradient`` (noiseless without a bound noise)."""

    def __init__(self, tv_xy: float, rho: float = 10.0, cg_iter: int = 5, lam: Optional[float] = None):
        check_positive("tv_xy", tv_xy)
        check_positive("rho", rho)
        check_int("cg_iter", cg_iter, 1)
        if lam is not None:
            check_positive("lam", lam)
        self.tv_xy, self.rho, self.cg_iter, self.lam = tv_xy, rho, cg_iter, lam

    def _start(self):
        self._admm = TVConsistency(self.tv_xy, self.rho, self.cg_iter)

    def __call__(self, x, sigma):
        self._check_bound()
        if self.lam is not None and self._noise_var is not None:
            return self._admm(x, self._y, self._A, sigma * sigma / (self.lam * self._noise_var))
        return self._admm(x, self._y, self._A)


class TVz(DataConsistency):
    """One ADMM iteration (``TVzConsistency``) per step of the slice-coupled problem on a stack (..., S, H, W);
    ``tv_z`` and ``rho`` relative to L = ||A||^2."""

    def __init__(self, tv_z: float, rho: float = 0.01, cg_iter: int = 5):
        check_positive("tv_z", tv_z)
        check_positive("rho", rho)
        check_int("cg_iter", cg_iter, 1)
        self.tv_z, self.rho, self.cg_iter = tv_z, rho, cg_iter

    def _start(self):
        self._admm = TVzConsistency(self.tv_z, self.rho, self.cg_iter)

    def __call__(self, x, sigma):
        self._check_bound()
        return self._admm(x, self._y, self._A)


INVERSES = ("adjoint", "cg", "pinv", "fbp")


class NoisedProjection(DataConsistency):
    """Score-SDE's data consistency (Song, Shen, Xing & Ermon, ICLR 2022): at noise level sigma the iterate is
    pulled towards a measurement noised like the forward process of the data,

        y_sigma = y + sigma A z,    z ~ N(0, I) from the run's generator   (y itself at sigma = 0)
        x <- x + lam A^+ (y_sigma - A x)                                   (lam in [0, 1])

    the paper's x' = T^-1[lam L P^-1(L) y_sigma + (1 - lam) L T x + (I - L) T x] with A = P(L) T. The
    pseudo-inverse ``inverse``: "adjoint" (A^H; exact when A A^H = I, as for a Cartesian mask), "cg" (``cg_iter``
    CG steps on the minimum-norm least-squares problem A^H A d = A^H r from d = 0), "pinv" (the operator's
    own ``pinv``: FBP for CT, zero-filled for MRI), "fbp" (the same, refused unless the operator's pseudo-inverse
    is filtered backprojection: the paper's CT choice) or a callable r -> d."""

    def __init__(self, lam: float = 1.0, inverse: Union[str, Callable] = "cg", cg_iter: int = 10):
        if not 0 <= lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if not callable(inverse) and inverse not in INVERSES:
            raise ValueError(f"inverse must be one of {INVERSES} or a callable, got {inverse!r}")
        check_int("cg_iter", cg_iter, 1)
        self.lam, self.inverse, self.cg_iter = lam, inverse, cg_iter

    def _start(self):
        A = self._A
        if callable(self.inverse):
            self._pinv = self.inverse
        elif self.inverse == "adjoint":
            self._pinv = A.H
        elif self.inverse in ("pinv", "fbp"):
            if self.inverse == "fbp" and A.pinv_method != "fbp":
                raise ValueError(f"inverse='fbp' needs an operator whose pseudo-inverse is filtered backprojection "
                                 f"(CT); {A.name}'s is {A.pinv_method!r} (use inverse='pinv' or 'cg')")
            self._pinv = A.pinv
        else:
            ndim = len(A.ishape)
            self._pinv = lambda r: conjugate_gradient(A.normal, A.H(r), max_iter=self.cg_iter, ndim=ndim)

    def __call__(self, x, sigma):
        self._check_bound()
        A, y = self._A, self._y
        y_s = y + sigma * A(noise_like(x, self._generator)) if sigma > 0 else y
        return x + self.lam * self._pinv(y_s - A(x))


class HeldPixels(DataConsistency):
    """The pixels where ``hold`` (a boolean or 0/1 (..., H, W) map) is set keep the bound image y:
    x <- m y + (1 - m) x, m = hold. Applied to each DDIM step's Tweedie estimate this is SDEdit's held region
    (Meng et al., ICLR 2022) and, for a masking operator, the exact projection DDS's CG would reach; the operator
    is not used (bind it to the image and None)."""

    def __init__(self, hold: torch.Tensor):
        self.hold = hold

    def _start(self):
        self._m = self.hold.to(device=self._y.device, dtype=self._y.real.dtype)
        self._known = self._m * self._y

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and torch.equal(other.hold, self.hold)

    def __call__(self, x, sigma):
        self._check_bound()
        return self._known + (1 - self._m) * x


# --- the arithmetic -------------------------------------------------------------------------------------------

def project(x: torch.Tensor, y: torch.Tensor, A) -> torch.Tensor:
    """x + A^H (y - A x)."""
    return x + A.H(y - A(x))


def cg_consistency(x0: torch.Tensor, y: torch.Tensor, A, n_iter: int = 5, gamma=None) -> torch.Tensor:
    """``n_iter`` CG steps from x0 on A^H A x = A^H y (``gamma`` None) or (I + gamma A^H A) x = x0 + gamma A^H y;
    ``gamma`` a number > 0 or a tensor of them broadcastable to x0 (one per image)."""
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
    """ADMM for 1/2 ||A x - y||^2 + lam L ||D_z x||_1 on a stack of slices (..., S, H, W), one iteration per call:

        x <- argmin 1/2 ||A x - y||^2 + r/2 ||D_z x - z + u||^2   (``cg_iter`` CG steps warm-started at x0)
        z <- shrink(D_z x + u, lam / rho),   u <- D_z x + u - z

    with r = rho L; ``lam`` (the TV weight ``tv_z``) and ``rho`` are relative to the largest eigenvalue
    L = ||A||^2 of A^H A (1 for the samplers' unit-norm operators). z and u carry from call to call (one
    instance per run)."""

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
    """ADMM for 1/2 ||A x - y||^2 + t ||D x||_{2,1} (D the forward differences along the image rows and columns),
    one iteration per call:

        x <- argmin 1/2 ||A x - y||^2 + r/2 ||D x - z + u||^2   (``cg_iter`` CG steps warm-started at x0)
        z <- group-shrink(D x + u, t / r),   u <- D x + u - z

    with the weights of ``recon.classical.tv``: t = lam max|A^H y| (fixed at the first call), r = rho lam, so
    ``lam`` (the TV weight ``tv_xy``) means what the TV baseline's weight means. z, u and A^H y carry from call to
    call (one instance per run: y and A stay fixed). With ``gamma`` (a number or a tensor broadcastable to x0)
    the x-update adds the proximal term ||x - x0||^2 / (2 gamma)."""

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
