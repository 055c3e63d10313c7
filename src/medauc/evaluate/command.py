"""``medauc evaluate``: every predictions file of a run -> metrics.json, comparisons.csv, curves/.

Inputs: ``<run>/predictions/<model>/<seed>/test.csv`` (and ``val.csv`` beside it, for the
operating point). Nothing else: no model, no GPU.

``metrics.json`` schema (``"schema": "medauc.metrics/1"``; NaN is written as null)::

    classes, negative_class      class order of the prob_ columns; the screening negative class
    test_prevalence              share of positive (non-negative-class) test images
    level, n_bootstrap, bootstrap_seed, prevalences
    definitions                  {metric or method: one-sentence definition}; "auc_<class>" etc.
                                 stand for every class, "ppv@<prevalence>" for every prevalence
    models: {model: {
        seeds: {seed: {
            test_file, n, n_per_class
            metrics: {metric: {value, low, high, undefined_share}}  # every metric with its bootstrap CI and
                                 # the share of resamples where it is undefined (left out of the CI)
            confusion_matrix: {rows, columns, classes, counts (K x K)}
            operating_point: {threshold, target_sensitivity, val_sensitivity, val_specificity,
                              val_file, rule} or null (no val.csv)
            prevalence: [{prevalence, source, ppv, npv, auprc[, op_ppv, op_npv]}: {value, low, high, undefined_share}]
            curves: {roc, pr, calibration}: paths of CSVs under curves/<model>/<seed>/
        }},
        summary: {metric: {mean, sd, n_seeds, values: {seed: value}}}
    }}
    rankings: [{metric, model_a, model_b, mean_a, mean_b, n_seeds, fraction_seeds_a_better}]
                                 model_a is the better by the seed mean
    question_1: {auc_metric, ranked_by_accuracy, ranked_by_auc, accuracy, auc, n_seeds,
                 pairs: [{accuracy_winner, auc_winner, ..., sentence}], answer}

``comparisons.csv``: one row per paired comparison, columns ``table, seed, metric, model_a,
model_b, value_a, value_b, difference, ci_low, ci_high, p_value, p_holm, test, significant, note``
(difference = a - b; Holm within one table and seed; see :mod:`medauc.evaluate.compare`). A
comparison that cannot be trusted on these data (too few images in a class, an undefined metric,
a zero-width interval) has an empty ``significant`` and ``p_holm`` and a ``note`` saying why.

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

from medauc import runs
from medauc.config import Config, config_hash
from medauc.errors import EvaluationError
from medauc.evaluate.compare import COMPARISON_FIELDS, evaluate_predictions

log = logging.getLogger(__name__)
STAGE = "evaluate"


def find_predictions(root: str | Path, split: str = "test", model_order: list[str] | None = None) -> dict[str, dict[int, Path]]:
    """``{model: {seed: path}}`` of ``<root>/<model>/<seed>/<split>.csv``; models in ``model_order`` first."""
    root = Path(root)
    found: dict[str, dict[int, Path]] = {}
    for f in sorted(root.glob(f"*/*/{split}.csv")):
        model, seed_dir = f.parent.parent.name, f.parent.name
        try:
            seed = int(seed_dir)
        except ValueError:
            raise EvaluationError(f"{f}: the folder above {split}.csv must be the integer seed, got {seed_dir!r}") from None
        found.setdefault(model, {})[seed] = f
    # training writes a timm name such as "hf-hub:org/x" to the folder "hf-hub_org_x"
    wanted = [m.replace("/", "_").replace(":", "_") for m in (model_order or [])]
    order = [m for m in wanted if m in found] + sorted(m for m in found if m not in wanted)
    return {m: found[m] for m in order}


def evaluate_stage(cfg: Config, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Evaluate every ``predictions/<model>/<seed>/test.csv`` of ``run_dir``; write metrics.json,
    comparisons.csv and curves/. Returns the metrics dict (read back from disk when the stage is cached)."""
    run_dir = Path(run_dir)
    tests = find_predictions(run_dir / "predictions", "test", cfg.model.names)
    if not tests:
        raise EvaluationError(
            f"no predictions files in {run_dir / 'predictions'} (expected <model>/<seed>/test.csv); "
            "run `medauc train` for this run first"
        )
    vals = find_predictions(run_dir / "predictions", "val", cfg.model.names)
    hashes = {
        str(p.relative_to(run_dir)): runs.file_sha256(p)
        for d in (tests, vals) for seeds in d.values() for p in seeds.values()
    }
    key = config_hash(cfg.evaluate, cfg.data.classes, cfg.data.negative_class, cfg.seed, hashes)
    if not runs.check_stage(run_dir, STAGE, key, force):
        log.info("evaluate: already done for these predictions files in %s; skipping", run_dir)
        return runs.read_json(run_dir / "metrics.json")
    curves = run_dir / "curves"
    if curves.exists():
        shutil.rmtree(curves)  # stale curves of models no longer in the run must not linger
    result = evaluate_predictions(tests, cfg, val_files=vals, curves_dir=curves, progress=True)
    comparisons = result.pop("comparisons")
    for model in result["models"].values():
        for seed in model["seeds"].values():
            seed["curves"] = {k: str(Path(v).relative_to(run_dir)) for k, v in seed.get("curves", {}).items()}
    result["comparisons_file"] = "comparisons.csv"
    runs.write_csv(run_dir / "comparisons.csv", comparisons, COMPARISON_FIELDS)
    runs.write_json(run_dir / "metrics.json", result)
    runs.mark_stage(run_dir, STAGE, key, files=sorted(hashes))
    log.info("evaluate: %s", result["question_1"]["answer"])
    return runs.read_json(run_dir / "metrics.json")


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
