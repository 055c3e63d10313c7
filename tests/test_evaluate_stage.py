"""The evaluate stage end to end on simulated predictions files: files, caching, CLI, compare, question 1."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from medauc import cli, fileio, runs
from medauc.config import load_config
from medauc.errors import EvaluationError, RunFolderError
from medauc.evaluate import compare_files, delong_test, evaluate_predictions, evaluate_stage
from medauc.evaluate.paired import COMPARISON_FIELDS
from medauc.evaluate.predictions import read_predictions
from medauc.evaluate.synthetic import simulate_run

MODELS = {"test_resnet": 1.6, "test_vit": 2.4, "test_effnet": 1.7}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    # test_effnet and seed 2 stand for an older run's folders: not configured, so not evaluated
    simulate_run(root, MODELS, seeds=(0, 1, 2), n_per_class=(50, 30, 30, 30))
    cfg = load_config("smoke", ["evaluate.n_bootstrap=200", "model.names=[test_vit,test_resnet]", "train.seeds=[0,1]"])
    run_dir = runs.open_run(root, cfg)
    result = evaluate_stage(cfg, run_dir)
    return cfg, run_dir, result


def test_metrics_json_has_every_metric_with_ci_and_definition(run):
    cfg, run_dir, result = run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["schema"] == "medauc.metrics/1"
    assert list(on_disk["models"]) == ["test_vit", "test_resnet"]  # config order, configured models only
    seed0 = on_disk["models"]["test_vit"]["seeds"]["0"]
    assert seed0["n"] == 140 and seed0["n_per_class"]["healthy"] == 50
    metrics = seed0["metrics"]
    for name in ("accuracy", "auc_macro", "screening_auc", "op_sensitivity", "ece", "brier", "log_loss",
                 "auc_glioma", "ppv@0.0001", "auprc@0.01"):
        cell = metrics[name]
        assert cell["low"] <= cell["value"] <= cell["high"], name
    defs = on_disk["definitions"]
    for name in metrics:
        generic = name.split("@")[0] + "@<prevalence>" if "@" in name else name
        for c in cfg.data.classes:
            generic = generic.replace(f"_{c}", "_<class>")
        assert generic in defs, name
    assert seed0["operating_point"]["val_sensitivity"] >= cfg.evaluate.target_sensitivity
    prev = seed0["prevalence"]
    assert [p["prevalence"] for p in prev][:2] == [1e-4, 1e-2] and prev[-1]["source"] == "test set"
    assert prev[0]["ppv"]["value"] < prev[1]["ppv"]["value"] < prev[-1]["ppv"]["value"]
    assert np.sum(seed0["confusion_matrix"]["counts"]) == 140
    summary = on_disk["models"]["test_vit"]["summary"]["accuracy"]
    assert summary["n_seeds"] == 2 and summary["sd"] >= 0
    assert summary["mean"] == pytest.approx(np.mean(list(summary["values"].values())))


def test_unconfigured_models_and_seeds_are_ignored_not_compared(run):
    _, run_dir, result = run
    assert all(list(m["seeds"]) == ["0", "1"] for m in result["models"].values())
    ignored = {(r["model"], r["seed"]): r["reason"] for r in result["ignored"]}
    assert ignored == {("test_effnet", 0): "model not in model.names", ("test_effnet", 1): "model not in model.names",
                       ("test_effnet", 2): "model not in model.names", ("test_vit", 2): "seed not in train.seeds",
                       ("test_resnet", 2): "seed not in train.seeds"}
    with open(run_dir / "comparisons.csv") as fh:
        rows = list(csv.DictReader(fh))
    # an old model in the Holm family would change every adjusted p: none of its rows may be there
    assert {r["model_a"] for r in rows} | {r["model_b"] for r in rows} == {"test_vit", "test_resnet"}
    assert {r["seed"] for r in rows} == {"0", "1"}


def test_configured_model_or_seed_without_predictions_is_an_error(run, tmp_path):
    cfg, run_dir, _ = run
    for override, name in (("model.names", "model.names=[test_vit,test_resnet,resnet18]"), ("train.seeds", "train.seeds=[0,3]")):
        other = load_config("smoke", ["evaluate.n_bootstrap=200", "model.names=[test_vit,test_resnet]", "train.seeds=[0,1]", name])
        copy = tmp_path / override
        shutil.copytree(run_dir, copy)
        with pytest.raises(EvaluationError, match=rf"{override} includes .*run `medauc train`"):
            evaluate_stage(other, copy, force=True)


def test_comparisons_csv_rows_and_delong_values(run):
    cfg, run_dir, _ = run
    with open(run_dir / "comparisons.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COMPARISON_FIELDS
    tables = {r["table"] for r in rows}
    assert tables == {"four_class", "per_class_auc", "per_class", "screening", "calibration", "operating_point"}
    row = next(r for r in rows if r["metric"] == "screening_auc" and r["seed"] == "0"
               and r["model_a"] == "test_vit" and r["model_b"] == "test_resnet")
    a = read_predictions(run_dir / "predictions/test_vit/0/test.csv")
    b = read_predictions(run_dir / "predictions/test_resnet/0/test.csv").reorder(a.image_ids)
    ref = delong_test(a.positive, a.screening_score, b.screening_score)
    assert row["test"] == "delong"
    assert float(row["p_value"]) == pytest.approx(ref.p_value)
    assert float(row["difference"]) == pytest.approx(ref.difference)
    for r in rows:
        if r["note"]:
            assert r["significant"] == "" and r["p_holm"] in ("", "nan")
            continue
        assert float(r["p_holm"]) >= float(r["p_value"]) - 1e-12
        assert r["significant"] == str(float(r["p_holm"]) < 0.05)
    # Holm runs within a family, one metric and seed: the adjusted p of the smallest p is p x (assessable rows of
    # that metric), not x (rows of its table); macro AUC's family is the primary one
    for metric in ("auc_macro", "accuracy", "screening_auc"):
        family = [r for r in rows if r["metric"] == metric and r["seed"] == "0" and not r["note"]]
        smallest = min(family, key=lambda r: float(r["p_value"]))
        assert float(smallest["p_holm"]) == pytest.approx(min(1.0, float(smallest["p_value"]) * len(family)))
        assert {r["family"] for r in family} == {"primary" if metric == "auc_macro" else "secondary"}
        assert {r["family_size"] for r in family} == {str(len(family))}


def test_curves_are_written(run):
    _, run_dir, result = run
    files = result["models"]["test_resnet"]["seeds"]["1"]["curves"]
    with open(run_dir / files["roc"]) as fh:
        roc = list(csv.DictReader(fh))
    assert {r["curve"] for r in roc} == {"screening", "healthy", "glioma", "meningioma", "pituitary"}
    assert (run_dir / files["pr"]).is_file() and (run_dir / files["calibration"]).is_file()


def test_rankings_and_question_one(run):
    _, _, result = run
    q = result["question_1"]
    assert q["ranked_by_accuracy"][0] == "test_vit"  # by far the most skilled simulated model
    assert q["answer"].startswith("Best by accuracy: test_vit")
    for pair in q["pairs"]:
        assert pair["accuracy_winner"] != pair["auc_winner"]
        assert "significant" in pair["sentence"]
    rk = [r for r in result["rankings"] if r["metric"] == "accuracy" and "test_vit" in (r["model_a"], r["model_b"])]
    assert all(r["model_a"] == "test_vit" and r["fraction_seeds_a_better"] == 1.0 for r in rk)


def test_second_run_is_cached_and_changed_inputs_need_force(run, tmp_path):
    cfg, run_dir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / "metrics.json").stat().st_mtime_ns
    evaluate_stage(cfg, copy)
    assert (copy / "metrics.json").stat().st_mtime_ns == before
    f = copy / "predictions/test_vit/0/test.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], lines[2], lines[1]] + lines[3:]) + "\n")  # same rows, new bytes
    with pytest.raises(RunFolderError, match="--force"):
        evaluate_stage(cfg, copy)
    evaluate_stage(cfg, copy, force=True)
    assert (copy / "metrics.json").stat().st_mtime_ns != before


def test_different_image_ids_are_refused(tmp_path):
    files = simulate_run(tmp_path, {"a": 1.0, "b": 1.0}, n_val_per_class=None)
    f = files["b"][0]
    f.write_text(f.read_text().replace("img00003", "img99999"))
    cfg = load_config("smoke", ["evaluate.n_bootstrap=20"])
    with pytest.raises(EvaluationError, match="different test images.*img99999"):
        evaluate_predictions(files, cfg)


def test_different_labels_are_refused(tmp_path):
    files = simulate_run(tmp_path, {"a": 1.0, "b": 1.0}, n_val_per_class=None)
    f = files["b"][0]
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace(",healthy,", ",glioma,")
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvaluationError, match="different labels"):
        evaluate_predictions(files, load_config("smoke", ["evaluate.n_bootstrap=20"]))


def test_evaluate_predictions_for_strategies_without_val(tmp_path):
    root = tmp_path / "strategies"
    files = {}
    for name, skill in (("balanced", 2.0), ("restoration", 2.0)):
        files[name] = simulate_run(root / name, {"test_effnet": skill}, n_val_per_class=None)["test_effnet"]
    cfg = load_config("smoke", ["evaluate.n_bootstrap=50"])
    result = evaluate_predictions(files, cfg)
    seed = result["models"]["balanced"]["seeds"]["0"]
    assert seed["operating_point"] is None and "op_sensitivity" not in seed["metrics"]
    assert {r["table"] for r in result["comparisons"]} == {"four_class", "per_class_auc", "per_class", "screening", "calibration"}


def test_cli_evaluate_and_compare(run, tmp_path, capsys):
    _, run_dir, _ = run
    copy = tmp_path / "cli"
    shutil.copytree(run_dir, copy)
    (copy / ".medauc" / "stages" / "evaluate.json").unlink()
    assert cli.main(["evaluate", "--config", "smoke", "--out", str(copy), "evaluate.n_bootstrap=200",
                     "model.names=[test_vit,test_resnet]", "train.seeds=[0,1]"]) == 0
    assert "Best by accuracy" in capsys.readouterr().out
    a, b = copy / "predictions/test_vit/0/test.csv", copy / "predictions/test_resnet/0/test.csv"
    assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "test_vit/0" in out and "delong" in out and "Paired comparisons" in out
    assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["models"]) == {"test_vit/0", "test_resnet/0"}
    assert cli.main(["compare", str(a), "--n-bootstrap", "100"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_compare_files_api_matches_stage(run):
    _, run_dir, result = run
    a, b = run_dir / "predictions/test_vit/0/test.csv", run_dir / "predictions/test_resnet/0/test.csv"
    out = compare_files([a, b], n_bootstrap=200)
    assert out["models"]["test_vit/0"]["accuracy"]["value"] == result["models"]["test_vit"]["seeds"]["0"]["metrics"]["accuracy"]["value"]


def test_missing_predictions_folder(tmp_path):
    cfg = load_config("smoke")
    run_dir = runs.open_run(tmp_path / "empty", cfg)
    with pytest.raises(EvaluationError, match="medauc train"):
        evaluate_stage(cfg, run_dir)


def test_class_absent_from_test_set_gives_null_not_a_crash(tmp_path):
    files = simulate_run(tmp_path, {"a": 1.5, "b": 1.0}, n_per_class=(40, 30, 0, 30), n_val_per_class=None)
    cfg = load_config("smoke", ["evaluate.n_bootstrap=50"])
    with pytest.warns(UserWarning, match="meningioma"):
        result = evaluate_predictions(files, cfg)
    m = result["models"]["a"]["seeds"]["0"]["metrics"]
    assert np.isnan(m["auc_meningioma"]["value"]) and np.isnan(m["auc_macro"]["value"])
    assert np.isfinite(m["auc_glioma"]["value"]) and np.isfinite(m["screening_auc"]["value"])
    row = next(r for r in result["comparisons"] if r["metric"] == "auc_meningioma")
    assert np.isnan(row["p_value"]) and row["significant"] is None  # no verdict: not assessable
    assert row["note"] == "not assessable: the metric is undefined for these data"
    run_dir = runs.open_run(tmp_path, cfg)
    fileio.write_json(run_dir / "m.json", result)  # nan is written as null
    assert json.loads((run_dir / "m.json").read_text())["models"]["a"]["seeds"]["0"]["metrics"]["auc_macro"]["value"] is None


def _one_image_files(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("image_id,label,prob_healthy,prob_glioma\nx1,glioma,0.2,0.8\n")
    b.write_text("image_id,label,prob_healthy,prob_glioma\nx1,glioma,0.6,0.4\n")
    return a, b


def test_compare_on_one_image_gives_no_verdict(tmp_path, capsys):
    a, b = _one_image_files(tmp_path)
    with pytest.warns(UserWarning):
        result = compare_files([a, b], n_bootstrap=100)
    assert result["comparisons"] and all(r["significant"] is None for r in result["comparisons"])
    acc = next(r for r in result["comparisons"] if r["metric"] == "accuracy")
    assert acc["note"] == "not assessable: too few test images: test set has 1 (fewer than 5)"
    assert np.isnan(acc["p_holm"])  # left out of Holm
    with pytest.warns(UserWarning):
        assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "paired_bootstrap" in line or "delong" in line]
    assert rows and all(line.rstrip().endswith("not assessable") for line in rows)
    assert "24 of 24 comparisons are not assessable" in out and "test set has 1 (fewer than 5)" in out
    assert "macro AUC is undefined for these data" in out


def test_compare_options_out_of_range_are_one_line_errors_and_detectable_noise_is_not_printed(tmp_path, capsys):
    # Issue 27: --n-bootstrap 0 (KeyError) and --seed -1 (ValueError) ended in tracebacks; --detectable on
    # two images printed `detectable 1.56e-16`
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("image_id,label,prob_healthy,prob_glioma\nx1,glioma,0.2,0.8\nx2,healthy,0.7,0.3\n")
    b.write_text("image_id,label,prob_healthy,prob_glioma\nx1,glioma,0.6,0.4\nx2,healthy,0.4,0.6\n")
    for option, value, why in (("--n-bootstrap", "0", "must be >= 1"), ("--seed", "-1", "must be >= 0"),
                               ("--level", "1.5", "must lie strictly between 0 and 1")):
        assert cli.main(["compare", str(a), str(b), option, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{option} {value}: {why}" in err
    with pytest.warns(UserWarning):
        assert cli.main(["compare", str(a), str(b), "--n-bootstrap", "50", "--detectable"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "(not assessable)" in line]
    assert rows and not any("e-1" in line for line in rows), rows


def test_class_predicted_once_reports_undefined_share_warns_and_refuses_the_test(tmp_path):
    from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN
    from medauc.errors import UndefinedMetricWarning
    from medauc.evaluate.synthetic import CLASSES, simulate_probs, write_predictions

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    ids = [f"img{i:03d}" for i in range(y.size)]
    pa, pb = simulate_probs(y, 4, 2.0, rng), simulate_probs(y, 4, 2.0, rng)
    pb[:, 1] = 0.0  # b never predicts glioma ...
    pb[30, 1] = 10.0  # ... but for one glioma image (y[30] = glioma)
    pb /= pb.sum(axis=1, keepdims=True)
    files = {"a": {0: write_predictions(tmp_path / "a.csv", ids, y, pa, CLASSES)},
             "b": {0: write_predictions(tmp_path / "b.csv", ids, y, pb, CLASSES)}}
    with pytest.warns(UndefinedMetricWarning, match=r"b\.csv: bootstrap intervals left out .*ppv_glioma 3\d%"):
        result = evaluate_predictions(files, load_config("smoke", ["evaluate.n_bootstrap=400"]))
    cell = result["models"]["b"]["seeds"]["0"]["metrics"]["ppv_glioma"]
    assert cell["value"] == cell["low"] == cell["high"] == 1.0
    assert cell["undefined_share"] == pytest.approx((29 / 30) ** 30, abs=0.06)  # the image left out of a resample
    assert result["models"]["a"]["seeds"]["0"]["metrics"]["accuracy"]["undefined_share"] == 0.0
    assert result["models"]["a"]["seeds"]["0"]["metrics"]["ppv_glioma"]["undefined_share"] <= UNDEFINED_SHARE_WARN
    row = next(r for r in result["comparisons"] if r["metric"] == "ppv_glioma")
    assert row["significant"] is None and row["note"].startswith("not assessable: the difference is undefined in 3")
    assert next(r for r in result["comparisons"] if r["metric"] == "accuracy")["significant"] in (True, False)


def test_tiny_class_makes_only_its_comparisons_not_assessable(tmp_path):
    from medauc.evaluate.paired import MIN_CASES

    files = simulate_run(tmp_path, {"a": 2.5, "b": 0.5}, n_per_class=(40, 40, 40, MIN_CASES - 1), n_val_per_class=None)
    result = evaluate_predictions(files, load_config("smoke", ["evaluate.n_bootstrap=200"]))
    rows = {r["metric"]: r for r in result["comparisons"]}
    for m in ("auc_pituitary", "sensitivity_pituitary", "ppv_pituitary", "auc_macro", "balanced_accuracy"):
        assert rows[m]["significant"] is None and f"pituitary has {MIN_CASES - 1}" in rows[m]["note"], m
    for m in ("accuracy", "auc_glioma", "screening_auc"):
        assert rows[m]["note"] == "" and rows[m]["significant"] is True, m  # a far better model: significant
    assert rows["sensitivity_glioma"]["note"] == "" and rows["sensitivity_glioma"]["significant"] in (True, False)
