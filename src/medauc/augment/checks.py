"""The five checks on generated images: b, c and d in ``run_dir/augment_checks.json`` (the augment
stage); a and e, which need trained classifiers, under ``checks`` in ``run_dir/strategies.json``
(the strategies stage, :mod:`medauc.strategies`; run folders made before it hold them here).

Schema of both (every share is in [0, 1]; every interval is ``[low, high]`` at
``level``; images are compared at ``augment.image_size`` after 8-bit quantisation, as saved):

- ``a_predicted_healthy`` (the study's check, by ``medauc strategies``): a classifier
  trained on the ORIGINAL data (strategy "balanced") predicts every generated image.
  ``{model, seed, n, share, ci, per_sigma: [{sigma, n, share, ci}], predicted: {class: count},
  per_seed, baseline: {test_healthy_called_healthy, test_tumour_called_healthy}, study_share}``;
  the baseline (the same model on original test images) says how much of ``share`` is just the
  model's leaning towards "healthy".
- ``b_restoration_quality``: PSNR (dB) and SSIM against the clean image, per sigma.
  ``{validation: [{sigma, n, psnr_noisy, psnr_restored, ssim_noisy, ssim_restored, psnr_blur,
  ssim_blur, blur_sigma, psnr_nlm, ssim_nlm}]`` (held-out healthy validation images; the first row
  is sigma 0, a clean input, whose noisy PSNR is capped at 100 dB; every method sees the same noisy
  images: ``restored`` = the U-Net, ``blur`` = the best Gaussian blur per sigma, of widths
  ``blur_sigma`` in {0.5, 0.75, 1, 1.5, 2, 3} px, chosen on these images (an oracle), ``nlm`` =
  scikit-image non-local means with an estimated sigma), ``generated: [{sigma, n, psnr, ssim}]``
  (each generated image against its own training source)}.
- ``c_memorisation``: ``{threshold, n, ssim_to_source {mean, min, max}, ssim_to_nearest_other
  {mean, ...}, near_copy_share, closer_to_other_share, sibling_ssim_mean, baseline_nearest_ssim_mean,
  per_sigma: [...]}``. "Nearest other" is the most correlated ORIGINAL training image (any class)
  other than the source, found by normalised correlation at ``lowres`` px; near-copies have SSIM
  to their source >= ``augment.near_copy_threshold``; siblings are restorations of the same source;
  the baseline is each healthy source's SSIM to its own nearest other training image.
- ``d_artefact_detectability``: a logistic regression on simple image statistics tells restored
  from original healthy images; out-of-fold scores (folds by source image, so an image and its
  restorations never straddle folds). ``{auc, ci, method, n_original, n_generated, folds,
  per_sigma: [{sigma, auc}], features: [{name, coefficient}], image_size}`` (standardised
  coefficients, largest first; positive = higher in restored images). AUC ~0.5: no visible
  signature; ~1: a signature. Unlike b and c it runs at ``data.image_size``, on the images as the
  classifier reads them, so a resizing signature (``augment.image_size`` != ``data.image_size``,
  also warned in ``image_size: {denoiser, classifier, warning}``) counts.
- ``e_shortcut_flip`` (by ``medauc strategies``): tumour TEST images restored at each sigma and predicted
  by each strategy's classifier. Per strategy ``{healthy_share_original, healthy_share_restored,
  flip_rate, per_sigma: [{sigma, healthy_share, flip_rate}]}``, ``flip_rate`` = share of restored
  images called healthy whose original the same model called a tumour; and ``comparison``:
  ``{a, b, difference (a - b), ci}`` for restoration vs balanced (paired bootstrap over source images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import norm

from medauc.augment.denoiser import psnr, resize_images, ssim
from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import percentile_interval


def quantise(images: np.ndarray) -> np.ndarray:
    """As saved to and read back from an 8-bit PNG."""
    return (np.round(np.clip(images, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


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


def _summary(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(x.mean()), "min": float(x.min()), "max": float(x.max())}


# ----------------------------------------------------------------------------- (b) quality


def generated_quality(generated: np.ndarray, sources: np.ndarray, sigmas: np.ndarray) -> list[dict[str, Any]]:
    """PSNR (dB) and SSIM of each generated image (M, S, S) against its clean source (M, S, S), per sigma (M,)."""
    p = np.minimum(psnr(generated, sources), 100.0)
    s = ssim(generated, sources)
    rows = []
    for sigma in sorted(set(np.asarray(sigmas, dtype=float).tolist())):
        m = np.asarray(sigmas) == sigma
        rows.append({"sigma": sigma, "n": int(m.sum()), "psnr": float(p[m].mean()), "ssim": float(s[m].mean())})
    return rows


# ----------------------------------------------------------------------------- (c) memorisation


def _unit_rows(images: np.ndarray, lowres: int) -> np.ndarray:
    small = resize_images(images, lowres) if images.shape[-1] != lowres else images
    x = small.reshape(len(small), -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _nearest_other(query: np.ndarray, pool: np.ndarray, exclude: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows ``query`` (M, D) and ``pool`` (T, D): the most correlated pool index other than ``exclude`` (M,)."""
    best = np.empty(len(query), dtype=np.int64)
    corr = np.empty(len(query), dtype=np.float64)
    for start in range(0, len(query), chunk):
        c = query[start : start + chunk] @ pool.T
        ex = exclude[start : start + chunk]
        ok = ex >= 0
        c[np.arange(len(c))[ok], ex[ok]] = -np.inf
        best[start : start + len(c)] = c.argmax(axis=1)
        corr[start : start + len(c)] = c.max(axis=1)
    return best, corr


