"""Paired comparisons of models on the same test images: which test for which metric, Holm's correction.

Comparison tables (how the report groups the comparisons):

- ``four_class``: accuracy, balanced accuracy, macro AUC, macro F1, log loss (paired bootstrap);
- ``per_class_auc``: each one-vs-rest AUC (DeLong);
- ``per_class``: per-class sensitivity, specificity, PPV (paired bootstrap);
- ``screening``: screening AUC (DeLong), AUPRC, sensitivity, specificity, PPV, NPV, F1 (bootstrap);
- ``operating_point``: the same at the validation-chosen threshold (bootstrap), when val files exist;
- ``calibration``: Brier, ECE, screening Brier and ECE (bootstrap).

Families (Holm's correction runs within one family): the pre-specified primary analysis is the
comparisons of ``evaluate.primary_metric`` (default macro AUC) between every pair of models, in one
seed; ``family`` "primary". Every other metric's pairs, in one seed, form a family of their own,
``family`` "secondary": no other metric dilutes the primary test, and a secondary verdict says
nothing about the primary question. ``family_size`` is the number of assessable tests in the family.

A comparison is *not assessable* (``significant`` None, ``note`` says why, left out of Holm) when
the metric is undefined, rests on a group of fewer than :data:`MIN_CASES` test images (or patients,
when they are known), is undefined
in more than :data:`~medauc.evaluate.bootstrap.UNDEFINED_SHARE_WARN` of the resamples, its
difference has no variability (a zero standard error: both models constant, or both perfect), every
resample gives the same non-zero difference, or (bootstrap) the smallest p-value the resamples can
give, 2 / (B + 1), is above the family's first Holm threshold alpha / m: a "yes" or "no" there
would be an artefact of the data or of the number of resamples.

When the predictions files name each image's patient (``subject``), the bootstrap resamples
patients and the DeLong tests use Obuchowski's clustered variance: every interval and p-value is at
the level of patients (``unit`` "patients" in every output). Every comparison also gives ``se``, the
standard error of its difference, and ``detectable``, the smallest difference this test set could
detect at ``evaluate.power`` at the level its verdict uses: Bonferroni's alpha / m of its family, the
one-number bound of Holm's first step (Holm rejects whatever Bonferroni rejects), so a difference
above ``detectable`` is (about) never "not significant" (see :mod:`medauc.evaluate.power`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN, paired_p_value, percentile_interval, undefined_share
from medauc.evaluate.delong import delong_test
from medauc.evaluate.metrics import MetricEngine
from medauc.evaluate.power import detectable_difference
from medauc.evaluate.predictions import Predictions

COMPARISON_FIELDS = [
    "table", "seed", "metric", "model_a", "model_b", "value_a", "value_b", "difference",
    "ci_low", "ci_high", "p_value", "p_holm", "test", "significant", "note",
    "se", "detectable", "unit", "n_patients", "family", "family_size",
]
PRIMARY_METRICS = ("auc_macro", "screening_auc")  # evaluate.primary_metric: the AUC questions 1 and 3 ask about
# A group of test images (a class, the rest of the test set, the screening positives or negatives)
# smaller than this: a paired test on a metric that rests on it is not assessable.
MIN_CASES = 5


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order); nan p-values stay nan and do not count."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


def comparison_tables(classes: Sequence[str], has_operating_point: bool) -> dict[str, list[tuple[str, str]]]:
    """table -> [(metric, test)] with test "delong" or "paired_bootstrap"."""
    bs = "paired_bootstrap"
    tables = {
        "four_class": [(m, bs) for m in ("accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "log_loss")],
        "per_class_auc": [(f"auc_{c}", "delong") for c in classes],
        "per_class": [(f"{m}_{c}", bs) for c in classes for m in ("sensitivity", "specificity", "ppv")],
        "screening": [("screening_auc", "delong")]
        + [(f"screening_{m}", bs) for m in ("auprc", "sensitivity", "specificity", "ppv", "npv", "f1")],
        "calibration": [(m, bs) for m in ("brier", "ece", "screening_brier", "screening_ece")],
    }
    if has_operating_point:
        tables["operating_point"] = [(f"op_{m}", bs) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")]
    return tables


@dataclass
class Entry:
    """One model and seed: its test predictions, their metric engine, point values and bootstrap replicates."""

    model: str
    seed: int
    test: Predictions
    engine: MetricEngine
    operating_point: dict[str, Any] | None
    values: dict[str, float] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


PER_CLASS_PREFIXES = ("auc", "sensitivity", "specificity", "ppv", "f1")
MACRO_METRICS = ("balanced_accuracy", "auc_macro", "f1_macro")


def metric_groups(metric: str, pred: Predictions, patients: bool = False) -> dict[str, int]:
    """The groups of test images a metric's estimate rests on, with their sizes: a class and the rest
    for per-class metrics, positives and negatives for screening metrics, every class for macro metrics,
    else the whole test set. ``patients``: sizes in distinct patients instead of images (needs subjects)."""
    def size(mask: np.ndarray) -> int:
        return int(np.unique(pred.subject[mask]).size) if patients and pred.subject is not None else int(mask.sum())

    for i, c in enumerate(pred.classes):
        if metric in {f"{m}_{c}" for m in PER_CLASS_PREFIXES}:
            return {c: size(pred.y == i), f"not {c}": size(pred.y != i)}
    if metric.startswith(("screening_", "op_")):
        neg = pred.classes[pred.negative]
        return {f"not {neg} (positive)": size(pred.positive), neg: size(~pred.positive)}
    if metric in MACRO_METRICS:
        return {c: size(pred.y == i) for i, c in enumerate(pred.classes)}
    return {"test set": size(np.ones(pred.n, dtype=bool))}


def _not_assessable(row: dict[str, Any], pred: Predictions, d: np.ndarray | None) -> str:
    """Why a paired test cannot be trusted on these data (a sentence fragment), or "" when it can.

    ``d``: the bootstrap replicates of the difference (None for DeLong).
    """
    if not (np.isfinite(row["value_a"]) and np.isfinite(row["value_b"])):
        return "the metric is undefined for these data"
    small = {g: n for g, n in metric_groups(row["metric"], pred).items() if n < MIN_CASES}
    if small:
        return "too few test images: " + ", ".join(f"{g} has {n}" for g, n in small.items()) + f" (fewer than {MIN_CASES})"
    if pred.subject is not None:
        # the patient bootstrap and Obuchowski's variance rest on the patients, not on their slices
        small = {g: n for g, n in metric_groups(row["metric"], pred, patients=True).items() if n < MIN_CASES}
        if small:
            return ("too few test patients: " + ", ".join(f"{g} has {n}" for g, n in small.items())
                    + f" (fewer than {MIN_CASES})")
    if d is not None:
        share = undefined_share(d)
        if share > UNDEFINED_SHARE_WARN:
            return f"the difference is undefined in {share:.0%} of bootstrap resamples"
    if not (np.isfinite(row["p_value"]) and np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])):
        return "the test gives no p-value or interval for these data"
    if row["se"] == 0:
        return ("the difference has no variability (standard error 0: e.g. both models constant, or both perfect, on "
                "these data), so no test can tell the models apart here")
    if row["ci_low"] == row["ci_high"] and row["difference"] != 0:
        return "every resample gives the same difference (a zero-width interval), so its uncertainty cannot be measured"
    return ""


def resampling_unit(pred: Predictions) -> str:
    """What the intervals and tests resample or model: "patients" when the subjects are known, else "images"."""
    return "images" if pred.subject is None else "patients"


def _compare_pair(a: Entry, b: Entry, table: str, metric: str, test: str, level: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "table": table, "seed": a.seed, "metric": metric, "model_a": a.model, "model_b": b.model,
        "value_a": a.values[metric], "value_b": b.values[metric], "test": test,
        "unit": resampling_unit(a.test), "n_patients": a.test.n_subjects,
    }
    d = None
    nan = float("nan")
    if not (np.isfinite(row["value_a"]) and np.isfinite(row["value_b"])):
        # undefined for these data (already warned when the metric was computed): no test
        row.update(difference=nan, ci_low=nan, ci_high=nan, p_value=nan, se=nan)
    elif test == "delong":
        if metric == "screening_auc":
            y, sa, sb = a.test.positive, a.test.screening_score, b.test.screening_score
        else:
            c = a.test.classes.index(metric[len("auc_"):])
            y, sa, sb = a.test.y == c, a.test.probs[:, c], b.test.probs[:, c]
        r = delong_test(y, sa, sb, level=level, clusters=a.test.subject)
        row.update(difference=r.difference, ci_low=r.ci_low, ci_high=r.ci_high, p_value=r.p_value, se=r.se)
    else:
        d = a.replicates[metric] - b.replicates[metric]
        low, high = percentile_interval(d, level)
        finite = d[np.isfinite(d)]
        row.update(difference=a.values[metric] - b.values[metric], ci_low=low, ci_high=high, p_value=paired_p_value(d),
                   se=float(np.std(finite, ddof=1)) if finite.size > 1 else nan)
    why = _not_assessable(row, a.test, d)
    row["note"] = f"not assessable: {why}" if why else ""
    row["_resamples"] = int(np.isfinite(d).sum()) if d is not None else None
    return row


def _resolution_note(row: dict[str, Any], m: int, level: float) -> str:
    """Why a bootstrap test cannot reach its family's first Holm threshold alpha / m, or "" when it can."""
    b = row.pop("_resamples", None)
    if b is None or m < 1 or row["note"]:
        return row["note"]
    floor = 2 / (b + 1)
    if floor < (1 - level) / m:
        return ""
    return (f"not assessable: with {b} bootstrap resamples the smallest p-value is {floor:.2g}, above the first Holm "
            f"threshold {1 - level:.2g}/{m} of its family; raise evaluate.n_bootstrap to at least {int(np.ceil(2 * m / (1 - level)))}")


