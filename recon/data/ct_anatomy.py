"""Anatomical CT slices for training CT priors: heads and bodies in Hounsfield units, drawn from an explicit generator.

Where ``recon.data.phantoms`` draws piecewise-constant ellipse phantoms, this module draws slices that look like
patients: layered tissues whose boundaries wander, textured soft tissue, bone with a cortical shell and
trabecular marrow, lungs with vessels, optional metal, a patient table and correlated CT noise.

Coordinates are in units of half the field of view (the image spans [-1, 1]); rows run posterior-wards (the
patient's anterior side is at the top, the patient's right at the image's left, as radiologists view axial CT).
Every slice is drawn on a grid warped by a smooth random displacement field (an elastic deformation), at twice the
output resolution, and averaged down (partial volume), then correlated noise is added and HU are clipped to the
scanner range [-1024, 3071].

Head slices (``region="head"``), at one of four levels:
- ``vertex``: a small section of cortex below the calvaria;
- ``ventricles``: cerebrum with grey/white matter (white 6-12 HU darker than grey), cortical ribbon with sulci,
  lateral ventricles (butterfly), third ventricle, falx, choroid calcifications;
- ``base``: skull base in the spirit of the FORBILD head phantom (Lauritsch & Bruder): orbits with eyeballs and
  lenses in orbital fat, ethmoid/nasal air cells with thin bony septa, sphenoid sinus, dense petrous bones with
  mastoid air cells, temporal lobes, brainstem and cerebellum;
- ``jaw``: maxilla/mandible with a dental arch (enamel and dentin), tongue, airway, neck muscles, cervical spine.
The skull has an outer and inner cortical table (1300-1900 HU) and diploe (400-900 HU), of varying thickness.

Body slices (``region="body"``), at one of three levels:
- ``thorax``: lungs (-900..-780 HU) with a vessel texture, heart, aorta, trachea, oesophagus, mediastinal fat,
  ribs, sternum, scapulae, breast/pectoral tissue;
- ``abdomen``: liver, spleen, kidneys (cortex/medulla), stomach (gas/fluid level), bowel loops (gas, fluid or
  oral contrast), pancreas, aorta, IVC, visceral fat;
- ``pelvis``: iliac wings or femoral heads and acetabula, bladder, rectum, gluteal muscles.
All have skin, a subcutaneous fat layer with fibrous strands, an abdominal/chest wall muscle layer, a vertebra
(body with cortical shell and trabecular texture, canal, pedicles, laminae, spinous and transverse processes) and
paraspinal muscles. Intravenous contrast (vessels, kidneys, heart at 150-350 HU) is on in a fraction.

Implants (``metal`` = probability that a slice is drawn with implants): dental fillings/crowns (jaw level),
pedicle screws (spine), a hip prosthesis (pelvis), an aneurysm clip or burr-hole plate (head), surgical clips
(body): 2500-3071 HU (clinical scanners clip at 3071 HU). Each kind is placed with its own chance, so a body slice
drawn with implants has none in about a quarter of the cases. Their streak artefacts are not simulated.

Noise: white noise shaped like the noise power spectrum of filtered back-projection (ramp x a smooth apodisation,
so the noise is fine-grained and correlated), standard deviation 0 (a fraction ``p_clean``) or 3 to 25 HU.

- ``ct_anatomy(n, size, generator, region="mixed", metal=0.15)``: (n, size, size) float32 HU.
- ``AnatomySource``: the ``ct-anatomy`` training source (``recon.data.sources``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REGIONS = ("head", "body", "mixed")
HEAD_LEVELS = ("vertex", "ventricles", "base", "jaw")
BODY_LEVELS = ("thorax", "abdomen", "pelvis")
HU_MIN, HU_MAX = -1024.0, 3071.0
CROP_ZOOM = (0.25, 0.8)  # field of view of a magnified crop relative to the usual one (about 0.6-2 mm pixels)


def _u(g, lo, hi):
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _p(g, p):
    return torch.rand((), generator=g).item() < p


def _choice(g, items, weights=None):
    w = torch.tensor(weights if weights is not None else [1.0] * len(items))
    return items[int(torch.multinomial(w, 1, generator=g))]


def _smooth_noise(g, size, cells, out=None):
    """Unit-variance smooth random field (size, size): a cells x cells Gaussian grid, bicubic upsampled."""
    z = torch.randn((1, 1, cells, cells), generator=g)
    z = F.interpolate(z, size=(out or size, out or size), mode="bicubic", align_corners=False)[0, 0]
    return z / z.std().clamp_min(1e-6)


class _Canvas:
    """An HU image on a warped grid; shapes are drawn in (warped) object coordinates."""

    def __init__(self, size: int, g: torch.Generator, zoom: float, rot: float, shift, warp: float):
        t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(t, t, indexing="ij")
        c, s = math.cos(rot), math.sin(rot)
        x, y = zoom * (c * x + s * y) + shift[0], zoom * (-s * x + c * y) + shift[1]
        if warp > 0:  # elastic deformation: smooth displacement of the object coordinates
            cells = int(_u(g, 3, 7))
            x = x + warp * _smooth_noise(g, size, cells) * 0.5
            y = y + warp * _smooth_noise(g, size, cells) * 0.5
        self.x, self.y, self.size, self.g = x, y, size, g
        self.img = torch.full((size, size), -1000.0)

    def rho(self, cx, cy, a, b, theta=0.0, p=2.0):
        """Normalised (super-)elliptic radius: <= 1 inside the shape (cx, cy, a, b, theta), exponent p."""
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = self.x - cx, self.y - cy
        u, v = (c * dx + s * dy) / a, (-s * dx + c * dy) / b
        if p == 2.0:
            return torch.sqrt(u * u + v * v)
        return ((u.abs() ** p + v.abs() ** p) ** (1.0 / p))

    def angle(self, cx, cy):
        return torch.atan2(self.y - cy, self.x - cx)

    def ellipse(self, cx, cy, a, b, theta=0.0):
        return self.rho(cx, cy, a, b, theta) <= 1.0

    def wobble(self, phi, amp, k_max=5):
        """A smooth random radial modulation 1 + sum_k c_k cos(k phi + phase) of the angle field ``phi``."""
        g = self.g
        r = torch.ones_like(phi)
        for k in range(2, k_max + 1):
            r = r + amp / k * _u(g, -1, 1) * torch.cos(k * phi + _u(g, 0, 2 * math.pi))
        return r

    def set(self, mask, hu):
        self.img = torch.where(mask, torch.as_tensor(hu, dtype=torch.float32), self.img)

    def add(self, mask, hu):
        self.img = torch.where(mask, self.img + hu, self.img)

    def noise(self, cells):
        return _smooth_noise(self.g, self.size, cells)


# --- bone ----------------------------------------------------------------------------------------------------
def _bone(cv, mask_outer, mask_inner, cortical, marrow):
    """Cortical shell (outer minus inner) and cancellous interior with a trabecular texture."""
    g = cv.g
    cv.set(mask_outer, cortical)
    tr = cv.noise(int(_u(g, 20, 40)))
    cv.set(mask_inner, marrow + _u(g, 60, 140) * torch.tanh(2.0 * tr))


def _vertebra(cv, cx, cy, r, cervical=False):
    """Vertebral body centred (cx, cy), radius r, with the canal and posterior elements behind (larger y)."""
    g = cv.g
    cort, marrow = _u(g, 600, 1100), _u(g, 150, 300)
    e = _u(g, 0.8, 1.0)
    body_o = cv.ellipse(cx, cy, r * (1.1 if not cervical else 1.2), r * e)
    body_i = cv.ellipse(cx, cy, r * 0.85, r * e * 0.8)
    canal_y = cy + r * e + r * 0.55
    # posterior arch: ring around the canal, spinous process, transverse processes
    arch = cv.ellipse(cx, canal_y, r * 0.78, r * 0.68) & ~cv.ellipse(cx, canal_y, r * 0.55, r * 0.46)
    cv.set(arch, cort * 0.9)
    sp_len = r * (_u(g, 0.8, 1.2) if cervical else _u(g, 1.1, 1.9))
    cv.set(cv.ellipse(cx, canal_y + r * 0.6 + sp_len * 0.5, r * 0.18, sp_len * 0.5), cort * 0.85)
    for side in (-1, 1):
        th = side * _u(g, 0.2, 0.5)
        cv.set(cv.ellipse(cx + side * r * 1.1, canal_y - r * 0.1, r * _u(g, 0.6, 0.9), r * 0.16, th), cort * 0.85)
    _bone(cv, body_o, body_i, cort, marrow)
    cv.set(cv.ellipse(cx, canal_y, r * 0.55, r * 0.46), _u(g, 10, 35))  # canal: CSF and cord
    return canal_y


def _pedicle_screws(cv, cx, cy, r):
    g = cv.g
    hu = _u(g, 2500, 3071)
    for side in (-1, 1):
        th = side * _u(g, 0.25, 0.45)
        # a thin rod from behind the lamina into the vertebral body, converging medially
        x0, y0 = cx + side * r * 0.7, cy + r * 2.3
        length = r * _u(g, 2.0, 2.6)
        mx, my = x0 - side * math.sin(abs(th)) * length / 2, y0 - math.cos(th) * length / 2
        cv.set(cv.ellipse(mx, my, r * _u(g, 0.09, 0.14), length / 2, th), hu)


# --- head ----------------------------------------------------------------------------------------------------
def _skull(cv, cx, cy, a, b, rot, phi_field):
    """Scalp, skull (outer table, diploe, inner table); returns the intracranial mask's radius field."""
    g = cv.g
    wob = cv.wobble(phi_field, 0.06)
    rho = cv.rho(cx, cy, a, b, rot) / wob
    scalp = _u(g, 0.025, 0.05) / a
    skull = (_u(g, 0.035, 0.075) / a) * (1 + 0.35 * torch.cos(phi_field * 2 + _u(g, 0, 6.28)))
    head = rho <= 1.0
    cv.set(head, _u(g, 20, 50))
    cv.add(head & (rho > 1 - scalp * 0.5), _u(g, -90, -40))  # subcutaneous fat of the scalp
    r_out = 1 - scalp
    r_in = r_out - skull
    tab = _u(g, 0.25, 0.4)
    cv.set((rho <= r_out) & (rho > r_in), _u(g, 1300, 1900))
    dip = (rho <= r_out - skull * tab) & (rho > r_in + skull * tab)
    cv.set(dip, _u(g, 400, 900) + 120 * cv.noise(40))
    return rho / r_in  # <= 1 inside the skull


