"""New image files read exactly as the run read its own, and named without patient identifiers.

Inputs are files or folders (walked in sorted order, hidden entries left out). Each file is one of:

* an ordinary image (PNG, JPEG, TIFF, ...): decoded by :func:`medauc.data.images.load_image`, the one
  grey-level conversion of every stage;
* DICOM: :func:`medauc.data.dicom.read_dicom` with the run's ``data.window`` and ``data.dicom_frames``,
  then rounded to 8 bits, as ``prepare`` stores each frame as an 8-bit PNG;
* NIfTI: :func:`medauc.data.nifti.read_nifti` with the run's ``data.volume_axis``, ``data.slices``
  and ``data.window`` (and the segmentation next to the volume, for ``data.slices=mask``), then
  rounded to 8 bits likewise. A file named by ``data.mask_pattern`` is a segmentation, not an input.

The caller resizes them to the model's input as the training cache did
(:func:`medauc.data.datasets.resize_uint8`). Names: every file found is ``file-<n>`` (n from 1, in
the order found: the arguments as given, folders walked sorted), a frame ``-f<k>`` (with
``data.dicom_frames=all``), a slice ``-s<k>``; reasons for unreadable files name the file the same
way. Paths are kept here for the caller, who writes them only when asked: exports name files and
folders after patients (a PNG in ``Doe^John/`` as much as a DICOM file). The patient of a DICOM file (PatientID,
else StudyInstanceUID) is kept as the run's salted hash (:func:`medauc.data.convert.salted_hash`,
the run's ``.medauc/subject_salt``), so it matches the run's own ``subject`` column for a patient
seen there; a NIfTI volume's patient is the hash of its segmentation, else of the volume file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medauc.config import DataConfig
from medauc.data.convert import salted_hash, segmentation_for
from medauc.data.images import IMAGE_EXTENSIONS, load_image, to_uint8
from medauc.data.medical import UnusableFile, file_kind, parse_slices
from medauc.data.sources import walk
from medauc.errors import DataError


@dataclass(frozen=True)
class InputFile:
    """One file to predict: its name in the outputs, where it is, and what it is."""

    ref: str  # file-<n>
    path: Path
    kind: str  # "image", "dicom" or "nifti"


@dataclass(frozen=True)
class InputImage:
    """One image of an input file, before resizing."""

    name: str  # file-<n>[-f<k>|-s<k>]
    path: str  # the file's path: may name the patient, written only when asked
    subject: str  # salted patient hash (DICOM, NIfTI), "" for ordinary images
    image: np.ndarray  # float32 (H, W) in [0, 1], as the run's images were before the resize


@dataclass(frozen=True)
class Unreadable:
    """An input that gives no image, and why (the reason names no patient)."""

    name: str  # file-<n>, or arg-<i> for an argument that is no usable file or folder
    path: str  # as for InputImage; the argument as given for arg-<i>
    reason: str  # names no path

    def line(self, paths: bool = False) -> str:
        return f"{self.name}{' (' + self.path + ')' if paths else ''}: {self.reason}"


def _kind(path: Path, mask_pattern: str) -> str:
    kind = file_kind(path, mask_pattern)
    if kind in ("dicom", "nifti", "segmentation"):
        return kind
    return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else ""


def find_inputs(args: Sequence[str | os.PathLike[str]], mask_pattern: str) -> tuple[list[InputFile], list[Unreadable], int]:
    """The files named by ``args`` (files, or folders walked sorted): the inputs, the arguments and
    files that cannot be inputs, and how many files in folders were passed over (not images,
    segmentations, hidden files)."""
    files: list[InputFile] = []
    bad: list[Unreadable] = []
    passed_over = 0

    def add(path: Path, kind: str) -> None:
        files.append(InputFile(f"file-{len(files) + 1:05d}", path, kind))

    for i, arg in enumerate(args, 1):
        path = Path(arg)
        if path.is_dir():
            for folder, names in walk(path):
                for name in names:
                    kind = _kind(folder / name, mask_pattern) if not name.startswith(".") else ""
                    if kind in ("image", "dicom", "nifti"):
                        add(folder / name, kind)
                    else:
                        passed_over += 1
        elif path.is_file():
            kind = _kind(path, mask_pattern)
            if kind in ("image", "dicom", "nifti"):
                add(path, kind)
            else:
                what = ("a segmentation (data.mask_pattern): it is read with its volume, not on its own"
                        if kind == "segmentation" else f"not an image, DICOM or NIfTI file (extension {path.suffix or 'none'!r})")
                bad.append(Unreadable(f"arg-{i}", str(arg), what))
        else:
            bad.append(Unreadable(f"arg-{i}", str(arg), "no such file or folder"))
    return files, bad, passed_over


def _eight_bit(img: np.ndarray) -> np.ndarray:
    # prepare stores every DICOM frame and NIfTI slice as an 8-bit PNG, which later stages read as value / 255.
    return to_uint8(img).astype(np.float32) / np.float32(255.0)


def _window(dcfg: DataConfig) -> str | tuple[float, float]:
    return dcfg.window if isinstance(dcfg.window, str) else (float(dcfg.window[0]), float(dcfg.window[1]))


def read_input(f: InputFile, dcfg: DataConfig, salt: bytes | None) -> list[InputImage] | Unreadable:
    """The images of one input file as the run's data settings ``dcfg`` read them, or why there are none.

    ``salt``: the run's subject salt (needed for DICOM and NIfTI files).
    """
    try:
        if f.kind == "image":
            return [InputImage(f.ref, str(f.path), "", load_image(f.path))]
        if salt is None:
            raise ValueError("read_input: DICOM and NIfTI inputs need the run's salt")
        if f.kind == "dicom":
            from medauc.data.dicom import read_dicom

            d = read_dicom(f.path, dcfg.dicom_frames, _window(dcfg))
            if d.patient:
                subject = salted_hash(salt, "patient" if d.patient_source == "PatientID" else "study", d.patient)
            else:
                subject = salted_hash(salt, "file", str(f.path.resolve()))
            suffix = [f"-f{n:03d}" if dcfg.dicom_frames == "all" else "" for n in d.frames]
            images = d.images
        else:
            from medauc.data.nifti import read_nifti

            seg = segmentation_for(f.path, dcfg.mask_pattern)
            v = read_nifti(f.path, seg, dcfg.volume_axis, parse_slices(dcfg.slices), _window(dcfg))
            subject = salted_hash(salt, "volume", str((seg or f.path).resolve()))
            suffix = [f"-s{n:03d}" for n in v.slices]
            images = v.images
    except UnusableFile as exc:  # its message is the reason, without the path
        return Unreadable(f.ref, str(f.path), f"{exc} ({f.kind.upper()})")
    except DataError as exc:  # ordinary images: "<path>: reason"; the path may name the patient
        return Unreadable(f.ref, str(f.path), str(exc).replace(f"{f.path}: ", "", 1).replace(str(f.path), f.ref))
    if not images:
        return Unreadable(f.ref, str(f.path), f"no image left: every frame or slice is one flat grey ({f.kind.upper()})")
    return [InputImage(f.ref + s, str(f.path), subject, _eight_bit(img)) for s, img in zip(suffix, images)]
