"""Restoration-based augmentation (the five checks on the generated images, examples, the restoration
baselines) and Table 2, the imbalance strategies."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medauc.formatting import ci_unit, fmt, fmt_ci, fmt_detectable, fmt_p, verdict
from medauc.report import figures
from medauc.report.context import Context
from medauc.report.provenance import image_checks
from medauc.report.tables import assessability_note, metrics_table


def _ci_text(d: dict[str, Any] | None, value_key: str = "share", digits: int = 4) -> str:
    if not d:
        return "n/a"
    ci = d.get("ci") or [None, None]
    return fmt_ci(d.get(value_key), ci[0], ci[1], digits)


def _examples_figure(ctx: Context) -> None:
    from medauc.augment.quality import resize_images
    from medauc.data.images import load_image

    path = ctx.path("augment/manifest.csv")
    if not path.exists():
        return
    from medauc.data.manifest import IMAGE_COLUMNS, read_manifest

    df = read_manifest(path, required=IMAGE_COLUMNS)  # paths made absolute, as every stage reads them
    if "sigma" not in df.columns or "source_image_id" not in df.columns:
        return
    gen = df[(df["source_image_id"] != "") & (df.get("augmentation", "restoration") == "restoration")]
    if not len(gen):
        return
    by_id = df.set_index("image_id")
    sigmas = sorted({float(x) for x in gen["sigma"] if x != ""})
    rows, labels = [], []
    # One row per noise level, each with its own source: every source has only some of the sigmas
    # (6x: each source once at each sigma; fewer: a few), so a column per sigma would mislabel.
    # The source is shown at the generated images' size: what the denoiser saw, not the sharper original.
    for sg in sigmas:
        hit = gen[gen["sigma"].astype(float) == sg].iloc[0]
        restored = load_image(hit["path"])
        original = resize_images(load_image(by_id.loc[hit["source_image_id"], "path"])[None], restored.shape[0])[0]
        rows.append([original, restored])
        labels.append(f"σ={sg:g}, {str(hit['source_image_id'])[-14:]}")
    ctx.doc.figure(figures.image_grid(rows, labels, [f"source, {rows[0][1].shape[0]} px", "restored"], cell=1.8),
                   "Restoration-based augmentation: generated healthy training images, one per noise level σ, beside the "
                   "healthy training image each was made from (noise of that σ added, then removed by the U-Net).",
                   "augment_examples.png", 500)


def _baselines_figure(ctx: Context) -> None:
    """Held-out healthy images: clean, noisy, U-Net, best blur, non-local means (``augment/restoration_examples.npz``)."""
    path = ctx.path("augment/restoration_examples.npz")
    if not path.exists():
        return
    with np.load(path) as ex:
        clean, sigmas, widths = ex["clean"], ex["sigmas"], ex["blur_sigma"]
        rows, labels = [], []
        for j, sg in enumerate(sigmas):
            for k in range(len(clean)):
                rows.append([clean[k], ex["noisy"][j, k], ex["unet"][j, k], ex["blur"][j, k], ex["nlm"][j, k]])
                labels.append(f"σ={sg:g}, image {k + 1}")
    ctx.doc.figure(figures.image_grid(rows, labels, ["clean", "noisy", "U-Net", "best blur", "non-local means"]),
                   "Held-out healthy validation images restored by the U-Net and by two baselines from the same noisy input: "
                   "the best Gaussian blur for each σ (width " + ", ".join(f"{w:g} px at σ={sg:g}" for sg, w in zip(sigmas, widths))
                   + ") and scikit-image non-local means.", "augment_baselines.png", 700)


def _quality_table(ctx: Context, validation: list[dict[str, Any]]) -> None:
    rows = [[f"{r['sigma']:g}", r.get("n"), fmt(r.get("psnr_noisy"), 2), fmt(r.get("psnr_restored"), 2),
             fmt(r.get("psnr_blur"), 2) + (f" ({r['blur_sigma']:g} px)" if r.get("blur_sigma") is not None else ""),
             fmt(r.get("psnr_nlm"), 2), fmt(r.get("ssim_restored"), 3), fmt(r.get("ssim_blur"), 3), fmt(r.get("ssim_nlm"), 3)]
            for r in validation]
    ctx.doc.table(["σ", "n", "PSNR noisy", "PSNR U-Net", "PSNR best blur (width)", "PSNR NLM", "SSIM U-Net", "SSIM blur", "SSIM NLM"], rows,
                  "Check (b): restoration of held-out healthy images, U-Net against the best Gaussian blur (chosen per σ on these "
                  "images, an oracle) and non-local means, all from the same noisy images (PSNR in dB; σ = 0 is a clean input, "
                  "its noisy PSNR capped at 100)")


def augmentation_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Restoration-based augmentation")
    checks = ctx.required("augment_checks.json", "augmentation checks", "medauc augment") and image_checks(ctx)
    if not checks:
        return
    a = ctx.cfg.augment
    doc.p(f"A U-Net denoiser was trained on healthy training images with Gaussian noise at σ ∈ {list(a.sigmas)} "
          f"(images in [0, 1]); its restorations of noisy copies became new healthy training images "
          f"(target: {a.target} {a.multiple if a.target == 'multiple' else a.count if a.target == 'count' else a.share}). "
          "Validation and test images are never augmented.")
    size_warning = (checks.get("image_size") or {}).get("warning")
    if size_warning:
        doc.p(f"Warning: {size_warning}.", "warning")
    _examples_figure(ctx)
    rows = []
    ca = checks.get("a_predicted_healthy")
    if ca:
        rows.append(["(a) generated images predicted healthy by a classifier trained on the original data",
                     _ci_text(ca), f"n = {ca.get('n')}, model {ca.get('model')}; " + (
                         f"95% CI over the {ca.get('n_patients')} patients the images were restored from (patient bootstrap)"
                         if ca.get("unit") == "patients" else "Wilson 95% CI over images (no patient ids known)")])
    cb = checks.get("b_restoration_quality") or {}
    for r in cb.get("validation", []):
        base = (f"; best blur {fmt(r.get('psnr_blur'), 2)} dB, non-local means {fmt(r.get('psnr_nlm'), 2)} dB"
                if "psnr_blur" in r else "")
        rows.append([f"(b) restoration quality σ={r['sigma']:g} (held-out healthy): PSNR noisy → U-Net, dB",
                     f"{fmt(r.get('psnr_noisy'), 2)} → {fmt(r.get('psnr_restored'), 2)}",
                     f"SSIM {fmt(r.get('ssim_noisy'), 3)} → {fmt(r.get('ssim_restored'), 3)}{base}"])
    cc = checks.get("c_memorisation")
    if cc:
        rows.append(["(c) share of generated images that are near-copies of their source",
                     fmt(cc.get("near_copy_share"), 4), f"SSIM ≥ {cc.get('threshold')}; mean SSIM to source "
                     f"{fmt((cc.get('ssim_to_source') or {}).get('mean'), 3)}, to nearest other training image "
                     f"{fmt((cc.get('ssim_to_nearest_other') or {}).get('mean'), 3)}"])
    cd = checks.get("d_artefact_detectability")
    if cd:
        ci = cd.get("ci") or [None, None]
        at = f", at the classifier's {cd['image_size']} px" if cd.get("image_size") else ""
        # Run folders from before the patient-level interval have no "unit": theirs was over source images.
        over = f"CI over {cd['n_units']} {cd['unit']}" if cd.get("unit") else "CI over source images"
        rows.append([f"(d) restored vs original healthy images told apart from image statistics (AUC{at})",
                     fmt_ci(cd.get("auc"), ci[0], ci[1]), f"0.5 = no detectable artefact; 1 = a signature a classifier can use; {over}"])
    ce = checks.get("e_shortcut_flip")
    if ce:
        comp = ce.get("comparison") or {}
        per_strategy = ce.get("strategies") or {}
        for name in ("restoration", "balanced"):
            if name in per_strategy:
                st = per_strategy[name]
                rows.append([f"(e) tumour test images called healthy after restoration — model trained with '{name}'",
                             fmt(st.get("flip_rate"), 4),
                             f"healthy share {fmt(st.get('healthy_share_original'), 3)} → {fmt(st.get('healthy_share_restored'), 3)}"])
        if comp:
            ci = comp.get("ci") or [None, None]
            over = (f"{comp.get('n_units')} {comp.get('unit')}" if comp.get("unit") else "source images")
            rows.append(["(e) flip rate, restoration − balanced", fmt_ci(comp.get("difference"), ci[0], ci[1]),
                         f"paired bootstrap over {over}"])
        else:
            missing = [n for n in ("restoration", "balanced") if n not in per_strategy]
            rows.append(["(e) flip rate, restoration − balanced", "not compared",
                         f"needs both strategies; this run has no {' and no '.join(repr(n) for n in missing) or 'comparison'} "
                         "(augment.strategies)"])
    doc.table(["check", "result", "detail"], rows, "Five checks on the generated healthy images (95% CIs)")
    if any("psnr_blur" in r for r in cb.get("validation", [])):
        _quality_table(ctx, cb["validation"])
    _baselines_figure(ctx)
    if ca and ca.get("per_sigma"):
        doc.table(["σ", "n", "predicted healthy"], [[f"{r['sigma']:g}", r["n"], _ci_text(r)] for r in ca["per_sigma"]],
                  "Check (a) per noise level")
    ctx.results["augment_checks"] = checks


def strategies_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Table 2: imbalance strategies")
    table = ctx.required("strategies.json", "strategy comparison", "medauc strategies")
    if not table:
        return
    ev = table.get("evaluation")
    meaning = {
        "balanced": "the original data", "restoration": "the study's augmentation",
        "duplicate": "healthy images repeated to the same count",
        "classic": "healthy images flipped, rotated and intensity-jittered to the same count",
        "weighted_loss": "original data, class-weighted loss",
    }
    run = list(dict.fromkeys(r["strategy"] for r in table.get("rows", [])))
    doc.p(f"The same model ({table.get('model')}), split, test set and seeds under each way of handling the healthy-class imbalance: "
          + "; ".join(f"{n} = {meaning.get(n, n)}" for n in run) + ".")
    counts = {}
    for r in table.get("rows", []):
        counts.setdefault(r["strategy"], [r.get("n_train"), r.get("n_train_healthy"), r.get("imbalance")])
    doc.table(["strategy", "training images", "healthy", "loss"], [[k] + v for k, v in counts.items()], "Training sets")
    if ev and ev.get("models"):
        ctx.results["table2"] = metrics_table(doc, ev, "Table 2: test-set performance by strategy", label="strategy")
    tests = [t for t in table.get("paired_tests", []) if t.get("metric") in ("accuracy", "auc_macro", "screening_auc", "screening_sensitivity", "screening_specificity")]
    reference = table.get("reference", "restoration")
    if not tests:
        names = list(counts)
        why = (f"only one strategy ({names[0]}) was trained: there is nothing to compare it with" if len(names) == 1
               else f"'{reference}' is not among the strategies ({', '.join(names)})" if reference not in names
               else "there are no paired tests in strategies.json")
        doc.p(f"No paired tests against {reference}: {why}.", "note")
    if tests:
        seeds = sorted({str(t.get("seed")) for t in tests})
        tests = [t for t in tests if str(t.get("seed")) == seeds[0]]
        doc.table(["strategy", "metric", "family", "strategy − restoration", "95% CI", "p", "p (Holm)", "test", "detectable",
                   "significant"],
                  [[t["strategy"], t["metric"], t.get("family", "?"), fmt(t.get("difference")), fmt_ci(t.get("difference"), t.get("ci_low"), t.get("ci_high")),
                    fmt_p(t.get("p_value")), fmt_p(t.get("p_holm")), t.get("test"),
                    "n/a" if t.get("note") else fmt_detectable(t.get("detectable")), verdict(t.get("significant"), t.get("note"))]
                   for t in tests],
                  f"Paired tests of each strategy against restoration (seed {seeds[0]}; 95% CI {ci_unit(ev)}; detectable: the "
                  "smallest difference the test could detect with "
                  f"{(ev or {}).get('power', 0.8):.0%} power at its Holm family's Bonferroni level alpha/m; the "
                  "primary family is the pre-specified metric's pairs, every other metric a secondary family of its own)")
        assessability_note(doc, [(f"{t['metric']} ({t['strategy']})", t.get("note")) for t in tests])
