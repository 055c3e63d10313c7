"""One DICOM file -> grey-level frames in [0, 1], with pydicom.

For each frame taken (the first, or all with ``data.dicom_frames=all``):

1. decode the stored values (compressed transfer syntaxes through pydicom's decoder plugins:
   pylibjpeg-openjpeg for JPEG 2000, GDCM for JPEG Lossless and JPEG-LS, pydicom itself for RLE);
2. apply the Modality LUT or Rescale Slope/Intercept (also from an enhanced multi-frame file's
   per-frame or shared functional groups), giving calibrated values (e.g. Hounsfield units);
3. map them to [0, 1] by ``data.window`` (:mod:`medauc.data.medical`): the file's Window
   Center/Width (its first window, with its VOI LUT Function), or percentiles, or fixed values;
4. invert MONOCHROME1 (where the lowest value is displayed white).

A file that gives no image raises :class:`~medauc.data.medical.UnusableFile` with the reason:
not DICOM, a non-image SOP class (structured reports, presentation states, RT plans,
segmentations, dose grids), no pixel data, colour (RGB, YBR, palette: medauc reads grey levels),
burned-in annotation (text in the pixels may name the patient), a compressed transfer syntax no
installed plugin decodes (named), or truncated pixel data. Frames that come out one flat grey are
counted, not kept.

The patient identifiers read here (PatientID, else StudyInstanceUID) leave this module only to be
hashed by the caller; pydicom's warnings, which quote element values, are never shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medauc.data.medical import UnusableFile, dicom_voi_window, is_blank, linear_window, percentile_range

_GREY = ("MONOCHROME1", "MONOCHROME2")
# What pydicom raises on files that are not DICOM or are cut short (seen on its own test files).
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, struct.error, NotImplementedError)
# What a malformed element raises when pydicom converts its value on first use.
_MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, struct.error)
_DECODE_HINT = ("install a pydicom decoder plugin that supports it (e.g. pylibjpeg-libjpeg, GPL-3.0, for 12-bit "
                "JPEG Extended), or convert the files (e.g. `gdcmconv --raw`)")


@dataclass
class DicomImage:
    """What one DICOM file gives: frames in [0, 1] and what they were (no identifiers but ``patient``)."""

    images: list[np.ndarray]  # float32 (H, W) in [0, 1], one per frame kept
    frames: list[int]  # 0-based frame number of each image
    patient: str  # PatientID, else StudyInstanceUID, else "": hash it, never store it
    patient_source: str  # "PatientID", "StudyInstanceUID" or ""
    modality: str  # e.g. "MR", "CT"; "" when absent
    mode: str  # e.g. "MONOCHROME2 12-bit": how the pixels were stored
    blank: int = 0  # frames dropped because they came out one flat grey
    windows: list[str] = field(default_factory=list)  # per image: "dicom", "percentile" or "fixed"


def _clean_code(value: Any) -> str:
    """A code string (Modality, Photometric Interpretation) reduced to letters, digits and _."""
    text = str(value or "").strip().upper()
    return "".join(c for c in text if c.isalnum() or c == "_")[:16]


def _sop_name(ds: Any) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return ""
    from pydicom.uid import UID

    name = UID(str(uid)).name
    return name if name != str(uid) else f"unknown SOP class {_clean_code(str(uid).replace('.', '_'))}"


def _frame_item(ds: Any, frame: int, seq: str) -> Any:
    """Item of functional-group sequence ``seq`` for ``frame``: per-frame first, then shared; or None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index and seq in items[index] and len(items[index][seq].value):
            return items[index][seq].value[0]
    return None


def _modality_view(ds: Any, frame: int) -> Any:
    """A dataset holding the Modality LUT module that applies to ``frame`` (for pydicom's apply_modality_lut)."""
    from pydicom.dataset import Dataset

    item = _frame_item(ds, frame, "PixelValueTransformationSequence")
    view = Dataset()
    src = item if item is not None and "RescaleSlope" in item else ds
    for kw in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"):
        if kw in src:
            view[kw] = src[kw]
    if "ModalityLUTSequence" in view:
        view.file_meta = ds.file_meta  # LUT data in OW needs the byte order
    return view


def _first(value: Any) -> float:
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def _voi(ds: Any, frame: int) -> tuple[float, float, str] | None:
    """(center, width, function) of the frame's first display window, or None when the file has none."""
    item = _frame_item(ds, frame, "FrameVOILUTSequence")
    src = item if item is not None and "WindowCenter" in item else ds
    if "WindowCenter" not in src or "WindowWidth" not in src:
        return None
    try:
        return _first(src.WindowCenter), _first(src.WindowWidth), str(src.get("VOILUTFunction", "LINEAR") or "LINEAR")
    except (TypeError, ValueError, IndexError):
        return None


