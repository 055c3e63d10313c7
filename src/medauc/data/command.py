"""``medauc prepare``: load, audit and split a folder-per-class image set.

Writes ``manifest.csv`` (one row per usable image) and ``data_audit.json`` (counts, skipped and
unreadable files, duplicates, label conflicts, class statistics, shortcut AUC) into the run folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from medauc import fileio, preflight, runs
from medauc.config import Config, config_hash, without_later_defaults
from medauc.data import audit as audit_mod
from medauc.data.manifest import REQUIRED_COLUMNS, write_manifest
from medauc.data import subjects as subjects_mod
from medauc.data.convert import convert_medical
from medauc.data.medical import MEDICAL_KINDS, file_kind
from medauc.data.neardup import patient_links
from medauc.data.sources import Discovery, SourceItem, check_classes, discover
from medauc.data.split import SPLITS, combine_groups, split_indices
from medauc.errors import DataError

STAGE = "prepare"
MANIFEST = "manifest.csv"
AUDIT = "data_audit.json"
# DataConfig fields that do not change what prepare writes: changing them must not invalidate it.
_KEY_IGNORES = ("workers", "image_size", "negative_class", "path")
# Fields added later: at their default they stay out of the key, so earlier runs stay cached.
_KEY_LATER = ("group_pattern", "groups_csv", "dicom_frames", "window", "volume_axis", "slices", "mask_pattern")
_LARGE_GROUP = 0.01  # a duplicate group holding more than this share of the images is suspicious


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=None, metavar="DIR",
        help="folder-per-class image set (overrides data.source/data.path); default: data.path, "
        "or the built-in phantom set when data.source=phantom",
    )


def main(args: argparse.Namespace) -> int:
    subjects_mod.check_settings(args.cfg.data)
    if args.data or args.cfg.data.source == "folder":
        # A wrong folder or an image without its patient leaves no run folder behind.
        folder = resolve_data_dir(args.cfg, args.data)
        disc = discover(folder, args.cfg.data)
        preflight.check_negative_class(args.cfg, disc.classes, disc.root)
        # DICOM and NIfTI files name their patients themselves, once converted (prepare_stage).
        others = [it for it in disc.items if file_kind(it.path, args.cfg.data.mask_pattern) not in MEDICAL_KINDS]
        subjects_mod.assign_subjects(others, folder, disc.root, args.cfg.data)
    run_dir = runs.open_run(args.out, args.cfg, args.force)
    prepare_stage(args.cfg, run_dir, data_dir=args.data, force=args.force)
    runs.record_config(run_dir, args.cfg)  # data.classes=[] -> the classes found, for the later stages
    return 0


def resolve_data_dir(cfg: Config, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder to read: ``data_dir`` if given, else by ``data.source``."""
    if data_dir:
        return Path(data_dir)
    if cfg.data.source == "folder":
        if not cfg.data.path:
            raise DataError("data.source=folder needs a folder: pass --data DIR or set data.path=DIR")
        return Path(cfg.data.path)
    if cfg.data.source == "phantom":
        from medauc.data.phantom import ensure_phantom

        return Path(ensure_phantom(cfg))
    raise DataError(f"data.source={cfg.data.source!r} is not known; use 'folder' (with data.path) or 'phantom'")


def stage_key(cfg: Config, disc: Discovery) -> str:
    """Hash of what prepare's outputs depend on: data settings, seed, the file list, and the
    content of ``data.groups_csv`` (not its path)."""
    data = {k: v for k, v in without_later_defaults(cfg.data, _KEY_LATER).items() if k not in _KEY_IGNORES}
    if not _may_know_patients(cfg, disc):
        data.pop("near_duplicates")  # acts on links between patients only: earlier runs without patients keep their keys
    if cfg.data.groups_csv:
        data["groups_csv"] = fileio.file_sha256(Path(cfg.data.groups_csv).expanduser())
    files = hashlib.sha256(json.dumps(sorted(disc.fingerprint)).encode()).hexdigest()
    return config_hash(data, cfg.seed, str(disc.root), files)


