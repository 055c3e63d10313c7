"""The external test sets (``external.json``): per site its audit, Table 1's metrics with the change from the
internal test set, the ranking and the internal winner's paired tests, calibration with a reliability
figure, and the validation-chosen threshold's sensitivity, specificity, PPV and NPV."""

from __future__ import annotations

from typing import Any

from medauc.answers import LABELS, first_seed
from medauc.formatting import fmt, fmt_est, fmt_p, verdict
from medauc.report import figures
from medauc.report.context import Context
from medauc.report.sections.clinic import decision_section

SHOWN = ("accuracy", "auc_macro", "f1_macro", "screening_auc", "op_sensitivity", "op_specificity", "ece")


def external_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("External test sets: does the winner hold at another hospital?")
    ext = ctx.json("external.json")
    if not ctx.cfg.evaluate.external:
        doc.p("No external test set is configured (evaluate.external), so every number above comes from one split of one "
              "source. Name one with `evaluate.external={hospital_b: /path/to/folder}` (a folder-per-class set) or "
              "`evaluate.external={hospital_b: phantom:b}` (a phantom of another virtual hospital).", "note")
        return
    if not ext:
        ctx.missing("external.json", "medauc run (stages external and evaluate)")
        return
    doc.p(f"Every trained model predicted each set once with its own preprocessing. Intervals are {int(ext['level'] * 100)}% "
          "percentile intervals of a bootstrap over each set's own patients (images where none are known); the change from "
          "the internal test set is an unpaired bootstrap (each set resampled over its own patients). The screening threshold "
          f"is the one chosen on the internal validation split {_rule(ext)}, never re-chosen.")
    label = LABELS.get(ext["primary_metric"], ext["primary_metric"])
    for name, site in ext["sites"].items():
        _site(ctx, name, site, label, ext)
    ctx.results["external"] = {name: {"ranking": s["ranking"], "audit_overlaps_training": (s.get("audit") or {}).get("overlaps_training")}
                               for name, s in ext["sites"].items()}


def _rule(ext: dict[str, Any]) -> str:
    """How the carried threshold was chosen (evaluate.threshold_rule; an external.json without it: the sensitivity rule)."""
    if ext.get("threshold_rule", "sensitivity") == "youden":
        return "by Youden's J (sensitivity + specificity − 1, maximised)"
    return f"for sensitivity ≥ {ext['target_sensitivity']}"


def _site(ctx: Context, name: str, site: dict[str, Any], label: str, ext: dict[str, Any]) -> None:
    doc = ctx.doc
    doc.h(f"{name} ({site['source']})", 3)
    audit = site.get("audit") or {}
    counts = ", ".join(f"{c} {n}" for c, n in (audit.get("n_per_class") or {}).items())
    doc.p(f"{site['n_images']} images{', ' + str(site['n_patients']) + ' patients' if site.get('n_patients') else ''} ({counts}); "
          f"resampled over {site['unit']}.")
    if audit.get("overlaps_training"):
        doc.p(f"WARNING: {name} {audit['text']}. The models saw these images or patients in training or model selection: "
              "this set is no independent test, and its numbers are optimistic.", "warning")
    elif audit:
        doc.p(f"Audit: {name} {audit.get('text')} (exact copies and near-duplicates within "
              f"{audit['shared_images']['near_duplicate_hamming']} bits of the perceptual hash).")
    gap = audit.get("statistics_gap") or {}
    if gap.get("features"):
        rows = [[f, fmt(v["train_mean"], 3), fmt(v["external_mean"], 3), fmt(v["smd"], 2), fmt(v["ks"], 2), fmt_p(v["ks_p"])]
                for f, v in gap["features"].items()]
        doc.table(["statistic", "training mean", "external mean", "standardised difference", "KS", "KS p"], rows,
                  f"Image statistics against {gap['n_train_measured']} training images (intensities in [0, 1]; snr = mean / sd). "
                  f"A classifier of these statistics tells the two apart with cross-validated AUC {fmt(gap['domain_auc'], 3)} "
                  "(0.5: no gap these statistics see).")
    rows = []
    for model, m in site["models"].items():
        seed, s = first_seed(m)
        rows.append([model] + [f"{fmt_est(s['metrics'].get(k), 3)} ({fmt_est(s['change'].get(k), 3)})" for k in SHOWN])
    doc.table(["model"] + list(SHOWN), rows, f"{name}: metrics (first seed) with {int(ext['level'] * 100)}% CI, and in "
              "brackets the change from the internal test set with its CI (op_: at the validation-chosen threshold)")
    r = site["ranking"]
    ranked = ", ".join(f"{m} {fmt(r['means'][m], 3)}" for m in r["site"])
    doc.p(f"Ranked by {label} (seed means): {ranked}. Internal winner "
          f"{r['winner']}: {'stays best' if r['holds'] else 'is not best here; ' + r['site_best'] + ' is'}.")
    if r["tests"]:
        doc.table(["internal winner vs", "difference", "CI", "test", "Holm p", "significant"],
                  [[t["other"], fmt(t["difference"], 3), f"[{fmt(t['ci_low'], 3)}, {fmt(t['ci_high'], 3)}]", t["test"],
                    fmt_p(t["p_holm"]), verdict(t["significant"], t["note"])] for t in r["tests"]],
                  f"{name}: {r['winner']} against every other model, paired on the same images, clustered by patient "
                  f"(seed {r['seed']}; Holm within the primary family)")
    cal_rows, curves, prev_rows = [], {}, []
    for model, m in site["models"].items():
        _, s = first_seed(m)
        c = s["calibration"]
        cal_rows.append([model, fmt_est(s["metrics"].get("screening_ece"), 3), fmt_est(c["intercept"], 2), fmt_est(c["slope"], 2),
                         fmt_est(c["internal"]["slope"], 2)])
        pts = [p for p in c["reliability"] if p["curve"] == "screening"]
        curves[model] = ([p["mean_predicted"] for p in pts], [p["observed"] for p in pts])
        op = s.get("operating_point") or {}
        for p in s.get("prevalence", []):
            if "op_ppv" in p:
                prev_rows.append([model, fmt(op.get("threshold"), 4), fmt_est(s["metrics"].get("op_sensitivity"), 3),
                                  fmt_est(s["metrics"].get("op_specificity"), 3), f"{p['prevalence']:g} ({p['source']})",
                                  fmt_est(p["op_ppv"], 4), fmt_est(p["op_npv"], 6)])
    doc.table(["model", "screening ECE", "calibration intercept", "calibration slope", "slope, internal test"], cal_rows,
              f"{name}: calibration of the screening score (logistic recalibration: ideal intercept 0, slope 1; a slope below 1: "
              "scores too extreme)")
    if curves:
        doc.figure(figures.curves(curves, "mean predicted probability", "observed frequency",
                                  f"Reliability of the screening score at {name}", diagonal=True),
                   f"Calibration at {name} (first seed, equal-mass bins): points on the diagonal are well calibrated.",
                   f"external_{name}_calibration.png", 520)
    if prev_rows:
        doc.table(["model", "threshold (from validation)", "sensitivity", "specificity", "prevalence", "PPV", "NPV"], prev_rows,
                  f"{name}: the screening threshold chosen on the internal validation split, applied unchanged")
    decision_section(ctx, site, name=f"decision_external-{name}", set_label=name)  # its CIs: over the site's own patients
