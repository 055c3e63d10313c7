"""Drawing one virtual subject: its head, series and scanner, a lesion for tumour classes, its slices.

Every draw comes from generators seeded by ``(seed, subject index, ...)``, so a subject's images
are the same whichever worker renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medauc.config import PhantomConfig
from medauc.data.phantom.anatomy import Anatomy
from medauc.data.phantom.sites import SITES, get_site
from medauc.data.phantom.lesions import Lesion, draw_lesion, lesion_span, mass_effect, pituitary_lesion, place_lesion
from medauc.data.phantom.variation import (
    MIN_BRAIN_SHARE, PLANES, Head, Imaging, Series, SliceGeometry, draw_head, draw_imaging, draw_series, photometric, sample,
    slice_geometry, tissue_contrast,
)
from medauc.errors import DataError

SELLA_SLICE_SHARE = 0.4  # non-pituitary images cut through the sella too, like pituitary ones
# Pituitary tumours are seen mainly in sagittal and coronal cuts; every class gets the same plane
# mix so that the plane is no class cue.
PLANE_WEIGHT = SITES[""].plane_weight  # the default site's; phantom.site may change the mix (sites.py)
MIN_LESION_PX = 4

_SUBJECT_TAG = 0x9E3779B9
_SLICE_TAG = 0x5F3759DF
_LESION_TAG = 0x2545F491


def _choose_plane(planes: list[str], rng: np.random.Generator, weight: Any = PLANE_WEIGHT) -> str:
    w = np.array([weight[p] for p in planes])
    return str(planes[int(rng.choice(len(planes), p=w / w.sum()))])


@dataclass
class Rendered:
    """One phantom image: ``image`` uint8 (H, W), ``mask`` uint8 (H, W) 0/255 and its ``facts``.

    ``brain()`` and ``coords()`` give, for tests and inspection, the brain mask (of the subject's
    deformed head, before any mass effect) and the template voxel coordinates behind every
    output pixel, flipped and cropped like the image.
    """

    image: np.ndarray
    mask: np.ndarray
    facts: dict[str, Any]
    anat: Anatomy
    geom: SliceGeometry
    flip: bool
    cols: slice

    def _view(self, a: np.ndarray) -> np.ndarray:
        a = a[..., ::-1] if self.flip else a
        return a[..., self.cols]

    def brain(self) -> np.ndarray:
        """Brain probability (H, W) in [0, 1] of the head before any mass effect."""
        return self._view(self.geom.lookup(self.anat.brain))

    def coords(self) -> np.ndarray:
        """Voxel coordinates (3, H, W) of each pixel in the anatomy volume."""
        return self._view(self.geom.coords)


@dataclass
class RenderedSubject:
    """A subject's slices (in order along the series) and what was drawn for it."""

    slices: list[Rendered]
    facts: dict[str, Any]
    head: Head
    imaging: Imaging


