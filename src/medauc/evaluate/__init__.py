"""Evaluation: metrics with bootstrap CIs, DeLong tests, prevalence, paired comparisons.

From a notebook::

    from medauc.evaluate import delong_test, auc_ci
    r = delong_test(y, score_a, score_b)      # r.auc_a, r.auc_b, r.difference, r.z, r.p_value, r.ci_low, r.ci_high
    ci = auc_ci(y, score, method="bootstrap")  # ci.auc, ci.low, ci.high
"""

from medauc.errors import UndefinedMetricWarning
from medauc.evaluate.delong import AUCInterval, DeLongResult, auc_ci, delong_test

__all__ = ["AUCInterval", "DeLongResult", "UndefinedMetricWarning", "auc_ci", "delong_test",
           "evaluate_predictions", "evaluate_stage", "compare_files", "read_predictions"]


def __getattr__(name: str) -> object:  # heavier modules load on first use
    if name in ("evaluate_predictions", "compare_files"):
        from medauc.evaluate import compare

        return getattr(compare, name)
    if name == "evaluate_stage":
        from medauc.evaluate.command import evaluate_stage

        return evaluate_stage
    if name == "read_predictions":
        from medauc.evaluate.predictions import read_predictions

        return read_predictions
    raise AttributeError(f"module 'medauc.evaluate' has no attribute {name!r}")
