"""The report: generated from a run folder's files, escaped, self-contained, loads in Chromium."""

import json

import numpy as np
import pandas as pd
import pytest

from medauc.config import load_config
from medauc.report import report_stage
from medauc.report.browser import check_report, find_chromium
from medauc.report.document import Document, to_html, to_markdown
from medauc.fileio import write_json
from medauc.records import clear_stage
from medauc.runs import open_run


def _fake_run(tmp_path, classes=("healthy", "glioma", "meningioma", "pituitary")):
    cfg = load_config("smoke", [f"data.classes={json.dumps(list(classes))}"])
    run = open_run(tmp_path / "run", cfg)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        label = classes[i % len(classes)]
        rows.append({"image_id": f"{label}/{i}", "path": f"/x/{i}.png", "label": label,
                     "split": ["train", "val", "test"][i % 3], "sha256": "", "phash": "", "width": 64,
                     "height": 64, "mode": "L", "group": i})
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    write_json(run / "data_audit.json", {
        "counts": {}, "unreadable": [{"path": "/x/<b>bad</b>.png", "reason": "zero-byte file"}],
        "exact_duplicate_groups": [["a", "b"]], "near_duplicate_groups": [], "label_conflicts": [],
        "cross_split_duplicates": 1,
        "shortcut_auc": {"per_class": {c: float(rng.uniform(0.4, 0.6)) for c in classes}, "macro": 0.5, "max": 0.6},
    })
    return cfg, run