def render_subject(anat: Anatomy, cls: str, pcfg: PhantomConfig, seed: int, index: int, n_slices: int) -> RenderedSubject:
    """Subject ``index`` of class ``cls``: ``n_slices`` nearby slices from generators seeded by (seed, index).

    The head, series and scanner are drawn once. A tumour subject has one lesion, fixed in its
    head, and every one of its slices cuts it (at least ``MIN_LESION_PX`` lesion pixels): the
    stack is centred on the lesion and its spacing narrowed to fit inside the lesion when needed,
    so a subject stays in one class and no tumour-labelled slice misses the tumour.
    """
    rng = np.random.default_rng([seed, index, _SUBJECT_TAG])
    size = pcfg.size
    site = get_site(pcfg.site)
    head = draw_head(anat, rng, site)
    imaging = draw_imaging(size, rng, site)
    # Drawn once, not per attempt: retries must not make the plane mix depend on the class.
    plane = _choose_plane(list(pcfg.planes), rng, site.plane_weight)
    series = draw_series(plane, size, rng, site)
    subtle = cls != "healthy" and rng.random() < pcfg.subtle_fraction
    axis = PLANES[plane][0]
    area, centroid = anat.slice_stats(axis)
    spread = (n_slices - 1) / 2.0
    usable = np.flatnonzero(area >= MIN_BRAIN_SHARE * area.max())
    # A stack not placed on a lesion or the sella lies wholly where slices show enough brain.
    reach = spread * series.spacing_mm
    inner = usable[(usable >= usable.min() + reach) & (usable <= usable.max() - reach)]
    usable = inner if inner.size else usable
    for attempt in range(50):
        lesion: Lesion | None = None
        through, span = None, None
        if cls == "pituitary":
            lesion = pituitary_lesion(anat, rng, subtle)
            through, span = lesion_span(lesion, plane)
        elif rng.random() < SELLA_SLICE_SHARE:
            # The same stack a pituitary subject would get, so position in the head is no class cue.
            decoy = pituitary_lesion(anat, rng, subtle=rng.random() < pcfg.subtle_fraction)
            through, span = lesion_span(decoy, plane)
        index_along = float(through[axis]) if through is not None else float(rng.choice(usable)) + rng.uniform(-0.5, 0.5)
        k = int(np.clip(round(index_along), 0, len(area) - 1))
        anchor = centroid[k].copy()
        anchor[axis] = index_along
        centre = head.to_subject(anchor)
        pixel_mm = float(np.sqrt(max(area[k], 1000.0) / (series.brain_share * size * size)))
        mid = 0.0 if through is None else float(np.dot(head.to_subject(through) - centre, series.normal))
        if cls in ("glioma", "meningioma"):
            reference = slice_geometry(head, series, centre, pixel_mm, size, 0.0)
            lesion = place_lesion(cls, anat, reference, rng, subtle)
            if lesion is None:
                continue
            through, span = lesion_span(lesion, plane)
            mid = float(np.dot(head.to_subject(through) - centre, series.normal))
        spacing = series.spacing_mm
        if span is not None and spread > 0:
            spacing = min(spacing, span * float(head.scale.mean()) / (2 * spread))
        for narrow in (1.0, 0.5, 0.25):
            slices = []
            for j in range(n_slices):
                srng = np.random.default_rng([seed, index, attempt, j, _SLICE_TAG])
                offset = mid + (j - spread + srng.uniform(-0.1, 0.1)) * spacing * narrow
                r = _render_slice(anat, cls, pcfg, head, series, imaging, centre, pixel_mm, offset, lesion, srng,
                                  [seed, index, attempt, _LESION_TAG])
                if r is None:
                    break
                slices.append(r)
            if len(slices) == n_slices or lesion is None:
                break
        if len(slices) == n_slices:
            break
    else:
        raise DataError(f"phantom subject {index} ({cls}): no usable stack of {n_slices} slices in 50 attempts with planes={pcfg.planes}")
    for j, r in enumerate(slices):
        r.facts.update(slice=j, attempts=attempt + 1)
    facts: dict[str, Any] = {
        "plane": plane,
        "n_slices": n_slices,
        "spacing_mm": round(spacing * narrow, 3),
        "pixel_mm": round(pixel_mm, 4),
        "head_scale": round(float(np.prod(head.scale) ** (1 / 3)), 4),
        "scale_x": round(float(head.scale[0]), 4),
        "scale_y": round(float(head.scale[1]), 4),
        "scale_z": round(float(head.scale[2]), 4),
        "deformation_mm": round(head.displacement_rms(), 3),
        "ventricles": round(head.ventricles, 3),
        "contrast": round(imaging.contrast, 3),
        "noise": round(imaging.noise, 4),
        "gamma": round(imaging.gamma, 3),
        "white": round(imaging.white, 2),
        "bias_std": round(float(imaging.bias.std()), 4),
        "downsample": round(imaging.downsample, 3),
        "flipped": series.flip,
        "subtle": subtle,
        "site": lesion.site if lesion else "",
        "radius_mm": round(lesion.radius, 2) if lesion else 0.0,
    }
    return RenderedSubject(slices, facts, head, imaging)


def _render_slice(
    anat: Anatomy, cls: str, pcfg: PhantomConfig, head: Head, series: Series, imaging: Imaging, centre: np.ndarray,
    pixel_mm: float, offset_mm: float, lesion: Lesion | None, rng: np.random.Generator, lesion_seed: list[int],
) -> Rendered | None:
    """One slice of a subject; None when a tumour subject's slice shows less than MIN_LESION_PX of it."""
    size = pcfg.size
    geom = slice_geometry(head, series, centre, pixel_mm, size, offset_mm, rng)
    # The lesion's shape, texture and mass effect come from a generator seeded per subject, not
    # per slice: every slice cuts the same tumour.
    looked_up = mass_effect(anat, geom, lesion, np.random.default_rng([*lesion_seed, 1])) if lesion is not None else geom.coords
    # Receive-coil fall-off below the head, instead of the hard edge where the volume ends.
    image = sample(anat.t1, looked_up) * np.clip(looked_up[2] / 25.0, 0.0, 1.0)
    brain = geom.lookup(anat.brain) if lesion is None else sample(anat.brain, looked_up)
    image = tissue_contrast(image, brain, imaging.contrast)
    mask = np.zeros((size, size), dtype=bool)
    if lesion is not None:
        image, mask = draw_lesion(image, anat, geom, looked_up, lesion, np.random.default_rng([*lesion_seed, 2]), pcfg.lesion_contrast)
        if mask.sum() < MIN_LESION_PX:
            return None
    scale = 0.72 if (pcfg.confound == "intensity" and cls == "healthy") else 1.0
    out = photometric(image, imaging, rng, intensity_scale=scale)
    if series.flip:
        out, mask = out[:, ::-1], mask[:, ::-1]
    cols = slice(0, size)
    if pcfg.confound == "aspect" and cls == "healthy":
        keep = int(round(size * 0.8))
        cols = slice((size - keep) // 2, (size - keep) // 2 + keep)
        out, mask = out[:, cols], mask[:, cols]
    facts: dict[str, Any] = {
        "plane": series.plane,
        "slice_mm": round(geom.position_mm, 3),
        "pixel_mm": round(geom.pixel_mm, 4),
        "flipped": series.flip,
        "subtle": lesion.subtle if lesion else False,
        "site": lesion.site if lesion else "",
        "radius_mm": round(lesion.radius, 2) if lesion else 0.0,
        "lesion_px": int(mask.sum()),
    }
    return Rendered(np.ascontiguousarray(out), np.ascontiguousarray(mask.astype(np.uint8) * 255), facts, anat, geom, series.flip, cols)
