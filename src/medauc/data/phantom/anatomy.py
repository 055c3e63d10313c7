"""The head the phantom is cut from: a T1 volume, tissue maps and landmarks on one 1 mm grid.

Colin27 (Debian's ``mricron-data``: ``ch2.nii.gz``, head with skull, scalp, orbits and sella, MNI
space) is used when installed; nilearn's bundled MNI152 brain mask and white-matter map are
resampled onto it. Without Colin27, the MNI152 T1 (brain only) gets a synthetic CSF rim, skull
and scalp. Resampling takes seconds, so the result is cached as an ``.npz`` and memoised per
process.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from medauc.errors import DataError

log = logging.getLogger(__name__)

COLIN27_PATH = Path("/usr/share/mricron/templates/ch2.nii.gz")
ANATOMY_VERSION = "1"  # bump when the volumes below change, so caches are rebuilt

# Landmarks in MNI millimetres (x right, y anterior, z superior), read off Colin27.
SELLA_MNI = (0.0, 6.0, -30.0)  # centre of the pituitary fossa
MIDLINE_X_MNI = 0.0


@dataclass(frozen=True)
class Anatomy:
    """Volumes on one 1 mm grid, indexed [i, j, k] = (x right, y anterior, z superior).

    t1: float32, white matter = 1.0; brain: uint8, 255 = brain (smoothed mask); wm: uint8
    white-matter probability x 255; intracranial: uint8, 255 = brain or CSF rim inside the inner
    skull table; sella: voxel coordinates (3,); midline_i: the i index of x = 0 mm.
    The masks stay uint8 to keep each worker process small (about 50 MB in all).
    """

    source: str  # "colin27" or "mni152"
    description: str
    t1: np.ndarray
    brain: np.ndarray
    wm: np.ndarray
    intracranial: np.ndarray
    sella: np.ndarray
    midline_i: float

    def slice_stats(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-slice brain area (mm^2, shape (n,)) and brain centroid (voxels, shape (n, 3)) along ``axis``."""
        return _slice_stats(self, axis)


def cache_root() -> Path:
    """``$MEDAUC_CACHE`` or ``~/.cache/medauc``."""
    env = os.environ.get("MEDAUC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medauc"


def resolve_source(anatomy: str, anatomy_path: str | os.PathLike[str] | None = None) -> tuple[str, Path | None]:
    """Which anatomy a config asks for: ("colin27", path) or ("mni152", None).

    ``anatomy`` is "auto" (Colin27 where installed, else MNI152), "colin27" or "mni152".
    """
    path = Path(anatomy_path) if anatomy_path else COLIN27_PATH
    if anatomy == "mni152":
        return "mni152", None
    if anatomy == "colin27":
        if not path.is_file():
            raise DataError(
                f"phantom.anatomy=colin27 but {path} does not exist; install Debian's mricron-data "
                "(apt-get install mricron-data) or set phantom.anatomy=mni152 (or auto)"
            )
        return "colin27", path
    if anatomy == "auto":
        return ("colin27", path) if path.is_file() else ("mni152", None)
    raise DataError(f"phantom.anatomy={anatomy!r} is not one of auto, colin27, mni152")


def load_anatomy(anatomy: str = "auto", anatomy_path: str | os.PathLike[str] | None = None) -> Anatomy:
    """The anatomy for ``anatomy`` ("auto", "colin27", "mni152"), from the cache when possible."""
    source, path = resolve_source(anatomy, anatomy_path)
    return _load_cached(source, str(path) if path else "")


@functools.lru_cache(maxsize=2)
def _load_cached(source: str, path: str) -> Anatomy:
    tag = f"{source}-{_file_tag(Path(path)) if path else 'nilearn'}-v{ANATOMY_VERSION}"
    cache_file = cache_root() / "anatomy" / f"{tag}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as z:
            return _from_arrays(source, {k: z[k] for k in z.files})
    log.info("building the phantom anatomy (%s); cached in %s", source, cache_file)
    arrays = _build_colin27(Path(path)) if source == "colin27" else _build_mni152()
    from medauc.fileio import atomic_path

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_file) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return _from_arrays(source, arrays)


def _file_tag(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}"


