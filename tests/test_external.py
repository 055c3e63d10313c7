"""External test sets: the stage (read, audit, predict; cached and verified), their evaluation with the
validation threshold carried over, question 5, and the checks before any compute."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cache_env import cache_at
from medauc import preflight, stages
from medauc.external.answer import question_five
from medauc.config import PhantomConfig, load_config, replace
from medauc.data.phantom.design import class_counts
from medauc.errors import ConfigError, DataError, RunFolderError
from medauc.evaluate.command import compute as evaluate_compute
from medauc.evaluate.metrics import screening_threshold
from medauc.evaluate.predictions import read_predictions
from medauc.external.spec import external_sets
from medauc.fileio import read_json

MODELS = ("test_resnet", "test_vit")


# ----------------------------------------------------------------------------- the evaluation, on hand-made predictions


def _write(path: Path, score: np.ndarray, label: np.ndarray, subject: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"image_id": [f"i{k}" for k in range(len(score))], "label": np.where(label, "glioma", "healthy"),
                  "subject": subject, "prob_healthy": 1 - score, "prob_glioma": score}).to_csv(path, index=False)


def _synthetic_run(root: Path, external_winner: str) -> tuple[Path, object]:
    """Two models; test_resnet is better on the internal test set, ``external_winner`` on the external one,
    whose scores are all shifted up (a brighter scanner), so a threshold chosen there would differ."""
    rng = np.random.default_rng(0)
    run = root / external_winner
    n = 80
    label = np.r_[np.zeros(n // 2, bool), np.ones(n // 2, bool)]
    subject = [f"p{k // 2}" for k in range(n)]  # two images a patient
    for m in MODELS:
        good = {"val": 2.0, "test": 2.0 if m == "test_resnet" else 0.8,
                "external-ext": 1.6 if m == external_winner else 0.4}
        for split, sep in good.items():
            z = rng.normal(0, 1, n) + sep * label + (1.5 if split.startswith("external") else 0.0)
            _write(run / "predictions" / m / "0" / f"{split}.csv", 1 / (1 + np.exp(-z)), label, subject)
    cfg = replace(load_config("smoke"), **{"data.classes": ["healthy", "glioma"], "model.names": list(MODELS),
                                            "evaluate.n_bootstrap": 200, "evaluate.target_sensitivity": 0.9,
                                            "evaluate.external": {"ext": str(root / "unused")}})
    evaluate_compute(cfg, run)
    return run, cfg


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {w: _synthetic_run(root, w) for w in MODELS}


def test_the_external_threshold_is_the_validation_one_never_rechosen(synthetic):
    run, cfg = synthetic["test_resnet"]
    metrics, ext = read_json(run / "metrics.json"), read_json(run / "external.json")
    for m in MODELS:
        val = read_predictions(run / "predictions" / m / "0" / "val.csv", "healthy", ["healthy", "glioma"])
        outside = read_predictions(run / "predictions" / m / "0" / "external-ext.csv", "healthy", ["healthy", "glioma"])
        chosen = screening_threshold(val, 0.9)[0]
        site = ext["sites"]["ext"]["models"][m]["seeds"]["0"]
        assert site["operating_point"]["threshold"] == chosen == metrics["models"][m]["seeds"]["0"]["operating_point"]["threshold"]
        assert screening_threshold(outside, 0.9)[0] != chosen  # re-choosing on the external set would give another
        # Sensitivity and specificity at the carried threshold, by hand.
        s, pos = outside.screening_score, outside.positive
        assert site["metrics"]["op_sensitivity"]["value"] == pytest.approx((s[pos] >= chosen).mean())
        assert site["metrics"]["op_specificity"]["value"] == pytest.approx((s[~pos] < chosen).mean())
        assert any("op_ppv" in p for p in site["prevalence"])


def test_each_site_gets_its_own_decision_curves(synthetic):
    """Issue 25 item 4 on the external sets: net benefit per site, from the site's own predictions."""
    from medauc.evaluate.decision import net_benefit

    run, cfg = synthetic["test_resnet"]
    dec = read_json(run / "decision_external-ext.json")
    assert (run / "decision_external-ext_curves.csv").is_file() and (run / "decision_external-ext.csv").is_file()
    pred = read_predictions(run / "predictions" / "test_resnet" / "0" / "external-ext.csv", "healthy", ["healthy", "glioma"])
    row = next(r for r in dec["seeds"]["0"]["table"] if r["model"] == "test_resnet" and r["prevalence"] == "set"
               and r["threshold"] == 0.2)
    assert row["net_benefit"]["value"] == pytest.approx(float(net_benefit(pred.positive, pred.screening_score, [0.2])[0]))
    internal = read_json(run / "decision.json")
    assert internal["seeds"]["0"]["table"] != dec["seeds"]["0"]["table"]


