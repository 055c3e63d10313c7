"""Data audit before any split: duplicates, near-duplicates, label conflicts, statistics, shortcuts.

* exact duplicates: sha256 of the decoded pixels (quantised to 16 bits), so a PNG and a BMP of
  one image match whatever the file bytes;
* near-duplicates: 64-bit perceptual hash (``imagehash.phash``) within ``data.near_duplicate_hamming``
  bits, found through a multi-index hash (:mod:`medauc.data.neardup`; about linear in the images);
* groups: connected components of both relations; a group never straddles two splits;
* shortcut audit: an extremely randomised tree forest that sees only acquisition metadata, never
  the anatomy; one-vs-rest AUC from stratified 5-fold cross-validation by patient, or by cluster of
  near-identical metadata when patients are unknown (on a stratified sample of at most 3,000
  images). High AUC means the labels can be told from how the images were stored, not from what
  they show.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from medauc.progress import progress_bar

from medauc.data.images import read_image, to_uint8
from medauc.data.neardup import near_pairs
from medauc.errors import DataError

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
INTENSITY_FEATURES = ("mean", "std", *(f"p{q}" for q in PERCENTILES), "border_mean", "border_dark")
SHORTCUT_WARN_AUC = 0.7
SHORTCUT_MAX_IMAGES = 3000  # a stratified sample this large pins an AUC to about +-0.02; more only costs time
_MAX_STAT_PIXELS = 1 << 16  # intensity statistics on a strided subsample of at most this many pixels


def pixel_sha256(img: np.ndarray) -> str:
    """sha256 of a float (H, W) image in [0, 1], quantised to 16 bits (robust to float rounding)."""
    q = np.round(np.asarray(img, dtype=np.float64) * 65535.0).astype("<u2")
    h = hashlib.sha256(np.asarray(q.shape, dtype="<u8").tobytes())
    h.update(q.tobytes())
    return h.hexdigest()


def perceptual_hash(img: np.ndarray) -> str:
    """64-bit DCT perceptual hash of a float (H, W) image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(to_uint8(img)), hash_size=8))


def intensity_features(img: np.ndarray) -> dict[str, float]:
    """Mean, std, percentiles and border darkness of a float (H, W) image in [0, 1]."""
    step = max(1, int(np.ceil(np.sqrt(img.size / _MAX_STAT_PIXELS))))
    sub = img[::step, ::step]
    out = {"mean": float(sub.mean(dtype=np.float64)), "std": float(sub.std(dtype=np.float64))}
    # Percentiles from a 4096-bin histogram: 1/4096 resolution, several times faster than sorting.
    hist = np.bincount(np.clip(sub * 4095.0 + 0.5, 0, 4095).astype(np.intp).ravel(), minlength=4096)
    cdf = np.cumsum(hist)
    for q in PERCENTILES:
        out[f"p{q}"] = float(np.searchsorted(cdf, q / 100.0 * cdf[-1]) / 4095.0)
    h, w = img.shape
    b = max(1, round(0.05 * min(h, w)))
    border = np.concatenate([img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()])
    out["border_mean"] = float(border.mean())
    out["border_dark"] = float((border < 0.05).mean())  # share of near-black border pixels
    return out


def scan_file(path: str) -> dict[str, Any]:
    """Decode one file and measure it: hashes, size, mode, format, intensity features.

    Returns ``{"error": reason}`` instead of raising for a file that cannot be decoded, so one
    bad file never stops a scan.
    """
    try:
        img, info = read_image(path)
    except DataError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        return {"error": reason[len(prefix):] if reason.startswith(prefix) else reason}
    return {
        "sha256": pixel_sha256(img),
        "phash": perceptual_hash(img),
        "width": info.width,
        "height": info.height,
        "mode": info.mode,
        "format": info.format,
        "file_size": info.file_size,
        **intensity_features(img),
    }