def _to_unit(values: np.ndarray, ds: Any, frame: int, window: str | tuple[float, float]) -> tuple[np.ndarray, str]:
    """Calibrated values of one frame -> float32 [0, 1] by ``data.window``; and which window was used."""
    if not isinstance(window, str):
        return linear_window(values, float(window[0]), float(window[1])), "fixed"
    if window == "dicom":
        voi = _voi(ds, frame)
        if voi is not None:
            try:
                return dicom_voi_window(values, *voi), "dicom"
            except ValueError:
                pass  # a width the function does not allow: the file has no usable window
    return linear_window(values, *percentile_range(values)), "percentile"


def _ensure_transfer_syntax(ds: Any) -> None:
    """Files without a file meta header (read with force): declare the encoding pydicom read them in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )


def _decode(ds: Any, index: int | None) -> np.ndarray:
    """Stored values: (H, W) for one frame (``index``) or a single-frame file, (F, H, W) for all frames."""
    ts = ds.file_meta.TransferSyntaxUID
    if index is not None:
        ds.pixel_array_options(index=index)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        if ts.is_compressed:
            # pydicom lists each plugin's reason on its own line after a heading line.
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            why = "; ".join(lines[1:] or lines) or type(exc).__name__
            raise UnusableFile(
                f"compressed DICOM that cannot be decoded (transfer syntax {ts.name}, {ts}: {why[:300]}); {_DECODE_HINT}"
            ) from exc
        raise UnusableFile(f"DICOM pixel data that cannot be decoded ({type(exc).__name__}: {str(exc)[:160]})") from exc
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, struct.error) as exc:
        first = (str(exc).splitlines() or [""])[0].split(" - ")[0][:200]
        raise UnusableFile(f"truncated or corrupt DICOM pixel data ({type(exc).__name__}: {first})") from exc
    return np.asarray(arr)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's log off: it logs every failed decoder plugin with a traceback (the reason is in the
    skip reason), and may quote element values."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_dicom(path: str | os.PathLike[str], frames: str = "first", window: str | tuple[float, float] = "dicom") -> DicomImage:
    """Read ``path`` and return its frames in [0, 1] (module docstring); UnusableFile with the reason otherwise.

    ``frames``: "first" or "all" (``data.dicom_frames``); ``window``: "dicom", "percentile" or
    (low, high) in calibrated units (``data.window``).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(), _quiet_pydicom():
        # pydicom warns about malformed elements by quoting their values, which can be names or ids.
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
        except (InvalidDicomError, *_READ_ERRORS) as exc:
            raise UnusableFile(f"not a readable DICOM file ({type(exc).__name__})") from exc
        try:
            return _images(ds, frames, window)
        except _MALFORMED as exc:
            # pydicom converts element values when they are first used: a malformed one fails here.
            raise UnusableFile(f"malformed DICOM header ({type(exc).__name__})") from exc


def _images(ds: Any, frames: str, window: str | tuple[float, float]) -> DicomImage:
    """:func:`read_dicom` once the file is parsed."""
    from pydicom.pixels import apply_modality_lut

    sop = _sop_name(ds)
    if sop and "Image Storage" not in sop:
        raise UnusableFile(f"non-image DICOM (SOP class {sop})")
    if "PixelData" not in ds:
        raise UnusableFile(f"DICOM without pixel data (SOP class {sop or 'not given'})")
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise UnusableFile("DICOM with burned-in annotation (BurnedInAnnotation YES: text in the pixels may identify the patient)")
    pi = _clean_code(ds.get("PhotometricInterpretation", ""))
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if pi not in _GREY or spp != 1:
        raise UnusableFile(
            f"colour DICOM (PhotometricInterpretation {pi or 'not given'}, {spp} sample(s) per pixel; "
            "medauc reads grey-level images)"
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0)
    _ensure_transfer_syntax(ds)
    take = list(range(n_frames)) if frames == "all" else [0]
    stored = _decode(ds, 0 if frames != "all" and n_frames > 1 else None)
    if stored.ndim == 2:
        stored = stored[None]
    if stored.ndim != 3 or stored.shape[0] != len(take) or stored.shape[1] == 0 or stored.shape[2] == 0:
        raise UnusableFile(f"DICOM pixel data of unexpected shape {stored.shape} for {len(take)} frame(s)")

    images, kept, windows, blank = [], [], [], 0
    for i, f in enumerate(take):
        values = apply_modality_lut(stored[i], _modality_view(ds, f)).astype(np.float64)
        img, used = _to_unit(values, ds, f, window)
        if pi == "MONOCHROME1":
            img = 1.0 - img
        if is_blank(img):
            blank += 1
            continue
        images.append(img.astype(np.float32))
        kept.append(f)
        windows.append(used)

    patient, source = "", ""
    for kw in ("PatientID", "StudyInstanceUID"):
        value = str(ds.get(kw, "") or "").strip()
        if value:
            patient, source = value, kw
            break
    return DicomImage(
        images=images, frames=kept, patient=patient, patient_source=source,
        modality=_clean_code(ds.get("Modality", "")), mode=f"{pi} {bits}-bit", blank=blank, windows=windows,
    )
