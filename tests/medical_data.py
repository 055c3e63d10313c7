"""DICOM and NIfTI test data written with pydicom and nibabel from phantom-like slices.

Every file carries planted patient identifiers (:data:`PLANTED`), so tests can check that none
of them leaves medauc; folders are named after patients, as PACS exports do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Identifiers planted in headers and folder names; none may appear in any output.
PATIENT_NAME = "Zyxwvu^Qortsa"
PLANTED = ("Zyxwvu", "Qortsa", "PIDQ7731", "19450817", "20190312", "ACCX99812", "Qwertyfield Infirmary",
           "1.2.826.0.1.3680043.8.498.7771")
UID_ROOT = "1.2.826.0.1.3680043.8.498.7771"


def phantom_slice(rng: np.random.Generator, size: int = 48, lesion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A brain-MRI-like slice, float32 (size, size) in [0, 1], and its lesion mask (bool).

    Skull ring, grey and white matter, dark ventricles; a bright round lesion when ``lesion``.
    """
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 2), size / 2 + rng.normal(0, 2)
    ry, rx = size * rng.uniform(0.34, 0.46), size * rng.uniform(0.28, 0.4)
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    img = np.zeros((size, size), np.float32)
    img[r < 1.0] = 0.9  # skull
    cortex = 0.45 + 0.25 * gaussian_filter(rng.normal(0, 1, (size, size)), size / 12)  # folded grey matter
    img[r < 0.9] = cortex[r < 0.9]
    img[r < rng.uniform(0.55, 0.75)] = 0.6  # white matter
    vent = np.sqrt(((yy - cy) / (size * rng.uniform(0.06, 0.16))) ** 2 + ((xx - cx - rng.normal(0, 2)) / (size * rng.uniform(0.04, 0.1))) ** 2) < 1
    img[vent] = 0.15
    mask = np.zeros((size, size), bool)
    if lesion:
        ly, lx = cy + rng.uniform(-0.25, 0.25) * size, cx + rng.uniform(-0.2, 0.2) * size
        mask = (yy - ly) ** 2 + (xx - lx) ** 2 < (size * rng.uniform(0.08, 0.14)) ** 2
        img[mask] = 1.0
    img = np.clip(img + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)
    return img, mask


def _uid(n: int) -> str:
    return f"{UID_ROOT}.{n}"


