"""The operating threshold: chosen on validation (at a target sensitivity or by Youden's J), never re-chosen on
test, and its metrics with intervals on any predictions set."""

import json

import numpy as np
import pytest

from medauc.config import load_config
from medauc.errors import ConfigError, EvaluationError
from medauc.evaluate.metrics import screening_threshold
from medauc.evaluate.operating import choose_threshold, operating_point_metrics, youden_threshold
from medauc.evaluate.predictions import Predictions, read_predictions


def _pred(pos, score, subject=None):
    probs = np.stack([1 - score, score], axis=1)
    return Predictions(np.array([f"i{i}" for i in range(pos.size)]), pos.astype(int), probs, ("healthy", "tumour"), 0,
                       "<arrays>", subject)


def _brute_youden(pos, score):
    """Youden's J at every candidate threshold, one at a time: (best J, the largest threshold reaching it)."""
    best_j, best_t = -np.inf, None
    for t in sorted(set(score.tolist())):
        sens = np.mean(score[pos] >= t)
        spec = np.mean(score[~pos] < t)
        j = sens + spec - 1
        if j >= best_j - 1e-12:
            best_j, best_t = max(j, best_j), t
    return best_j, best_t


@pytest.mark.parametrize("seed", range(6))
def test_youden_threshold_equals_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 200))
    pos = rng.random(n) < rng.uniform(0.2, 0.8)
    pos[:2] = [True, False]
    score = np.clip(rng.normal(0.4 + 0.25 * pos, 0.2), 0, 1)
    if seed % 2:
        score = np.round(score, 1)  # many ties
    score = 1 - (1 - score)  # as the screening score is computed: 1 - p(negative)
    t, sens, spec = youden_threshold(_pred(pos, score))
    j, bt = _brute_youden(pos, score)
    assert t == pytest.approx(bt)
    assert sens + spec - 1 == pytest.approx(j)
    assert sens == pytest.approx(np.mean(score[pos] >= t)) and spec == pytest.approx(np.mean(score[~pos] < t))


def test_youden_and_rule_checks():
    pos = np.array([True, True, False, False])
    # a perfect separation: J = 1 at the lowest positive score
    assert youden_threshold(_pred(pos, np.array([0.8, 0.6, 0.3, 0.1])))[:1] == (0.6,)
    with pytest.warns(UserWarning, match="Youden"):
        assert np.isnan(youden_threshold(_pred(np.array([True, True]), np.array([0.2, 0.4])))[0])
    op = choose_threshold(_pred(pos, np.array([0.8, 0.6, 0.3, 0.1])), "youden")
    assert op["threshold_rule"] == "youden" and op["val_youden_j"] == pytest.approx(1.0)
    with pytest.raises(EvaluationError, match="threshold_rule"):
        choose_threshold(_pred(pos, np.array([0.8, 0.6, 0.3, 0.1])), "median")
    with pytest.raises(ConfigError, match="threshold_rule"):
        load_config("smoke", ["evaluate.threshold_rule=median"])
    with pytest.raises(ConfigError, match="decision_thresholds"):
        load_config("smoke", ["evaluate.decision_thresholds=[0.1,1.2]"])


def _write(path, pos, score, ids, subject=None):
    from medauc.evaluate.synthetic import write_predictions

    probs = np.stack([1 - score, score], axis=1)
    return write_predictions(path, ids, pos.astype(int), probs, ("healthy", "tumour"), subjects=subject)


