"""``medauc strategies``: train and compare the imbalance strategies (Table 2); checks a and e.

Runs after ``medauc augment`` (it reads ``augment/manifest.csv`` and ``augment/restored_test.csv``);
``medauc augment --strategies`` runs it too.
"""

from __future__ import annotations

import argparse
from typing import Any

from medauc import runs
from medauc.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.epilog = "Config keys: augment.strategies, augment.strategy_model (and train.* for how each model is trained)."


def main(args: argparse.Namespace) -> int:
    cfg: Config = args.cfg
    run_dir = runs.open_run(args.out, cfg, args.force)
    if not (cfg.augment.enabled and cfg.augment.strategies):
        print("strategies: augment.enabled is false or augment.strategies is empty; nothing to compare")
        return 0
    from medauc.strategies import strategies_stage

    print_results(strategies_stage(cfg, run_dir, args.force, progress=not args.no_progress))
    print(f"strategies: {run_dir / 'strategies.json'} and {run_dir / 'strategies.csv'}")
    return 0


def print_results(table: dict[str, Any]) -> None:
    """A few lines for the terminal: each strategy's headline metrics, then checks a and e."""
    for row in table.get("rows", []):
        print(f"  strategy {row['strategy']:<14} seed {row['seed']}: " + ", ".join(
            f"{k} {row[k]:.4f}" for k in ("accuracy", "auc_macro", "screening_auc") if isinstance(row.get(k), float)
        ))
    checks = table.get("checks") or {}
    a = checks.get("a_predicted_healthy")
    if a:
        print(f"  predicted healthy by the balanced model: {a['share']:.2%} of {a['n']} generated images "
              f"(study: {a.get('study_share', float('nan')):.2%}); of original test tumours it calls "
              f"{a.get('baseline', {}).get('test_tumour_called_healthy', float('nan')):.2%} healthy")
    e = (checks.get("e_shortcut_flip") or {}).get("comparison")
    if e:
        print(f"  restored tumour test images called healthy: restoration {e['healthy_share_restored_a']:.2%} "
              f"vs balanced {e['healthy_share_restored_b']:.2%}")