def memorisation(
    generated: np.ndarray,
    source_index: np.ndarray,
    sigmas: np.ndarray,
    train_images: np.ndarray,
    healthy_index: np.ndarray,
    threshold: float,
    lowres: int = 32,
) -> dict[str, Any]:
    """Check (c). generated (M, S, S); source_index (M,) into train_images (T, S, S) (all original
    training images); sigmas (M,); healthy_index: the rows of train_images that are healthy sources.
    """
    generated = quantise(generated)
    train_images = quantise(train_images)
    source_index = np.asarray(source_index, dtype=np.int64)
    sigmas = np.asarray(sigmas, dtype=float)
    lowres = min(lowres, generated.shape[-1])
    pool = _unit_rows(train_images, lowres)
    q = _unit_rows(generated, lowres)
    nearest, corr_other = _nearest_other(q, pool, source_index)
    corr_source = np.einsum("ij,ij->i", q, pool[source_index])
    ssim_source = ssim(generated, train_images[source_index])
    ssim_other = ssim(generated, train_images[nearest])
    near_copy = ssim_source >= threshold
    closer_other = corr_other > corr_source

    # Diversity: how alike the restorations of one source are to each other.
    pa, pb = [], []
    for s in np.unique(source_index):
        idx = np.flatnonzero(source_index == s)
        a, b = np.triu_indices(len(idx), 1)
        pa.append(idx[a])
        pb.append(idx[b])
    pa_all = np.concatenate(pa) if pa else np.array([], dtype=np.int64)
    pb_all = np.concatenate(pb) if pb else np.array([], dtype=np.int64)
    sibling = ssim(generated[pa_all], generated[pb_all]) if pa_all.size else np.array([])

    hq = pool[healthy_index]
    base_nn, _ = _nearest_other(hq, pool, np.asarray(healthy_index, dtype=np.int64))
    baseline = ssim(train_images[healthy_index], train_images[base_nn]) if len(healthy_index) else np.array([])

    per_sigma = []
    for sigma in sorted(set(sigmas.tolist())):
        m = sigmas == sigma
        per_sigma.append(
            {
                "sigma": sigma,
                "n": int(m.sum()),
                "ssim_to_source": float(ssim_source[m].mean()),
                "ssim_to_nearest_other": float(ssim_other[m].mean()),
                "near_copy_share": float(near_copy[m].mean()),
                "closer_to_other_share": float(closer_other[m].mean()),
            }
        )
    return {
        "threshold": float(threshold),
        "lowres": int(lowres),
        "n": int(len(generated)),
        "ssim_to_source": _summary(ssim_source),
        "ssim_to_nearest_other": _summary(ssim_other),
        "correlation_to_source": _summary(corr_source),
        "correlation_to_nearest_other": _summary(corr_other),
        "near_copy_share": float(near_copy.mean()) if len(near_copy) else float("nan"),
        "closer_to_other_share": float(closer_other.mean()) if len(closer_other) else float("nan"),
        "sibling_ssim_mean": float(sibling.mean()) if sibling.size else float("nan"),
        "baseline_nearest_ssim_mean": float(baseline.mean()) if len(baseline) else float("nan"),
        "per_sigma": per_sigma,
    }


