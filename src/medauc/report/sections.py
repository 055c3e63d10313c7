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
from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN
from medauc.report import figures
from medauc.report.document import Document
from medauc.report.provenance import image_checks, stages_table
from medauc.runs import read_json


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

    def required(self, name: str, what: str, command: str) -> Any | None:
        """``json(name)``, or None after a note saying which command produces it."""
        data = self.json(name)
        if not data:
            self.missing(what, command)
        return data


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


def fmt_est(d: dict[str, Any] | None, digits: int = 4) -> str:
    """An estimate with its CI from a file: ``{value, low, high}`` (evaluation) or ``{mean, ci_low, ci_high}`` (explain)."""
    if not d:
        return "n/a"
    if "value" in d:
        return fmt_ci(d.get("value"), d.get("low"), d.get("high"), digits)
    return fmt_ci(d.get("mean"), d.get("ci_low"), d.get("ci_high"), digits)


def fmt_pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.0%}"


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and not np.isfinite(p)):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def verdict(significant: Any, note: Any = None) -> str:
    """A comparison's verdict as read back from a file: yes, no, or not assessable (no verdict, a note why)."""
    if isinstance(note, str) and note:
        return "not assessable"
    text = str(significant)
    return "yes" if text == "True" else "no" if text == "False" else "not assessable"


def ci_unit(metrics: dict[str, Any] | None) -> str:
    """What the intervals of a metrics file are over: "over patients (n=60)" or "over images (no patient ids known)"."""
    if metrics and metrics.get("unit") == "patients":
        return f"over patients (n={metrics.get('n_patients')})"
    return "over images (no patient ids known)"


