"""``medauc explain``: Grad-CAM panels and localisation scores against lesion masks.

The work is done by :func:`medauc.explain.stage.explain_stage`; explain.json's schema is in
that module's docstring, the scores' definitions in :mod:`medauc.explain.scores`.
"""

from __future__ import annotations

import argparse

from medauc import runs
from medauc.explain.stage import explain_stage

__all__ = ["add_arguments", "main", "explain_stage"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: methods, sample size and layer are config keys (explain.*)."""
    parser.epilog = (
        "Config keys: explain.methods=[gradcam,gradcampp,scorecam], explain.per_class, explain.max_images, "
        "explain.batch_size, explain.sanity_check, explain.target_layer, explain.min_grid."
    )


def main(args: argparse.Namespace) -> int:
    cfg = args.cfg
    run_dir = runs.open_run(args.out, cfg, args.force)
    result = explain_stage(cfg, run_dir, args.force)
    for name, m in result["models"].items():
        for method, out in m["methods"].items():
            pg = out["trained"]["all"]["pointing_game"]
            line = f"{name} {method} (layer {m.get('target_layer')}): pointing game {pg['mean']:.2f} [{pg['ci_low']:.2f}, {pg['ci_high']:.2f}], n={pg['n']}"
            if out.get("sanity"):
                line += f"; random twin verdict: {out['sanity']['verdict']}"
            print(line)
    print(f"explain: {run_dir / 'explain.json'} and panels in {run_dir / 'explain'}")
    return 0
