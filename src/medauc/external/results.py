"""The external sets evaluated (inside the evaluate stage): ``external.json``.

For every set of ``evaluate.external`` (``predictions/<model>/<seed>/external-<name>.csv``, written by
:mod:`medauc.external.stage`), :func:`medauc.evaluate.compare.evaluate_predictions` gives every Table 1
metric with its CI over the set's patients, the paired tests between models within the set (Holm within
the primary family, clustered by patient), and the screening view at the operating threshold chosen on
the internal *validation* split (``val.csv``: never re-chosen on the external set) with its sensitivity,
specificity and PPV/NPV at ``evaluate.prevalences``. Added here:

- ``change``: per model and seed, external minus internal test set for each of :data:`CHANGE_METRICS`,
  with the percentile interval of an *unpaired* bootstrap: the two sets hold different patients, each is
  resampled over its own patients (independent seeds), and the difference of each pair of resamples is
  one replicate;
- ``calibration``: the reliability curve (screening score and arg-max confidence, equal-mass bins), ECE,
  and the calibration intercept and slope of the screening score (logistic recalibration
  ``logit P(positive) = a + b logit(score)``, fitted by Newton's method; ideal a = 0, b = 1; b < 1: scores
  too extreme), with patient-bootstrap CIs, beside the internal test set's;
- ``ranking``: models by ``evaluate.primary_metric`` (seed means) at the site, whether the internal winner
  stays best, and its paired tests against every other model at the site;
- ``audit``: the set's ``external/<name>/audit.json`` (shared images and patients, the statistics gap).

``question_5`` (:func:`medauc.external.answer.question_five`) answers "Does the winner hold at another hospital?".
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medauc import fileio
from medauc.external.answer import question_five
from medauc.config import Config, replace
from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import bootstrap_many, estimate_cell
from medauc.evaluate.compare import evaluate_predictions
from medauc.evaluate.decision import write_decision
from medauc.evaluate.metrics import LOWER_IS_BETTER
from medauc.evaluate.paired import Entry
from medauc.external.spec import external_sets

CHANGE_METRICS = ("accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "screening_auc", "screening_sensitivity",
                  "screening_specificity", "op_sensitivity", "op_specificity", "ece", "screening_ece", "brier")
MAX_STEP = 5.0


def calibration_fit(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted logistic recalibration of ``score`` (n,) in (0, 1) against ``positive`` (n,) bool, for every row
    of ``weights`` (B, n): intercept (B,) and slope (B,); nan where the fit does not converge (separation)."""
    x = np.log(np.clip(score, 1e-6, 1 - 1e-6) / (1 - np.clip(score, 1e-6, 1 - 1e-6)))
    centre = float(x.mean())
    x = x - centre  # centred, Newton's steps do not swing between the intercept and the slope
    y = positive.astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    share = np.clip((w * y).sum(1) / np.maximum(w.sum(1), 1e-12), 1e-6, 1 - 1e-6)
    a, b = np.log(share / (1 - share)), np.zeros(len(w))  # from the model without the score
    done = np.zeros(len(w), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-(a[:, None] + b[:, None] * x)))
            r, v = w * (y - p), w * p * (1 - p)
            g0, g1 = r.sum(1), (r * x).sum(1)
            h00, h01, h11 = v.sum(1), (v * x).sum(1), (v * x * x).sum(1)
            det = h00 * h11 - h01 * h01
            d0 = np.clip((h11 * g0 - h01 * g1) / det, -MAX_STEP, MAX_STEP)
            d1 = np.clip((h00 * g1 - h01 * g0) / det, -MAX_STEP, MAX_STEP)
            a, b = a + np.where(done, 0, d0), b + np.where(done, 0, d1)
            done |= (np.abs(d0) < 1e-7 * (1 + np.abs(a))) & (np.abs(d1) < 1e-7 * (1 + np.abs(b)))
            if done.all():
                break
    bad = ~done | ~np.isfinite(a) | ~np.isfinite(b) | (np.abs(b) > 50)
    return np.where(bad, np.nan, a - b * centre), np.where(bad, np.nan, b)


def calibration(e: Entry, n_bootstrap: int, seed: int, level: float) -> dict[str, Any]:
    """Intercept and slope of ``e``'s screening score with patient-bootstrap CIs (the evaluate stage's resampling scheme)."""
    p = e.test

    def fit(W: np.ndarray) -> dict[str, np.ndarray]:
        a, b = calibration_fit(p.positive, p.screening_score, W)
        return {"intercept": a, "slope": b}

    point = fit(np.ones((1, p.n)))
    reps = bootstrap_many(p.y, n_bootstrap, seed, {"fit": fit}, clusters=p.subject)["fit"]
    return {k: estimate_cell(float(point[k][0]), reps[k], level) for k in ("intercept", "slope")}


def _same(a: float, b: float) -> bool:
    """Equal thresholds, none (nan: validation could not choose one) being equal to none."""
    return a == b or (bool(np.isnan(a)) and bool(np.isnan(b)))