def fmt_detectable(x: Any) -> str:
    """A smallest detectable difference as read back from a file ("n/a" when undefined or absent)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return fmt(v, 3) if np.isfinite(v) else "n/a"


def assessability_note(doc: Document, rows: list[tuple[str, Any]]) -> None:
    """A note under a comparisons table: which comparisons got no verdict and why. ``rows``: (label, note)."""
    why: dict[str, list[str]] = {}
    for label, note in rows:
        if isinstance(note, str) and note:
            why.setdefault(note.removeprefix("not assessable: "), []).append(label)
    if why:
        doc.p("Not assessable (no verdict, left out of the Holm correction): "
              + "; ".join(f"{', '.join(dict.fromkeys(labels))}: {reason}" for reason, labels in why.items()) + ".", "note")


def undefined_cells(cells: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """``"<label> (37%)"`` for each defined estimate whose bootstrap replicates are undefined more often than
    :data:`UNDEFINED_SHARE_WARN`. ``cells``: (label, {value, low, high, undefined_share})."""
    out = []
    for label, c in cells:
        share = (c or {}).get("undefined_share")
        if share is not None and (c or {}).get("value") is not None and share > UNDEFINED_SHARE_WARN:
            out.append(f"{label} ({share:.0%})")
    return out


def undefined_note(doc: Document, cells: list[tuple[str, dict[str, Any] | None]]) -> None:
    """A warning under a table naming each estimate whose interval rests on part of the resamples, with the share."""
    flagged = undefined_cells(cells)
    if flagged:
        doc.p(f"Undefined in more than {UNDEFINED_SHARE_WARN:.0%} of the bootstrap resamples (share in brackets; typically a "
              "class predicted or present too rarely), so the interval describes only the resamples where it is defined: "
              + ", ".join(flagged) + ".", "warning")


# ----------------------------------------------------------------------------- sections


def _significant(p: Any, level: float) -> bool:
    return p is not None and np.isfinite(p) and p < 1 - level


def summary_section(ctx: Context) -> None:
    """The study's four questions, answered in sentences filled from the run's files."""
    doc = ctx.doc
    doc.h("The study's four questions, answered from this run")
    level = ctx.cfg.evaluate.level
    if ctx.cfg.data.source == "phantom":
        doc.p("These answers are about the built-in synthetic phantom with models trained from scratch at demo size: "
              "they show the method, not facts about real MRI. Run `medauc run --config study data.path=PATH` for the real data.", "note")
    answers: dict[str, str] = {}
    metrics = ctx.json("metrics.json")
    if metrics and metrics.get("question_1"):
        answers["q1_accuracy_vs_auc"] = "1. Do the models that win by accuracy also win by AUC? " + metrics["question_1"]["answer"]
    checks = image_checks(ctx)
    strategies = ctx.json("strategies.json") or {}
    parts = []
    ca = checks.get("a_predicted_healthy")
    if ca:
        ci = ca.get("ci") or [None, None]
        text = (f"a classifier trained on the original data calls {fmt(ca.get('share') * 100, 1)}% "
                f"[{fmt(ci[0] * 100 if ci[0] is not None else None, 1)}, {fmt(ci[1] * 100 if ci[1] is not None else None, 1)}] "
                "of the generated images healthy")
        if ca.get("study_share") is not None:
            text += f" (the study reported {fmt(ca['study_share'] * 100, 2)}%)"
        base = (ca.get("baseline") or {}).get("test_tumour_called_healthy")
        if base is not None:
            text += (f", while it calls {fmt(base * 100, 1)}% of the real tumour test images healthy too, "
                     "so that share alone does not show the generated images are realistic")
        parts.append(text)
    cd = checks.get("d_artefact_detectability")
    if cd and cd.get("auc") is not None:
        auc = cd["auc"]
        ci = cd.get("ci") or [None, None]
        verdict = ("so the restorations carry a detectable signature that a classifier could learn as 'healthy'"
                   if ci[0] is not None and ci[0] > 0.6 else "so no clear restoration signature was found")
        parts.append(f"restored and original healthy images can be told apart from simple image statistics with AUC {fmt(auc, 3)} "
                     f"[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}], {verdict}")
    comp = (checks.get("e_shortcut_flip") or {}).get("comparison") or {}
    if comp.get("difference") is not None:
        ci = comp.get("ci") or [None, None]
        d = comp["difference"] * 100
        parts.append(f"after restoration, tumour test images are called healthy {fmt(abs(d), 1)} percentage points "
                     f"{'more' if d >= 0 else 'less'} often by the augmented-data model than by the balanced-data model "
                     f"(difference [{fmt(ci[0] * 100 if ci[0] is not None else None, 1)}, {fmt(ci[1] * 100 if ci[1] is not None else None, 1)}]; "
                     "a positive difference means 'looks restored' has become 'healthy')")
    for t in strategies.get("paired_tests", []):
        if t.get("strategy") == "balanced" and t.get("metric") == "auc_macro":
            sig = _significant(t.get("p_holm"), level)
            said = (t["note"] if t.get("note") else "significant" if sig else
                    f"not significant; this test set could detect only differences of {fmt_detectable(t.get('detectable'))} or more")
            parts.append(f"against training on the balanced original data, restoration changes macro AUC by "
                         f"{fmt(-t['difference'])} (p = {fmt_p(t.get('p_value'))}, Holm {fmt_p(t.get('p_holm'))}: {said})")
            break
    if parts:
        answers["q2_restoration"] = "2. Does restoration-based augmentation simulate clinical imbalance? In this run, " + "; ".join(parts) + "."
    if metrics and metrics.get("models"):
        key = ctx.cfg.evaluate.question_auc
        means = {m: v.get("summary", {}).get(key, {}).get("mean") for m, v in metrics["models"].items()}
        means = {m: v for m, v in means.items() if v is not None}
        if means:
            best = max(means, key=lambda m: means[m])
            text = f"3. Which model is best by AUC? {best} has the highest {key.replace('_', ' ')} ({fmt(means[best])})"
            comp_path = ctx.path("comparisons.csv")
            if len(means) < 2:
                text = (f"3. Which model is best by AUC? Only one model was evaluated ({best}, {key.replace('_', ' ')} "
                        f"{fmt(means[best])}): there is nothing to compare it with.")
            elif comp_path.exists():
                c = pd.read_csv(comp_path)
                first_seed = _first_seed(metrics["models"][best])[0]
                c = c[(c["metric"] == key) & (c["seed"].astype(str) == str(first_seed)) & ((c["model_a"] == best) | (c["model_b"] == best))]
                sig = [r for r in c.itertuples() if _significant(r.p_holm, level)]
                unassessed = int(c["note"].notna().sum()) if "note" in c.columns else 0  # an empty note reads as NaN
                others = len(c)
                if others:
                    text += (f"; its lead is significant (Holm-corrected, paired) against {len(sig)} of {others} other models"
                             + (f" ({', '.join(r.model_b if r.model_a == best else r.model_a for r in sig)})" if sig else "")
                             + (f"; {unassessed} of these comparisons are not assessable on these data (see Table 1)" if unassessed else "")
                             + (", so the ranking at the top is not established by these data" if len(sig) < others else ""))
                    # "not significant" beside the difference this test set could have detected (empty notes read as NaN)
                    quiet = [r for r in c.itertuples() if not _significant(r.p_holm, level) and not isinstance(getattr(r, "note", None), str)
                             and "detectable" in c.columns]
                    if quiet:
                        text += ("; not significant against " + ", ".join(
                            f"{r.model_b if r.model_a == best else r.model_a} (difference {fmt(abs(r.difference), 3)}, "
                            f"smallest detectable {fmt_detectable(r.detectable)})" for r in quiet)
                            + f" at {metrics.get('power', 0.8):.0%} power, {ci_unit(metrics)}")
                    text += "."
            answers["q3_best_by_auc"] = text
    ex = ctx.json("explain.json")
    if ex and ex.get("models"):
        verdicts = {m: next(iter(v.get("methods", {}).values()), {}).get("sanity", {}) or {} for m, v in ex["models"].items()}
        better = [m for m, s in verdicts.items() if s.get("verdict") == "better"]
        answers["q4_lesion"] = (f"4. Do the models look at the lesion? {len(better)} of {len(verdicts)} models localise the lesion "
                                "clearly better than their randomised twins (pointing game and energy ratio against the true masks)"
                                + (f": {', '.join(better)}." if better else "."))
    for text in answers.values():
        doc.p(text, "answer")
    if not answers:
        doc.p("No stage results yet.", "note")
    ctx.results["answers"] = answers



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
             "data.groups_csv": f"listed in data.groups_csv = {audit.get('groups_csv')}"}.get(audit.get("source", ""), "")
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
    stages_table(ctx)
    doc.p("The resolved configuration (config.yaml). To repeat this run: `medauc run --config PATH/TO/config.yaml`.")
    doc.code(dump_yaml(ctx.cfg))
    ctx.results["environment"] = env


# ----------------------------------------------------------------------------- models (Table 1)

HEADLINE = [
    ("accuracy", "accuracy"),
    ("auc_macro", "macro AUC"),
    ("f1_macro", "macro F1"),
    ("screening_auc", "screening AUC"),
    ("screening_sensitivity", "screening sens."),
    ("screening_specificity", "screening spec."),
    ("screening_f1", "screening F1"),
    ("ece", "ECE"),
]


def _first_seed(model: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    seeds = model["seeds"]
    key = sorted(seeds, key=lambda k: int(k))[0]
    return key, seeds[key]


ONE_CLASS_SHARE = 0.95  # arg-max predictions in one class at or above this share: the model has collapsed


def not_learnt(metrics: dict[str, Any], label: str = "model") -> list[str]:
    """Sentences naming the models (first seed) that did not learn: arg-max predictions (almost) all in one
    class, or a macro-AUC interval that reaches 0.5 (chance). Read from the confusion matrix and the CIs."""
    notes = []
    for name, m in metrics["models"].items():
        seed, s = _first_seed(m)
        why = []
        cm = s.get("confusion_matrix") or {}
        counts = np.asarray(cm.get("counts") or [[0]], dtype=float)
        predicted = counts.sum(axis=0)
        if predicted.sum() > 0 and predicted.max() / predicted.sum() >= ONE_CLASS_SHARE:
            top = int(predicted.argmax())
            why.append(f"it predicts {cm['classes'][top]} for {int(predicted[top])} of {int(predicted.sum())} test images")
        auc = s["metrics"].get("auc_macro") or {}
        low, high = auc.get("low"), auc.get("high")
        if low is not None and high is not None and np.isfinite(low) and low <= 0.5:
            why.append(f"its macro AUC interval [{fmt(low)}, {fmt(high)}] reaches 0.5, chance")
        if why:
            notes.append(f"{label} {name} (seed {seed}) has not learnt to tell the classes apart: {'; '.join(why)}.")
    return notes


def metrics_table(doc: Document, metrics: dict[str, Any], caption: str, label: str = "model") -> list[dict[str, Any]]:
    """One row per model: each headline metric with its 95% CI (first seed) or mean ± sd (several seeds)."""
    rows, out = [], []
    for name, m in metrics["models"].items():
        seed, s = _first_seed(m)
        summary = m.get("summary", {})
        n_seeds = len(m["seeds"])
        row: list[Any] = [name]
        rec: dict[str, Any] = {label: name, "seeds": n_seeds}
        for key, _ in HEADLINE:
            cell = s["metrics"].get(key, {})
            if n_seeds > 1 and key in summary:
                row.append(f"{fmt(summary[key]['mean'])} ± {fmt(summary[key]['sd'])}")
            else:
                row.append(fmt_est(cell))
            rec[key] = cell
        rows.append(row)
        out.append(rec)
    seeds = {len(m["seeds"]) for m in metrics["models"].values()}
    how = (f"mean ± sd over {max(seeds)} seeds" if max(seeds) > 1
           else f"test set, {int(metrics['level'] * 100)}% CI {ci_unit(metrics)}: stratified bootstrap, {metrics['n_bootstrap']} resamples")
    doc.table([label] + [h for _, h in HEADLINE], rows, f"{caption} ({how})")
    undefined_note(doc, [(f"{name} {key}", _first_seed(m)[1]["metrics"].get(key))
                         for name, m in metrics["models"].items() for key, _ in HEADLINE])
    for note in not_learnt(metrics, label):
        doc.p(note[0].upper() + note[1:] + " Its other numbers describe a constant or random guess, not a classifier.", "warning")
    return out


def comparisons_table(doc: Document, comparisons: pd.DataFrame, tables: list[str], metrics: list[str], caption: str, first_seed: Any) -> None:
    """Paired comparisons of the first seed, each with the smallest difference its test could detect."""
    sub = comparisons[comparisons["table"].isin(tables) & comparisons["metric"].isin(metrics)]
    if "seed" in sub.columns and len(sub):
        sub = sub[sub["seed"].astype(str) == str(first_seed)]
    if not len(sub):
        return
    notes = sub["note"] if "note" in sub.columns else pd.Series([None] * len(sub), index=sub.index)
    detectable = sub["detectable"] if "detectable" in sub.columns else pd.Series([None] * len(sub), index=sub.index)
    rows = [
        [r.metric, r.model_a, r.model_b, fmt(r.difference), fmt_ci(r.difference, r.ci_low, r.ci_high), fmt_p(r.p_value),
         fmt_p(r.p_holm), r.test, "n/a" if isinstance(note, str) and note else fmt_detectable(det), verdict(r.significant, note)]
        for r, note, det in zip(sub.itertuples(), notes, detectable)
    ]
    doc.table(["metric", "A", "B", "A − B", "95% CI", "p", "p (Holm)", "test", "detectable", "significant"], rows, caption)
    assessability_note(doc, [(f"{r.metric} ({r.model_a} vs {r.model_b})", note) for r, note in zip(sub.itertuples(), notes)])


def models_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Table 1: the classifiers")
    metrics = ctx.required("metrics.json", "metrics", "medauc evaluate")
    if not metrics:
        return
    aug = ctx.cfg.augment.enabled
    trained_on = "the augmented, imbalanced training set (restoration-based augmentation of the healthy class)" if aug else "the original training set"
    doc.p(f"Each model trained on {trained_on}, selected on the validation split "
          f"(monitor: {ctx.cfg.train.monitor}), and evaluated once on the original test images. "
          f"Screening view: {metrics['negative_class']} = negative, any other class = positive, score = 1 − p({metrics['negative_class']}).")
    if ctx.cfg.train.monitor == "test":
        doc.p("Warning: train.monitor=test — the test loss drove the learning-rate schedule and early stopping, "
              "as in the original study. The test set leaked into model selection; its numbers are optimistic.", "warning")
    if metrics.get("ignored"):
        doc.p("Left out (not in this run's model.names/train.seeds): the predictions of "
              + ", ".join(f"{r['model']} seed {r['seed']}" for r in metrics["ignored"]) + ".", "note")
    ctx.results["table1"] = metrics_table(doc, metrics, "Table 1: test-set performance")
    classes = metrics["classes"]
    rows = []
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        rows.append([name] + [fmt_est(s["metrics"].get(f"auc_{c}")) for c in classes])
    doc.table(["model"] + [f"AUC {c}" for c in classes], rows, f"One-vs-rest AUC per class (first seed, 95% CI {ci_unit(metrics)})")
    undefined_note(doc, [(f"{name} auc_{c}", _first_seed(m)[1]["metrics"].get(f"auc_{c}"))
                         for name, m in metrics["models"].items() for c in classes])

    comp_path = ctx.path("comparisons.csv")
    first_seed = _first_seed(next(iter(metrics["models"].values())))[0]
    if len(metrics["models"]) < 2:
        doc.p(f"Only one model ({next(iter(metrics['models']))}) in this run: there is no other model to compare it with, "
              "so there are no paired comparisons and no ranking.", "note")
    elif comp_path.exists():
        comparisons = pd.read_csv(comp_path)
        tests = ({"paired_bootstrap": "paired patient bootstrap", "delong": "DeLong with Obuchowski's clustered variance"}
                 if metrics.get("unit") == "patients" else {"paired_bootstrap": "paired bootstrap", "delong": "DeLong"})
        comparisons_table(doc, comparisons, ["four_class", "screening"], ["accuracy", "auc_macro", "screening_auc"],
                          f"Paired comparisons on the same test images, 95% CI {ci_unit(metrics)}: accuracy and macro AUC by "
                          f"{tests['paired_bootstrap']}, screening AUC by {tests['delong']}; Holm correction within each table; "
                          f"detectable = the smallest difference the test could detect with {metrics.get('power', 0.8):.0%} power "
                          "(two-sided, before Holm), so a 'no' beside a large one means the test set is too small to tell", first_seed)

    q = metrics.get("question_1")
    if q:
        doc.h("Accuracy versus AUC", 3)
        by_acc, by_auc = q.get("ranked_by_accuracy") or [], q.get("ranked_by_auc") or []
        if len(by_acc) > 1:
            doc.table(["rank", "by accuracy", "by macro AUC"],
                      [[i + 1, a, b] for i, (a, b) in enumerate(zip(by_acc, by_auc))],
                      "Models ranked by accuracy and by AUC")
        doc.p(q["answer"], "answer")
        for pair in q.get("pairs", []):
            doc.p(pair["sentence"])
    rankings = metrics.get("rankings") or []
    n_seeds = max(len(m["seeds"]) for m in metrics["models"].values())
    if n_seeds == 1:
        doc.p("One training seed per model: the intervals above are over test images only; how much a result varies "
              "from one training run to the next is not measured (set train.seeds to several seeds to measure it).", "note")
    if n_seeds > 1 and rankings:
        rows = [[r["metric"], r["model_a"], r["model_b"], fmt(r["mean_a"]), fmt(r["mean_b"]), fmt_pct(r["fraction_seeds_a_better"])]
                for r in rankings if r["metric"] in ("accuracy", "auc_macro", "screening_auc")]
        doc.table(["metric", "A (better on average)", "B", "mean A", "mean B", "seeds where A > B"], rows,
                  f"How stable each ranking is over {n_seeds} seeds")

    _curves(ctx, metrics)
    _prevalence(ctx, metrics)


def _read_curve(ctx: Context, rel: str, curve: str) -> pd.DataFrame | None:
    p = ctx.path(rel)
    if not p.exists():
        return None
    df = pd.read_csv(p)
    return df[df["curve"] == curve]


def _curves(ctx: Context, metrics: dict[str, Any]) -> None:
    doc = ctx.doc
    doc.h("Curves, confusion matrices and calibration", 3)
    roc, pr, cal, mats = {}, {}, {}, {}
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        paths = s.get("curves", {})
        auc = s["metrics"].get("screening_auc", {}).get("value")
        r = _read_curve(ctx, paths.get("roc", ""), "screening")
        if r is not None and len(r):
            roc[f"{name} (AUC {fmt(auc, 3)})"] = (r["fpr"].to_numpy(), r["tpr"].to_numpy())
        q = _read_curve(ctx, paths.get("pr", ""), "screening")
        if q is not None and len(q):
            q = q.sort_values("recall")
            pr[name] = (q["recall"].to_numpy(), q["precision"].to_numpy())
        c = _read_curve(ctx, paths.get("calibration", ""), "screening")
        if c is not None and len(c):
            cal[name] = (c["mean_predicted"].to_numpy(), c["observed"].to_numpy())
        cm = s.get("confusion_matrix")
        if cm:
            mats[name] = np.asarray(cm["counts"])
    if roc:
        doc.figure(figures.curves(roc, "1 − specificity", "sensitivity", "Screening ROC (tumour vs healthy), test set", diagonal=True),
                   "ROC curves of the screening score, first seed.", "roc_screening.png", 520)
    if pr:
        prev = metrics.get("test_prevalence")
        doc.figure(figures.curves(pr, "recall (sensitivity)", "precision (PPV)", f"Screening precision-recall, test prevalence {fmt(prev, 3)}"),
                   "Precision-recall curves of the screening score at the test set's prevalence.", "pr_screening.png", 520)
    if mats:
        doc.figure(figures.confusion_matrices(mats, metrics["classes"]), "Confusion matrices (test set, first seed; colour = row share).",
                   "confusion.png")
    if cal:
        doc.figure(figures.curves(cal, "mean predicted probability", "observed frequency", "Reliability of the screening score (equal-mass bins)", diagonal=True),
                   "Calibration: points on the diagonal are well calibrated.", "calibration.png", 520)


def _prevalence(ctx: Context, metrics: dict[str, Any]) -> None:
    doc = ctx.doc
    doc.h("At a clinical prevalence", 3)
    doc.p("PPV and NPV expected at each prevalence, computed from the test sensitivity and specificity "
          "(not by resampling the test set), at the arg-max decision and at the operating point chosen on the "
          "validation split; expected AUPRC from the ROC curve at that prevalence.")
    rows, out = [], []
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        for entry in s.get("prevalence", []):
            label = f"{entry['prevalence']:.4g}" + (" (test set)" if entry.get("source") not in (None, "evaluate.prevalences") else "")
            rows.append([name, label] + [fmt_est(entry.get(k)) for k in ("ppv", "npv", "op_ppv", "op_npv", "auprc")])
            out.append({"model": name, **entry})
    doc.table(["model", "prevalence", "PPV", "NPV", "PPV at op. point", "NPV at op. point", "AUPRC"], rows,
              f"Positive and negative predictive value at realistic prevalences (95% CI {ci_unit(metrics)})")
    undefined_note(doc, [(f"{e['model']} {k} at prevalence {e['prevalence']:.4g}", e.get(k))
                         for e in out for k in ("ppv", "npv", "op_ppv", "op_npv", "auprc")])
    ctx.results["prevalence"] = out


# ----------------------------------------------------------------------------- augmentation and Table 2


def _ci_text(d: dict[str, Any] | None, value_key: str = "share", digits: int = 4) -> str:
    if not d:
        return "n/a"
    ci = d.get("ci") or [None, None]
    return fmt_ci(d.get(value_key), ci[0], ci[1], digits)


def _examples_figure(ctx: Context) -> None:
    from medauc.augment.denoiser import resize_images
    from medauc.data.images import load_image

    path = ctx.path("augment/manifest.csv")
    if not path.exists():
        return
    df = pd.read_csv(path, keep_default_na=False)
    if "sigma" not in df.columns or "source_image_id" not in df.columns:
        return
    gen = df[(df["source_image_id"] != "") & (df.get("augmentation", "restoration") == "restoration")]
    if not len(gen):
        return
    by_id = df.set_index("image_id")
    sigmas = sorted({float(x) for x in gen["sigma"] if x != ""})
    rows, labels = [], []
    # One row per noise level, each with its own source: every source has only some of the sigmas
    # (6x: each source once at each sigma; fewer: a few), so a column per sigma would mislabel.
    # The source is shown at the generated images' size: what the denoiser saw, not the sharper original.
    for sg in sigmas:
        hit = gen[gen["sigma"].astype(float) == sg].iloc[0]
        restored = load_image(hit["path"])
        original = resize_images(load_image(by_id.loc[hit["source_image_id"], "path"])[None], restored.shape[0])[0]
        rows.append([original, restored])
        labels.append(f"σ={sg:g}, {str(hit['source_image_id'])[-14:]}")
    ctx.doc.figure(figures.image_grid(rows, labels, [f"source, {rows[0][1].shape[0]} px", "restored"], cell=1.8),
                   "Restoration-based augmentation: generated healthy training images, one per noise level σ, beside the "
                   "healthy training image each was made from (noise of that σ added, then removed by the U-Net).",
                   "augment_examples.png", 500)


def _baselines_figure(ctx: Context) -> None:
    """Held-out healthy images: clean, noisy, U-Net, best blur, non-local means (``augment/restoration_examples.npz``)."""
    path = ctx.path("augment/restoration_examples.npz")
    if not path.exists():
        return
    with np.load(path) as ex:
        clean, sigmas, widths = ex["clean"], ex["sigmas"], ex["blur_sigma"]
        rows, labels = [], []
        for j, sg in enumerate(sigmas):
            for k in range(len(clean)):
                rows.append([clean[k], ex["noisy"][j, k], ex["unet"][j, k], ex["blur"][j, k], ex["nlm"][j, k]])
                labels.append(f"σ={sg:g}, image {k + 1}")
    ctx.doc.figure(figures.image_grid(rows, labels, ["clean", "noisy", "U-Net", "best blur", "non-local means"]),
                   "Held-out healthy validation images restored by the U-Net and by two baselines from the same noisy input: "
                   "the best Gaussian blur for each σ (width " + ", ".join(f"{w:g} px at σ={sg:g}" for sg, w in zip(sigmas, widths))
                   + ") and scikit-image non-local means.", "augment_baselines.png", 700)


def _quality_table(ctx: Context, validation: list[dict[str, Any]]) -> None:
    rows = [[f"{r['sigma']:g}", r.get("n"), fmt(r.get("psnr_noisy"), 2), fmt(r.get("psnr_restored"), 2),
             fmt(r.get("psnr_blur"), 2) + (f" ({r['blur_sigma']:g} px)" if r.get("blur_sigma") is not None else ""),
             fmt(r.get("psnr_nlm"), 2), fmt(r.get("ssim_restored"), 3), fmt(r.get("ssim_blur"), 3), fmt(r.get("ssim_nlm"), 3)]
            for r in validation]
    ctx.doc.table(["σ", "n", "PSNR noisy", "PSNR U-Net", "PSNR best blur (width)", "PSNR NLM", "SSIM U-Net", "SSIM blur", "SSIM NLM"], rows,
                  "Check (b): restoration of held-out healthy images, U-Net against the best Gaussian blur (chosen per σ on these "
                  "images, an oracle) and non-local means, all from the same noisy images (PSNR in dB; σ = 0 is a clean input, "
                  "its noisy PSNR capped at 100)")


def augmentation_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Restoration-based augmentation")
    checks = ctx.required("augment_checks.json", "augmentation checks", "medauc augment") and image_checks(ctx)
    if not checks:
        return
    a = ctx.cfg.augment
    doc.p(f"A U-Net denoiser was trained on healthy training images with Gaussian noise at σ ∈ {list(a.sigmas)} "
          f"(images in [0, 1]); its restorations of noisy copies became new healthy training images "
          f"(target: {a.target} {a.multiple if a.target == 'multiple' else a.count if a.target == 'count' else a.share}). "
          "Validation and test images are never augmented.")
    size_warning = (checks.get("image_size") or {}).get("warning")
    if size_warning:
        doc.p(f"Warning: {size_warning}.", "warning")
    _examples_figure(ctx)
    rows = []
    ca = checks.get("a_predicted_healthy")
    if ca:
        rows.append(["(a) generated images predicted healthy by a classifier trained on the original data",
                     _ci_text(ca), f"n = {ca.get('n')}, model {ca.get('model')}"])
    cb = checks.get("b_restoration_quality") or {}
    for r in cb.get("validation", []):
        base = (f"; best blur {fmt(r.get('psnr_blur'), 2)} dB, non-local means {fmt(r.get('psnr_nlm'), 2)} dB"
                if "psnr_blur" in r else "")
        rows.append([f"(b) restoration quality σ={r['sigma']:g} (held-out healthy): PSNR noisy → U-Net, dB",
                     f"{fmt(r.get('psnr_noisy'), 2)} → {fmt(r.get('psnr_restored'), 2)}",
                     f"SSIM {fmt(r.get('ssim_noisy'), 3)} → {fmt(r.get('ssim_restored'), 3)}{base}"])
    cc = checks.get("c_memorisation")
    if cc:
        rows.append(["(c) share of generated images that are near-copies of their source",
                     fmt(cc.get("near_copy_share"), 4), f"SSIM ≥ {cc.get('threshold')}; mean SSIM to source "
                     f"{fmt((cc.get('ssim_to_source') or {}).get('mean'), 3)}, to nearest other training image "
                     f"{fmt((cc.get('ssim_to_nearest_other') or {}).get('mean'), 3)}"])
    cd = checks.get("d_artefact_detectability")
    if cd:
        ci = cd.get("ci") or [None, None]
        at = f", at the classifier's {cd['image_size']} px" if cd.get("image_size") else ""
        rows.append([f"(d) restored vs original healthy images told apart from image statistics (AUC{at})",
                     fmt_ci(cd.get("auc"), ci[0], ci[1]), "0.5 = no detectable artefact; 1 = a signature a classifier can use"])
    ce = checks.get("e_shortcut_flip")
    if ce:
        comp = ce.get("comparison") or {}
        per_strategy = ce.get("strategies") or {}
        for name in ("restoration", "balanced"):
            if name in per_strategy:
                st = per_strategy[name]
                rows.append([f"(e) tumour test images called healthy after restoration — model trained with '{name}'",
                             fmt(st.get("flip_rate"), 4),
                             f"healthy share {fmt(st.get('healthy_share_original'), 3)} → {fmt(st.get('healthy_share_restored'), 3)}"])
        if comp:
            ci = comp.get("ci") or [None, None]
            rows.append(["(e) flip rate, restoration − balanced", fmt_ci(comp.get("difference"), ci[0], ci[1]), "paired bootstrap over images"])
        else:
            missing = [n for n in ("restoration", "balanced") if n not in per_strategy]
            rows.append(["(e) flip rate, restoration − balanced", "not compared",
                         f"needs both strategies; this run has no {' and no '.join(repr(n) for n in missing) or 'comparison'} "
                         "(augment.strategies)"])
    doc.table(["check", "result", "detail"], rows, "Five checks on the generated healthy images (95% CIs)")
    if any("psnr_blur" in r for r in cb.get("validation", [])):
        _quality_table(ctx, cb["validation"])
    _baselines_figure(ctx)
    if ca and ca.get("per_sigma"):
        doc.table(["σ", "n", "predicted healthy"], [[f"{r['sigma']:g}", r["n"], _ci_text(r)] for r in ca["per_sigma"]],
                  "Check (a) per noise level")
    ctx.results["augment_checks"] = checks


def strategies_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Table 2: imbalance strategies")
    table = ctx.required("strategies.json", "strategy comparison", "medauc strategies")
    if not table:
        return
    ev = table.get("evaluation")
    meaning = {
        "balanced": "the original data", "restoration": "the study's augmentation",
        "duplicate": "healthy images repeated to the same count",
        "classic": "healthy images flipped, rotated and intensity-jittered to the same count",
        "weighted_loss": "original data, class-weighted loss",
    }
    run = list(dict.fromkeys(r["strategy"] for r in table.get("rows", [])))
    doc.p(f"The same model ({table.get('model')}), split, test set and seeds under each way of handling the healthy-class imbalance: "
          + "; ".join(f"{n} = {meaning.get(n, n)}" for n in run) + ".")
    counts = {}
    for r in table.get("rows", []):
        counts.setdefault(r["strategy"], [r.get("n_train"), r.get("n_train_healthy"), r.get("imbalance")])
    doc.table(["strategy", "training images", "healthy", "loss"], [[k] + v for k, v in counts.items()], "Training sets")
    if ev and ev.get("models"):
        ctx.results["table2"] = metrics_table(doc, ev, "Table 2: test-set performance by strategy", label="strategy")
    tests = [t for t in table.get("paired_tests", []) if t.get("metric") in ("accuracy", "auc_macro", "screening_auc", "screening_sensitivity", "screening_specificity")]
    reference = table.get("reference", "restoration")
    if not tests:
        names = list(counts)
        why = (f"only one strategy ({names[0]}) was trained: there is nothing to compare it with" if len(names) == 1
               else f"'{reference}' is not among the strategies ({', '.join(names)})" if reference not in names
               else "there are no paired tests in strategies.json")
        doc.p(f"No paired tests against {reference}: {why}.", "note")
    if tests:
        seeds = sorted({str(t.get("seed")) for t in tests})
        tests = [t for t in tests if str(t.get("seed")) == seeds[0]]
        doc.table(["strategy", "metric", "strategy − restoration", "95% CI", "p", "p (Holm)", "test", "detectable", "significant"],
                  [[t["strategy"], t["metric"], fmt(t.get("difference")), fmt_ci(t.get("difference"), t.get("ci_low"), t.get("ci_high")),
                    fmt_p(t.get("p_value")), fmt_p(t.get("p_holm")), t.get("test"),
                    "n/a" if t.get("note") else fmt_detectable(t.get("detectable")), verdict(t.get("significant"), t.get("note"))]
                   for t in tests],
                  f"Paired tests of each strategy against restoration (seed {seeds[0]}; 95% CI {ci_unit(ev)}; detectable: the "
                  "smallest difference the test could detect with "
                  f"{(ev or {}).get('power', 0.8):.0%} power)")
        assessability_note(doc, [(f"{t['metric']} ({t['strategy']})", t.get("note")) for t in tests])


# ----------------------------------------------------------------------------- explanations


def explain_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Explanations: Grad-CAM and lesion localisation")
    ex = ctx.required("explain.json", "explanations", "medauc explain")
    if not ex:
        return
    doc.p(f"Class-activation maps for the true class on {ex.get('n_images')} test images "
          f"({ex.get('n_with_mask')} with a lesion mask; {ex.get('sample', '')}). Each model is compared with its "
          "randomised twin (same architecture, random weights; Adebayo et al. 2018): a map that explains the model "
          "should localise clearly better than the twin's.")
    rows, out = [], []
    for model, m in ex.get("models", {}).items():
        for method, mm in m.get("methods", {}).items():
            tr = (mm.get("trained") or {}).get("all", {})
            tw = (mm.get("random_twin") or {}).get("all", {})
            sanity = mm.get("sanity") or {}
            rows.append([model, method] + [fmt_est(d.get(k), 3) for k in ("pointing_game",) for d in (tr, tw)]
                        + [fmt_est(d.get(k), 3) for k in ("energy_ratio",) for d in (tr, tw)] + [sanity.get("verdict", "n/a")])
            out.append({"model": model, "method": method, "trained": tr, "random_twin": tw, "verdict": sanity.get("verdict")})
    doc.table(["model", "method", "pointing game", "… random twin", "energy ratio", "… random twin", "verdict"], rows,
              "Localisation against lesion masks, pooled over tumour classes (mean, 95% bootstrap CI)")
    by_class_rows = []
    for model, m in ex.get("models", {}).items():
        for method, mm in m.get("methods", {}).items():
            for cls, sc in ((mm.get("trained") or {}).get("by_class") or {}).items():
                pg, er = sc.get("pointing_game") or {}, sc.get("energy_ratio") or {}
                by_class_rows.append([model, method, cls, fmt_est(pg, 3), fmt_est(er, 3), pg.get("n")])
    if by_class_rows:
        doc.table(["model", "method", "class", "pointing game", "energy ratio", "n"], by_class_rows, "Localisation per tumour class")
    defs = ex.get("definitions") or {}
    if defs:
        doc.table(["score", "definition"], [[k, v] for k, v in defs.items()], "Localisation scores")
    for method, per_class in (ex.get("panels") or {}).items():
        for cls, rel in per_class.items():
            p = ctx.path(rel)
            if p.exists():
                doc.figure(figures.read_png(p), f"{method}: {cls} test images; for each model the map for the true class "
                           "(and for the predicted class where it differs).", f"cam_{method}_{cls}.png".replace("/", "_"))
    ctx.results["explain"] = out


def definitions_section(ctx: Context) -> None:
    metrics = ctx.json("metrics.json")
    if not metrics:
        return
    ctx.doc.h("Definitions")
    ctx.doc.table(["metric", "definition"], [[k, v] for k, v in metrics.get("definitions", {}).items()],
                  "Every metric in this report")


ALL = [summary_section, data_section, augmentation_section, models_section, strategies_section, explain_section,
       definitions_section, environment_section]
