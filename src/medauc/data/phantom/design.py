"""What the phantom holds: its four classes, the images per class, and the subjects that give them.

The subject plan depends on the config and seed only, so every worker count makes the same phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medauc.config import PhantomConfig
from medauc.data.phantom.variation import PLANES
from medauc.errors import DataError

CLASSES = ("healthy", "glioma", "meningioma", "pituitary")
KAGGLE_COUNTS = {"healthy": 2000, "glioma": 1621, "meningioma": 1645, "pituitary": 1757}
_PLAN_TAG = 0x51AB5


def class_counts(pcfg: PhantomConfig) -> dict[str, int]:
    """Images per class: ``pcfg.counts`` or the Kaggle proportions scaled to ``pcfg.n`` (largest remainder)."""
    if pcfg.counts:
        unknown = sorted(set(pcfg.counts) - set(CLASSES))
        if unknown:
            raise DataError(f"phantom.counts has unknown class {unknown[0]!r}; classes are {', '.join(CLASSES)}")
        bad = {k: v for k, v in pcfg.counts.items() if v < 0}
        if bad:
            raise DataError(f"phantom.counts must be >= 0; got {bad}")
        return {c: int(pcfg.counts.get(c, 0)) for c in CLASSES}
    if pcfg.n < len(CLASSES):
        raise DataError(f"phantom.n={pcfg.n} is too small; give at least {len(CLASSES)} (one image per class)")
    total = sum(KAGGLE_COUNTS.values())
    exact = {c: pcfg.n * KAGGLE_COUNTS[c] / total for c in CLASSES}
    counts = {c: int(np.floor(v)) for c, v in exact.items()}
    for c in sorted(CLASSES, key=lambda c: (counts[c] - exact[c], CLASSES.index(c)))[: pcfg.n - sum(counts.values())]:
        counts[c] += 1
    return counts


def check_config(pcfg: PhantomConfig) -> None:
    """Raise :class:`DataError` naming the ``phantom.*`` key that is out of range."""
    if pcfg.size < 32:
        raise DataError(f"phantom.size={pcfg.size} is too small; use at least 32 (pixels)")
    bad = [p for p in pcfg.planes if p not in PLANES]
    if bad or not pcfg.planes:
        raise DataError(f"phantom.planes={pcfg.planes} must be a non-empty list of {', '.join(PLANES)}")
    if pcfg.confound not in ("", "aspect", "intensity"):
        raise DataError(f"phantom.confound={pcfg.confound!r} is not one of '', 'aspect', 'intensity'")
    sps = list(pcfg.slices_per_subject)
    if len(sps) != 2 or not 1 <= sps[0] <= sps[1]:
        raise DataError(f"phantom.slices_per_subject={sps} must be [lo, hi] with 1 <= lo <= hi, e.g. [4, 8] ([1, 1]: one image per subject)")
    if not 0.0 <= pcfg.subtle_fraction <= 1.0:
        raise DataError(f"phantom.subtle_fraction={pcfg.subtle_fraction} must be within [0, 1]")
    if not 0.0 < pcfg.lesion_contrast <= 4.0:
        raise DataError(f"phantom.lesion_contrast={pcfg.lesion_contrast} must be within (0, 4]; 1 draws tumours as designed")
    if pcfg.workers < 1:
        raise DataError(f"phantom.workers={pcfg.workers} must be at least 1")


@dataclass(frozen=True)
class SubjectTask:
    """One virtual subject to generate: ``index`` seeds its generator, ``n_slices`` images of ``label``."""

    index: int
    label: str
    subject_id: str
    n_slices: int


def plan(pcfg: PhantomConfig, seed: int) -> list[SubjectTask]:
    """Every subject, class by class, giving exactly ``class_counts(pcfg)`` images per class.

    Each subject gives a number of slices drawn uniformly from ``pcfg.slices_per_subject``
    ([lo, hi]); the last subject of a class takes what is left (possibly fewer than lo). Ids
    ``sub-<n>`` are numbered in a seeded random order, so that an id says nothing of the class.
    """
    counts = class_counts(pcfg)
    lo, hi = pcfg.slices_per_subject
    sizes: list[tuple[str, int]] = []
    for ci, cls in enumerate(CLASSES):
        rng = np.random.default_rng([seed, ci, _PLAN_TAG])
        left = counts[cls]
        while left > 0:
            k = min(int(rng.integers(lo, hi + 1)), left)
            sizes.append((cls, k))
            left -= k
    order = np.random.default_rng([seed, _PLAN_TAG]).permutation(len(sizes))
    width = max(4, len(str(len(sizes) - 1)))
    tasks = [SubjectTask(int(i), cls, f"sub-{int(i):0{width}d}", k) for i, (cls, k) in zip(order, sizes)]
    return sorted(tasks, key=lambda t: (CLASSES.index(t.label), t.index))
