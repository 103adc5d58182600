"""A small algebra of linear operators on torch tensors (in the spirit of sigpy's ``Linop``).

An operator ``A`` maps tensors whose trailing dimensions are ``A.ishape`` to tensors whose trailing
dimensions are ``A.oshape``; any leading dimensions are batch dimensions and pass through.

    A(x)          apply A
    A.H(y)        apply the adjoint A^H, defined by <A x, y> = <x, A^H y> (Hermitian inner product)
    A.normal(x)   A^H A x (subclasses override it where a fused form is cheaper)
    A @ B         composition A B
    c * A         scaling by a scalar (``Scaled``)
    A + B         sum of operators with equal shapes

Shapes may hold ``None`` for a size the operator does not fix. Every application checks the input's
trailing dimensions against the operator's shape and raises a ``ShapeError`` that says what was expected.
Inputs follow ``operators.checks.as_tensor``: NumPy arrays are converted, float and complex tensors are used in
their own precision (complex128 in, complex128 out), integer and boolean tensors are refused with a TypeError.

**The operator contract.** Everything a sampler, a task or a classical method may ask of an operator lives
here, with a default, and survives the algebra (``Scaled`` forwards all of it exactly; ``Compose``, ``Sum``
and ``Adjoint`` forward what stays true for them and fall back to the defaults otherwise):

    A.norm(like=None)   largest singular value ||A||_2: power iteration on A^H A from a fixed seed, cached per
                        operator (closed forms where they exist); ``(c * A).norm() == abs(c) * A.norm()``
    A.pinv(y)           a cheap pseudo-inverse image: CG on A^H A x = A^H y by default, FBP for CT, the
                        SENSE-combined zero-filled image for MRI, exact inverses for masks and averaging;
                        ``(c * A).pinv(c * y) == A.pinv(y)``; ``A.pinv_method`` names it ("cg", "fbp", ...)
    A.support           boolean map of the input pixels some measurement sees (None: all of them)
    A.combine(x)        the final image of an input x (root-sum-of-squares for coil-wise MRI; identity otherwise)
    A.normalized()      A / ||A||, the unit-norm operator every sampler works with
    A.noise_std(y)      the operator's estimate, from the measurement alone, of the std of its noise per sample
                        (complex noise: E|n|^2 = std^2), one value per batch element; None where the operator
                        cannot tell noise from signal (the default). MRI estimates it from the k-space periphery;
                        ``(c * A).noise_std(y)`` is ``A.noise_std(y)`` (it is a property of y's values). A noise
                        level a user states is a sampler's ``sigma_y``, not this
    A.sampling          what the measurement samples: "cartesian" (k-space on the image grid, through a mask),
                        "non-cartesian" (k-space off the grid, along a trajectory), "projection" (line integrals:
                        CT), or None (an image-domain measurement, or unknown; the default)
    A.angular_coverage  for projection data, the angular range in degrees that the views cover (the period, 180
                        for parallel beam and 360 for fan beam, less the largest gap between neighbouring views,
                        plus the median gap); None otherwise
    A.n_views           for projection data, the number of views; None otherwise

Code that uses an operator asks these, never the concrete type.
"""
from __future__ import annotations

import copy
import math
import numbers
from typing import Optional, Sequence

import torch

from .cg import conjugate_gradient, inner
from .checks import as_tensor

Shape = tuple


class ShapeError(ValueError):
    """An input's shape does not match what an operator expects."""


def _fmt(shape: Shape) -> str:
    return "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_shape(x: torch.Tensor, shape: Shape, who: str, what: str = "input") -> None:
    """Raise ShapeError unless the trailing dimensions of ``x`` match ``shape`` (None matches any size)."""
    n = len(shape)
    ok = x.dim() >= n and all(s is None or s == d for s, d in zip(shape, x.shape[x.dim() - n:]))
    if not ok:
        raise ShapeError(
            f"{who} expects {what} of shape {_fmt(shape)}, got {tuple(x.shape)}"
        )


