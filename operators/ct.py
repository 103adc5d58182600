"""CT forward models: parallel- and fan-beam line integrals (Joseph's ray-driven method) with exact adjoints.

Image coordinates: pixel (i, j) of an (H, W) image has centre (x, y) = (j - (W-1)/2, (H-1)/2 - i) in pixel
units (x to the right, y up). A ray is a point p0 and a unit direction d; its line integral is approximated
by Joseph's method (Joseph, IEEE TMI 1982): step through the rows (or the columns, whichever the ray crosses
more steeply), interpolate linearly between the two nearest pixel centres of that row, and multiply by the
path length per row, 1/|d_y| (or 1/|d_x|). The projector is a sparse linear map applied on the fly; its adjoint
(the backprojection) scatters with the same weights, so <A x, y> = <x, A^H y> holds to rounding. The weights
are computed once per device and dtype and kept as a sparse CSR matrix and its transpose (about 20x faster
than tracing the rays at every call); beyond ``max_matrix_entries`` the rays are traced on the fly. For CUDA
float32 tensors the same line integrals and their adjoint run as CuPy kernels (``kernels.radon``) when usable.

- ``ParallelBeamCT(img_size, angles, n_detectors, detector_spacing)``: detector direction
  n = (cos th, sin th), ray direction d = (-sin th, cos th), detector offsets t centred on the rotation centre.
- ``FanBeamCT(img_size, angles, source_distance, detector_distance, n_detectors, detector_spacing)``: a flat
  detector; the source at distance ``source_distance`` from the centre opposite the detector, which is at
  ``detector_distance`` (torch-radon's geometry).
- ``fbp(sinogram, op, filter)``: filtered backprojection with the ramp filter (Kak & Slaney's band-limited
  discrete ramp) windowed by "ramp", "shepp-logan", "cosine", "hamming" or "hann".
- ``angles(n=None, views=None, limited=None)``: full, sparse-view and limited-angle angle sets.

The API mirrors torch-radon's (``forward``, ``backprojection``, ``filter_sinogram``). Sinograms are
``(..., n_angles, n_detectors)`` float32; images ``(..., H, W)``.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch

import kernels

from . import checks
from .linop import Linop, ShapeError


def angles(n: Optional[int] = None, views: Optional[int] = None, limited: Optional[Sequence[float]] = None,
           full: float = 180.0) -> torch.Tensor:
    """Projection angles in radians: ``n`` (or ``views``, sparse-view) equally spaced over [0, full) degrees,
    or over the ``limited=(start, stop)`` degree range (limited angle; ``n`` defaults to one per degree)."""
    if views is not None and n is not None:
        raise ValueError("give n or views, not both")
    name = "views" if views is not None else "n"
    n = views if views is not None else n
    checks.check_real("full", full, above=0.0, maximum=360.0)
    if limited is None:
        lo, hi = 0.0, float(full)
    else:
        if isinstance(limited, (str, bytes)) or len(limited) != 2:
            raise ValueError(f"limited must be (start, stop) in degrees, got {limited!r}")
        lo, hi = (checks.check_real(f"limited {w}", v, minimum=-360.0, maximum=720.0)
                  for w, v in zip(("start", "stop"), limited))
        if not 0 < hi - lo <= 360:
            raise ValueError(f"limited must be (start, stop) degrees with 0 < stop - start <= 360, "
                             f"got {lo:g},{hi:g}")
    if n is None:
        n = max(int(round(hi - lo)), 1)
    checks.check_int(name, n, 1, MAX_ANGLES)
    return torch.deg2rad(torch.linspace(lo, hi, n + 1, dtype=torch.float64)[:-1])


MAX_ANGLES = 3600  # 0.05 degree spacing over 180 degrees; more views than this are a mistake, not a scan

_angle_set = angles  # the module function, under a name the constructors' ``angles`` argument does not hide


def _size(img_size) -> tuple:
    s = (img_size, img_size) if checks.is_int(img_size) else tuple(img_size)
    if len(s) != 2 or not all(checks.is_int(v) and v >= 2 for v in s):
        raise ValueError(f"img_size must be an int or (H, W) with sides >= 2, got {img_size}")
    return s


class _SparseMatmul(torch.autograd.Function):
    """rows of x (B, n) -> (M x^T)^T with the gradient through M^T (M and M^T given as CSR)."""

    @staticmethod
    def forward(ctx, x, m, mt):
        ctx.mt, ctx.m = mt, m
        return (m @ x.T).T

    @staticmethod
    def backward(ctx, g):
        return _SparseMatmul.apply(g.contiguous(), ctx.mt, ctx.m), None, None


class _RayCT(Linop):
    """Joseph's projector for a fixed set of rays (origins ``p0`` and unit directions ``d``, (A, D, 2)). Subclasses
    set ``angles`` (radians, one per view) and ``period``: the angle in degrees after which the views repeat."""

    sampling = "projection"
    period = 180.0
    chunk = 8  # angles per gather, bounds the memory of the index tensors
    # above this bound on the entries (2 max(H, W) per ray) the projector is traced on the fly instead of stored;
    # with 32-bit indices an entry of M and of M^T takes 8 bytes each, so the bound is 2.4 GB (the real count is
    # about 60% of it: 512 x 512 with 120 views stores 1.2 GB, where tracing would be 20x slower)
    max_matrix_entries = 150_000_000

    def __init__(self, img_size, p0: torch.Tensor, d: torch.Tensor):
        self.h, self.w = _size(img_size)
        self.p0, self.d = p0.to(torch.float64), d.to(torch.float64)
        super().__init__((self.h, self.w), tuple(p0.shape[:2]))

    def _plan(self, a0: int, a1: int, device, dtype):
        """Flat pixel indices (2 neighbours) and weights for angles a0..a1: (n, D, L) each."""
        p0, d = self.p0[a0:a1].to(device), self.d[a0:a1].to(device)
        steep = d[..., 1].abs() >= d[..., 0].abs()          # step through rows
        h, w = self.h, self.w
        L = max(h, w)
        k = torch.arange(L, device=device, dtype=torch.float64)
        # rows: y_k = (h-1)/2 - k ; columns: x_k = k - (w-1)/2
        yk = ((h - 1) / 2 - k)[None, None]
        xk = (k - (w - 1) / 2)[None, None]
        dy = torch.where(steep, d[..., 1], torch.ones_like(d[..., 1]))[..., None]
        dx = torch.where(steep, torch.ones_like(d[..., 0]), d[..., 0])[..., None]
        s_row = (yk - p0[..., 1, None]) / dy
        s_col = (xk - p0[..., 0, None]) / dx
        # position along the other axis, in index units
        col_pos = p0[..., 0, None] + s_row * d[..., 0, None] + (w - 1) / 2      # fractional column index
        row_pos = (h - 1) / 2 - (p0[..., 1, None] + s_col * d[..., 1, None])    # fractional row index
        st = steep[..., None]
        pos = torch.where(st, col_pos, row_pos)
        lo = torch.floor(pos)
        frac = pos - lo
        lo = lo.long()
        n_other = torch.where(st, torch.full_like(lo, w), torch.full_like(lo, h))
        n_step = torch.where(st, torch.full_like(lo, h), torch.full_like(lo, w))
        kk = k.long()[None, None].expand_as(lo)
        valid_k = kk < n_step
        step_len = 1.0 / torch.where(steep, d[..., 1].abs(), d[..., 0].abs())[..., None]
        idx, wts = [], []
        for off, wt in ((0, 1 - frac), (1, frac)):
            other = lo + off
            ok = valid_k & (other >= 0) & (other < n_other)
            flat = torch.where(st, kk * w + other, other * w + kk)
            idx.append(torch.where(ok, flat, torch.zeros_like(flat)))
            wts.append(torch.where(ok, wt * step_len, torch.zeros_like(wt)).to(dtype))
        return idx, wts

    def _matrix(self, device, dtype):
        """The projector as CSR sparse matrices (M, M^T), built once per device and dtype (None when too big;
        then the rays are traced on the fly)."""
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_csr", {})
        if key not in cache:
            n_rays = self.oshape[0] * self.oshape[1]
            if n_rays * 2 * max(self.h, self.w) > self.max_matrix_entries:
                cache[key] = None
                return None
            cols, vals, counts = [], [], []
            for a0 in range(0, self.oshape[0], self.chunk):  # rays in order, so rows come out sorted
                a1 = min(a0 + self.chunk, self.oshape[0])
                idx, wts = self._plan(a0, a1, device, dtype)
                i, wt = torch.cat(idx, -1), torch.cat(wts, -1)
                keep = wt != 0
                counts.append(keep.sum(-1).reshape(-1))
                cols.append(i[keep])
                vals.append(wt[keep])
            cnt = torch.cat(counts)
            nnz = int(cnt.sum())
            itype = torch.int32 if max(nnz, n_rays, self.h * self.w) < 2 ** 31 - 1 else torch.long
            crow = torch.zeros(n_rays + 1, dtype=itype, device=device)
            crow[1:] = cnt.cumsum(0).to(itype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                m = torch.sparse_csr_tensor(crow, torch.cat(cols).to(itype), torch.cat(vals),
                                            (n_rays, self.h * self.w), check_invariants=False)
                csc = m.to_sparse_csc()  # the CSC arrays of M are the CSR arrays of M^T
                mt = torch.sparse_csr_tensor(csc.ccol_indices(), csc.row_indices(), csc.values(),
                                             (self.h * self.w, n_rays), check_invariants=False)
            cache[key] = (m, mt)
        return cache[key]

    def _apply(self, x):
        out = kernels.radon.project(x, self.p0, self.d, self.__dict__.setdefault("_kernel_rays", {}))
        if out is not None:  # CUDA kernel; None: the torch reference below
            return out
        mats = None if x.is_complex() else self._matrix(x.device, x.dtype)
        if mats is not None:
            lead = x.shape[:-2]
            out = _SparseMatmul.apply(x.reshape(-1, self.h * self.w), mats[0], mats[1])
            return out.reshape(lead + self.oshape)
        return self._trace(x)

    def _adjoint(self, y):
        out = kernels.radon.backproject(y, self.p0, self.d, self.h, self.w,
                                        self.__dict__.setdefault("_kernel_rays", {}))
        if out is not None:
            return out
        mats = None if y.is_complex() else self._matrix(y.device, y.dtype)
        if mats is not None:
            lead = y.shape[:-2]
            out = _SparseMatmul.apply(y.reshape(-1, self.oshape[0] * self.oshape[1]), mats[1], mats[0])
            return out.reshape(lead + (self.h, self.w))
        return self._backtrace(y)

    def _trace(self, x):
        lead = x.shape[:-2]
        xf = x.reshape(-1, self.h * self.w)
        out = []
        for a0 in range(0, self.oshape[0], self.chunk):
            a1 = min(a0 + self.chunk, self.oshape[0])
            idx, wts = self._plan(a0, a1, x.device, x.dtype)
            acc = 0
            for i, wt in zip(idx, wts):
                acc = acc + (xf[:, i.reshape(-1)].reshape((xf.shape[0],) + i.shape) * wt).sum(-1)
            out.append(acc)
        return torch.cat(out, dim=1).reshape(lead + self.oshape)

    def _backtrace(self, y):
        lead = y.shape[:-2]
        yf = y.reshape((-1,) + self.oshape)
        img = torch.zeros(yf.shape[0], self.h * self.w, dtype=y.dtype, device=y.device)
        for a0 in range(0, self.oshape[0], self.chunk):
            a1 = min(a0 + self.chunk, self.oshape[0])
            idx, wts = self._plan(a0, a1, y.device, y.dtype)
            ys = yf[:, a0:a1, :, None]
            for i, wt in zip(idx, wts):
                vals = (ys * wt).reshape(yf.shape[0], -1)
                img.index_add_(1, i.reshape(-1), vals)
        return img.reshape(lead + (self.h, self.w))

    # the operator contract: the norm by power iteration on real images, FBP as the pseudo-inverse
    input_dtype = torch.float32
    pinv_method = "fbp"

    def _pinv(self, y):
        return fbp(y, self)

    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def angular_coverage(self) -> float:
        """The angular range (degrees) that the views cover: the ``period`` less the largest gap between
        neighbouring views, plus one typical spacing (the median gap). 180 for any full parallel-beam set, sparse
        or not; 120 for one view per degree over 0-120 degrees; 0 for a single view."""
        th = torch.sort(torch.remainder(torch.rad2deg(self.angles.double()), self.period)).values
        if len(th) < 2:
            return 0.0
        gaps = torch.diff(torch.cat([th, th[:1] + self.period]))
        return float(self.period - gaps.max() + gaps.median())

    # torch-radon's names
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def backprojection(self, sinogram: torch.Tensor) -> torch.Tensor:
        return self.H(sinogram)


def _angles_of(angles, full: float) -> torch.Tensor:
    """A constructor's ``angles``: a count (equally spaced over ``full`` degrees) or a 1-D tensor of radians."""
    if checks.is_int(angles):
        return _angle_set(angles, full=full)
    if isinstance(angles, (list, tuple)):
        angles = np.asarray(angles, dtype=np.float64)
    th = checks.as_tensor("angles", angles).to(torch.float64)
    if th.dim() != 1 or len(th) < 1 or len(th) > MAX_ANGLES:
        raise ValueError(f"angles must be a count or a 1-D tensor of 1..{MAX_ANGLES} radians, got shape "
                         f"{tuple(th.shape)}")
    checks.check_finite_tensor("angles", th)
    return th


