"""DICOM and NIfTI files -> 8-bit PNGs in the run folder, with patients and without identifiers.

``prepare`` calls :func:`convert_medical` right after discovery. Every DICOM frame or NIfTI slice
it keeps becomes ``<run>/images/<key>-<n>.png`` (its lesion mask ``<key>-<n>-mask.png``, 0/255),
and the manifest points there, so every later stage reads PNGs as it does for any image folder.

What is stored, and what is not:

* ``<key>`` is a salted hash (HMAC-SHA256) of the source file's relative path, size,
  modification time and the conversion settings: the cache key. A second ``prepare`` reuses the
  PNGs of unchanged files (``images/index.json``); the same file and settings give the same bytes.
* Patients: ``subject`` is a salted hash of the DICOM PatientID (else StudyInstanceUID, else the
  file), or of the NIfTI volume (volumes that share one segmentation are one patient).
* The salt: 32 random bytes in ``<run>/.medauc/subject_salt`` (owner-only), written once per run
  folder. With it and the original ids the hashes can be linked back; without it they cannot:
  keep it with the run, do not share it.
* Files are named in the manifest and the data audit by position, never by path:
  ``<class folder>/file-<n>`` is the n-th file (1-based) in sorted order below that class folder
  (PACS exports name folders after patients). :func:`locate` turns a reference back into a path.
* Nothing else read from the headers is kept but the modality, the photometric interpretation
  and bit depth (DICOM) or data type (NIfTI), as the manifest's ``mode`` and the audit's format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medauc import fileio
from medauc.config import DataConfig
from medauc.data.medical import UnusableFile, file_kind, parse_slices
from medauc.data.sources import MASKS_DIR, Discovery, SourceItem, check_classes
from medauc.errors import DataError
from medauc.processes import die_with_parent

IMAGES_DIR = "images"
INDEX = "index.json"
SALT_FILE = ".medauc/subject_salt"
_VERSION = 1  # bump when the conversion changes: every cached PNG is made again
_NAME = re.compile(r"^[0-9a-f]{20}-\d{4,}(-mask)?\.png$")  # the PNGs this module writes
_REF = re.compile(r"^(.*/file-\d+)")
_MIN_PARALLEL = 32  # fewer files are converted in this process: starting workers costs more


@dataclass
class Converted:
    """What :func:`convert_medical` did: the audit's ``medical`` section, warnings, and what each PNG was."""

    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    source: dict[str, tuple[str, str]] = field(default_factory=dict)  # PNG path -> (format, mode) of its source
    refs: dict[str, str] = field(default_factory=dict)  # PNG path -> reference of its source file

    def annotate(self, items: Sequence[SourceItem], records: Sequence[dict[str, Any]]) -> None:
        """Give each converted image's scan record its source's format and mode (e.g. "DICOM MR",
        "MONOCHROME2 12-bit"), so the manifest and the shortcut audit see how it was stored."""
        for it, rec in zip(items, records):
            meta = self.source.get(str(it.path))
            if meta is not None:
                rec["format"], rec["mode"] = meta


# ----------------------------------------------------------------------------- salt, hashes, references