def scan_files(
    paths: Sequence[str | os.PathLike[str]], workers: int = 1, desc: str = "reading images", min_parallel: int = 200
) -> list[dict[str, Any]]:
    """:func:`scan_file` over ``paths`` in ``workers`` processes, in order, with a progress bar.

    Fewer than ``min_parallel`` files are read in this process: starting workers costs more.
    """
    paths = [str(p) for p in paths]
    bar = progress_bar(total=len(paths), desc=desc, unit="img", dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1 or len(paths) < min_parallel:
            out = []
            for p in paths:
                out.append(scan_file(p))
                bar.update()
            return out
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        # spawn: no fork of a process that may hold torch/OpenMP threads; the worker imports little.
        from medauc.processes import die_with_parent

        with mp.get_context("spawn").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            out = []
            for r in pool.imap(scan_file, paths, chunksize=chunk):
                out.append(r)
                bar.update()
            return out
    finally:
        bar.close()


# ----------------------------------------------------------------------------- duplicates


def hex_to_uint64(hashes: Sequence[str]) -> np.ndarray:
    """16-hex-digit hashes -> uint64 array (n,)."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return np.arange(n)
    g = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def duplicate_groups(
    sha: Sequence[str], phash: Sequence[str], max_distance: int, subjects: Sequence[str] | None = None,
    near_duplicates: str = "merge",
) -> dict[str, Any]:
    """Exact and near-duplicate structure of n images (in the given order).

    Returns ``group`` (n,) int: images sharing a group are exact or near duplicates (transitively);
    numbered 0.. in order of first appearance. ``exact`` and ``near``: lists of index lists, the
    exact-duplicate sets and the groups that hold more than one distinct image. ``subjects`` (n,)
    patient ids ("" = unknown): a near-duplicate pair of two different known patients is listed in
    ``cross_patient`` (k, 2) and joins their groups only when ``near_duplicates="merge"``
    (``"report"``: listed only). Exact copies always join.
    """
    n = len(sha)
    by_sha: dict[str, list[int]] = {}
    for i, s in enumerate(sha):
        by_sha.setdefault(s, []).append(i)
    exact = [ix for ix in by_sha.values() if len(ix) > 1]
    edges = [np.array([[ix[0], j] for j in ix[1:]], dtype=np.int64) for ix in exact]
    near = near_pairs(hex_to_uint64(phash), max_distance) if max_distance >= 0 else np.zeros((0, 2), np.int64)
    cross = np.zeros((0, 2), np.int64)
    if subjects is not None and len(near):
        subj = np.asarray(subjects, dtype=object)
        a, b = subj[near[:, 0]], subj[near[:, 1]]
        between = (a != "") & (b != "") & (a != b)
        cross = near[between]
        if near_duplicates == "report":
            near = near[~between]
    comp = _components(n, np.concatenate(edges + [near.astype(np.int64)]) if n else near)
    # Renumber in order of first appearance so the numbers do not depend on scipy's labelling.
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(first)
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    _, inv = np.unique(comp, return_inverse=True)
    group = remap[inv]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(int(g), []).append(i)
    near_groups = [ix for ix in members.values() if len(ix) > 1 and len({sha[i] for i in ix}) > 1]
    return {"group": group, "exact": exact, "near": near_groups, "members": members, "cross_patient": cross}


def label_conflicts(group: np.ndarray, labels: Sequence[str], sha: Sequence[str], ids: Sequence[str]) -> list[dict[str, Any]]:
    """Groups whose images carry more than one label: ``{group, kind, labels, image_ids}``."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(int(g), []).append(i)
    out = []
    for g, ix in members.items():
        labs = {labels[i] for i in ix}
        if len(labs) < 2:
            continue
        by_sha: dict[str, set[str]] = {}
        for i in ix:
            by_sha.setdefault(sha[i], set()).add(labels[i])
        kind = "exact" if any(len(v) > 1 for v in by_sha.values()) else "near"
        out.append({"group": g, "kind": kind, "labels": sorted(labs), "image_ids": [ids[i] for i in ix]})
    return out


# ----------------------------------------------------------------------------- statistics


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(x)), "median": float(np.median(x)), "max": float(np.max(x))}