def _change(ext: Entry, internal: Entry, level: float) -> dict[str, Any]:
    out = {}
    for m in CHANGE_METRICS:
        if m in ext.values and m in internal.values:
            out[m] = estimate_cell(ext.values[m] - internal.values[m], ext.replicates[m] - internal.replicates[m], level)
    return out


def _ranking(primary: str, internal: dict[str, Any], site: dict[str, Any], comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    sign = -1.0 if primary in LOWER_IS_BETTER else 1.0

    def ranked(result: dict[str, Any]) -> list[str]:
        means = {m: result["models"][m]["summary"][primary]["mean"] for m in result["models"]}
        return sorted(means, key=lambda m: (0, -sign * means[m]) if np.isfinite(means[m]) else (1, 0.0))

    inside, outside = ranked(internal), ranked(site)
    winner = inside[0]
    means = {m: site["models"][m]["summary"][primary]["mean"] for m in outside}
    holds = bool(np.isfinite(means[winner]) and sign * (means[winner] - means[outside[0]]) >= -1e-12)
    seed = min(site["models"][winner]["seeds"], key=int)
    tests = []
    for r in comparisons:
        if r["metric"] != primary or str(r["seed"]) != seed or winner not in (r["model_a"], r["model_b"]):
            continue
        flip = r["model_b"] == winner  # as "winner - other"
        d, lo, hi = (float(r[k]) for k in ("difference", "ci_low", "ci_high"))
        tests.append({"other": r["model_a"] if flip else r["model_b"], "difference": -d if flip else d,
                      "ci_low": -hi if flip else lo, "ci_high": -lo if flip else hi, "p_value": r["p_value"],
                      "p_holm": r["p_holm"], "significant": r["significant"], "note": r["note"], "test": r["test"],
                      "detectable": r.get("detectable")})
    return {"metric": primary, "internal": inside, "site": outside, "means": means, "winner": winner,
            "site_best": outside[0], "holds": holds, "seed": seed, "tests": tests}


def evaluate_external(cfg: Config, run_dir: str | Path, internal: dict[str, Any], entries: list[Entry],
                      vals: dict[str, dict[int, Path]]) -> dict[str, Any]:
    """``external.json`` (module docstring) from the internal results (``metrics.json`` and its entries);
    each site's decision curve analysis goes to ``decision_external-<name>.json``, ``.csv``, ``_curves.csv`` beside
    the test set's (:func:`medauc.evaluate.decision.write_decision`)."""
    run_dir = Path(run_dir)
    ev = cfg.evaluate
    inside = {(e.model, e.seed): e for e in entries}
    internal_cal = {k: calibration(e, ev.n_bootstrap, cfg.seed, ev.level) for k, e in inside.items()}
    sites: dict[str, Any] = {}
    for i, s in enumerate(external_sets(cfg)):
        files = {m: {int(seed): run_dir / "predictions" / m / seed / f"external-{s.name}.csv" for seed in v["seeds"]}
                 for m, v in internal["models"].items()}
        gone = [str(p) for by_seed in files.values() for p in by_seed.values() if not p.is_file()]
        if gone:
            raise EvaluationError(f"{gone[0]} is missing: run `medauc external` (or `medauc run`) for this run first")
        # Its own bootstrap seed: the external resamples are independent of the internal ones (an unpaired difference).
        site_cfg = replace(cfg, seed=cfg.seed + 1 + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics are nan and flagged (undefined_share) in the file
            res = evaluate_predictions(files, site_cfg, val_files=vals, keep_entries=True, decision=True)
        comparisons = res.pop("comparisons")
        write_decision(run_dir, res.pop("decision"), name=f"decision_external-{s.name}")  # the site's decision curves
        for e in res.pop("entries"):
            out = res["models"][e.model]["seeds"][str(e.seed)]
            ref = inside[(e.model, e.seed)]
            if out["operating_point"] and ref.operating_point and not _same(out["operating_point"]["threshold"],
                                                                            ref.operating_point["threshold"]):
                raise EvaluationError(f"{e.model} seed {e.seed}: the external threshold differs from the validation one")
            out["change"] = _change(e, ref, ev.level)
            out["calibration"] = {**calibration(e, ev.n_bootstrap, site_cfg.seed, ev.level),
                                  "internal": internal_cal[(e.model, e.seed)], "reliability": e.engine.reliability()}
        audit_path = run_dir / "external" / s.name / "audit.json"
        sites[s.name] = {
            "source": s.source, "kind": s.kind, "bootstrap_seed": site_cfg.seed,
            **{k: res[k] for k in ("classes", "test_prevalence", "unit", "n_images", "n_patients", "models", "question_1")},
            "comparisons": comparisons, "ranking": _ranking(ev.primary_metric, internal, res, comparisons),
            "audit": fileio.read_json(audit_path) if audit_path.is_file() else None,
        }
    out = {"schema": "medauc.external/1", "level": ev.level, "n_bootstrap": ev.n_bootstrap, "primary_metric": ev.primary_metric,
           "threshold_rule": ev.threshold_rule, "target_sensitivity": ev.target_sensitivity,
           "prevalences": list(ev.prevalences), "internal_unit": internal["unit"], "change_metrics": list(CHANGE_METRICS),
           "sites": sites}
    out["question_5"] = question_five(out)
    return out
