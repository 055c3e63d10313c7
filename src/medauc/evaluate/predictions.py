"""Predictions files: reading and validating them into :class:`Predictions` arrays.

A predictions file (``predictions/<model>/<seed>/<split>.csv``) has columns
``image_id, label, prob_<class>...`` (optional ``split`` and other columns are ignored); the
class order is the order of the ``prob_`` columns and ``label`` is a class name. An optional text
column ``subject`` names each image's patient: when it is filled in, every interval and test
resamples or models patients rather than images (slices of one patient are not independent);
when it is absent or empty the patients are unknown and images are treated as independent.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medauc.errors import EvaluationError

PROB_PREFIX = "prob_"
# Rows whose probabilities sum to within this of 1 are float rounding of a softmax: used as they are.
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Predictions:
    """One predictions file as arrays: n images, K classes."""

    image_ids: np.ndarray  # (n,) str
    y: np.ndarray  # (n,) int, index into classes
    probs: np.ndarray  # (n, K) float64, rows sum to 1
    classes: tuple[str, ...]
    negative: int  # index of the negative (healthy) class
    source: str  # file path or "<arrays>", for messages
    subject: np.ndarray | None = None  # (n,) str patient ids; None when no patient is known

    @property
    def n_subjects(self) -> int | None:
        """Number of distinct patients, None when they are unknown."""
        return None if self.subject is None else int(np.unique(self.subject).size)

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def positive(self) -> np.ndarray:
        """(n,) bool: screening truth, any class but the negative one."""
        return self.y != self.negative

    @property
    def screening_score(self) -> np.ndarray:
        """(n,) float: 1 - p(negative), the probability of any positive class."""
        return 1.0 - self.probs[:, self.negative]

    def with_classes(self, classes: Sequence[str]) -> "Predictions":
        """The same predictions with probability columns in the order of ``classes`` (the same set)."""
        if tuple(classes) == self.classes:
            return self
        if set(classes) != set(self.classes):
            raise EvaluationError(f"{self.source}: classes {list(self.classes)} differ from {list(classes)}")
        cols = [self.classes.index(c) for c in classes]
        remap = np.array([list(classes).index(c) for c in self.classes])
        return Predictions(self.image_ids, remap[self.y], self.probs[:, cols], tuple(classes), int(remap[self.negative]),
                           self.source, self.subject)

    def reorder(self, image_ids: np.ndarray) -> "Predictions":
        """The same predictions with rows in the order of ``image_ids`` (which must be the same set)."""
        pos = pd.Index(self.image_ids).get_indexer(image_ids)
        if (pos < 0).any():
            raise EvaluationError(f"{self.source}: image ids {image_ids[pos < 0][:5].tolist()} are missing")
        subject = None if self.subject is None else self.subject[pos]
        return Predictions(self.image_ids[pos], self.y[pos], self.probs[pos], self.classes, self.negative, self.source, subject)



def missing_id(value: object) -> bool:
    """True for a patient id that names no patient: None, NaN or a blank string."""
    return value is None or (isinstance(value, (float, np.floating)) and bool(np.isnan(value))) or (
        isinstance(value, str) and not value.strip())


def from_arrays(
    y_true: Sequence[str] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    negative_class: str = "healthy",
    image_ids: Sequence[str] | None = None,
    renormalise: bool = True,
    source: str = "<arrays>",
    subject: Sequence[str] | np.ndarray | None = None,
) -> Predictions:
    """Validate class-name labels (n,) and probabilities (n, K) into :class:`Predictions`.

    ``subject`` (n,) patient ids, "" = unknown: all unknown gives ``subject=None``; some known and
    some unknown is an error (the patient-level statistics would drop or mis-pool those images).
    """
    classes = tuple(str(c) for c in classes)
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y_true).astype(str)
    if labels.size == 0:
        raise EvaluationError(f"{source}: no rows; an empty predictions file cannot be evaluated")
    if probs.ndim != 2 or probs.shape != (labels.size, len(classes)):
        raise EvaluationError(
            f"{source}: probabilities must have shape (n, K) = ({labels.size}, {len(classes)}), got {probs.shape}"
        )
    if len(set(classes)) != len(classes):
        raise EvaluationError(f"{source}: duplicate class columns in {list(classes)}")
    if len(classes) < 2:
        raise EvaluationError(f"{source}: at least 2 classes are needed, got {list(classes)}")
    if negative_class not in classes:
        raise EvaluationError(
            f"{source}: negative class {negative_class!r} is not among the classes {list(classes)}; "
            "set data.negative_class (or --negative-class) to one of them"
        )
    ids = np.arange(labels.size).astype(str) if image_ids is None else np.asarray(image_ids).astype(str)
    if ids.shape != labels.shape:
        raise EvaluationError(f"{source}: {ids.size} image ids for {labels.size} labels")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise EvaluationError(f"{source}: duplicate image ids {np.unique(ids[dup])[:5].tolist()}; each image must appear once")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        raise EvaluationError(
            f"{source}: labels {unknown[:5]} are not in the class list {list(classes)} "
            f"(from the {PROB_PREFIX}<class> columns); fix the labels or add the class columns"
        )
    bad = ~np.isfinite(probs)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise EvaluationError(
            f"{source}: {rows.size} rows have NaN or infinite probabilities (image ids {ids[rows[:5]].tolist()}); "
            "fix the predictions, no metric can be computed from them"
        )
    if (probs < 0).any() or (probs > 1 + SUM_TOLERANCE).any():
        rows = np.flatnonzero(((probs < 0) | (probs > 1 + SUM_TOLERANCE)).any(axis=1))
        raise EvaluationError(
            f"{source}: {rows.size} rows have probabilities outside [0, 1] (image ids {ids[rows[:5]].tolist()}); "
            "were logits written instead of softmax probabilities?"
        )
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        rows = np.flatnonzero(off)
        what = (
            f"{source}: {rows.size} of {labels.size} rows have probabilities that do not sum to 1 "
            f"(e.g. image {ids[rows[0]]}: sum {sums[rows[0]]:.6g})"
        )
        if not renormalise:
            raise EvaluationError(what + "; fix the file, or set evaluate.renormalise=true to renormalise them")
        if (sums <= 0).any():
            raise EvaluationError(what + "; some rows sum to 0 and cannot be renormalised")
        warnings.warn(what + "; renormalised to sum to 1 (evaluate.renormalise=true)", UserWarning, stacklevel=2)
        # Only the offending rows change: dividing every row by a sum of 1 +- 1 ulp would break ties.
        probs = probs.copy()
        probs[off] /= sums[off, None]
    y = np.array([index[v] for v in labels], dtype=np.int64)
    return Predictions(ids, y, probs, classes, index[negative_class], source, _subjects(subject, ids, source))


def _subjects(subject: Sequence[str] | np.ndarray | None, ids: np.ndarray, source: str) -> np.ndarray | None:
    """Validated patient ids (n,) str, or None when none is given or every one is empty."""
    if subject is None:
        return None
    subj = np.array(["" if missing_id(v) else str(v).strip() for v in subject],
                    dtype=object).astype(str)
    if subj.shape != ids.shape:
        raise EvaluationError(f"{source}: {subj.size} subject ids for {ids.size} images")
    empty = subj == ""
    if empty.all():
        return None
    if empty.any():
        rows = np.flatnonzero(empty)
        raise EvaluationError(
            f"{source}: the subject (patient) column is empty in {rows.size} of {ids.size} rows "
            f"(image ids {ids[rows[:5]].tolist()}) but filled in the others; give every image its patient id, "
            "or leave the whole column empty to treat images as independent"
        )
    return subj


def read_predictions(
    path: str | Path,
    negative_class: str = "healthy",
    classes: Sequence[str] | None = None,
    renormalise: bool = True,
) -> Predictions:
    """Read and validate one predictions CSV; ``classes`` (if given) must equal its prob_ columns as a set.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from medauc.evaluate import read_predictions
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "test.csv"
    ...     _ = path.write_text("image_id,label,prob_healthy,prob_tumour\\na,healthy,0.9,0.1\\nb,tumour,0.3,0.7\\n")
    ...     pred = read_predictions(path)
    >>> pred.classes, pred.y.tolist(), pred.probs[:, 1].tolist(), pred.subject
    (('healthy', 'tumour'), [0, 1], [0.1, 0.7], None)
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"predictions file {path} does not exist")
    if path.stat().st_size == 0:
        raise EvaluationError(f"predictions file {path} is empty (0 bytes); re-run prediction for it")
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "label": str, "subject": str}, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise EvaluationError(f"predictions file {path} is empty; re-run prediction for it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"predictions file {path} is not a readable CSV: {exc}") from exc
    prob_cols = [c for c in df.columns if str(c).startswith(PROB_PREFIX)]
    missing = [c for c in ("image_id", "label") if c not in df.columns]
    if missing or not prob_cols:
        raise EvaluationError(
            f"predictions file {path}: columns {list(df.columns)} lack "
            f"{missing + ([PROB_PREFIX + '<class>'] if not prob_cols else [])}; expected image_id, label, prob_<class>..."
        )
    if len(df) == 0:
        raise EvaluationError(f"predictions file {path} has a header but no rows; re-run prediction for it")
    file_classes = [c[len(PROB_PREFIX):] for c in prob_cols]
    if classes is not None and set(classes) != set(file_classes):
        raise EvaluationError(
            f"predictions file {path}: classes {file_classes} (from its prob_ columns) differ from the "
            f"configured classes {list(classes)} (data.classes)"
        )
    if df["label"].isna().any() or df["image_id"].isna().any():
        rows = np.flatnonzero((df["label"].isna() | df["image_id"].isna()).to_numpy())
        raise EvaluationError(f"predictions file {path}: empty image_id or label in rows {(rows + 2)[:5].tolist()} (file line numbers)")
    try:
        probs = df[prob_cols].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise EvaluationError(f"predictions file {path}: a prob_ column holds text that is not a number ({exc})") from exc
    subject = None
    if "subject" in df.columns:
        known = df["subject"].notna() & (df["subject"].astype(str).str.strip() != "")
        if known.any() and not known.all():
            rows = np.flatnonzero(~known.to_numpy())
            raise EvaluationError(
                f"predictions file {path}: the subject (patient) column is empty in rows {(rows + 2)[:5].tolist()} "
                f"(file line numbers; {rows.size} of {len(df)} rows) but filled in the others; give every image its "
                "patient id, or leave the whole column empty to treat images as independent"
            )
        subject = df["subject"].fillna("").to_numpy() if known.any() else None
    return from_arrays(
        df["label"].to_numpy(), probs, file_classes, negative_class,
        image_ids=df["image_id"].to_numpy(), renormalise=renormalise, source=str(path), subject=subject,
    )
