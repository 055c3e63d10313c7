"""Restoration-based augmentation: a U-Net denoiser turns noisy healthy scans into new healthy scans.

Stage: :func:`augment_stage` (denoiser, generation, checks b, c, d). See ``medauc.augment.checks``
for the schema of ``augment_checks.json``. The imbalance strategies and checks a and e, which need a
trained classifier, are their own stage: :mod:`medauc.strategies`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["augment_stage"]


def __getattr__(name: str) -> Any:  # torch and MONAI load on first use
    if name == "augment_stage":
        from medauc.augment.command import augment_stage

        return augment_stage
    raise AttributeError(f"module 'medauc.augment' has no attribute {name!r}")