def _may_know_patients(cfg: Config, disc: Discovery) -> bool:
    """Patients may be known: named by data.group_pattern or data.groups_csv, by the source itself, or in
    DICOM/NIfTI headers."""
    return bool(cfg.data.group_pattern or cfg.data.groups_csv) or any(
        it.subject or file_kind(it.path, cfg.data.mask_pattern) in MEDICAL_KINDS for it in disc.items)


def _image_ids(items: list[SourceItem]) -> list[str]:
    base = [f"{it.label}/{os.path.splitext(it.class_rel)[0]}" for it in items]
    seen: dict[str, int] = {}
    for b in base:
        seen[b] = seen.get(b, 0) + 1
    # Same stem twice (a.png and a.bmp, or Training/ and Testing/): the full relative path is unique.
    return [b if seen[b] == 1 else f"{it.label}/{it.rel}" for b, it in zip(base, items)]


def prepare_stage(
    cfg: Config, run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, force: bool = False
) -> Path:
    """Discover, read, audit and split the data set; write manifest.csv and data_audit.json.

    Returns the manifest path. Skips the work when ``run_dir`` already holds a prepare stage
    computed from the same data and settings with its files intact; raises RunFolderError when it
    holds one from other inputs, or a manifest changed since, and ``force`` is off (see :mod:`medauc.stages`).
    """
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force, data_dir=data_dir)


