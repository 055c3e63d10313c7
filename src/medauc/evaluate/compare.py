"""Evaluate predictions files of several models and seeds; paired comparisons; the study's first question.

:func:`evaluate_predictions` is the reusable core: ``{model: {seed: test.csv}}`` in, a dict
out with the layout of ``metrics.json`` (see :mod:`medauc.evaluate.command`) plus
``"comparisons"``, the rows of ``comparisons.csv``. Every model must have been evaluated on
the same test images (same ids, same labels): the bootstrap resamples are shared, so every
difference between models is paired by image.

Comparison tables (Holm's correction runs within one table and one seed):

- ``four_class``: accuracy, balanced accuracy, macro AUC, macro F1, log loss (paired bootstrap);
- ``per_class_auc``: each one-vs-rest AUC (DeLong);
- ``per_class``: per-class sensitivity, specificity, PPV (paired bootstrap);
- ``screening``: screening AUC (DeLong), AUPRC, sensitivity, specificity, PPV, NPV, F1 (bootstrap);
- ``operating_point``: the same at the validation-chosen threshold (bootstrap), when val files exist;
- ``calibration``: Brier, ECE, screening Brier and ECE (bootstrap).

A comparison is *not assessable* (``significant`` None, ``note`` says why, left out of Holm) when
the metric is undefined, rests on a group of fewer than :data:`MIN_CASES` test images (or patients,
when they are known), is undefined
in more than :data:`~medauc.evaluate.bootstrap.UNDEFINED_SHARE_WARN` of the resamples, or every
resample gives the same non-zero difference: a "yes" or "no" there would be an artefact of the data.

When the predictions files name each image's patient (``subject``), the bootstrap resamples
patients and the DeLong tests use Obuchowski's clustered variance: every interval and p-value is at
the level of patients (``unit`` "patients" in every output). Every comparison also gives ``se``, the
standard error of its difference, and ``detectable``, the smallest difference this test set could
detect at ``evaluate.power`` (see :mod:`medauc.evaluate.power`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medauc.config import Config
from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import (
    UNDEFINED_SHARE_WARN,
    bootstrap_many,
    estimate_cell,
    paired_p_value,
    percentile_interval,
    undefined_share,
)
from medauc.evaluate.delong import UndefinedMetricWarning, delong_test
from medauc.evaluate.metrics import (
    DEFINITIONS,
    LOWER_IS_BETTER,
    MetricEngine,
    Predictions,
    point_metrics,
    read_predictions,
    screening_threshold,
)
from medauc.evaluate.power import detectable_difference
from medauc.evaluate.prevalence import prevalence_table

COMPARISON_FIELDS = [
    "table", "seed", "metric", "model_a", "model_b", "value_a", "value_b", "difference",
    "ci_low", "ci_high", "p_value", "p_holm", "test", "significant", "note",
    "se", "detectable", "unit", "n_patients",
]
# A group of test images (a class, the rest of the test set, the screening positives or negatives)
# smaller than this: a paired test on a metric that rests on it is not assessable.
MIN_CASES = 5
# Differences this small are float rounding of equal values (e.g. means of the same counts).
TIE = 1e-12
# Metrics summarised over seeds and ranked pairwise.
HEADLINE = [
    "accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "log_loss", "screening_auc",
    "screening_auprc", "screening_sensitivity", "screening_specificity", "op_sensitivity",
    "op_specificity", "brier", "ece",
]


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
class _Entry:
    model: str
    seed: int
    test: Predictions
    engine: MetricEngine
    operating_point: dict[str, Any] | None
    values: dict[str, float] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


def _load(
    pred_files: Mapping[str, Mapping[int, str | Path]],
    cfg: Config,
    val_files: Mapping[str, Mapping[int, str | Path]] | None,
    check_classes: bool,
) -> list[_Entry]:
    ev = cfg.evaluate
    classes = cfg.data.classes if check_classes else None
    entries: list[_Entry] = []
    ref: Predictions | None = None
    for model, seeds in pred_files.items():
        if not seeds:
            raise EvaluationError(f"model {model!r} has no predictions files")
        for seed, path in sorted(seeds.items()):
            test = read_predictions(path, cfg.data.negative_class, classes, ev.renormalise)
            if ref is None:
                ref = test
            else:
                test = _align(test, ref)
            op = None
            val_path = (val_files or {}).get(model, {}).get(seed)
            if val_path is not None:
                val = read_predictions(val_path, cfg.data.negative_class, classes, ev.renormalise).with_classes(ref.classes)
                t, vsens, vspec = screening_threshold(val, ev.target_sensitivity)
                op = {
                    "threshold": t, "target_sensitivity": ev.target_sensitivity,
                    "val_sensitivity": vsens, "val_specificity": vspec, "val_file": str(val_path),
                    "rule": "largest threshold on 1 - p(negative) with validation sensitivity >= target; positive if score >= threshold",
                }
            engine = MetricEngine(test, op["threshold"] if op else None, ev.prevalences, ev.calibration_bins)
            entries.append(_Entry(model, int(seed), test, engine, op))
    if not entries:
        raise EvaluationError("no predictions files were given to evaluate")
    return entries


def _align(test: Predictions, ref: Predictions) -> Predictions:
    """``test`` in ``ref``'s class and row order; refuse different image sets or labels."""
    test = test.with_classes(ref.classes)
    a, b = set(ref.image_ids.tolist()), set(test.image_ids.tolist())
    if a != b:
        only_ref = sorted(a - b)[:3]
        only_test = sorted(b - a)[:3]
        raise EvaluationError(
            f"{test.source} and {ref.source} hold different test images ({len(b)} vs {len(a)} ids; "
            f"only in the first: {only_test}, only in the second: {only_ref}); paired comparisons need "
            "predictions for the same images: re-run prediction on the same test split"
        )
    test = test.reorder(ref.image_ids)
    _same_per_image(test, ref, "labels", np.asarray(test.classes)[test.y], np.asarray(ref.classes)[ref.y], str)
    if (test.subject is None) != (ref.subject is None):
        has, lacks = (test, ref) if ref.subject is None else (ref, test)
        raise EvaluationError(
            f"{has.source} names each image's patient (subject column) but {lacks.source} does not; paired "
            "comparisons must resample the same units: re-run prediction so that both files carry the subject column"
        )
    if test.subject is not None:
        _same_per_image(test, ref, "patients (subject)", test.subject, ref.subject, repr)
    return test


