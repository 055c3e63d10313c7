"""``medauc evaluate``: the run's predictions files -> metrics.json, comparisons.csv, curves/.

Inputs: ``<run>/predictions/<model>/<seed>/test.csv`` (and ``val.csv`` beside it, for the
operating point) of every model in ``model.names`` and seed in ``train.seeds``; other folders
there are listed as ignored. Nothing else: no model, no GPU.

``metrics.json`` schema (``"schema": "medauc.metrics/1"``; NaN is written as null)::

    classes, negative_class      class order of the prob_ columns; the screening negative class
    test_prevalence              share of positive (non-negative-class) test images
    level, n_bootstrap, bootstrap_seed, prevalences
    unit, n_images, n_patients   what every interval and test resamples: "patients" (the predictions
                                 files name them) or "images" (n_patients null: no patient known)
    power                        power of each comparison's smallest detectable difference
    definitions                  {metric or method: one-sentence definition}; "auc_<class>" etc.
                                 stand for every class, "ppv@<prevalence>" for every prevalence
    models: {model: {
        seeds: {seed: {
            test_file, n, n_per_class, n_patients, n_patients_per_class (null without patients)
            metrics: {metric: {value, low, high, undefined_share}}  # every metric with its bootstrap CI and
                                 # the share of resamples where it is undefined (left out of the CI)
            confusion_matrix: {rows, columns, classes, counts (K x K)}
            operating_point: {threshold, threshold_rule, target_sensitivity, val_sensitivity,
                              val_specificity, val_youden_j, val_file, rule} or null (no val.csv);
                              chosen on val.csv alone (evaluate.threshold_rule), see
                              :mod:`medauc.evaluate.operating`
            prevalence: [{prevalence, source, ppv, npv, auprc[, op_ppv, op_npv]}: {value, low, high, undefined_share}]
            curves: {roc, pr, calibration}: paths of CSVs under curves/<model>/<seed>/
        }},
        summary: {metric: {mean, sd, n_seeds, values: {seed: value}}}
    }}
    rankings: [{metric, model_a, model_b, mean_a, mean_b, n_seeds, fraction_seeds_a_better}]
                                 model_a is the better by the seed mean
    primary_metric: evaluate.primary_metric (its pairs: the primary Holm family)
    question_1: {auc_metric, ranked_by_accuracy, ranked_by_auc, accuracy, auc, n_seeds,
                 pairs: [{accuracy_winner, auc_winner, ..., sentence}], answer}
    ignored: [{model, seed, reason}]   predictions files left out: a model not in model.names or
                                 a seed not in train.seeds (an older run's, say)

``comparisons.csv``: one row per paired comparison, columns ``table, seed, metric, model_a,
model_b, value_a, value_b, difference, ci_low, ci_high, p_value, p_holm, test, significant, note,
se, detectable, unit, n_patients, family, family_size`` (``se``: the difference's standard error;
``detectable``: the smallest difference the test could detect at ``evaluate.power`` and its family's
Bonferroni level alpha/m, see :mod:`medauc.evaluate.power`; ``family``: "primary" for the pairs of
``evaluate.primary_metric``, "secondary" for every other metric, each metric and seed one Holm
family of ``family_size`` assessable tests) (difference = a - b; see :mod:`medauc.evaluate.paired`). A
comparison that cannot be trusted on these data (too few images in a class, an undefined metric,
a zero standard error or a zero-width interval) has an empty ``significant`` and ``p_holm`` and a
``note`` saying why.

``decision.json`` (``"schema": "medauc.decision/1"``), ``decision.csv``, ``decision_curves.csv``: decision
curve analysis of the screening view on the test set (:mod:`medauc.evaluate.decision`)::

    prevalence_own, prevalences, table_thresholds, level, n_bootstrap, unit
    seeds: {seed: {table: [{model, prevalence ("set": the test set's own, else the value), threshold,
                            net_benefit, treat_all, advantage: {value, low, high, undefined_share}}]}}

``decision.csv`` holds the same table flat (``seed, model, prevalence, threshold, net_benefit,
net_benefit_low, net_benefit_high, treat_all..., advantage...``); ``decision_curves.csv`` the figure's
curves at thresholds 0.01 to 0.99 (``seed, model, prevalence, threshold, net_benefit, treat_all,
treat_none``). Net benefit is in net true positives per scan.

``curves/<model>/<seed>/``: ``roc.csv`` (curve, threshold, fpr, tpr), ``pr.csv`` (curve,
threshold, recall, precision), ``calibration.csv`` (curve, bin, count, mean_predicted, observed);
``curve`` is ``screening`` or a class name (``top_label``/``screening`` for calibration).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from medauc import fileio, runs
from medauc.config import Config
from medauc.errors import EvaluationError
from medauc.evaluate.compare import evaluate_predictions
from medauc.evaluate.decision import write_decision  # noqa: F401  (also medauc.evaluate.command.write_decision, as documented)
from medauc.evaluate.paired import COMPARISON_FIELDS

log = logging.getLogger(__name__)
STAGE = "evaluate"


def find_predictions(root: str | Path, split: str = "test") -> dict[str, dict[int, Path]]:
    """``{model folder: {seed: path}}`` of every ``<root>/<model>/<seed>/<split>.csv`` on disk, sorted."""
    root = Path(root)
    found: dict[str, dict[int, Path]] = {}
    for f in sorted(root.glob(f"*/*/{split}.csv")):
        model, seed_dir = f.parent.parent.name, f.parent.name
        try:
            seed = int(seed_dir)
        except ValueError:
            raise EvaluationError(f"{f}: the folder above {split}.csv must be the integer seed, got {seed_dir!r}") from None
        found.setdefault(model, {})[seed] = f
    return {m: dict(sorted(found[m].items())) for m in sorted(found)}


def select_predictions(
    found: dict[str, dict[int, Path]], models: list[str], seeds: list[int], required: bool = True,
) -> tuple[dict[str, dict[int, Path]], list[dict[str, Any]]]:
    """Keep the predictions of the configured ``models`` and ``seeds`` only, in config order.

    ``found``: :func:`find_predictions`' result. Returns ``(selected, ignored)``: ``ignored`` lists
    ``{model, seed, reason}`` for every other file (an old model or seed left in the run folder must
    not enter Table 1 or the Holm family). With ``required``, a configured model and seed without a
    file is an error.
    """
    # training writes a timm name such as "hf-hub:org/x" to the folder "hf-hub_org_x"
    folders = {m.replace("/", "_").replace(":", "_"): m for m in models}
    selected: dict[str, dict[int, Path]] = {}
    for folder in folders:
        have = found.get(folder, {})
        missing = [s for s in seeds if s not in have]
        if required and missing:
            raise EvaluationError(
                f"model.names includes {folders[folder]!r} and train.seeds includes {missing[0]}, but there is no "
                f"predictions/{folder}/{missing[0]}/ file; run `medauc train` (or `medauc run`) for this run first, "
                "or remove it from model.names / train.seeds"
            )
        if any(s in have for s in seeds):
            selected[folder] = {s: have[s] for s in seeds if s in have}
    ignored = [
        {"model": m, "seed": s, "reason": "model not in model.names" if m not in folders else "seed not in train.seeds"}
        for m, by_seed in found.items() for s in by_seed if m not in selected or s not in selected[m]
    ]
    return selected, ignored


def evaluate_stage(cfg: Config, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Evaluate ``predictions/<model>/<seed>/test.csv`` of ``run_dir`` for every model in
    ``model.names`` and seed in ``train.seeds`` (other folders are listed as ignored); write metrics.json,
    comparisons.csv and curves/. Returns the metrics dict (read back from disk when the stage is cached:
    same predictions files and settings, its files intact; see :func:`medauc.stages.run`)."""
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force)