def test_change_from_internal_is_an_unpaired_interval_and_calibration_is_reported(synthetic):
    run, _ = synthetic["test_resnet"]
    metrics, ext = read_json(run / "metrics.json"), read_json(run / "external.json")
    site = ext["sites"]["ext"]
    assert site["unit"] == "patients" and site["n_patients"] == 40
    assert site["bootstrap_seed"] != metrics["bootstrap_seed"]  # independent resamples of the two sets
    for m in MODELS:
        s = site["models"][m]["seeds"]["0"]
        inside = metrics["models"][m]["seeds"]["0"]["metrics"]
        c = s["change"]["auc_macro"]
        assert c["value"] == pytest.approx(s["metrics"]["auc_macro"]["value"] - inside["auc_macro"]["value"])
        assert c["low"] < c["value"] < c["high"]
        # Wider than either set's own interval: the two sets' uncertainties add.
        assert c["high"] - c["low"] > s["metrics"]["auc_macro"]["high"] - s["metrics"]["auc_macro"]["low"]
        cal = s["calibration"]
        assert cal["intercept"]["low"] < cal["intercept"]["value"] < cal["intercept"]["high"]
        assert any(r["curve"] == "screening" for r in cal["reliability"])
    # test_resnet's scores: logit = N(0, 1) + 2 x tumour inside, so log-odds = 2 logit - 2 (slope 2, intercept -2);
    # outside N(0, 1) + 1.6 x tumour + 1.5: slope 1.6, intercept -1.6 x 1.5 - 1.28 = -3.7 (a brighter scanner's scores run high).
    cal = site["models"]["test_resnet"]["seeds"]["0"]["calibration"]
    assert 1.2 < cal["internal"]["slope"]["value"] < 3.2 and -3.2 < cal["internal"]["intercept"]["value"] < -1.0
    assert cal["intercept"]["value"] < cal["internal"]["intercept"]["value"] - 0.7


def test_question_five_when_the_winner_holds_and_when_it_changes(synthetic):
    holds = read_json(synthetic["test_resnet"][0] / "external.json")["question_5"]
    changes = read_json(synthetic["test_vit"][0] / "external.json")["question_5"]
    assert holds["holds_everywhere"] and holds["answer"].startswith("Yes: test_resnet, best by macro AUC")
    assert "stays best" in holds["answer"] and "a change of" in holds["answer"]
    # Catches: a held lead stated without its size, interval and test (a tie reads as a win), and the
    # site's numbers run on after "is also best" with no separator.
    assert re.search(r"is also best at ext: at ext \(.*stays best, ahead of test_vit by -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\], "
                     r"(not )?significant \(", holds["answer"]), holds["answer"]
    assert not changes["holds_everywhere"] and changes["answer"].startswith("No: test_resnet")
    assert "not best at ext" in changes["answer"] and "test_vit leads by" in changes["answer"]
    assert changes["sites"][0]["against_site_best"]["other"] == "test_vit"
    ranking = read_json(synthetic["test_vit"][0] / "external.json")["sites"]["ext"]["ranking"]
    assert ranking["winner"] == "test_resnet" and ranking["site_best"] == "test_vit" and not ranking["holds"]
    assert {t["other"] for t in ranking["tests"]} == {"test_vit"}


