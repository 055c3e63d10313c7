"""One NIfTI volume (and its segmentation) -> 2-D slices in [0, 1], with nibabel.

1. The volume is reoriented to the closest canonical orientation (RAS+: axes point to the
   patient's right, anterior and superior; ``nibabel.as_closest_canonical``), so that
   ``data.volume_axis`` means the same plane in every file: 0 sagittal, 1 coronal, 2 axial.
2. Its scaled values (scl_slope/scl_inter applied) are mapped to [0, 1] by ``data.window``
   over the whole volume, so all its slices share one grey scale: ``dicom`` takes the header's
   cal_min/cal_max display range when set, else the volume's percentiles.
3. Slices are taken along the axis (``data.slices``): ``all``, ``middle:K`` (the K central
   ones), or ``mask`` (those whose segmentation holds tissue, label > 0). Each slice is shown
   with superior (axial: anterior) up and the patient's left on the image's left.
4. The segmentation (same grid after reorientation) gives each slice a 0/1 lesion mask.

A volume that gives no slice raises :class:`~medauc.data.medical.UnusableFile` with the reason
(not NIfTI, truncated, 4-D, RGB, a segmentation on another grid, no tissue for ``mask``).
Slices that come out one flat grey (outside the head) are counted, not kept.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from medauc.data.medical import SliceSpec, UnusableFile, is_blank, linear_window, percentile_range

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, MemoryError)


@dataclass
class NiftiSlices:
    """What one volume gives."""

    images: list[np.ndarray]  # float32 (H, W) in [0, 1], one per slice kept
    masks: list[np.ndarray | None]  # bool (H, W) per slice, None without a segmentation
    slices: list[int]  # index of each slice along the axis, in the canonical orientation
    mode: str  # the stored data type, e.g. "int16"
    shape: tuple[int, ...]  # canonical volume shape
    blank: int = 0  # slices dropped because they came out one flat grey
    window: str = "percentile"  # "dicom" (cal_min/cal_max), "percentile" or "fixed"


def _load(path: str | os.PathLike[str], what: str) -> tuple[np.ndarray, object]:
    """(canonical float32 data, canonical image) of ``path``; UnusableFile naming the problem."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.load(os.fspath(path))
    except (ImageFileError, HeaderDataError, *_READ_ERRORS) as exc:
        raise UnusableFile(f"not a readable NIfTI {what} ({type(exc).__name__})") from exc
    dtype = img.get_data_dtype()
    if dtype.fields is not None:
        raise UnusableFile(f"colour NIfTI {what} (data type {dtype}; medauc reads grey-level volumes)")
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise UnusableFile(
            f"{len(shape)}-D NIfTI {what} (shape {'x'.join(map(str, shape))}; medauc reads 3-D volumes: "
            "split it into one 3-D file per volume, e.g. with fslsplit, and put them in the class folder)"
        )
    if len(shape) < 2 or min(shape) < 1:
        raise UnusableFile(f"NIfTI {what} of shape {shape}: not an image")
    try:
        if len(img.shape) != 3:
            img = nib.Nifti1Image(np.asanyarray(img.dataobj).reshape(shape + (1,) * (3 - len(shape))), img.affine, img.header)
        canon = nib.as_closest_canonical(img)
        data = canon.get_fdata(dtype=np.float32)
    except (HeaderDataError, *_READ_ERRORS) as exc:
        raise UnusableFile(f"truncated or corrupt NIfTI {what} ({type(exc).__name__})") from exc
    return data, canon


def _display(slab: np.ndarray) -> np.ndarray:
    """A canonical slice (first in-plane axis, second in-plane axis) -> image rows top to bottom."""
    return np.ascontiguousarray(slab.T[::-1])


def _pick(n: int, spec: SliceSpec, seg: np.ndarray | None, axis: int) -> list[int]:
    if spec.mode == "all":
        return list(range(n))
    if spec.mode == "middle":
        k = min(spec.count, n)
        start = (n - k) // 2
        return list(range(start, start + k))
    if seg is None:
        raise UnusableFile("no segmentation for data.slices=mask (no file matched data.mask_pattern, and no masks/ twin)")
    other = tuple(a for a in range(3) if a != axis)
    tissue = np.flatnonzero((seg > 0).any(axis=other))
    if tissue.size == 0:
        raise UnusableFile("segmentation without tissue for data.slices=mask (every label is 0)")
    return [int(i) for i in tissue]


def read_nifti(
    path: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None, axis: int = 2,
    spec: SliceSpec = SliceSpec("all"), window: str | tuple[float, float] = "dicom",
) -> NiftiSlices:
    """Slices of the volume at ``path`` in [0, 1] with their masks (module docstring).

    ``axis``: ``data.volume_axis`` (0, 1, 2 in RAS+); ``spec``: ``data.slices`` parsed;
    ``window``: ``data.window``. Raises UnusableFile with the reason when it gives no slice.
    """
    data, canon = _load(path, "volume")
    seg = None
    if mask_path:
        seg, seg_canon = _load(mask_path, "segmentation")
        if seg.shape != data.shape or not np.allclose(seg_canon.affine, canon.affine, atol=1e-3):
            raise UnusableFile(
                f"segmentation on another grid (volume {'x'.join(map(str, data.shape))}, segmentation "
                f"{'x'.join(map(str, seg.shape))}, or different affines)"
            )
    data = np.where(np.isfinite(data), data, np.nan)
    used = "fixed"
    if isinstance(window, str):
        lo, hi = float(canon.header["cal_min"]), float(canon.header["cal_max"])
        used = "dicom"
        if window != "dicom" or not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            lo, hi = percentile_range(data)
            used = "percentile"
    else:
        lo, hi = float(window[0]), float(window[1])
    unit = linear_window(np.nan_to_num(data, nan=lo), lo, hi)

    images, masks, kept, blank = [], [], [], 0
    for k in _pick(data.shape[axis], spec, seg, axis):
        img = _display(np.take(unit, k, axis=axis))
        if is_blank(img):
            blank += 1
            continue
        images.append(img)
        masks.append(None if seg is None else _display(np.take(seg, k, axis=axis)) > 0)
        kept.append(k)
    return NiftiSlices(images=images, masks=masks, slices=kept, mode=str(canon.get_data_dtype()),
                       shape=tuple(data.shape), blank=blank, window=used)
