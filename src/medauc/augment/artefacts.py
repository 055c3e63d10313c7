"""Check (d), artefact detectability: can simple image statistics tell restored images from originals?

A logistic regression on per-image statistics (:func:`image_features`), scored out of fold with
folds by patient (or by source image when patients are unknown); a cluster bootstrap over the
same units gives the interval. The result's schema is in :mod:`medauc.augment.checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medauc.augment.checks import quantise
from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import percentile_interval

FEATURE_NAMES = (
    ["mean", "std", "p01", "p50", "p99", "dark_share", "bright_share"]
    + [f"hist_{i:02d}" for i in range(16)]
    + ["gradient_mean", "laplacian_abs_mean", "laplacian_std", "residual_std", "residual_kurtosis",
       "fft_high_share", "fft_mid_share", "unique_levels"]
)


FEATURE_BLOCK = 32  # images per block: the float64 temporaries (and a 3x3 convolution's unfolding) stay near 0.4 GB at 224 px


def image_features(images: np.ndarray, block: int = FEATURE_BLOCK) -> np.ndarray:
    """Simple statistics per image: (N, S, S) in [0, 1] -> (N, len(FEATURE_NAMES)) float64.

    Computed ``block`` images at a time (each image's features depend on that image alone), so
    the float64 temporaries (about 40 copies of a block) do not grow with N.
    """
    images = np.asarray(images)
    if len(images) <= block:
        return _features(images)
    return np.concatenate([_features(images[i:i + block]) for i in range(0, len(images), block)])


def _features(images: np.ndarray) -> np.ndarray:
    """:func:`image_features` of one block.

    Intensity summaries and histogram, edge and Laplacian energy, the residual after a 3x3 box blur
    (a noise estimate), the share of spectral power at high and middle frequencies, and the number
    of distinct grey levels: what a denoiser's smoothing or a generator's texture would change.
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float64))[:, None]
    n, s = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1)
    q = torch.quantile(flat, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64), dim=1).T
    bins = np.minimum((flat.numpy() * 16).astype(np.int64), 15) + 16 * np.arange(n)[:, None]
    hist = torch.from_numpy(np.bincount(bins.ravel(), minlength=16 * n).reshape(n, 16) / flat.shape[1])
    gx = x[..., :, 1:] - x[..., :, :-1]
    gy = x[..., 1:, :] - x[..., :-1, :]
    grad = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().mean(dim=(1, 2, 3))
    lap_k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)[None, None]
    lap = F.conv2d(x, lap_k)
    resid = x[..., 1:-1, 1:-1] - F.avg_pool2d(x, 3, stride=1)
    r = resid.reshape(n, -1)
    rc = r - r.mean(dim=1, keepdim=True)
    rstd = rc.std(dim=1)
    kurt = (rc**4).mean(dim=1) / (rc.pow(2).mean(dim=1) ** 2 + 1e-12)
    power = torch.fft.fftshift(torch.fft.fft2(x[:, 0] - x[:, 0].mean(dim=(1, 2), keepdim=True)).abs() ** 2, dim=(1, 2))
    fy, fx = torch.meshgrid(torch.arange(s, dtype=torch.float64) - s // 2, torch.arange(x.shape[-1], dtype=torch.float64) - x.shape[-1] // 2, indexing="ij")
    radius = (fx**2 + fy**2).sqrt() / (s / 2)
    tot = power.sum(dim=(1, 2)) + 1e-12
    high = (power * (radius > 0.5)).sum(dim=(1, 2)) / tot
    mid = (power * ((radius > 0.25) & (radius <= 0.5))).sum(dim=(1, 2)) / tot
    levels = torch.tensor([len(np.unique(np.round(im * 255))) for im in np.asarray(images)], dtype=torch.float64)
    feats = torch.cat(
        [
            flat.mean(dim=1, keepdim=True),
            flat.std(dim=1, keepdim=True),
            q,
            (flat <= 1 / 255).double().mean(dim=1, keepdim=True),
            (flat >= 254 / 255).double().mean(dim=1, keepdim=True),
            hist,
            grad[:, None],
            lap.abs().mean(dim=(1, 2, 3))[:, None],
            lap.reshape(n, -1).std(dim=1)[:, None],
            rstd[:, None],
            kurt[:, None],
            high[:, None],
            mid[:, None],
            levels[:, None] / 256.0,
        ],
        dim=1,
    )
    return feats.numpy()


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted Mann-Whitney AUC (ties count one half); weights per case."""
    return _weighted_auc(y, s)(np.ones(len(y)) if w is None else w)


def _weighted_auc(y: np.ndarray, s: np.ndarray) -> Callable[[np.ndarray], float]:
    """The AUC of scores ``s`` for labels ``y`` as a function of per-case weights: the sort is done
    once, so each bootstrap replicate costs O(n), not O(n log n)."""
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    # for each distinct score: negative weight strictly below plus half the ties
    uniq, start = np.unique(ss, return_index=True)
    end = np.append(start[1:], len(ss))
    grp = np.searchsorted(uniq, ss)
    pos_sorted, neg_sorted = yy == 1, yy == 0

    def auc(w: np.ndarray) -> float:
        ww = np.asarray(w, dtype=np.float64)[order]
        wp, wn = ww[pos_sorted].sum(), ww[neg_sorted].sum()
        if wp == 0 or wn == 0:
            return float("nan")
        cum = np.concatenate([[0.0], np.cumsum(np.where(neg_sorted, ww, 0.0))])
        below = cum[start]
        tied = cum[end] - cum[start]
        credit = below[grp] + 0.5 * tied[grp]
        return float((ww * pos_sorted * credit).sum() / (wp * wn))

    return auc


def artefact_detectability(
    originals: np.ndarray, generated: np.ndarray, source_index: np.ndarray, sigmas: np.ndarray | None = None, **options: Any
) -> dict[str, Any]:
    """Check (d): can simple image statistics tell restored (M, S, S) from original (N, S, S) images?

    ``source_index`` (M,) gives each generated image's original (row of ``originals``). Scores are
    out-of-fold; folds and the bootstrap resample source images (clusters: an original with its
    restorations), so correlated images are never split and the interval is not too narrow.
    ``options``: ``seed``, ``folds``, ``n_bootstrap``, ``level`` of :func:`detectability_from_features`,
    which the stage calls with features computed a block at a time.
    """
    folds = options.get("folds", 5)
    if len(originals) < 2 * folds or len(generated) == 0:
        raise EvaluationError(f"artefact check needs at least {2 * folds} originals and one generated image; "
                              f"got {len(originals)} and {len(generated)}")
    return detectability_from_features(image_features(quantise(originals)), image_features(quantise(generated)),
                                       source_index, sigmas, **options)


def detectability_from_features(
    x_original: np.ndarray,
    x_generated: np.ndarray,
    source_index: np.ndarray,
    sigmas: np.ndarray | None = None,
    seed: int = 0,
    folds: int = 5,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    source_patients: np.ndarray | None = None,
) -> dict[str, Any]:
    """Check (d) from :func:`image_features` of the (quantised) originals (N, F) and generated images (M, F).

    ``source_patients`` (N,), optional: each original's patient. Given, the folds and the bootstrap
    keep a patient's originals and all their restorations together (``unit`` "patients"), since
    two slices of one head share its statistics; else each original with its restorations is
    one unit (``unit`` "source images").
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source_index = np.asarray(source_index, dtype=np.int64)
    n = len(x_original)
    if n < 2 * folds or len(x_generated) == 0:
        raise EvaluationError(f"artefact check needs at least {2 * folds} originals and one generated image; got {n} and {len(x_generated)}")
    X = np.concatenate([x_original, x_generated])
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(len(x_generated), dtype=np.int64)])
    unit_of_source, unit = np.arange(n), "source images"
    if source_patients is not None:
        source_patients = np.asarray(source_patients)
        if source_patients.shape != (n,):
            raise EvaluationError(f"source_patients must have one entry per original ({n}); got shape {source_patients.shape}")
        by_patient = np.unique(source_patients.astype(str), return_inverse=True)[1].reshape(-1).astype(np.int64)
        if by_patient.max() >= 1:  # two patients at least: else the patient is no unit to resample
            unit_of_source, unit = by_patient, "patients"
    n_units = int(unit_of_source.max()) + 1
    folds = min(folds, n_units)  # a few patients: one fold each (leave-one-patient-out)
    group = unit_of_source[np.concatenate([np.arange(n), source_index])]
    rng = np.random.default_rng(seed)
    fold_of_unit = np.empty(n_units, dtype=np.int64)
    fold_of_unit[rng.permutation(n_units)] = np.arange(n_units) % folds
    fold = fold_of_unit[group]
    score = np.empty(len(y))

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))

    for k in range(folds):
        test = fold == k
        clf = model().fit(X[~test], y[~test])
        score[test] = clf.decision_function(X[test])
    auc = _auc(y, score)

    # Cluster bootstrap over the units (patients, or source images).
    reps = np.empty(n_bootstrap)
    auc_of = _weighted_auc(y, score)
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(np.float64)
        reps[b] = auc_of(counts[group])
    ci = list(percentile_interval(reps, level))  # undefined replicates left out; none left -> nan

    per_sigma = []
    if sigmas is not None:
        sig_all = np.concatenate([np.full(n, np.nan), np.asarray(sigmas, dtype=float)])
        for sigma in sorted(set(np.asarray(sigmas, dtype=float).tolist())):
            m = (y == 0) | (sig_all == sigma)
            per_sigma.append({"sigma": sigma, "n": int((sig_all == sigma).sum()), "auc": _auc(y[m], score[m])})
    full = model().fit(X, y)
    coef = full[-1].coef_[0]
    order = np.argsort(-np.abs(coef))
    return {
        "auc": auc,
        "ci": ci,
        "level": level,
        "method": f"logistic regression on image statistics, out-of-fold by {unit[:-1]}; cluster bootstrap CI over {unit}",
        "unit": unit,
        "n_units": n_units,
        "n_original": int(n),
        "n_generated": int(len(x_generated)),
        "folds": int(folds),
        "per_sigma": per_sigma,
        "features": [{"name": FEATURE_NAMES[i], "coefficient": float(coef[i])} for i in order[:8]],
    }


__all__ = ["FEATURE_NAMES", "artefact_detectability", "detectability_from_features", "image_features"]