def _val_and_test(tmp_path):
    """Validation and test files whose best thresholds differ: a threshold re-chosen on test would show."""
    rng = np.random.default_rng(4)
    n_val, n_test = 120, 150
    pv = rng.random(n_val) < 0.5
    sv = np.clip(rng.normal(0.35 + 0.3 * pv, 0.12), 0.001, 0.999)  # validation: scores lower
    pt = np.repeat(rng.random(n_test // 3) < 0.5, 3)
    st = np.clip(rng.normal(0.5 + 0.3 * pt, 0.12), 0.001, 0.999)  # test: scores shifted up
    subject = [f"p{i // 3}" for i in range(n_test)]
    val = _write(tmp_path / "m" / "0" / "val.csv", pv, sv, [f"v{i}" for i in range(n_val)])
    test = _write(tmp_path / "m" / "0" / "test.csv", pt, st, [f"t{i}" for i in range(n_test)], subject)
    return val, test


@pytest.mark.parametrize("rule", ["sensitivity", "youden"])
def test_the_threshold_chosen_on_validation_is_the_one_applied_to_test(tmp_path, rule):
    # Mutation caught: evaluation choosing the operating threshold on the test file (or on test and
    # validation together): the threshold, and the test sensitivity and specificity, would differ.
    from medauc.evaluate.compare import evaluate_predictions

    val_path, test_path = _val_and_test(tmp_path)
    cfg = load_config("smoke", ["data.classes=[healthy,tumour]", "evaluate.n_bootstrap=200", f"evaluate.threshold_rule={rule}",
                                "evaluate.target_sensitivity=0.9"])
    val = read_predictions(val_path, "healthy")
    test = read_predictions(test_path, "healthy")
    on_val = choose_threshold(val, rule, 0.9)["threshold"]
    on_test = choose_threshold(test, rule, 0.9)["threshold"]
    assert abs(on_val - on_test) > 0.05  # the two sets would choose differently
    result = evaluate_predictions({"m": {0: test_path}}, cfg, val_files={"m": {0: val_path}})
    seed = result["models"]["m"]["seeds"]["0"]
    assert seed["operating_point"]["threshold"] == on_val
    assert seed["operating_point"]["threshold_rule"] == rule
    called = test.screening_score >= on_val
    assert seed["metrics"]["op_sensitivity"]["value"] == pytest.approx(called[test.positive].mean())
    assert seed["metrics"]["op_specificity"]["value"] == pytest.approx((~called[~test.positive]).mean())
    # the function an external set is evaluated with gives the same numbers and intervals
    op = operating_point_metrics(test, on_val, cfg.evaluate.prevalences, cfg.evaluate.n_bootstrap, cfg.evaluate.level, cfg.seed)
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        for part in ("value", "low", "high"):
            assert op["metrics"][k][part] == pytest.approx(seed["metrics"][f"op_{k}"][part]), (k, part)
    by_prev = {e["prevalence"]: e for e in seed["prevalence"]}
    for p in cfg.evaluate.prevalences:
        for k in ("ppv", "npv"):
            for part in ("value", "low", "high"):
                assert op["metrics"][f"{k}@{p:g}"][part] == pytest.approx(by_prev[p][f"op_{k}"][part]), (k, p, part)


def test_operating_point_metrics_counts_and_checks():
    pos = np.array([1, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    score = np.array([0.9, 0.5, 0.2, 0.6, 0.3, 0.1, 0.05, 0.7])
    op = operating_point_metrics(_pred(pos, score), 0.5, prevalences=(0.01,), n_bootstrap=100)
    assert op["counts"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    m = op["metrics"]
    assert m["sensitivity"]["value"] == pytest.approx(0.75) and m["specificity"]["value"] == pytest.approx(0.75)
    assert m["ppv"]["value"] == pytest.approx(0.75) and m["npv"]["value"] == pytest.approx(0.75)
    assert m["ppv@0.01"]["value"] == pytest.approx(0.75 * 0.01 / (0.75 * 0.01 + 0.25 * 0.99))
    assert op["n_patients"] is None
    with pytest.raises(EvaluationError, match="choose one on validation"):
        operating_point_metrics(_pred(pos, score), float("nan"))
    # the sensitivity rule still matches the function it came from
    t, *_ = screening_threshold(_pred(pos, score), 0.75)
    assert choose_threshold(_pred(pos, score), "sensitivity", 0.75)["threshold"] == t


def _simulated_report(tmp_path, *overrides):
    """A report of two simulated models (two slices a patient), evaluated under ``overrides``."""
    from medauc.evaluate import evaluate_stage
    from medauc.evaluate.synthetic import simulate_run
    from medauc.report import report_stage
    from medauc.runs import open_run

    cfg = load_config("smoke", ["model.names=[a,b]", "evaluate.n_bootstrap=50", *overrides])
    run = open_run(tmp_path / "run", cfg)
    simulate_run(run, {"a": 2.0, "b": 2.5}, slices_per_patient=2)
    evaluate_stage(cfg, run)
    report_stage(cfg, run)
    return run


def test_the_report_shows_the_operating_point_and_decision_curves(tmp_path):
    run = _simulated_report(tmp_path, "evaluate.threshold_rule=youden")
    html = (run / "report.html").read_text()
    results = json.loads((run / "results.json").read_text())
    assert "Operating threshold, chosen on validation" in html and "Youden" in html
    assert "Decision curve analysis" in html and "Decision curves of the screening score" in html
    assert "ROC curves per model" in html
    assert "No training history" in html  # simulated predictions: no history.csv to draw
    assert [r["model"] for r in results["operating_point"]] == ["a", "b"]
    assert results["decision"]["table"] and results["decision"]["per"] == "scan"


def test_the_operating_and_decision_tables_name_the_configured_interval_level(tmp_path):
    run = _simulated_report(tmp_path, "evaluate.level=0.9")
    md = (run / "report.md").read_text()
    captions = [line for line in md.splitlines() if line.startswith("**Operating point chosen on validation")
                or line.startswith("**Net benefit per")]
    assert len(captions) == 2 and all("90% CI over patients" in c and "95%" not in c for c in captions), captions
