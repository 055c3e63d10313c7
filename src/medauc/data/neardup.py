"""Near-duplicate pairs of 64-bit perceptual hashes through an index, and how near-duplicate links
join images into the groups a split keeps whole.

The index is multi-index hashing (Norouzi et al. 2012): two hashes within ``d`` bits agree exactly on
at least one of ``d + 1`` disjoint bit chunks (pigeonhole), so only hashes that share a chunk value
are compared. A bucket too large to compare all-pairs (the near-identical heads of one data set
share most bits) is split again on the bits it does not yet agree on, so the work stays about
proportional to the number of images plus the number of pairs found. Exact: the same pairs as
comparing every pair (:func:`near_pairs_brute`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SMALL = 128  # buckets up to this size: every pair in them is compared directly, all buckets at once
_BRUTE = 1024  # sets up to this size: all pairs compared (about 3 ms; cheaper than indexing them)


def near_pairs_brute(hashes: np.ndarray, max_distance: int, block: int | None = None) -> np.ndarray:
    """Index pairs (k, 2), i < j, sorted, of uint64 ``hashes`` within ``max_distance`` bits: every
    pair compared, ``block`` rows at a time (quadratic; the reference for :func:`near_pairs`)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if block is None:
        block = max(16, min(512, (1 << 22) // max(n, 1)))
    found = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, n, block):
        dist = np.bitwise_count(hashes[start:start + block, None] ^ hashes[None, start:])  # (b, n - start)
        ii, jj = np.nonzero(dist <= max_distance)
        keep = ii + start < jj + start
        found.append(np.stack([ii[keep] + start, jj[keep] + start], axis=1).astype(np.int64))
    return np.concatenate(found)


def _chunks(free: int, parts: int) -> list[int]:
    """``free``'s set bits dealt round-robin into ``parts`` masks (interleaved: each chunk gets low
    and high DCT frequencies, so no chunk is nearly constant)."""
    bits = [b for b in range(64) if free >> b & 1]
    out = []
    for k in range(parts):
        m = 0
        for b in bits[k::parts]:
            m |= 1 << b
        out.append(m)
    return out


def _all_pairs_within(idx: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b), a before b, inside the runs ``idx[start:start + size]``."""
    pa, pb = [], []
    pos = np.arange(len(idx)) - np.repeat(starts, sizes)  # position inside its run
    left = np.repeat(sizes, sizes) - pos - 1  # members after it in its run
    for off in range(1, int(sizes.max(initial=1))):
        a = np.flatnonzero(left >= off)
        if not len(a):
            break
        pa.append(idx[a])
        pb.append(idx[a + off])
    if not pa:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pa), np.concatenate(pb)


def _search(h: np.ndarray, idx: np.ndarray, d: int, out: list[np.ndarray]) -> None:
    """Append to ``out`` every pair (i, j) of ``idx`` (distinct hash values) within ``d`` bits, once."""
    sub = h[idx]
    varying = int(np.bitwise_or.reduce(sub ^ sub[0])) if len(sub) else 0
    nvar = bin(varying).count("1")
    if len(idx) <= _BRUTE or nvar < 2 * (d + 1):  # small, or too few bits left to index on
        out.append(idx[near_pairs_brute(sub, d)])
        return
    buckets = []
    for m in _chunks(varying, d + 1):
        mk = np.uint64(m)
        key = sub & mk
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        buckets.append((mk, order, starts, np.diff(np.r_[starts, len(ks)])))
    # Indexing pays only while the buckets are much smaller than the node: when comparing within
    # them costs as much as comparing all pairs (a tight cluster), compare all pairs. This also
    # bounds the search at the all-pairs cost whatever the data.
    if sum(float(np.sum(sz.astype(np.float64) ** 2)) for _, _, _, sz in buckets) >= float(len(idx)) ** 2:
        out.append(idx[near_pairs_brute(sub, d)])
        return
    earlier: list[np.uint64] = []
    for mk, order, starts, sizes in buckets:
        small = sizes <= _SMALL
        # Small buckets: compare their pairs here, all buckets at once.
        keep = np.repeat(small, sizes)
        sel = order[keep]
        s_sizes = sizes[small]
        a, b = _all_pairs_within(sel, np.cumsum(s_sizes) - s_sizes, s_sizes)
        found = [np.stack([idx[a], idx[b]], axis=1)]
        # Large buckets: search them again on the bits they do not share (varying ones only).
        for st, sz in zip(starts[~small], sizes[~small]):
            inner: list[np.ndarray] = []
            _search(h, idx[order[st:st + sz]], d, inner)
            found.extend(inner)
        pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
        x = h[pairs[:, 0]] ^ h[pairs[:, 1]]
        # Within d bits, and found in its first shared chunk only (each pair once).
        ok = np.bitwise_count(x) <= d
        for e in earlier:
            ok &= (x & e) != 0
        out.append(pairs[ok])
        earlier.append(mk)


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs (k, 2), i < j, sorted, whose uint64 ``hashes`` differ in at most ``max_distance``
    bits; the same pairs as :func:`near_pairs_brute`, through a multi-index hash.

    Equal hash values are searched once and expanded at the end, so many copies of one image cost
    only the pairs they make.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    d = int(max_distance)
    if d < 0 or len(hashes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if d >= 16:  # chunks of 3 bits or fewer index nothing: compare every pair
        return near_pairs_brute(hashes, d)
    uniq, inv = np.unique(hashes, return_inverse=True)
    inv = inv.ravel()
    found: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)]
    _search(uniq, np.arange(len(uniq), dtype=np.int64), d, found)
    upairs = np.concatenate(found)
    # Back to images: members of value u paired with members of value v, and within one value.
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=len(uniq))
    starts = np.cumsum(counts) - counts
    pi, pj = [], []
    multi = np.flatnonzero(counts > 1)
    if len(multi):
        a, b = _all_pairs_within(order[np.repeat(counts > 1, counts)], np.cumsum(counts[multi]) - counts[multi], counts[multi])
        pi.append(a)
        pj.append(b)
    if len(upairs):
        cu, cv = counts[upairs[:, 0]], counts[upairs[:, 1]]
        rep = cu * cv
        u = np.repeat(upairs[:, 0], rep)
        v = np.repeat(upairs[:, 1], rep)
        k = np.arange(int(rep.sum())) - np.repeat(np.cumsum(rep) - rep, rep)
        cvr = np.repeat(cv, rep)
        pi.append(order[starts[u] + k // cvr])
        pj.append(order[starts[v] + k % cvr])
    if not pi:
        return np.zeros((0, 2), dtype=np.int64)
    i, j = np.concatenate(pi), np.concatenate(pj)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    srt = np.lexsort((hi, lo))
    return np.stack([lo[srt], hi[srt]], axis=1).astype(np.int64)


def patient_links(
    cross: np.ndarray, subjects: Sequence[str] | None, whole: np.ndarray, ids: Sequence[str], mode: str, hamming: int,
    examples: int = 20,
) -> tuple[dict[str, Any], list[str], str]:
    """What near-duplicate links between patients did: the audit's ``near_duplicate_patients``, its
    warnings, and the phrase a split error names as what joined the groups.

    ``cross`` (k, 2): near-duplicate image pairs of two different known patients; ``whole`` (n,):
    the groups the split keeps whole (duplicates joined with patients).
    """
    if subjects is None:
        joined = (f"exact copies and near-duplicates within data.near_duplicate_hamming={hamming} bits, no patient "
                  "ids; a lower data.near_duplicate_hamming joins fewer")
        return {"known": False}, [], joined
    subj = np.asarray(subjects, dtype=object)
    pairs = {tuple(sorted((subj[i], subj[j]))) for i, j in cross.tolist()}
    per_group: dict[int, set[str]] = {}
    for g, s in zip(whole.tolist(), subj.tolist()):
        if s:
            per_group.setdefault(g, set()).add(s)
    joint = [v for v in per_group.values() if len(v) > 1]
    largest = max(joint, key=len, default=set())
    info = {
        "known": True, "mode": mode, "hamming": hamming,
        "image_pairs": int(len(cross)), "patient_pairs": len(pairs),
        "examples": [[ids[i], ids[j]] for i, j in cross[:examples].tolist()],
        # patients that share a split group with another patient (merged links, or exact copies)
        "joined_patients": int(sum(len(v) for v in joint)), "joined_groups": len(joint),
        "largest_joined": {"patients": len(largest),
                           "images": int(np.sum(np.isin(subj, list(largest)))) if largest else 0},
    }
    warnings = []
    if len(cross) and mode == "report":
        warnings.append(
            f"{len(cross)} near-duplicate image pair(s) between {len(pairs)} pair(s) of different patients (possible "
            "duplicate patients, or leaks; listed in data_audit.json, near_duplicate_patients): reported, not merged "
            "(data.near_duplicates=report); data.near_duplicates=merge keeps linked patients in one split")
    if joint:
        warnings.append(
            f"{info['joined_patients']} patients joined into {len(joint)} group(s) that the split keeps whole (largest: "
            f"{len(largest)} patients, {info['largest_joined']['images']} images), by "
            + ("near-duplicates between patients (data.near_duplicates=merge) or " if mode == "merge" else "")
            + "exact copies across patients")
    joined = (f"the near-duplicate merge (data.near_duplicates=merge, data.near_duplicate_hamming={hamming}) joined "
              f"{info['joined_patients']} patients into {len(joint)} group(s); data.near_duplicates=report or a lower "
              "data.near_duplicate_hamming keeps them apart") if joint and mode == "merge" else ""
    return info, warnings, joined
