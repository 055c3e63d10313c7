"""Image variation: where the slice is cut (plane, position, tilt, rotation, scale, elastic
warp, field of view) and how it is imaged (bias field, blur, Rician noise, gamma, contrast).

Every draw comes from the caller's ``numpy.random.Generator`` and none depends on the class, so
that healthy and tumour images share every global property.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from medauc.data.phantom.anatomy import Anatomy

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
    slice_index: float
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


def slice_geometry(
    anat: Anatomy,
    plane: str,
    size: int,
    rng: np.random.Generator,
    through: np.ndarray | None = None,
) -> SliceGeometry:
    """Draw an oblique, rotated, scaled, elastically warped slice that shows brain.

    ``through`` (3,) voxel point: cut the slice through it (used for the sella) instead of at a
    random brain-bearing position.
    """
    axis, col, row = PLANES[plane]
    ecol, erow = np.array(col), np.array(row)
    area, centroid = anat.slice_stats(axis)
    if through is None:
        usable = np.flatnonzero(area >= MIN_BRAIN_SHARE * area.max())
        index = float(rng.choice(usable)) + rng.uniform(-0.5, 0.5)
    else:
        index = float(through[axis])
    k = int(np.clip(round(index), 0, len(area) - 1))
    centre = centroid[k].copy()
    centre[axis] = index
    # Oblique cut: tilt the plane a few degrees about its two in-plane axes, then rotate in-plane.
    tilt = _rotation(ecol, rng.normal(0, np.radians(4))) @ _rotation(erow, rng.normal(0, np.radians(4)))
    ecol, erow = tilt @ ecol, tilt @ erow
    theta = rng.uniform(-np.radians(15), np.radians(15))
    ecol, erow = np.cos(theta) * ecol + np.sin(theta) * erow, -np.sin(theta) * ecol + np.cos(theta) * erow
    # Scale from a target brain share of the image, drawn independently of the class.
    brain_share = rng.uniform(0.22, 0.42)
    pixel_mm = float(np.sqrt(max(area[k], 1000.0) / (brain_share * size * size)))
    aniso = rng.uniform(-0.05, 0.05)
    shift = rng.uniform(-0.06, 0.06, 2) * size
    warp = size * 0.012
    dr = smooth_field(rng, size, 5, warp)
    dc = smooth_field(rng, size, 5, warp)
    r, c = np.mgrid[0:size, 0:size].astype(np.float32)
    half = (size - 1) / 2.0
    cc = (c - half - shift[0] + dc) * (pixel_mm * (1 + aniso))
    rr = (r - half - shift[1] + dr) * (pixel_mm * (1 - aniso))
    coords = (
        centre[:, None, None].astype(np.float32)
        + cc[None] * ecol[:, None, None].astype(np.float32)
        + rr[None] * erow[:, None, None].astype(np.float32)
    )
    normal = np.cross(ecol, erow)
    return SliceGeometry(plane, coords, normal / np.linalg.norm(normal), pixel_mm, index)


def photometric(img: np.ndarray, rng: np.random.Generator, intensity_scale: float = 1.0) -> np.ndarray:
    """Imaging variation on a T1 slice (white matter = 1.0) -> uint8 (H, W).

    Resolution loss or blur, multiplicative bias field, Rician noise, gamma and contrast; every
    parameter drawn from ``rng``.
    """
    size = img.shape[0]
    if rng.random() < 0.35:
        f = rng.uniform(1.3, 2.2)
        small = ndi.zoom(img, 1 / f, order=1, grid_mode=True, mode="nearest")
        img = ndi.zoom(small, np.array(img.shape) / np.array(small.shape), order=1, grid_mode=True, mode="nearest")
    else:
        img = ndi.gaussian_filter(img, rng.uniform(0.2, 0.9))
    img = img * np.exp(smooth_field(rng, size, 4, 0.12))
    sigma = rng.uniform(0.015, 0.06)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    ref = 1.8  # about the brightest tissue (scalp fat)
    img = ref * (img / ref) ** rng.uniform(0.75, 1.35)
    white = rng.uniform(100.0, 165.0) * intensity_scale  # grey value of white matter
    offset = rng.uniform(-4.0, 4.0)
    return np.clip(np.rint(img * white + offset), 0, 255).astype(np.uint8)
