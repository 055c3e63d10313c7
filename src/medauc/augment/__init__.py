"""Restoration-based augmentation: a U-Net denoiser turns noisy healthy scans into new healthy scans.

Stages: :func:`augment_stage` (denoiser, generation, checks b, c, d) and :func:`strategies_stage`
(imbalance strategies trained and compared; checks a and e). See ``medauc.augment.checks`` for the
schema of ``augment_checks.json``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["augment_stage", "strategies_stage"]


def __getattr__(name: str) -> Any:  # torch and MONAI load on first use
    if name == "augment_stage":
        from medauc.augment.command import augment_stage

        return augment_stage
    if name == "strategies_stage":
        from medauc.augment.strategies import strategies_stage

        return strategies_stage
    raise AttributeError(f"module 'medauc.augment' has no attribute {name!r}")
