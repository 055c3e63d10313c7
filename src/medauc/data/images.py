"""Reading any image file as one grey-level array, and writing 8-bit PNGs.

The one conversion (every stage sees images the same way), by PIL mode:

====================  ==========================================================
mode                  float32 (H, W) in [0, 1]
====================  ==========================================================
``1``                 0 or 1
``L``                 value / 255
``LA``, ``La``        composited on black: L * A / 255**2
``P``, ``PA``         palette expanded to RGBA, then as ``RGBA``
``RGB`` (and other    luminance (ITU-R 601-2, the weights of PIL's ``convert("L")``):
colour spaces:        (0.299 R + 0.587 G + 0.114 B) / 255; ``CMYK``, ``YCbCr``,
CMYK, YCbCr, LAB,     ``LAB`` and ``HSV`` are converted to RGB by PIL first
HSV)
``RGBA``, ``RGBa``    composited on black (RGB * A / 255), then as ``RGB``
``I;16*``             value / 65535
``I`` (int32)         value / 65535 when every value lies in [0, 65535] (PIL decodes
                      16-bit files as ``I``), else (value - min) / (max - min)
``F`` (float32)       unchanged when every value lies in [0, 1], else
                      (value - min) / (max - min)
====================  ==========================================================

Multi-frame files (TIFF stacks, animated GIF) give their first frame; an EXIF orientation tag
is applied. Files that cannot be decoded completely raise :class:`~medauc.errors.DataError`
naming the file and the reason; nothing is silently replaced.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medauc.errors import DataError
from medauc.fileio import atomic_path

# Extensions treated as images when walking a folder; anything else is listed as "not an image".
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)

# What PIL's decoders raise on truncated or damaged files (seen in Pillow's own fuzzing tests).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, NotImplementedError)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class ImageInfo:
    """What the file was before conversion."""

    width: int  # pixels, after EXIF orientation
    height: int
    mode: str  # PIL mode of the (first) frame, e.g. "L", "RGB", "I;16"
    format: str  # PIL format name, e.g. "PNG", "JPEG"
    file_size: int  # bytes


def _to_gray(im: Image.Image) -> np.ndarray:
    """PIL image -> float32 (H, W) in [0, 1], by the table in the module docstring."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / np.float32(255.0)
    if mode in ("LA", "La"):
        a = np.asarray(im, dtype=np.float64)
        alpha = a[..., 1] / 255.0 if mode == "LA" else 1.0
        return (a[..., 0] * alpha / 255.0).astype(np.float32)
    if mode in ("P", "PA"):
        return _to_gray(im.convert("RGBA"))
    if mode in ("RGBA", "RGBa"):
        a = np.asarray(im, dtype=np.float64)
        alpha = a[..., 3:4] / 255.0 if mode == "RGBA" else 1.0
        return (a[..., :3] * alpha @ _LUMA / 255.0).astype(np.float32)
    if mode.startswith("I;16"):
        return (np.asarray(im).astype(np.float64) / 65535.0).astype(np.float32)
    if mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return (a / 65535.0).astype(np.float32)
        return _minmax(a)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("float image holds NaN or infinite values")
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            return a.astype(np.float32)
        return _minmax(a)
    if mode != "RGB":
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    a = np.asarray(im, dtype=np.float64)
    return (a @ _LUMA / 255.0).astype(np.float32)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` completely; return float32 (H, W) in [0, 1] and what the file was.

    Raises DataError (naming the file) for a missing, zero-byte, truncated, corrupt or non-image file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise DataError(f"{path}: zero-byte file")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* is not an error for large medical images.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format or ""
                im.load()  # forces a full decode: a truncated file fails here, not later
                im = ImageOps.exif_transpose(im)
                mode = im.mode
                arr = _to_gray(im)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image PIL can read") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{path}: decoded to an empty or non-2-D array of shape {arr.shape}")
    info = ImageInfo(width=int(arr.shape[1]), height=int(arr.shape[0]), mode=mode, format=fmt, file_size=int(size))
    return arr, info


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Any image file -> float32 (H, W) in [0, 1] (conversion table: module docstring).

    Raises DataError naming the file when it cannot be decoded completely.
    """
    return read_image(path)[0]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] (values outside are clipped) or uint8 -> uint8 (H, W)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return np.round(np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write float (H, W) in [0, 1] (clipped) or uint8 (H, W) as an 8-bit grey PNG, atomically."""
    arr = to_uint8(img)
    if arr.ndim != 2:
        raise ValueError(f"save_png expects a 2-D (H, W) image, got shape {arr.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """float (H, W) -> float32 (h, w) in [0, 1]; ``size`` is an int (square) or (h, w).

    Bilinear, antialiased when shrinking (PIL widens the kernel), so no aliasing and no overshoot.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"resize: size must be positive, got {size!r}")
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"resize expects a 2-D (H, W) image, got shape {arr.shape}")
    if arr.shape == (h, w):
        return arr.copy()
    out = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
