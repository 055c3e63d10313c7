"""DeLong's test for paired ROC AUCs and DeLong confidence intervals, in O(n log n).

The fast algorithm of Sun and Xu (2014, IEEE Signal Processing Letters 21:1389) needs mid-ranks
of each score among all cases, among positives and among negatives. All three come from one sort
of the pooled scores: within a group of tied scores, a positive's placement among negatives is
(negatives below the group + half the negatives in it) / n_negatives, and likewise for negatives.
Ties therefore count one half, as in the Mann-Whitney statistic, scikit-learn and R's pROC (whose
``roc.test(method="delong", paired=TRUE)`` and ``ci.auc(method="delong")`` these functions match
to 1e-9; see ``tests/fixtures/proc_delong.json``).

When the images' patients are known (``clusters``: (n,) patient ids), slices of one patient are
not independent and the variances come from Obuchowski's clustered-data estimator (1997,
Biometrics 53:567-578, as implemented in the Cleveland Clinic's ``funcs_clusteredROC.R``): the
placement values are summed per patient, X_i = sum of V10 over patient i's positives - m_i AUC and
Y_i = sum of V01 over its negatives - n_i AUC, and with M positives, N negatives, I patients, I10
of them holding a positive and I01 a negative,

    S10 = I10 / ((I10 - 1) M) sum X_i^2,   S01 = I01 / ((I01 - 1) N) sum Y_i^2,
    S11 = I / (I - 1) sum X_i Y_i,          var(AUC) = S10 / M + S01 / N + 2 S11 / (M N),

and covariances between two scores on the same images likewise (cross products of their X and Y).
With one image per patient X_i and Y_i are single centred placement values, S11 = 0 and
I10 / (I10 - 1) = M / (M - 1): the estimator *is* DeLong's (sample variances with ddof 1), with no
extra n / (n - 1) factor.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from medauc.errors import EvaluationError, UndefinedMetricWarning
from medauc.evaluate.predictions import missing_id


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
    n_patients: int | None = None  # patients the variance was computed over (Obuchowski); None: images (DeLong)

    @property
    def se(self) -> float:
        """Standard error of the difference, sqrt(var_a + var_b - 2 cov); nan if undefined."""
        v = self.var_a + self.var_b - 2 * self.covariance
        return float(np.sqrt(max(v, 0.0))) if np.isfinite(v) else float("nan")

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
    variance: float = float("nan")  # DeLong (or Obuchowski) variance; nan for the bootstrap
    n_patients: int | None = None  # patients resampled or modelled; None: images

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


def check_clusters(clusters: Any, n: int) -> np.ndarray | None:
    """Patient index (n,) int in [0, I) of each image from patient ids (n,), or None for None."""
    if clusters is None:
        return None
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise EvaluationError(f"clusters (patient ids) must have shape ({n},) like y_true, got {c.shape}")
    # None, NaN or "" is no patient id: np.unique would raise a TypeError on None, and join every NaN into one patient.
    # Read from the values as given: np.asarray turns a NaN among strings into the string "nan".
    given = clusters.tolist() if isinstance(clusters, np.ndarray) else list(clusters)
    missing = np.array([missing_id(v) for v in given], dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise EvaluationError(
            f"clusters (patient ids): {rows.size} of {n} are missing (None, NaN or empty; first at positions "
            f"{rows[:5].tolist()}); give every image its patient id, or clusters=None to treat images as independent"
        )
    return np.unique(c.astype(str) if c.dtype == object else c, return_inverse=True)[1].ravel()


def _too_few_clusters(y: np.ndarray, codes: np.ndarray) -> str:
    """Why Obuchowski's variance is undefined for these patients ("" when it is defined)."""
    i10, i01 = np.unique(codes[y]).size, np.unique(codes[~y]).size
    if i10 < 2 or i01 < 2:
        return (f"the clustered (patient-level) variance needs at least 2 patients with positives and 2 with "
                f"negatives, got {i10} and {i01}")
    return ""