def load_salt(run_dir: str | os.PathLike[str]) -> bytes:
    """The run folder's salt (:data:`SALT_FILE`), created (owner-only) on first use."""
    path = Path(run_dir) / SALT_FILE
    if path.is_file():
        text = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return bytes.fromhex(text)
        raise DataError(f"{path} is not a 64-hex-digit salt; delete it (prepare writes a new one) or restore it")
    fileio.write_text(path, secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def salted_hash(salt: bytes, kind: str, value: str, n: int = 16) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``salt``, as ``n`` hex digits."""
    return hmac.new(salt, f"{kind}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:n]


def references(disc: Discovery) -> dict[str, str]:
    """Relative path of every file below a class folder -> ``<class folder>/file-<n>`` (n from 1,
    the order discovery walked them: sorted, files before sub-folders)."""
    folders = sorted(disc.folders, key=len, reverse=True)
    count: Counter[str] = Counter()
    out: dict[str, str] = {}
    for rel, _, _ in disc.fingerprint:
        folder = next((f for f in folders if rel.startswith(f + "/")), None)
        if folder is None:
            continue
        count[folder] += 1
        out[rel] = f"{folder}/file-{count[folder]:05d}"
    return out


def locate(data_dir: str | os.PathLike[str], ref: str, dcfg: DataConfig) -> Path:
    """The source file of a reference (the manifest's ``source_file``, a skipped file's ``path`` in
    ``data_audit.json``: ``<class folder>/file-<n>``, with or without a frame/slice suffix);
    ``data_dir`` and ``dcfg`` as prepare was given them. DataError when no file has it."""
    from medauc.data.sources import discover

    m = _REF.match(ref.strip())
    disc = discover(data_dir, dcfg)
    if m:
        for rel, r in references(disc).items():
            if r == m.group(1):
                return disc.root / rel
    raise DataError(f"no file with reference {ref!r} in {disc.root}; references look like <class folder>/file-<n>")


# ----------------------------------------------------------------------------- one file


def _settings(dcfg: DataConfig) -> dict[str, Any]:
    window = dcfg.window if isinstance(dcfg.window, str) else [float(v) for v in dcfg.window]
    return {"frames": dcfg.dicom_frames, "window": window, "axis": dcfg.volume_axis, "slices": dcfg.slices,
            "version": _VERSION}


def _stat(path: str) -> list[Any]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _convert_one(task: dict[str, Any]) -> dict[str, Any]:
    """Convert one file (a task of :func:`convert_medical`); its index entry, ``skip`` set if it gave nothing.

    Runs in worker processes: takes and returns plain data only.
    """
    from medauc.data.images import load_image, save_png

    out_dir, key, s = Path(task["out_dir"]), task["key"], task["settings"]
    salt = bytes.fromhex(task["salt"])
    entry: dict[str, Any] = {"outputs": [], "skip": None, "blank": 0}
    window = s["window"] if isinstance(s["window"], str) else tuple(s["window"])
    try:
        if task["kind"] == "dicom":
            from medauc.data.dicom import read_dicom

            d = read_dicom(task["path"], s["frames"], window)
            if d.patient:
                kind = "patient" if d.patient_source == "PatientID" else "study"
                entry["subject"], entry["subject_from"] = salted_hash(salt, kind, d.patient), d.patient_source
            else:
                entry["subject"], entry["subject_from"] = salted_hash(salt, "file", task["rel"]), "file"
            entry.update(format=f"DICOM {d.modality}".strip(), mode=d.mode, blank=d.blank, modality=d.modality or "unknown",
                         windows=dict(Counter(d.windows)))
            masks: list[Any] = [None] * len(d.images)
            if task["mask"]:
                try:
                    mask = load_image(task["mask"]) > 0.5
                except DataError as exc:  # its message names the mask's path: not kept
                    raise UnusableFile("unreadable mask below masks/ (not an image PIL can decode)") from exc
                if len(d.images) != 1 or mask.shape != d.images[0].shape:
                    raise UnusableFile(f"mask of another size (mask {mask.shape[1]}x{mask.shape[0]}, "
                                       f"{len(d.images)} frame(s) of {d.images[0].shape[1] if d.images else 0} px wide)")
                masks = [mask]
            images, numbers, suffix = d.images, d.frames, "f" if task["frames_in_name"] else ""
        else:
            from medauc.data.nifti import read_nifti

            v = read_nifti(task["path"], task["mask"] or None, s["axis"], parse_slices(s["slices"]), window)
            entry["subject"] = salted_hash(salt, "volume", task["subject_key"])
            entry["subject_from"] = "segmentation" if task["mask"] else "volume"
            entry.update(format="NIfTI", mode=v.mode, blank=v.blank, windows={v.window: len(v.images)})
            images, masks, numbers, suffix = v.images, v.masks, v.slices, "s"
    except UnusableFile as exc:
        entry["skip"] = str(exc)
        return entry
    for img, mask, n in zip(images, masks, numbers):
        name = f"{key}-{n:04d}.png"
        save_png(out_dir / name, img)
        mask_name = ""
        if mask is not None:
            mask_name = f"{key}-{n:04d}-mask.png"
            save_png(out_dir / mask_name, mask.astype("uint8") * 255)
        entry["outputs"].append({"n": int(n), "suffix": f"-{suffix}{n:03d}" if suffix else "", "image": name, "mask": mask_name})
    if not entry["outputs"]:
        entry["skip"] = f"no image left (all {entry['blank']} frame(s) or slice(s) one flat grey)"
    return entry


def segmentation_for(volume: Path, pattern: str) -> Path | None:
    """The segmentation next to ``volume``: a file ending in ``pattern`` whose name, less the
    pattern, is the longest prefix of the volume's name (``case1_seg.nii.gz`` for ``case1_t1.nii.gz``)."""
    if not pattern:
        return None
    best: tuple[int, Path] | None = None
    for p in volume.parent.iterdir():
        low = p.name.lower()
        if p == volume or not low.endswith(pattern.lower()) or not p.is_file():
            continue
        stem = p.name[: len(p.name) - len(pattern)]
        if volume.name.startswith(stem) and (best is None or len(stem) > best[0]):
            best = (len(stem), p)
    return best[1] if best else None


# ----------------------------------------------------------------------------- the whole data set


def _redact(path: str, root: Path, refs: dict[str, str], folders: Sequence[str]) -> str:
    """A skipped path as it may be stored: a file's reference, a class folder, or the folder plus "(redacted)"."""
    try:
        rel = Path(path).relative_to(root).as_posix()
    except ValueError:
        return path
    if rel in refs:
        return refs[rel]
    for f in sorted(folders, key=len, reverse=True):
        if rel == f:
            return f
        if rel.startswith(f + "/"):
            return f"{f}/(redacted)"
    return "(redacted)"


def convert_medical(disc: Discovery, dcfg: DataConfig, run_dir: str | os.PathLike[str], workers: int = 1,
                    salt_dir: str | os.PathLike[str] | None = None) -> tuple[Discovery, Converted | None]:
    """Replace the DICOM and NIfTI files of ``disc`` by one PNG item per frame or slice (module docstring).

    ``salt_dir``: the run folder whose salt names the patients, when the PNGs go elsewhere (an external set's folder).

    Returns the new discovery (items in the same order, skipped paths redacted) and what was done;
    ``(disc, None)`` unchanged when the data set holds no such file. Raises DataError naming the
    class and the reasons when a class is left without images.
    """
    kinds = [file_kind(it.path, dcfg.mask_pattern) for it in disc.items]
    if not any(k in ("dicom", "nifti") for k in kinds):
        return disc, None
    run_dir = Path(run_dir)
    out_dir = run_dir / IMAGES_DIR
    salt = load_salt(salt_dir or run_dir)
    refs = references(disc)
    settings = _settings(dcfg)
    index_path = out_dir / INDEX
    old = fileio.read_json(index_path).get("entries", {}) if index_path.is_file() else {}

    # Files of one class folder with several frames each keep the frame number in their ids.
    tasks: list[dict[str, Any] | None] = []
    for it, kind in zip(disc.items, kinds):
        if kind not in ("dicom", "nifti"):
            tasks.append(None)
            continue
        mask = it.mask_path
        if kind == "nifti" and not mask:
            seg = segmentation_for(it.path, dcfg.mask_pattern)
            mask = str(seg) if seg else ""
        mask_rel = Path(mask).relative_to(disc.root).as_posix() if mask else ""
        ident = [it.rel, _stat(str(it.path)), mask_rel, _stat(mask) if mask else None, settings]
        key = salted_hash(salt, "convert", json.dumps(ident, sort_keys=True), 20)
        tasks.append({
            "kind": kind, "path": str(it.path), "rel": it.rel, "mask": mask, "key": key, "out_dir": str(out_dir),
            "settings": settings, "salt": salt.hex(), "subject_key": mask_rel or it.rel,
            "frames_in_name": dcfg.dicom_frames == "all",
        })

    todo = [t for t in tasks if t is not None and not _cached(old.get(t["key"]), out_dir)]
    done = dict(zip((t["key"] for t in todo), _run(todo, workers)))
    entries = {t["key"]: done.get(t["key"]) or old[t["key"]] for t in tasks if t is not None}
    _prune(out_dir, entries)
    fileio.write_json(index_path, {"version": _VERSION, "entries": entries})

    conv = Converted(summary={})
    items: list[SourceItem] = []
    skipped = [dict(d, path=_redact(d["path"], disc.root, refs, list(disc.folders))) for d in disc.skipped]
    per_class: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    subject_from: Counter[str] = Counter()
    modalities: dict[str, Counter[str]] = {}
    windows: Counter[str] = Counter()
    files: Counter[str] = Counter()
    n_masks = blank = 0
    for it, task in zip(disc.items, tasks):
        if task is None:
            items.append(it)
            per_class[it.label] += 1
            continue
        entry = entries[task["key"]]
        ref = refs[it.rel]
        files[task["kind"]] += 1
        blank += int(entry.get("blank", 0))
        if entry["skip"]:
            skipped.append({"path": ref, "reason": entry["skip"]})
            reasons.setdefault(it.label, Counter())[entry["skip"].split(" (")[0]] += 1
            continue
        subject_from[entry["subject_from"]] += 1
        windows.update(entry.get("windows", {}))
        if "modality" in entry:
            modalities.setdefault(entry["modality"], Counter())[it.label] += len(entry["outputs"])
        folder = ref.rsplit("/", 1)[0]
        for o in entry["outputs"]:
            rel = f"{ref}{o['suffix']}"
            path = out_dir / o["image"]
            items.append(SourceItem(
                path=path, label=it.label, rel=rel, class_rel=rel[len(folder) + 1:], given_split=it.given_split,
                mask_path=str(out_dir / o["mask"]) if o["mask"] else "", subject=entry["subject"],
            ))
            conv.source[str(path)] = (entry["format"], entry["mode"])
            conv.refs[str(path)] = ref
            per_class[it.label] += 1
            n_masks += bool(o["mask"])

    _check_left(disc, per_class, reasons)
    conv.summary = {
        "files": dict(sorted(files.items())),
        "images": sum(len(entries[t["key"]]["outputs"]) for t in tasks if t is not None),
        "masks": n_masks,
        "skipped_files": sum(sum(c.values()) for c in reasons.values()),
        "blank_dropped": blank,
        "subjects": len({it.subject for it in items if it.subject and str(it.path) in conv.source}),
        "subject_from": dict(sorted(subject_from.items())),
        "modalities": {m: dict(sorted(c.items())) for m, c in sorted(modalities.items())},
        "windows": dict(sorted(windows.items())),
        "converted": len(todo),
        "reused": sum(t is not None for t in tasks) - len(todo),
        "settings": {k: v for k, v in settings.items() if k != "version"} | {"mask_pattern": dcfg.mask_pattern},
        "stored": f"{IMAGES_DIR}/<salted hash>-<n>.png (8-bit) per frame or slice, masks -mask.png; patients as salted "
                  f"hashes (salt in {SALT_FILE}); files named <class folder>/file-<n> (n-th file, sorted)",
    }
    conv.warnings = _warnings(modalities, subject_from)
    return dataclasses.replace(disc, items=items, skipped=skipped), conv


def _cached(entry: dict[str, Any] | None, out_dir: Path) -> bool:
    if entry is None:
        return False
    return all((out_dir / o["image"]).is_file() and (not o["mask"] or (out_dir / o["mask"]).is_file())
               for o in entry["outputs"])


def _run(tasks: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """:func:`_convert_one` over ``tasks``, in order, in ``workers`` processes when there are enough."""
    from medauc.progress import progress_bar

    bar = progress_bar(total=len(tasks), desc="prepare: converting DICOM/NIfTI", unit="file", dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1 or len(tasks) < _MIN_PARALLEL:
            out = []
            for t in tasks:
                out.append(_convert_one(t))
                bar.update()
            return out
        # spawn: no fork of a process that may hold torch/OpenMP threads.
        with mp.get_context("spawn").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            out = []
            for r in pool.imap(_convert_one, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8)))):
                out.append(r)
                bar.update()
            return out
    finally:
        bar.close()


