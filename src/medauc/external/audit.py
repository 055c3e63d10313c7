"""An external set against the training data: shared images, shared patients, and the image-statistics gap.

Shared images: exact copies (the same pixels, the manifest's ``sha256``) and near-duplicates (the
perceptual hash within ``data.near_duplicate_hamming`` bits, :mod:`medauc.data.neardup`) of the run's
train, val and test images. An external set that shares images or patients with the training or
validation data is no independent test: ``overlaps_training`` is then true and the report says so first.

The gap: per image the features :func:`medauc.data.audit.scan_file` measures (intensity mean, sd,
percentiles, border, size) and an SNR-like ratio (mean / sd), for the external images and for up to
:data:`TRAIN_SAMPLE` training images; per feature the means and sds, the standardised mean difference
and the two-sample Kolmogorov-Smirnov statistic with its p-value; and over all features, the
cross-validated AUC of a logistic regression telling external from training images (0.5: no gap
these statistics see; 1: every image tells its hospital).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medauc.data.audit import PERCENTILES, hex_to_uint64, scan_files
from medauc.data.neardup import near_pairs

TRAIN_SAMPLE = 400  # training images measured for the statistics gap (seeded sample)
FEATURES = ("mean", "std", *(f"p{q}" for q in PERCENTILES), "border_mean", "snr", "width", "height")
SHOWN = 10


def shared_images(ext: pd.DataFrame, man: pd.DataFrame, hamming: int) -> dict[str, Any]:
    """Exact and near-duplicates of the external images (``ext``: image_id, sha256, phash) among the run's
    manifest (``man``: image_id, split, sha256, phash), per split, with up to :data:`SHOWN` examples each."""
    out: dict[str, Any] = {"near_duplicate_hamming": hamming, "exact": {}, "near": {}, "examples": []}
    by_sha: dict[str, list[int]] = {}
    for i, s in enumerate(man["sha256"].astype(str)):
        by_sha.setdefault(s, []).append(i)
    exact_pairs = {(i, j) for i, s in enumerate(ext["sha256"].astype(str)) for j in by_sha.get(s, [])}
    n_man = len(man)
    both = np.concatenate([hex_to_uint64(list(man["phash"].astype(str))), hex_to_uint64(list(ext["phash"].astype(str)))])
    pairs = near_pairs(both, hamming) if hamming >= 0 else np.zeros((0, 2), np.int64)
    cross = pairs[(pairs[:, 0] < n_man) & (pairs[:, 1] >= n_man)]
    near_pairs_ = {(int(b) - n_man, int(a)) for a, b in cross} - exact_pairs
    splits = man["split"].astype(str).to_numpy()
    for kind, found in (("exact", exact_pairs), ("near", near_pairs_)):
        for split in ("train", "val", "test"):
            out[kind][split] = len({i for i, j in found if splits[j] == split})
        for i, j in sorted(found)[:SHOWN]:
            out["examples"].append({"kind": kind, "external": str(ext["image_id"].iloc[i]),
                                    "run_image": str(man["image_id"].iloc[j]), "split": str(splits[j])})
    return out


def shared_patients(ext: pd.DataFrame, man: pd.DataFrame) -> dict[str, int]:
    """External patients whose id also names a patient of the run's train, val or test split (0 without ids)."""
    if "subject" not in ext.columns or "subject" not in man.columns:
        return {"train": 0, "val": 0, "test": 0}
    mine = set(ext["subject"].astype(str)) - {""}
    return {split: len(mine & (set(man.loc[man["split"] == split, "subject"].astype(str)) - {""}))
            for split in ("train", "val", "test")}


def _features(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(records))
    df["snr"] = df["mean"] / df["std"].where(df["std"] > 0)
    return df[list(FEATURES)].astype(float)


def training_records(man: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    """:func:`scan_files` records of up to :data:`TRAIN_SAMPLE` training images, a seeded sample."""
    train = man[man["split"] == "train"]
    if len(train) > TRAIN_SAMPLE:
        train = train.sample(TRAIN_SAMPLE, random_state=seed)
    return [r for r in scan_files(list(train["path"]), workers=1, desc="external: training statistics") if "error" not in r]


def statistics_gap(ext_records: Sequence[dict[str, Any]], train_records: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Per feature: ``train_mean, train_sd, external_mean, external_sd, smd, ks, ks_p``; ``domain_auc`` over all."""
    from scipy.stats import ks_2samp

    a, b = _features(train_records), _features(ext_records)
    features: dict[str, Any] = {}
    for f in FEATURES:
        x, y = a[f].dropna().to_numpy(), b[f].dropna().to_numpy()
        if x.size < 2 or y.size < 2:
            continue
        pooled = np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
        ks = ks_2samp(x, y)
        features[f] = {"train_mean": float(x.mean()), "train_sd": float(x.std(ddof=1)), "external_mean": float(y.mean()),
                       "external_sd": float(y.std(ddof=1)),
                       "smd": float((y.mean() - x.mean()) / pooled) if pooled > 0 else (0.0 if y.mean() == x.mean() else float("inf")),
                       "ks": float(ks.statistic), "ks_p": float(ks.pvalue)}
    largest = max(features, key=lambda f: features[f]["ks"]) if features else None
    return {"n_train_measured": len(a), "n_external": len(b), "features": features, "largest_shift": largest,
            "domain_auc": _domain_auc(a, b, seed)}


def _domain_auc(a: pd.DataFrame, b: pd.DataFrame, seed: int) -> float:
    """Cross-validated AUC of a logistic regression telling external (1) from training (0) images by their statistics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.metrics import roc_auc_score

    x = pd.concat([a, b]).fillna(0.0).to_numpy()
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = min(5, len(a), len(b))
    if folds < 2:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    p = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def verdict(images: dict[str, Any], patients: dict[str, int]) -> dict[str, Any]:
    """``overlaps_training`` (shared with train or val: the models saw them), ``overlaps_test`` and a sentence."""
    def count(split: str) -> int:
        return int(images["exact"][split] + images["near"][split] + patients[split])

    train, test = count("train") + count("val"), count("test")
    parts = []
    for split in ("train", "val", "test"):
        e, n, p = images["exact"][split], images["near"][split], patients[split]
        if e or n or p:
            parts.append(f"{split}: {e} exact and {n} near-duplicate image(s), {p} shared patient id(s)")
    text = ("shares images or patients with the run's " + "; ".join(parts)) if parts else "shares no image and no patient id with the run"
    return {"overlaps_training": train > 0, "overlaps_test": test > 0, "text": text}