def _brain(cv, rb, cx, cy, a, b, level, contrast_fill=False):
    """Grey/white matter, sulci, CSF spaces and (by level) ventricles inside the intracranial mask rb <= 1."""
    g = cv.g
    inside = rb <= 1.0
    grey = _u(g, 32, 45)
    white = grey - _u(g, 6, 12)
    csf = _u(g, 0, 12)
    cv.set(inside, grey)
    gyri = cv.noise(int(_u(g, 10, 18)))
    wm_depth = _u(g, 0.72, 0.86)
    cv.set(inside & (rb + 0.07 * gyri < wm_depth), white)
    sulci = cv.noise(int(_u(g, 14, 24)))
    atrophy = _u(g, 0.0, 1.0)
    cv.set(inside & (rb > 0.8) & (sulci.abs() < 0.08 + 0.12 * atrophy), csf)
    cv.set(inside & (rb > 1 - 0.015 - 0.03 * atrophy), csf)  # extra-axial CSF
    # falx / interhemispheric fissure in the midline (front and back)
    fiss = (cv.x - cx).abs() < _u(g, 0.006, 0.012)
    cv.set(inside & fiss & (rb > _u(g, 0.35, 0.6)), grey + _u(g, 5, 25))
    if level == "ventricles":
        s = _u(g, 0.7, 1.2) * (1 + 0.6 * atrophy)
        vy = cy + _u(g, -0.06, 0.04)
        for side in (-1, 1):
            th = -side * _u(g, 0.15, 0.45)
            cv.set(cv.ellipse(cx + side * a * 0.13 * s, vy - b * 0.12, a * 0.06 * s, b * 0.2 * s, th) & inside, csf)
            cv.set(cv.ellipse(cx + side * a * 0.16 * s, vy + b * 0.2, a * 0.07 * s, b * 0.13 * s, -th) & inside, csf)
            # basal ganglia / thalamus (grey) lateral to the ventricles
            cv.set(cv.ellipse(cx + side * a * 0.33, vy + b * 0.02, a * 0.1, b * 0.15, th * 0.5) & inside,
                   grey + _u(g, -2, 4))
            if _p(g, 0.4):  # choroid plexus calcification
                cv.set(cv.ellipse(cx + side * a * 0.17 * s, vy + b * 0.26, 0.012, 0.012), _u(g, 100, 350))
        cv.set(cv.ellipse(cx, vy + b * 0.05, a * 0.012 * s + 0.004, b * 0.08), csf)  # third ventricle
    elif level == "vertex":
        pass
    return inside


