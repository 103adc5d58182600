"""Procedural CT phantoms: random axial body slices with CT intensities, drawn from an explicit generator.

Each phantom is built from ellipses in Hounsfield units (HU): air around the body, a body outline with a
subcutaneous fat layer, soft tissue, and then, by region, either a thorax (two lungs, heart, aorta, ribs,
spine) or an abdomen (liver, spleen, kidneys, bowel gas, spine), plus a few round lesions that are brighter
or darker than their organ. Shapes, sizes, positions and intensities vary per phantom; a weak smooth tissue
texture is added, and the image is rendered at twice the resolution and averaged down (partial volume).

- ``ct_phantom(n, size, generator, region="mixed")``: (n, size, size) float32 HU images.
- ``ct_phantom_stack(n_slices, size, generator)``: a z-coherent stack of one phantom (spherical lesions).
- ``hu_to_mu(hu)`` / ``mu_to_hu(mu)``: HU <-> attenuation relative to water (mu/mu_water = 1 + HU/1000),
  the unit of the CT prior and of the CT operators' images (line integrals per pixel in units of mu_water).
- ``shepp_logan(size)``: the modified Shepp-Logan phantom (Toft's contrast-enhanced values), for tests.

Intensities (HU): air -1000, lung -850, fat -100, soft tissue 40, liver 60, spleen 50, kidney 30,
blood 45 (contrast-free), cortical bone 700-1200, cancellous bone 200-300.
"""
from __future__ import annotations

import math

import torch

REGIONS = ("thorax", "abdomen", "mixed")


def hu_to_mu(hu: torch.Tensor) -> torch.Tensor:
    return 1.0 + hu / 1000.0


def mu_to_hu(mu: torch.Tensor) -> torch.Tensor:
    return (mu - 1.0) * 1000.0


def _u(g, lo, hi):
    return lo + (hi - lo) * torch.rand((), generator=g).item()


class _Canvas:
    def __init__(self, size: int):
        t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # [-1, 1]
        self.y, self.x = torch.meshgrid(t, t, indexing="ij")
        self.img = torch.full((size, size), -1000.0)

    def ellipse(self, cx, cy, a, b, theta=0.0):
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = self.x - cx, self.y - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    def set(self, mask, hu):
        self.img[mask] = hu


