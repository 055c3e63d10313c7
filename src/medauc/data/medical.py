"""What DICOM and NIfTI files are, and how their intensities become [0, 1] grey levels.

Shared by :mod:`medauc.data.dicom`, :mod:`medauc.data.nifti` (the readers) and
:mod:`medauc.data.convert` (which turns each frame or slice into a PNG in the run folder).

* A DICOM file is a ``.dcm``/``.dicom`` file, or a file of another (or no) extension that is not
  an ordinary image and carries the DICOM preamble (``DICM`` at byte 128), as PACS exports write
  them (``IM0001``, ``1.3.12.2...``).
* A NIfTI file ends in ``.nii`` or ``.nii.gz``; one whose name ends in ``data.mask_pattern`` is a
  segmentation (a mask for the volumes next to it), never an image.
* ``data.window`` maps the calibrated intensities of a frame or volume to [0, 1]: ``dicom`` takes
  the file's own display window (DICOM Window Center/Width, NIfTI cal_min/cal_max) and falls back
  to ``percentile`` when there is none; ``percentile`` clips at the 0.5th and 99.5th percentiles;
  ``[low, high]`` clips at those values (e.g. ``[-100, 200]`` Hounsfield units).

Nothing here imports pydicom or nibabel; the readers do, when a data set holds such files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medauc.errors import DataError

DICOM_EXTENSIONS = (".dcm", ".dicom")
MEDICAL_KINDS = ("dicom", "nifti")  # the kinds of file (:func:`file_kind`) that prepare converts
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
PERCENTILES = (0.5, 99.5)  # the percentile window's clip points
DICOM_FRAMES = ("first", "all")
WINDOWS = ("dicom", "percentile")
SLICE_MODES = ("all", "mask", "middle:K")
AXES = (0, 1, 2)
_PREAMBLE = 128


class UnusableFile(DataError):
    """A DICOM or NIfTI file gives no image; the message is the skip reason (without the path).

    Reasons begin with a short kind, details in parentheses, so the audit can count them by kind.
    """


# ----------------------------------------------------------------------------- which files


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_EXTENSIONS)


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True when bytes 128..131 of the file are ``DICM`` (the DICOM Part 10 preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PREAMBLE + 4)
    except OSError:
        return False
    return head[_PREAMBLE:] == b"DICM"


def file_kind(path: str | os.PathLike[str], mask_pattern: str = "") -> str:
    """``"dicom"``, ``"nifti"``, ``"segmentation"`` (a NIfTI named by ``mask_pattern``) or ``""``.

    Ordinary image extensions (PNG, JPEG, ...) are never DICOM; other files are opened only to
    read their first 132 bytes.
    """
    from medauc.data.images import IMAGE_EXTENSIONS

    name = os.path.basename(path).lower()
    if is_nifti_name(name):
        return "segmentation" if mask_pattern and name.endswith(mask_pattern.lower()) else "nifti"
    ext = os.path.splitext(name)[1]
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if ext in IMAGE_EXTENSIONS:
        return ""
    return "dicom" if has_dicom_preamble(path) else ""


def candidate_reason(path: Path, mask_pattern: str, reason: str) -> str | None:
    """For a file the image-folder rules skip (``reason``): None when it is a DICOM or NIfTI image,
    else the reason to list it under (a segmentation says that it serves as a mask)."""
    kind = file_kind(path, mask_pattern)
    if kind in ("dicom", "nifti"):
        return None
    if kind == "segmentation":
        return f"segmentation volume (data.mask_pattern={mask_pattern!r}: the mask of the volumes next to it)"
    return reason


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SliceSpec:
    """``data.slices`` parsed: mode ``all``, ``mask`` or ``middle`` (then ``count`` slices)."""

    mode: str
    count: int = 0


def slices_problem(text: str) -> str | None:
    """Why ``text`` is not a valid ``data.slices`` value, or None."""
    try:
        parse_slices(text)
    except ValueError as exc:
        return str(exc)
    return None


def parse_slices(text: str) -> SliceSpec:
    """``"all"``, ``"mask"`` or ``"middle:K"`` (K >= 1) -> :class:`SliceSpec`; ValueError otherwise."""
    t = text.strip().lower()
    if t in ("all", "mask"):
        return SliceSpec(t)
    if t.startswith("middle:"):
        k = t.split(":", 1)[1]
        if k.isdigit() and int(k) >= 1:
            return SliceSpec("middle", int(k))
    raise ValueError("must be 'all', 'mask' (slices whose segmentation has tissue) or 'middle:K' with K >= 1, e.g. 'middle:5'")


def window_problem(value: str | list[float]) -> str | None:
    """Why ``value`` is not a valid ``data.window``, or None."""
    if isinstance(value, str):
        return None if value in WINDOWS else "must be 'dicom', 'percentile' or [low, high]"
    if len(value) != 2 or not all(np.isfinite(value)) or not value[0] < value[1]:
        return "as a list must be [low, high] with low < high, e.g. [-100, 200]"
    return None


# ----------------------------------------------------------------------------- intensities


def linear_window(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """float array -> float32 in [0, 1]: ``low`` and below to 0, ``high`` and above to 1."""
    if not high > low:
        return np.zeros(np.shape(x), dtype=np.float32)
    return np.clip((np.asarray(x, dtype=np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def percentile_range(x: np.ndarray) -> tuple[float, float]:
    """The (0.5th, 99.5th) percentiles of the finite values of ``x`` (the percentile window)."""
    finite = np.asarray(x, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(finite, PERCENTILES)
    return float(lo), float(hi)


def dicom_voi_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2), scaled to float32 [0, 1] instead of the output bit range.

    ``LINEAR``: ``center - 0.5`` and ``width - 1`` (width >= 1); ``LINEAR_EXACT``: as given
    (width > 0); ``SIGMOID``: ``1 / (1 + exp(-4 (x - center) / width))``. ValueError for a
    width the function does not allow, or an unknown function.
    """
    x = np.asarray(x, dtype=np.float64)
    fn = (function or "LINEAR").upper()
    if fn == "SIGMOID":
        if width <= 0:
            raise ValueError(f"Window Width {width} must be > 0 for SIGMOID")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if fn == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width} must be >= 1 for LINEAR")
        center, width = center - 0.5, width - 1.0
    elif fn == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"Window Width {width} must be > 0 for LINEAR_EXACT")
    else:
        raise ValueError(f"VOI LUT Function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID")
    if width == 0:  # LINEAR with width 1: a threshold at the centre
        return (x > center).astype(np.float32)
    out = (x - center) / width + 0.5
    out[x <= center - width / 2] = 0.0
    out[x > center + width / 2] = 1.0
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def is_blank(img: np.ndarray) -> bool:
    """True for an image that holds one grey level only (an empty slice, or one clipped flat)."""
    return bool(img.size == 0 or float(np.ptp(img)) == 0.0)
