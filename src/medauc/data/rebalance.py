"""Giving a split's per-class counts back their planned sizes after whole groups were placed.

Two steps, both about linear in the images: :func:`move_singletons` (the split's original step,
draw for draw: the same images move) and, where that cannot reach the plan because too few images
stand alone (slices of one patient are near-duplicates of each other), :func:`move_groups`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


class _Remaining:
    """Positions 0..n-1 with removals and "the k-th one still there" in O(log n) (a Fenwick tree)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tree = [0] * (n + 1)
        for i in range(1, n + 1):  # all present: linear build
            self.tree[i] += 1
            j = i + (i & -i)
            if j <= n:
                self.tree[j] += self.tree[i]
        self.count = n

    def remove(self, pos: int) -> None:
        i = pos + 1
        while i <= self.n:
            self.tree[i] -= 1
            i += i & -i
        self.count -= 1

    def kth(self, k: int) -> int:
        """Position of the k-th (0-based) present element."""
        pos, step = 0, 1 << self.n.bit_length()
        while step:
            nxt = pos + step
            if nxt <= self.n and self.tree[nxt] <= k:
                pos = nxt
                k -= self.tree[nxt]
            step >>= 1
        return pos


def _counts(split: np.ndarray, idx: np.ndarray) -> dict[str, int]:
    return {s: int(np.sum(split[idx] == s)) for s in SPLITS}


def move_singletons(
    split: np.ndarray, planned: np.ndarray, labels: np.ndarray, singles: np.ndarray, order: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Per class (sorted), move random images that stand alone from a split over its planned count
    to one under it, until the counts are as ``planned`` or no such image is left; in place.

    The same draws and moves as the original loop (which recounted every split per move, so cost
    grew with the square of the images): the over split taken is the first of train, val, test
    holding a candidate, the candidates in ``order``, the target the first split short of its count.
    """
    for label in sorted(set(labels)):
        idx = order[labels[order] == label]  # this class, in order
        have, want = _counts(split, idx), _counts(planned, idx)
        pools = {}
        for s in SPLITS:
            members = idx[singles[idx] & (split[idx] == s)]
            pools[s] = (members, _Remaining(len(members)))
        while True:
            short = [s for s in SPLITS if have[s] < want[s]]
            over = [s for s in SPLITS if have[s] > want[s] and pools[s][1].count]
            if not short or not over:
                break
            members, left = pools[over[0]]
            pos = left.kth(int(rng.integers(left.count)))
            left.remove(pos)
            split[members[pos]] = short[0]
            have[over[0]] -= 1
            have[short[0]] += 1


def move_groups(
    split: np.ndarray, want: dict[str, dict[str, int]], labels: np.ndarray, groups: np.ndarray, order: np.ndarray,
    only: Sequence[str] | None = None,
) -> int:
    """Move whole one-class groups between splits, per class, while that brings its counts closer
    to ``want`` (class -> split -> images); in place. Returns the images moved.

    Each move takes, from a split over its count to one short of it, the group that most reduces
    the class's total miss (the largest group that fits; else the smallest that still helps), so a
    class ends within about one small group of its plan. ``only``: these classes (default: all).
    Deterministic: ties go to the group first in ``order``.
    """
    moved = 0
    g_sorted = groups[order]
    first = {}
    for pos, g in enumerate(g_sorted.tolist()):
        first.setdefault(g, pos)
    lab_sorted = labels[order]
    members: dict[int, list[int]] = {}
    for g, i in zip(g_sorted.tolist(), order.tolist()):
        members.setdefault(g, []).append(i)
    by_class: dict[str, list[int]] = {}
    for g, ix in members.items():
        labs = {lab_sorted[first[g]]} if len(ix) == 1 else set(labels[ix].tolist())
        if len(labs) == 1:
            by_class.setdefault(next(iter(labs)), []).append(g)
    for label in sorted(set(labels) if only is None else only):
        idx = order[labels[order] == label]
        have = _counts(split, idx)
        lists: dict[str, list[tuple[int, int, int]]] = {s: [] for s in SPLITS}
        for g in by_class.get(label, []):
            lists[str(split[members[g][0]])].append((len(members[g]), first[g], g))
        for s in SPLITS:
            lists[s].sort()
        while True:
            best = (0, "", "", -1)
            for o in SPLITS:
                for t in SPLITS:
                    e_o, e_t = have[o] - want[label][o], want[label][t] - have[t]
                    if e_o <= 0 or e_t <= 0 or not lists[o]:
                        continue
                    cap = min(e_o, e_t)
                    k = bisect.bisect_right(lists[o], (cap, float("inf"), 0))
                    for j in (k - 1, k):  # the largest that fits, the smallest that does not
                        if 0 <= j < len(lists[o]):
                            z = lists[o][j][0]
                            gain = e_o + e_t - abs(e_o - z) - abs(e_t - z)
                            if gain > best[0]:
                                best = (gain, o, t, j)
            gain, o, t, j = best
            if gain <= 0:
                break
            z, _, g = lists[o].pop(j)
            split[members[g]] = t
            have[o] -= z
            have[t] += z
            moved += z
            bisect.insort(lists[t], (z, first[g], g))
    return moved
