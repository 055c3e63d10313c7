"""The report's sections, in order. Each reads its stage's files and adds blocks and results.

A section never invents a number: values come from the files; sentences are templates filled
from them. When a stage's files are missing the section says which command makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medauc.config import Config, dump_yaml
from medauc.report import figures
from medauc.report.document import Document
from medauc.runs import read_json

VERSION = "1"  # bump when the report's layout changes, so cached reports are rebuilt


@dataclass
class Context:
    cfg: Config
    run_dir: Path
    doc: Document
    results: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def json(self, name: str) -> Any | None:
        p = self.path(name)
        return read_json(p) if p.exists() else None

    def missing(self, what: str, command: str) -> None:
        self.doc.p(f"No {what} in this run folder: run `{command}` to produce it.", "note")


def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def fmt_ci(est: Any, low: Any, high: Any, digits: int = 4) -> str:
    if low is None or high is None:
        return fmt(est, digits)
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and not np.isfinite(p)):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


# ----------------------------------------------------------------------------- sections


def data_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Data")
    manifest = ctx.path("manifest.csv")
    if not manifest.exists():
        ctx.missing("manifest", "medauc prepare")
        return
    df = pd.read_csv(manifest, keep_default_na=False)
    classes = [c for c in ctx.cfg.data.classes if c in set(df["label"])] or sorted(df["label"].unique())
    counts = pd.crosstab(df["label"], df["split"]).reindex(index=classes, fill_value=0)
    splits = [s for s in ("train", "val", "test") if s in counts.columns]
    rows = [[c] + [int(counts.loc[c, s]) for s in splits] + [int(counts.loc[c, splits].sum())] for c in classes]
    rows.append(["total"] + [int(counts[s].sum()) for s in splits] + [int(counts[splits].to_numpy().sum())])
    source = "the built-in synthetic brain-MRI phantom" if ctx.cfg.data.source == "phantom" else f"the folder {ctx.cfg.data.path}"
    doc.p(
        f"{len(df)} usable images from {source}, split stratified and seeded (seed {ctx.cfg.seed}): "
        f"test fraction {ctx.cfg.data.test_fraction}, validation fraction {ctx.cfg.data.val_fraction} of the rest. "
        "Duplicate and near-duplicate groups are kept within one split."
    )
    doc.table(["class"] + splits + ["total"], rows, "Images per class and split (original images only)")
    ctx.results["data"] = {"counts": {c: {s: int(counts.loc[c, s]) for s in splits} for c in classes}, "n_images": int(len(df))}

    audit = ctx.json("data_audit.json")
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
        doc.figure(figures.read_png(montage), f"The built-in phantom: a row per class (lesion outlines where shown). Anatomy: {anatomy}.", "phantom_montage.png", 900)


def environment_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Reproducing this run")
    env = ctx.json("environment.json") or {}
    timings = (ctx.json("timings.json") or {}).get("last_run", {})
    if env:
        pk = env.get("packages", {})
        doc.table(
            ["item", "value"],
            [["python", env.get("python")], ["platform", env.get("platform")], ["device", env.get("device")],
             ["CPU cores", env.get("cpu_count")], ["git commit", env.get("git_commit")]]
            + [[k, v] for k, v in pk.items()],
            "Environment",
        )
    if timings:
        doc.table(["stage", "seconds"], [[k, fmt(v, 1)] for k, v in timings.items()], "Time per stage (last run)")
        ctx.results["timings"] = timings
    doc.p("The resolved configuration (config.yaml). To repeat this run: `medauc run --config PATH/TO/config.yaml`.")
    doc.code(dump_yaml(ctx.cfg))
    ctx.results["environment"] = env


ALL = [data_section, environment_section]
