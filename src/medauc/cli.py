"""Command line: one sub-command per pipeline stage, plus ``run`` for all of them.

Each stage lives in its own module that defines ``add_arguments(parser)`` and ``main(args) -> int``;
this file only wires them together, so a stage can be built, tested and replaced on its own.
Every stage sub-command accepts ``--config NAME|PATH``, ``--out DIR``, ``--force`` and dotted
``key=value`` overrides (``data.image_size=96 train.seeds=[0,1,2]``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

# name -> (module, one-line help, takes the common config arguments)
STAGES: dict[str, tuple[str, str, bool]] = {
    "phantom": ("medauc.data.phantom.command", "write the built-in synthetic brain-MRI data set (with lesion masks)", True),
    "prepare": ("medauc.data.command", "load, audit and split a folder-per-class image set; write manifest.csv", True),
    "augment": ("medauc.augment.command", "train the U-Net denoiser, generate restored healthy images, check them", True),
    "train": ("medauc.classify.command", "train classifiers (any timm model) and write predictions files", True),
    "evaluate": ("medauc.evaluate.command", "metrics, bootstrap CIs, DeLong tests, prevalence, from predictions files", True),
    "explain": ("medauc.explain.command", "Grad-CAM panels and localisation scores against lesion masks", True),
    "report": ("medauc.report.command", "write report.html, report.md and results.json from a run folder", True),
    "compare": ("medauc.evaluate.compare_cli", "compare predictions files: paired DeLong and bootstrap tests", False),
    "run": ("medauc.pipeline", "run every stage end to end, with caching", True),
}

# Stages that read the run's manifest.csv: they see data.classes=[] as the classes it holds.
AFTER_PREPARE = ("augment", "train", "evaluate", "explain", "report")


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str = "runs/<config>-<timestamp>") -> None:
    parser.add_argument("--config", default="demo", help="config name in configs/ (demo, smoke, study) or a YAML path [demo]")
    parser.add_argument("--out", default=None, help=f"run folder [{out_default}]")
    parser.add_argument("--force", action="store_true", help="recompute stages already finished with other inputs in --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.image_size=96")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None), so help is fast."""
    parser = argparse.ArgumentParser(
        prog="medauc",
        description="Which image classifier is really best for a clinic, and how sure can we be.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text, common) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue  # not the sub-command asked for: its module (torch, timm...) need not load
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            p.set_defaults(_missing=name)
            p.epilog = "This stage is not built yet in this version of medauc."
            if common:
                add_common_arguments(p)
            continue
        module.add_arguments(p)
        if common:
            # `run` continues in one folder per config; a single stage starts a new one unless told
            add_common_arguments(p, "runs/<config>" if name == "run" else "runs/<config>-<timestamp>")
        p.set_defaults(_main=module.main)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


def _early_config_error(command: str, argv: list[str]) -> str | None:
    """The config's error, found before the stage's module (and torch) is imported: under a second.

    Reads ``--config`` and the ``key=value`` overrides straight from ``argv``; anything this quick
    look cannot read is left to the full parser, which checks the same things again.
    """
    if command not in STAGES or not STAGES[command][2] or any(a in ("-h", "--help") for a in argv):
        return None
    from medauc.config import ConfigError, load_config
    from medauc.validate import check_models

    config, overrides = "demo", []
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif OVERRIDE.match(a) and not (i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]):
            overrides.append(a)
    try:
        check_models(load_config(config, overrides))
    except ConfigError as exc:
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from medauc.config import ConfigError
    from medauc.errors import MedaucError
    from medauc.runs import RunFolderError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in STAGES), "")
    early = _early_config_error(command, argv)
    if early:
        print(f"medauc {command}: error: {early}", file=sys.stderr)
        return 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    overrides = getattr(args, "overrides", None) or []
    bad = [o for o in overrides if "=" not in o]
    if bad:
        parser.error(f"unexpected argument {bad[0]!r}: overrides are written section.key=value")
    try:
        if hasattr(args, "config"):
            from medauc.config import load_config
            from medauc.validate import check_models

            # Validated (ranges, choices, timm names) before anything runs; stages read it as args.cfg.
            args.cfg = load_config(args.config, overrides)
            check_models(args.cfg)
            if command in AFTER_PREPARE and getattr(args, "out", None):
                from medauc.data.manifest import resolve_classes

                # data.classes=[] means the classes prepare found in this run, in every later stage.
                args.cfg = resolve_classes(args.cfg, args.out)
        if getattr(args, "_missing", None):
            print(f"medauc {args._missing}: this stage is not built yet in this version of medauc.", file=sys.stderr)
            return 2
        return int(args._main(args) or 0)
    except (ConfigError, RunFolderError, MedaucError) as exc:
        print(f"medauc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medauc {args.command}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
