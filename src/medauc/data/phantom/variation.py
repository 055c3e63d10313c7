"""Variation between subjects and between the slices of one subject.

A subject is the template head with its own anatomy (:class:`Head`: size, a smooth 3-D
deformation, ventricle size), its own series (:class:`Series`: plane, obliquity, in-plane
rotation, field of view, slice spacing) and its own scanner (:class:`Imaging`: resolution, bias
field, noise level, gamma, grey/white contrast, gain), each drawn once per subject. The slices of
one subject differ only in where along the series they are cut, a small jitter and the noise
realisation.

Every draw comes from the caller's ``numpy.random.Generator`` and none depends on the class, so
that healthy and tumour subjects share every global property.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from medauc.data.phantom.anatomy import Anatomy
from medauc.data.phantom.sites import SITES, Site

# plane -> (slice axis, image-column direction, image-row direction) in voxel axes (x, y, z).
# Axial: anterior at the top; coronal and sagittal: superior at the top, face to the left.
PLANES: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": (2, (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": (1, (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": (0, (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
MIN_BRAIN_SHARE = 0.45  # a slice is usable when its brain area is at least this share of the largest


@dataclass
class SliceGeometry:
    """One oblique slice: ``coords`` (3, H, W) voxel coordinates of every output pixel."""

    plane: str
    coords: np.ndarray
    normal: np.ndarray  # (3,) unit normal of the slice plane
    pixel_mm: float
    position_mm: float  # signed distance of the slice from the head's centre along the normal, subject mm
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def lookup(self, volume: np.ndarray) -> np.ndarray:
        """``sample(volume, coords)``, memoised per volume for this slice."""
        key = id(volume)
        if key not in self._maps:
            self._maps[key] = sample(volume, self.coords)
        return self._maps[key]


def sample(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Trilinear lookup of ``volume`` at ``coords`` (3, H, W) -> float32 (H, W); outside = 0."""
    out = ndi.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0, output=np.float32, prefilter=False)
    return out / 255.0 if volume.dtype == np.uint8 else out