def compute(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The evaluate stage's work (no caching: :func:`evaluate_stage` decides whether it runs)."""
    run_dir = Path(run_dir)
    found = find_predictions(run_dir / "predictions", "test")
    if not found:
        raise EvaluationError(
            f"no predictions files in {run_dir / 'predictions'} (expected <model>/<seed>/test.csv); "
            "run `medauc train` for this run first"
        )
    tests, ignored = select_predictions(found, list(cfg.model.names), list(cfg.train.seeds))
    if ignored:
        log.warning("evaluate: ignoring predictions not in this run's model.names/train.seeds: %s",
                    ", ".join(f"{r['model']}/{r['seed']}" for r in ignored))
    vals, _ = select_predictions(find_predictions(run_dir / "predictions", "val"), list(cfg.model.names),
                                 list(cfg.train.seeds), required=False)
    curves = run_dir / "curves"
    if curves.exists():
        shutil.rmtree(curves)  # stale curves of models no longer in the run must not linger
    result = evaluate_predictions(tests, cfg, val_files=vals, curves_dir=curves, progress=True, decision=True, keep_entries=True)
    entries = result.pop("entries")
    comparisons = result.pop("comparisons")
    write_decision(run_dir, result.pop("decision"))
    for model in result["models"].values():
        for seed in model["seeds"].values():
            seed["curves"] = {k: str(Path(v).relative_to(run_dir)) for k, v in seed.get("curves", {}).items()}
    result["comparisons_file"] = "comparisons.csv"
    result["ignored"] = ignored
    fileio.write_csv(run_dir / "comparisons.csv", comparisons, COMPARISON_FIELDS)
    fileio.write_json(run_dir / "metrics.json", result)
    for stale in [run_dir / "external.json", *run_dir.glob("decision_external-*")]:  # this stage's own files:
        stale.unlink(missing_ok=True)  # never left from other settings (a site no longer configured)
    if cfg.evaluate.external:
        from medauc.external.results import evaluate_external

        fileio.write_json(run_dir / "external.json", evaluate_external(cfg, run_dir, result, entries, vals))
    log.info("evaluate: %s", result["question_1"]["answer"])
    return fileio.read_json(run_dir / "metrics.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: --config, --out, --force and overrides come from cli.py."""


def main(args: argparse.Namespace) -> int:
    if not args.out:
        raise EvaluationError("medauc evaluate needs --out RUN, the run folder whose predictions/ to evaluate")
    run_dir = runs.open_run(args.out, args.cfg, args.force)
    result = evaluate_stage(args.cfg, run_dir, args.force)
    print(result["question_1"]["answer"])
    for pair in result["question_1"]["pairs"]:
        print("  " + pair["sentence"])
    print(f"wrote {run_dir / 'metrics.json'}, {run_dir / 'comparisons.csv'}, {run_dir / 'curves'}/")
    return 0
