"""Parts of Table 1's section a clinician reads before deploying a model: the training curves, the per-class
ROC curves, the operating threshold chosen on validation, and the decision curve analysis.

Each part reads the run's files only (``train/<model>/<seed>/history.csv`` and ``model.json``,
``curves/<model>/<seed>/roc.csv``, ``metrics.json``, ``decision.json``, ``decision_curves.csv``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medauc.answers import first_seed as _first_seed
from medauc.formatting import ci_label, fmt, fmt_ci, fmt_est
from medauc.report import figures
from medauc.report.context import Context
from medauc.report.tables import undefined_note

PER = 10_000  # the decision table and figure read in net true positives per this many scans


def training_section(ctx: Context, metrics: dict[str, Any]) -> None:
    """Loss and the monitored split's macro AUC per epoch, seeds overlaid, one column per model."""
    doc = ctx.doc
    histories: dict[str, dict[str, dict[str, list[float]]]] = {}
    best: dict[str, dict[str, int]] = {}
    monitored = "validation"
    for model, m in metrics["models"].items():
        for seed in m["seeds"]:
            folder = ctx.path(f"train/{model}/{seed}")
            if not (folder / "history.csv").is_file():
                continue
            h = pd.read_csv(folder / "history.csv")
            if h.empty:
                continue
            if "monitored_split" in h and str(h["monitored_split"].iloc[0]) == "test":
                monitored = "test"
            histories.setdefault(model, {})[seed] = {c: h[c].astype(float).tolist() for c in ("epoch", "train_loss", "val_loss", "val_macro_auc")}
            meta = ctx.json(f"train/{model}/{seed}/model.json") or {}
            if meta.get("epoch") is not None:
                best.setdefault(model, {})[seed] = int(meta["epoch"])
    doc.h("Training curves", 3)
    if not histories:
        ctx.missing("training history (train/<model>/<seed>/history.csv)", "medauc train")
        return
    doc.figure(figures.training_curves(histories, monitored, best),
               f"Per epoch and model: training loss (solid; with label smoothing when train.label_smoothing > 0) and the "
               f"{monitored} split's plain cross-entropy (dashed; the monitored loss: the learning-rate schedule, early "
               f"stopping and the checkpoint kept, circled, follow it); below, the {monitored} split's macro AUC. "
               "Seeds in colours.", "training_curves.png")
    ctx.results["training_best_epoch"] = best


def roc_per_class(ctx: Context, metrics: dict[str, Any]) -> None:
    """One ROC panel per model: one-vs-rest per class and the screening ROC with its operating point."""
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    points: dict[str, tuple[float, float]] = {}
    for name, m in metrics["models"].items():
        _, s = _first_seed(m)
        p = ctx.path(s.get("curves", {}).get("roc", "")) if s.get("curves", {}).get("roc") else None
        if p is None or not p.is_file():
            continue
        roc = pd.read_csv(p)
        series = {}
        for c in [*metrics["classes"], "screening"]:
            r = roc[roc["curve"] == c]
            if len(r):
                auc = s["metrics"].get("screening_auc" if c == "screening" else f"auc_{c}", {}).get("value")
                label = f"screening, any tumour (AUC {fmt(auc, 3)})" if c == "screening" else f"{c} vs rest ({fmt(auc, 3)})"
                series[label] = (r["fpr"].to_numpy(), r["tpr"].to_numpy())
        if series:
            panels[name] = series
            op = operating_xy(s)
            if op is not None:
                points[name] = op
    if panels:
        ctx.doc.figure(figures.roc_panels(panels, points, "operating point"),
                       "ROC curves per model (test set, first seed): one-vs-rest for each class (the score is p(class)) and, "
                       "black dashed, the screening ROC (score 1 − p(negative class)) with the operating point chosen on "
                       "validation (circle; its test sensitivity and 1 − specificity).", "roc_per_class.png")


