"""Checks a and e on the generated images: they need classifiers, so the strategies stage runs them.

Schemas in :mod:`medauc.augment.checks`, measurements in :mod:`medauc.augment.classifier_checks`; the results go
to ``strategies.json`` under ``checks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medauc.augment import classifier_checks as checks
from medauc.config import Config
from medauc.errors import EvaluationError

STUDY_PREDICTED_HEALTHY = 0.9766  # the study's check (a): generated images an original-data model called healthy


def classifier_checks(
    cfg: Config, run_dir: Path, pred_files: dict[str, dict[int, Path]], generated: pd.DataFrame,
    restored_test: pd.DataFrame, model: str,
) -> dict[str, Any]:
    """``{a_predicted_healthy, e_shortcut_flip}`` from each strategy's predictions files.

    ``pred_files``: ``{strategy: {seed: path of test.csv}}``; ``generated.csv`` and
    ``restored_test.csv`` lie beside each. ``generated``: the generated rows of the augmented
    manifest; ``restored_test``: ``augment/restored_test.csv``. Check a needs the "balanced"
    strategy (else None); e compares "restoration" with "balanced" when both ran.
    """
    neg = cfg.data.negative_class
    level = cfg.evaluate.level

    def pred(name: str, seed: int, split: str) -> pd.DataFrame:
        path = pred_files[name][seed].parent / f"{split}.csv"
        if not path.is_file():
            from medauc.stages import repair

            raise EvaluationError(f"{path} is missing; run `{repair('strategies', Path(run_dir), force=True)}`")
        return pd.read_csv(path, dtype={"image_id": str, "label": str})

    seed = cfg.train.seeds[0]
    a = None
    if "balanced" in pred_files and len(generated):
        per_seed = [{"seed": s, **checks.healthy_share(pred("balanced", s, "generated"), generated, neg, level,
                                                        cfg.evaluate.n_bootstrap, cfg.seed)}
                    for s in pred_files["balanced"]]
        # The same model on ORIGINAL test images: a share of generated images "called healthy" means
        # little if the model calls most tumours healthy too.
        test = pred("balanced", seed, "test")
        called = checks.predicted_labels(test).to_numpy() == neg
        is_neg = test["label"].to_numpy() == neg
        baseline = {"test_healthy_called_healthy": float(called[is_neg].mean()) if is_neg.any() else float("nan"),
                    "test_tumour_called_healthy": float(called[~is_neg].mean()) if (~is_neg).any() else float("nan")}
        a = {"model": model, "strategy": "balanced", **per_seed[0], "per_seed": per_seed,
             "baseline": baseline, "study_share": STUDY_PREDICTED_HEALTHY}
    flip: dict[str, Any] = {"strategies": {}, "comparison": None}
    tables = {}
    if len(restored_test):
        for name in pred_files:
            tables[name] = checks.flip_table(pred(name, seed, "test"), pred(name, seed, "restored_test"), restored_test, neg)
            flip["strategies"][name] = {"seed": seed, **checks.flip_summary(tables[name])}
        if "restoration" in tables and "balanced" in tables:
            flip["comparison"] = {"a": "restoration", "b": "balanced", "seed": seed,
                                  **checks.compare_flip(tables["restoration"], tables["balanced"], cfg.evaluate.n_bootstrap, level, cfg.seed)}
    return {"a_predicted_healthy": a, "e_shortcut_flip": flip}
