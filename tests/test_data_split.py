"""split.py: the study's counts, determinism, stratification and whole duplicate groups."""

from __future__ import annotations

import numpy as np
import pytest

from medauc.data.split import split_indices
from medauc.errors import DataError

KAGGLE = {"healthy": 2000, "glioma": 1621, "meningioma": 1645, "pituitary": 1757}
STUDY_TEST = {"healthy": 600, "glioma": 487, "meningioma": 494, "pituitary": 528}


def _labels(counts):
    labels = [c for c, n in counts.items() for _ in range(n)]
    keys = [f"{c}/{i:05d}" for c, n in counts.items() for i in range(n)]
    return np.array(labels), np.array(keys)


def _count(labels, split, s):
    return {c: int(np.sum((labels == c) & (split == s))) for c in KAGGLE if c in set(labels)}


def test_kaggle_counts_reproduce_the_study_split():
    labels, keys = _labels(KAGGLE)
    res = split_indices(labels, np.arange(len(labels)), keys, seed=0)
    assert _count(labels, res.split, "test") == STUDY_TEST
    trainval = {c: KAGGLE[c] - STUDY_TEST[c] for c in KAGGLE}
    assert trainval == {"healthy": 1400, "glioma": 1134, "meningioma": 1151, "pituitary": 1229}
    val = _count(labels, res.split, "val")
    assert all(abs(val[c] - 0.1 * trainval[c]) <= 1 for c in KAGGLE)
    assert res.moved == 0


def test_same_seed_same_split_any_input_order_other_seed_differs():
    labels, keys = _labels({"a": 50, "b": 30})
    groups = np.arange(80)
    a = split_indices(labels, groups, keys, seed=3).split
    perm = np.random.default_rng(1).permutation(80)
    b = split_indices(labels[perm], groups[perm], keys[perm], seed=3).split
    np.testing.assert_array_equal(a[perm], b)
    assert not np.array_equal(a, split_indices(labels, groups, keys, seed=4).split)


def test_groups_stay_whole_counts_stay_planned_and_moves_are_counted():
    labels, keys = _labels({"healthy": 60, "glioma": 40})
    groups = np.arange(100)
    rng = np.random.default_rng(0)
    # 15 duplicate groups of 2-4 images within a class, one group spanning two classes
    pool = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in ("healthy", "glioma")}
    for g in range(15):
        c = "healthy" if g % 2 else "glioma"
        members = [pool[c].pop() for _ in range(2 + g % 3)]
        groups[members] = groups[members[0]]
    cross = [pool["healthy"].pop(), pool["glioma"].pop()]
    groups[cross] = groups[cross[0]]
    planned = split_indices(labels, np.arange(100), keys, seed=0)
    res = split_indices(labels, groups, keys, seed=0)
    for g in np.unique(groups):
        assert len(set(res.split[groups == g])) == 1
    assert res.moved > 0
    for s in ("train", "val", "test"):
        for c in ("healthy", "glioma"):
            got = np.sum((labels == c) & (res.split == s))
            want = np.sum((labels == c) & (planned.split == s))
            assert abs(got - want) <= 1, (s, c, got, want)


def test_given_split_keeps_test_and_carves_val_from_train():
    labels, keys = _labels({"healthy": 30, "glioma": 30})
    given = np.array(["test" if i % 3 == 0 else "train" for i in range(60)])
    groups = np.arange(60)
    groups[1] = groups[0]  # a training copy of a test image
    res = split_indices(labels, groups, keys, seed=0, val_fraction=0.2, given=given)
    assert np.all(res.split[given == "test"] == "test")
    assert res.split[1] == "train" and res.moved == 0  # reported, not moved: the given test set stays as given
    assert res.cross_split == ((0, 1),)
    assert {c: int(np.sum((labels == c) & (res.split == "val"))) for c in ("healthy", "glioma")} == {"healthy": 4, "glioma": 4}


def test_too_few_images_and_bad_fractions_are_errors():
    labels, keys = _labels({"a": 10, "b": 2})
    with pytest.raises(DataError, match="class 'b' has 2 usable"):
        split_indices(labels, np.arange(12), keys, seed=0)
    with pytest.raises(DataError, match="test_fraction"):
        split_indices(labels, np.arange(12), keys, seed=0, test_fraction=1.0)


def test_given_split_keeps_test_exactly_and_gives_every_class_val_images():
    # The reported case: Training copies of Testing images were moved into Testing, and a class
    # whose training images all sat in duplicate groups was left without a validation image.
    labels, keys = _labels({"healthy": 20, "glioma": 20, "pituitary": 10})
    given = np.array(["test" if i % 5 == 0 else "train" for i in range(50)])
    groups = np.arange(50)
    groups[[1, 2, 21]] = groups[[0, 0, 20]]  # training copies of test images
    groups[[41, 42, 43, 46, 47, 48]] = groups[[40, 40, 40, 45, 45, 45]]  # pituitary: 6 of 8 training images
    groups[49] = groups[44]  # ... and the other 2 are a duplicate pair
    res = split_indices(labels, groups, keys, seed=0, val_fraction=0.1, given=given)
    assert np.array_equal(res.split == "test", given == "test")  # exactly as given: 10 test images
    assert res.moved == 0 and sorted(len(g) for g in res.cross_split) == [2, 3, 4, 4]
    for c in ("healthy", "glioma", "pituitary"):
        assert ((labels == c) & (res.split == "val")).sum() >= 1, c
        assert ((labels == c) & (res.split == "train")).sum() >= 1, c
    assert set(res.split[[44, 49]]) == {"val"}  # the pair goes to val whole; copies of test images stay in train
