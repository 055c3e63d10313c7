"""Decision curve analysis of the screening view: net benefit against threshold probability.

Vickers and Elkin (2006): a clinician who would act (refer, image again) when the risk of a tumour
exceeds a threshold probability ``pt`` values a false positive at ``pt / (1 - pt)`` of a true
positive. Acting on the model's screening score (1 - p(negative class); act when score >= pt) has

    NB(pt) = TP/n - FP/n * pt / (1 - pt)          (net true positives per scan)

against two defaults: *treat none* (NB 0) and *treat all* (NB = prev - (1 - prev) pt / (1 - pt)).
At a clinical prevalence pi other than the set's own the true- and false-positive rates are
reweighted (as ``dcurves::dca(prevalence=)`` does for case-control data):

    NB_pi(pt) = sens(pt) pi - (1 - spec(pt)) (1 - pi) pt / (1 - pt)

which equals the plain NB when pi is the set's own prevalence. The score is used as the risk as it
is: a model trained on a tumour-rich mix overstates the risk at pi = 1 in 10,000, so the curve at pi
answers "does acting on score >= pt help in that population?", not "is the score a calibrated risk
there". Every function takes predictions sets (:class:`~medauc.evaluate.predictions.Predictions`),
so it applies to the test set and to any external set alike; intervals come from the patient
bootstrap of :mod:`medauc.evaluate.bootstrap` (the same resamples as ``metrics.json`` for the same
seed and set).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medauc import fileio
from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import bootstrap_many, estimate_cell
from medauc.evaluate.predictions import Predictions

# The figure's grid: dcurves' default (0.01 to 0.99 by 0.01).
CURVE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 100))
TABLE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
OWN = "set"  # the prevalence key of a set's own prevalence (test or external set)


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.all((t > 0) & (t < 1)):
        raise EvaluationError(f"threshold probabilities must lie strictly between 0 and 1, got {list(thresholds)}")
    return t


def _check_prevalence(prevalence: float | None) -> None:
    if prevalence is not None and not (0.0 < prevalence < 1.0):
        raise EvaluationError(f"a prevalence must lie strictly between 0 and 1, got {prevalence}")


def net_benefit(
    positive: np.ndarray,
    score: np.ndarray,
    thresholds: Sequence[float],
    prevalence: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Net benefit of acting when ``score >= pt``, for each threshold probability pt.

    positive: (n,) bool truth; score: (n,) risk in [0, 1]; thresholds: (T,) in (0, 1);
    ``prevalence`` None: the sample's own (NB = TP/n - FP/n pt/(1-pt)), else pi (NB = sens pi -
    (1 - spec)(1 - pi) pt/(1-pt)). ``weights`` (B, n) bootstrap counts (None: one row of ones).
    Returns (T,) without weights, (B, T) with them; nan where a rate is undefined (no positives, say).
    """
    t = _check_thresholds(thresholds)
    _check_prevalence(prevalence)
    positive = np.asarray(positive, dtype=bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if positive.shape != score.shape:
        raise EvaluationError(f"positive and score must have the same shape, got {positive.shape} and {score.shape}")
    W = np.ones((1, score.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    called = (score[:, None] >= t[None, :]).astype(np.float64)  # (n, T)
    tp = W @ (called * positive[:, None])  # (B, T)
    fp = W @ (called * ~positive[:, None])
    p = (W @ positive.astype(np.float64))[:, None]
    n_all = W.sum(axis=1, keepdims=True)
    odds = t / (1.0 - t)
    with np.errstate(invalid="ignore", divide="ignore"):
        if prevalence is None:
            nb = tp / n_all - fp / n_all * odds
        else:
            nb = tp / p * prevalence - fp / (n_all - p) * (1.0 - prevalence) * odds
    return nb[0] if weights is None else nb


def treat_all(prevalence: float, thresholds: Sequence[float]) -> np.ndarray:
    """(T,) net benefit of acting on every scan: prev - (1 - prev) pt / (1 - pt). Treat none is 0."""
    t = _check_thresholds(thresholds)
    return prevalence - (1.0 - prevalence) * t / (1.0 - t)


def _prevalence_list(prevalences: Sequence[float]) -> list[float | None]:
    for p in prevalences:
        _check_prevalence(p)
    return [None, *prevalences]


def _key(p: float | None) -> str:
    return OWN if p is None else f"{p:g}"


def decision_curves(
    preds: Mapping[str, Predictions],
    prevalences: Sequence[float] = (),
    thresholds: Sequence[float] = CURVE_THRESHOLDS,
) -> list[dict[str, Any]]:
    """Rows of the decision-curve figure: one per (model, prevalence, threshold).

    ``preds``: {name: predictions set}; ``prevalences``: clinical prevalences besides the set's own.
    Row: ``{model, prevalence ("set" or the value), threshold, net_benefit, treat_all, treat_none}``.
    """
    t = _check_thresholds(thresholds)
    rows: list[dict[str, Any]] = []
    for name, pred in preds.items():
        own = float(pred.positive.mean())
        for p in _prevalence_list(prevalences):
            nb = net_benefit(pred.positive, pred.screening_score, t, p)
            ta = treat_all(own if p is None else p, t)
            rows += [{"model": name, "prevalence": _key(p), "threshold": float(x), "net_benefit": float(v),
                      "treat_all": float(a), "treat_none": 0.0} for x, v, a in zip(t, nb, ta)]
    return rows


def decision_table(
    preds: Mapping[str, Predictions],
    prevalences: Sequence[float] = (),
    thresholds: Sequence[float] = TABLE_THRESHOLDS,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Net benefit at a few threshold probabilities with bootstrap intervals over patients.

    ``preds``: {name: predictions set}, every set of the same images in the same order (one test or
    external set, as :func:`medauc.evaluate.compare.evaluate_predictions` aligns them), so one set of
    resamples serves every model. Row per (model, prevalence, threshold): ``{model, prevalence ("set" or
    the value), threshold, net_benefit, treat_all, advantage}``, each ``{value, low, high,
    undefined_share}``; ``advantage`` = NB - max(treat all, treat none), the net benefit the model adds
    over the better default (positive: the model helps at that threshold).
    """
    t = _check_thresholds(thresholds)
    plist = _prevalence_list(prevalences)
    if not preds:
        raise EvaluationError("decision_table needs at least one predictions set")
    ref = next(iter(preds.values()))
    for name, pred in preds.items():
        if pred.n != ref.n or not np.array_equal(pred.image_ids, ref.image_ids) or not np.array_equal(pred.positive, ref.positive):
            raise EvaluationError(f"{pred.source} ({name}) and {ref.source} do not hold the same images in the same order; "
                                  "align them first (paired intervals need one set of resamples)")
    pos = ref.positive

    def functions(pred: Predictions) -> Any:
        def fn(W: np.ndarray) -> dict[str, np.ndarray]:
            own = (W @ pos.astype(np.float64)) / W.sum(axis=1)  # the resample's own prevalence, (B,)
            out: dict[str, np.ndarray] = {}
            for p in plist:
                nb = net_benefit(pos, pred.screening_score, t, p, weights=W)
                prev = own[:, None] if p is None else np.full((W.shape[0], 1), p)
                ta = prev - (1.0 - prev) * (t / (1.0 - t))[None, :]
                adv = nb - np.maximum(ta, 0.0)
                adv[np.abs(adv) < 1e-12] = 0.0  # the model calls everyone positive: it is treat all, exactly
                for j, x in enumerate(t):
                    k = f"{_key(p)}|{x:g}"
                    out[f"nb|{k}"], out[f"all|{k}"], out[f"adv|{k}"] = nb[:, j], ta[:, j], adv[:, j]
            return out
        return fn

    fns = {name: functions(pred) for name, pred in preds.items()}
    point = {name: {k: float(v[0]) for k, v in fn(np.ones((1, ref.n))).items()} for name, fn in fns.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reps = bootstrap_many(ref.y, n_bootstrap, seed, fns, clusters=ref.subject)
    rows: list[dict[str, Any]] = []
    for name in preds:
        for p in plist:
            for x in t:
                k = f"{_key(p)}|{x:g}"
                rows.append({
                    "model": name, "prevalence": _key(p), "threshold": float(x),
                    **{field: estimate_cell(point[name][f"{tag}|{k}"], reps[name][f"{tag}|{k}"], level)
                       for field, tag in (("net_benefit", "nb"), ("treat_all", "all"), ("advantage", "adv"))},
                })
    return rows


def decision_analysis(
    preds: Mapping[str, Predictions],
    prevalences: Sequence[float] = (),
    table_thresholds: Sequence[float] = TABLE_THRESHOLDS,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    curve_thresholds: Sequence[float] = CURVE_THRESHOLDS,
) -> dict[str, Any]:
    """Decision curves and the net-benefit table of one set (test or external) for every model.

    Returns ``{prevalence_own, prevalences, table_thresholds, level, n_bootstrap, unit, curve: rows of
    :func:`decision_curves`, table: rows of :func:`decision_table`}``.
    """
    ref = next(iter(preds.values()), None)
    if ref is None:
        raise EvaluationError("decision_analysis needs at least one predictions set")
    return {
        "prevalence_own": float(ref.positive.mean()),
        "prevalences": [float(p) for p in prevalences],
        "table_thresholds": [float(x) for x in table_thresholds],
        "level": level,
        "n_bootstrap": n_bootstrap,
        "unit": "patients" if ref.subject is not None else "images",
        "curve": decision_curves(preds, prevalences, curve_thresholds),
        "table": decision_table(preds, prevalences, table_thresholds, n_bootstrap, level, seed),
    }


TABLE_FIELDS = ["model", "seed", "prevalence", "threshold", "net_benefit", "net_benefit_low", "net_benefit_high",
                "treat_all", "treat_all_low", "treat_all_high", "advantage", "advantage_low", "advantage_high"]


def table_csv_rows(table: list[dict[str, Any]], seed: int | str | None = None) -> list[dict[str, Any]]:
    """:func:`decision_table` rows flattened for a CSV with :data:`TABLE_FIELDS` columns."""
    out = []
    for r in table:
        row = {"model": r["model"], "seed": seed, "prevalence": r["prevalence"], "threshold": r["threshold"]}
        for f in ("net_benefit", "treat_all", "advantage"):
            row[f], row[f"{f}_low"], row[f"{f}_high"] = r[f]["value"], r[f]["low"], r[f]["high"]
        out.append(row)
    return out


def write_decision(folder: str | Path, decision: dict[str, Any], name: str = "decision") -> dict[str, str]:
    """Write one set's decision curve analysis (``{seed: decision_analysis(...)}``) into ``folder``:
    ``<name>.json`` (settings and the table with CIs), ``<name>.csv`` (the table, flat) and
    ``<name>_curves.csv`` (the figure's curves). ``name``: "decision" for the test set (another name
    per external set). Returns the three paths."""
    folder = Path(folder)
    table_rows: list[dict[str, Any]] = []
    curve_rows: list[dict[str, Any]] = []
    for seed, analysis in decision.items():
        table_rows += table_csv_rows(analysis["table"], seed)
        curve_rows += [{"seed": seed, **r} for r in analysis["curve"]]
    files = {"json": folder / f"{name}.json", "table": folder / f"{name}.csv", "curves": folder / f"{name}_curves.csv"}
    fileio.write_csv(files["table"], table_rows, TABLE_FIELDS)
    fileio.write_csv(files["curves"], curve_rows,
                     ["seed", "model", "prevalence", "threshold", "net_benefit", "treat_all", "treat_none"])
    first = next(iter(decision.values()), {})
    fileio.write_json(files["json"], {
        "schema": "medauc.decision/1",
        **{k: first.get(k) for k in ("prevalence_own", "prevalences", "table_thresholds", "level", "n_bootstrap", "unit")},
        "table_file": files["table"].name, "curves_file": files["curves"].name,
        "seeds": {seed: {"table": a["table"]} for seed, a in decision.items()},
    })
    return {k: str(v) for k, v in files.items()}