def test_question_five_names_an_overlapping_set_and_no_set():
    ext = {"primary_metric": "auc_macro", "sites": {"dup": {
        "source": "/x", "n_images": 10, "n_patients": None,
        "ranking": {"winner": "a", "seed": "0", "metric": "auc_macro", "holds": True, "site_best": "a", "tests": []},
        "models": {"a": {"seeds": {"0": {"metrics": {"auc_macro": {"value": 0.9, "low": 0.8, "high": 0.95}},
                                         "change": {"auc_macro": {"value": 0.01, "low": -0.05, "high": 0.06}}}}}},
        "audit": {"overlaps_training": True, "text": "shares images or patients with the run's train: 3 exact"}}}}
    answer = question_five(ext)["answer"]
    assert answer.startswith("Yes") and "WARNING" in answer and "no independent test" in answer
    assert "No external test set" in question_five({"primary_metric": "auc_macro", "sites": {}})["answer"]


# ----------------------------------------------------------------------------- the stage, on a tiny trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    with cache_at(root / "cache"):
        cfg = load_config("smoke", ["augment.enabled=false", "train.epochs=1", "evaluate.n_bootstrap=50"])
        run = root / "run"
        stages.run("phantom", cfg, run)
        stages.run("prepare", cfg, run)
        stages.run("train", cfg, run)
        man = pd.read_csv(run / "manifest.csv")
        dup = root / "dup"  # an "external" set copied from the training images
        for cls, rows in man[man["split"] == "train"].groupby("label"):
            for k, p in enumerate(rows["path"].head(3)):
                (dup / cls).mkdir(parents=True, exist_ok=True)
                shutil.copy(p if os.path.isabs(p) else run / p, dup / cls / f"x{k}.png")
        cfg = replace(cfg, **{"evaluate.external": {"dup": str(dup), "site_b": "phantom:b:24"}})
        stages.run("external", cfg, run)
        yield run, cfg, dup


def test_every_model_predicts_every_set_and_a_duplicate_set_is_flagged(trained):
    run, cfg, _ = trained
    for name, n in (("dup", 12), ("site_b", 24)):
        df = pd.read_csv(run / "external" / name / "manifest.csv")
        assert len(df) == n
        for m in MODELS:
            pred = pd.read_csv(run / "predictions" / m / "0" / f"external-{name}.csv")
            assert list(pred["image_id"]) == list(df["image_id"]) and list(pred["label"]) == list(df["label"])
    dup, site = read_json(run / "external" / "dup" / "audit.json"), read_json(run / "external" / "site_b" / "audit.json")
    assert dup["overlaps_training"] and dup["shared_images"]["exact"]["train"] == 12 and "train" in dup["text"]
    assert not site["overlaps_training"] and site["shared_patients"] == {"train": 0, "val": 0, "test": 0}
    assert site["n_per_class"] == class_counts(PhantomConfig(n=24))  # Kaggle shares of 24, whatever the site
    pd.testing.assert_series_equal(pd.read_csv(run / "external" / "site_b" / "manifest.csv")["subject"].str.startswith("site_b-sub-"),
                                   pd.Series([True] * 24, name="subject"))
    gap = site["statistics_gap"]
    assert gap["features"]["mean"]["smd"] < 0 and gap["domain_auc"] > 0.7  # site b's darker scanner is seen
    assert abs(dup["statistics_gap"]["features"]["mean"]["smd"]) < abs(gap["features"]["mean"]["smd"])


