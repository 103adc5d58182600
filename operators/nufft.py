"""Non-uniform FFTs through NUFFT libraries, behind one small interface.

For an image x of shape (H, W) with centred pixel coordinates r = (i - H//2, j - W//2) and frequencies
omega_k in radians per sample (row, column), the two transforms are

    type 2 (forward):  y_k  = sum_r x_r exp(-i omega_k . r)
    type 1 (adjoint):  x_r  = sum_k y_k exp(+i omega_k . r)

without scaling (``operators.noncartesian`` adds the 1/sqrt(H W) that makes them the non-uniform analogue of
the orthonormal ``fft2c``: on grid frequencies omega = 2 pi (u - H//2) / H they equal it).

A ``Plan`` holds one trajectory and one image shape and applies both transforms to batches ``(B, H, W)`` and
``(B, K)`` in the input's precision, with autograd (the backward of one transform is the other). Backends:

- ``"finufft"`` (Barnett, Magland & af Klinteberg, SIAM J. Sci. Comput. 2019): exponential-of-semicircle
  kernel, accuracy ``eps`` as requested (the default 1e-6 gives ~2e-6 relative error against a direct
  non-uniform DFT; double precision goes to ~1e-13, single stops at ~1e-6); CPU only, the fastest here
  (``experiments/bench_nufft.py``).
- ``"torchkbnufft"`` (Muckley et al., ISMRM 2020): Kaiser-Bessel interpolation in pure torch, on any device.
  Its default interpolation table (2^10 entries per unit) leaves a relative error of ~7e-4; this plan uses
  2^14 (~4e-5).

``"auto"`` is finufft for CPU tensors and torchkbnufft for others (or where finufft is not installed).
A backend is a class with ``forward``/``adjoint`` on plain tensors; ``BACKENDS`` maps names to them.
"""
from __future__ import annotations

import torch

__all__ = ["Plan", "BACKENDS", "available", "resolve", "direct_nudft"]

_MAX_CACHED = 8  # finufft plans kept per trajectory (one per batch size and precision)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available() -> list:
    """Backend names whose library is installed."""
    return [name for name, cls in BACKENDS.items() if _installed(cls.module)]