def operating_xy(seed_out: dict[str, Any]) -> tuple[float, float] | None:
    """(1 - specificity, sensitivity) of the validation-chosen operating point on the test set, or None."""
    met = seed_out.get("metrics", {})
    se, sp = met.get("op_sensitivity", {}).get("value"), met.get("op_specificity", {}).get("value")
    if se is None or sp is None:
        return None
    return 1.0 - float(sp), float(se)


def operating_section(ctx: Context, metrics: dict[str, Any]) -> None:
    """The threshold chosen on validation and what it gives on the test set, with intervals."""
    doc = ctx.doc
    doc.h("Operating threshold, chosen on validation", 3)
    rows, out = [], []
    for name, m in metrics["models"].items():
        seed, s = _first_seed(m)
        op = s.get("operating_point")
        if not op:
            continue
        met = s["metrics"]
        rule = op.get("threshold_rule", "sensitivity")
        rule_text = (f"sensitivity ≥ {op.get('target_sensitivity'):g}" if rule == "sensitivity" else "Youden's J")
        rows.append([name, rule_text, fmt(op.get("threshold"), 4), fmt(op.get("val_sensitivity"), 3), fmt(op.get("val_specificity"), 3)]
                    + [fmt_est(met.get(f"op_{k}"), 3) for k in ("sensitivity", "specificity", "ppv", "npv")])
        out.append({"model": name, "seed": seed, **op, **{f"op_{k}": met.get(f"op_{k}") for k in ("sensitivity", "specificity", "ppv", "npv")}})
    if not rows:
        doc.p("No operating threshold: the run has no validation predictions (predictions/<model>/<seed>/val.csv).", "note")
        return
    doc.p("The screening threshold is chosen on each model's validation split before the test set is read "
          f"(evaluate.threshold_rule = {', '.join(dict.fromkeys(r.get('threshold_rule', 'sensitivity') for r in out))}) and carried unchanged to the test set: a scan is "
          "called positive when 1 − p(negative class) is at or above it. The test numbers below are what the threshold "
          "gives on new patients; PPV and NPV at the clinical prevalences are in the next table.")
    doc.table(["model", "rule", "threshold", "val. sens.", "val. spec.", "test sensitivity", "test specificity",
               f"test PPV (prevalence {fmt(metrics.get('test_prevalence'), 2)})", "test NPV"], rows,
              f"Operating point chosen on validation, on the test set (first seed, {ci_label(metrics)})")
    undefined_note(doc, [(f"{r['model']} {k}", r.get(k)) for r in out for k in ("op_sensitivity", "op_specificity", "op_ppv", "op_npv")])
    ctx.results["operating_point"] = out


def _prevalence_label(key: str, own: float | None, name: str = "test set") -> str:
    return f"{name} (prevalence {fmt(own, 2)})" if key == "set" else f"prevalence {float(key):g}"