def test_external_predictions_are_verified_and_rebuilt(trained):
    run, cfg, _ = trained
    f = run / "predictions" / "test_vit" / "0" / "external-site_b.csv"
    good = f.read_bytes()
    f.write_bytes(good.replace(b"0.", b"0.9", 1))
    with pytest.raises(RunFolderError, match="external-site_b.csv"):
        stages.run("evaluate", cfg, run)  # a damaged prediction is never evaluated
    with pytest.raises(RunFolderError, match="external-site_b.csv"):
        stages.run("external", cfg, run)  # nor taken as up to date
    stages.run("external", cfg, run, force=True)
    assert f.read_bytes() == good  # rebuilt, the same predictions
    f.unlink()
    stages.run("external", cfg, run)  # a missing file rebuilds without --force
    assert f.read_bytes() == good


def test_a_changed_external_folder_rebuilds_the_stage(trained):
    run, cfg, dup = trained
    stages.run("external", cfg, run)
    shutil.copy(next((dup / "glioma").iterdir()), dup / "glioma" / "extra.png")
    with pytest.raises(RunFolderError, match="other inputs"):
        stages.run("external", cfg, run)
    stages.run("external", cfg, run, force=True)
    assert len(pd.read_csv(run / "external" / "dup" / "manifest.csv")) == 13
    assert len(pd.read_csv(run / "predictions" / "test_resnet" / "0" / "external-dup.csv")) == 13
    stages.run("evaluate", cfg, run, force=True)
    ext = read_json(run / "external.json")
    assert "WARNING" in ext["question_5"]["answer"] and ext["sites"]["dup"]["audit"]["overlaps_training"]
    # A set no longer configured leaves no files behind to be read as if it were.
    one = replace(cfg, **{"evaluate.external": {"site_b": "phantom:b:24"}})
    stages.run("external", one, run, force=True)
    assert not (run / "external" / "dup").exists() and not list(run.glob("predictions/*/*/external-dup.csv"))


def test_bad_external_settings_are_errors_before_any_compute(tmp_path):
    base = load_config("smoke")

    def check(external, **kw):
        preflight.check(replace(base, **{"evaluate.external": external}), "run", kw.get("data"), None)

    with pytest.raises(DataError, match="does not exist"):
        check({"b": str(tmp_path / "nowhere")})
    (tmp_path / "f").mkdir()
    with pytest.raises(DataError, match="same source"):
        check({"one": str(tmp_path / "f"), "two": str(tmp_path / "f" / ".")})
    with pytest.raises(DataError, match="training data"):
        check({"b": str(tmp_path / "f")}, data=str(tmp_path / "f"))
    with pytest.raises(ConfigError, match="taken by the run's own sets"):
        check({"test": "phantom:b"})
    with pytest.raises(ConfigError, match="differ only in case"):
        check({"Site": "phantom:b", "site": "phantom:c"})
    with pytest.raises(ConfigError, match="phantom:<site>"):
        check({"b": "phantom:z"})
    with pytest.raises(ConfigError, match="letters, digits"):
        check({"a b": "phantom:b"})
    sets = external_sets(replace(base, **{"evaluate.external": {"b": "phantom:b", "c": "phantom:c:40"}}))
    assert [(s.site, s.n) for s in sets] == [("b", 24), ("c", 40)]  # default: the internal test set's size


def test_the_cli_refuses_a_missing_external_folder_before_the_run_folder_exists(tmp_path, capsys):
    from medauc.cli import main

    out = tmp_path / "run"
    assert main(["run", "--config", "smoke", "--out", str(out), f"evaluate.external={{b: {tmp_path / 'nowhere'}}}"]) == 2
    assert "evaluate.external.b" in capsys.readouterr().err and not out.exists()


