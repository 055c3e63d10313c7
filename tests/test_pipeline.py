"""`medauc run` end to end at smoke size: every stage, the report, and stage caching."""

import json

import pytest

from invariants import assert_evaluated_per_patient
from medauc.cli import main
from medauc.fileio import read_json
from medauc.records import stage_record


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory):
    """One phantom cache for the module's runs: the smoke phantom is generated once."""
    import os

    cache = tmp_path_factory.mktemp("cache")
    os.environ["MEDAUC_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, phantom_cache):
    root = tmp_path_factory.mktemp("pipeline")
    out = root / "run"
    assert main(["run", "--config", "smoke", "--out", str(out)]) == 0
    return out


def test_every_stage_leaves_its_files(smoke_run):
    out = smoke_run
    for name in ("config.yaml", "environment.json", "manifest.csv", "data_audit.json", "augment/manifest.csv",
                 "augment_checks.json", "strategies.json", "metrics.json", "comparisons.csv", "explain.json",
                 "report.html", "report.md", "results.json", "timings.json", "phantom/montage.png",
                 "phantom/montage_subjects.png"):
        assert (out / name).exists(), name
    for model in ("test_resnet", "test_vit"):
        assert (out / "predictions" / model / "0" / "test.csv").exists()
        assert (out / "train" / model / "0" / "best.safetensors").exists()
    results = json.loads((out / "results.json").read_text())
    assert set(results["answers"]) == {"q1_accuracy_vs_auc", "q2_restoration", "q3_best_by_auc", "q4_lesion"}
    assert [r["model"] for r in results["table1"]] == ["test_resnet", "test_vit"]
    assert [r["strategy"] for r in results["table2"]] == ["balanced", "restoration", "duplicate", "classic", "weighted_loss"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    assert "Phantom patients: a row per virtual patient" in html
    assert "seconds to compute" in html and results["timings_computed"]["train"] > 0
    # smoke.yaml names no patient pattern: the phantom supplies its patients, so the run is patient-level
    audit = json.loads((out / "data_audit.json").read_text())
    assert audit["subjects"]["source"] == "phantom images.csv"
    assert_evaluated_per_patient(out)


def test_rerun_skips_finished_stages(smoke_run, capsys):
    before = {s: stage_record(smoke_run, s)["finished"] for s in ("prepare", "augment", "evaluate", "explain", "report")}
    first = read_json(smoke_run / "timings.json")
    assert first["computed"]["train"] == first["last_run"]["train"]
    assert main(["run", "--config", "smoke", "--out", str(smoke_run)]) == 0
    after = {s: stage_record(smoke_run, s)["finished"] for s in before}
    assert after == before  # nothing recomputed
    times = read_json(smoke_run / "timings.json")
    assert times["last_run"]["total"] < 60
    # A stage found up to date keeps the seconds it took to compute (the report and benchmarks show those).
    assert times["computed"]["train"] == first["computed"]["train"] > times["last_run"]["train"]


def test_changed_setting_needs_force_and_reruns_only_dependants(smoke_run):
    assert main(["run", "--config", "smoke", "--out", str(smoke_run), "explain.per_class=2"]) == 2  # refused
    before = {s: stage_record(smoke_run, s) for s in ("prepare", "augment", "evaluate", "explain")}
    assert main(["run", "--config", "smoke", "--out", str(smoke_run), "--force", "explain.per_class=2"]) == 0
    after = {s: stage_record(smoke_run, s) for s in before}
    for s in ("prepare", "augment", "evaluate"):
        assert after[s] == before[s], s
    assert after["explain"]["key"] != before["explain"]["key"]


def test_one_model_and_one_strategy_give_a_full_report(tmp_path, phantom_cache):
    out = tmp_path / "one"
    assert main(["run", "--config", "smoke", "--out", str(out), "model.names=[test_resnet]",
                 "augment.strategies=[balanced]"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["table1"]] == ["test_resnet"]
    assert "nothing to compare it with" in results["answers"]["q3_best_by_auc"]
    metrics = read_json(out / "metrics.json")
    assert metrics["question_1"]["ranked_by_accuracy"] == ["test_resnet"] and metrics["comparisons_file"]
    md = (out / "report.md").read_text()
    assert "Only one model (test\\_resnet) in this run: there is no other model to compare it with" in md
    assert "No paired tests against restoration: only one strategy (balanced) was trained" in md
    assert "| (e) flip rate, restoration − balanced | not compared |" in md
    assert "One training seed per model" in md


def test_deleted_generated_images_rebuild_augment_and_nothing_after_it(smoke_run):
    # The broken folder of issue 15: a record said "done" while 11 of augment's 70 generated images
    # were gone (a second process had removed them), and every later run, --force included, failed.
    generated = sorted((smoke_run / "augment" / "generated").rglob("*.png"))
    assert len(generated) == 70  # 14 healthy training images (smoke's phantom split by patient, near-duplicates reported) x 5 sigmas
    for p in generated[:11]:
        p.unlink()
    later = ("prepare", "train", "strategies", "evaluate", "explain")
    before = {s: stage_record(smoke_run, s) for s in later}
    augmented = (smoke_run / "augment" / "manifest.csv").read_bytes()
    # the run's own config.yaml: earlier tests may have changed a setting with --force
    assert main(["run", "--config", str(smoke_run / "config.yaml"), "--out", str(smoke_run)]) == 0
    assert len(list((smoke_run / "augment" / "generated").rglob("*.png"))) == 70
    assert (smoke_run / "augment" / "manifest.csv").read_bytes() == augmented  # rebuilt the same: seeded
    assert {s: stage_record(smoke_run, s) for s in later} == before  # nothing after it recomputed


def test_model_card_states_the_augmentation_checks_of_a_full_run(smoke_run):
    # The card's limitations come from this run's checks: (e) is measured only by the strategies stage.
    from medauc.deploy.card import model_card
    from medauc.deploy.chosen import choose

    chosen = choose(smoke_run)
    card = model_card(chosen, read_json(chosen.model_dir / "model.json"))
    assert chosen.why.startswith("best by auc_macro") and chosen.model in ("test_resnet", "test_vit")
    assert "The model was trained on restored healthy images" in card
    assert "after restoration, tumour test images are called healthy" in card  # check (e), from strategies.json
    assert "restored and original healthy images can be told apart" in card  # check (d), from augment_checks.json
    assert "No metrics for" not in card and "Not explained in this run" not in card
