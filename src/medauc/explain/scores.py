"""Localisation scores of saliency maps against lesion masks, and their bootstrap intervals.

For a map ``m`` (H, W) >= 0 and a lesion mask ``M`` (H, W) bool of the same image:

* **pointing game** (Zhang et al. 2016): 1 when the map's maximum lies inside the mask, or
  within ``tolerance`` pixels of it, else 0. Ties are shared: with several maximal pixels the
  score is the fraction of them that hit (the chance of a hit when one of them is picked at
  random), so a flat map scores the (widened) mask's area share. The tolerance matters for
  coarse maps: a 2x2 or 4x4 map upsampled to the image peaks at a cell centre, and CNNs with
  padded stride-2 layers place their cells up to half a cell off the pixel grid.
* **energy share**: ``sum(m * M) / sum(m)``, the share of the map's mass inside the mask. A map
  that is zero everywhere carries no information and counts as uniform (share = area share).
* **area share**: ``mean(M)``, what a uniform map would score as energy share.
* **energy ratio**: energy share / area share. 1 = no better than a uniform map, above 1 = the
  map is concentrated on the lesion (at most 1 / area share).

An empty mask gives nan for every score of that image; summaries skip nan.
Intervals are percentile bootstrap intervals over patients when every image names its patient (else
over images), from an explicit seeded generator.
"""

from __future__ import annotations

import numpy as np

from medauc.evaluate.bootstrap import percentile_interval

SCORES = ("pointing_game", "energy_share", "energy_ratio")
TIE_TOLERANCE = 1e-6  # maps are in [0, 1]; values this close to the maximum count as maximal


def _check(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W) of the same shape; got {maps.shape} and {masks.shape}")
    if np.any(maps < 0) or not np.all(np.isfinite(maps)):
        raise ValueError("maps must be finite and non-negative")
    return maps, masks


def widen(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """``mask`` (H, W) bool plus every pixel within ``tolerance`` pixels (Euclidean) of it."""
    if tolerance <= 0 or not mask.any():
        return mask
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask) <= tolerance


def localisation_scores(
    maps: np.ndarray, masks: np.ndarray, tolerance: float = 0.0, hit_zones: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-image scores of ``maps`` (N, H, W) >= 0 against ``masks`` (N, H, W) bool.

    ``tolerance`` is the pointing game's hit radius around the mask, in pixels; ``hit_zones``
    (N, H, W) bool, if given, are the widened masks already (``widen(mask, tolerance)``), to be
    reused across models. Returns arrays (N,) for pointing_game, energy_share, energy_ratio and
    area_share.
    """
    maps, masks = _check(maps, masks)
    n = maps.shape[0]
    flat_maps = maps.reshape(n, -1)
    flat_masks = masks.reshape(n, -1)
    if hit_zones is not None:
        hit_zone = np.asarray(hit_zones, dtype=bool).reshape(n, -1)
    elif tolerance > 0:
        hit_zone = np.stack([widen(m, tolerance) for m in masks]).reshape(n, -1)
    else:
        hit_zone = flat_masks
    area = flat_masks.mean(axis=1)
    top = flat_maps >= flat_maps.max(axis=1, keepdims=True) - TIE_TOLERANCE
    pointing = (top & hit_zone).sum(axis=1) / top.sum(axis=1)
    total = flat_maps.sum(axis=1)
    inside = (flat_maps * flat_masks).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / np.where(total > 0, total, 1.0), area)
        ratio = share / area
    empty = area == 0
    for arr in (pointing, share, ratio):
        arr[empty] = np.nan
    return {
        "pointing_game": pointing.astype(float),
        "energy_share": share.astype(float),
        "energy_ratio": ratio.astype(float),
        "area_share": np.where(empty, np.nan, area).astype(float),
    }


def bootstrap_mean(
    values: np.ndarray, n_boot: int, level: float, rng: np.random.Generator, clusters: np.ndarray | None = None
) -> dict[str, float]:
    """Mean of ``values`` (N,) with a percentile bootstrap CI; nan values are left out.

    ``clusters`` (N,), optional: each value's patient. Given, the bootstrap resamples patients, each
    drawn patient bringing all its values (the mean of a replicate is over its images), so the
    slices of one head are not counted as independent evidence; ``n_patients`` is added.
    Returns {"mean", "ci_low", "ci_high", "n"}; all nan (n = 0) when nothing is left.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != v.shape:
            raise ValueError(f"clusters must have one entry per value; got shapes {clusters.shape} and {v.shape}")
        clusters = clusters[ok]
    v = v[ok]
    if v.size == 0:
        empty = {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
        return empty if clusters is None else {**empty, "n_patients": 0}
    if clusters is None:
        idx = rng.integers(0, v.size, size=(n_boot, v.size))
        lo, hi = percentile_interval(v[idx].mean(axis=1), level)
        return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(v.size)}
    inv = np.unique(clusters.astype(str), return_inverse=True)[1].reshape(-1)
    k = int(inv.max()) + 1
    sums = np.bincount(inv, weights=v, minlength=k)
    counts = np.bincount(inv, minlength=k).astype(float)
    reps = np.empty(n_boot)
    step = max(1, 4_000_000 // k)  # draws of at most ~32 MB at a time
    for start in range(0, n_boot, step):
        idx = rng.integers(0, k, size=(min(step, n_boot - start), k))
        reps[start:start + len(idx)] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = percentile_interval(reps, level)
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(v.size), "n_patients": k}


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_boot: int, level: float, rng: np.random.Generator, clusters: np.ndarray | None = None
) -> dict[str, float]:
    """Mean of a - b over images where both are finite, with a paired percentile bootstrap CI
    (over patients when ``clusters`` (N,) names each image's patient, as :func:`bootstrap_mean`)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same shape; got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return bootstrap_mean(a[ok] - b[ok], n_boot, level, rng, None if clusters is None else np.asarray(clusters)[ok])


def rank_correlation(a: np.ndarray, b: np.ndarray, block: int = 64) -> np.ndarray:
    """Spearman correlation between maps a[i] and b[i], both (N, H, W); nan where a map is flat.

    ``block`` maps at a time: the float64 ranks of all N maps at 224 px would take about 0.4 MB an
    image several times over (4.4 GB for the study's 2,109 test images); each map's value depends on
    that map alone.
    """
    from scipy.stats import rankdata

    n = a.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(0, n, block):
        k = min(block, n - i)
        ra = rankdata(np.asarray(a[i:i + block], dtype=float).reshape(k, -1), axis=1)
        rb = rankdata(np.asarray(b[i:i + block], dtype=float).reshape(k, -1), axis=1)
        ra -= ra.mean(axis=1, keepdims=True)
        rb -= rb.mean(axis=1, keepdims=True)
        den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i:i + k] = np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    return out