def _head(cv: _Canvas, level: str, metal: bool, contrast: bool):
    g = cv.g
    a = _u(g, 0.6, 0.78) * (_u(g, 0.6, 0.85) if level == "vertex" else 1.0)
    b = a * _u(g, 1.12, 1.32)
    cx, cy, rot = _u(g, -0.05, 0.05), _u(g, -0.05, 0.05), _u(g, -0.12, 0.12)
    if level == "jaw":
        return _jaw(cv, cx, cy, a * _u(g, 0.8, 0.95), b * _u(g, 0.8, 0.95), rot, metal)
    phi = cv.angle(cx, cy)
    rb = _skull(cv, cx, cy, a, b, rot, phi)
    inside = _brain(cv, rb, cx, cy, a, b, level)
    if level == "base":
        _skull_base(cv, rb, cx, cy, a, b)
    if metal:
        if _p(g, 0.5):  # aneurysm clip
            cv.set(cv.ellipse(cx + _u(g, -0.2, 0.2) * a, cy + _u(g, -0.2, 0.2) * b, _u(g, 0.01, 0.02),
                              _u(g, 0.025, 0.05), _u(g, 0, 3)), _u(g, 2500, 3071))
        else:  # burr-hole cover / cranial plate on the skull
            t = _u(g, 0, 2 * math.pi)
            px, py = cx + a * 0.93 * math.cos(t), cy + b * 0.93 * math.sin(t)
            cv.set(cv.ellipse(px, py, 0.06, 0.012, t + math.pi / 2), _u(g, 2500, 3071))
    return inside


