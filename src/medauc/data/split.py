"""Stratified, seeded, group-aware train/val/test split.

Per class, ``ceil(test_fraction * n)`` images go to test and ``ceil(val_fraction * rest)`` of the
rest to val (ceil reproduces the study's 600/487/494/528 test images of the Kaggle rm1000 set,
and keeps every class in every split). Then every duplicate group is put in the split that holds
most of its images; the images that had to move are counted, and singletons of the same class
are moved back the other way so the per-class counts stay as planned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medauc.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitResult:
    split: np.ndarray  # (n,) str: "train", "val" or "test"
    moved: int  # images placed in another split than the group-blind split would have, to keep groups whole
    # given splits: duplicate groups with members in both the given train and test sets, as index
    # lists; reported, not moved (the given test set stays exactly as given)
    cross_split: tuple[tuple[int, ...], ...] = ()


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
) -> SplitResult:
    """Assign each of n images to train/val/test.

    ``labels`` (n,) class names; ``groups`` (n,) ints, equal for duplicates; ``keys`` (n,) unique
    stable ids (the order images are shuffled in depends on these, not on the input order);
    ``given`` (n,) "train"/"test" to keep a data set's own test split exactly (val is carved from
    train; groups that straddle the given splits are reported in ``cross_split``, not moved).
    Same inputs and seed, same split.
    """
    labels = np.asarray(labels, dtype=object)
    groups = np.asarray(groups)
    keys = np.asarray(keys, dtype=object)
    n = len(labels)
    if not (len(groups) == len(keys) == n) or (given is not None and len(given) != n):
        raise ValueError("labels, groups, keys (and given) must have the same length")
    _check_fraction("data.test_fraction", test_fraction)
    _check_fraction("data.val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    order = np.argsort(keys, kind="stable")  # input order must not matter
    if given is not None:
        return _given_split(labels, groups, order, np.asarray(given, dtype=object), val_fraction, rng)
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

    # Give the per-class counts back their planned sizes by moving singletons the other way.
    singles = np.array([len(members[int(groups[i])]) == 1 for i in range(n)], dtype=bool)
    for label in sorted(set(labels)):
        for _ in range(n):
            lab = labels == label
            have = {s: int(np.sum(lab & (split == s))) for s in SPLITS}
            want = {s: int(np.sum(lab & (planned == s))) for s in SPLITS}
            short = [s for s in SPLITS if have[s] < want[s]]
            over = [s for s in SPLITS if have[s] > want[s]]
            cands = [(o, order[(lab & singles & (split == o))[order]]) for o in over]
            cands = [(o, c) for o, c in cands if len(c)]
            if not short or not cands:
                break
            pick = cands[0][1][int(rng.integers(len(cands[0][1])))]
            split[pick] = short[0]
    return SplitResult(split=split.astype(str), moved=moved)


def _given_split(
    labels: np.ndarray, groups: np.ndarray, order: np.ndarray, given: np.ndarray, val_fraction: float,
    rng: np.random.Generator,
) -> SplitResult:
    """A data set's own split: its test set exactly as given; val carved from its train set.

    Val takes whole duplicate groups, ``ceil(val_fraction * n)`` images of each class (at least one
    while a class keeps a training image). Training images that duplicate a test image stay in
    train and are reported in ``cross_split`` (index groups), never moved.
    """
    n = len(labels)
    split = np.where(given == "test", "test", "train").astype(object)
    members: dict[int, list[int]] = {}
    for i in order:
        members.setdefault(int(groups[i]), []).append(int(i))
    cross = tuple(tuple(ix) for ix in members.values() if len({split[i] for i in ix}) > 1)
    in_cross = {i for ix in cross for i in ix}
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