def test_report_files_are_written_and_escaped(tmp_path):
    cfg, run = _fake_run(tmp_path, classes=("healthy", "<script>alert(1)</script>"))
    out = report_stage(cfg, run)
    html = (run / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html  # data-derived text is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html
    assert "<script" not in html.lower()  # the report itself carries no script
    md = (run / "report.md").read_text()
    assert "\\<script\\>" in md
    results = json.loads((run / "results.json").read_text())
    assert results["data"]["n_images"] == 40
    assert results["data"]["audit"]["skipped"] == 1
    assert set(out) == {"html", "md", "json"}


def test_report_is_cached_and_rebuilt_when_inputs_change(tmp_path):
    cfg, run = _fake_run(tmp_path)
    assert "html" in report_stage(cfg, run)
    assert report_stage(cfg, run) == {"skipped": True}
    df = pd.read_csv(run / "manifest.csv")
    df.loc[0, "split"] = "test"
    df.to_csv(run / "manifest.csv", index=False)
    assert "html" in report_stage(cfg, run)


def test_document_renders_tables_and_figures_in_both_formats():
    from medauc.report.figures import curves

    doc = Document("t")
    doc.h("Section")
    doc.table(["a", "b"], [["x", 0.123456], ["y", float("nan")]], "cap")
    doc.figure(curves({"m": ([0, 1], [0, 1])}, "x", "y", "t", diagonal=True), "a curve", "c.png")
    html = to_html(doc)
    assert "0.1235" in html and "n/a" in html and "data:image/png;base64," in html
    md = to_markdown(doc)
    assert "| x | 0.1235 |" in md and "![a curve](report_files/c.png)" in md


def _evaluated_run(tmp_path, skills=None, n_bootstrap=100):
    """A run folder with simulated predictions of models {name: skill}, evaluated."""
    from medauc.evaluate import evaluate_stage
    from medauc.evaluate.synthetic import simulate_run

    skills = skills or {"a": 2.0, "b": 2.4}
    cfg, run = _fake_run(tmp_path)
    cfg = load_config("smoke", [f"model.names=[{','.join(skills)}]", f"evaluate.n_bootstrap={n_bootstrap}"])
    run = open_run(run, cfg, force=True)
    simulate_run(run, skills)
    evaluate_stage(cfg, run)
    return cfg, run


def test_report_tables_come_from_metrics_files(tmp_path):
    cfg, run = _evaluated_run(tmp_path)
    report_stage(cfg, run)
    metrics = json.loads((run / "metrics.json").read_text())
    results = json.loads((run / "results.json").read_text())
    html = (run / "report.html").read_text()
    acc = metrics["models"]["b"]["seeds"]["0"]["metrics"]["accuracy"]
    assert f"{acc['value']:.4f} [{acc['low']:.4f}, {acc['high']:.4f}]" in html
    assert [r["model"] for r in results["table1"]] == ["a", "b"]
    import html as html_lib

    assert html_lib.escape(metrics["question_1"]["answer"]) in html
    # the answers' sentences and the numbers behind them, keyed alike (medauc.answers)
    assert set(results["answer_data"]) == set(results["answers"])
    assert results["answer_data"]["q1_accuracy_vs_auc"]["ranked_by_auc"] == metrics["question_1"]["ranked_by_auc"]
    assert html.count("data:image/png;base64,") >= 4  # ROC, PR, confusion, calibration


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (make setup installs it on Debian)")
def test_report_loads_in_chromium_without_console_errors(tmp_path):
    cfg, run = _evaluated_run(tmp_path)
    report_stage(cfg, run)
    check = check_report(run / "report.html")
    assert check.console == []
    assert check.dom_chars > 1000
    assert len(check.images) >= 4 and all(w > 100 and h > 100 for w, h in check.images)


def test_models_that_did_not_learn_are_named(tmp_path):
    # what counts as not learnt: tests/test_answers.py (medauc.answers.not_learnt on hand-made files)
    cfg, run = _evaluated_run(tmp_path, {"good": 2.4, "flat": 0.0}, n_bootstrap=200)
    report_stage(cfg, run)
    html = (run / "report.html").read_text()
    assert "Model flat (seed 0) has not learnt" in html and "reaches 0.5, chance" in html
    assert "good (seed 0) has not learnt" not in html


def test_augmentation_section_shows_baselines_beside_the_unet(tmp_path):
    cfg, run = _fake_run(tmp_path)
    rows = [{"sigma": s, "n": 3, "psnr_noisy": 100.0 if s == 0 else 20.0, "psnr_restored": 28.5, "ssim_noisy": 0.5,
             "ssim_restored": 0.9, "psnr_blur": 26.25, "ssim_blur": 0.8, "blur_sigma": 0.75, "psnr_nlm": 27.125,
             "ssim_nlm": 0.85} for s in (0.0, 0.1, 0.3)]
    write_json(run / "augment_checks.json", {"counts": {}, "b_restoration_quality": {"validation": rows, "generated": []}})
    rng = np.random.default_rng(0)
    img = lambda *shape: rng.random(shape).astype(np.float32)  # noqa: E731
    (run / "augment").mkdir()
    np.savez(run / "augment" / "restoration_examples.npz", clean=img(2, 16, 16), sigmas=np.array([0.1, 0.3], np.float32),
             blur_sigma=np.array([0.75, 1.5], np.float32), noisy=img(2, 2, 16, 16), unet=img(2, 2, 16, 16),
             blur=img(2, 2, 16, 16), nlm=img(2, 2, 16, 16))
    report_stage(cfg, run)
    md = (run / "report.md").read_text()
    assert "PSNR best blur (width)" in md and "26.25 (0.75 px)" in md and "27.12" in md  # baselines from the checks file
    assert "augment_baselines.png" in md and "0.75 px at σ=0.1" in md


def test_one_model_one_seed_report_says_what_it_cannot_compare(tmp_path):
    cfg, run = _evaluated_run(tmp_path, {"only": 2.0})
    report_stage(cfg, run)
    html = (run / "report.html").read_text()
    assert "Only one model was evaluated (only): there is nothing to rank or compare." in html
    assert "Only one model (only) in this run: there is no other model to compare it with" in html
    assert "One training seed per model" in html
    assert "Models ranked by accuracy and by AUC" not in html
    # a metrics.json written before question_1 kept its keys for one model still gives a report
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["question_1"] = {"answer": "Only one model was evaluated: there is nothing to rank.", "pairs": []}
    write_json(run / "metrics.json", metrics)
    clear_stage(run, "evaluate")  # as an older medauc left it: no record of the file to check it against
    assert "html" in report_stage(cfg, run)
    assert "there is nothing to rank." in (run / "report.html").read_text()


def test_report_names_undefined_shares_and_unassessable_comparisons(tmp_path):
    from medauc.evaluate import evaluate_stage
    from medauc.evaluate.synthetic import simulate_run

    cfg, run = _fake_run(tmp_path)
    cfg = load_config("smoke", ["model.names=[a,b]", "evaluate.n_bootstrap=100"])
    run = open_run(run, cfg, force=True)
    simulate_run(run, {"a": 2.0, "b": 2.4}, n_per_class=(60, 40, 40, 3))  # 3 pituitary test images
    evaluate_stage(cfg, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"]["b"]["seeds"]["0"]["metrics"]["accuracy"]["undefined_share"] == 0.0
    metrics["models"]["b"]["seeds"]["0"]["metrics"]["screening_f1"]["undefined_share"] = 0.37
    write_json(run / "metrics.json", metrics)
    clear_stage(run, "evaluate")  # a planted value: without it, the report refuses an edited metrics.json
    report_stage(cfg, run)
    md = (run / "report.md").read_text()
    assert "b screening\\_f1 (37%)" in md and "describes only the resamples where it is defined" in md
    row = next(line for line in md.splitlines() if line.startswith("| auc\\_macro | primary | a | b |"))
    assert row.endswith("| not assessable |")
    assert "auc\\_macro (a vs b): too few test images: pituitary has 3 (fewer than 5)" in md
    assert next(line for line in md.splitlines() if line.startswith("| accuracy | secondary | a | b |")).endswith(("| yes |", "| no |"))


def test_report_names_predictions_left_out_of_table_1(tmp_path):
    from medauc.evaluate import evaluate_stage
    from medauc.evaluate.synthetic import simulate_run

    cfg, run = _fake_run(tmp_path)
    cfg = load_config("smoke", ["model.names=[a,b]", "evaluate.n_bootstrap=50"])
    run = open_run(run, cfg, force=True)
    simulate_run(run, {"a": 2.0, "b": 2.4, "old": 3.0})  # "old": a model no longer in model.names
    evaluate_stage(cfg, run)
    report_stage(cfg, run)
    md = (run / "report.md").read_text()
    assert "Left out (not in this run's model.names/train.seeds): the predictions of old seed 0." in md
    assert not any(line.startswith("| old |") for line in md.splitlines())


def test_augmentation_section_warns_of_a_denoiser_at_another_size(tmp_path):
    cfg, run = _fake_run(tmp_path)
    warning = "augment.image_size=16 differs from data.image_size=32: the classifier sees generated healthy images resized twice"
    write_json(run / "augment_checks.json", {
        "counts": {}, "image_size": {"denoiser": 16, "classifier": 32, "warning": warning},
        "d_artefact_detectability": {"auc": 0.9, "ci": [0.8, 0.95], "image_size": 32},
    })
    report_stage(cfg, run)
    md = (run / "report.md").read_text()
    assert "Warning: augment.image\\_size=16 differs from data.image\\_size=32" in md
    assert "(AUC, at the classifier's 32 px)" in md


def test_phantom_caption_names_the_anatomy_in_words(tmp_path):
    # phantom.json's anatomy is a mapping {source, path, description}: the caption shows the
    # description, not the mapping's Python repr.
    from PIL import Image

    cfg, run = _fake_run(tmp_path)
    (run / "phantom").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "phantom" / "montage.png")
    write_json(run / "phantom" / "phantom.json", {"anatomy": {"source": "colin27", "path": "/usr/share/x.nii.gz",
                                                               "description": "Colin27 head with MNI152 brain mask"}})
    report_stage(cfg, run)
    md = (run / "report.md").read_text()
    assert "Anatomy: Colin27 head with MNI152 brain mask." in md
    assert "{'source'" not in md
