"""``medauc train``: train the configured classifiers and write their predictions files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medauc import runs, stages
from medauc.errors import ModelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest", default=None,
        help="manifest CSV [augment/manifest.csv in --out when augmentation is on and it exists, else manifest.csv]",
    )
    parser.add_argument("--models", default=None, help="comma-separated timm names, overriding model.names (e.g. resnet18,efficientnet_b0)")


def main(args: argparse.Namespace) -> int:
    cfg = args.cfg
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and args.out is None:
        raise ModelError("under torchrun, pass --out DIR: every process must write to the same run folder")
    # Under torchrun only rank 0 writes the run folder's config and environment.
    run_dir = runs.open_run(args.out, cfg, args.force) if rank == 0 else Path(args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    results = stages.run("train", cfg, run_dir, args.force, manifest_path=args.manifest, models=models)
    if rank == 0:
        for r in results or []:  # None: the stage was up to date
            state = "cached" if r["skipped"] else f"best epoch {r['best_epoch']}, {r['seconds']:.0f} s"
            print(f"medauc train: {r['model']} seed {r['seed']}: {state}; model in {r['model_dir']}")
    return 0
