"""The screening operating threshold: chosen on the validation split, then carried unchanged to any other set.

Two rules (``evaluate.threshold_rule``) choose a threshold ``t`` on the validation file's screening
score (1 - p(negative class); positive means score >= t):

- ``sensitivity`` (default): the largest threshold whose validation sensitivity reaches
  ``evaluate.target_sensitivity`` (:func:`medauc.evaluate.metrics.screening_threshold`);
- ``youden``: the threshold that maximises Youden's J = sensitivity + specificity - 1 on validation
  (the largest such threshold when several tie).

The test set, and any external set, never chooses its own threshold: :func:`operating_point_metrics`
takes the validation-chosen ``t`` and a predictions set and returns sensitivity, specificity, PPV and
NPV at the set's own prevalence and PPV/NPV at clinical prevalences, each with a bootstrap interval
over patients: the ``op_*`` metrics of ``metrics.json``, computed by the same
:class:`~medauc.evaluate.metrics.MetricEngine` on the same resamples for the same seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from medauc.errors import EvaluationError, UndefinedMetricWarning
from medauc.evaluate.bootstrap import bootstrap_many, estimate_cell
from medauc.evaluate.metrics import MetricEngine, screening_threshold
from medauc.evaluate.predictions import Predictions
from medauc.evaluate.prevalence import prevalence_key

THRESHOLD_RULES = ("sensitivity", "youden")
RULE_TEXT = {
    "sensitivity": "largest threshold on 1 - p(negative) with validation sensitivity >= target; positive if score >= threshold",
    "youden": "threshold on 1 - p(negative) maximising Youden's J = sensitivity + specificity - 1 on validation "
              "(the largest of tied ones); positive if score >= threshold",
}


def youden_threshold(val: Predictions) -> tuple[float, float, float]:
    """Threshold t on the validation screening score maximising sensitivity + specificity - 1.

    Every distinct validation score is a candidate (positive means score >= t); among tied maxima the
    largest t (the most specific). Returns (t, sensitivity, specificity) on validation; nan (with a
    warning) without both positives and negatives.
    """
    s = np.asarray(val.screening_score, dtype=np.float64)
    pos = val.positive
    if not pos.any() or pos.all():
        warnings.warn(f"{val.source}: Youden's J needs positive and negative cases, no operating point can be chosen",
                      UndefinedMetricWarning, stacklevel=2)
        return float("nan"), float("nan"), float("nan")
    cand = np.unique(s)  # ascending
    sp, sn = np.sort(s[pos]), np.sort(s[~pos])
    sens = 1.0 - np.searchsorted(sp, cand, side="left") / sp.size  # share of positives with score >= t
    spec = np.searchsorted(sn, cand, side="left") / sn.size  # share of negatives with score < t
    j = sens + spec - 1.0
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[-1])
    return float(cand[best]), float(sens[best]), float(spec[best])


def choose_threshold(val: Predictions, rule: str = "sensitivity", target_sensitivity: float = 0.99) -> dict[str, Any]:
    """The operating point chosen on a validation predictions set: the ``operating_point`` of ``metrics.json``.

    Returns ``{threshold, threshold_rule, target_sensitivity, val_sensitivity, val_specificity,
    val_youden_j, val_file, rule}`` (``rule``: the rule in words). ``threshold`` is nan when the
    validation set cannot choose one (no positives, say).
    """
    if rule == "sensitivity":
        t, sens, spec = screening_threshold(val, target_sensitivity)
    elif rule == "youden":
        if not (0.0 < target_sensitivity <= 1.0):
            raise EvaluationError(f"evaluate.target_sensitivity must be in (0, 1], got {target_sensitivity}")
        t, sens, spec = youden_threshold(val)
    else:
        raise EvaluationError(f"evaluate.threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    return {
        "threshold": t, "threshold_rule": rule, "target_sensitivity": target_sensitivity,
        "val_sensitivity": sens, "val_specificity": spec, "val_youden_j": sens + spec - 1.0,
        "val_file": val.source, "rule": RULE_TEXT[rule],
    }


def threshold_definition(rule: str, target: float) -> str:
    """The ``operating_threshold`` entry of ``metrics.json``'s definitions: how the threshold was chosen, in words."""
    how = (f"the largest threshold whose validation sensitivity reaches evaluate.target_sensitivity = {target:g}"
           if rule == "sensitivity" else
           "the threshold maximising Youden's J = sensitivity + specificity - 1 on validation (the largest of tied ones)")
    return (f"The screening operating threshold (evaluate.threshold_rule = {rule}) is chosen on the validation split of each "
            f"model and seed before the test set is read: {how}; a scan is positive when 1 - p(negative) is at or above it. "
            "It is carried unchanged to the test set (and to any external set): op_* metrics and op_ppv@/op_npv@ are its "
            "sensitivity, specificity and predictive values there.")


def operating_point_metrics(
    pred: Predictions,
    threshold: float,
    prevalences: Sequence[float] = (),
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Screening metrics of any predictions set at a threshold chosen elsewhere (on validation).

    ``pred``: the test set or an external set (n images); ``threshold``: from :func:`choose_threshold`
    on the validation split, never chosen on ``pred``. Intervals: a stratified bootstrap of
    ``n_bootstrap`` resamples over patients (images when ``pred`` names no patients), seeded by
    ``seed`` as ``metrics.json`` is (same seed, same files: the same intervals as its ``op_*``).
    Returns ``{threshold, n, n_patients, prevalence, counts: {tp, fp, tn, fn}, metrics: {sensitivity,
    specificity, ppv, npv (at the set's own prevalence), ppv@<p>, npv@<p>: {value, low, high,
    undefined_share}}}``.
    """
    if not np.isfinite(threshold):
        raise EvaluationError(f"{pred.source}: no operating threshold (got {threshold}); choose one on validation first")
    # The op_* metrics of metrics.json, computed by the same engine on the same resamples (one definition of each).
    engine = MetricEngine(pred, threshold, prevalences)
    names = {"sensitivity": "op_sensitivity", "specificity": "op_specificity", "ppv": "op_ppv", "npv": "op_npv",
             **{f"{k}@{prevalence_key(p)}": f"op_{k}@{prevalence_key(p)}" for p in prevalences for k in ("ppv", "npv")}}
    values = {k: float(v[0]) for k, v in engine.compute(np.ones((1, pred.n))).items() if k in names.values()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reps = bootstrap_many(pred.y, n_bootstrap, seed, {"op": engine.compute}, clusters=pred.subject)["op"]
    pos, called = pred.positive, pred.screening_score >= threshold
    tp, fp = int((pos & called).sum()), int((~pos & called).sum())
    return {
        "threshold": float(threshold),
        "n": pred.n,
        "n_patients": pred.n_subjects,
        "prevalence": float(pos.mean()) if pred.n else float("nan"),
        "counts": {"tp": tp, "fp": fp, "tn": int((~pos).sum()) - fp, "fn": int(pos.sum()) - tp},
        "metrics": {k: estimate_cell(values[m], reps[m], level) for k, m in names.items()},
    }