def _same_per_image(test: Predictions, ref: Predictions, what: str, a: np.ndarray, b: np.ndarray,
                    show: Callable[[Any], str]) -> None:
    """EvaluationError naming the first image where the aligned files disagree on ``what``."""
    differ = np.flatnonzero(a != b)
    if differ.size:
        i = differ[0]
        raise EvaluationError(
            f"{test.source} and {ref.source} give different {what} for {differ.size} images "
            f"(e.g. {ref.image_ids[i]}: {show(a[i])} vs {show(b[i])}); they come from different manifests"
        )


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
    if row["ci_low"] == row["ci_high"] and row["difference"] != 0:
        return "every resample gives the same difference (a zero-width interval), so its uncertainty cannot be measured"
    return ""


def _warn_undefined_share(e: _Entry) -> None:
    """Warn about defined metrics whose bootstrap replicates are often undefined (their intervals are conditional)."""
    shares = {k: undefined_share(r) for k, r in e.replicates.items() if np.isfinite(e.values.get(k, np.nan))}
    flagged = {k: v for k, v in shares.items() if v > UNDEFINED_SHARE_WARN}
    if flagged:
        warnings.warn(
            f"{e.test.source}: bootstrap intervals left out the resamples where the metric is undefined: "
            + ", ".join(f"{k} {v:.0%}" for k, v in flagged.items())
            + f" (more than {UNDEFINED_SHARE_WARN:.0%}; typically a class predicted or present too rarely); "
            "these intervals describe only the other resamples",
            UndefinedMetricWarning, stacklevel=3,
        )


