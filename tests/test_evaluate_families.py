"""The pre-specified primary analysis: Holm families, detectable differences at the level a verdict
uses, zero standard errors, and the invariant that no "not significant" stands beside a difference
larger than its detectable difference (checked here and on every comparisons file the suite writes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medauc import cli
from medauc.answers import best_by_auc
from medauc.config import load_config
from medauc.errors import ConfigError
from medauc.evaluate import evaluate_predictions
from medauc.evaluate.paired import holm
from medauc.evaluate.power import detectable_difference
from medauc.evaluate.synthetic import simulate_run, write_predictions
from invariants import detectable_violations


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("fam")
    files = simulate_run(root, {"a": 1.6, "b": 1.2, "c": 0.9, "d": 1.5}, n_per_class=(40, 30, 30, 30),
                         n_val_per_class=None, slices_per_patient=2)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=400"])
    return evaluate_predictions(files, cfg, check_classes=False), cfg


def test_primary_metric_pairs_are_one_holm_family_and_every_other_metric_its_own(result):
    # Mutation caught: Holm over the whole table (5 metrics x 6 pairs = 30 tests), which drowned the
    # macro-AUC comparisons in accuracy, F1 and log-loss ones.
    ev, cfg = result
    df = pd.DataFrame(ev["comparisons"])
    assert ev["primary_metric"] == "auc_macro"
    assert set(df.loc[df["metric"] == "auc_macro", "family"]) == {"primary"}
    assert set(df.loc[df["metric"] != "auc_macro", "family"]) == {"secondary"}
    for metric, fam in df.groupby("metric"):
        ok = fam["note"] == ""
        assert len(fam) == 6 and (fam["family_size"] == ok.sum()).all(), metric
        expected = holm(fam.loc[ok, "p_value"].to_numpy())
        np.testing.assert_allclose(fam.loc[ok, "p_holm"].to_numpy(), expected, err_msg=metric)
    # the primary family is not corrected for the other metrics: its adjusted p is at most 6 x p
    prim = df[(df["metric"] == "auc_macro") & (df["note"] == "")]
    assert (prim["p_holm"] <= np.minimum(1, 6 * prim["p_value"]) + 1e-12).all()
    assert "primary family" in ev["definitions"]["family"] or "primary" in ev["definitions"]["family"]


def test_detectable_is_at_the_bonferroni_level_of_its_family(result):
    ev, cfg = result
    for r in ev["comparisons"]:
        if r["note"]:
            continue
        level = 1 - (1 - cfg.evaluate.level) / r["family_size"]
        assert r["detectable"] == pytest.approx(detectable_difference(r["se"], level, cfg.evaluate.power)), r["metric"]
        # larger than the unadjusted one whenever the family has more than one test
        assert r["family_size"] == 1 or r["detectable"] > detectable_difference(r["se"], cfg.evaluate.level, cfg.evaluate.power)
    assert detectable_violations(pd.DataFrame(ev["comparisons"])) == []


def test_screening_auc_as_primary_moves_the_primary_family(tmp_path):
    files = simulate_run(tmp_path, {"a": 1.5, "b": 1.0}, n_per_class=(30, 20, 20, 20), n_val_per_class=None)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=200", "evaluate.primary_metric=screening_auc"])
    df = pd.DataFrame(evaluate_predictions(files, cfg, check_classes=False)["comparisons"])
    assert set(df.loc[df["family"] == "primary", "metric"]) == {"screening_auc"}


def test_question_auc_is_read_as_primary_metric_and_bad_values_are_refused(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("evaluate:\n  question_auc: screening_auc\n")
    assert load_config(str(old)).evaluate.primary_metric == "screening_auc"  # an older run folder's config.yaml
    with pytest.raises(ConfigError, match="primary_metric"):
        load_config("smoke", ["evaluate.primary_metric=accuracy"])


def test_zero_standard_error_is_not_assessable_never_detectable_zero(tmp_path, capsys):
    # Two models that both score every image perfectly: every difference is 0 with SE 0. That is
    # "not assessable", never "detectable 0.0000" ("20 patients could detect any difference").
    y = np.repeat(np.arange(4), 8)
    probs = np.eye(4)[y] * 0.97 + 0.01
    a = write_predictions(tmp_path / "a.csv", [f"i{i}" for i in range(y.size)], y, probs)
    b = write_predictions(tmp_path / "b.csv", [f"i{i}" for i in range(y.size)], y, probs)
    assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "200", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["comparisons"]
    auc = next(r for r in rows if r["metric"] == "auc_macro")
    assert auc["se"] == 0 and auc["significant"] is None and "standard error 0" in auc["note"]
    assert auc["detectable"] is None  # nan in JSON
    assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "200", "--detectable"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if " auc_macro " in x)
    assert "not assessable" in line and "0.0000" not in line.split("auc_macro")[1].split("paired_bootstrap")[1]


def test_too_few_resamples_for_the_family_are_not_assessable(tmp_path):
    # 2/(B+1) above alpha/m: no bootstrap p-value could pass Holm's first step, so a "no" would be an
    # artefact of evaluate.n_bootstrap, not of the data.
    files = simulate_run(tmp_path, {"a": 2.5, "b": 0.2, "c": 1.0, "d": 1.2}, n_per_class=(30, 20, 20, 20), n_val_per_class=None)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=100"])
    df = pd.DataFrame(evaluate_predictions(files, cfg, check_classes=False)["comparisons"])
    acc = df[df["metric"] == "accuracy"]
    assert acc["significant"].isna().all() and acc["note"].str.contains("raise evaluate.n_bootstrap to at least 240").all()
    assert df.loc[df["metric"] == "auc_macro", "note"].str.contains("n_bootstrap").all()  # bootstrap too
    assert (df.loc[df["metric"] == "screening_auc", "note"] == "").all()  # DeLong: an exact normal p


def test_question_three_names_the_primary_family_and_its_verdicts_are_consistent(result, tmp_path):
    ev, cfg = result
    metrics = {"models": {m: {"seeds": {"0": {}}, "summary": {"auc_macro": {"mean": ev["models"][m]["summary"]["auc_macro"]["mean"]}}}
                          for m in ev["models"]}, "power": 0.8, "unit": "patients", "n_patients": ev["n_patients"]}
    df = pd.DataFrame(ev["comparisons"])
    df.to_csv(tmp_path / "c.csv", index=False)
    q = best_by_auc(metrics, pd.read_csv(tmp_path / "c.csv"), "auc_macro", 0.95)
    assert "primary family: macro AUC, 6 pairs" in q["text"] and q["family"] == "primary family: macro AUC, 6 pairs"
    for r in q["not_significant"]:
        assert r["difference"] <= r["detectable"]


def test_operating_point_is_chosen_on_validation_and_only_applied_to_test(tmp_path):
    # Mutation caught: the screening threshold chosen on the TEST file (the study's leak, in another
    # place): every check of "validation sensitivity >= target" also holds on test, so tests passed.
    from medauc.evaluate.metrics import screening_threshold
    from medauc.evaluate.predictions import read_predictions

    files = simulate_run(tmp_path, {"a": 1.4, "b": 1.0}, n_per_class=(40, 30, 30, 30), n_val_per_class=(30, 20, 20, 20))
    val = {m: s[0].parent / "val.csv" for m, s in files.items()}
    cfg = load_config("smoke", ["evaluate.n_bootstrap=200", "evaluate.target_sensitivity=0.9"])
    ev = evaluate_predictions(files, cfg, val_files={m: {0: p} for m, p in val.items()}, check_classes=False)
    for m in files:
        op = ev["models"][m]["seeds"]["0"]["operating_point"]
        t_val, sens, spec = screening_threshold(read_predictions(val[m]), 0.9)
        t_test = screening_threshold(read_predictions(files[m][0]), 0.9)[0]
        assert t_val != t_test  # the data tell the two apart
        assert (op["threshold"], op["val_sensitivity"], op["val_specificity"]) == (t_val, sens, spec)
        # and the test metrics are those of that threshold on the test images
        test = read_predictions(files[m][0])
        called = test.screening_score >= t_val
        assert ev["models"][m]["seeds"]["0"]["metrics"]["op_sensitivity"]["value"] == pytest.approx(called[test.positive].mean())