def _skull_base(cv, rb, cx, cy, a, b):
    """Orbits, sinuses, petrous bones and posterior fossa, FORBILD-like."""
    g = cv.g
    cort = _u(g, 1200, 1800)
    # anterior: orbits with eyeballs, lenses and fat; nasal cavity / ethmoid cells in between
    oy = cy - b * _u(g, 0.6, 0.68)
    for side in (-1, 1):
        ox = cx + side * a * _u(g, 0.34, 0.42)
        cv.set(cv.ellipse(ox, oy + b * 0.05, a * 0.21, b * 0.2) & (rb <= 1.05), cort)
        cv.set(cv.ellipse(ox, oy + b * 0.03, a * 0.19, b * 0.18), _u(g, -110, -70))  # orbital fat
        er = a * _u(g, 0.12, 0.15)
        cv.set(cv.ellipse(ox, oy, er, er * 1.05), _u(g, 5, 20))  # vitreous
        cv.set(cv.ellipse(ox + side * er * 0.1, oy - er * 0.8, er * 0.35, er * 0.15), _u(g, 80, 130))  # lens
        cv.set(cv.ellipse(ox - side * er * 0.3, oy + er * 1.5, er * 0.12, er * 0.6, -side * 0.4), _u(g, 25, 40))
    # ethmoid air cells: air with bony septa
    nas = cv.ellipse(cx, oy + b * 0.05, a * 0.12, b * 0.25)
    cells = cv.noise(int(_u(g, 20, 34)))
    cv.set(nas, -1000.0)
    cv.set(nas & (cells.abs() < 0.12), _u(g, 300, 900))
    # sphenoid sinus
    cv.set(cv.ellipse(cx, cy - b * _u(g, 0.3, 0.45), a * _u(g, 0.1, 0.18), b * _u(g, 0.08, 0.14)), -1000.0)
    # petrous bones (dense, diagonal) with mastoid air cells
    for side in (-1, 1):
        px, py = cx + side * a * 0.45, cy + b * _u(g, 0.05, 0.2)
        th = side * _u(g, 0.5, 0.8)
        cv.set(cv.ellipse(px, py, a * _u(g, 0.2, 0.28), a * _u(g, 0.035, 0.06), th), _u(g, 1400, 2100))
        mast = cv.ellipse(px + side * a * 0.3, py + b * 0.15, a * 0.13, b * 0.14)
        cv.set(mast & (cv.noise(30) > 0.2), -1000.0)
        cv.set(cv.ellipse(px + side * a * 0.05, py, 0.012, 0.008), -1000.0)  # inner ear canal
    # brainstem (pons) and fourth ventricle, cerebellum texture behind
    cv.set(cv.ellipse(cx, cy + b * 0.2, a * 0.17, b * 0.15), _u(g, 30, 38))
    cv.set(cv.ellipse(cx, cy + b * 0.38, a * 0.05, b * 0.04), _u(g, 0, 12))
    # clivus / sella bone in the middle
    cv.set(cv.ellipse(cx, cy - b * 0.05, a * 0.08, b * 0.12), _u(g, 600, 1200))


def _jaw(cv, cx, cy, a, b, rot, metal):
    """Maxilla/mandible level: dental arch, tongue, airway, neck muscles, cervical vertebra."""
    g = cv.g
    phi = cv.angle(cx, cy)
    rho = cv.rho(cx, cy, a, b, rot) / cv.wobble(phi, 0.08)
    cv.set(rho <= 1.0, _u(g, 30, 50))
    cv.set((rho <= 1.0) & (rho > _u(g, 0.9, 0.95)), _u(g, -110, -70))  # subcutaneous fat
    cv.set(rho <= _u(g, 0.8, 0.88), _u(g, 40, 60))  # muscle
    cv.add((rho <= 0.8) & (cv.noise(16) > 1.0), -_u(g, 80, 140))  # fat between muscles
    # dental arch: teeth along a parabola in the anterior half
    n = int(_u(g, 10, 16))
    ay, ar = cy - b * _u(g, 0.2, 0.35), a * _u(g, 0.5, 0.62)
    cv.set(cv.ellipse(cx, ay - ar * 0.3, ar * 1.02, ar * 0.72) & ~cv.ellipse(cx, ay - ar * 0.3, ar * 0.86,
                                                                             ar * 0.58), _u(g, 400, 1000))
    fill_teeth = set(int(v) for v in torch.randint(n, (int(_u(g, 1, 5)),), generator=g)) if metal else set()
    for k in range(n):
        t = math.pi * (0.08 + 0.84 * k / (n - 1))
        tx, ty = cx + ar * 0.9 * math.cos(t), ay - ar * 0.62 * math.sin(t) - ar * 0.35 + ar * 0.35
        tr = a * _u(g, 0.035, 0.055)
        cv.set(cv.ellipse(tx, ty, tr, tr * 0.9, t), _u(g, 1500, 2200))  # dentin
        cv.set(cv.ellipse(tx, ty, tr * 0.8, tr * 0.7, t) & (cv.noise(8) > 0), _u(g, 2200, 3000))  # enamel
        cv.set(cv.ellipse(tx, ty, tr * 0.25, tr * 0.25), _u(g, 30, 60))  # pulp
        if k in fill_teeth:
            cv.set(cv.ellipse(tx, ty, tr * _u(g, 0.5, 1.05), tr * _u(g, 0.5, 0.95), t), _u(g, 2800, 3071))
    cv.set(cv.ellipse(cx, ay + b * 0.25, a * 0.4, b * 0.25), _u(g, 60, 80))  # tongue
    cv.set(cv.ellipse(cx, cy + b * 0.2, a * _u(g, 0.08, 0.2), b * _u(g, 0.04, 0.1)), -1000.0)  # airway
    _vertebra(cv, cx, cy + b * 0.45, a * 0.14, cervical=True)
    return rho <= 1.0


