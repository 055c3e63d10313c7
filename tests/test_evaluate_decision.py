"""Decision curve analysis: net benefit against hand computations, the two defaults, prevalence reweighting,
intervals over patients, and the evaluate stage's files."""

import json

import numpy as np
import pandas as pd
import pytest

from medauc.config import load_config
from medauc.errors import EvaluationError
from medauc.evaluate.decision import decision_analysis, decision_curves, decision_table, net_benefit, treat_all
from medauc.evaluate.predictions import Predictions

# A small table: 10 scans, 4 with a tumour (positive), screening scores.
POS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
SCORE = np.array([0.9, 0.6, 0.35, 0.1, 0.7, 0.4, 0.25, 0.15, 0.05, 0.02])


def _pred(pos, score, subject=None, source="<arrays>"):
    """Two-class predictions: healthy (negative) and tumour, p(tumour) = score."""
    probs = np.stack([1 - score, score], axis=1)
    return Predictions(np.array([f"i{i}" for i in range(pos.size)]), pos.astype(int), probs, ("healthy", "tumour"), 0,
                       source, subject)


def test_net_benefit_equals_a_hand_computation():
    # pt = 0.3: called positive (score >= 0.3) are 0.9, 0.6, 0.35 (TP = 3) and 0.7, 0.4 (FP = 2); n = 10
    # NB = 3/10 - 2/10 * 0.3/0.7 = 0.3 - 0.0857142857 = 0.2142857143
    # pt = 0.5: 0.9, 0.6 (TP = 2) and 0.7 (FP = 1): NB = 0.2 - 0.1 * 1 = 0.1
    # pt = 0.1: TP = 4, FP = 0.7, 0.4, 0.25, 0.15 (4): NB = 0.4 - 0.4 * 0.1/0.9 = 0.3555...
    nb = net_benefit(POS, SCORE, [0.1, 0.3, 0.5])
    assert nb == pytest.approx([0.4 - 0.4 / 9, 0.3 - 0.2 * 3 / 7, 0.1])


def test_treat_all_and_treat_none():
    t = [0.05, 0.2, 0.4, 0.6]
    prev = POS.mean()  # 0.4
    # treat all: everyone is called positive (a score of 1 for every scan)
    assert net_benefit(POS, np.ones(POS.size), t) == pytest.approx(treat_all(prev, t))
    assert treat_all(prev, t) == pytest.approx([0.4 - 0.6 * x / (1 - x) for x in t])
    assert treat_all(prev, [0.4])[0] == pytest.approx(0.0)  # treat all crosses zero at pt = prevalence
    # treat none: nobody is called positive
    assert net_benefit(POS, np.zeros(POS.size), t) == pytest.approx(np.zeros(len(t)))
    # at a clinical prevalence, treat all is the same formula at that prevalence
    assert net_benefit(POS, np.ones(POS.size), t, prevalence=0.01) == pytest.approx(treat_all(0.01, t))


def test_prevalence_reweighting_equals_the_plain_net_benefit_at_the_sample_prevalence():
    rng = np.random.default_rng(3)
    pos = rng.random(300) < 0.3
    score = np.clip(rng.normal(0.35 + 0.3 * pos, 0.2), 0, 1)
    t = np.round(np.arange(0.01, 1.0, 0.01), 2)
    plain = net_benefit(pos, score, t)
    assert net_benefit(pos, score, t, prevalence=float(pos.mean())) == pytest.approx(plain, abs=1e-12)
    # and dcurves' case-control formula at another prevalence, one threshold at a time
    for p in (1e-4, 0.01, 0.5):
        nb = net_benefit(pos, score, t, prevalence=p)
        for j, x in enumerate(t):
            sens = np.mean(score[pos] >= x)
            fpr = np.mean(score[~pos] >= x)
            assert nb[j] == pytest.approx(sens * p - fpr * (1 - p) * x / (1 - x), abs=1e-12)


def test_bootstrap_weights_equal_the_repeated_sample():
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=(3, POS.size)).astype(float)
    t = [0.1, 0.3, 0.5]
    got = net_benefit(POS, SCORE, t, weights=w)
    for b in range(3):
        idx = np.repeat(np.arange(POS.size), w[b].astype(int))
        assert got[b] == pytest.approx(net_benefit(POS[idx], SCORE[idx], t))
        assert net_benefit(POS, SCORE, t, 0.01, weights=w)[b] == pytest.approx(net_benefit(POS[idx], SCORE[idx], t, 0.01))


def test_thresholds_and_prevalences_are_checked():
    for bad in ([0.0, 0.5], [1.0], []):
        with pytest.raises(EvaluationError, match="strictly between 0 and 1"):
            net_benefit(POS, SCORE, bad)
    with pytest.raises(EvaluationError, match="prevalence"):
        net_benefit(POS, SCORE, [0.2], prevalence=1.5)


def _two_models(n_patients=40, slices=3, seed=0):
    rng = np.random.default_rng(seed)
    pos = np.repeat(rng.random(n_patients) < 0.5, slices)
    subject = np.repeat([f"p{i}" for i in range(n_patients)], slices)
    good = np.clip(rng.normal(0.3 + 0.4 * pos, 0.15), 0.001, 0.999)
    poor = np.clip(rng.normal(0.4 + 0.15 * pos, 0.2), 0.001, 0.999)
    return {"good": _pred(pos, good, subject), "poor": _pred(pos, poor, subject)}


