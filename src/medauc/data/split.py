"""Stratified, seeded, group-aware train/val/test split.

Without patient ids (the Kaggle sets): per class, ``ceil(test_fraction * n)`` images go to test
and ``ceil(val_fraction * rest)`` of the rest to val (ceil reproduces the study's 600/487/494/528
test images of the Kaggle rm1000 set, and keeps every class in every split). Then every duplicate
group is put in the split that holds most of its images; the images that had to move are counted,
and singletons of the same class are moved back the other way so the per-class counts stay as planned.
Where too few images stand alone for that (a patient's slices are near-duplicates of each other, and
chains of them join patients), whole one-class groups are moved until each class is within about
one group of its plan (:mod:`medauc.data.rebalance`).

With patient ids (``subjects``): a group is a connected component of duplicates and patients
(:func:`combine_groups`), and whole groups are dealt out by scikit-learn's
:class:`~sklearn.model_selection.StratifiedGroupKFold`: test is ``a`` of ``k`` stratified group
folds with ``a / k`` closest to ``test_fraction``, val likewise from the rest. The per-class
shares then come within a percent or so of the planned ones on a few hundred patients (groups
cannot be cut to fit exactly); a class further off (large groups: patients joined by
``data.near_duplicates=merge``) has whole groups moved back towards its plan, and a class left out
of a split gets one of its groups moved there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medauc.data.rebalance import SPLITS, move_groups, move_singletons
from medauc.errors import DataError

_TOLERANCE = 0.01  # patients: a class further than this share of its images from its plan has groups moved


@dataclass(frozen=True)
class SplitResult:
    split: np.ndarray  # (n,) str: "train", "val" or "test"
    moved: int  # images placed in another split than the group-blind split would have, to keep groups whole
    # given splits: duplicate groups with members in both the given train and test sets, as index
    # lists; reported, not moved (the given test set stays exactly as given)
    cross_split: tuple[tuple[int, ...], ...] = ()
    # given splits: patients with images in both the given train and test sets (reported, not moved)
    cross_subjects: tuple[str, ...] = ()
    by_subject: bool = False  # patients were known: whole groups of duplicates and patients were split


def combine_groups(groups: Sequence[int], subjects: Sequence[str] | None) -> np.ndarray:
    """(n,) ints: connected components of the duplicate ``groups`` and the patients in ``subjects``
    ("" = unknown, joins nothing), numbered 0.. in order of first appearance.

    Without a known patient this is ``groups`` unchanged, so a split without patient ids stays
    exactly what it was.
    """
    groups = np.asarray(groups)
    if subjects is None or not any(subjects):
        return groups
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(groups)
    # Nodes: the n images, then one node per duplicate group and one per known patient.
    _, g_node = np.unique(groups, return_inverse=True)
    names = sorted({s for s in subjects if s})
    s_index = {s: i for i, s in enumerate(names)}
    n_groups = int(g_node.max()) + 1 if n else 0
    rows = list(range(n)) + [i for i, s in enumerate(subjects) if s]
    cols = list(n + g_node) + [n + n_groups + s_index[s] for s in subjects if s]
    size = n + n_groups + len(names)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    comp = connected_components(graph, directed=False)[1][:n]
    _, first, inv = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv]


def _plan(n: int, test_fraction: float, val_fraction: float, label: str) -> tuple[int, int]:
    n_test = math.ceil(test_fraction * n - 1e-9)
    n_val = math.ceil(val_fraction * (n - n_test) - 1e-9)
    if n - n_test - n_val < 1 or (test_fraction > 0 and n_test < 1):
        need = 1 + (test_fraction > 0) + (val_fraction > 0)
        raise DataError(
            f"class {label!r} has {n} usable image(s): too few for train/val/test at "
            f"data.test_fraction={test_fraction} and data.val_fraction={val_fraction} (needs at least {need})"
        )
    return n_test, n_val


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise DataError(f"{name}={value} must lie in [0, 1)")


def split_indices(
    labels: Sequence[str],
    groups: Sequence[int],
    keys: Sequence[str],
    seed: int,
    test_fraction: float = 0.30,
    val_fraction: float = 0.10,
    given: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    joined: str = "",
) -> SplitResult:
    """Assign each of n images to train/val/test.

    ``labels`` (n,) class names; ``groups`` (n,) ints, equal for duplicates; ``keys`` (n,) unique
    stable ids (the order images are shuffled in depends on these, not on the input order);
    ``given`` (n,) "train"/"test" to keep a data set's own test split exactly (val is carved from
    train; groups that straddle the given splits are reported in ``cross_split``, patients in
    ``cross_subjects``, not moved); ``subjects`` (n,) patient ids, "" = unknown: when any is
    known, every patient and duplicate group lands whole in one split. ``joined``: what joined the
    groups (the near-duplicate setting and what it merged), named in the error when a class cannot
    be split. Same inputs and seed, same split.
    """
    labels = np.asarray(labels, dtype=object)
    groups = np.asarray(groups)
    keys = np.asarray(keys, dtype=object)
    n = len(labels)
    if not (len(groups) == len(keys) == n) or any(x is not None and len(x) != n for x in (given, subjects)):
        raise ValueError("labels, groups, keys (and given, subjects) must have the same length")
    _check_fraction("data.test_fraction", test_fraction)
    _check_fraction("data.val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    order = np.argsort(keys, kind="stable")  # input order must not matter
    by_subject = subjects is not None and any(subjects)
    if given is not None:
        given = np.asarray(given, dtype=object)
        res = _given_split(labels, groups, order, given, val_fraction, rng, combine_groups(groups, subjects))
        if not by_subject:
            return res
        subj = np.asarray(subjects, dtype=object)
        cross = sorted({s for s in subj[given == "test"] if s} & {s for s in subj[given != "test"] if s})
        return SplitResult(res.split, 0, res.cross_split, tuple(cross), True)
    if by_subject:
        whole = _numbered_in(combine_groups(groups, subjects), order)
        split = _subject_split(labels, whole, order, test_fraction, val_fraction, rng, joined)
        # Group folds land within a percent or so; large groups (patients joined by near-duplicates)
        # can throw a class further off: then whole groups move until it is back near its plan.
        want = {c: dict(zip(("test", "val"), _plan(int(np.sum(labels == c)), test_fraction, val_fraction, c)))
                for c in sorted(set(labels))}
        for c, w in want.items():
            w["train"] = int(np.sum(labels == c)) - w["test"] - w["val"]
        off = [c for c, w in want.items() if any(abs(int(np.sum((labels == c) & (split == s))) - w[s])
                                                  > _TOLERANCE * np.sum(labels == c) for s in SPLITS)]
        moved = move_groups(split, want, labels, whole, order, only=off) if off else 0
        if moved:
            _check_every_split(labels, split, want, whole, joined)
        return SplitResult(split=split.astype(str), moved=0, by_subject=True)
    split = np.empty(n, dtype=object)
    for label in sorted(set(labels)):
        idx = order[labels[order] == label]
        perm = idx[rng.permutation(len(idx))]
        n_test, n_val = _plan(len(perm), test_fraction, val_fraction, label)
        split[perm[:n_test]] = "test"
        split[perm[n_test:n_test + n_val]] = "val"
        split[perm[n_test + n_val:]] = "train"
    planned = split.copy()

    members: dict[int, list[int]] = {}
    for i in order:
        members.setdefault(int(groups[i]), []).append(int(i))
    moved = 0
    for ix in members.values():
        if len(ix) < 2:
            continue
        here = [split[i] for i in ix]
        counts = {s: here.count(s) for s in SPLITS}
        best = max(counts.values())
        tied = [s for s in SPLITS if counts[s] == best]
        target = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
        for i in ix:
            if split[i] != target:
                split[i] = target
                moved += 1

    # Give the per-class counts back their planned sizes: singletons the other way, then, where too
    # few images stand alone (slices of one patient are near-duplicates), whole groups.
    singles = np.array([len(members[int(groups[i])]) == 1 for i in range(n)], dtype=bool)
    move_singletons(split, planned, labels, singles, order, rng)
    want = {c: {s: int(np.sum((labels == c) & (planned == s))) for s in SPLITS} for c in sorted(set(labels))}
    missed = [c for c in want if any(int(np.sum((labels == c) & (split == s))) != want[c][s] for s in SPLITS)]
    if missed:
        moved += move_groups(split, want, labels, groups, order, only=missed)
    _check_every_split(labels, split, want, groups, joined)
    return SplitResult(split=split.astype(str), moved=moved)


def _check_every_split(
    labels: np.ndarray, split: np.ndarray, want: dict[str, dict[str, int]], groups: np.ndarray, joined: str
) -> None:
    """A class planned in a split but left without images there (its groups too big to move without
    overshooting) gets its smallest group moved there from the split holding most of its groups;
    when no split holds two, the class cannot be split: an error naming what joined the groups."""
    for label, plan in want.items():
        for s in SPLITS:
            lab = labels == label
            if not plan[s] or np.any(lab & (split == s)):
                continue
            first: dict[int, int] = {}
            for i in np.flatnonzero(lab).tolist():
                first.setdefault(int(groups[i]), i)
            holders: dict[str, list[int]] = {}
            for g, i in first.items():
                holders.setdefault(str(split[i]), []).append(g)
            donor = max(holders, key=lambda d: (len(holders[d]), d))
            if len(holders[donor]) < 2:
                raise DataError(
                    f"class {label!r} has no {s} images: its {int(np.sum(lab))} image(s) form "
                    f"{sum(len(v) for v in holders.values())} group(s) kept whole ({joined or 'duplicates'}), too few "
                    "to put the class in train, val and test; add images of the class, or leave it out with data.classes=[...]"
                )
            g = min(holders[donor], key=lambda x: (int(np.sum(groups == x)), x))
            split[groups == g] = s


def _numbered_in(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``groups`` renumbered 0.. by first appearance along ``order``: the same numbers whatever the
    input order (StratifiedGroupKFold's shuffle permutes groups by their sorted labels)."""
    _, first, inv = np.unique(groups[order], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    out = np.empty(len(groups), dtype=np.int64)
    out[order] = rank[inv]
    return out


def _fraction_folds(fraction: float, n_groups: int) -> tuple[int, int]:
    """(a, k): ``a`` of ``k`` folds, 1 <= a < k <= min(100, n_groups): the smallest k with a / k
    within 0.005 of ``fraction`` (0.3 -> 3 of 10), else the closest."""
    best = (math.inf, 0, 0)
    for k in range(2, min(100, n_groups) + 1):
        a = min(k - 1, max(1, round(fraction * k)))
        err = abs(a / k - fraction)
        if err < best[0] - 1e-12:
            best = (err, a, k)
        if err <= 0.005:
            break
    return best[1], best[2]


def _group_folds(
    labels: np.ndarray, groups: np.ndarray, idx: np.ndarray, fraction: float, rng: np.random.Generator, what: str
) -> np.ndarray:
    """The images of ``idx`` (an ordered index array) that ``fraction`` of stratified group folds take."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups[idx]))
    if n_groups < 2:
        raise DataError(
            f"{n_groups} patient group(s) left for the {what} split: too few patients to split by patient "
            "(duplicates and patients are kept together); lower the fractions or add patients"
        )
    a, k = _fraction_folds(fraction, n_groups)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        # A class with fewer images than folds: its images go to some folds only; repaired below.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [test for _, test in cv.split(np.zeros(len(idx)), labels[idx], groups[idx])]
    return idx[np.concatenate(folds[:a])]


def _subject_split(
    labels: np.ndarray, groups: np.ndarray, order: np.ndarray, test_fraction: float, val_fraction: float,
    rng: np.random.Generator, joined: str = "",
) -> np.ndarray:
    """Whole groups (duplicates joined with patients) to test, val and train, stratified by class."""
    split = np.full(len(labels), "train", dtype=object)
    if test_fraction > 0:
        split[_group_folds(labels, groups, order, test_fraction, rng, "test")] = "test"
    if val_fraction > 0:
        rest = order[split[order] == "train"]
        split[_group_folds(labels, groups, rest, val_fraction, rng, "validation")] = "val"
    wanted = ["train"] + (["test"] if test_fraction > 0 else []) + (["val"] if val_fraction > 0 else [])
    for label in sorted(set(labels)):
        for s in wanted:
            if np.any((labels == label) & (split == s)):
                continue
            # Move the smallest group holding this class from the split with the most such groups.
            holders = {}
            for g in dict.fromkeys(groups[order][labels[order] == label]):
                holders.setdefault(split[groups == g][0], []).append(g)
            donor = max(holders, key=lambda d: (len(holders[d]), d))
            if len(holders[donor]) < 2:
                n_sub = sum(len(v) for v in holders.values())
                raise DataError(
                    f"class {label!r} has images of {n_sub} patient group(s)"
                    + (f" ({joined})" if joined else "") + ": too few to put the class in "
                    f"{', '.join(wanted)} with every patient in one split; add patients of the class, or leave "
                    "it out with data.classes=[...]"
                )
            g = min(holders[donor], key=lambda x: (int(np.sum(groups == x)), x))
            split[groups == g] = s
    for label in sorted(set(labels)):
        lacking = [s for s in wanted if not np.any((labels == label) & (split == s))]
        if lacking:  # a move above took the last group of a class that shares patients with another
            raise DataError(
                f"class {label!r} ends up without {lacking[0]} images when every patient stays in one split "
                "(its patients also hold images of other classes); add patients of the class, or leave it out "
                "with data.classes=[...]"
            )
    return split


def _given_split(
    labels: np.ndarray, groups: np.ndarray, order: np.ndarray, given: np.ndarray, val_fraction: float,
    rng: np.random.Generator, whole: np.ndarray | None = None,
) -> SplitResult:
    """A data set's own split: its test set exactly as given; val carved from its train set.

    Val takes whole groups of ``whole`` (duplicates and patients; default ``groups``),
    ``ceil(val_fraction * n)`` images of each class (at least one while a class keeps a training
    image). Training images that duplicate a test image stay in train and are reported in
    ``cross_split`` (index groups of ``groups``), never moved.
    """
    n = len(labels)
    split = np.where(given == "test", "test", "train").astype(object)
    members: dict[int, list[int]] = {}
    for i in order:
        members.setdefault(int(groups[i]), []).append(int(i))
    cross = tuple(tuple(ix) for ix in members.values() if len({split[i] for i in ix}) > 1)
    if whole is not None and whole is not groups:
        groups = whole
        members = {}
        for i in order:
            members.setdefault(int(groups[i]), []).append(int(i))
    # Groups that reach into the given test set go to val last.
    in_cross = {i for ix in members.values() if len({split[i] for i in ix}) > 1 for i in ix}
    for label in sorted(set(labels)):
        pool = order[(labels[order] == label) & (split[order] == "train")]
        _, n_val = _plan(len(pool), 0.0, val_fraction, label)
        # Candidate groups in a seeded order, singletons first; copies of test images last (in val,
        # they would let the test set take part in model selection).
        cands = list(dict.fromkeys(int(groups[i]) for i in pool[rng.permutation(len(pool))]))
        cands.sort(key=lambda g: (members[g][0] in in_cross, len(members[g])))
        taken = 0
        for g in cands:
            if taken >= n_val:
                break
            ix = [i for i in members[g] if split[i] == "train"]
            left = int(np.sum((labels == label) & (split == "train"))) - sum(labels[i] == label for i in ix)
            if left < 1:
                continue  # keep at least one training image of the class
            split[ix] = "val"
            taken += sum(labels[i] == label for i in ix)
    return SplitResult(split=split.astype(str), moved=0, cross_split=cross)