def holm_family(rows: list[dict[str, Any]], family: str, level: float, power: float) -> None:
    """Holm's correction over the assessable rows of one family (in place): ``p_holm``, ``significant``,
    ``family``, ``family_size`` and ``detectable`` at Bonferroni's alpha / m (m = ``family_size``)."""
    m = sum(not r["note"] for r in rows)
    for r in rows:
        r["note"] = _resolution_note(r, m, level)
    m = sum(not r["note"] for r in rows)
    adj = holm([np.nan if r["note"] else r["p_value"] for r in rows])
    bonferroni = 1 - (1 - level) / max(m, 1)
    for r, p in zip(rows, adj):
        r["family"], r["family_size"] = family, m
        r["p_holm"] = float(p)
        r["significant"] = None if r["note"] else bool(np.isfinite(p) and p < 1 - level)
        # a zero SE is not assessable (its note says so), never "detectable 0"
        r["detectable"] = detectable_difference(r["se"], bonferroni, power) if r["se"] else float("nan")


def paired_comparisons(entries: list[Entry], models: list[str], level: float, power: float = 0.8,
                       primary: str = "auc_macro") -> list[dict[str, Any]]:
    """Rows of ``comparisons.csv`` (:data:`COMPARISON_FIELDS`): every pair of ``models`` on every metric of
    every table, in each seed; Holm's correction within one metric and seed (a family: ``primary``'s is
    the primary one, every other metric's secondary)."""
    rows: list[dict[str, Any]] = []
    by_key = {(e.model, e.seed): e for e in entries}
    seeds = sorted({e.seed for e in entries})
    classes = entries[0].test.classes
    for seed in seeds:
        present = [m for m in models if (m, seed) in by_key]
        # op_* metrics exist only where validation chose a threshold (none: no val.csv, or no positive case in it)
        has_op = all("op_sensitivity" in by_key[(m, seed)].values for m in present)
        for table, metrics in comparison_tables(classes, has_op).items():
            for metric, test in metrics:
                family = [_compare_pair(by_key[(ma, seed)], by_key[(mb, seed)], table, metric, test, level)
                          for ma, mb in itertools.combinations(present, 2)]
                holm_family(family, "primary" if metric == primary else "secondary", level, power)
                rows.extend(family)
    return rows