def _from_arrays(source: str, a: dict[str, np.ndarray]) -> Anatomy:
    desc = (
        "Colin27 head (mricron-data ch2.nii.gz) with MNI152 brain mask and white matter"
        if source == "colin27"
        else "MNI152 T1 (nilearn) with a synthetic skull and scalp: Colin27 not installed "
        "(apt-get install mricron-data for the real head)"
    )
    return Anatomy(
        source=source,
        description=desc,
        t1=a["t1"].astype(np.float32),
        brain=a["brain"].astype(np.uint8),
        wm=a["wm"].astype(np.uint8),
        intracranial=a["intracranial"].astype(np.uint8),
        sella=a["sella"].astype(np.float64),
        midline_i=float(a["midline_i"]),
    )


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _mni_to_voxel(affine: np.ndarray, xyz: tuple[float, float, float]) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.array([*xyz, 1.0]))[:3]


def _masks(brain_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed brain mask and intracranial mask (brain dilated by a 3 mm CSF/dura rim)."""
    brain = ndi.gaussian_filter(brain_mask.astype(np.float32), 1.0)
    outside = ndi.distance_transform_edt(~brain_mask)
    intracranial = ndi.gaussian_filter((outside <= 3.0).astype(np.float32), 0.7)
    return brain, intracranial


def _build_colin27(path: Path) -> dict[str, np.ndarray]:
    import nibabel as nib
    from nilearn import datasets, image

    head = nib.load(str(path))
    if not np.allclose(np.abs(np.diag(head.affine)[:3]), 1.0):
        raise DataError(f"{path}: expected a 1 mm grid like Colin27's ch2.nii.gz; got affine {head.affine.tolist()}")
    t1 = np.asarray(head.get_fdata(), dtype=np.float32)

    def onto_head(img, interpolation: str) -> np.ndarray:
        return np.asarray(
            image.resample_to_img(img, head, interpolation=interpolation, force_resample=True, copy_header=True).get_fdata(),
            dtype=np.float32,
        )

    mask = onto_head(datasets.load_mni152_brain_mask(resolution=1), "nearest") > 0.5
    wm = onto_head(datasets.load_mni152_wm_template(resolution=1), "linear")
    t1 /= float(np.median(t1[wm > 0.9]))
    return _volumes(t1, mask, wm, head.affine)


def _volumes(t1: np.ndarray, mask: np.ndarray, wm: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays an :class:`Anatomy` is made of, from a head T1, its brain mask and white-matter map."""
    brain, intracranial = _masks(mask)
    return {
        "t1": t1.astype(np.float16),
        "brain": _to_u8(brain),
        "wm": _to_u8(np.clip(wm, 0, 1) * mask),
        "intracranial": _to_u8(intracranial),
        "sella": _mni_to_voxel(affine, SELLA_MNI),
        "midline_i": np.float64(_mni_to_voxel(affine, (MIDLINE_X_MNI, 0.0, 0.0))[0]),
    }


def _build_mni152() -> dict[str, np.ndarray]:
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=1)
    t1 = np.asarray(tpl.get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0.5
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    t1 /= float(np.median(t1[(wm > 0.9) & mask]))
    t1 *= mask
    # Synthetic coverings by distance from the brain (mm): CSF, inner table, diploe, outer table,
    # scalp fat, skin. A smooth random wobble keeps the thickness from being perfectly uniform.
    rng = np.random.default_rng(27)
    wobble = ndi.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), 8.0)
    wobble *= 1.5 / (wobble.std() + 1e-6)
    d = ndi.distance_transform_edt(~mask).astype(np.float32) + wobble
    layers = [(2.5, 0.18), (4.5, 0.05), (7.5, 0.55), (8.5, 0.05), (13.0, 1.55), (14.5, 0.75)]
    cover = np.zeros_like(t1)
    lo = 0.0
    for hi, value in layers:
        cover[(d > lo) & (d <= hi)] = value
        lo = hi
    cover = ndi.gaussian_filter(cover, 0.6)
    t1 = np.where(mask, t1, cover)
    return _volumes(t1, mask, wm, tpl.affine)


def _slice_stats(anat: Anatomy, axis: int) -> tuple[np.ndarray, np.ndarray]:
    # Keyed by source, not id(): an evicted Anatomy's id may be reused by another object.
    cache = _STATS.setdefault((anat.source, anat.t1.shape), {})
    if axis not in cache:
        m = anat.brain > 127
        other = tuple(a for a in range(3) if a != axis)
        area = m.sum(axis=other).astype(np.float64)
        idx = np.indices(m.shape, sparse=True)
        cent = np.zeros((m.shape[axis], 3))
        for a in range(3):
            cent[:, a] = (m * idx[a]).sum(axis=other) / np.maximum(area, 1)
        cache[axis] = (area, cent)
    return cache[axis]


_STATS: dict[tuple[str, tuple[int, ...]], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