def sample_where(volume: np.ndarray, coords: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``sample`` inside the bounding box of the boolean ``region`` (H, W) only; 0 elsewhere."""
    out = np.zeros(region.shape, dtype=np.float32)
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if rows.size:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        out[box] = sample(volume, np.ascontiguousarray(coords[(slice(None), *box)]))
    return out


@functools.lru_cache(maxsize=16)
def _cosine_basis(size: int, grid: int) -> np.ndarray:
    x = (np.arange(size) + 0.5) / size
    return np.cos(np.pi * np.outer(x, np.arange(grid))).astype(np.float32)  # (size, grid)


def smooth_field(rng: np.random.Generator, size: int, grid: int, sigma: float) -> np.ndarray:
    """A smooth random field (size, size) of the lowest ``grid`` x ``grid`` cosine frequencies, std about ``sigma``."""
    basis = _cosine_basis(size, grid)
    coef = rng.normal(0.0, sigma, (grid, grid)).astype(np.float32)
    coef[0, 0] = 0.0
    # Each basis product has variance 1/4 (1/2 on the axes): rescale to the asked std.
    return (basis @ coef @ basis.T) * np.float32(2.0 / np.sqrt(grid * grid - 1))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass(frozen=True, eq=False)
class Head:
    """One subject's anatomy as a map from its own head to the template's voxels.

    Subject space is a 1 mm grid aligned with the template's. :meth:`to_template` scales about
    ``centre`` (the subject's head is ``scale`` (3,) times the template's along x, y, z), adds a
    smooth displacement (a cubic B-spline through control points ``step`` mm apart; ``coef``
    (3, gx, gy, gz) in mm) and enlarges (``ventricles`` > 0) or shrinks the ventricles and the
    deep grey matter round them by a radial pull towards ``ventricle_centre``. The map is
    evaluated only at the points a slice samples: warping the whole volume per subject would cost
    seconds, this costs about as much as one slice lookup.
    """

    centre: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    step: float
    ventricle_centre: np.ndarray
    ventricles: float

    def to_template(self, p: np.ndarray, lattice: int = 0) -> np.ndarray:
        """Template voxel coordinates of subject points ``p`` (3, ...) -> float32 (3, ...).

        ``lattice`` > 1, for an image's points ``p`` (3, H, W): the displacement is computed on a
        ``lattice`` x ``lattice`` grid of them and interpolated linearly in between (it varies over
        tens of mm, so the error is far below a pixel) -- a tenth of the cost.
        """
        c = self.centre.astype(np.float32).reshape(3, *([1] * (p.ndim - 1)))
        q = c + (p.astype(np.float32) - c) / self.scale.astype(np.float32).reshape(c.shape)
        if lattice > 1 and p.ndim == 3 and min(p.shape[1:]) > lattice:
            h, w = p.shape[1:]
            rows, cols = np.linspace(0, h - 1, lattice), np.linspace(0, w - 1, lattice)
            # q is affine in the pixel index, so its value at fractional lattice points is exact.
            origin, drow, dcol = q[:, 0, 0], q[:, 1, 0] - q[:, 0, 0], q[:, 0, 1] - q[:, 0, 0]
            at = origin[:, None, None] + drow[:, None, None] * rows[None, :, None] + dcol[:, None, None] * cols[None, None, :]
            coarse = self._displacement(at.reshape(3, -1).astype(np.float32)).reshape(3, lattice, lattice)
            lo, frac = _linear_steps(h, lattice)
            rows_done = coarse[:, lo] * (1 - frac)[None, :, None] + coarse[:, lo + 1] * frac[None, :, None]  # (3, h, lattice)
            lo, frac = _linear_steps(w, lattice)
            q = q + rows_done[:, :, lo] * (1 - frac) + rows_done[:, :, lo + 1] * frac
        else:
            q = q + self._displacement(q.reshape(3, -1)).reshape(q.shape)
        v = self.ventricle_centre.astype(np.float32).reshape(c.shape)
        d = q - v
        pull = 1.0 - np.float32(self.ventricles) * np.exp(-(d * d).sum(0) / np.float32(VENTRICLE_WIDTH_MM**2))
        return (v + d * pull[None]).astype(np.float32)

    def _displacement(self, q: np.ndarray) -> np.ndarray:
        """The smooth displacement (3, n) in mm at template points ``q`` (3, n)."""
        grid = q / np.float32(self.step) + np.float32(1.0)  # one control point of margin below 0
        return np.stack([ndi.map_coordinates(self.coef[a], grid, order=3, mode="nearest", prefilter=False) for a in range(3)])

    def to_subject(self, q: np.ndarray) -> np.ndarray:
        """The subject point (3,) that :meth:`to_template` maps to the template point ``q`` (3,)."""
        q = np.asarray(q, dtype=np.float64)
        p = self.centre + (q - self.centre) * self.scale
        for _ in range(20):  # the map is close to the affine part: a fixed-point step per iteration
            miss = q - self.to_template(p.astype(np.float32)).astype(np.float64)
            p = p + miss * self.scale
            if np.abs(miss).max() < 0.01:
                break
        return p

    def displacement_rms(self) -> float:
        """Root mean square length (mm) of the smooth displacement over the template's box, 16 mm apart."""
        n = (self.coef.shape[1:] - np.array([3, 3, 3])) * self.step
        axes = [np.arange(0.0, float(k), 16.0, dtype=np.float32) for k in n]
        q = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
        return float(np.sqrt((self._displacement(q) ** 2).sum(0).mean()))


@functools.lru_cache(maxsize=8)
def _linear_steps(n: int, lattice: int) -> tuple[np.ndarray, np.ndarray]:
    """For n points spanning ``lattice`` lattice points: the lower neighbour (n,) int and the
    weight (n,) float32 of the upper one, for linear interpolation (no BLAS: its threads would
    compete with the other worker processes)."""
    x = np.arange(n) * (lattice - 1) / (n - 1)
    lo = np.minimum(np.floor(x).astype(int), lattice - 2)
    return lo, (x - lo).astype(np.float32)


VENTRICLE_WIDTH_MM = 22.0  # how far from the ventricles' centre the enlargement reaches
# The centre of the lateral ventricles, from the sella (both templates share MNI's 1 mm axes).
VENTRICLES_FROM_SELLA_MM = (0.0, -18.0, 46.0)
DEFORMATION_STEP_MM = 32.0
DEFORMATION_MM = 7.0  # control-point std; the spline makes it about 2.5 mm rms per axis


def brain_centre(anat: Anatomy) -> np.ndarray:
    """Centroid (3,) of the template's brain, voxels."""
    area, centroid = anat.slice_stats(0)
    return (area[:, None] * centroid).sum(0) / max(area.sum(), 1.0)


def draw_head(anat: Anatomy, rng: np.random.Generator, site: Site = SITES[""]) -> Head:
    """A subject's head: size +/-8% (the site's range), a little anisotropic, deformed, ventricles larger or smaller."""
    size = rng.uniform(*site.head_size)
    scale = size * np.exp(np.clip(rng.normal(0.0, 0.035, 3), -0.07, 0.07))
    shape = np.ceil(np.array(anat.t1.shape) / DEFORMATION_STEP_MM).astype(int) + 3
    coef = rng.normal(0.0, DEFORMATION_MM, (3, *shape)).astype(np.float32)
    ventricles = rng.uniform(*site.ventricles)  # Colin27 is a young adult: most heads have larger ventricles
    return Head(brain_centre(anat), scale, coef, DEFORMATION_STEP_MM, anat.sella + np.array(VENTRICLES_FROM_SELLA_MM), float(ventricles))


@dataclass(frozen=True, eq=False)
class Series:
    """How a subject's slices are laid: unit vectors (3,) of image columns, rows and the slice
    normal in subject space, a target brain share of the image (sets the field of view), an
    in-plane ``shift`` (2,) in px, the slice ``spacing_mm`` and a left-right ``flip``."""

    plane: str
    ecol: np.ndarray
    erow: np.ndarray
    normal: np.ndarray
    brain_share: float
    shift: np.ndarray
    spacing_mm: float
    flip: bool


def draw_series(plane: str, size: int, rng: np.random.Generator, site: Site = SITES[""]) -> Series:
    """A series in ``plane``: oblique by a few degrees, rotated in-plane up to 15 degrees."""
    _, col, row = PLANES[plane]
    ecol, erow = np.array(col), np.array(row)
    tilt = _rotation(ecol, rng.normal(0, np.radians(4))) @ _rotation(erow, rng.normal(0, np.radians(4)))
    ecol, erow = tilt @ ecol, tilt @ erow
    theta = rng.uniform(-np.radians(15), np.radians(15))
    ecol, erow = np.cos(theta) * ecol + np.sin(theta) * erow, -np.sin(theta) * ecol + np.cos(theta) * erow
    normal = np.cross(ecol, erow)
    share = rng.uniform(0.22, 0.42)  # drawn independently of the class
    shift = rng.uniform(-0.06, 0.06, 2) * size
    spacing = rng.uniform(*site.spacing_mm)
    return Series(plane, ecol, erow, normal / np.linalg.norm(normal), float(share), shift, float(spacing), bool(rng.random() < 0.5))


def slice_geometry(
    head: Head,
    series: Series,
    centre: np.ndarray,
    pixel_mm: float,
    size: int,
    offset_mm: float,
    rng: np.random.Generator | None = None,
) -> SliceGeometry:
    """The slice of ``series`` through subject point ``centre`` (3,) moved ``offset_mm`` along the
    normal, mapped into the template by ``head``.

    ``rng``: a small per-slice jitter (field of view +/-2%, shift +/-1.5% of the side), as when
    each slice of a series is cropped and resized on its own; None = none.
    """
    zoom, jitter = 1.0, np.zeros(2)
    if rng is not None:
        zoom = rng.uniform(0.98, 1.02)
        jitter = rng.uniform(-0.015, 0.015, 2) * size
    r, c = np.mgrid[0:size, 0:size].astype(np.float32)
    half = (size - 1) / 2.0
    step = np.float32(pixel_mm * zoom)
    cc = (c - half - np.float32(series.shift[0] + jitter[0])) * step
    rr = (r - half - np.float32(series.shift[1] + jitter[1])) * step
    point = (np.asarray(centre) + offset_mm * series.normal).astype(np.float32)
    subject = (
        point[:, None, None]
        + cc[None] * series.ecol.astype(np.float32)[:, None, None]
        + rr[None] * series.erow.astype(np.float32)[:, None, None]
    )
    position = float(np.dot(point - head.centre, series.normal))
    return SliceGeometry(series.plane, head.to_template(subject, lattice=33), series.normal, float(pixel_mm * zoom), position)


@dataclass(frozen=True, eq=False)
class Imaging:
    """A subject's scanner: resolution loss (``downsample`` > 1) or blur (``blur`` px), a
    multiplicative ``bias`` field (H, W) (log), Rician ``noise`` (std, white matter = 1),
    ``gamma``, grey/white ``contrast`` (1 = the template's), ``white`` grey value of white matter
    and an ``offset``."""

    downsample: float
    blur: float
    bias: np.ndarray
    noise: float
    gamma: float
    contrast: float
    white: float
    offset: float


def draw_imaging(size: int, rng: np.random.Generator, site: Site = SITES[""]) -> Imaging:
    """A subject's imaging properties (the ``site``'s scanner), drawn once for all of its slices."""
    lowres = rng.random() < site.lowres_share
    downsample = rng.uniform(*site.downsample) if lowres else 1.0
    blur = 0.0 if lowres else rng.uniform(*site.blur)
    bias = smooth_field(rng, size, 4, site.bias_sigma)
    return Imaging(
        downsample=float(downsample),
        blur=float(blur),
        bias=bias,
        noise=float(rng.uniform(*site.noise)),
        gamma=float(rng.uniform(*site.gamma)),
        contrast=float(rng.uniform(*site.contrast)),
        white=float(rng.uniform(*site.white)),
        offset=float(rng.uniform(-4.0, 4.0)),
    )


def tissue_contrast(img: np.ndarray, brain: np.ndarray, contrast: float) -> np.ndarray:
    """Scale the brain's tissue differences from white matter (1.0) by ``contrast``; ``brain``
    (H, W) in [0, 1] weights it, so scalp and skull keep theirs. float32 (H, W)."""
    scaled = np.maximum(1.0 + contrast * (img - 1.0), 0.02)
    return (img + brain * (scaled - img)).astype(np.float32)


def photometric(img: np.ndarray, imaging: Imaging, rng: np.random.Generator, intensity_scale: float = 1.0) -> np.ndarray:
    """A T1 slice (white matter = 1.0) as ``imaging`` records it -> uint8 (H, W); ``rng`` draws the noise."""
    if imaging.downsample > 1.0:
        small = ndi.zoom(img, 1 / imaging.downsample, order=1, grid_mode=True, mode="nearest")
        img = ndi.zoom(small, np.array(img.shape) / np.array(small.shape), order=1, grid_mode=True, mode="nearest")
    else:
        img = ndi.gaussian_filter(img, imaging.blur)
    img = img * np.exp(imaging.bias)
    sigma = imaging.noise
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    ref = 1.8  # about the brightest tissue (scalp fat)
    img = ref * (img / ref) ** imaging.gamma
    white = imaging.white * intensity_scale  # grey value of white matter
    return np.clip(np.rint(img * white + imaging.offset), 0, 255).astype(np.uint8)
