"""Explanations: Grad-CAM localisation against lesion masks, each model beside its randomised twin."""

from __future__ import annotations

from medauc.formatting import fmt_est
from medauc.report import figures
from medauc.report.context import Context


def explain_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Explanations: Grad-CAM and lesion localisation")
    ex = ctx.required("explain.json", "explanations", "medauc explain")
    if not ex:
        return
    doc.p(f"Class-activation maps for the true class on {ex.get('n_images')} test images "
          f"({ex.get('n_with_mask')} with a lesion mask; {ex.get('sample', '')}). Each model is compared with its "
          "randomised twin (same architecture, random weights; Adebayo et al. 2018): a map that explains the model "
          "should localise clearly better than the twin's.")
    rows, out = [], []
    for model, m in ex.get("models", {}).items():
        for method, mm in m.get("methods", {}).items():
            tr = (mm.get("trained") or {}).get("all", {})
            tw = (mm.get("random_twin") or {}).get("all", {})
            sanity = mm.get("sanity") or {}
            rows.append([model, method] + [fmt_est(d.get(k), 3) for k in ("pointing_game",) for d in (tr, tw)]
                        + [fmt_est(d.get(k), 3) for k in ("energy_ratio",) for d in (tr, tw)] + [sanity.get("verdict", "n/a")])
            out.append({"model": model, "method": method, "trained": tr, "random_twin": tw, "verdict": sanity.get("verdict")})
    # Run folders from before patient-level intervals have no ci_unit: theirs resampled images.
    unit = (f"over {ex['n_patients']} patients" if ex.get("ci_unit") == "patients" and ex.get("n_patients")
            else "over images (no patient ids known)")
    doc.table(["model", "method", "pointing game", "… random twin", "energy ratio", "… random twin", "verdict"], rows,
              f"Localisation against lesion masks, pooled over tumour classes (mean, 95% bootstrap CI {unit})")
    by_class_rows = []
    for model, m in ex.get("models", {}).items():
        for method, mm in m.get("methods", {}).items():
            for cls, sc in ((mm.get("trained") or {}).get("by_class") or {}).items():
                pg, er = sc.get("pointing_game") or {}, sc.get("energy_ratio") or {}
                by_class_rows.append([model, method, cls, fmt_est(pg, 3), fmt_est(er, 3), pg.get("n")])
    if by_class_rows:
        doc.table(["model", "method", "class", "pointing game", "energy ratio", "n"], by_class_rows, "Localisation per tumour class")
    defs = ex.get("definitions") or {}
    if defs:
        doc.table(["score", "definition"], [[k, v] for k, v in defs.items()], "Localisation scores")
    for method, per_class in (ex.get("panels") or {}).items():
        for cls, rel in per_class.items():
            p = ctx.path(rel)
            if p.exists():
                doc.figure(figures.read_png(p), f"{method}: {cls} test images; for each model the map for the true class "
                           "(and for the predicted class where it differs).", f"cam_{method}_{cls}.png".replace("/", "_"))
    ctx.results["explain"] = out
