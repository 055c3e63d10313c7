"""Table 1, the classifiers: headline metrics, per-class AUC, paired comparisons, accuracy versus AUC,
stability over seeds, training curves, ROC and other curves, the operating threshold, predictive values at
clinical prevalences, and decision curves (:mod:`medauc.report.sections.clinic`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medauc.answers import first_seed as _first_seed
from medauc.formatting import ci_label, fmt, fmt_est, fmt_pct
from medauc.report import figures
from medauc.report.context import Context
from medauc.report.sections.clinic import decision_section, operating_section, operating_xy, roc_per_class, training_section
from medauc.report.tables import comparisons_table, metrics_table, undefined_note


def models_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Table 1: the classifiers")
    metrics = ctx.required("metrics.json", "metrics", "medauc evaluate")
    if not metrics:
        return
    aug = ctx.cfg.augment.enabled
    trained_on = "the augmented, imbalanced training set (restoration-based augmentation of the healthy class)" if aug else "the original training set"
    doc.p(f"Each model trained on {trained_on}, selected on the validation split "
          f"(monitor: {ctx.cfg.train.monitor}), and evaluated once on the original test images. "
          f"Screening view: {metrics['negative_class']} = negative, any other class = positive, score = 1 − p({metrics['negative_class']}).")
    if ctx.cfg.train.monitor == "test":
        doc.p("Warning: train.monitor=test — the test loss drove the learning-rate schedule and early stopping, "
              "as in the original study. The test set leaked into model selection; its numbers are optimistic.", "warning")
    if metrics.get("ignored"):
        doc.p("Left out (not in this run's model.names/train.seeds): the predictions of "
              + ", ".join(f"{r['model']} seed {r['seed']}" for r in metrics["ignored"]) + ".", "note")
    ctx.results["table1"] = metrics_table(doc, metrics, "Table 1: test-set performance")
    classes = metrics["classes"]
    rows = []
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        rows.append([name] + [fmt_est(s["metrics"].get(f"auc_{c}")) for c in classes])
    doc.table(["model"] + [f"AUC {c}" for c in classes], rows, f"One-vs-rest AUC per class (first seed, {ci_label(metrics)})")
    undefined_note(doc, [(f"{name} auc_{c}", _first_seed(m)[1]["metrics"].get(f"auc_{c}"))
                         for name, m in metrics["models"].items() for c in classes])

    comp_path = ctx.path("comparisons.csv")
    first_seed = _first_seed(next(iter(metrics["models"].values())))[0]
    if len(metrics["models"]) < 2:
        doc.p(f"Only one model ({next(iter(metrics['models']))}) in this run: there is no other model to compare it with, "
              "so there are no paired comparisons and no ranking.", "note")
    elif comp_path.exists():
        comparisons = pd.read_csv(comp_path)
        primary = metrics.get("primary_metric", "auc_macro")
        tests = ({"paired_bootstrap": "paired patient bootstrap", "delong": "DeLong with Obuchowski's clustered variance"}
                 if metrics.get("unit") == "patients" else {"paired_bootstrap": "paired bootstrap", "delong": "DeLong"})
        comparisons_table(doc, comparisons, ["four_class", "screening"], ["accuracy", "auc_macro", "screening_auc"],
                          f"Paired comparisons on the same test images, {ci_label(metrics)}: accuracy and macro AUC by "
                          f"{tests['paired_bootstrap']}, screening AUC by {tests['delong']}; Holm correction within each "
                          f"family: the primary family ({primary}, fixed in advance: evaluate.primary_metric) is the one the "
                          "verdicts on the study's questions rest on; each other metric is a secondary family of its own; "
                          f"detectable = the smallest difference the test could detect with {metrics.get('power', 0.8):.0%} power "
                          "at the family's Bonferroni level alpha/m (the bound of Holm's first step), so a 'no' beside it "
                          "means the test set is too small to tell", first_seed)

    q = metrics.get("question_1")
    if q:
        doc.h("Accuracy versus AUC", 3)
        by_acc, by_auc = q.get("ranked_by_accuracy") or [], q.get("ranked_by_auc") or []
        if len(by_acc) > 1:
            doc.table(["rank", "by accuracy", "by macro AUC"],
                      [[i + 1, a, b] for i, (a, b) in enumerate(zip(by_acc, by_auc))],
                      "Models ranked by accuracy and by AUC")
        doc.p(q["answer"], "answer")
        for pair in q.get("pairs", []):
            doc.p(pair["sentence"])
    rankings = metrics.get("rankings") or []
    n_seeds = max(len(m["seeds"]) for m in metrics["models"].values())
    if n_seeds == 1:
        doc.p("One training seed per model: the intervals above are over test images only; how much a result varies "
              "from one training run to the next is not measured (set train.seeds to several seeds to measure it).", "note")
    if n_seeds > 1 and rankings:
        rows = [[r["metric"], r["model_a"], r["model_b"], fmt(r["mean_a"]), fmt(r["mean_b"]), fmt_pct(r["fraction_seeds_a_better"])]
                for r in rankings if r["metric"] in ("accuracy", "auc_macro", "screening_auc")]
        doc.table(["metric", "A (better on average)", "B", "mean A", "mean B", "seeds where A > B"], rows,
                  f"How stable each ranking is over {n_seeds} seeds")

    training_section(ctx, metrics)
    _curves(ctx, metrics)
    operating_section(ctx, metrics)
    _prevalence(ctx, metrics)
    decision_section(ctx, metrics)
    _model_cards(ctx)


def _model_cards(ctx: Context) -> None:
    """Links to the model cards ``medauc export`` wrote (``export/<model>/<seed>/model_card.md``)."""
    cards = sorted(p.relative_to(ctx.run_dir).as_posix() for p in ctx.run_dir.glob("export/*/*/model_card.md"))
    ctx.results["model_cards"] = cards
    if cards:
        ctx.doc.h("Model cards", 3)
        ctx.doc.p("Written by `medauc export` with each exported model (ONNX, checked against PyTorch): what the model is, "
                  "how it was trained, its metrics with intervals, its operating threshold, calibration, Grad-CAM result "
                  "and its limitations as measured in this run.")
        ctx.doc.links([(f"{c.split('/')[1]} seed {c.split('/')[2]}: {c}", c) for c in cards])


def _read_curve(ctx: Context, rel: str, curve: str) -> pd.DataFrame | None:
    p = ctx.path(rel)
    if not p.exists():
        return None
    df = pd.read_csv(p)
    return df[df["curve"] == curve]


def _curves(ctx: Context, metrics: dict[str, Any]) -> None:
    doc = ctx.doc
    doc.h("Curves, confusion matrices and calibration", 3)
    roc, pr, cal, mats, ops = {}, {}, {}, {}, {}
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        paths = s.get("curves", {})
        auc = s["metrics"].get("screening_auc", {}).get("value")
        r = _read_curve(ctx, paths.get("roc", ""), "screening")
        if r is not None and len(r):
            label = f"{name} (AUC {fmt(auc, 3)})"
            roc[label] = (r["fpr"].to_numpy(), r["tpr"].to_numpy())
            op = operating_xy(s)
            if op is not None:
                ops[label] = op
        q = _read_curve(ctx, paths.get("pr", ""), "screening")
        if q is not None and len(q):
            q = q.sort_values("recall")
            pr[name] = (q["recall"].to_numpy(), q["precision"].to_numpy())
        c = _read_curve(ctx, paths.get("calibration", ""), "screening")
        if c is not None and len(c):
            cal[name] = (c["mean_predicted"].to_numpy(), c["observed"].to_numpy())
        cm = s.get("confusion_matrix")
        if cm:
            mats[name] = np.asarray(cm["counts"])
    if roc:
        doc.figure(figures.curves(roc, "1 − specificity", "sensitivity", "Screening ROC (tumour vs healthy), test set", diagonal=True,
                                  points=ops, points_label="operating point (chosen on validation)"),
                   "ROC curves of the screening score, first seed; circles: each model's operating point, the threshold "
                   "chosen on validation applied to the test set.", "roc_screening.png", 520)
        roc_per_class(ctx, metrics)
    if pr:
        prev = metrics.get("test_prevalence")
        doc.figure(figures.curves(pr, "recall (sensitivity)", "precision (PPV)", f"Screening precision-recall, test prevalence {fmt(prev, 3)}"),
                   "Precision-recall curves of the screening score at the test set's prevalence.", "pr_screening.png", 520)
    if mats:
        doc.figure(figures.confusion_matrices(mats, metrics["classes"]), "Confusion matrices (test set, first seed; colour = row share).",
                   "confusion.png")
    if cal:
        doc.figure(figures.curves(cal, "mean predicted probability", "observed frequency", "Reliability of the screening score (equal-mass bins)", diagonal=True),
                   "Calibration: points on the diagonal are well calibrated.", "calibration.png", 520)


def _prevalence(ctx: Context, metrics: dict[str, Any]) -> None:
    doc = ctx.doc
    doc.h("At a clinical prevalence", 3)
    doc.p("PPV and NPV expected at each prevalence, computed from the test sensitivity and specificity "
          "(not by resampling the test set), at the arg-max decision and at the operating point chosen on the "
          "validation split; expected AUPRC from the ROC curve at that prevalence.")
    rows, out = [], []
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        for entry in s.get("prevalence", []):
            label = f"{entry['prevalence']:.4g}" + (" (test set)" if entry.get("source") not in (None, "evaluate.prevalences") else "")
            rows.append([name, label] + [fmt_est(entry.get(k)) for k in ("ppv", "npv", "op_ppv", "op_npv", "auprc")])
            out.append({"model": name, **entry})
    doc.table(["model", "prevalence", "PPV", "NPV", "PPV at op. point", "NPV at op. point", "AUPRC"], rows,
              f"Positive and negative predictive value at realistic prevalences ({ci_label(metrics)})")
    undefined_note(doc, [(f"{e['model']} {k} at prevalence {e['prevalence']:.4g}", e.get(k))
                         for e in out for k in ("ppv", "npv", "op_ppv", "op_npv", "auprc")])
    ctx.results["prevalence"] = out