def power_iteration(apply, like: torch.Tensor, n_iter: int = 30,
                    generator: Optional[torch.Generator] = None, tol: float = 0.0) -> float:
    """Largest eigenvalue of a Hermitian PSD operator (e.g. A.normal), by power iteration from a random start
    (seed 0 unless ``generator`` is given). Stops early once the estimate changes by at most ``tol`` relative."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = torch.randn(like.shape, dtype=like.dtype, generator=g).to(like.device)
    lam = 0.0
    for _ in range(n_iter):
        x = x / x.norm().clamp_min(1e-30)
        y = apply(x)
        new = float((x.conj() * y).sum().real) if x.is_complex() else float((x * y).sum())
        done = tol > 0 and abs(new - lam) <= tol * abs(new)
        lam, x = new, y
        if done:
            break
    return lam


class Linop:
    """Base class: subclasses set ``ishape``/``oshape`` and implement ``_apply`` and ``_adjoint``."""

    def __init__(self, ishape: Sequence[Optional[int]], oshape: Sequence[Optional[int]]):
        self.ishape: Shape = tuple(ishape)
        self.oshape: Shape = tuple(oshape)

    # --- the three applications -------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = as_tensor(f"the input of {self.name}", x)
        check_shape(x, self.ishape, self.name)
        return self._apply(x)

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        y = as_tensor(f"the input of {self.name}.H", y)
        check_shape(y, self.oshape, f"{self.name}.H")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        x = as_tensor(f"the input of {self.name}.normal", x)
        check_shape(x, self.ishape, f"{self.name}.normal")
        return self._normal(x)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._adjoint(self._apply(x))

    def _apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def H(self) -> "Linop":
        return Adjoint(self)

    # --- the operator contract ----------------------------------------------------------------
    pinv_method = "cg"
    pinv_iter = 30
    input_dtype = torch.complex64  # what the default power iteration feeds the operator (CT: float32)

    def norm(self, like: Optional[torch.Tensor] = None) -> float:
        """Largest singular value ||A||_2, cached. ``like`` gives the sizes the operator leaves free (None in
        ``ishape``): its trailing dimensions are used; without free sizes it is not needed."""
        shape = self._concrete_ishape(like)
        cache = self.__dict__.setdefault("_norm_cache", {})
        if shape not in cache:
            value = self._norm(shape, like)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.name}: the operator norm is {value}; the operator holds NaN or Inf")
            cache[shape] = value
        return cache[shape]

    def _norm(self, shape: tuple, like: Optional[torch.Tensor]) -> float:
        """Default: power iteration on A^H A from a fixed seed (deterministic)."""
        dtype = like.dtype if like is not None else self.input_dtype
        device = like.device if like is not None else self._device()
        template = torch.zeros(shape, dtype=dtype, device=device)
        return math.sqrt(max(power_iteration(self._normal, template, n_iter=100, tol=1e-6), 0.0))

    def _concrete_ishape(self, like: Optional[torch.Tensor]) -> tuple:
        if all(s is not None for s in self.ishape):
            return tuple(self.ishape)
        if like is None or like.dim() < len(self.ishape):
            raise ShapeError(f"{self.name} leaves input sizes free {_fmt(self.ishape)}; give an input "
                             f"(like=...) to fix them")
        check_shape(like, self.ishape, self.name, "like")
        return tuple(like.shape[like.dim() - len(self.ishape):])

    def _device(self) -> torch.device:
        for v in vars(self).values():
            if isinstance(v, torch.Tensor):
                return v.device
            if isinstance(v, Linop):
                return v._device()
        return torch.device("cpu")

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A cheap pseudo-inverse image A^+ y (default: ``pinv_iter`` CG steps on A^H A x = A^H y from 0)."""
        y = as_tensor(f"the input of {self.name}.pinv", y)
        check_shape(y, self.oshape, f"{self.name}.pinv")
        return self._pinv(y)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return conjugate_gradient(self._normal, self._adjoint(y), max_iter=self.pinv_iter, tol=1e-6,
                                  ndim=len(self.ishape))

    @property
    def support(self) -> Optional[torch.Tensor]:
        """Boolean map of the input pixels some measurement sees; None: every pixel."""
        return None

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        """The image a user looks at for an input ``x`` (identity unless the input is, e.g., coil images)."""
        return x

    def noise_std(self, y: torch.Tensor) -> Optional[torch.Tensor]:
        """The measurement's noise std estimated from ``y`` (shape: y's batch dimensions), or None where the
        operator cannot estimate it (the default)."""
        return None

    #: "cartesian", "non-cartesian", "projection" or None (see the module docstring)
    sampling: Optional[str] = None

    @property
    def angular_coverage(self) -> Optional[float]:
        """Degrees of angle the views of projection data cover; None for other measurements."""
        return None

    @property
    def n_views(self) -> Optional[int]:
        """The number of views of projection data; None for other measurements."""
        return None

    def normalized(self, like: Optional[torch.Tensor] = None) -> "Linop":
        """A / ||A||: the same measurement model with unit norm."""
        n = self.norm(like)
        if n == 0:
            raise ValueError(f"{self.name} is the zero operator (norm 0): it measures nothing")
        return (1.0 / n) * self

    # --- algebra ----------------------------------------------------------------------------
    def __matmul__(self, other: "Linop") -> "Linop":
        if not isinstance(other, Linop):
            return NotImplemented
        return Compose(self, other)

    def __mul__(self, c) -> "Linop":
        if isinstance(c, Linop):
            return Compose(self, c)
        return self.__rmul__(c)

    def __rmul__(self, c) -> "Linop":
        return Scaled(self, c)

    def __add__(self, other: "Linop") -> "Linop":
        if not isinstance(other, Linop):
            return NotImplemented
        return Sum(self, other)

    def __sub__(self, other: "Linop") -> "Linop":
        return Sum(self, -1 * other)

    # --- housekeeping -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def to(self, *args, **kwargs) -> "Linop":
        """A copy with every tensor (and every child operator) moved by ``Tensor.to(*args, **kwargs)``.

        Complex tensors keep a complex dtype when a real floating dtype is requested (and vice versa
        for real ones), so ``A.to(torch.float64)`` gives a double precision operator."""
        new = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(new, key, _move(value, *args, **kwargs))
            elif isinstance(value, Linop):
                setattr(new, key, value.to(*args, **kwargs))
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Linop) for v in value):
                setattr(new, key, type(value)(v.to(*args, **kwargs) for v in value))
        return new

    def __repr__(self) -> str:
        return f"{self.name}(ishape={_fmt(self.ishape)}, oshape={_fmt(self.oshape)})"


