"""Tumours drawn into a slice: placement, mass effect and appearance, defined in 3-D voxel space.

A lesion is an implicit 3-D shape evaluated at the voxel coordinates of the slice's pixels, so
its cross-section is right in any plane, tilt or warp. Mass effect moves the coordinates at
which the anatomy is looked up, so the surrounding brain is pushed away from the tumour while
the skull stays put.

Appearance is that of a contrast-enhanced T1 slice (the STUDY's "Tumour types"):
glioma - intra-axial in white matter, hypointense, irregular infiltrative margin, oedema
(hypointense, following white matter), sometimes an enhancing rim round a necrotic core;
meningioma - extra-axial, dural-based against the inner skull table or the falx, round,
homogeneous and enhancing, pushing the brain; pituitary - at the sella on the midline,
growing upward ("snowman" when large). The mask marks the tumour only; glioma oedema is not
part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medauc.data.phantom.anatomy import Anatomy
from medauc.data.phantom.variation import SliceGeometry, sample_where


@dataclass
class Lesion:
    """A placed tumour: centre (3,) in voxels, radius in mm, and its drawn parameters."""

    kind: str
    centre: np.ndarray
    radius: float
    subtle: bool
    site: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def pituitary_lesion(anat: Anatomy, rng: np.random.Generator, subtle: bool) -> Lesion:
    """A pituitary adenoma in the sella; large ones grow upward above the diaphragma."""
    radius = rng.uniform(3.5, 5.0) if subtle else rng.uniform(5.0, 13.0)
    centre = anat.sella + np.array([rng.normal(0, 0.7), rng.normal(0, 1.0), 0.25 * radius])
    return Lesion("pituitary", centre, float(radius), subtle, "sella")


def lesion_span(lesion: Lesion, plane: str) -> tuple[np.ndarray, float]:
    """Where a stack of slices across ``lesion`` is centred (3,) voxels, and the distance (mm)
    its outermost slices may lie apart so that each still cuts the lesion well inside its edge."""
    if lesion.kind == "pituitary" and plane == "axial":
        # Axial cuts: large adenomas grow upward, so the stack leans above the sellar centre.
        return lesion.centre + np.array([0.0, 0.0, 0.3 * lesion.radius]), 1.2 * lesion.radius
    if lesion.kind == "pituitary":
        return lesion.centre.copy(), 0.9 * lesion.radius
    return lesion.centre.copy(), 1.0 * lesion.radius


def place_lesion(
    kind: str, anat: Anatomy, geom: SliceGeometry, rng: np.random.Generator, subtle: bool
) -> Lesion | None:
    """Put a glioma or meningioma where this slice allows; None when it allows none."""
    brain = geom.lookup(anat.brain)
    inside = brain > 0.5
    depth = ndi.distance_transform_edt(inside) * geom.pixel_mm  # mm from the brain's edge
    if kind == "glioma":
        radius = rng.uniform(4.0, 7.0) if subtle else rng.uniform(8.0, 22.0)
        wm = geom.lookup(anat.wm)
        # Supratentorial, as in most adult gliomas.
        ok = (wm > 0.6) & (depth > 0.6 * radius) & (geom.coords[2] > anat.sella[2] + 5)
        site = "white matter"
    elif kind == "meningioma":
        radius = rng.uniform(4.0, 7.0) if subtle else rng.uniform(9.0, 22.0)
        # Not at the skull base: the convexity or, in axial and coronal cuts, the falx.
        above_base = geom.coords[2] > anat.sella[2] + 8
        ok = np.zeros_like(inside)
        site = "convexity"
        ok = inside & (depth <= 1.5 * geom.pixel_mm) & above_base
        if geom.plane != "sagittal" and rng.random() < 0.35:
            # Parafalcine: on the midline, high in the head, between the hemispheres.
            midline = np.abs(geom.coords[0] - anat.midline_i) < max(geom.pixel_mm, 1.0)
            falx = midline & inside & (geom.coords[2] > anat.sella[2] + 35)
            if falx.any():
                ok, site = falx, "falx"
    else:
        raise ValueError(f"place_lesion draws glioma or meningioma, not {kind!r}")
    candidates = np.flatnonzero(ok)
    if candidates.size == 0:
        return None
    pick = int(rng.choice(candidates))
    point = geom.coords[:, pick // ok.shape[1], pick % ok.shape[1]].astype(np.float64)
    offset = rng.uniform(-0.3, 0.3) * radius * geom.normal
    if kind == "meningioma":
        if site == "falx":
            side = float(rng.choice([-1.0, 1.0]))
            outward = np.array([-side, 0.0, 0.0])  # from the tumour towards its dural base
            point = point.copy()
            point[0] = anat.midline_i + side * radius * rng.uniform(0.5, 0.8)
        else:
            outward = _outward(anat, point)
            if outward[2] < -0.4:
                return None  # the brain's underside faces the skull base, not the convexity
            # Centre under the brain's surface: the round mass indents the brain, its outer side
            # is flattened against the inner skull table (the intracranial mask clips it there).
            point = point - outward * rng.uniform(0.15, 0.5) * radius
        offset = offset - np.dot(offset, outward) * outward
        return Lesion(kind, point + offset, float(radius), subtle, site, {"outward": outward})
    return Lesion(kind, point + offset, float(radius), subtle, site)


def _outward(anat: Anatomy, p: np.ndarray) -> np.ndarray:
    """Unit vector pointing out of the brain at voxel point ``p`` (minus the mask's gradient)."""
    h = 2.0
    pts = np.array([p + h * e for e in np.eye(3)] + [p - h * e for e in np.eye(3)]).T
    v = ndi.map_coordinates(anat.brain, pts, order=1, output=np.float32, prefilter=False)
    g = -(v[:3] - v[3:])
    n = np.linalg.norm(g)
    if n < 1e-6:
        return np.array([0.0, 0.0, 1.0])
    return g / n


def mass_effect(anat: Anatomy, geom: SliceGeometry, lesion: Lesion, rng: np.random.Generator) -> np.ndarray:
    """Coordinates (3, H, W) at which to look up the anatomy so the brain is pushed from the lesion."""
    strength = {"glioma": (0.2, 0.45), "meningioma": (0.4, 0.7), "pituitary": (0.3, 0.5)}[lesion.kind]
    k = rng.uniform(*strength) * (0.35 if lesion.subtle else 1.0)
    s = lesion.radius * rng.uniform(1.1, 1.6)
    d = geom.coords - lesion.centre[:, None, None].astype(np.float32)
    r2 = (d * d).sum(0)
    # Only brain moves; the weight falls to 0 at the skull so bone and scalp stay in place.
    w = geom.lookup(anat.brain)
    shrink = 1.0 - k * np.exp(-r2 / (s * s)) * w
    return lesion.centre[:, None, None].astype(np.float32) + d * shrink[None]


def _irregular_radius(d: np.ndarray, r: np.ndarray, radius: float, rng: np.random.Generator, rough: float) -> np.ndarray:
    """Direction-dependent radius (H, W): lobulated by a few broad random waves over the sphere."""
    unit = d / np.maximum(r, 1e-6)[None]
    out = np.ones_like(r)
    for _ in range(6):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        proj = np.tensordot(v.astype(np.float32), unit, axes=1)
        out += rough * rng.uniform(0.2, 1.0) * np.cos(np.pi * rng.uniform(0.5, 1.6) * proj + rng.uniform(0, 2 * np.pi)) / 3.0
    return radius * np.maximum(out, 0.4)


def draw_lesion(
    image: np.ndarray, anat: Anatomy, geom: SliceGeometry, looked_up: np.ndarray, lesion: Lesion, rng: np.random.Generator,
    contrast_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``lesion`` into ``image`` (T1, white matter = 1.0) -> (image, mask bool), both (H, W).

    ``looked_up``: the mass-effect coordinates the anatomy was sampled at (for oedema, which
    follows the displaced white matter). ``contrast_scale`` multiplies the tumour's intensity
    difference from white matter (1.0), leaving every random draw unchanged.
    """
    size = image.shape[0]
    d = geom.coords - lesion.centre[:, None, None].astype(np.float32)
    r = np.sqrt((d * d).sum(0))
    texture = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), max(1.0, 1.5 / geom.pixel_mm))
    texture /= texture.std() + 1e-6
    # Subtle lesions: the same shapes, drawn at a fraction of the contrast.
    contrast = rng.uniform(0.25, 0.5) if lesion.subtle else 1.0
    px = geom.pixel_mm
    if lesion.kind == "glioma":
        rad = _irregular_radius(d, r, lesion.radius, rng, rough=rng.uniform(0.3, 0.7))
        # Infiltrative margin: a smooth random wobble of a few mm on top of the lobulation.
        wobble = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 2.5 / px)
        r = r + wobble * (rng.uniform(0.8, 2.0) / (wobble.std() + 1e-6))
        # Intra-axial: it stays within the brain, never in the CSF rim or the skull.
        alpha = _sigmoid((rad - r) / rng.uniform(0.8, 1.6)) * np.clip(2.0 * geom.lookup(anat.brain) - 0.6, 0.0, 1.0)
        if not lesion.subtle:
            reach = rad * rng.uniform(1.4, 2.2) - r
            near = reach > -15.0  # the sigmoid below is < 0.01 further out
            wm = sample_where(anat.wm, looked_up, near)
            brain = sample_where(anat.brain, looked_up, near)
            edema = _sigmoid(reach / 3.0) * brain * (0.3 + 0.7 * wm)
            image = image * (1.0 - rng.uniform(0.12, 0.3) * edema)
        core = rng.uniform(0.38, 0.62) + 0.07 * texture
        value = core
        if not lesion.subtle and rng.random() < 0.5:
            inner = _sigmoid((rad * rng.uniform(0.5, 0.75) - r) / 1.0)
            rim = np.clip(alpha - inner, 0, 1)
            necrosis = rng.uniform(0.18, 0.4) + 0.04 * texture
            value = core * (1 - inner) + necrosis * inner
            value = value * (1 - rim) + rng.uniform(1.15, 1.45) * rim
            lesion.params["rim"] = True
    elif lesion.kind == "meningioma":
        n = lesion.params["outward"].astype(np.float32)
        along = np.tensordot(n, d, axes=1)
        flat = rng.uniform(0.7, 1.0)  # flattened against the dura
        rr = np.sqrt(np.maximum(r * r - along * along, 0) + (along / flat) ** 2)
        alpha = _sigmoid((lesion.radius - rr) / 0.6) * sample_where(anat.intracranial, geom.coords, rr < lesion.radius + 4.0)
        if lesion.site == "falx":
            side = -float(n[0])
            alpha = alpha * _sigmoid(side * (geom.coords[0] - anat.midline_i) / 0.5)
        value = rng.uniform(1.05, 1.4) + 0.025 * texture
    else:
        rad = lesion.radius
        lobes = [(np.zeros(3), np.array([1.0, 0.9, 0.75]) * rad)]
        if rad > 6.5:
            # Upward growth through the diaphragma sellae.
            lobes.append((np.array([0.0, -0.1 * rad, 0.95 * rad]), np.array([0.7, 0.7, 0.8]) * rad))
        alpha = np.zeros_like(r)
        for shift, axes in lobes:
            q = (d - shift[:, None, None].astype(np.float32)) / axes[:, None, None].astype(np.float32)
            qr = np.sqrt((q * q).sum(0))
            alpha = np.maximum(alpha, _sigmoid((1.0 - qr) * rad / 0.7))
        floor = _sigmoid((d[2] + 0.75 * rad) / 0.7)  # the bony floor of the sella
        alpha = alpha * floor
        value = rng.uniform(0.85, 1.2) + 0.04 * texture
    if contrast_scale != 1.0:
        value = np.clip(1.0 + contrast_scale * (value - 1.0), 0.05, 2.0)
    a = alpha * contrast
    image = image * (1.0 - a) + value * a
    mask = alpha > 0.5
    lesion.params["area_px"] = int(mask.sum())
    lesion.params["pixel_mm"] = px
    return image.astype(np.float32), mask