def dicom_dataset(
    img: np.ndarray, n: int = 1, *, photometric: str = "MONOCHROME2", slope: float = 1.0, intercept: float = 0.0,
    window: tuple[float, float] | None = None, modality: str = "MR", patient_id: str = "PIDQ7731",
    patient_name: str = PATIENT_NAME, bits: int = 12, frames: list[np.ndarray] | None = None,
):
    """A pydicom Dataset (MR Image Storage unless ``modality`` says CT) holding ``img`` (float [0, 1]).

    Displayed values: calibrated = 1000 * img; stored = (calibrated - intercept) / slope;
    MONOCHROME1 stores the display inverted. Planted identifiers in every identifying element.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = _uid(1000 + n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, _uid(1000 + n)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(2000 + n), _uid(3000 + n)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, patient_id, "19450817"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20190312"
    ds.AccessionNumber, ds.InstitutionName = "ACCX99812", "Qwertyfield Infirmary"
    ds.Modality = modality
    ds.InstanceNumber = n
    imgs = frames if frames is not None else [img]
    stored = []
    for im in imgs:
        shown = 1.0 - im if photometric == "MONOCHROME1" else im
        stored.append(np.round((1000.0 * shown - intercept) / slope).astype(np.int16 if intercept < 0 else np.uint16))
    arr = np.stack(stored) if frames is not None else stored[0]
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.set_pixel_data(arr, photometric, bits)
    return ds


def write_dicom(path: Path, ds, compress: str = "") -> Path:
    """Write ``ds`` as a DICOM Part 10 file (preamble included); ``compress``: a transfer syntax UID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_sr(path: Path, n: int = 99) -> Path:
    """A Comprehensive SR document (no pixel data) with the planted identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ComprehensiveSRStorage, _uid(4000 + n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ComprehensiveSRStorage, _uid(4000 + n)
    ds.PatientName, ds.PatientID, ds.StudyDate = PATIENT_NAME, "PIDQ7731", "20190312"
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    return write_dicom(path, ds)


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None, dtype=np.int16) -> Path:
    """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``) of ``volume``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(volume).astype(dtype), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def phantom_volume(rng: np.random.Generator, size: int = 32, depth: int = 10, lesion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, depth) int16 volume of phantom slices (axis 2 axial, RAS+ with an identity
    affine) and its 0/1 segmentation (lesion on the central slices only)."""
    vol = np.zeros((size, size, depth), np.int16)
    seg = np.zeros((size, size, depth), np.uint8)
    for k in range(depth):
        inside = 1 <= k < depth - 1  # first and last slices empty, as outside the head
        img, mask = phantom_slice(rng, size, lesion and depth // 2 - 2 <= k <= depth // 2 + 1)
        if inside:
            # Canonical slice (x, y) shown as rows top-to-bottom = y descending: store the display transposed.
            vol[:, :, k] = np.round(1000 * img[::-1].T)
            seg[:, :, k] = mask[::-1].T
    return vol, seg


def make_dicom_tree(root: Path, patients: int = 6, slices: int = 4, size: int = 48, seed: int = 0) -> Path:
    """A PACS-like export: ``root/<class>/<patient name>_<k>/IM<nnnn>`` (no extension) for classes
    healthy and glioma, one PatientID per patient folder.

    Mixed as exports are: MONOCHROME1 files, rescaled files with a display window, one JPEG 2000
    file, one multi-frame file; plus a structured report, a text file, and pydicom's bundled
    RGB, truncated and 12-bit JPEG Extended files, which must be skipped with their reasons.
    """
    import shutil

    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEG2000Lossless

    rng = np.random.default_rng(seed)
    n = 0
    for cls, lesion in (("healthy", False), ("glioma", True)):
        for p in range(patients):
            folder = root / cls / f"Zyxwvu_Qortsa_{p}"
            for s in range(slices):
                n += 1
                img, _ = phantom_slice(rng, size, lesion)
                kw: dict = {}
                if n % 4 == 1:
                    kw = {"photometric": "MONOCHROME1"}
                elif n % 4 == 2:
                    kw = {"slope": 2.0, "intercept": -1000.0, "window": (500.0, 1001.0)}
                if n == 7:
                    frames = [img] + [phantom_slice(rng, size, lesion)[0] for _ in range(2)]
                    kw = {"frames": frames}
                ds = dicom_dataset(img, n, patient_id=f"PIDQ7731-{cls}-{p}", **kw)
                write_dicom(folder / f"IM{s:04d}", ds, compress=JPEG2000Lossless if n == 5 else "")
    write_sr(root / "glioma" / "Zyxwvu_Qortsa_0" / "SR0001.dcm")
    (root / "glioma" / "Zyxwvu_Qortsa_0" / "notes.txt").write_text(f"{PATIENT_NAME} PIDQ7731\n")
    for name, cls in (("SC_rgb_rle.dcm", "healthy"), ("MR_truncated.dcm", "glioma"), ("JPGExtended.dcm", "glioma")):
        shutil.copy(get_testdata_file(name), root / cls / name)
    return root


def make_nifti_tree(root: Path, volumes: int = 6, size: int = 32, depth: int = 10, seed: int = 0) -> Path:
    """A BraTS-like set: ``root/<class>/<case>/<case>_t1.nii.gz`` with ``<case>_seg.nii.gz`` for
    glioma (one glioma case also has a t2 volume sharing the segmentation); plus a 4-D volume and
    a truncated file, which must be skipped with their reasons. Case folders carry planted names."""
    rng = np.random.default_rng(seed)
    for cls, lesion in (("healthy", False), ("glioma", True)):
        for v in range(volumes):
            case = f"Zyxwvu_Qortsa_{cls}_{v}"
            vol, seg = phantom_volume(rng, size, depth, lesion)
            write_nifti(root / cls / case / f"{case}_t1.nii.gz", vol)
            if lesion:
                write_nifti(root / cls / case / f"{case}_seg.nii.gz", seg, dtype=np.uint8)
                if v == 0:
                    write_nifti(root / cls / case / f"{case}_t2.nii.gz", 1000 - vol)
    write_nifti(root / "healthy" / "four_d.nii.gz", np.zeros((size, size, depth, 2)))
    good = (root / "glioma" / f"Zyxwvu_Qortsa_glioma_1" / "Zyxwvu_Qortsa_glioma_1_t1.nii.gz").read_bytes()
    (root / "glioma" / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    return root


def planted_hits(folder: Path, texts: tuple[str, ...] = ()) -> list[str]:
    """Every file below ``folder`` (and each of ``texts``, e.g. captured output) that holds a
    planted identifier, case-insensitively, as "<file>: <identifier>"."""
    hits = []
    needles = [p.lower().encode() for p in PLANTED]
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes().lower()
            hits += [f"{path}: {n.decode()}" for n in needles if n in data]
        if any(n.decode() in path.name.lower() for n in needles):
            hits.append(f"{path}: identifier in the file name")
    for i, t in enumerate(texts):
        hits += [f"output {i}: {n.decode()}" for n in needles if n.decode() in t.lower()]
    return hits