def test_decision_table_values_intervals_and_advantage():
    preds = _two_models()
    rows = decision_table(preds, prevalences=(0.01,), thresholds=(0.1, 0.3), n_bootstrap=300, level=0.95, seed=1)
    assert len(rows) == 2 * 2 * 2  # models x (own, 0.01) x thresholds
    own = float(preds["good"].positive.mean())
    for r in rows:
        pred = preds[r["model"]]
        p = None if r["prevalence"] == "set" else float(r["prevalence"])
        nb = net_benefit(pred.positive, pred.screening_score, [r["threshold"]], p)[0]
        ta = treat_all(own if p is None else p, [r["threshold"]])[0]
        assert r["net_benefit"]["value"] == pytest.approx(nb)
        assert r["treat_all"]["value"] == pytest.approx(ta)
        assert r["advantage"]["value"] == pytest.approx(nb - max(ta, 0.0))
        for f in ("net_benefit", "advantage"):
            assert r[f]["low"] <= r[f]["value"] <= r[f]["high"]
            assert r[f]["high"] > r[f]["low"]  # resampled, not a constant
        if p is not None:  # treat all at a fixed prevalence does not vary with the sample
            assert r["treat_all"]["low"] == pytest.approx(r["treat_all"]["high"])
    # the same seed gives the same intervals
    again = decision_table(preds, prevalences=(0.01,), thresholds=(0.1, 0.3), n_bootstrap=300, level=0.95, seed=1)
    assert again == rows


def test_decision_table_refuses_sets_of_other_images():
    preds = _two_models()
    other = _two_models(seed=5)["good"]
    with pytest.raises(EvaluationError, match="same images"):
        decision_table({"a": preds["good"], "b": _pred(other.positive[::-1], other.screening_score, other.subject)},
                       thresholds=(0.2,), n_bootstrap=10)


def test_decision_curves_rows_and_analysis_layout():
    preds = _two_models()
    rows = decision_curves(preds, prevalences=(1e-4,), thresholds=(0.2, 0.4))
    assert {(r["model"], r["prevalence"]) for r in rows} == {(m, k) for m in preds for k in ("set", "0.0001")}
    assert all(r["treat_none"] == 0.0 for r in rows)
    out = decision_analysis(preds, (1e-4,), (0.2,), n_bootstrap=20, curve_thresholds=(0.2, 0.4))
    assert out["unit"] == "patients" and out["prevalences"] == [1e-4] and out["table_thresholds"] == [0.2]
    assert len(out["table"]) == 2 * 2 and len(out["curve"]) == 2 * 2 * 2


def test_evaluate_stage_writes_the_decision_files(tmp_path):
    from medauc.evaluate import evaluate_stage
    from medauc.evaluate.synthetic import simulate_run
    from medauc.runs import open_run

    cfg = load_config("smoke", ["model.names=[a,b]", "evaluate.n_bootstrap=50", "evaluate.decision_thresholds=[0.1,0.4]"])
    run = open_run(tmp_path / "run", cfg)
    simulate_run(run, {"a": 2.0, "b": 2.5}, slices_per_patient=2)
    evaluate_stage(cfg, run)
    dec = json.loads((run / "decision.json").read_text())
    assert dec["schema"] == "medauc.decision/1" and dec["table_thresholds"] == [0.1, 0.4]
    assert dec["unit"] == "patients"
    table = pd.read_csv(run / "decision.csv")
    assert set(table["model"]) == {"a", "b"} and set(table["threshold"]) == {0.1, 0.4}
    assert set(table["prevalence"].astype(str)) == {"set", *(f"{p:g}" for p in cfg.evaluate.prevalences)}
    curves = pd.read_csv(run / "decision_curves.csv")
    assert len(curves) == 2 * (1 + len(cfg.evaluate.prevalences)) * 99
    # the table's net benefit is the plain computation on the test file
    from medauc.evaluate.predictions import read_predictions

    test = read_predictions(run / "predictions" / "a" / "0" / "test.csv", "healthy")
    row = table[(table["model"] == "a") & (table["prevalence"].astype(str) == "set") & (table["threshold"] == 0.4)].iloc[0]
    assert row["net_benefit"] == pytest.approx(net_benefit(test.positive, test.screening_score, [0.4])[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert "net_benefit" in metrics["definitions"] and "operating_threshold" in metrics["definitions"]


def test_report_draws_a_set_without_positives(tmp_path):
    # An external site of healthy scans only: net benefit at a clinical prevalence is undefined (no
    # sensitivity), the report still draws the set's own panel and does not fail.
    from medauc.evaluate.command import write_decision
    from medauc.runs import open_run

    cfg = load_config("smoke")
    run = open_run(tmp_path / "run", cfg)
    pos = np.zeros(12, dtype=bool)
    score = np.linspace(0.05, 0.6, 12)
    preds = {"a": _pred(pos, score), "b": _pred(pos, score[::-1].copy())}
    write_decision(run, {"0": decision_analysis(preds, (0.01,), (0.1, 0.3), n_bootstrap=20)}, name="decision")
    write_decision(run, {"0": decision_analysis(preds, (0.01,), (0.1, 0.3), n_bootstrap=20)}, name="decision_site")
    from medauc.report.context import Context
    from medauc.report.document import Document
    from medauc.report.sections.clinic import decision_section

    ctx = Context(cfg=cfg, run_dir=run, doc=Document("t"), results={})
    decision_section(ctx, {"unit": "images"}, name="decision_site", set_label="site B")
    assert ctx.results["decision_site"]["table"]
    assert [f.name for f in ctx.doc.figures()] == ["decision_site_curves.png"]
