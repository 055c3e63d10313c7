"""Stratified, seeded, vectorised bootstrap: resamples as count weights, intervals, paired p-values.

A resample is a vector of counts w (n,), how often each image was drawn; images are drawn with
replacement within each true class, so every resample keeps the class sizes of the test set (and
every one-vs-rest AUC stays defined). The same weights are applied to every model, which makes
model differences paired by image. Resamples are produced in chunks to bound memory.

When the images' patients are known (``clusters``), a resample draws *patients* with replacement
and each image's weight is how often its patient was drawn (a cluster bootstrap): slices of one
patient are correlated, and drawing them one by one would make every interval too narrow.
Patients are stratified by the set of classes their images hold (a patient with only glioma
slices, one with healthy and glioma slices, ...), so each resample keeps the number of patients of
every such pattern; the number of *images* per class then varies with the patients drawn, as it
would in a new sample of patients. A pattern held by a single patient would redraw that patient in
every resample and so contribute no variance: such patients are pooled into one stratum (joined
to the largest stratum if the pool still holds only one patient).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from medauc.errors import EvaluationError

# Upper bound on the entries of one weight chunk (B_chunk x n float64 = 160 MB).
CHUNK_ENTRIES = 20_000_000
# Share of resamples where a metric is undefined (nan) above which its interval is flagged: the
# interval then describes only the resamples where, say, a class happened to be predicted at all.
UNDEFINED_SHARE_WARN = 0.05


def bootstrap_weights(strata: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) float64 counts: each row resamples every stratum (value of ``strata`` (n,)) to its own size."""
    strata = np.asarray(strata)
    if n_resamples < 1:
        raise EvaluationError(f"evaluate.n_bootstrap must be >= 1, got {n_resamples}")
    n = strata.size
    W = np.zeros((n_resamples, n), dtype=np.float64)
    offsets = np.arange(n_resamples)[:, None]
    for value in np.unique(strata):
        idx = np.flatnonzero(strata == value)
        k = idx.size
        draws = rng.integers(0, k, size=(n_resamples, k)) + offsets * k
        W[:, idx] = np.bincount(draws.ravel(), minlength=n_resamples * k).reshape(n_resamples, k)
    return W


def patient_strata(clusters: np.ndarray, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patient index of every image and the stratum of every patient (see the module docstring).

    clusters: (n,) patient ids; strata: (n,) image class. Returns ``codes`` (n,) int in [0, I) and
    ``patient_stratum`` (I,) int: patients holding the same set of classes share a stratum;
    patterns held by one patient only are pooled.
    """
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    _, s = np.unique(np.asarray(strata), return_inverse=True)
    n_patients = int(codes.max()) + 1
    holds = np.zeros((n_patients, int(s.max()) + 1), dtype=bool)
    holds[codes, s] = True
    _, pattern, size = np.unique(holds, axis=0, return_inverse=True, return_counts=True)
    pattern = pattern.ravel()
    lone = size[pattern] == 1
    if lone.sum() == 1:
        pattern[lone] = int(np.argmax(np.where(size > 1, size, 0)))  # its pool would hold it alone: join the largest
    elif lone.any():
        pattern[lone] = size.size  # one pooled stratum
    return codes.astype(np.int64), pattern.astype(np.int64)


def cluster_weights(codes: np.ndarray, patient_stratum: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) image weights of a stratified patient bootstrap: how often each image's patient was drawn.

    codes: (n,) patient index of each image; patient_stratum: (I,) stratum of each patient (from
    :func:`patient_strata`).
    """
    return bootstrap_weights(patient_stratum, n_resamples, rng)[:, codes]


def weight_chunks(strata: np.ndarray, n_resamples: int, seed: int, clusters: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield weight matrices (B_chunk, n) summing to ``n_resamples`` rows, from one seeded generator.

    ``clusters`` (n,) patient ids (None: unknown) turn the image bootstrap into a patient bootstrap.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(n_resamples, CHUNK_ENTRIES // max(1, np.asarray(strata).size)))
    plan = None if clusters is None else patient_strata(clusters, strata)
    done = 0
    while done < n_resamples:
        b = min(per_chunk, n_resamples - done)
        if plan is None:
            yield bootstrap_weights(strata, b, rng)
        else:
            yield cluster_weights(plan[0], plan[1], b, rng)
        done += b


def bootstrap_many(
    strata: np.ndarray,
    n_resamples: int,
    seed: int,
    functions: dict[str, Callable[[np.ndarray], dict[str, np.ndarray]]],
    progress: bool = False,
    desc: str = "bootstrap",
    clusters: np.ndarray | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Apply every function (W (B, n) -> {metric: (B,)}) to the same resamples: {key: {metric: (n_resamples,)}}.

    ``clusters`` (n,) patient ids: resample patients instead of images (None: images).
    """
    from medauc.progress import progress_bar  # off a terminal: a start and an end line, no carriage returns

    parts: dict[str, dict[str, list[np.ndarray]]] = {k: {} for k in functions}
    bar = progress_bar(total=n_resamples, desc=desc, unit="resample", disable=not progress, leave=False)
    for W in weight_chunks(strata, n_resamples, seed, clusters):
        for key, fn in functions.items():
            for name, v in fn(W).items():
                parts[key].setdefault(name, []).append(v)
        bar.update(W.shape[0])
    bar.close()
    return {k: {m: np.concatenate(v) for m, v in d.items()} for k, d in parts.items()}


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (B,); undefined (nan) replicates are left out, all-nan -> nan."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(r, [alpha, 1.0 - alpha])
    return float(low), float(high)


def undefined_share(replicates: np.ndarray) -> float:
    """Share of bootstrap replicates (B,) that are undefined (nan or infinite); nan if there are none."""
    r = np.asarray(replicates, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    return float(np.count_nonzero(~np.isfinite(r)) / r.size)


def estimate_cell(value: float, replicates: np.ndarray, level: float) -> dict[str, float]:
    """``{value, low, high, undefined_share}`` of one metric: the percentile interval of its bootstrap
    ``replicates`` (B,) leaves out the undefined ones, and ``undefined_share`` says how many there were."""
    low, high = percentile_interval(replicates, level)
    return {"value": value, "low": low, "high": high, "undefined_share": undefined_share(replicates)}


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value that a paired difference is 0, from its replicates (B,).

    p = 2 min((1 + #{d <= 0}) / (B + 1), (1 + #{d >= 0}) / (B + 1)), at most 1; nan if no
    replicate is defined.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    b = d.size
    low = (1 + np.count_nonzero(d <= 0)) / (b + 1)
    high = (1 + np.count_nonzero(d >= 0)) / (b + 1)
    return float(min(1.0, 2 * min(low, high)))