# --- body ----------------------------------------------------------------------------------------------------
def _body(cv: _Canvas, level: str, metal: bool, contrast: bool):
    g = cv.g
    a = _u(g, 0.62, 0.92)
    b = a * _u(g, 0.55, 0.8)
    cx, cy, rot = _u(g, -0.05, 0.05), _u(g, -0.05, 0.08), _u(g, -0.06, 0.06)
    phi = cv.angle(cx, cy)
    pexp = _u(g, 2.0, 2.8)
    rho = cv.rho(cx, cy, a, b, rot, pexp) / cv.wobble(phi, 0.07)
    body = rho <= 1.0
    fat_t = (_u(g, 0.02, 0.14) / b) * (1 + 0.4 * cv.noise(4).clamp(-1.5, 1.5))
    muscle_t = _u(g, 0.03, 0.08) / b
    fat_hu = _u(g, -120, -85)
    cv.set(body, fat_hu)
    strands = cv.noise(int(_u(g, 18, 30)))
    cv.add(body & (strands.abs() < 0.06), _u(g, 40, 110))  # fibrous septa in the fat
    cv.set(body & (rho > 1 - 0.012 / b), _u(g, 20, 50))  # skin
    wall = rho <= 1 - fat_t
    muscle = _u(g, 40, 60)
    cv.set(wall, muscle)
    visc = rho <= 1 - fat_t - muscle_t
    cv.set(visc, fat_hu + _u(g, 0, 25))  # visceral / mediastinal fat
    ax, ay = a * (1 - 0.12), b * (1 - 0.15)
    sy = cy + ay * _u(g, 0.5, 0.62)
    sr = _u(g, 0.06, 0.085) * (a / 0.8)
    blood = _u(g, 150, 350) if contrast else _u(g, 35, 50)
    if level == "thorax":
        _thorax(cv, visc, cx, cy, ax, ay, sy, sr, blood, muscle)
    elif level == "abdomen":
        _abdomen(cv, visc, cx, cy, ax, ay, sy, sr, blood, contrast, muscle)
    else:
        _pelvis(cv, visc, cx, cy, ax, ay, sy, sr, muscle, metal)
    for side in (-1, 1):  # paraspinal muscles
        cv.set(cv.ellipse(cx + side * sr * 1.6, sy + sr * 1.9, sr * 1.35, sr * 1.0) & body, muscle + _u(g, -5, 5))
    if level != "pelvis" or _p(g, 0.5):
        _vertebra(cv, cx, sy, sr)
        if metal and _p(g, 0.5):
            _pedicle_screws(cv, cx, sy, sr)
    if metal and _p(g, 0.5):  # surgical clips
        for _ in range(int(_u(g, 1, 4))):
            cv.set(cv.ellipse(cx + ax * _u(g, -0.6, 0.6), cy + ay * _u(g, -0.6, 0.4), 0.006, _u(g, 0.012, 0.025),
                              _u(g, 0, 3)), _u(g, 2500, 3071))
    # soft tissue texture inside the body
    tex = 0.6 * cv.noise(int(_u(g, 12, 24))) + 0.4 * cv.noise(int(_u(g, 40, 64)))
    cv.add(body & (cv.img > -500) & (cv.img < 300), _u(g, 3, 12) * tex)
    return body


def _ribs(cv, cx, cy, ax, ay, n, cort):
    g = cv.g
    for k in range(n):
        t = math.pi * (0.12 + 0.76 * k / max(n - 1, 1)) + _u(g, -0.05, 0.05)
        for side in (-1, 1):
            tt = t if side > 0 else math.pi - t
            rx, ry = cx + ax * 1.02 * math.cos(tt), cy + ay * 1.02 * math.sin(tt) * (1 if k % 2 else -1)
            rr = _u(g, 0.014, 0.024)
            th = math.atan2(ry - cy, rx - cx) + math.pi / 2
            o = cv.ellipse(rx, ry, rr * _u(g, 1.3, 2.2), rr, th) & (cv.img > -500)
            i = cv.ellipse(rx, ry, rr * 0.9, rr * 0.5, th) & o
            _bone(cv, o, i, cort, _u(g, 150, 300))