def class_stats(records: Sequence[dict[str, Any]], labels: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Per class: n, width/height/aspect (min, median, max), intensity mean/std, formats, modes."""
    out: dict[str, Any] = {}
    labels = np.asarray(labels)
    for c in classes:
        rs = [r for r, lab in zip(records, labels) if lab == c]
        if not rs:
            continue
        w = np.array([r["width"] for r in rs], dtype=np.float64)
        h = np.array([r["height"] for r in rs], dtype=np.float64)
        out[c] = {
            "n": len(rs),
            "width": _summary(w),
            "height": _summary(h),
            "aspect_ratio": _summary(w / h),
            "intensity_mean": float(np.mean([r["mean"] for r in rs])),
            "intensity_std": float(np.mean([r["std"] for r in rs])),
            "file_size_bytes": _summary(np.array([r["file_size"] for r in rs], dtype=np.float64)),
            "formats": dict(sorted(Counter(r["format"] for r in rs).items())),
            "modes": dict(sorted(Counter(r["mode"] for r in rs).items())),
        }
    return out


# ----------------------------------------------------------------------------- shortcut audit


def metadata_features(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """(n, f) float matrix of what a shortcut could use (no anatomy) and the feature names."""
    formats = sorted({r["format"] for r in records})
    modes = sorted({r["mode"] for r in records})
    names = ["width", "height", "aspect_ratio", "log_file_size", "bytes_per_pixel", *INTENSITY_FEATURES]
    names += [f"format={f}" for f in formats] + [f"mode={m}" for m in modes]
    rows = []
    for r in records:
        w, h, size = float(r["width"]), float(r["height"]), float(r["file_size"])
        row = [w, h, w / h, np.log(size), size / (w * h), *(r[k] for k in INTENSITY_FEATURES)]
        row += [float(r["format"] == f) for f in formats] + [float(r["mode"] == m) for m in modes]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(records), len(names)), names


def _top_features(x: np.ndarray, y: np.ndarray, names: list[str], classes: list[str], k: int = 5) -> list[dict[str, Any]]:
    """The single features that best separate one class from the rest (AUC, either direction)."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for ci, c in enumerate(classes):
        pos = y == ci
        for fi, name in enumerate(names):
            col = x[:, fi]
            if np.ptp(col) == 0:
                continue
            auc = roc_auc_score(pos, col)
            scores.append({"feature": name, "class": c, "auc": float(max(auc, 1.0 - auc))})
    scores.sort(key=lambda d: -d["auc"])
    return scores[:k]


def metadata_clusters(x: np.ndarray, neighbours: int = 3, cap: int | None = None) -> np.ndarray:
    """(n,) ints: clusters of near-identical metadata rows of ``x`` (n, f), each feature scaled by its
    interquartile range: single linkage over each row's ``neighbours`` nearest neighbours, closest
    pairs first, never growing a cluster past ``cap`` rows (default ``max(8, n // 50)``), so a class
    whose metadata all differ from the others' (a real shortcut) still spans many clusters.

    Stand-ins for patients when none are known: the slices of one patient share its scanner's size,
    noise and contrast, so they are each other's nearest neighbours (on the phantom, 99% of the patients at 1k,
    95% in a 3,000-image sample of 7k, fall in one cluster)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    k = min(neighbours, n - 1)
    if k < 1:
        return np.arange(n)
    cap = max(8, n // 50) if cap is None else cap
    scale = np.percentile(x, 75, axis=0) - np.percentile(x, 25, axis=0)
    scale = np.where(scale > 0, scale, np.maximum(np.std(x, axis=0), 1e-12))
    z = (x - np.median(x, axis=0)) / scale
    dist, ix = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    rows, cols, d = np.repeat(np.arange(n), k), ix[:, 1:].ravel(), dist[:, 1:].ravel()
    parent, size = list(range(n)), [1] * n

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in np.argsort(d, kind="stable").tolist():
        a, b = root(int(rows[e])), root(int(cols[e]))
        if a != b and size[a] + size[b] <= cap:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    return np.array([root(i) for i in range(n)])


def shortcut_audit(
    records: Sequence[dict[str, Any]], labels: Sequence[str], classes: Sequence[str], seed: int, workers: int = 1,
    groups: Sequence[int] | None = None,
) -> dict[str, Any]:
    """How well metadata alone predicts the label: one-vs-rest AUC per class from stratified k-fold CV.

    Folds keep groups whole (``StratifiedGroupKFold``): ``groups`` (n,) ints (patients joined with
    duplicate groups) when patients are known, else clusters of near-identical metadata
    (:func:`metadata_clusters`). Folds by image would put slices of one patient in the training and
    the held-out fold, and metadata that identifies the patient (its size, noise, contrast) would
    predict the label of its other slices: a patient shortcut reported as a class shortcut (on the
    phantom, AUC 0.998 without one). A class shortcut (every healthy image 4:3, say) is shared by
    many clusters, so held-out clusters still show it.

    At most ``SHORTCUT_MAX_IMAGES`` images, a stratified sample; with the folds by group the answer
    no longer depends on how many slices of a patient the sample keeps.

    Returns ``{"per_class": {label: auc}, "macro": x, "max": y, "folds": k, "features": [...],
    "top_features": [...], "folds_by": "patient" | "metadata cluster"}``; AUCs are None (with a
    ``note``) when a class has fewer than 2 groups.
    """
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    classes = list(classes)
    x, names = metadata_features(records)
    y = np.array([classes.index(lab) for lab in labels])
    g = None if groups is None else np.asarray(groups)
    if len(y) > SHORTCUT_MAX_IMAGES:
        rng = np.random.default_rng(seed)
        take = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(y == i))[: max(1, round(SHORTCUT_MAX_IMAGES * np.mean(y == i)))]
            for i in range(len(classes))
        ]))
        x, y = x[take], y[take]
        g = None if g is None else g[take]
    by = "patient" if g is not None else "metadata cluster"
    if g is None:
        g = metadata_clusters(x)
    counts = np.array([np.unique(g[y == i]).size for i in range(len(classes))])  # a grouped fold holds no more
    folds = int(min(5, counts.min()))
    result: dict[str, Any] = {"per_class": {c: None for c in classes}, "macro": None, "max": None, "folds": folds,
                              "n_images": int(len(y)), "features": names, "model": "extra trees, 50 trees, min leaf 3",
                              "folds_by": by, "n_groups": int(np.unique(g).size)}
    if folds < 2:
        result["note"] = (f"skipped: a class has fewer than 2 {'patients' if by == 'patient' else 'metadata clusters'}, "
                          "cross-validation is impossible")
        return result
    model = ExtraTreesClassifier(n_estimators=50, min_samples_leaf=3, random_state=seed, n_jobs=max(1, workers))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(model, x, y, groups=g, cv=cv, method="predict_proba")
    per_class = {c: float(roc_auc_score(y == i, proba[:, i])) for i, c in enumerate(classes)}
    result["per_class"] = per_class
    result["macro"] = float(np.mean(list(per_class.values())))
    result["max"] = float(max(per_class.values()))
    result["top_features"] = _top_features(x, y, names, classes)
    return result
