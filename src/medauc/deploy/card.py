"""The model card: one Markdown page about the chosen model, from the run's files only.

Sections in the spirit of the Hugging Face model cards (model details, intended use, data, training,
evaluation, limitations, how to use), each filled from a file a stage wrote: ``model.json`` (the
recipe), ``manifest.csv`` and ``data_audit.json`` (through the report's own data section),
``metrics.json`` (every metric with its CI, the operating point, calibration), ``explain.json``
(Grad-CAM localisation), ``augment_checks.json`` and ``strategies.json`` (the checks on the
augmentation, check e's shortcut among them), and the export's own check. A missing file gives a
sentence saying which command makes it. The page is a :class:`medauc.report.document.Document`
rendered as the report's Markdown is, without figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medauc import fileio
from medauc.answers import not_learnt, study_answers
from medauc.deploy.chosen import Chosen
from medauc.formatting import ci_unit, fmt, fmt_est
from medauc.report.context import Context
from medauc.report.document import Document, Figure, to_markdown
from medauc.report.provenance import image_checks
from medauc.report.sections.data import data_section

CARD_METRICS = (
    ("accuracy", "4-class accuracy"), ("balanced_accuracy", "balanced accuracy"), ("auc_macro", "macro one-vs-rest AUC"),
    ("f1_macro", "macro F1"), ("screening_auc", "screening AUC (any tumour vs healthy)"),
    ("screening_sensitivity", "screening sensitivity, arg-max"), ("screening_specificity", "screening specificity, arg-max"),
    ("op_sensitivity", "sensitivity at the operating threshold"), ("op_specificity", "specificity at the operating threshold"),
    ("op_ppv", "PPV at the operating threshold (test prevalence)"), ("op_npv", "NPV at the operating threshold (test prevalence)"),
)
CALIBRATION = (("ece", "expected calibration error (top label)"), ("screening_ece", "expected calibration error (screening score)"),
               ("brier", "Brier score"), ("log_loss", "log loss"))


def _recipe(meta: dict[str, Any]) -> list[list[str]]:
    t = (meta.get("config") or {}).get("train") or {}
    m = (meta.get("config") or {}).get("model") or {}
    name = meta["model_name"]
    lr = (t.get("lr_by_model") or {}).get(name, t.get("lr"))
    epochs = (t.get("epochs_by_model") or {}).get(name, t.get("epochs"))
    start = "ImageNet-pretrained" if m.get("pretrained") or m.get("weights") else "from scratch (random initialisation)"
    return [
        ["architecture", f"timm {name}, {meta.get('num_params', 'n/a')} parameters, {meta['in_chans']} input channel(s), "
                         f"{meta['image_size']} x {meta['image_size']} px"],
        ["initialisation", start],
        ["optimiser", f"{t.get('optimizer')}, learning rate {lr}, weight decay {t.get('weight_decay')}, batch {t.get('batch_size')}"],
        ["schedule", f"{t.get('schedule')}, at most {epochs} epochs, early stopping after {t.get('early_stopping_patience')} "
                     f"epochs without a lower {t.get('monitor')} loss; best epoch {meta.get('epoch')}"],
        ["augmentation in training", f"horizontal flip {t.get('hflip')}, random affine strength {t.get('affine')}, "
                                     f"label smoothing {t.get('label_smoothing')}; imbalance handling {t.get('imbalance')}"],
        ["model selection", "on the validation split" if t.get("monitor") == "val" else
         "on the TEST split (train.monitor=test, the study's leaky protocol): the test metrics below are optimistic"],
        ["precision", str(meta.get("precision", "float32"))],
    ]


def _evaluation(doc: Document, chosen: Chosen) -> dict[str, Any] | None:
    metrics = chosen.metrics
    cell = ((metrics or {}).get("models", {}).get(chosen.model, {}).get("seeds", {}).get(str(chosen.seed)))
    doc.h("Evaluation")
    if not cell:
        doc.p(f"No metrics for {chosen.model} seed {chosen.seed}: run `medauc evaluate --out {chosen.run_dir}`.", "note")
        return None
    m = cell["metrics"]
    doc.p(f"Internal test set: {cell.get('n')} images ({cell.get('n_patients') or 'no'} patients known) of the run's own "
          f"split, never used for training or model selection; {int(metrics.get('level', 0.95) * 100)}% bootstrap intervals "
          f"{ci_unit(metrics)}, {metrics.get('n_bootstrap')} resamples. External test set: none in this run (the model has "
          "been tested only on data from the source it was trained on).")
    doc.table(["metric", "value [CI]"], [[label, fmt_est(m.get(k))] for k, label in CARD_METRICS if k in m],
              "Internal test set")
    prev = [p for p in cell.get("prevalence") or [] if p.get("source") != "test set" and "op_ppv" in p]
    if prev:
        doc.table(["prevalence", "PPV at the threshold", "NPV at the threshold"],
                  [[f"{p['prevalence']:g}", fmt_est(p["op_ppv"]), fmt_est(p.get("op_npv"))] for p in prev],
                  "Expected at clinical prevalences (from the test sensitivity and specificity at the operating threshold)")
    doc.h("Operating threshold", 3)
    doc.p(chosen.threshold_text() + ". Another hospital's prevalence and scanners change what this threshold gives: "
          "check it on local data before use.")
    doc.h("Calibration", 3)
    doc.table(["metric", "value [CI]"], [[label, fmt_est(m.get(k))] for k, label in CALIBRATION if k in m],
              "Calibration on the internal test set (0 is perfect; reliability curves: curves/<model>/<seed>/calibration.csv)")
    return cell


def _explanations(doc: Document, chosen: Chosen, explain: dict[str, Any] | None) -> None:
    doc.h("Explanations (Grad-CAM)")
    entry = ((explain or {}).get("models") or {}).get(chosen.model)
    if not entry:
        doc.p(f"Not explained in this run: run `medauc explain --out {chosen.run_dir}`.", "note")
        return
    for method, r in (entry.get("methods") or {}).items():
        pooled = (r.get("trained") or {}).get("all") or {}
        twin = (r.get("random_twin") or {}).get("all") or {}
        doc.table(["score", "trained model", "random-weight twin"],
                  [[k.replace("_", " "), fmt_est(v), fmt_est(twin.get(k))] for k, v in pooled.items()],
                  f"{method} on layer {entry.get('target_layer')} (seed {entry.get('seed')}), against the true lesion masks "
                  f"of {explain.get('n_with_mask')} test images")
        sanity = r.get("sanity") or {}
        if sanity.get("text"):
            doc.p(sanity["text"])


def _external_notes(ctx: Context, chosen: Chosen) -> list[str]:
    """This model at each external set of the run (``external.json``), or that none was tested."""
    ext = ctx.json("external.json") if chosen.cfg.evaluate.external else None
    if not ext:
        return ["No external test set: how the model does at another hospital (scanner, protocol, population) is not "
                "measured in this run (evaluate.external)."]
    primary, notes = ext.get("primary_metric", "auc_macro"), []
    for name, site in ext.get("sites", {}).items():
        s = ((site.get("models") or {}).get(chosen.model, {}).get("seeds") or {}).get(str(chosen.seed))
        if not s:
            continue
        op = s.get("metrics", {})
        notes.append(f"At the external set {name} ({site.get('n_images')} images): {primary} {fmt_est(op.get(primary), 3)}, "
                     f"a change of {fmt_est((s.get('change') or {}).get(primary), 3)} from the internal test set; at the "
                     f"validation-chosen threshold sensitivity {fmt_est(op.get('op_sensitivity'), 3)}, specificity "
                     f"{fmt_est(op.get('op_specificity'), 3)}.")
    if (ext.get("question_5") or {}).get("answer"):
        notes.append("Does the run's winner hold at another hospital? " + ext["question_5"]["answer"])
    return notes


def _limitations(doc: Document, ctx: Context, chosen: Chosen, meta: dict[str, Any]) -> None:
    doc.h("Limitations, as measured in this run")
    cfg = chosen.cfg
    notes = []
    if cfg.data.source == "phantom":
        notes.append("The data are the built-in synthetic phantom: nothing here is a fact about real MRI or real patients.")
    if meta.get("test_leak"):
        notes.append("The test set took part in model selection (train.monitor=test): the test metrics are optimistic.")
    comp = ctx.path("comparisons.csv")
    found = study_answers(chosen.metrics, pd.read_csv(comp) if comp.exists() else None, ctx.json("strategies.json"),
                          image_checks(ctx), ctx.json("explain.json"), cfg.evaluate.primary_metric, cfg.evaluate.level)
    if "q2_restoration" in found and cfg.augment.enabled:
        notes.append(f"The model was trained on restored healthy images. The checks on them (measured with "
                     f"{cfg.augment.strategy_model} trained under each imbalance strategy): "
                     + found["q2_restoration"]["text"].split("In this run, ", 1)[-1])
    flip = (found.get("q2_restoration") or {}).get("shortcut_flip")
    if flip and (flip.get("ci") or [None])[0] is not None and flip["ci"][0] > 0:
        notes.append("Check (e) found a shortcut: images that look restored are called healthy more often. Do not apply "
                     "this model to images that went through denoising or similar restoration.")
    if "q3_best_by_auc" in found:
        notes.append("Among the run's models (the report's question 3): " + found["q3_best_by_auc"]["text"].split("? ", 1)[-1])
    if chosen.metrics:
        notes += not_learnt({"models": {k: v for k, v in chosen.metrics.get("models", {}).items() if k == chosen.model}})
    notes += _external_notes(ctx, chosen)
    if len(cfg.train.seeds) < 2:
        notes.append("One training seed: how much the metrics move from one training to the next is not measured here.")
    notes.append(f"Inputs: 2-D grey-level slices like the training data ({', '.join(cfg.data.classes)}); any other class, "
                 "body part, modality or age group is out of scope, and the model always answers with one of its classes.")
    for n in notes:
        doc.p(n)


def model_card(chosen: Chosen, meta: dict[str, Any], export: dict[str, Any] | None = None) -> str:
    """The model card of ``chosen`` as Markdown. ``meta``: its ``model.json``; ``export``: the ONNX export's facts
    (``file``, ``sha256``, ``check``), or None."""
    run = chosen.run_dir
    doc = Document(f"Model card: {chosen.model} (seed {chosen.seed}), medauc run {run.name}")
    ctx = Context(cfg=chosen.cfg, run_dir=run, doc=doc, results={})
    env = ctx.json("environment.json") or {}
    doc.h("Model details")
    doc.p(f"A {len(meta['classes'])}-class brain-MRI slice classifier ({', '.join(meta['classes'])}), trained and evaluated "
          f"by medauc in the run folder {run.name} ({chosen.why}). The screening view: {chosen.negative_class} is negative, "
          "every other class positive; screening score = 1 - p(" + chosen.negative_class + ").")
    pkgs = env.get("packages") or {}
    software = f"medauc {pkgs.get('medauc', 'n/a')}, torch {pkgs.get('torch', 'n/a')}, git commit {env.get('git_commit', 'n/a')}"
    doc.table(["", ""], _recipe(meta) + [["software", software]], "Model and training recipe")
    doc.h("Intended use")
    doc.p("Research and teaching: reproducing and stress-testing the comparison of classifiers on brain MRI. Not a medical "
          "device: not for diagnosis, triage or any decision about a patient. A hospital evaluating it must test it on its "
          "own data first (the intervals below hold for the data it was tested on).")
    data_section(ctx)
    doc.blocks = [b for b in doc.blocks if not isinstance(b, Figure)]  # a card is text: the figures stay in the report
    _evaluation(doc, chosen)
    _explanations(doc, chosen, ctx.json("explain.json"))
    _limitations(doc, ctx, chosen, meta)
    doc.h("How to use")
    doc.code(f"medauc predict --run {run} --model {chosen.model} --seed {chosen.seed} SCANS/ --out predictions.csv")
    if export:
        doc.p(f"ONNX: {export['file']} (sha256 {export['sha256'][:16]}…): input image, float32 (N, 1, {meta['image_size']}, "
              f"{meta['image_size']}), 8-bit grey levels 0..255 after the run's reading and resize (metadata "
              "medauc.preprocessing); outputs logits and probabilities (N, classes). Checked against PyTorch on "
              f"{export['check']['n_images']} test images: largest difference {export['check']['max_abs_diff']['probabilities']:.2e} "
              f"in probabilities, {export['check']['max_abs_diff']['logits']:.2e} in logits (tolerance {export['check']['tolerance']:g}).")
    return to_markdown(doc, "")


def write_card(path: str | Path, chosen: Chosen, meta: dict[str, Any], export: dict[str, Any] | None = None) -> Path:
    """Write :func:`model_card` to ``path`` atomically."""
    return fileio.write_text(path, model_card(chosen, meta, export))
