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
  from original healthy images; out-of-fold scores with folds by patient when every source names
  one (else by source image), so an image, its restorations and the patient's other slices never
  straddle folds; the interval is a cluster bootstrap over the same units.
  ``{auc, ci, unit ("patients" | "source images"), n_units, method, n_original, n_generated, folds,
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

from collections.abc import Callable
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
    return _quality_rows(np.minimum(psnr(generated, sources), 100.0), ssim(generated, sources), sigmas)


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


SAMPLE_GENERATED = 2000  # check (c)'s nearest-other search: at most this many generated images (and sources)


def sample_sources(source_index: np.ndarray, n_sources: int, seed: int, limit: int = SAMPLE_GENERATED) -> np.ndarray:
    """(M,) bool: the generated images whose source is in a seeded sample of sources holding at most
    ``limit`` generated images (every image when there are no more than ``limit``). Whole sources,
    so the restorations of one source (its siblings) are sampled together."""
    source_index = np.asarray(source_index, dtype=np.int64)
    if len(source_index) <= limit:
        return np.ones(len(source_index), dtype=bool)
    per_source = np.bincount(source_index, minlength=n_sources)
    order = np.random.default_rng(seed).permutation(n_sources)
    take = order[np.cumsum(per_source[order]) <= limit]
    return np.isin(source_index, take)


class GeneratedChecks:
    """Checks (b) and (c) on generated images that arrive a block at a time (:meth:`add`).

    Per generated image it keeps a few numbers (PSNR and SSIM to its source, a ``lowres``-px
    unit vector, check (d)'s features when asked) and the pixels of the sampled images only
    (:func:`sample_sources`), so memory does not grow with the number of generated images beyond
    those numbers. ``sources`` (N, S, S) are the healthy training images the plan indexes,
    ``source_index`` (M,) and ``sigmas`` (M,) describe the plan. Given every image in one block,
    or in many, the results are the same.
    """

    def __init__(self, sources: np.ndarray, source_index: np.ndarray, sigmas: np.ndarray, lowres: int = 32,
                 features: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0,
                 sample_limit: int = SAMPLE_GENERATED) -> None:
        self.sources = sources
        self.source_index = np.asarray(source_index, dtype=np.int64)
        self.sigmas = np.asarray(sigmas, dtype=float)
        m = len(self.source_index)
        self.lowres = min(lowres, sources.shape[-1]) if len(sources) else lowres
        self.psnr = np.full(m, np.nan)
        self.ssim_source = np.full(m, np.nan)
        self.rows = np.zeros((m, self.lowres * self.lowres))
        self.features = features
        self.feature_rows: np.ndarray | None = None
        self.sampled = sample_sources(self.source_index, len(sources), seed, sample_limit)
        self.kept: dict[int, np.ndarray] = {}
        self.seen = np.zeros(m, dtype=bool)

    def add(self, sl: slice, generated: np.ndarray) -> None:
        """Take the generated images of plan rows ``sl`` (b, S, S), as restored (quantised here, as saved)."""
        q = quantise(generated)
        src = quantise(_as_float(self.sources[self.source_index[sl]]))
        self.psnr[sl] = np.minimum(psnr(q, src), 100.0)
        self.ssim_source[sl] = ssim(q, src)
        self.rows[sl] = _unit_rows(q, self.lowres)
        if self.features is not None:
            f = self.features(q)
            if self.feature_rows is None:
                self.feature_rows = np.zeros((len(self.source_index), f.shape[1]))
            self.feature_rows[sl] = f
        for i in np.flatnonzero(self.sampled[sl]):
            self.kept[sl.start + int(i)] = q[i].copy()  # a copy: a view would keep the whole block alive
        self.seen[sl] = True

    def quality(self) -> list[dict[str, Any]]:
        """Check (b)'s ``generated`` rows: mean PSNR and SSIM to the source, per sigma."""
        self._check_complete()
        return _quality_rows(self.psnr, self.ssim_source, self.sigmas)

    def memorisation(self, train_images: np.ndarray, train_index: np.ndarray, healthy_index: np.ndarray,
                     threshold: float, block: int = 64) -> dict[str, Any]:
        """Check (c) against every ORIGINAL training image ``train_images`` (T, S, S) (uint8 or float;
        read a block at a time). ``train_index`` (N,): each source's row in ``train_images``;
        ``healthy_index``: the rows that are healthy sources."""
        self._check_complete()
        train_index = np.asarray(train_index, dtype=np.int64)
        source_row = train_index[self.source_index]
        pool = np.concatenate([_unit_rows(quantise(_as_float(train_images[i:i + block])), self.lowres)
                               for i in range(0, len(train_images), block)]) if len(train_images) else np.zeros((0, self.rows.shape[1]))
        corr_source = np.einsum("ij,ij->i", self.rows, pool[source_row])
        near_copy = self.ssim_source >= threshold
        s_idx = np.flatnonzero(self.sampled)
        nearest, corr_other = _nearest_other(self.rows[s_idx], pool, source_row[s_idx])
        def kept(positions: np.ndarray) -> np.ndarray:  # sampled images by their position in s_idx
            return np.stack([self.kept[int(s_idx[k])] for k in positions])

        def train(rows: np.ndarray) -> np.ndarray:
            return quantise(_as_float(train_images[rows]))

        k_all = np.arange(len(s_idx))
        ssim_other = _ssim_pairs(kept, train, k_all, nearest)
        closer_other = corr_other > corr_source[s_idx]

        # Diversity: how alike the restorations of one source are to each other (sampled sources).
        pa, pb = [], []
        src_s = self.source_index[s_idx]
        for s in np.unique(src_s):
            idx = np.flatnonzero(src_s == s)
            a, b = np.triu_indices(len(idx), 1)
            pa.append(idx[a])
            pb.append(idx[b])
        pa_all = np.concatenate(pa) if pa else np.array([], dtype=np.int64)
        pb_all = np.concatenate(pb) if pb else np.array([], dtype=np.int64)
        sibling = _ssim_pairs(kept, kept, pa_all, pb_all)

        healthy_index = np.asarray(healthy_index, dtype=np.int64)
        h_take = healthy_index
        if len(healthy_index) > SAMPLE_GENERATED:
            h_take = np.sort(np.random.default_rng(1).choice(healthy_index, SAMPLE_GENERATED, replace=False))
        base_nn, _ = _nearest_other(pool[h_take], pool, h_take)
        baseline = _ssim_pairs(train, train, h_take, base_nn)

        sig_s = self.sigmas[s_idx]
        per_sigma = []
        for sigma in sorted(set(self.sigmas.tolist())):
            m, ms = self.sigmas == sigma, sig_s == sigma
            per_sigma.append(
                {
                    "sigma": sigma,
                    "n": int(m.sum()),
                    "ssim_to_source": float(self.ssim_source[m].mean()),
                    "ssim_to_nearest_other": float(ssim_other[ms].mean()) if ms.any() else float("nan"),
                    "near_copy_share": float(near_copy[m].mean()),
                    "closer_to_other_share": float(closer_other[ms].mean()) if ms.any() else float("nan"),
                }
            )
        n = len(self.source_index)
        return {
            "threshold": float(threshold),
            "lowres": int(self.lowres),
            "n": int(n),
            # the nearest-other search, siblings and baseline: a seeded sample of whole sources when
            # more than SAMPLE_GENERATED images were generated (cost linear in the training set)
            "n_sampled": int(len(s_idx)),
            "n_baseline": int(len(h_take)),
            "ssim_to_source": _summary(self.ssim_source),
            "ssim_to_nearest_other": _summary(ssim_other),
            "correlation_to_source": _summary(corr_source),
            "correlation_to_nearest_other": _summary(corr_other),
            "near_copy_share": float(near_copy.mean()) if n else float("nan"),
            "closer_to_other_share": float(closer_other.mean()) if len(closer_other) else float("nan"),
            "sibling_ssim_mean": float(sibling.mean()) if sibling.size else float("nan"),
            "baseline_nearest_ssim_mean": float(baseline.mean()) if len(baseline) else float("nan"),
            "per_sigma": per_sigma,
        }

    def _check_complete(self) -> None:
        if not self.seen.all():
            raise RuntimeError(f"{int((~self.seen).sum())} generated image(s) never reached the checks: a bug in the caller")


def _ssim_pairs(get_a: Callable[[np.ndarray], np.ndarray], get_b: Callable[[np.ndarray], np.ndarray],
                a: np.ndarray, b: np.ndarray, chunk: int = 64) -> np.ndarray:
    """SSIM of the image pairs (get_a(a[k]), get_b(b[k])), gathered ``chunk`` pairs at a time, so the
    pairs' pixels are never all in memory at once (a sample of 2,000 224-px images is 400 MB a side)."""
    parts = [ssim(get_a(a[i:i + chunk]), get_b(b[i:i + chunk])) for i in range(0, len(a), chunk)]
    return np.concatenate(parts) if parts else np.array([])


def _as_float(images: Any) -> np.ndarray:
    """uint8 (as cached) or float images -> float32 in [0, 1]."""
    arr = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    return arr.astype(np.float32) / np.float32(255.0) if arr.dtype == np.uint8 else arr


def _quality_rows(p: np.ndarray, s: np.ndarray, sigmas: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for sigma in sorted(set(np.asarray(sigmas, dtype=float).tolist())):
        m = np.asarray(sigmas) == sigma
        rows.append({"sigma": sigma, "n": int(m.sum()), "psnr": float(p[m].mean()), "ssim": float(s[m].mean())})
    return rows


def memorisation(
    generated: np.ndarray,
    source_index: np.ndarray,
    sigmas: np.ndarray,
    train_images: np.ndarray,
    healthy_index: np.ndarray,
    threshold: float,
    lowres: int = 32,
) -> dict[str, Any]:
    """Check (c) on images in memory. generated (M, S, S); source_index (M,) into train_images (T, S, S)
    (all original training images); sigmas (M,); healthy_index: the rows of train_images that are
    healthy sources. The stage streams the same computation (:class:`GeneratedChecks`)."""
    acc = GeneratedChecks(train_images, source_index, sigmas, lowres)
    acc.add(slice(0, len(generated)), generated)
    return acc.memorisation(train_images, np.arange(len(train_images)), healthy_index, threshold)


__all__ = ["GeneratedChecks", "generated_quality", "memorisation", "quantise", "sample_sources"]
