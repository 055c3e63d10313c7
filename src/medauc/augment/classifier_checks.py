"""Checks (a) and (e), which need a trained classifier: measured on its predictions files.

(a) the share of generated images a classifier calls healthy; (e) how often restoring a tumour
test image turns the classifier's answer into "healthy". The strategies stage
(:mod:`medauc.strategies`) runs them; the results' schema is in :mod:`medauc.augment.checks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import percentile_interval


def wilson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Wilson score interval of a proportion k/n; [nan, nan] when n == 0."""
    if n == 0:
        return [float("nan"), float("nan")]
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def predicted_labels(pred: pd.DataFrame) -> pd.Series:
    """Argmax class of a predictions frame with ``prob_<class>`` columns."""
    cols = [c for c in pred.columns if c.startswith("prob_")]
    if not cols:
        raise EvaluationError(f"predictions have no prob_<class> columns (columns: {list(pred.columns)})")
    return pred[cols].idxmax(axis=1).str.slice(len("prob_"))


def healthy_share(pred: pd.DataFrame, provenance: pd.DataFrame, negative_class: str, level: float = 0.95) -> dict[str, Any]:
    """Check (a): share of generated images predicted ``negative_class``, overall and per sigma.

    pred: predictions on the generated images (``image_id``, ``prob_<class>``...);
    provenance: their manifest rows (``image_id``, ``sigma``).
    """
    df = pred[["image_id"]].assign(predicted=predicted_labels(pred).to_numpy())
    df = df.merge(provenance[["image_id", "sigma"]], on="image_id", how="left", validate="one_to_one")
    hit = (df["predicted"] == negative_class).to_numpy()
    out: dict[str, Any] = {
        "n": int(len(df)),
        "share": float(hit.mean()) if len(df) else float("nan"),
        "ci": wilson(int(hit.sum()), len(df), level),
        "predicted": {str(k): int(v) for k, v in df["predicted"].value_counts().items()},
        "per_sigma": [],
    }
    for sigma, g in df.groupby("sigma", sort=True):
        h = (g["predicted"] == negative_class).to_numpy()
        out["per_sigma"].append({"sigma": float(sigma), "n": int(len(g)), "share": float(h.mean()), "ci": wilson(int(h.sum()), len(g), level)})
    return out


def flip_table(
    test_pred: pd.DataFrame, restored_pred: pd.DataFrame, provenance: pd.DataFrame, negative_class: str
) -> pd.DataFrame:
    """One row per restored tumour test image: ``source_image_id, sigma, healthy_original, healthy_restored``."""
    orig = test_pred[["image_id"]].assign(healthy_original=(predicted_labels(test_pred) == negative_class).to_numpy())
    rest = restored_pred[["image_id"]].assign(healthy_restored=(predicted_labels(restored_pred) == negative_class).to_numpy())
    rest = rest.merge(provenance[["image_id", "source_image_id", "sigma"]], on="image_id", how="left", validate="one_to_one")
    df = rest.merge(orig.rename(columns={"image_id": "source_image_id"}), on="source_image_id", how="inner")
    if len(df) != len(rest):
        raise EvaluationError(f"{len(rest) - len(df)} restored test images have no prediction for their original test image")
    return df


def flip_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Check (e) for one model, from :func:`flip_table`."""
    first = df.drop_duplicates("source_image_id")
    was_tumour = ~df["healthy_original"]

    def rate(d: pd.DataFrame) -> float:
        w = ~d["healthy_original"]
        return float(d.loc[w, "healthy_restored"].mean()) if w.any() else float("nan")

    return {
        "n_sources": int(len(first)),
        "n_restored": int(len(df)),
        "healthy_share_original": float(first["healthy_original"].mean()),
        "healthy_share_restored": float(df["healthy_restored"].mean()),
        "flip_rate": rate(df) if was_tumour.any() else float("nan"),
        "per_sigma": [
            {"sigma": float(s), "n": int(len(g)), "healthy_share": float(g["healthy_restored"].mean()), "flip_rate": rate(g)}
            for s, g in df.groupby("sigma", sort=True)
        ],
    }


def compare_flip(a: pd.DataFrame, b: pd.DataFrame, n_bootstrap: int, level: float, seed: int) -> dict[str, Any]:
    """Difference in healthy share on restored tumour images, model a - model b, paired by image.

    The bootstrap resamples source (original test) images, keeping all restorations of one together.
    """
    m = a.merge(b, on=["image_id", "source_image_id", "sigma"], suffixes=("_a", "_b"), validate="one_to_one")
    src = pd.factorize(m["source_image_id"])[0]
    ns = src.max() + 1 if len(src) else 0
    da = m["healthy_restored_a"].to_numpy(float)
    db = m["healthy_restored_b"].to_numpy(float)
    diff = float(da.mean() - db.mean()) if len(m) else float("nan")
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_bootstrap if ns else 0):
        w = np.bincount(rng.integers(0, ns, ns), minlength=ns)[src].astype(float)
        if w.sum() > 0:
            reps.append(((da - db) * w).sum() / w.sum())
    ci = list(percentile_interval(np.asarray(reps), level)) if reps else [float("nan")] * 2
    return {"healthy_share_restored_a": float(da.mean()) if len(m) else float("nan"),
            "healthy_share_restored_b": float(db.mean()) if len(m) else float("nan"),
            "difference": diff, "ci": ci, "level": level, "n": int(len(m))}


__all__ = ["compare_flip", "flip_summary", "flip_table", "healthy_share", "predicted_labels", "wilson"]