def resolve(backend: str, device: torch.device) -> str:
    """The backend a plan uses on ``device``: ``backend`` itself, or for ``"auto"`` finufft on the CPU and
    torchkbnufft elsewhere (or where finufft is missing)."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown NUFFT backend {backend!r} (expected auto, {', '.join(BACKENDS)})")
        cls = BACKENDS[backend]
        if not _installed(cls.module):
            raise ImportError(f"the NUFFT backend {backend!r} needs the {cls.package} package: "
                              f"pip install {cls.package}")
        if not cls.supports(device):
            raise ValueError(f"the NUFFT backend {backend!r} runs on the CPU only, got data on {device}; use "
                             f"backend='torchkbnufft' (or 'auto') for {device.type} tensors")
        return backend
    for name in ("finufft", "torchkbnufft"):
        cls = BACKENDS[name]
        if cls.supports(device) and _installed(cls.module):
            return name
    raise ImportError("no NUFFT library is installed: pip install finufft (CPU) or torchkbnufft (any device)")


class _Finufft:
    """finufft plans (``finufft.Plan``), one per (type, batch size, precision), on NumPy copies of the data."""

    module = package = "finufft"

    @staticmethod
    def supports(device: torch.device) -> bool:
        return device.type == "cpu"

    def __init__(self, omega: torch.Tensor, shape: tuple, eps: float):
        self.omega, self.shape, self.eps = omega, shape, eps
        self.plans: dict = {}

    def _plan(self, kind: int, n: int, dtype: torch.dtype):
        import finufft

        key = (kind, n, dtype)
        if key not in self.plans:
            if len(self.plans) >= _MAX_CACHED:
                self.plans.pop(next(iter(self.plans)))
            single = dtype == torch.complex64
            real = torch.float32 if single else torch.float64
            eps = max(self.eps, 1e-6) if single else self.eps  # single precision cannot go further
            plan = finufft.Plan(kind, self.shape, n_trans=n, eps=eps, isign=-1 if kind == 2 else 1,
                                dtype="complex64" if single else "complex128", nthreads=torch.get_num_threads())
            pts = self.omega.detach().to("cpu", real)
            plan.setpts(pts[:, 0].contiguous().numpy(), pts[:, 1].contiguous().numpy())
            self.plans[key] = plan
        return self.plans[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().resolve_conj().contiguous()
        out = self._plan(2, data.shape[0], data.dtype).execute(data.numpy())
        return torch.from_numpy(out.reshape(data.shape[0], -1))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        data = y.detach().resolve_conj().contiguous()
        out = self._plan(1, data.shape[0], data.dtype).execute(data.numpy())
        return torch.from_numpy(out.reshape((data.shape[0],) + tuple(self.shape)))


class _TorchKbNufft:
    """torchkbnufft's table interpolation (``KbNufft``/``KbNufftAdjoint``), one pair per device and precision."""

    module = package = "torchkbnufft"
    table_oversamp = 2 ** 14

    @staticmethod
    def supports(device: torch.device) -> bool:
        return True

    def __init__(self, omega: torch.Tensor, shape: tuple, eps: float):
        self.omega, self.shape = omega, shape
        self.ops: dict = {}

    def _ops(self, like: torch.Tensor):
        import torchkbnufft as tkbn

        key = (like.device, like.dtype)
        if key not in self.ops:
            kw = dict(im_size=tuple(self.shape), table_oversamp=self.table_oversamp, dtype=like.dtype)
            om = self.omega.detach().to(like.device, like.real.dtype).T.contiguous()
            self.ops[key] = (tkbn.KbNufft(**kw).to(like.device), tkbn.KbNufftAdjoint(**kw).to(like.device), om)
        return self.ops[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fwd, _, om = self._ops(x)
        return fwd(x[:, None], om)[:, 0]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _, adj, om = self._ops(y)
        return adj(y[:, None], om)[:, 0]


BACKENDS = {"finufft": _Finufft, "torchkbnufft": _TorchKbNufft}


class _Type2(torch.autograd.Function):
    """y = NUFFT(x) with backward x_bar = NUFFT^H(y_bar) (the adjoint: the map is linear)."""

    @staticmethod
    def forward(ctx, x, impl):
        ctx.impl = impl
        return impl.forward(x)

    @staticmethod
    def backward(ctx, grad):
        return _Type1.apply(grad, ctx.impl), None


class _Type1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, impl):
        ctx.impl = impl
        return impl.adjoint(y)

    @staticmethod
    def backward(ctx, grad):
        return _Type2.apply(grad, ctx.impl), None


class Plan:
    """Both transforms for one trajectory ``omega`` (K, 2) and image ``shape`` (H, W), on any batch (B, ...).

    Backends are built lazily per device (``resolve``); finufft is run on NumPy views of CPU tensors inside an
    autograd function, torchkbnufft is torch throughout."""

    def __init__(self, omega: torch.Tensor, shape: tuple, backend: str = "auto", eps: float = 1e-6):
        self.omega, self.shape, self.backend, self.eps = omega, tuple(int(s) for s in shape), backend, eps
        self._impls: dict = {}

    def _impl(self, t: torch.Tensor):
        name = resolve(self.backend, t.device)
        if name not in self._impls:
            self._impls[name] = BACKENDS[name](self.omega, self.shape, self.eps)
        return name, self._impls[name]

    def backend_for(self, device) -> str:
        return resolve(self.backend, torch.device(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, K): sum_r x_r exp(-i omega_k . r)."""
        name, impl = self._impl(x)
        if name == "torchkbnufft":
            return impl.forward(x)
        return _Type2.apply(x, impl)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """(B, K) -> (B, H, W): sum_k y_k exp(+i omega_k . r)."""
        name, impl = self._impl(y)
        if name == "torchkbnufft":
            return impl.adjoint(y)
        return _Type1.apply(y, impl)


def direct_nudft(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """The type-2 sum evaluated directly, O(K H W): the reference the libraries are tested against."""
    h, w = x.shape[-2:]
    r = (torch.arange(h, dtype=omega.dtype) - h // 2)
    c = (torch.arange(w, dtype=omega.dtype) - w // 2)
    phase = omega[:, 0, None, None] * r[None, :, None] + omega[:, 1, None, None] * c[None, None, :]
    return (x[..., None, :, :] * torch.exp(-1j * phase).to(x.dtype)).sum((-2, -1))