def _move(t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    dtype = kwargs.pop("dtype", None)
    rest = []
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        else:
            rest.append(a)
    t = t.to(*rest, **kwargs)
    if dtype is not None:
        if t.is_complex() and not dtype.is_complex:
            dtype = {torch.float64: torch.complex128, torch.float16: torch.complex32}.get(dtype, torch.complex64)
        elif t.is_floating_point() and dtype.is_complex:
            dtype = {torch.complex128: torch.float64}.get(dtype, torch.float32)
        if t.is_floating_point() or t.is_complex():
            t = t.to(dtype)
    return t


class Adjoint(Linop):
    """A^H as an operator; its adjoint is A again."""

    def __init__(self, op: Linop):
        super().__init__(op.oshape, op.ishape)
        self.op = op

    def _apply(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._apply(y)

    @property
    def H(self) -> Linop:
        return self.op

    @property
    def name(self) -> str:
        return f"{self.op.name}.H"


class Compose(Linop):
    """A B: apply B, then A."""

    def __init__(self, a: Linop, b: Linop):
        if len(a.ishape) != len(b.oshape) or any(
            s is not None and t is not None and s != t for s, t in zip(a.ishape, b.oshape)
        ):
            raise ShapeError(
                f"cannot compose {a.name} @ {b.name}: {b.name} produces {_fmt(b.oshape)} "
                f"but {a.name} expects {_fmt(a.ishape)}"
            )
        super().__init__(b.ishape, a.oshape)
        self.a, self.b = a, b

    def _apply(self, x):
        return self.a._apply(self.b._apply(x))

    def _adjoint(self, y):
        return self.b._adjoint(self.a._adjoint(y))

    def _normal(self, x):
        return self.b._adjoint(self.a._normal(self.b._apply(x)))

    @property
    def input_dtype(self):
        return self.b.input_dtype

    @property
    def support(self):  # the input is B's input
        return self.b.support

    def combine(self, x):
        return self.b.combine(x)

    # what is measured: the outer operator's answer, else the inner one's (weights or a selection applied to
    # projection data still measure projections)
    @property
    def sampling(self):
        return self.a.sampling if self.a.sampling is not None else self.b.sampling

    @property
    def angular_coverage(self):
        return self.a.angular_coverage if self.a.angular_coverage is not None else self.b.angular_coverage

    @property
    def n_views(self):
        return self.a.n_views if self.a.n_views is not None else self.b.n_views

    @property
    def name(self) -> str:
        return f"({self.a.name} @ {self.b.name})"


def _as_scalar(c):
    """A Python number from an int/float/complex or a one-element tensor; anything else is a TypeError."""
    if isinstance(c, torch.Tensor):
        if c.numel() != 1:
            raise TypeError(f"an operator can only be scaled by a scalar, got a tensor of shape {tuple(c.shape)}; "
                            "use Multiply for elementwise weights")
        c = c.item()
    if isinstance(c, bool) or not isinstance(c, numbers.Number):
        raise TypeError(f"an operator can only be scaled by a number, got {type(c).__name__} {c!r}")
    if not math.isfinite(abs(c)):
        raise ValueError(f"an operator can only be scaled by a finite number, got {c}")
    return c


class Scaled(Linop):
    """c A for a scalar c (complex allowed): ``c * A``. Forwards the whole operator contract exactly:
    ||c A|| = |c| ||A||, (c A)^+ y = A^+ (y / c), A's support, coil combination, noise estimate and what it
    samples."""

    def __init__(self, op: Linop, c):
        c = _as_scalar(c)
        super().__init__(op.ishape, op.oshape)
        self.op, self.c = op, c

    def _apply(self, x):
        return self.op._apply(x) * self.c

    def _adjoint(self, y):
        return self.op._adjoint(y) * (self.c.conjugate() if isinstance(self.c, complex) else self.c)

    def _normal(self, x):
        return self.op._normal(x) * (abs(self.c) ** 2)

    def norm(self, like=None) -> float:
        return abs(self.c) * self.op.norm(like)

    def _pinv(self, y):
        if self.c == 0:
            return torch.zeros_like(self.op._adjoint(y))
        return self.op._pinv(y / self.c)

    @property
    def pinv_method(self) -> str:
        return self.op.pinv_method

    @property
    def input_dtype(self):
        return self.op.input_dtype

    @property
    def support(self):
        return self.op.support

    def combine(self, x):
        return self.op.combine(x)

    def noise_std(self, y):
        return self.op.noise_std(y)

    @property
    def sampling(self):
        return self.op.sampling

    @property
    def angular_coverage(self):
        return self.op.angular_coverage

    @property
    def n_views(self):
        return self.op.n_views

    def __rmul__(self, c) -> Linop:
        return Scaled(self.op, _as_scalar(c) * self.c)

    @property
    def name(self) -> str:
        return f"{self.c:g}*{self.op.name}" if not isinstance(self.c, complex) else f"{self.c}*{self.op.name}"


class Sum(Linop):
    """A + B for operators with the same input and output shapes."""

    def __init__(self, a: Linop, b: Linop):
        if a.ishape != b.ishape or a.oshape != b.oshape:
            raise ShapeError(f"cannot add {a!r} and {b!r}: shapes differ")
        super().__init__(a.ishape, a.oshape)
        self.a, self.b = a, b

    def _apply(self, x):
        return self.a._apply(x) + self.b._apply(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)

    @property
    def input_dtype(self):
        return self.a.input_dtype

    @property
    def support(self):  # a pixel is seen when either term sees it
        sa, sb = self.a.support, self.b.support
        return None if sa is None or sb is None else (sa | sb)

    def combine(self, x):  # both terms act on the same input
        return self.a.combine(x)

    # what is measured, where both terms agree
    @property
    def sampling(self):
        return self.a.sampling if self.a.sampling == self.b.sampling else None

    @property
    def angular_coverage(self):
        cov = self.a.angular_coverage
        return cov if cov == self.b.angular_coverage else None

    @property
    def n_views(self):
        return self.a.n_views if self.a.n_views == self.b.n_views else None

    @property
    def name(self) -> str:
        return f"({self.a.name} + {self.b.name})"


class Identity(Linop):
    """I: the identity on tensors with trailing shape ``shape`` (denoising's forward model)."""

    def __init__(self, shape: Sequence[Optional[int]] = ()):
        super().__init__(shape, shape)

    def _apply(self, x):
        return x

    _adjoint = _apply
    _normal = _apply
    _pinv = _apply

    def norm(self, like=None) -> float:
        return 1.0


class Multiply(Linop):
    """Elementwise multiplication by a fixed tensor ``w`` broadcast against the input: x -> w x.

    The adjoint multiplies by conj(w). ``shape`` (the trailing input shape) defaults to ``w.shape``."""

    def __init__(self, w: torch.Tensor, shape: Optional[Sequence[Optional[int]]] = None):
        shape = tuple(w.shape) if shape is None else tuple(shape)
        try:
            torch.broadcast_shapes(tuple(1 if s is None else s for s in shape), tuple(w.shape))
        except RuntimeError:
            raise ShapeError(f"weights of shape {tuple(w.shape)} do not broadcast to {_fmt(shape)}") from None
        super().__init__(shape, shape)
        self.w = w

    def _apply(self, x):
        return x * self.w

    def _adjoint(self, y):
        return y * self.w.conj()

    def _normal(self, x):
        return x * (self.w.conj() * self.w)

    def norm(self, like=None) -> float:
        return float(self.w.abs().max()) if self.w.numel() else 0.0

    def _pinv(self, y):
        """Exact pseudo-inverse of a diagonal: y / w where w != 0, 0 elsewhere."""
        w2 = (self.w.conj() * self.w).real if self.w.is_complex() else self.w * self.w
        inv = torch.where(w2 > 0, 1 / torch.where(w2 > 0, w2, torch.ones_like(w2)), torch.zeros_like(w2))
        return y * self.w.conj() * inv


def adjoint_error(op: Linop, batch: Sequence[int] = (), dtype=torch.complex64,
                  generator: Optional[torch.Generator] = None, fill: Optional[dict] = None) -> float:
    """Relative adjoint mismatch |<A x, y> - <x, A^H y>| / (||A x|| ||y||) on random x and y.

    ``None`` sizes in the operator's shapes must be given in ``fill`` (position -> size)."""
    fill = fill or {}
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def concrete(shape, key):
        out = []
        for i, s in enumerate(shape):
            if s is None:
                if (key, i) not in fill:
                    raise ValueError(f"size {i} of the {key} shape is free; give it in fill[({key!r}, {i})]")
                s = fill[(key, i)]
            out.append(s)
        return tuple(batch) + tuple(out)

    x = torch.randn(concrete(op.ishape, "i"), generator=g, dtype=dtype)
    y = torch.randn(concrete(op.oshape, "o"), generator=g, dtype=dtype)
    ax = op(x)
    y = y.to(ax.dtype)
    lhs = inner(ax, y, ax.dim())
    rhs = inner(x.to(ax.dtype) if ax.is_complex() else x, op.H(y), x.dim())
    return float((lhs - rhs).abs() / (ax.norm() * y.norm()).clamp_min(1e-30))
