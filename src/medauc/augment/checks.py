"""The five checks on generated images: b, c and d in ``run_dir/augment_checks.json`` (the augment
stage); a and e, which need trained classifiers, under ``checks`` in ``run_dir/strategies.json``
(the strategies stage, :mod:`medauc.strategies`; run folders made before it hold them here).

This module holds checks b and c and the schema of all five; check d is
:mod:`medauc.augment.artefacts`, checks a and e :mod:`medauc.augment.classifier_checks`.

Schema of both (every share is in [0, 1]; every interval is ``[low, high]`` at
``level``; images are compared at ``augment.image_size`` after 8-bit quantisation, as saved):

- ``a_predicted_healthy`` (the study's check, by ``medauc strategies``): a classifier
  trained on the ORIGINAL data (strategy "balanced") predicts every generated image.
  ``{model, seed, n, share, ci, unit ("patients": a patient bootstrap; "images": Wilson's), n_patients,
  per_sigma: [{sigma, n, share, ci}], predicted: {class: count},
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
  ``{a, b, difference (a - b), ci, unit, n_units}`` for restoration vs balanced (paired bootstrap over
  patients when known, ``unit`` "patients", else over source images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medauc.augment.quality import psnr, resize_images, ssim


def quantise(images: np.ndarray) -> np.ndarray:
    """As saved to and read back from an 8-bit PNG."""
    return (np.round(np.clip(images, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


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


__all__ = ["generated_quality", "memorisation", "quantise"]
