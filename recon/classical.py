"""Classical reconstructions through the toolkit's operators: the baselines every diffusion sampler must beat.

All take a measurement ``y`` and any operator ``A`` (MRI, CT, ...) and return an image batch shaped like
``A.H(y)``. A measurement with NaN or Inf is refused (ValueError), and so is a non-finite result
(FloatingPointError, like the samplers' ``SamplingError``). The regularised methods work with the unit-norm operator A / ||A|| (``Linop.normalized``) and
their weights ``lam`` are relative to the scale of the data (the absolute weight is ``lam * max|A^H y|``
there), so the same ``lam`` works for k-space in any units, any number of views or coils, and the result
is the same for (c y, c A) as for (y, A) and c times it for (c y, A).

- ``zero_filled``:  x = A^H y (for SENSE operators with normalised maps: the coil-combined zero-filled image).
- ``cg_sense``:     argmin ||A x - y||^2 + lam ||x||^2 by conjugate gradient (Pruessmann et al., MRM 2001).
- ``l1_wavelet``:   argmin 1/2 ||A x - y||^2 + lam ||W x||_1 by FISTA (Beck & Teboulle 2009; Lustig et al.,
                    MRM 2007), W an orthonormal Daubechies wavelet transform on the image padded to a
                    multiple of 2^levels.
- ``tv``:           argmin 1/2 ||A x - y||^2 + lam ||D x||_{2,1} (isotropic total variation) by ADMM with
                    conjugate-gradient x-updates.
"""
from __future__ import annotations

import torch

from operators import checks
from operators.cg import conjugate_gradient, solve_normal
from operators.linop import Linop
from operators.transforms import CenterPad, FiniteDifference, Wavelet, group_soft_threshold, pad_to_wavelet


MAX_ITER = 100_000


def _measurement(method: str, y, A) -> torch.Tensor:
    """The method's measurement: a float or complex tensor (``operators.checks.as_tensor``) without NaN or Inf."""
    if not isinstance(A, Linop):
        raise TypeError(f"{method}: A must be an operator (operators.Linop), got {type(A).__name__}")
    y = checks.as_tensor(f"{method}: the measurement y", y)
    if not checks.is_finite(y):
        raise ValueError(f"{method}: the measurement y contains NaN or Inf")
    return y


def _result(method: str, x: torch.Tensor) -> torch.Tensor:
    """Refuse a non-finite result by name, as the samplers do."""
    if not checks.is_finite(x):
        raise FloatingPointError(f"{method}: non-finite values in the result; check the operator and the data")
    return x


def _unit(A: Linop, y: torch.Tensor):
    """(A / ||A||, y / ||A||): the same least-squares problem with a unit-norm operator."""
    n = A.norm(like=A.H(y))
    if n == 0:
        raise ValueError(f"the operator {A.name} has norm 0 (it measures nothing)")
    return A.normalized(like=A.H(y)), y / n


def zero_filled(y: torch.Tensor, A: Linop) -> torch.Tensor:
    """The adjoint reconstruction A^H y."""
    return _result("zero-filled", A.H(_measurement("zero-filled", y, A)))


def cg_sense(y: torch.Tensor, A: Linop, lam: float = 0.0, max_iter: int = 20, tol: float = 1e-6) -> torch.Tensor:
    """CG-SENSE with Tikhonov weight ``lam`` relative to ||A||^2: solves (A^H A + lam ||A||^2 I) x = A^H y from 0."""
    y = _measurement("cg-sense", y, A)
    checks.check_real("lam", lam, minimum=0.0)
    checks.check_int("max_iter", max_iter, 0, MAX_ITER)
    checks.check_real("tol", tol, minimum=0.0)
    lam_abs = lam * A.norm(like=A.H(y)) ** 2 if lam else 0.0
    return _result("cg-sense", solve_normal(A, A.H(y), lam=lam_abs, max_iter=max_iter, tol=tol))


def _soft(c: torch.Tensor, t: float) -> torch.Tensor:
    """Soft threshold of (complex) coefficients: c * max(|c| - t, 0) / |c|."""
    mag = c.abs()
    return c * (torch.clamp(mag - t, min=0) / mag.clamp_min(1e-30))


def l1_wavelet(y: torch.Tensor, A: Linop, lam: float = 1e-3, max_iter: int = 100,
               wavelet: str = "db4", levels: int = 4) -> torch.Tensor:
    """L1-wavelet regularised reconstruction by FISTA (see the module docstring)."""
    y = _measurement("l1-wavelet", y, A)
    checks.check_real("lam", lam, minimum=0.0)
    checks.check_int("max_iter", max_iter, 0, MAX_ITER)
    checks.check_int("levels", levels, 1)
    A, y = _unit(A, y)
    x0 = A.H(y)
    shape = tuple(x0.shape[-2:])
    pad = CenterPad(shape, pad_to_wavelet(shape, levels))
    W = Wavelet(pad.oshape, wavelet, levels)
    t_abs = lam * float(x0.abs().max())
    step = 1.0 / 1.01  # the Lipschitz constant of the data term is ||A||^2 = 1

    z = pad(x0)
    v, t = z, 1.0
    for _ in range(max_iter):
        grad = pad(A.H(A(pad.H(v)) - y))
        z_new = W.H(_soft(W(v - step * grad), step * t_abs))
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        v = z_new + ((t - 1) / t_new) * (z_new - z)
        z, t = z_new, t_new
    return _result("l1-wavelet", pad.H(z))


def tv(y: torch.Tensor, A: Linop, lam: float = 1e-3, max_iter: int = 50, rho: float = 10.0,
       cg_iter: int = 5) -> torch.Tensor:
    """Isotropic total-variation regularised reconstruction by ADMM on z = D x (Boyd et al. 2011):

        x <- argmin 1/2 ||A x - y||^2 + rho_abs/2 ||D x - z + u||^2    (``cg_iter`` warm-started CG steps)
        z <- shrink(D x + u, lam_abs / rho_abs)   (group soft threshold over the two gradient directions)
        u <- u + D x - z

    with lam_abs = lam max|A^H y| and the penalty rho_abs = rho lam (unitless, so the result scales with y),
    for the unit-norm operator."""
    y = _measurement("tv", y, A)
    checks.check_real("lam", lam, above=0.0)
    checks.check_int("max_iter", max_iter, 0, MAX_ITER)
    checks.check_positive("rho", rho)
    checks.check_int("cg_iter", cg_iter, 1, MAX_ITER)
    A, y = _unit(A, y)
    aty = A.H(y)
    x = aty
    D = FiniteDifference(tuple(x.shape[-2:]))
    t_abs = max(lam * float(aty.abs().max()), 1e-30)
    r = rho * lam
    z = D(x)
    u = torch.zeros_like(z)

    def normal(v):
        return A.normal(v) + r * D.normal(v)

    for _ in range(max_iter):
        x = conjugate_gradient(normal, aty + r * D.H(z - u), x0=x, max_iter=cg_iter, ndim=2)
        dx = D(x)
        v = dx + u
        z = group_soft_threshold(v, t_abs / r)
        u = v - z
    return _result("tv", x)