def test_calibration_fit_equals_an_unpenalised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from medauc.external.results import calibration_fit

    rng = np.random.default_rng(2)
    y = rng.random(120) < 0.4
    score = 1 / (1 + np.exp(-(rng.normal(0, 1, 120) + 1.2 * y + 1.5)))
    w = rng.integers(0, 3, (3, 120)).astype(float)
    a, b = calibration_fit(y, score, w)
    for k in range(3):
        ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=100_000).fit(np.log(score / (1 - score))[:, None], y, sample_weight=w[k])
        assert a[k] == pytest.approx(ref.intercept_[0], abs=1e-3) and b[k] == pytest.approx(ref.coef_[0, 0], abs=1e-3)


def test_the_report_shows_each_site_and_the_fifth_answer(trained, tmp_path):
    from medauc.report.build import build_document
    from medauc.report.document import to_markdown

    run, cfg, _ = trained
    stages.run("external", cfg, run, force=True)
    stages.run("evaluate", cfg, run, force=True)
    doc, results = build_document(cfg, run)
    md = to_markdown(doc, "files")
    assert "5. Does the winner hold at another hospital?" in md and results["answers"]["q5_external"].startswith("5.")
    assert "External test sets" in md and "WARNING: dup shares images" in md
    assert {f.name for f in doc.figures()} >= {"external_dup_calibration.png", "external_site_b_calibration.png"}
    assert "threshold (from validation)" in md
    assert "Decision curve analysis: site\\_b" in md  # each site's decision curves beside the test set's
    assert "decision_external-site_b_curves.png" in {f.name for f in doc.figures()}
    doc, results = build_document(replace(cfg, **{"evaluate.external": {}}), run)
    md = to_markdown(doc, "files")
    assert "No external test set is configured" in md and "q5_external" not in results["answers"]


def _site_markdown(run: Path, cfg) -> str:
    from medauc.report.context import Context
    from medauc.report.document import Document, to_markdown
    from medauc.report.sections.external import external_section

    doc = Document("external")
    external_section(Context(cfg, run, doc, {}))
    return to_markdown(doc, "files")


def test_a_sites_decision_table_names_its_own_resampling_unit(synthetic):
    """The site's intervals are over its 40 patients; the decision table's caption must not say images."""
    run, cfg = synthetic["test_resnet"]
    md = _site_markdown(run, cfg)
    caption = next(line for line in md.splitlines() if "Net benefit per" in line and "decision\\_external-ext.csv" in line)
    assert "over patients (n=40)" in caption and "no patient ids known" not in caption



def test_the_external_section_names_the_threshold_rule_the_run_used(tmp_path):
    run, cfg = _synthetic_run(tmp_path, "test_resnet")
    assert "for sensitivity ≥ 0.9" in _site_markdown(run, cfg)
    cfg = replace(cfg, **{"evaluate.threshold_rule": "youden"})
    evaluate_compute(cfg, run)
    md = _site_markdown(run, cfg)
    assert "Youden" in md and "for sensitivity ≥" not in md


def test_a_validation_split_that_cannot_choose_a_threshold_does_not_stop_the_external_evaluation(tmp_path):
    """No positive validation case: no threshold (nan), so no op_* metric and no op_* comparison on the internal test
    set, and the same none outside, which is no disagreement between the two."""
    run, cfg = _synthetic_run(tmp_path, "test_resnet")
    for m in MODELS:
        val = run / "predictions" / m / "0" / "val.csv"
        df = pd.read_csv(val)
        _write(val, df["prob_glioma"].to_numpy(), np.zeros(len(df), bool), list(df["subject"].astype(str)))
    with pytest.warns(Warning):
        evaluate_compute(cfg, run)
    site = read_json(run / "external.json")["sites"]["ext"]["models"]["test_resnet"]["seeds"]["0"]
    assert site["operating_point"]["threshold"] is None and "op_sensitivity" not in site["metrics"]  # nan is written null
    inside = read_json(run / "metrics.json")["models"]["test_resnet"]["seeds"]["0"]
    assert inside["operating_point"]["threshold"] is None and "op_sensitivity" not in inside["metrics"]