def clustered_covariance(y: np.ndarray, scores: list[np.ndarray], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (K,) and their Obuchowski (1997) covariance matrix (K, K) for K scores on the same clustered cases.

    y: (n,) bool, True = positive; scores: K arrays (n,); codes: (n,) patient index in [0, I).
    Needs at least 2 patients holding positives and 2 holding negatives (see the module docstring).
    """
    n_clusters = int(codes.max()) + 1
    pos_codes, neg_codes = codes[y], codes[~y]
    m, n = pos_codes.size, neg_codes.size
    m_i = np.bincount(pos_codes, minlength=n_clusters)
    n_i = np.bincount(neg_codes, minlength=n_clusters)
    aucs, xs, ys = [], [], []
    for score in scores:
        auc, v10, v01 = placements(y, score)
        aucs.append(auc)
        xs.append(np.bincount(pos_codes, weights=v10, minlength=n_clusters) - m_i * auc)
        ys.append(np.bincount(neg_codes, weights=v01, minlength=n_clusters) - n_i * auc)
    X, Y = np.stack(xs, axis=1), np.stack(ys, axis=1)  # (I, K)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    s10 = i10 / ((i10 - 1) * m) * (X.T @ X)
    s01 = i01 / ((i01 - 1) * n) * (Y.T @ Y)
    s11 = n_clusters / (n_clusters - 1) * (X.T @ Y)  # [k, l] = sum_i X_i(k) Y_i(l)
    return np.array(aucs), s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_test(y_true: Any, score_a: Any, score_b: Any, level: float = 0.95, clusters: Any = None) -> DeLongResult:
    """Paired two-sided DeLong test of AUC(score_a) vs AUC(score_b) on the same cases.

    y_true: (n,) 0/1 with 1 = positive; score_a, score_b: (n,) higher = more positive;
    clusters: (n,) patient ids, or None when images are independent. With patients, the variances
    and covariance are Obuchowski's clustered ones (module docstring).
    Undefined cases (one class only, or fewer than 2 of a class (or of patients holding it) for
    the variance) warn with :class:`UndefinedMetricWarning` and give nan, never a made-up number.
    Two identical score vectors give z = 0, p = 1 (as pROC).

    Examples
    --------
    >>> from medauc.evaluate import delong_test
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> r = delong_test(y, [0.1, 0.3, 0.2, 0.6, 0.8, 0.4, 0.9, 0.7], [0.2, 0.5, 0.1, 0.4, 0.6, 0.3, 0.7, 0.5])
    >>> r.auc_a, r.auc_b, round(r.p_value, 3)
    (0.9375, 0.84375, 0.399)
    """
    _check_level(level)
    y, (a, b) = check_binary(y_true, score_a, score_b)
    codes = check_clusters(clusters, y.size)
    n_pat = None if codes is None else int(codes.max()) + 1
    m, n = _class_counts(y)
    nan = float("nan")
    if m == 0 or n == 0:
        warnings.warn(
            f"AUC is undefined with {m} positives and {n} negatives: DeLong test gives nan",
            UndefinedMetricWarning, stacklevel=2,
        )
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, level, m, n, n_pat)
    auc_a, x_a, y_a = placements(y, a)
    auc_b, x_b, y_b = placements(y, b)
    d = auc_a - auc_b
    few = (f"DeLong variance needs at least 2 positives and 2 negatives, got {m} and {n}" if m < 2 or n < 2
           else "" if codes is None else _too_few_clusters(y, codes))
    if few:
        warnings.warn(f"{few}: z, p and CI are nan", UndefinedMetricWarning, stacklevel=2)
        return DeLongResult(auc_a, auc_b, d, nan, nan, nan, nan, nan, nan, nan, level, m, n, n_pat)
    if codes is None:
        sx = np.cov(np.vstack([x_a, x_b]), ddof=1)
        sy = np.cov(np.vstack([y_a, y_b]), ddof=1)
        s = sx / m + sy / n
    else:
        s = clustered_covariance(y, [a, b], codes)[1]
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
        level=level, n_positive=m, n_negative=n, n_patients=n_pat,
    )


def delong_variance(y_true: Any, score: Any, clusters: Any = None) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) for one score vector; variance nan if undefined.

    ``clusters`` (n,) patient ids: Obuchowski's clustered variance instead (module docstring).
    """
    y, (s,) = check_binary(y_true, score)
    codes = check_clusters(clusters, y.size)
    m, n = _class_counts(y)
    if m == 0 or n == 0:
        warnings.warn(f"AUC is undefined with {m} positives and {n} negatives", UndefinedMetricWarning, stacklevel=2)
        return float("nan"), float("nan")
    auc, v10, v01 = placements(y, s)
    few = (f"DeLong variance needs at least 2 positives and 2 negatives, got {m} and {n}" if m < 2 or n < 2
           else "" if codes is None else _too_few_clusters(y, codes))
    if few:
        warnings.warn(few, UndefinedMetricWarning, stacklevel=2)
        return auc, float("nan")
    if codes is not None:
        return auc, float(clustered_covariance(y, [s], codes)[1][0, 0])
    return auc, float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def auc_ci(
    y_true: Any,
    score: Any,
    level: float = 0.95,
    method: str = "delong",
    n_bootstrap: int = 2000,
    seed: int = 0,
    clusters: Any = None,
) -> AUCInterval:
    """AUC of ``score`` for 0/1 ``y_true`` with a ``level`` confidence interval.

    method "delong": normal interval from DeLong's variance, clipped to [0, 1] (as pROC's
    ``ci.auc``); "bootstrap": percentile interval of ``n_bootstrap`` stratified resamples
    (positives and negatives resampled separately, seeded by ``seed``). With ``clusters`` (n,)
    patient ids, the variance is Obuchowski's and the bootstrap resamples patients (stratified by
    the classes they hold, see :mod:`medauc.evaluate.bootstrap`).

    Examples
    --------
    >>> from medauc.evaluate import auc_ci
    >>> y, score = [0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.3, 0.2, 0.6, 0.8, 0.4, 0.9, 0.7]
    >>> ci = auc_ci(y, score)
    >>> ci.auc, round(ci.low, 3), ci.high
    (0.9375, 0.764, 1.0)
    >>> ci = auc_ci(y, score, method="bootstrap", seed=0)
    >>> ci.low, ci.high
    (0.75, 1.0)
    """
    _check_level(level)
    if method == "delong":
        auc, var = delong_variance(y_true, score, clusters)
        n_pat = None if clusters is None else int(np.unique(np.asarray(clusters)).size)
        if not np.isfinite(var):
            return AUCInterval(auc, float("nan"), float("nan"), level, method, var, n_pat)
        crit = float(norm.ppf(1 - (1 - level) / 2))
        sd = np.sqrt(var)
        return AUCInterval(auc, float(min(max(auc - crit * sd, 0.0), 1.0)), float(min(max(auc + crit * sd, 0.0), 1.0)),
                           level, method, var, n_pat)
    if method == "bootstrap":
        from medauc.evaluate.bootstrap import percentile_interval, weight_chunks
        from medauc.evaluate.metrics import weighted_auc

        y, (s,) = check_binary(y_true, score)
        codes = check_clusters(clusters, y.size)
        n_pat = None if codes is None else int(codes.max()) + 1
        m, n = _class_counts(y)
        if m == 0 or n == 0:
            warnings.warn(f"AUC is undefined with {m} positives and {n} negatives", UndefinedMetricWarning, stacklevel=2)
            nan = float("nan")
            return AUCInterval(nan, nan, nan, level, method, n_patients=n_pat)
        auc = float(weighted_auc(np.ones((1, y.size)), s, y)[0])
        # Resamples in chunks of at most CHUNK_ENTRIES weights (one chunk below 10,000 images), so the
        # memory stays bounded at any size: 2,000 x 100,000 weights would take 1.6 GB at once.
        reps = np.concatenate([weighted_auc(w, s, y) for w in weight_chunks(y.astype(np.int64), n_bootstrap, seed, codes)])
        low, high = percentile_interval(reps, level)
        return AUCInterval(auc, low, high, level, method, n_patients=n_pat)
    raise EvaluationError(f"auc_ci method must be 'delong' or 'bootstrap', got {method!r}")


def _check_level(level: float) -> None:
    if not (0.0 < level < 1.0):
        raise EvaluationError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")