def _one(size: int, g: torch.Generator, region: str, z: float = 0.0) -> torch.Tensor:
    cv = _Canvas(2 * size)
    if region == "mixed":
        region = "thorax" if torch.rand((), generator=g).item() < 0.5 else "abdomen"
    # body outline, with fat layer
    bx, by = _u(g, 0.72, 0.92) * (1 + 0.3 * z), _u(g, 0.5, 0.7) * (1 + 0.3 * z)
    cx, cy = _u(g, -0.04, 0.04), _u(g, -0.04, 0.06)
    rot = _u(g, -0.08, 0.08)
    body = cv.ellipse(cx, cy, bx, by, rot)
    fat = _u(g, 0.04, 0.12)
    cv.set(body, _u(g, -120, -80))
    inner = cv.ellipse(cx, cy, bx - fat, by - fat * 0.9, rot)
    cv.set(inner, _u(g, 30, 50))
    ax, ay = bx - fat, by - fat * 0.9  # inner half axes
    # spine (posterior = bottom of the image)
    sy = cy + ay * _u(g, 0.55, 0.7)
    sr = _u(g, 0.07, 0.1)
    cv.set(cv.ellipse(cx, sy, sr, sr * _u(g, 0.85, 1.05)), _u(g, 700, 1100))
    cv.set(cv.ellipse(cx, sy, sr * 0.7, sr * 0.65), _u(g, 200, 300))
    cv.set(cv.ellipse(cx, sy + sr * 1.35, sr * 0.35, sr * 0.55), _u(g, 600, 1000))  # spinous process
    organs = []
    if region == "thorax":
        for side in (-1, 1):
            lx = cx + side * ax * _u(g, 0.42, 0.52)
            la, lb = ax * _u(g, 0.3, 0.4), ay * _u(g, 0.55, 0.72)
            lung = cv.ellipse(lx, cy + _u(g, -0.05, 0.05), la, lb, side * _u(g, 0.0, 0.25))
            cv.set(lung, _u(g, -880, -820))
            organs.append((lx, cy, la, lb, -850.0))
        hx, hy = cx + ax * _u(g, 0.0, 0.15), cy - ay * _u(g, 0.0, 0.2)
        ha, hb = ax * _u(g, 0.22, 0.3), ay * _u(g, 0.3, 0.42)
        cv.set(cv.ellipse(hx, hy, ha, hb, _u(g, -0.5, 0.5)), _u(g, 35, 50))
        organs.append((hx, hy, ha, hb, 45.0))
        ar = _u(g, 0.035, 0.05)
        cv.set(cv.ellipse(cx + _u(g, -0.03, 0.05), sy - sr - ar * 1.4, ar, ar), _u(g, 40, 50))
        n_ribs = int(_u(g, 6, 11))
        for k in range(n_ribs):
            phi = math.pi * (0.15 + 0.7 * k / max(n_ribs - 1, 1)) + _u(g, -0.05, 0.05)
            phi = phi if k % 2 == 0 else -phi
            rx, ry = cx + (ax - 0.02) * math.cos(phi), cy + (ay - 0.02) * math.sin(phi)
            rr = _u(g, 0.018, 0.03)
            cv.set(cv.ellipse(rx, ry, rr * 1.5, rr, phi + math.pi / 2), _u(g, 600, 1000))
    else:
        lva, lvb = ax * _u(g, 0.4, 0.55), ay * _u(g, 0.45, 0.65)
        lvx, lvy = cx - ax * _u(g, 0.3, 0.45), cy - ay * _u(g, 0.05, 0.25)
        cv.set(cv.ellipse(lvx, lvy, lva, lvb, _u(g, -0.4, 0.2)), _u(g, 50, 70))
        organs.append((lvx, lvy, lva * 0.7, lvb * 0.7, 60.0))
        spx, spy = cx + ax * _u(g, 0.5, 0.65), cy + ay * _u(g, -0.1, 0.2)
        spa, spb = ax * _u(g, 0.14, 0.22), ay * _u(g, 0.22, 0.35)
        cv.set(cv.ellipse(spx, spy, spa, spb, _u(g, -0.6, 0.6)), _u(g, 40, 55))
        organs.append((spx, spy, spa * 0.7, spb * 0.7, 50.0))
        for side in (-1, 1):
            kx, ky = cx + side * ax * _u(g, 0.3, 0.4), sy - _u(g, 0.0, 0.08)
            ka, kb = ax * _u(g, 0.09, 0.13), ay * _u(g, 0.16, 0.24)
            cv.set(cv.ellipse(kx, ky, ka, kb, side * _u(g, 0.2, 0.6)), _u(g, 25, 40))
            cv.set(cv.ellipse(kx + side * ka * 0.3, ky, ka * 0.35, kb * 0.35), _u(g, -10, 10))
        ar = _u(g, 0.03, 0.045)
        cv.set(cv.ellipse(cx + _u(g, 0.02, 0.08), sy - sr - ar * 1.5, ar, ar), _u(g, 40, 50))
        for _ in range(int(_u(g, 0, 4))):  # bowel gas
            gx, gy = cx + ax * _u(g, -0.1, 0.6), cy - ay * _u(g, 0.2, 0.7)
            gr = _u(g, 0.03, 0.08)
            cv.set(cv.ellipse(gx, gy, gr * _u(g, 1, 1.6), gr, _u(g, 0, 3)), _u(g, -950, -800))
    for _ in range(int(_u(g, 0, 4))):  # lesions inside an organ or the soft tissue
        if organs and torch.rand((), generator=g).item() < 0.7:
            ox, oy, oa, ob, base = organs[int(torch.randint(len(organs), (), generator=g))]
        else:
            ox, oy, oa, ob, base = cx, cy - ay * 0.3, ax * 0.4, ay * 0.3, 40.0
        rr, th = math.sqrt(_u(g, 0, 1)) * 0.8, _u(g, 0, 2 * math.pi)
        lx, ly = ox + rr * oa * math.cos(th), oy + rr * ob * math.sin(th)
        lr, lz = _u(g, 0.015, 0.05), _u(g, -0.05, 0.05)  # a sphere of radius lr centred at height lz
        lr = math.sqrt(max(lr ** 2 - (z - lz) ** 2, 0.0))
        contrast = _u(g, 25, 90) * (1 if torch.rand((), generator=g).item() < 0.5 else -1)
        hu = base + contrast if base > -500 else _u(g, 0, 60)  # a nodule in the lung is soft tissue
        ecc, rot_l = _u(g, 0.8, 1.25), _u(g, 0, 3)
        if lr > 0:
            cv.set(cv.ellipse(lx, ly, lr * ecc, lr, rot_l), hu)
    img = cv.img
    # weak smooth texture inside the body
    tex = torch.randn((1, 1, size // 4, size // 4), generator=g)
    tex = torch.nn.functional.interpolate(tex, size=(2 * size, 2 * size), mode="bicubic", align_corners=False)[0, 0]
    img = img + torch.where(body, 8.0 * tex, torch.zeros_like(tex))
    return torch.nn.functional.avg_pool2d(img[None, None], 2)[0, 0]


def ct_phantom(n: int, size: int = 128, generator: torch.Generator = None, region: str = "mixed") -> torch.Tensor:
    """``n`` random phantoms (n, size, size) in HU. ``region``: thorax, abdomen or mixed (half each)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    if generator is None:
        raise ValueError("ct_phantom needs an explicit torch.Generator (randomness is explicit)")
    return torch.stack([_one(size, generator, region) for _ in range(n)])


def ct_phantom_stack(n_slices: int, size: int = 128, generator: torch.Generator = None, region: str = "mixed",
                     spacing: float = 0.01) -> torch.Tensor:
    """A coherent stack (n_slices, size, size) in HU: one random phantom cut at heights z = (k - (n-1)/2) spacing
    (in units of half the field of view), so lesions are spheres that grow and shrink across slices and the
    body outline changes slowly."""
    if generator is None:
        raise ValueError("ct_phantom_stack needs an explicit torch.Generator (randomness is explicit)")
    if region not in REGIONS or n_slices < 1:
        raise ValueError(f"need region in {REGIONS} and n_slices >= 1, got {region!r}, {n_slices}")
    state = generator.get_state()
    out = []
    for k in range(n_slices):
        generator.set_state(state)
        out.append(_one(size, generator, region, (k - (n_slices - 1) / 2) * spacing))
    return torch.stack(out)


# (intensity, a, b, x0, y0, phi in degrees): the modified Shepp-Logan phantom of Toft (1996)
_SHEPP_LOGAN = [(1.0, 0.69, 0.92, 0.0, 0.0, 0.0), (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
                (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0), (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
                (0.1, 0.21, 0.25, 0.0, 0.35, 0.0), (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
                (0.1, 0.046, 0.046, 0.0, -0.1, 0.0), (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
                (0.1, 0.023, 0.023, 0.0, -0.606, 0.0), (0.1, 0.023, 0.046, 0.06, -0.605, 0.0)]


def shepp_logan(size: int = 128) -> torch.Tensor:
    """The modified Shepp-Logan phantom (size, size), values in [0, 1], y axis pointing up as usual."""
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-t, t, indexing="ij")
    img = torch.zeros(size, size, dtype=torch.float64)
    for v, a, b, x0, y0, phi in _SHEPP_LOGAN:
        c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        u, w = c * (x - x0) + s * (y - y0), -s * (x - x0) + c * (y - y0)
        img += v * (((u / a) ** 2 + (w / b) ** 2) <= 1)
    return img.clamp_min(0).float()