class ParallelBeamCT(_RayCT):
    def __init__(self, img_size, angles: Union[int, torch.Tensor], n_detectors: Optional[int] = None,
                 detector_spacing: float = 1.0):
        h, w = _size(img_size)
        th = _angles_of(angles, 180.0)
        n_det = int(math.ceil(math.hypot(h, w))) if n_detectors is None else \
            checks.check_int("n_detectors", n_detectors, 1)
        checks.check_positive("detector_spacing", detector_spacing)
        t = (torch.arange(n_det, dtype=torch.float64) - (n_det - 1) / 2) * detector_spacing
        n = torch.stack([th.cos(), th.sin()], -1)                 # (A, 2)
        d = torch.stack([-th.sin(), th.cos()], -1)
        p0 = t[None, :, None] * n[:, None, :]                      # (A, D, 2)
        super().__init__((h, w), p0, d[:, None, :].expand_as(p0).contiguous())
        self.angles, self.n_detectors, self.detector_spacing = th, n_det, detector_spacing

    def filter_sinogram(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        return filter_sinogram(sinogram, filter, self.detector_spacing)


class FanBeamCT(_RayCT):
    period = 360.0  # a fan-beam view and its opposite see the object from different sources

    def __init__(self, img_size, angles: Union[int, torch.Tensor], source_distance: float,
                 detector_distance: float, n_detectors: Optional[int] = None, detector_spacing: float = 1.0):
        h, w = _size(img_size)
        th = _angles_of(angles, 360.0)
        checks.check_real("source_distance", source_distance)
        if source_distance <= math.hypot(h, w) / 2:
            raise ValueError(f"the source ({source_distance}) must lie outside the image (radius {math.hypot(h, w) / 2:.1f})")
        checks.check_real("detector_distance", detector_distance, minimum=0.0)
        n_det = int(math.ceil(math.hypot(h, w) * (source_distance + detector_distance) / source_distance)) \
            if n_detectors is None else checks.check_int("n_detectors", n_detectors, 1)
        checks.check_positive("detector_spacing", detector_spacing)
        t = (torch.arange(n_det, dtype=torch.float64) - (n_det - 1) / 2) * detector_spacing
        c, s = th.cos(), th.sin()
        src = torch.stack([-source_distance * s, source_distance * c], -1)       # (A, 2): at angle th + 90 deg
        det_c = torch.stack([detector_distance * s, -detector_distance * c], -1)  # opposite side
        u = torch.stack([c, s], -1)                                                # detector direction
        pts = det_c[:, None, :] + t[None, :, None] * u[:, None, :]                 # (A, D, 2)
        d = pts - src[:, None, :]
        d = d / d.norm(dim=-1, keepdim=True)
        super().__init__((h, w), src[:, None, :].expand_as(pts).contiguous(), d)
        self.angles, self.n_detectors, self.detector_spacing = th, n_det, detector_spacing
        self.source_distance, self.detector_distance = source_distance, detector_distance

    @property
    def virtual_spacing(self) -> float:
        """Detector spacing scaled to the virtual detector through the rotation centre."""
        return self.detector_spacing * self.source_distance / (self.source_distance + self.detector_distance)

    def filter_sinogram(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Fan-beam cosine weighting R / sqrt(R^2 + t'^2) and ramp filtering on the virtual detector."""
        t = (torch.arange(self.n_detectors, dtype=torch.float64) - (self.n_detectors - 1) / 2) * self.virtual_spacing
        cosw = (self.source_distance / torch.sqrt(self.source_distance ** 2 + t ** 2)).to(sinogram.dtype)
        return filter_sinogram(sinogram * cosw.to(sinogram.device), filter, self.virtual_spacing)

    def weighted_backprojection(self, q: torch.Tensor) -> torch.Tensor:
        """sum_beta q_beta(t'(x)) / U(x, beta)^2 (pixel-driven, linear interpolation on the virtual detector),
        with t' = R (x.u) / (R + x.c) and U = (R + x.c) / R (Kak & Slaney, Sect. 3.4)."""
        h, w = self.h, self.w
        yy, xx = torch.meshgrid((h - 1) / 2 - torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64) - (w - 1) / 2, indexing="ij")
        pos = torch.stack([xx.flatten(), yy.flatten()], -1).to(q.device)             # (P, 2)
        lead = q.shape[:-2]
        qf = q.reshape((-1,) + tuple(q.shape[-2:]))
        img = torch.zeros(qf.shape[0], h * w, dtype=q.dtype, device=q.device)
        R = self.source_distance
        for a0 in range(0, len(self.angles), self.chunk):
            th = self.angles[a0:a0 + self.chunk].to(q.device)
            u = torch.stack([th.cos(), th.sin()], -1)                                  # (a, 2)
            c = torch.stack([th.sin(), -th.cos()], -1)
            xc = R + pos @ c.T                                                           # (P, a)
            tp = R * (pos @ u.T) / xc
            idx = tp / self.virtual_spacing + (self.n_detectors - 1) / 2
            lo = idx.floor()
            frac = (idx - lo).to(q.dtype)
            lo = lo.long()
            wgt = ((R / xc) ** 2).to(q.dtype)
            for off, wt in ((0, 1 - frac), (1, frac)):
                k = lo + off
                ok = (k >= 0) & (k < self.n_detectors)
                kk = torch.where(ok, k, torch.zeros_like(k))                             # (P, a)
                rows = torch.arange(a0, a0 + len(th), device=q.device)[None, :].expand_as(kk)
                vals = qf[:, rows, kk]                                                     # (B, P, a)
                img += (vals * (wt * wgt * ok)).sum(-1)
        return img.reshape(lead + (h, w))


FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def filter_sinogram(sinogram: torch.Tensor, filter: str = "ramp", spacing: float = 1.0) -> torch.Tensor:
    """Filter each projection (last dim) with the band-limited ramp (Kak & Slaney Eq. 61: h(0) = 1/4,
    h(n) = -1/(pi n)^2 for odd n, 0 for even n) times a window, zero-padded to avoid wrap-around."""
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; expected one of {FILTERS}")
    n = sinogram.shape[-1]
    size = max(64, int(2 ** math.ceil(math.log2(2 * n))))
    k = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-size // 2 + 1, 0)]).double()
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    ramp = 2 * torch.fft.fft(h).real                           # |f| for the discrete, band-limited ramp
    f = torch.fft.fftfreq(size, dtype=torch.float64)          # cycles per sample, in [-0.5, 0.5)
    w = {"ramp": torch.ones_like(f),
         "shepp-logan": torch.special.sinc(f),
         "cosine": torch.cos(math.pi * f),
         "hamming": 0.54 + 0.46 * torch.cos(2 * math.pi * f),
         "hann": 0.5 + 0.5 * torch.cos(2 * math.pi * f)}[filter]
    resp = (ramp * w / spacing).to(sinogram.device)
    pad = torch.nn.functional.pad(sinogram.to(torch.float64), (0, size - n))
    out = torch.fft.ifft(torch.fft.fft(pad, dim=-1) * resp, dim=-1).real[..., :n]
    return out.to(sinogram.dtype)


def fbp(sinogram: torch.Tensor, op: _RayCT, filter: str = "ramp") -> torch.Tensor:
    """Filtered backprojection. Parallel beam over [0, pi): A^H of the filtered sinogram times pi / (2 n_angles)
    (the normalisation of Kak & Slaney's discrete filter, as in scikit-image's iradon). Fan beam over
    [0, 2 pi): cosine-weighted, filtered on the virtual detector, and backprojected with the 1/U^2 distance
    weight, times 2 pi / (4 n_angles) (every line is seen twice)."""
    if tuple(sinogram.shape[-2:]) != tuple(op.oshape):
        raise ShapeError(f"sinogram of shape {tuple(sinogram.shape)} does not match the operator's "
                         f"(..., {op.oshape[0]}, {op.oshape[1]})")
    filt = op.filter_sinogram(sinogram, filter)
    n = op.oshape[0]
    span = float(op.angles[-1] - op.angles[0]) * n / max(n - 1, 1) if n > 1 else math.pi
    if isinstance(op, FanBeamCT):
        return op.weighted_backprojection(filt) * (span / (4 * n))
    return op.H(filt) * (span / (2 * n))