def _thorax(cv, visc, cx, cy, ax, ay, sy, sr, blood, muscle):
    g = cv.g
    lung_hu = _u(g, -900, -780)
    vessels = cv.noise(int(_u(g, 22, 36)))
    vessels2 = cv.noise(int(_u(g, 40, 60)))
    for side in (-1, 1):
        lx = cx + side * ax * _u(g, 0.4, 0.5)
        la, lb = ax * _u(g, 0.36, 0.46), ay * _u(g, 0.62, 0.8)
        phi = cv.angle(lx, cy)
        lung = (cv.rho(lx, cy + _u(g, -0.03, 0.05), la, lb, side * _u(g, 0.0, 0.2)) / cv.wobble(phi, 0.12) <= 1) & visc
        cv.set(lung, lung_hu + 15 * cv.noise(50))
        ves = lung & ((vessels.abs() < 0.05) | (vessels2.abs() < 0.03))
        cv.set(ves, _u(g, 20, 60) if blood < 100 else blood * _u(g, 0.6, 0.9))
        if _p(g, 0.3):  # nodule
            nx, ny = lx + la * _u(g, -0.5, 0.5), cy + lb * _u(g, -0.5, 0.5)
            cv.set(cv.ellipse(nx, ny, _u(g, 0.01, 0.04), _u(g, 0.01, 0.04)) & lung, _u(g, 0, 60))
    # heart and great vessels
    hx, hy = cx + ax * _u(g, 0.0, 0.18), cy - ay * _u(g, -0.1, 0.2)
    ha, hb = ax * _u(g, 0.24, 0.34), ay * _u(g, 0.3, 0.45)
    if _p(g, 0.7):
        cv.set(cv.ellipse(hx, hy, ha, hb, _u(g, -0.6, 0.0)), _u(g, 35, 50))
        cv.set(cv.ellipse(hx + ha * 0.1, hy, ha * 0.7, hb * 0.65, _u(g, -0.6, 0.0)), blood)
    else:  # above the heart: ascending aorta and pulmonary trunk
        cv.set(cv.ellipse(cx + 0.01, cy - ay * 0.25, 0.05, 0.05), blood)
        cv.set(cv.ellipse(cx - 0.09, cy - ay * 0.2, 0.04, 0.045), blood)
    ar = _u(g, 0.03, 0.05)
    cv.set(cv.ellipse(cx + sr * 1.2, sy - sr - ar * 1.3, ar, ar), blood)  # descending aorta
    cv.set(cv.ellipse(cx - sr * 0.3, sy - sr - 0.03, 0.018, 0.014), _u(g, -1000, -700))  # oesophagus (air)
    if _p(g, 0.5):  # trachea
        cv.set(cv.ellipse(cx, cy - ay * _u(g, 0.05, 0.2), 0.045, 0.04), -1000.0)
    cort = _u(g, 600, 1100)
    _ribs(cv, cx, cy, ax, ay, int(_u(g, 3, 7)), cort)
    st = cv.ellipse(cx, cy - ay * 1.03, ax * 0.12, 0.03)
    _bone(cv, st, cv.ellipse(cx, cy - ay * 1.03, ax * 0.1, 0.02), cort, _u(g, 150, 300))  # sternum
    for side in (-1, 1):  # scapulae behind the ribs
        if _p(g, 0.7):
            th = side * _u(g, 0.3, 0.6)
            cv.set(cv.ellipse(cx + side * ax * 0.7, sy + sr * 0.6, ax * 0.18, 0.014, th) & ~visc & (cv.img > -500),
                   cort * 0.9)


def _abdomen(cv, visc, cx, cy, ax, ay, sy, sr, blood, contrast, muscle):
    g = cv.g
    organ = lambda hu: hu + (_u(g, 40, 80) if contrast else 0.0)  # noqa: E731
    # bowel loops: many small rounded loops with gas, fluid or oral contrast, in the anterior half
    fill = _choice(g, ["gas", "fluid", "contrast"], [0.45, 0.35, 0.2])
    for _ in range(int(_u(g, 6, 16))):
        bx, by = cx + ax * _u(g, -0.7, 0.7), cy + ay * _u(g, -0.8, 0.3)
        br = _u(g, 0.03, 0.07)
        cv.set(cv.ellipse(bx, by, br, br * _u(g, 0.7, 1.3), _u(g, 0, 3)) & visc, _u(g, 30, 50))
        inner = cv.ellipse(bx, by, br * 0.75, br * 0.75) & visc
        cv.set(inner, {"gas": -1000.0, "fluid": _u(g, 0, 20), "contrast": _u(g, 200, 500)}[fill]
               if _p(g, 0.7) else _u(g, -1000, 30))
    # liver (patient's right = image left) and spleen
    phi = cv.angle(cx - ax * 0.35, cy)
    liver = (cv.rho(cx - ax * _u(g, 0.3, 0.45), cy - ay * _u(g, 0.0, 0.25), ax * _u(g, 0.4, 0.6),
                    ay * _u(g, 0.5, 0.75), _u(g, -0.4, 0.3)) / cv.wobble(phi, 0.15)) <= 1
    liver_hu = organ(_u(g, 50, 70))
    cv.set(liver & visc, liver_hu)
    cv.add(liver & visc & (cv.noise(30).abs() < 0.05), blood - liver_hu if contrast else -_u(g, 5, 15))  # vessels
    if _p(g, 0.3):  # lesion
        cv.set(cv.ellipse(cx - ax * 0.4, cy - ay * 0.1, _u(g, 0.02, 0.06), _u(g, 0.02, 0.06)) & liver,
               liver_hu + _u(g, -50, 40))
    if _p(g, 0.8):
        cv.set(cv.ellipse(cx + ax * _u(g, 0.5, 0.65), cy + ay * _u(g, -0.1, 0.3), ax * _u(g, 0.14, 0.22),
                          ay * _u(g, 0.22, 0.35), _u(g, -0.6, 0.6)) & visc, organ(_u(g, 40, 55)))
    # stomach with gas-fluid level
    if _p(g, 0.6):
        sx, sy_ = cx + ax * _u(g, 0.2, 0.45), cy - ay * _u(g, 0.3, 0.6)
        st = cv.ellipse(sx, sy_, ax * _u(g, 0.15, 0.25), ay * _u(g, 0.15, 0.3)) & visc
        cv.set(st, _u(g, 30, 45))
        inner = cv.ellipse(sx, sy_, ax * 0.13, ay * 0.13) & visc
        lvl = sy_ + _u(g, -0.05, 0.05)
        cv.set(inner & (cv.y < lvl), -1000.0)
        cv.set(inner & (cv.y >= lvl), _u(g, 0, 30))
    # kidneys with cortex and medulla/sinus fat
    for side in (-1, 1):
        if _p(g, 0.85):
            kx, ky = cx + side * ax * _u(g, 0.3, 0.42), sy - _u(g, -0.02, 0.06)
            ka, kb, th = ax * _u(g, 0.09, 0.13), ay * _u(g, 0.17, 0.25), side * _u(g, 0.2, 0.6)
            cv.set(cv.ellipse(kx, ky, ka, kb, th), organ(_u(g, 30, 40)) + (_u(g, 60, 120) if contrast else 0))
            cv.set(cv.ellipse(kx + side * ka * 0.35, ky, ka * 0.4, kb * 0.4, th), _u(g, -80, 10))
    # pancreas, aorta, IVC
    cv.set(cv.ellipse(cx + ax * 0.05, sy - sr * 2.4, ax * 0.3, 0.03, _u(g, -0.3, 0.1)) & visc, organ(_u(g, 35, 50)))
    ar = _u(g, 0.025, 0.04)
    cv.set(cv.ellipse(cx + sr * 0.4, sy - sr - ar * 1.2, ar, ar), blood)
    cv.set(cv.ellipse(cx - sr * 1.2, sy - sr - ar, ar * 1.2, ar * 0.8), blood * _u(g, 0.7, 1.0))
    if _p(g, 0.5):
        _ribs(cv, cx, cy, ax, ay, int(_u(g, 1, 4)), _u(g, 600, 1100))


