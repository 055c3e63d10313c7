"""DeLong's test for paired ROC AUCs and DeLong confidence intervals, in O(n log n).

The fast algorithm of Sun and Xu (2014, IEEE Signal Processing Letters 21:1389) needs mid-ranks
of each score among all cases, among positives and among negatives. All three come from one sort
of the pooled scores: within a group of tied scores, a positive's placement among negatives is
(negatives below the group + half the negatives in it) / n_negatives, and likewise for negatives.
Ties therefore count one half, as in the Mann-Whitney statistic, scikit-learn and R's pROC (whose
``roc.test(method="delong", paired=TRUE)`` and ``ci.auc(method="delong")`` these functions match
to 1e-9; see ``tests/fixtures/proc_delong.json``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from medauc.errors import EvaluationError


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data given (for example an AUC with no negatives); it is nan."""


@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of AUC(a) - AUC(b) on the same cases; the CI is of the difference."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    z: float
    p_value: float  # two-sided
    ci_low: float
    ci_high: float
    var_a: float
    var_b: float
    covariance: float
    level: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AUCInterval:
    """An AUC with its confidence interval."""

    auc: float
    low: float
    high: float
    level: float
    method: str
    variance: float = float("nan")  # DeLong variance; nan for the bootstrap

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_binary(y_true: Any, *scores: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validate a 0/1 label vector (n,) and score vectors (n,) of finite floats; return arrays."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"y_true must be one-dimensional, got y_true.shape={y.shape}")
    if y.size == 0:
        raise EvaluationError("y_true is empty: there is nothing to evaluate")
    if y.dtype == bool:
        y = y.astype(np.int8)
    if not np.issubdtype(y.dtype, np.number):
        raise EvaluationError(f"y_true must be 0/1 numbers (1 = positive), got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise EvaluationError(
            f"y_true must contain only 0 and 1 (1 = positive); got {np.unique(y[bad])[:5].tolist()}"
        )
    out = []
    for k, s in enumerate(scores):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != y.shape:
            raise EvaluationError(f"score {k} has shape {s.shape}, y_true has {y.shape}: they must match")
        if not np.isfinite(s).all():
            idx = np.flatnonzero(~np.isfinite(s))
            raise EvaluationError(
                f"score {k} has {idx.size} NaN or infinite values (first at positions {idx[:5].tolist()}); "
                "fix the predictions file, an AUC cannot be computed from them"
            )
        out.append(s)
    return y.astype(bool), out


def placements(y: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong placement values (structural components) of one score vector.

    y: (n,) bool, True = positive; score: (n,) float. Returns (auc, v10 (n_pos,), v01 (n_neg,)):
    v10[i] = P(negative < positive i) + 0.5 P(tie), v01[j] = P(positive > negative j) + 0.5 P(tie),
    each in the positives' and negatives' original order. mean(v10) == mean(v01) == AUC.
    """
    m = int(y.sum())
    n = y.size - m
    order = np.argsort(score, kind="stable")
    s = score[order]
    pos = y[order]
    # group id of each sorted element (tied scores share a group)
    new_group = np.empty(s.size, dtype=bool)
    new_group[0] = True
    np.not_equal(s[1:], s[:-1], out=new_group[1:])
    gid = np.cumsum(new_group) - 1
    pos_per_group = np.bincount(gid, weights=pos, minlength=gid[-1] + 1)
    neg_per_group = np.bincount(gid, minlength=gid[-1] + 1) - pos_per_group
    neg_below = np.cumsum(neg_per_group) - neg_per_group
    pos_above = m - np.cumsum(pos_per_group)
    v10_sorted = (neg_below + 0.5 * neg_per_group)[gid[pos]] / n
    v01_sorted = (pos_above + 0.5 * pos_per_group)[gid[~pos]] / m
    # back to the original order of positives and of negatives
    pos_rank = np.argsort(order[pos], kind="stable")
    neg_rank = np.argsort(order[~pos], kind="stable")
    v10 = v10_sorted[pos_rank]
    v01 = v01_sorted[neg_rank]
    auc = float(v10.mean())
    return auc, v10, v01


def _class_counts(y: np.ndarray) -> tuple[int, int]:
    """(positives, negatives) of a bool label vector."""
    m = int(y.sum())
    return m, y.size - m


def delong_test(y_true: Any, score_a: Any, score_b: Any, level: float = 0.95) -> DeLongResult:
    """Paired two-sided DeLong test of AUC(score_a) vs AUC(score_b) on the same cases.

    y_true: (n,) 0/1 with 1 = positive; score_a, score_b: (n,) higher = more positive.
    Undefined cases (one class only, or fewer than 2 of a class for the variance) warn with
    :class:`UndefinedMetricWarning` and give nan, never a made-up number. Two identical score
    vectors give z = 0, p = 1 (as pROC).
    """
    _check_level(level)
    y, (a, b) = check_binary(y_true, score_a, score_b)
    m, n = _class_counts(y)
    nan = float("nan")
    if m == 0 or n == 0:
        warnings.warn(
            f"AUC is undefined with {m} positives and {n} negatives: DeLong test gives nan",
            UndefinedMetricWarning, stacklevel=2,
        )
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, level, m, n)
    auc_a, x_a, y_a = placements(y, a)
    auc_b, x_b, y_b = placements(y, b)
    d = auc_a - auc_b
    if m < 2 or n < 2:
        warnings.warn(
            f"DeLong variance needs at least 2 positives and 2 negatives, got {m} and {n}: z, p and CI are nan",
            UndefinedMetricWarning, stacklevel=2,
        )
        return DeLongResult(auc_a, auc_b, d, nan, nan, nan, nan, nan, nan, nan, level, m, n)
    sx = np.cov(np.vstack([x_a, x_b]), ddof=1)
    sy = np.cov(np.vstack([y_a, y_b]), ddof=1)
    s = sx / m + sy / n
    var_d = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    sig = np.sqrt(max(var_d, 0.0))
    crit = float(norm.ppf(1 - (1 - level) / 2))
    if sig == 0.0:
        if d == 0.0:
            z, p = 0.0, 1.0
        else:
            warnings.warn(
                "DeLong variance of the AUC difference is 0 with a non-zero difference "
                f"({d:.6g}): z and p are undefined (nan); typically both AUCs are 1 or 0",
                UndefinedMetricWarning, stacklevel=2,
            )
            z, p = nan, nan
    else:
        z = d / sig
        p = float(2 * norm.sf(abs(z)))
    return DeLongResult(
        auc_a=auc_a, auc_b=auc_b, difference=d, z=float(z), p_value=float(p),
        ci_low=d - crit * sig, ci_high=d + crit * sig,
        var_a=float(s[0, 0]), var_b=float(s[1, 1]), covariance=float(s[0, 1]),
        level=level, n_positive=m, n_negative=n,
    )


def delong_variance(y_true: Any, score: Any) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) for one score vector; variance nan if undefined."""
    y, (s,) = check_binary(y_true, score)
    m, n = _class_counts(y)
    if m == 0 or n == 0:
        warnings.warn(f"AUC is undefined with {m} positives and {n} negatives", UndefinedMetricWarning, stacklevel=2)
        return float("nan"), float("nan")
    auc, v10, v01 = placements(y, s)
    if m < 2 or n < 2:
        warnings.warn(
            f"DeLong variance needs at least 2 positives and 2 negatives, got {m} and {n}",
            UndefinedMetricWarning, stacklevel=2,
        )
        return auc, float("nan")
    return auc, float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def auc_ci(
    y_true: Any,
    score: Any,
    level: float = 0.95,
    method: str = "delong",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> AUCInterval:
    """AUC of ``score`` for 0/1 ``y_true`` with a ``level`` confidence interval.

    method "delong": normal interval from DeLong's variance, clipped to [0, 1] (as pROC's
    ``ci.auc``); "bootstrap": percentile interval of ``n_bootstrap`` stratified resamples
    (positives and negatives resampled separately, seeded by ``seed``).
    """
    _check_level(level)
    if method == "delong":
        auc, var = delong_variance(y_true, score)
        if not np.isfinite(var):
            return AUCInterval(auc, float("nan"), float("nan"), level, method, var)
        crit = float(norm.ppf(1 - (1 - level) / 2))
        sd = np.sqrt(var)
        return AUCInterval(auc, float(min(max(auc - crit * sd, 0.0), 1.0)), float(min(max(auc + crit * sd, 0.0), 1.0)), level, method, var)
    if method == "bootstrap":
        from medauc.evaluate.bootstrap import bootstrap_weights, percentile_interval
        from medauc.evaluate.metrics import weighted_auc

        y, (s,) = check_binary(y_true, score)
        m, n = _class_counts(y)
        if m == 0 or n == 0:
            warnings.warn(f"AUC is undefined with {m} positives and {n} negatives", UndefinedMetricWarning, stacklevel=2)
            nan = float("nan")
            return AUCInterval(nan, nan, nan, level, method)
        auc = float(weighted_auc(np.ones((1, y.size)), s, y)[0])
        w = bootstrap_weights(y.astype(np.int64), n_bootstrap, np.random.default_rng(seed))
        reps = weighted_auc(w, s, y)
        low, high = percentile_interval(reps, level)
        return AUCInterval(auc, low, high, level, method)
    raise EvaluationError(f"auc_ci method must be 'delong' or 'bootstrap', got {method!r}")


def _check_level(level: float) -> None:
    if not (0.0 < level < 1.0):
        raise EvaluationError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")
