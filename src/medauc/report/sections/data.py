"""The data section: images and patients per class and split, the data audit, the phantom's montages."""

from __future__ import annotations

from typing import Any

import pandas as pd

from medauc.formatting import fmt
from medauc.report import figures
from medauc.report.context import Context


def data_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Data")
    manifest = ctx.path("manifest.csv")
    if not manifest.exists():
        ctx.missing("manifest", "medauc prepare")
        return
    df = pd.read_csv(manifest, keep_default_na=False, dtype={"subject": str})
    classes = [c for c in ctx.cfg.data.classes if c in set(df["label"])] or sorted(df["label"].unique())
    counts = pd.crosstab(df["label"], df["split"]).reindex(index=classes, fill_value=0)
    splits = [s for s in ("train", "val", "test") if s in counts.columns]
    rows = [[c] + [int(counts.loc[c, s]) for s in splits] + [int(counts.loc[c, splits].sum())] for c in classes]
    rows.append(["total"] + [int(counts[s].sum()) for s in splits] + [int(counts[splits].to_numpy().sum())])
    source = "the built-in synthetic brain-MRI phantom" if ctx.cfg.data.source == "phantom" else f"the folder {ctx.cfg.data.path}"
    audit = ctx.json("data_audit.json")
    patients = patient_counts(df, classes, splits)
    doc.p(
        f"{len(df)} usable images from {source}, split stratified and seeded (seed {ctx.cfg.seed}): "
        f"test fraction {ctx.cfg.data.test_fraction}, validation fraction {ctx.cfg.data.val_fraction} of the rest. "
        + ("Every patient's images, and every duplicate and near-duplicate group, lie within one split."
           if patients else "Duplicate and near-duplicate groups are kept within one split.")
    )
    doc.table(["class"] + splits + ["total"], rows, "Images per class and split (original images only)")
    ctx.results["data"] = {"counts": {c: {s: int(counts.loc[c, s]) for s in splits} for c in classes}, "n_images": int(len(df))}
    _patients_text(ctx, patients, (audit or {}).get("subjects") or {}, splits)

    if audit:
        unreadable = audit.get("unreadable", [])
        sc = audit.get("shortcut_auc", {}) or {}
        doc.h("Data audit", 3)
        doc.table(
            ["check", "result"],
            [
                ["files skipped (unreadable, not an image, system files)", len(unreadable)],
                ["exact-duplicate groups (same decoded pixels)", len(audit.get("exact_duplicate_groups", []))],
                ["near-duplicate groups (perceptual hash)", len(audit.get("near_duplicate_groups", []))],
                ["label conflicts (same image, two classes)", len(audit.get("label_conflicts", []))],
                ["images moved to keep duplicate groups in one split", audit.get("cross_split_duplicates", 0)],
                ["shortcut audit: max one-vs-rest AUC from metadata alone", fmt(sc.get("max"), 3)],
            ],
            "Audit before the split",
        )
        per_class = sc.get("per_class") or {}
        if per_class:
            doc.table(["class", "metadata-only AUC"], [[k, fmt(v, 3)] for k, v in per_class.items()],
                      "Shortcut audit: how well image size, format, file size and intensity statistics alone predict each class (5-fold CV; 0.5 = not at all)")
            mx = sc.get("max")
            if mx is not None and mx > 0.7:
                doc.p(f"Warning: labels are predictable from acquisition metadata alone (max AUC {fmt(mx, 3)}); "
                      "a classifier may learn the source, not the anatomy.", "warning")
        if unreadable:
            doc.table(["file", "reason"], [[u.get("path", ""), u.get("reason", "")] for u in unreadable[:20]],
                      f"Skipped files (first {min(20, len(unreadable))} of {len(unreadable)})")
        ctx.results["data"]["audit"] = {
            "skipped": len(unreadable),
            "exact_duplicate_groups": len(audit.get("exact_duplicate_groups", [])),
            "near_duplicate_groups": len(audit.get("near_duplicate_groups", [])),
            "label_conflicts": len(audit.get("label_conflicts", [])),
            "cross_split_duplicates": audit.get("cross_split_duplicates", 0),
            "shortcut_auc": sc,
        }
    montage = ctx.path("phantom/montage_masks.png")
    if not montage.exists():
        montage = ctx.path("phantom/montage.png")
    if montage.exists():
        info = ctx.json("phantom/phantom.json") or {}
        anatomy = info.get("anatomy") or info.get("anatomy_source") or "see phantom.json"
        if isinstance(anatomy, dict):  # {source, path, description}: the sentence, not the mapping
            anatomy = anatomy.get("description") or anatomy.get("source") or "see phantom.json"
        doc.figure(figures.read_png(montage), f"The built-in phantom: a row per class (lesion outlines where shown). Anatomy: {anatomy}.", "phantom_montage.png", 900)
    subjects = ctx.path("phantom/montage_subjects.png")
    if subjects.exists():
        doc.figure(figures.read_png(subjects), "Phantom patients: a row per virtual patient, its nearby slices side by side. "
                   "Each patient has its own head shape and size, contrast, bias field and noise; a tumour patient's "
                   "slices all cut its one tumour.", "phantom_subjects.png", 900)


