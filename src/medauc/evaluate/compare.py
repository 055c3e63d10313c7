"""Evaluate predictions files of several models and seeds (question 1: :mod:`medauc.answers`).

:func:`evaluate_predictions` is the reusable core: ``{model: {seed: test.csv}}`` in, a dict
out with the layout of ``metrics.json`` (see :mod:`medauc.evaluate.command`) plus
``"comparisons"``, the rows of ``comparisons.csv`` (see :mod:`medauc.evaluate.paired`). Every
model must have been evaluated on the same test images (same ids, same labels): the bootstrap
resamples are shared, so every difference between models is paired by image.
:func:`compare_files` does the same for a list of predictions files (``medauc compare``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medauc.answers import TIE, question_one
from medauc.config import Config
from medauc.errors import EvaluationError, UndefinedMetricWarning
from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN, bootstrap_many, estimate_cell, undefined_share
from medauc.evaluate.decision import decision_analysis
from medauc.evaluate.metrics import DEFINITIONS, LOWER_IS_BETTER, MetricEngine, point_metrics
from medauc.evaluate.operating import choose_threshold, threshold_definition
from medauc.evaluate.paired import MIN_CASES, PRIMARY_METRICS, Entry, paired_comparisons, resampling_unit
from medauc.evaluate.predictions import Predictions, read_predictions
from medauc.evaluate.prevalence import prevalence_table

# Metrics summarised over seeds and ranked pairwise.
HEADLINE = [
    "accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "log_loss", "screening_auc",
    "screening_auprc", "screening_sensitivity", "screening_specificity", "op_sensitivity",
    "op_specificity", "brier", "ece",
]


def _load(
    pred_files: Mapping[str, Mapping[int, str | Path]],
    cfg: Config,
    val_files: Mapping[str, Mapping[int, str | Path]] | None,
    check_classes: bool,
) -> list[Entry]:
    ev = cfg.evaluate
    classes = cfg.data.classes if check_classes else None
    entries: list[Entry] = []
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
                # chosen on validation only; the test file below is never consulted for it
                op = {**choose_threshold(val, ev.threshold_rule, ev.target_sensitivity), "val_file": str(val_path)}
            engine = MetricEngine(test, op["threshold"] if op else None, ev.prevalences, ev.calibration_bins)
            entries.append(Entry(model, int(seed), test, engine, op))
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


def _warn_undefined_share(e: Entry) -> None:
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


def _summary(entries: list[Entry], model: str) -> dict[str, Any]:
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


def _rankings(entries: list[Entry], models: list[str], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
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


def _write_curves(entry: Entry, folder: Path) -> dict[str, str]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    from medauc.fileio import write_csv

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
    decision: bool = False,
    keep_entries: bool = False,
) -> dict[str, Any]:
    """Evaluate test predictions files ``{model: {seed: path}}`` with bootstrap CIs and paired comparisons.

    ``keep_entries``: add ``"entries"``, the :class:`~medauc.evaluate.paired.Entry` of every model and seed (their
    point values and bootstrap replicates), for the external sets' comparisons with this set (not JSON).

    ``val_files`` (same layout) give the operating point; ``curves_dir`` (optional) receives
    ``<model>/<seed>/{roc,pr,calibration}.csv``. Returns the ``metrics.json`` layout plus
    ``"comparisons"`` (rows of ``comparisons.csv``). Classes must equal ``cfg.data.classes`` as
    a set when ``check_classes``. ``decision``: add ``"decision"``, the decision curve analysis of every
    seed (``{seed: decision_analysis(...)}``, :mod:`medauc.evaluate.decision`).
    """
    ev = cfg.evaluate
    if not (0.0 < ev.level < 1.0):
        raise EvaluationError(f"evaluate.level must be between 0 and 1, got {ev.level}")
    if ev.primary_metric not in PRIMARY_METRICS:
        raise EvaluationError(f"evaluate.primary_metric must be one of {', '.join(PRIMARY_METRICS)}, got {ev.primary_metric!r}")
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
    comparisons = paired_comparisons(entries, models, ev.level, ev.power, ev.primary_metric)
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
    decisions = _decision(entries, cfg) if decision else None
    definitions = dict(DEFINITIONS)
    definitions["operating_threshold"] = threshold_definition(ev.threshold_rule, ev.target_sensitivity)
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
    definitions["unit"] = (
        "Every interval and test of Tables 1 and 2, and the intervals of checks (a) and (e) of the generated images, are "
        "over patients (a patient bootstrap; Obuchowski's clustered DeLong), so correlated slices of one patient count "
        "once; check (d) resamples the source images and the Grad-CAM scores resample images."
        if ref.subject is not None else
        "No patient ids are known: every interval and test is over images (checks (a) and (e): Wilson's interval over "
        "images and a bootstrap over source images), which is too narrow when several images come from one patient."
    )
    definitions["se"] = ("Standard error of a paired difference: sqrt(var_a + var_b - 2 cov) for DeLong, the standard "
                         "deviation of the bootstrap differences otherwise.")
    definitions["family"] = (
        f"Holm's correction runs within one family: the comparisons of the primary metric ({ev.primary_metric}, "
        "evaluate.primary_metric, fixed before the data were seen) between every pair of models in one seed are the "
        "primary family; every other metric's pairs form a secondary family of their own. Questions 1 and 3 and Table 1's "
        "verdicts rest on the primary family (question 1 also on accuracy's)."
    )
    definitions["detectable"] = (
        f"Smallest difference the test could detect with {ev.power:.0%} power at the level its verdict uses: Bonferroni's "
        f"two-sided alpha/m ({1 - ev.level:.2g}/m, m = the assessable tests of its Holm family), the one-number bound "
        "of Holm's correction: (z_(1-alpha/2m) + z_power) x se. A difference above it is (about) always significant; a "
        "'not significant' difference below it says the test set is too small, not that the models are equal. A zero "
        "se (both models constant, or both perfect) is not assessable, never 'detectable 0'."
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
        "unit": resampling_unit(ref),
        "n_images": ref.n,
        "n_patients": ref.n_subjects,
        "power": ev.power,
        "prevalences": list(ev.prevalences),
        "definitions": definitions,
        "models": out_models,
        "rankings": _rankings(entries, models, summaries),
        "primary_metric": ev.primary_metric,
        "question_1": question_one(summaries, comparisons, models, ev.primary_metric, ev.level),
        "comparisons": comparisons,
        **({"decision": decisions} if decisions is not None else {}),
        **({"entries": entries} if keep_entries else {}),
    }


def _decision(entries: list[Entry], cfg: Config) -> dict[str, Any]:
    """Decision curve analysis of the test set (:mod:`medauc.evaluate.decision`), every model of each seed together.

    ``{seed: decision_analysis(...)}``: the same resamples as the metrics (same seed, same test images).
    """
    ev = cfg.evaluate
    seeds = sorted({e.seed for e in entries})
    out: dict[str, Any] = {}
    for seed in seeds:
        preds = {e.model: e.test for e in entries if e.seed == seed}
        out[str(seed)] = decision_analysis(preds, ev.prevalences, ev.decision_thresholds, ev.n_bootstrap, ev.level, cfg.seed)
    return out


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
    "n_patients", "power", "primary_metric", "models", "comparisons", "question_1"}``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from medauc.evaluate import compare_files
    >>> labels = ["healthy"] * 6 + ["tumour"] * 6
    >>> p_tumour = {"a": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.45, 0.55, 0.7, 0.8, 0.9, 0.95],
    ...             "b": [0.2, 0.1, 0.4, 0.3, 0.6, 0.5, 0.35, 0.45, 0.5, 0.7, 0.6, 0.8]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = [Path(tmp) / f"{name}.csv" for name in p_tumour]
    ...     for path, probs in zip(paths, p_tumour.values()):
    ...         rows = [f"{i},{c},{1 - p:.2f},{p:.2f}" for i, (c, p) in enumerate(zip(labels, probs))]
    ...         _ = path.write_text("\\n".join(["image_id,label,prob_healthy,prob_tumour", *rows]))
    ...     result = compare_files(paths, n_bootstrap=200)
    >>> round(result["models"]["a"]["screening_auc"]["value"], 4)
    0.9167
    >>> row = next(r for r in result["comparisons"] if r["metric"] == "screening_auc")
    >>> row["model_a"], row["model_b"], row["test"], round(row["difference"], 4), round(row["p_value"], 3)
    ('a', 'b', 'delong', 0.1111, 0.157)
    """
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
        **{k: result[k] for k in ("unit", "n_images", "n_patients", "power", "primary_metric")},
        "models": {n: result["models"][n]["seeds"]["0"]["metrics"] for n in names},
        "comparisons": result["comparisons"],
        "question_1": result["question_1"],
    }
