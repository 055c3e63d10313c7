"""``medauc report --out RUN``: regenerate the report of a run folder from its files."""

from __future__ import annotations

import argparse

from medauc.errors import MedaucError
from medauc.runs import open_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "The run folder must exist (give it with --out); the report is rebuilt from its files."


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medauc.report import report_stage

    if not args.out or not (Path(args.out) / "config.yaml").exists():
        raise MedaucError(f"--out {args.out!r} is not a medauc run folder (no config.yaml); give the folder of a run")
    from medauc.config import load_config

    # The report describes the run as it was configured, not the command line's defaults.
    cfg = load_config(str(Path(args.out) / "config.yaml"), args.overrides)
    run_dir = open_run(args.out, cfg, args.force)
    outputs = report_stage(cfg, run_dir, force=args.force)
    for kind, path in outputs.items():
        print(f"medauc report: {kind}: {path}")
    return 0