# ----------------------------------------------------------------------------- (d) artefacts

FEATURE_NAMES = (
    ["mean", "std", "p01", "p50", "p99", "dark_share", "bright_share"]
    + [f"hist_{i:02d}" for i in range(16)]
    + ["gradient_mean", "laplacian_abs_mean", "laplacian_std", "residual_std", "residual_kurtosis",
       "fft_high_share", "fft_mid_share", "unique_levels"]
)


def image_features(images: np.ndarray) -> np.ndarray:
    """Simple statistics per image: (N, S, S) in [0, 1] -> (N, len(FEATURE_NAMES)) float64.

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
    if w is None:
        w = np.ones(len(y))
    pos, neg = y == 1, y == 0
    wp, wn = w[pos].sum(), w[neg].sum()
    if wp == 0 or wn == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss, yy, ww = s[order], y[order], w[order]
    # for each distinct score: negative weight strictly below plus half the ties
    uniq, start = np.unique(ss, return_index=True)
    neg_w = np.where(yy == 0, ww, 0.0)
    cum = np.concatenate([[0.0], np.cumsum(neg_w)])
    end = np.append(start[1:], len(ss))
    below = cum[start]
    tied = cum[end] - cum[start]
    grp = np.searchsorted(uniq, ss)
    credit = below[grp] + 0.5 * tied[grp]
    return float((ww * (yy == 1) * credit).sum() / (wp * wn))


def artefact_detectability(
    originals: np.ndarray,
    generated: np.ndarray,
    source_index: np.ndarray,
    sigmas: np.ndarray | None = None,
    seed: int = 0,
    folds: int = 5,
    n_bootstrap: int = 2000,
    level: float = 0.95,
) -> dict[str, Any]:
    """Check (d): can simple image statistics tell restored (M, S, S) from original (N, S, S) images?

    ``source_index`` (M,) gives each generated image's original (row of ``originals``). Scores are
    out-of-fold; folds and the bootstrap resample source images (clusters: an original with its
    restorations), so correlated images are never split and the interval is not too narrow.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    originals = quantise(originals)
    generated = quantise(generated)
    source_index = np.asarray(source_index, dtype=np.int64)
    n = len(originals)
    if n < 2 * folds or len(generated) == 0:
        raise EvaluationError(f"artefact check needs at least {2 * folds} originals and one generated image; got {n} and {len(generated)}")
    X = np.concatenate([image_features(originals), image_features(generated)])
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(len(generated), dtype=np.int64)])
    group = np.concatenate([np.arange(n), source_index])
    rng = np.random.default_rng(seed)
    fold_of_source = np.empty(n, dtype=np.int64)
    fold_of_source[rng.permutation(n)] = np.arange(n) % folds
    fold = fold_of_source[group]
    score = np.empty(len(y))

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))

    for k in range(folds):
        test = fold == k
        clf = model().fit(X[~test], y[~test])
        score[test] = clf.decision_function(X[test])
    auc = _auc(y, score)

    # Cluster bootstrap over source images.
    reps = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        reps[b] = _auc(y, score, counts[group])
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
        "method": "logistic regression on image statistics, out-of-fold by source; cluster bootstrap CI",
        "n_original": int(n),
        "n_generated": int(len(generated)),
        "folds": int(folds),
        "per_sigma": per_sigma,
        "features": [{"name": FEATURE_NAMES[i], "coefficient": float(coef[i])} for i in order[:8]],
    }


# ----------------------------------------------------------------------------- (a), (e) from predictions


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


__all__ = [
    "FEATURE_NAMES",
    "artefact_detectability",
    "compare_flip",
    "flip_summary",
    "flip_table",
    "generated_quality",
    "healthy_share",
    "image_features",
    "memorisation",
    "predicted_labels",
    "quantise",
    "wilson",
]