def patient_counts(df: pd.DataFrame, classes: list[str], splits: list[str]) -> dict[str, Any] | None:
    """Patients per class and split from a manifest's ``subject`` column ("" = unknown), or None
    when no patient is known. A patient with images of two classes counts in both rows; the
    ``total`` row and column count each patient once."""
    if "subject" not in df.columns or not (df["subject"].astype(str) != "").any():
        return None
    known = df[df["subject"].astype(str) != ""]

    def count(rows: pd.DataFrame) -> int:
        return int(rows["subject"].nunique())

    table = {c: {s: count(known[(known["label"] == c) & (known["split"] == s)]) for s in splits} for c in classes}
    return {
        "n_patients": count(known),
        "n_images_without_id": int(len(df) - len(known)),
        "counts": table,
        "per_split": {s: count(known[known["split"] == s]) for s in splits},
        "per_class": {c: count(known[known["label"] == c]) for c in classes},
    }


def _patients_text(ctx: Context, patients: dict[str, Any] | None, audit: dict[str, Any], splits: list[str]) -> None:
    """The data section's patient table, or what it means that no patient is known."""
    doc = ctx.doc
    if patients is None:
        doc.p(
            "No patient ids are known for these images (set data.group_pattern or data.groups_csv to give them), so "
            "every image was split and analysed as if it came from a different patient. Slices of one patient may "
            "therefore sit in both train and test, which can make the test scores optimistic, and every interval and "
            "test below treats the slices as independent, so the intervals may be too narrow and the p-values too small.",
            "note",
        )
        ctx.results["data"]["patients"] = {"known": False}
        return
    classes = list(patients["counts"])
    rows = [[c] + [patients["counts"][c][s] for s in splits] + [patients["per_class"][c]] for c in classes]
    rows.append(["total"] + [patients["per_split"][s] for s in splits] + [patients["n_patients"]])
    where = {"data.group_pattern": f"taken from the image paths by data.group_pattern = {audit.get('pattern')}",
             "data.groups_csv": f"listed in data.groups_csv = {audit.get('groups_csv')}",
             "phantom images.csv": "as the phantom drew them, from its own images.csv"}.get(audit.get("source", ""), "")
    straddle = audit.get("given_split_subjects") or []
    except_ = " (except the ones noted below, in the data set's own train and test sets)" if straddle else ""
    doc.p(
        f"{patients['n_patients']} patients{' (' + where + ')' if where else ''}; each patient's images lie in one split{except_}. "
        "A patient with images of more than one class counts once in each of those rows; the totals count every "
        "patient once."
    )
    doc.table(["class"] + splits + ["total"], rows, "Patients per class and split")
    if patients["n_images_without_id"]:
        doc.p(f"{patients['n_images_without_id']} image(s) have no patient id; each was treated as a patient of its own.", "note")
    if straddle:
        doc.p(f"{len(straddle)} patient(s) have images in both the data set's own training and test sets "
              f"(e.g. {straddle[0]}); the test set was kept as given, so test scores may be optimistic.", "warning")
    ctx.results["data"]["patients"] = {"known": True, **patients}