def source_key(cfg: Config, run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> str:
    """The prepare stage's cache key (:func:`stage_key` of the data folder it would read)."""
    return stage_key(cfg, discover(resolve_data_dir(cfg, data_dir), cfg.data))


def compute(cfg: Config, run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The prepare stage's work (no caching: :func:`prepare_stage` decides whether it runs)."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    root = resolve_data_dir(cfg, data_dir)
    timings = {"source_s": time.perf_counter() - t0}  # includes generating the phantom on first use
    t = time.perf_counter()
    disc = discover(root, cfg.data)
    preflight.check_negative_class(cfg, disc.classes, disc.root)
    manifest_path = run_dir / MANIFEST
    timings["discover_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # DICOM/NIfTI -> PNGs in the run folder, patients from the headers; then the configured patients of the rest.
    disc, medical = convert_medical(disc, cfg.data, run_dir, cfg.data.workers)
    disc.items, subject_source = subjects_mod.assign_subjects(disc.items, root, disc.root, cfg.data)
    timings["convert_s"] = time.perf_counter() - t

    t = time.perf_counter()
    items, ids, recs, unreadable = _read_all(disc, cfg.data.workers)
    if medical is not None:
        medical.annotate(items, recs)
    labels = [it.label for it in items]
    timings["read_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sha = [r["sha256"] for r in recs]
    subjects = [it.subject for it in items] if any(it.subject for it in items) else None
    hamming = cfg.data.near_duplicate_hamming
    dup = audit_mod.duplicate_groups(sha, [r["phash"] for r in recs], hamming, subjects, cfg.data.near_duplicates)
    conflicts = audit_mod.label_conflicts(dup["group"], labels, sha, ids)
    whole = combine_groups(dup["group"], subjects)  # what the split keeps together
    links, link_warnings, joined = patient_links(dup["cross_patient"], subjects, whole, ids, cfg.data.near_duplicates, hamming)
    timings["duplicates_s"] = time.perf_counter() - t

    t = time.perf_counter()
    split = split_indices(
        labels, dup["group"], ids, seed=cfg.seed, test_fraction=cfg.data.test_fraction,
        val_fraction=cfg.data.val_fraction, given=[it.given_split for it in items] if cfg.data.split == "given" else None,
        subjects=subjects, joined=joined,
    )
    timings["split_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if cfg.data.shortcut_audit:
        shortcut = audit_mod.shortcut_audit(
            recs, labels, disc.classes, seed=cfg.seed, workers=cfg.data.workers,
            groups=whole if subjects is not None else None,
        )
    else:
        shortcut = {"per_class": {}, "macro": None, "max": None, "note": "disabled (data.shortcut_audit=false)"}
    timings["shortcut_s"] = time.perf_counter() - t

    df = _manifest_frame(items, ids, recs, whole, split.split)
    if medical is not None:
        df["source_file"] = [medical.refs.get(str(it.path), "") for it in items]
    subject_audit = _subject_audit(df, disc.classes, subject_source, cfg, split.cross_subjects)
    group_sizes = [len(ix) for ix in dup["members"].values()]
    audit = {
        "data_root": str(disc.root),
        "layout": disc.layout,
        "classes": disc.classes,
        "folders": disc.folders,
        "n_files": len(disc.fingerprint),
        "n_images": len(items),
        "counts": _counts(df, disc.classes),
        "subjects": subject_audit,
        "unreadable": unreadable,
        "skipped": disc.skipped,
        "exact_duplicate_groups": [[ids[i] for i in ix] for ix in dup["exact"]],
        "near_duplicate_groups": [[ids[i] for i in ix] for ix in dup["near"]],
        "near_duplicate_hamming": hamming,
        "largest_group": max(group_sizes, default=0),
        "images_in_groups": int(sum(n for n in group_sizes if n > 1)),  # images kept with at least one other
        # near-duplicates between different patients: reported, merged only under data.near_duplicates=merge
        "near_duplicate_patients": links,
        "label_conflicts": conflicts,
        "cross_split_duplicates": split.moved,
        # data.split=given: duplicate groups across the given train and test sets, reported, not moved
        "given_split_duplicates": [[ids[i] for i in ix] for ix in split.cross_split],
        "split": {"method": cfg.data.split, "seed": cfg.seed, "test_fraction": cfg.data.test_fraction,
                  "val_fraction": cfg.data.val_fraction},
        "masks": int(sum(bool(it.mask_path) for it in items)),
        "medical": medical.summary if medical is not None else None,  # DICOM/NIfTI conversion (medauc.data.convert)
        "class_stats": audit_mod.class_stats(recs, labels, disc.classes),
        "shortcut_auc": shortcut,
        "warnings": _warnings(shortcut, conflicts, max(group_sizes, default=0), len(items), hamming) + link_warnings
        + _given_warning(split.cross_split, split.split) + _subject_warnings(subject_audit)
        + (medical.warnings if medical is not None else []),
        "seconds": round(time.perf_counter() - t0, 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    write_manifest(manifest_path, df)
    fileio.write_json(run_dir / AUDIT, audit)
    runs.record_config(run_dir, cfg)  # data.classes=[] -> the classes found, in config.yaml
    print(summary_text(audit, run_dir))  # warnings included: printed once, on stdout, with the counts
    return manifest_path


def _read_all(
    disc: Discovery, workers: int
) -> tuple[list[SourceItem], list[str], list[dict[str, Any]], list[dict[str, str]]]:
    """Decode and measure every candidate; (readable items, their ids, their records, unreadable {path, reason})."""
    ids = _image_ids(disc.items)
    records = audit_mod.scan_files([it.path for it in disc.items], workers=workers, desc="prepare: reading")
    unreadable = [{"path": str(it.path), "reason": r["error"]} for it, r in zip(disc.items, records) if "error" in r]
    keep = [i for i, r in enumerate(records) if "error" not in r]
    items = [disc.items[i] for i in keep]
    labels = [it.label for it in items]
    try:
        check_classes(disc.classes, {c: labels.count(c) for c in disc.classes}, disc.root, what="readable images")
    except DataError as exc:
        if not unreadable:
            raise
        first = unreadable[0]
        raise DataError(f"{exc}; {len(unreadable)} file(s) could not be read, e.g. {first['path']}: {first['reason']}") from exc
    return items, [ids[i] for i in keep], [records[i] for i in keep], unreadable


def _manifest_frame(
    items: list[SourceItem], ids: list[str], recs: list[dict[str, Any]], group: Any, split: Any
) -> pd.DataFrame:
    has_masks = any(it.mask_path for it in items)
    has_subjects = any(it.subject for it in items)  # no column without a known patient: the manifest stays as before
    rows = []
    for i, (it, r) in enumerate(zip(items, recs)):
        row = {
            "image_id": ids[i], "path": str(it.path), "label": it.label, "split": split[i],
            "sha256": r["sha256"], "phash": r["phash"], "width": r["width"], "height": r["height"],
            "mode": r["mode"], "group": int(group[i]),
        }
        if has_subjects:
            row["subject"] = it.subject
        if has_masks:
            row["mask_path"] = it.mask_path
        rows.append(row)
    extra = (["subject"] if has_subjects else []) + (["mask_path"] if has_masks else [])
    return pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS) + extra)


def _warnings(shortcut: dict[str, Any], conflicts: list[dict[str, Any]], largest_group: int, n: int, hamming: int) -> list[str]:
    out = []
    if shortcut.get("max") is not None and shortcut["max"] > audit_mod.SHORTCUT_WARN_AUC:
        worst = max(shortcut["per_class"], key=lambda c: shortcut["per_class"][c])
        top = (shortcut.get("top_features") or [{"feature": "none alone", "class": worst, "auc": float("nan")}])[0]
        out.append(
            f"shortcut risk: metadata alone (sizes, format, intensity statistics; no anatomy) predicts "
            f"'{worst}' with AUC {shortcut['max']:.2f} (> {audit_mod.SHORTCUT_WARN_AUC}); most telling single "
            f"feature: {top['feature']} for '{top['class']}' (AUC {top['auc']:.2f}). "
            "A classifier may learn how the images were stored rather than what they show."
        )
    if conflicts:
        out.append(f"{len(conflicts)} label conflict(s): the same or nearly the same image under two classes "
                   "(listed in data_audit.json, label_conflicts); they are kept, each group in one split")
    if largest_group > max(2, _LARGE_GROUP * n):
        out.append(
            f"one duplicate group holds {largest_group} images: many near-identical images (or a too large "
            f"data.near_duplicate_hamming={hamming}); the split keeps it whole"
        )
    return out


def _given_warning(cross: Any, split: Any) -> list[str]:
    if not cross:
        return []
    n = sum(1 for ix in cross for i in ix if split[i] != "test")
    return [f"{n} training image(s) duplicate an image of the given test set ({len(cross)} group(s), listed in "
            "data_audit.json, given_split_duplicates); the test set is kept as given and they stay in training, "
            "so test scores may be optimistic"]


def _subject_audit(
    df: pd.DataFrame, classes: list[str], source: str, cfg: Config, given_cross: tuple[str, ...]
) -> dict[str, Any]:
    """Patients per split and class (a patient counts once in every class it has images of), and
    how they sit across splits and classes. ``known`` is False when no image has a patient id."""
    if "subject" not in df.columns:
        return {"known": False, "source": "", "n_subjects": None, "counts": None,
                "note": "no patient ids (set data.group_pattern or data.groups_csv): slices of one patient may sit "
                        "in train and test, and intervals treat the slices as independent"}
    known = df[df["subject"] != ""]
    counts: dict[str, dict[str, int]] = {}
    for s in (*SPLITS, "total"):
        sub = known if s == "total" else known[known["split"] == s]
        counts[s] = {c: int(sub.loc[sub["label"] == c, "subject"].nunique()) for c in classes}
        counts[s]["all"] = int(sub["subject"].nunique())
    splits_of = known.groupby("subject")["split"].nunique()
    if cfg.data.split != "given" and (splits_of > 1).any():
        raise RuntimeError(f"the split put patient {splits_of.index[splits_of > 1][0]!r} in two splits: a bug in medauc.data.split")
    classes_of = known.groupby("subject")["label"].nunique()
    sizes = known.groupby("subject").size()
    return {
        "known": True,
        "source": source,
        "pattern": cfg.data.group_pattern or None,
        "groups_csv": cfg.data.groups_csv or None,
        "n_subjects": int(known["subject"].nunique()),
        "n_images_without_subject": int((df["subject"] == "").sum()),
        "images_per_subject": {"min": int(sizes.min()), "median": float(sizes.median()), "max": int(sizes.max())},
        "counts": counts,  # split -> class -> patients ("all": patients in the split)
        "across_classes": int((classes_of > 1).sum()),  # patients with images of more than one class: normal
        # always [] for a random split; with data.split=given: patients in the given train and test sets
        "in_two_splits": sorted(splits_of.index[splits_of > 1].astype(str)),
        "given_split_subjects": list(given_cross),
    }


def _subject_warnings(sa: dict[str, Any]) -> list[str]:
    if not sa["known"]:
        return []
    out = []
    if sa["given_split_subjects"]:
        n, first = len(sa["given_split_subjects"]), sa["given_split_subjects"][0]
        out.append(f"{n} patient(s) have images in both the given training and test sets (e.g. {first}; listed in "
                   "data_audit.json, subjects.given_split_subjects); the test set is kept as given, so test scores may "
                   "be optimistic")
    if sa["n_images_without_subject"]:
        out.append(f"{sa['n_images_without_subject']} image(s) have no patient id; each counts as a patient of its own")
    return out


def _counts(df: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in SPLITS:
        sub = df[df["split"] == s]
        out[s] = {c: int((sub["label"] == c).sum()) for c in classes}
    out["total"] = {c: int((df["label"] == c).sum()) for c in classes}
    return out


def summary_text(audit: dict[str, Any], run_dir: Path) -> str:
    """A few lines for the terminal: counts per split and class, what was skipped, what was found."""
    classes = audit["classes"]
    width = max(8, *(len(c) + 1 for c in classes))
    lines = [f"prepare: {audit['n_images']} images, {len(classes)} classes, from {audit['data_root']} ({audit['layout']} layout)"]
    lines.append("  " + "split".ljust(7) + "".join(c.rjust(width) for c in classes) + "total".rjust(8))
    for s in (*SPLITS, "total"):
        row = audit["counts"][s]
        lines.append("  " + s.ljust(7) + "".join(str(row[c]).rjust(width) for c in classes) + str(sum(row.values())).rjust(8))
    sa = audit.get("subjects") or {"known": False}
    if sa["known"]:
        lines.append(f"  patients: {sa['n_subjects']} (from {sa['source']}), each in one split; per split and class "
                     f"(a patient with images of two classes counts in both):")
        for s in (*SPLITS, "total"):
            row = sa["counts"][s]
            lines.append("  " + s.ljust(7) + "".join(str(row[c]).rjust(width) for c in classes) + str(row["all"]).rjust(8))
    else:
        lines.append("  patients: unknown (no data.group_pattern or data.groups_csv): slices of one patient may sit in "
                     "train and test")
    reasons: dict[str, int] = {}
    for d in audit["skipped"]:
        reasons[d["reason"].split(" (")[0]] = reasons.get(d["reason"].split(" (")[0], 0) + 1
    if audit["unreadable"]:
        reasons["unreadable"] = len(audit["unreadable"])
    if reasons:
        lines.append("  skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())))
    lines.append(
        f"  duplicates: {len(audit['exact_duplicate_groups'])} exact group(s), {len(audit['near_duplicate_groups'])} "
        f"near group(s) (largest {audit['largest_group']} images), {len(audit['label_conflicts'])} label conflict(s); "
        f"{audit['cross_split_duplicates']} image(s) moved to keep groups in one split"
    )
    sc = audit["shortcut_auc"]
    if sc.get("max") is not None:
        lines.append(f"  shortcut audit (metadata only, {sc['folds']}-fold CV by {sc.get('folds_by', 'image')}): "
                     f"macro AUC {sc['macro']:.3f}, max {sc['max']:.3f}")
    elif sc.get("note"):
        lines.append(f"  shortcut audit: {sc['note']}")
    for w in audit["warnings"]:
        lines.append(f"  WARNING: {w}")
    lines.append(f"  wrote {run_dir / MANIFEST} and {run_dir / AUDIT} in {audit['seconds']:.1f} s")
    return "\n".join(lines)