def decision_section(ctx: Context, metrics: dict[str, Any], name: str = "decision", set_label: str = "test set") -> None:
    """Decision curves (one panel per prevalence) and the net-benefit table at a few thresholds of one set.

    ``name``: the files :func:`medauc.evaluate.decision.write_decision` wrote (``<name>.json``,
    ``<name>_curves.csv``); ``set_label``: what the set is called ("test set", an external site's name).
    Its results go to ``results[name]``."""
    doc = ctx.doc
    doc.h("Decision curve analysis" + ("" if set_label == "test set" else f": {set_label}"), 3)
    dec = ctx.json(f"{name}.json")
    curves_path = ctx.path(f"{name}_curves.csv")
    if not dec or not curves_path.is_file():
        # A run evaluated before decision curves existed keeps its evaluate record (same key): a missing
        # metrics.json is what makes the stage run again, --force alone finds it up to date.
        doc.p(f"No decision curve analysis ({name}.json) in this run folder: its evaluation predates it. Remove "
              f"metrics.json and run `medauc evaluate --config {ctx.path('config.yaml')} --out {ctx.run_dir}` "
              "(about a second; nothing is retrained).", "note")
        return
    seed = next(iter(dec["seeds"]))
    own = dec.get("prevalence_own")
    if name == "decision":  # said once, above the test set's; an external set's follows it
        doc.p("Would acting on the model do more good than harm? A clinician who acts (refers, images again) when the risk "
              "exceeds a threshold probability pt accepts pt/(1 − pt) false positives per true positive; net benefit counts "
              "true positives minus false positives weighted so, per scan (Vickers and Elkin 2006), here per "
              f"{PER:,} scans. A model is useful at pt when its curve lies above both treat all (everyone is worked up) and "
              "treat none (nobody is). At a clinical prevalence the true- and false-positive rates are reweighted to it and the "
              "score is used as the risk as it is, uncalibrated to that population.")
    cur = pd.read_csv(curves_path)
    cur = cur[cur["seed"].astype(str) == str(seed)]
    panels = []
    for key in ["set", *[f"{p:g}" for p in dec.get("prevalences", [])]]:
        sub = cur[cur["prevalence"].astype(str) == key]
        if sub.empty:
            continue
        models = {m: g.sort_values("threshold") for m, g in sub.groupby("model", sort=False)}
        first = next(iter(models.values()))
        x = first["threshold"].to_numpy()
        ys = {m: g["net_benefit"].to_numpy() * PER for m, g in models.items()}
        ta = first["treat_all"].to_numpy() * PER
        finite = np.concatenate([y[np.isfinite(y)] for y in ys.values()])
        if finite.size == 0:  # undefined throughout (a set without positives, at a clinical prevalence)
            continue
        prev = (own if key == "set" else float(key)) * PER
        low_data = float(finite.min())
        top = max(prev, float(finite.max())) * 1.12
        if top <= 0:  # no positives in the set: nothing to gain, show how much is lost
            top = max(0.1 * abs(low_data), 1.0)
        low = max(min(low_data, -0.1 * top), -top)
        panels.append({"title": _prevalence_label(key, own, set_label), "x": x, "models": ys, "treat_all": ta, "ylim": (low, top)})
    if panels:
        doc.figure(figures.decision_panels(panels, f"net benefit per {PER:,} scans"),
                   f"Decision curves of the screening score ({set_label}, first seed): each model, treat all (dashed) and "
                   "treat none (zero line); one panel per prevalence. A curve that drops to the axis's foot falls off it: "
                   "net harm there.", f"{name}_curves.png")
    table = dec["seeds"][seed]["table"]
    keys = list(dict.fromkeys(r["prevalence"] for r in table))
    by = {(r["model"], r["prevalence"], r["threshold"]): r for r in table}
    models = list(dict.fromkeys(r["model"] for r in table))
    thresholds = list(dict.fromkeys(r["threshold"] for r in table))

    def cell(c: dict[str, Any] | None) -> str:
        if not c:
            return "n/a"
        # rounded first, then + 0.0: a difference of float noise (-1e-16) reads 0.0, never -0.0
        scale = {k: (float(np.round(c[k] * PER, 1)) + 0.0 if c.get(k) is not None else None) for k in ("value", "low", "high")}
        if scale["low"] is not None and scale["low"] == scale["high"]:
            return fmt(scale["value"], 1)  # a constant (treat all at a fixed prevalence): no interval to show
        return fmt_ci(scale["value"], scale["low"], scale["high"], 1)

    rows = []
    for t in thresholds:
        for m in models:
            rows.append([f"{t:g}", m] + [x for k in keys for x in (cell(by[(m, k, t)]["net_benefit"]), cell(by[(m, k, t)]["advantage"]))])
        rows.append([f"{t:g}", "treat all"] + [x for k in keys for x in (cell(by[(models[0], k, t)]["treat_all"]), "")])
    header = ["pt", "strategy"] + [x for k in keys for x in (f"NB, {_prevalence_label(k, own, set_label)}", "vs best default")]
    doc.table(header, rows, f"Net benefit per {PER:,} scans at a few threshold probabilities (evaluate.decision_thresholds; "
              f"first seed, {ci_label(metrics, dec.get('level'))}); vs best default = the model's net benefit minus the better of treat all "
              f"and treat none (above 0: the model helps). Files: {name}.csv, {name}_curves.csv (per scan)")
    ctx.results[name] = {"seed": seed, "per": "scan", "table": table}
