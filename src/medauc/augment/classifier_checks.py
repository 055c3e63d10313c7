"""Checks (a) and (e), which need a trained classifier: measured on its predictions files.

(a) the share of generated images a classifier calls healthy; (e) how often restoring a tumour
test image turns the classifier's answer into "healthy". When the images' patients are known
(a ``subject`` column), both intervals are over patients (a bootstrap that resamples patients and
keeps all of one patient's images together), like every other interval in the report; else (a)'s
is Wilson's over images and (e)'s a bootstrap over source test images. The strategies stage
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


def known_subjects(df: pd.DataFrame) -> np.ndarray | None:
    """The ``subject`` column as text when every row names its patient, else None (patients unknown)."""
    if "subject" not in df.columns:
        return None
    s = df["subject"]
    if s.isna().any() or (s.astype(str).str.strip() == "").any():
        return None
    return s.astype(str).to_numpy()


def cluster_mean_interval(values: np.ndarray, clusters: np.ndarray, n_bootstrap: int, level: float, seed: int) -> list[float]:
    """Percentile interval of the mean of ``values`` (N,) under a bootstrap that resamples ``clusters`` (N,),
    each drawn cluster bringing all its rows; [nan, nan] without rows."""
    ids = pd.factorize(pd.Series(clusters))[0]
    k = int(ids.max()) + 1 if len(ids) else 0
    if k == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_bootstrap):
        w = np.bincount(rng.integers(0, k, k), minlength=k)[ids].astype(float)
        if w.sum() > 0:
            reps.append((values * w).sum() / w.sum())
    return [float(x) for x in percentile_interval(np.asarray(reps), level)] if reps else [float("nan")] * 2


def predicted_labels(pred: pd.DataFrame) -> pd.Series:
    """Argmax class of a predictions frame with ``prob_<class>`` columns."""
    cols = [c for c in pred.columns if c.startswith("prob_")]
    if not cols:
        raise EvaluationError(f"predictions have no prob_<class> columns (columns: {list(pred.columns)})")
    return pred[cols].idxmax(axis=1).str.slice(len("prob_"))


def healthy_share(pred: pd.DataFrame, provenance: pd.DataFrame, negative_class: str, level: float = 0.95,
                  n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Check (a): share of generated images predicted ``negative_class``, overall and per sigma.

    pred: predictions on the generated images (``image_id``, ``prob_<class>``...);
    provenance: their manifest rows (``image_id``, ``sigma``, optionally ``subject``: the patient of the
    image each was restored from). With every patient known the intervals resample patients
    (``n_bootstrap``, ``seed``); else they are Wilson's over images. ``unit`` says which.
    """
    cols = ["image_id", "sigma"] + (["subject"] if "subject" in provenance.columns else [])
    df = pred[["image_id"]].assign(predicted=predicted_labels(pred).to_numpy())
    df = df.merge(provenance[cols], on="image_id", how="left", validate="one_to_one")
    subjects = known_subjects(df)

    def interval(g: pd.DataFrame) -> list[float]:
        h = (g["predicted"] == negative_class).to_numpy()
        if subjects is None:
            return wilson(int(h.sum()), len(g), level)
        return cluster_mean_interval(h.astype(float), g["subject"].astype(str).to_numpy(), n_bootstrap, level, seed)

    hit = (df["predicted"] == negative_class).to_numpy()
    out: dict[str, Any] = {
        "n": int(len(df)),
        "share": float(hit.mean()) if len(df) else float("nan"),
        "ci": interval(df),
        "unit": "images" if subjects is None else "patients",
        "n_patients": None if subjects is None else int(np.unique(subjects).size),
        "predicted": {str(k): int(v) for k, v in df["predicted"].value_counts().items()},
        "per_sigma": [],
    }
    for sigma, g in df.groupby("sigma", sort=True):
        h = (g["predicted"] == negative_class).to_numpy()
        out["per_sigma"].append({"sigma": float(sigma), "n": int(len(g)), "share": float(h.mean()), "ci": interval(g)})
    return out


def flip_table(
    test_pred: pd.DataFrame, restored_pred: pd.DataFrame, provenance: pd.DataFrame, negative_class: str
) -> pd.DataFrame:
    """One row per restored tumour test image: ``source_image_id, sigma, healthy_original, healthy_restored``
    and ``subject`` (the patient) when ``provenance`` has it."""
    orig = test_pred[["image_id"]].assign(healthy_original=(predicted_labels(test_pred) == negative_class).to_numpy())
    rest = restored_pred[["image_id"]].assign(healthy_restored=(predicted_labels(restored_pred) == negative_class).to_numpy())
    cols = ["image_id", "source_image_id", "sigma"] + (["subject"] if "subject" in provenance.columns else [])
    rest = rest.merge(provenance[cols], on="image_id", how="left", validate="one_to_one")
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

    The bootstrap resamples patients when every row names one (``subject``, from :func:`flip_table`),
    keeping all images of a patient together; else source (original test) images, keeping all
    restorations of one together. ``unit`` and ``n_units`` say which and how many.
    """
    keys = ["image_id", "source_image_id", "sigma"] + (["subject"] if "subject" in a.columns and "subject" in b.columns else [])
    m = a.merge(b, on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    subjects = known_subjects(m)
    units = subjects if subjects is not None else m["source_image_id"].astype(str).to_numpy()
    da = m["healthy_restored_a"].to_numpy(float)
    db = m["healthy_restored_b"].to_numpy(float)
    diff = float(da.mean() - db.mean()) if len(m) else float("nan")
    ci = cluster_mean_interval(da - db, units, n_bootstrap, level, seed)
    return {"healthy_share_restored_a": float(da.mean()) if len(m) else float("nan"),
            "healthy_share_restored_b": float(db.mean()) if len(m) else float("nan"),
            "difference": diff, "ci": ci, "level": level, "n": int(len(m)),
            "unit": "patients" if subjects is not None else "source images", "n_units": int(np.unique(units).size)}


__all__ = ["cluster_mean_interval", "compare_flip", "flip_summary", "flip_table", "healthy_share", "known_subjects",
           "predicted_labels", "wilson"]
