"""The strategies stage: imbalance strategies compared on one split, one test set, the same seeds
(the study's Table 2, extended), and the two checks on generated images that need a trained
classifier (a and e).

It runs after the training stage, trains ``augment.strategy_model`` once per strategy, and owns
its output: ``strategies.json`` (schema in :mod:`medauc.strategies.stage`), ``strategies.csv`` and
``strategies/<name>/``. Modules: ``stage`` (training sets, the table), ``checks`` (checks a and e),
``command`` (``medauc strategies``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["strategies_stage"]


def __getattr__(name: str) -> Any:  # torch loads on first use
    if name == "strategies_stage":
        from medauc.strategies.stage import strategies_stage

        return strategies_stage
    raise AttributeError(f"module 'medauc.strategies' has no attribute {name!r}")