def _pelvis(cv, visc, cx, cy, ax, ay, sy, sr, muscle, metal):
    g = cv.g
    cort = _u(g, 700, 1300)
    femoral = _p(g, 0.5)
    for side in (-1, 1):
        if femoral:  # femoral heads in the acetabula
            fx, fy = cx + side * ax * _u(g, 0.5, 0.65), cy + ay * _u(g, -0.05, 0.2)
            fr = ax * _u(g, 0.12, 0.16)
            cv.set(cv.ellipse(fx + side * fr * 0.4, fy, fr * 1.5, fr * 1.4), cort * 0.8)  # acetabulum
            cv.set(cv.ellipse(fx + side * fr * 0.4, fy, fr * 1.25, fr * 1.15), muscle)
            _bone(cv, cv.ellipse(fx, fy, fr, fr), cv.ellipse(fx, fy, fr * 0.85, fr * 0.85), cort, _u(g, 150, 300))
            if metal and _p(g, 0.6):  # hip prosthesis: metal head and stem
                cv.set(cv.ellipse(fx, fy, fr * 0.8, fr * 0.8), _u(g, 2800, 3071))
                cv.set(cv.ellipse(fx + side * fr * 0.9, fy + fr * 0.3, fr * 0.9, fr * 0.28, side * 0.5),
                       _u(g, 2500, 3071))
        else:  # iliac wings: curved plates of bone
            ix, iy = cx + side * ax * _u(g, 0.45, 0.6), cy + ay * _u(g, 0.0, 0.3)
            th = -side * _u(g, 0.4, 0.9)
            o = cv.ellipse(ix, iy, ax * _u(g, 0.28, 0.38), ay * _u(g, 0.08, 0.14), th)
            i = cv.ellipse(ix, iy, ax * 0.25, ay * 0.05, th)
            _bone(cv, o, i, cort, _u(g, 150, 300))
            cv.set(cv.ellipse(ix - side * 0.05, iy - 0.08, ax * 0.2, ay * 0.12, th) & visc, muscle)  # iliacus
        cv.set(cv.ellipse(cx + side * ax * 0.55, sy + sr * 1.5, ax * 0.3, ay * 0.25) & visc, muscle)  # gluteal
    if _p(g, 0.7):  # bladder
        cv.set(cv.ellipse(cx, cy - ay * _u(g, 0.1, 0.4), ax * _u(g, 0.15, 0.3), ay * _u(g, 0.15, 0.35)) & visc,
               _u(g, 0, 15))
    rx, ry = cx, sy - sr * _u(g, 1.3, 1.8)
    cv.set(cv.ellipse(rx, ry, 0.05, 0.04) & visc, _u(g, 30, 45))
    cv.set(cv.ellipse(rx, ry, 0.03, 0.025) & visc, _u(g, -1000, 20))
    if not femoral or _p(g, 0.5):  # sacrum instead of a lumbar vertebra
        o = cv.ellipse(cx, sy, sr * 2.0, sr * 0.9)
        _bone(cv, o, cv.ellipse(cx, sy, sr * 1.8, sr * 0.7), cort, _u(g, 150, 300))