def _unit(pred: Predictions) -> str:
    """What the intervals and tests resample or model: "patients" when the subjects are known, else "images"."""
    return "images" if pred.subject is None else "patients"


def _compare_pair(a: _Entry, b: _Entry, table: str, metric: str, test: str, level: float, power: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "table": table, "seed": a.seed, "metric": metric, "model_a": a.model, "model_b": b.model,
        "value_a": a.values[metric], "value_b": b.values[metric], "test": test,
        "unit": _unit(a.test), "n_patients": a.test.n_subjects,
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
    row["detectable"] = detectable_difference(row["se"], level, power)
    why = _not_assessable(row, a.test, d)
    row["note"] = f"not assessable: {why}" if why else ""
    return row


def _comparisons(entries: list[_Entry], models: list[str], level: float, power: float = 0.8) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_key = {(e.model, e.seed): e for e in entries}
    seeds = sorted({e.seed for e in entries})
    classes = entries[0].test.classes
    for seed in seeds:
        present = [m for m in models if (m, seed) in by_key]
        has_op = all(by_key[(m, seed)].operating_point is not None for m in present)
        for table, metrics in comparison_tables(classes, has_op).items():
            table_rows = [
                _compare_pair(by_key[(ma, seed)], by_key[(mb, seed)], table, metric, test, level, power)
                for metric, test in metrics
                for ma, mb in itertools.combinations(present, 2)
            ]
            # Holm over the assessable tests only; the others get no adjusted p and no verdict (None).
            adj = holm([np.nan if r["note"] else r["p_value"] for r in table_rows])
            for r, p in zip(table_rows, adj):
                r["p_holm"] = float(p)
                r["significant"] = None if r["note"] else bool(np.isfinite(p) and p < 1 - level)
            rows.extend(table_rows)
    return rows


def _summary(entries: list[_Entry], model: str) -> dict[str, Any]:
    mine = [e for e in entries if e.model == model]
    out: dict[str, Any] = {}
    for metric in mine[0].values:
        vals = np.array([e.values.get(metric, np.nan) for e in mine])
        out[metric] = {
            "mean": float(np.mean(vals)),
            "sd": float(np.std(vals, ddof=1)) if vals.size > 1 else float("nan"),
            "n_seeds": int(vals.size),
            "values": {str(e.seed): e.values.get(metric, float("nan")) for e in mine},
        }
    return out


def _better(metric: str, a: float, b: float) -> float:
    """1 if a is better than b on ``metric``, 0 if worse, 0.5 if tied, nan if undefined."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("nan")
    if abs(a - b) <= TIE:
        return 0.5
    return float((a < b) if metric in LOWER_IS_BETTER else (a > b))


def _rankings(entries: list[_Entry], models: list[str], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each headline metric and pair: the pair ordered by seed mean, and the share of seeds agreeing."""
    by_key = {(e.model, e.seed): e for e in entries}
    rows = []
    for metric in HEADLINE:
        if any(metric not in summaries[m] for m in models):
            continue
        for ma, mb in itertools.combinations(models, 2):
            if _better(metric, summaries[mb][metric]["mean"], summaries[ma][metric]["mean"]) == 1.0:  # a = the better
                ma, mb = mb, ma
            common = sorted({s for (m, s) in by_key if m == ma} & {s for (m, s) in by_key if m == mb})
            wins = [_better(metric, by_key[(ma, s)].values.get(metric, np.nan), by_key[(mb, s)].values.get(metric, np.nan)) for s in common]
            wins = [w for w in wins if np.isfinite(w)]
            rows.append({
                "metric": metric, "model_a": ma, "model_b": mb,
                "mean_a": summaries[ma][metric]["mean"], "mean_b": summaries[mb][metric]["mean"],
                "n_seeds": len(wins),
                "fraction_seeds_a_better": float(np.mean(wins)) if wins else float("nan"),
            })
    return rows


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


def _claim(metric_label: str, metric: str, winner: str, loser: str, rows: list[dict[str, Any]],
           means: dict[str, float], n_seeds: int, level: float) -> tuple[str, bool]:
    """One plain sentence about ``winner`` beating ``loser`` on ``metric``, and whether it is significant in every seed."""
    diff = means[winner] - means[loser]
    verb = "lower" if metric in LOWER_IS_BETTER else "higher"
    mine = [r for r in rows if r["metric"] == metric and {r["model_a"], r["model_b"]} == {winner, loser}]
    sig = [r for r in mine if r["significant"]]
    if n_seeds == 1 and mine:
        r = mine[0]
        holm_note = f", Holm-adjusted {r['p_holm']:.2g}" if np.isfinite(r["p_holm"]) and r["p_holm"] != r["p_value"] else ""
        verdict = (r["note"] or "not assessable") if r["significant"] is None else "significant" if r["significant"] else (
            "not significant" + detectable_clause(r.get("detectable")))
        return (
            f"{winner}'s {metric_label} is {verb} than {loser}'s by {abs(diff):.4f} "
            f"({r['test'].replace('_', ' ')}, {_fmt_p(r['p_value'])}{holm_note}): {verdict}",
            bool(r["significant"]),
        )
    return (
        f"{winner}'s {metric_label} is {verb} than {loser}'s by {abs(diff):.4f} on average over {n_seeds} seeds; "
        f"the difference is significant (Holm-adjusted p < {1 - level:.2g}) in {len(sig)} of {len(mine)} seeds",
        bool(mine) and len(sig) == len(mine),
    )


def detectable_clause(detectable: Any) -> str:
    """" (this test set could detect only differences of 0.031 or more)", or "" when undefined."""
    if detectable is None or not np.isfinite(detectable):
        return ""
    return f" (this test set could detect only differences of {detectable:.3g} or more)"


def _ranked(values: dict[str, float]) -> list[str]:
    """Names by value, highest first; undefined (nan) values last."""
    return sorted(values, key=lambda m: (0, -values[m]) if np.isfinite(values[m]) else (1, 0.0))


def _best(label: str, ranked: list[str], values: dict[str, float]) -> str:
    top = ranked[0]
    if not np.isfinite(values[top]):
        return f"{label[0].upper()}{label[1:]} is undefined for these data"
    return f"Best by {label}: {top} ({values[top]:.4f})"


def question_one(
    summaries: dict[str, dict[str, Any]], comparisons: list[dict[str, Any]], models: list[str],
    auc_metric: str, level: float,
) -> dict[str, Any]:
    """Do the models that win by accuracy also win by AUC? Rankings, discordant pairs, a plain answer."""
    acc = {m: summaries[m]["accuracy"]["mean"] for m in models}
    auc = {m: summaries[m][auc_metric]["mean"] for m in models}
    n_seeds = min(summaries[m]["accuracy"]["n_seeds"] for m in models)
    by_acc = _ranked(acc)
    by_auc = _ranked(auc)
    auc_label = "macro AUC" if auc_metric == "auc_macro" else "screening AUC" if auc_metric == "screening_auc" else auc_metric
    if len(models) < 2:
        # Same keys as below, so that every reader (report, CLI) handles one model like several.
        return {
            "auc_metric": auc_metric, "ranked_by_accuracy": by_acc, "ranked_by_auc": by_auc,
            "accuracy": acc, "auc": auc, "n_seeds": n_seeds, "pairs": [],
            "answer": f"Only one model was evaluated ({models[0]}): there is nothing to rank or compare.",
        }
    pairs = []
    for ma, mb in itertools.combinations(models, 2):
        if not all(np.isfinite(v) for v in (acc[ma], acc[mb], auc[ma], auc[mb])):
            continue
        d_acc, d_auc = acc[ma] - acc[mb], auc[ma] - auc[mb]
        if abs(d_acc) > TIE and abs(d_auc) > TIE and d_acc * d_auc < 0:
            acc_win, acc_lose = (ma, mb) if acc[ma] > acc[mb] else (mb, ma)
            s_acc, sig_acc = _claim("accuracy", "accuracy", acc_win, acc_lose, comparisons, acc, n_seeds, level)
            s_auc, sig_auc = _claim(auc_label, auc_metric, acc_lose, acc_win, comparisons, auc, n_seeds, level)
            pairs.append({
                "accuracy_winner": acc_win, "auc_winner": acc_lose,
                "accuracy_difference": acc[acc_win] - acc[acc_lose], "auc_difference": auc[acc_lose] - auc[acc_win],
                "accuracy_significant": sig_acc, "auc_significant": sig_auc,
                "sentence": f"{s_acc}; but {s_auc}.",
            })
    second = _best(auc_label, by_auc, auc)
    leaders = f"{_best('accuracy', by_acc, acc)}; {second[0].lower()}{second[1:]}."
    undefined = [m for m in models if not (np.isfinite(acc[m]) and np.isfinite(auc[m]))]
    if not pairs and undefined:
        answer = (f"{leaders} Accuracy or {auc_label} is undefined for {', '.join(undefined)} on these data, "
                  "so the two rankings cannot be compared.")
    elif not pairs:
        answer = f"{leaders} Accuracy and {auc_label} rank the models the same way."
    else:
        n_sig = sum(p["accuracy_significant"] or p["auc_significant"] for p in pairs)
        if n_sig == 0:
            tail = ("none of these differences is significant, so these data do not show that the "
                    f"accuracy ranking and the {auc_label} ranking really differ.")
        else:
            tail = (f"in {n_sig} of them at least one of the two differences is significant, so for those pairs "
                    f"the accuracy winner is not the {auc_label} winner.")
        answer = f"{leaders} Accuracy and {auc_label} rank {len(pairs)} pair(s) of models differently; {tail}"
    return {
        "auc_metric": auc_metric, "ranked_by_accuracy": by_acc, "ranked_by_auc": by_auc,
        "accuracy": acc, "auc": auc, "n_seeds": n_seeds, "pairs": pairs, "answer": answer,
    }


def _write_curves(entry: _Entry, folder: Path) -> dict[str, str]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    from medauc.runs import write_csv

    p = entry.test
    roc_rows, pr_rows = [], []
    curves = [("screening", p.positive, p.screening_score)] + [
        (c, p.y == i, p.probs[:, i]) for i, c in enumerate(p.classes)
    ]
    for name, truth, score in curves:
        if truth.all() or not truth.any():
            continue  # a curve needs both classes; the metric is nan and was warned about
        fpr, tpr, thr = roc_curve(truth, score)
        roc_rows += [{"curve": name, "threshold": t, "fpr": f, "tpr": r} for t, f, r in zip(thr, fpr, tpr)]
        prec, rec, thr = precision_recall_curve(truth, score)
        pr_rows += [{"curve": name, "threshold": t, "recall": r, "precision": q} for t, r, q in zip(np.r_[thr, np.inf], rec, prec)]
    files = {
        "roc": write_csv(folder / "roc.csv", roc_rows, ["curve", "threshold", "fpr", "tpr"]),
        "pr": write_csv(folder / "pr.csv", pr_rows, ["curve", "threshold", "recall", "precision"]),
        "calibration": write_csv(folder / "calibration.csv", entry.engine.reliability(),
                                 ["curve", "bin", "count", "mean_predicted", "observed"]),
    }
    return {k: str(v) for k, v in files.items()}


def evaluate_predictions(
    pred_files: Mapping[str, Mapping[int, str | Path]],
    cfg: Config,
    val_files: Mapping[str, Mapping[int, str | Path]] | None = None,
    curves_dir: str | Path | None = None,
    progress: bool = False,
    check_classes: bool = True,
) -> dict[str, Any]:
    """Evaluate test predictions files ``{model: {seed: path}}`` with bootstrap CIs and paired comparisons.

    ``val_files`` (same layout) give the operating point; ``curves_dir`` (optional) receives
    ``<model>/<seed>/{roc,pr,calibration}.csv``. Returns the ``metrics.json`` layout plus
    ``"comparisons"`` (rows of ``comparisons.csv``). Classes must equal ``cfg.data.classes`` as
    a set when ``check_classes``.
    """
    ev = cfg.evaluate
    if not (0.0 < ev.level < 1.0):
        raise EvaluationError(f"evaluate.level must be between 0 and 1, got {ev.level}")
    if ev.question_auc not in ("auc_macro", "screening_auc"):
        raise EvaluationError(f"evaluate.question_auc must be 'auc_macro' or 'screening_auc', got {ev.question_auc!r}")
    entries = _load(pred_files, cfg, val_files, check_classes)
    models = list(dict.fromkeys(e.model for e in entries))
    ref = entries[0].test
    for e in entries:
        e.values = point_metrics(e.engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reps = bootstrap_many(
            ref.y, ev.n_bootstrap, cfg.seed,
            {(e.model, e.seed): e.engine.compute for e in entries},
            progress=progress, desc="bootstrap", clusters=ref.subject,
        )
    for e in entries:
        e.replicates = reps[(e.model, e.seed)]
        _warn_undefined_share(e)
    comparisons = _comparisons(entries, models, ev.level, ev.power)
    own_prev = float(ref.positive.mean())
    out_models: dict[str, Any] = {m: {"seeds": {}} for m in models}
    for e in entries:
        seed_out: dict[str, Any] = {
            "test_file": e.test.source,
            "n": e.test.n,
            "n_per_class": {c: int(n) for c, n in zip(e.test.classes, np.bincount(e.test.y, minlength=len(e.test.classes)))},
            "n_patients": e.test.n_subjects,
            "n_patients_per_class": _patients_per_class(e.test),
            "metrics": {k: estimate_cell(v, e.replicates[k], ev.level) for k, v in e.values.items()},
            "confusion_matrix": {"rows": "true class", "columns": "arg-max class", "classes": list(e.test.classes),
                                 "counts": e.engine.confusion_matrix().tolist()},
            "operating_point": e.operating_point,
            "prevalence": prevalence_table(e.values, e.replicates, ev.prevalences, own_prev, ev.level),
        }
        if curves_dir is not None:
            seed_out["curves"] = _write_curves(e, Path(curves_dir) / e.model / str(e.seed))
        out_models[e.model]["seeds"][str(e.seed)] = seed_out
    summaries = {m: _summary(entries, m) for m in models}
    for m in models:
        out_models[m]["summary"] = summaries[m]
    definitions = dict(DEFINITIONS)
    if ref.subject is not None:
        definitions["interval"] = (
            "Percentile interval of a patient (cluster) bootstrap: patients resampled with replacement within groups of "
            "patients holding the same classes, every image weighted by how often its patient was drawn; the same "
            "resamples for every model, so comparisons are paired."
        )
        definitions["delong"] = (
            "DeLong's test with Obuchowski's (1997) clustered variance: placement values summed per patient, so "
            "correlated slices of one patient count once; z = (AUC_a - AUC_b) / sd, two-sided normal p."
        )
    definitions["se"] = ("Standard error of a paired difference: sqrt(var_a + var_b - 2 cov) for DeLong, the standard "
                         "deviation of the bootstrap differences otherwise.")
    definitions["detectable"] = (
        f"Smallest difference the test could detect with {ev.power:.0%} power at two-sided alpha {1 - ev.level:.2g} "
        "(before the Holm correction): (z_(1-alpha/2) + z_power) x se; a 'not significant' difference smaller than it "
        "says the test set is too small, not that the models are equal."
    )
    definitions["undefined_share"] = (
        "Share of bootstrap resamples in which the metric is undefined (e.g. a PPV when no image is predicted as the "
        f"class); the interval comes from the other resamples and is flagged above {UNDEFINED_SHARE_WARN:.0%}."
    )
    definitions["not assessable"] = (
        "A paired comparison gets no verdict (significant empty; its note says why) when the metric is undefined, "
        f"rests on a class or group of fewer than {MIN_CASES} test images (or, with patients known, {MIN_CASES} patients), "
        "is undefined in more than "
        f"{UNDEFINED_SHARE_WARN:.0%} of the bootstrap resamples, or every resample gives the same non-zero difference."
    )
    return {
        "schema": "medauc.metrics/1",
        "classes": list(ref.classes),
        "negative_class": ref.classes[ref.negative],
        "test_prevalence": own_prev,
        "level": ev.level,
        "n_bootstrap": ev.n_bootstrap,
        "bootstrap_seed": cfg.seed,
        "unit": _unit(ref),
        "n_images": ref.n,
        "n_patients": ref.n_subjects,
        "power": ev.power,
        "prevalences": list(ev.prevalences),
        "definitions": definitions,
        "models": out_models,
        "rankings": _rankings(entries, models, summaries),
        "question_1": question_one(summaries, comparisons, models, ev.question_auc, ev.level),
        "comparisons": comparisons,
    }


def _patients_per_class(pred: Predictions) -> dict[str, int] | None:
    """Patients holding at least one image of each class; None when the patients are unknown."""
    if pred.subject is None:
        return None
    return {c: int(np.unique(pred.subject[pred.y == i]).size) for i, c in enumerate(pred.classes)}


def _names_for(paths: Sequence[Path]) -> list[str]:
    """Short unique names for files: ``<model>/<seed>`` for predictions/<model>/<seed>/x.csv, else the stem."""
    names = []
    for p in paths:
        parts = p.resolve().parts
        if len(parts) >= 4 and parts[-4] == "predictions":
            names.append(f"{parts[-3]}/{parts[-2]}")
        else:
            names.append(p.stem)
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def compare_files(
    paths: Sequence[str | Path],
    negative_class: str = "healthy",
    level: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
    renormalise: bool = True,
    power: float = 0.8,
) -> dict[str, Any]:
    """Compare predictions files of the same test images (``medauc compare``): per-file metrics with
    CIs and paired tests for every pair. Returns ``{"files", "level", "n_bootstrap", "unit", "n_images",
    "n_patients", "power", "models", "comparisons", "question_1"}``."""
    from medauc.config import replace

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise EvaluationError(f"medauc compare needs at least two predictions files, got {len(paths)}")
    first = read_predictions(paths[0], negative_class, renormalise=renormalise)
    cfg = replace(Config(), **{
        "seed": seed,
        "data.classes": list(first.classes), "data.negative_class": negative_class,
        "evaluate.level": level, "evaluate.n_bootstrap": n_bootstrap, "evaluate.renormalise": renormalise,
        "evaluate.power": power,
    })
    names = _names_for(paths)
    result = evaluate_predictions({n: {0: p} for n, p in zip(names, paths)}, cfg)
    return {
        "files": dict(zip(names, map(str, paths))),
        "level": level,
        "n_bootstrap": n_bootstrap,
        **{k: result[k] for k in ("unit", "n_images", "n_patients", "power")},
        "models": {n: result["models"][n]["seeds"]["0"]["metrics"] for n in names},
        "comparisons": result["comparisons"],
        "question_1": result["question_1"],
    }