def _prune(out_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Remove PNGs this module wrote for files or settings no longer in use."""
    if not out_dir.is_dir():
        return
    keep = {o[k] for e in entries.values() for o in e["outputs"] for k in ("image", "mask") if o[k]}
    for p in out_dir.iterdir():
        if _NAME.match(p.name) and p.name not in keep:
            p.unlink()


def _check_left(disc: Discovery, per_class: Counter[str], reasons: dict[str, Counter[str]]) -> None:
    for c in disc.classes:
        if per_class[c] == 0 and reasons.get(c):
            why = ", ".join(f"{n} {r}" for r, n in reasons[c].most_common())
            raise DataError(
                f"class {c!r} in {disc.root}: none of its DICOM/NIfTI files gave an image ({why}); "
                "see the reasons above, or change data.window, data.slices or data.dicom_frames"
            )
    check_classes(disc.classes, dict(per_class), disc.root, what="usable images")


def _warnings(modalities: dict[str, Counter[str]], subject_from: Counter[str]) -> list[str]:
    out = []
    if len(modalities) > 1:
        parts = [f"{m} ({', '.join(f'{c} {n}' for c, n in sorted(cnt.items()))})" for m, cnt in sorted(modalities.items())]
        out.append(
            "DICOM modalities differ: " + "; ".join(parts) + ". A modality that goes with a class is a shortcut "
            "(the shortcut audit sees it as the image format); keep one modality per data set, or check that "
            "each appears in every class"
        )
    if subject_from.get("file"):
        out.append(
            f"{subject_from['file']} DICOM file(s) have neither PatientID nor StudyInstanceUID: each counts as its "
            "own patient, so one patient's slices may land in different splits"
        )
    return out