def _table(cv, body_mask_bottom: float):
    """A curved patient table (carbon fibre shell) below the patient."""
    g = cv.g
    ty = body_mask_bottom + _u(g, 0.02, 0.08)
    r = _u(g, 1.5, 4.0)
    th = _u(g, 0.015, 0.03)
    d = torch.sqrt((cv.x) ** 2 + (cv.y - (ty - r)) ** 2) - r
    half = _u(g, 0.7, 1.2)
    shell = (d > 0) & (d < th) & (cv.x.abs() < half)
    cv.set(shell, _u(g, -500, 100))
    cv.set(shell & ((d < th * 0.25) | (d > th * 0.75)), _u(g, 200, 800))


def _ct_noise(g, size, std):
    """White noise shaped by an FBP-like power spectrum: |f| x a Hann-type window with a random cut-off."""
    z = torch.randn((size, size), generator=g)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.fftfreq(size)[None, :]
    f = torch.sqrt(fx ** 2 + fy ** 2)
    cut = _u(g, 0.25, 0.5)
    win = torch.where(f < cut, 0.5 * (1 + torch.cos(math.pi * f / cut)), torch.zeros_like(f))
    h = (f + 0.02) * win
    n = torch.fft.ifft2(torch.fft.fft2(z) * h).real
    return std * n / n.std().clamp_min(1e-8)


def _one(size: int, g: torch.Generator, region: str, metal_p: float, p_clean: float,
         crops: float = 0.0, crop_zoom=CROP_ZOOM) -> torch.Tensor:
    if region == "mixed":
        region = "head" if _p(g, 0.5) else "body"
    head = region == "head"
    level = _choice(g, HEAD_LEVELS, [0.15, 0.45, 0.25, 0.15]) if head else _choice(g, BODY_LEVELS, [0.4, 0.4, 0.2])
    zoom = _u(g, 0.85, 1.45) if head else _u(g, 0.8, 1.35)
    rot = _u(g, -0.15, 0.15) if not _p(g, 0.05) else _u(g, -math.pi, math.pi)
    shift = (_u(g, -0.08, 0.08), _u(g, -0.08, 0.08))
    if crops > 0 and _p(g, crops):  # a magnified crop (crop_zoom of the field of view), anywhere in the patient
        zoom = math.exp(_u(g, math.log(crop_zoom[0]), math.log(crop_zoom[1])))
        reach = 0.75 * (1.0 - zoom)
        shift = (_u(g, -reach, reach), _u(g, -reach, reach) * (0.7 if head else 0.55))
    cv = _Canvas(2 * size, g, zoom, rot, shift, warp=_u(g, 0.0, 0.08))
    metal = _p(g, metal_p)
    contrast = _p(g, 0.35)
    mask = (_head if head else _body)(cv, level, metal, contrast)
    if _p(g, 0.5 if not head else 0.3):  # patient table / head holder
        rows = torch.nonzero(mask.any(1))
        bottom = cv.y[int(rows.max()), size].item() if len(rows) else 0.8
        _table(cv, bottom)
    img = F.avg_pool2d(cv.img[None, None], 2)[0, 0]
    if _p(g, 0.5):
        img = img.flip(-1)
    if _p(g, 0.1):
        img = img.flip(-2)
    if not _p(g, p_clean):
        img = img + _ct_noise(g, size, _u(g, 3.0, 25.0))
    return img.clamp(HU_MIN, HU_MAX)


def ct_anatomy(n: int, size: int = 128, generator: torch.Generator = None, region: str = "mixed",
               metal: float = 0.15, p_clean: float = 0.3, crops: float = 0.0,
               crop_zoom=CROP_ZOOM) -> torch.Tensor:
    """``n`` random anatomical slices (n, size, size) in HU. ``region``: head, body or mixed (half each);
    ``metal``: probability of an implant per slice; ``p_clean``: probability of a noise-free slice; ``crops``:
    probability of a magnified crop (field of view ``crop_zoom`` = (lo, hi) times the usual one, log-uniform,
    centred anywhere in the patient, so the body overflows the image as in a reconstruction at a small field of
    view; a crop at zoom 0.25 has the pixel size of a whole slice at 4x the grid, e.g. 512 x 512 heads at about
    0.5 mm). ``crops=0`` draws exactly the slices it drew before the option existed (no extra random numbers)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    for name, v in (("metal", metal), ("p_clean", p_clean), ("crops", crops)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
    lo, hi = (float(z) for z in crop_zoom)
    if not 0.05 <= lo <= hi <= 1.0:
        raise ValueError(f"crop_zoom must be (lo, hi) with 0.05 <= lo <= hi <= 1, got {tuple(crop_zoom)!r}")
    if generator is None:
        raise ValueError("ct_anatomy needs an explicit torch.Generator (randomness is explicit)")
    return torch.stack([_one(size, generator, region, metal, p_clean, crops, (lo, hi)) for _ in range(n)])
