"""Tables shared by the sections: the headline metrics of a ``metrics.json`` (Tables 1 and 2), paired
comparisons, and the notes under a table (comparisons without a verdict, estimates undefined in many
bootstrap resamples)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from medauc.answers import first_seed as _first_seed
from medauc.answers import not_learnt
from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN
from medauc.formatting import ci_unit, fmt, fmt_ci, fmt_detectable, fmt_est, fmt_p, verdict
from medauc.report.document import Document


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
    if "family" in sub.columns:  # the primary family's verdicts first: the ones the study's questions rest on
        sub = sub.sort_values("family", key=lambda f: f != "primary", kind="stable")
    notes = sub["note"] if "note" in sub.columns else pd.Series([None] * len(sub), index=sub.index)
    detectable = sub["detectable"] if "detectable" in sub.columns else pd.Series([None] * len(sub), index=sub.index)
    families = sub["family"] if "family" in sub.columns else pd.Series(["?"] * len(sub), index=sub.index)
    rows = [
        [r.metric, fam, r.model_a, r.model_b, fmt(r.difference), fmt_ci(r.difference, r.ci_low, r.ci_high), fmt_p(r.p_value),
         fmt_p(r.p_holm), r.test, "n/a" if isinstance(note, str) and note else fmt_detectable(det), verdict(r.significant, note)]
        for r, note, det, fam in zip(sub.itertuples(), notes, detectable, families)
    ]
    doc.table(["metric", "family", "A", "B", "A − B", "95% CI", "p", "p (Holm)", "test", "detectable", "significant"], rows, caption)
    assessability_note(doc, [(f"{r.metric} ({r.model_a} vs {r.model_b})", note) for r, note in zip(sub.itertuples(), notes)])
