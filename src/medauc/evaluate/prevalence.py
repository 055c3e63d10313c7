"""PPV, NPV and AUPRC at a clinical prevalence, from the ROC (sensitivity, specificity) and Bayes' rule.

A test set with 72% tumours says little about PPV in a clinic where 1 scan in 10,000 shows one.
Sensitivity and specificity do not depend on prevalence, so PPV and NPV at any prevalence p follow
from them; their intervals come from the bootstrap replicates of sensitivity and specificity (the
same resamples), not from building a tiny test set with that prevalence. The expected AUPRC at p
uses the whole ROC curve (see :func:`medauc.evaluate.metrics.ap_from_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medauc.evaluate.bootstrap import estimate_cell


def prevalence_key(p: float) -> str:
    """How a prevalence is spelled in metric names: 0.0001 -> "0.0001" (``ppv@0.0001``)."""
    return f"{p:g}"


def ppv_at(sens: Any, spec: Any, prevalence: float) -> np.ndarray:
    """PPV at ``prevalence`` (0..1) from sensitivity and specificity (arrays of equal shape); nan when nothing is called positive."""
    sens, spec = np.asarray(sens, dtype=np.float64), np.asarray(spec, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sens * prevalence / (sens * prevalence + (1 - spec) * (1 - prevalence))


def npv_at(sens: Any, spec: Any, prevalence: float) -> np.ndarray:
    """NPV at ``prevalence`` from sensitivity and specificity; nan when nothing is called negative."""
    sens, spec = np.asarray(sens, dtype=np.float64), np.asarray(spec, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return spec * (1 - prevalence) / (spec * (1 - prevalence) + (1 - sens) * prevalence)


def prevalence_table(
    values: dict[str, float],
    replicates: dict[str, np.ndarray],
    prevalences: Sequence[float],
    own_prevalence: float,
    level: float,
) -> list[dict[str, Any]]:
    """One entry per prevalence (the configured ones, then the test set's own) with value/low/high of
    ppv, npv, auprc (and op_ppv, op_npv when an operating point exists), read from the metric keys
    ``ppv@<p>`` etc. that :class:`~medauc.evaluate.metrics.MetricEngine` computed."""

    def cell(name: str) -> dict[str, float]:
        return estimate_cell(values[name], replicates[name], level)

    rows: list[dict[str, Any]] = []
    for p in prevalences:
        key = prevalence_key(p)
        row: dict[str, Any] = {"prevalence": p, "source": "evaluate.prevalences"}
        for m in ("ppv", "npv", "op_ppv", "op_npv", "auprc"):
            if f"{m}@{key}" in values:
                row[m] = cell(f"{m}@{key}")
        rows.append(row)
    own: dict[str, Any] = {"prevalence": own_prevalence, "source": "test set"}
    for m, name in (("ppv", "screening_ppv"), ("npv", "screening_npv"), ("op_ppv", "op_ppv"), ("op_npv", "op_npv"), ("auprc", "screening_auprc")):
        if name in values:
            own[m] = cell(name)
    rows.append(own)
    return rows
