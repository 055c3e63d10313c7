"""Command line: one sub-command per pipeline stage, plus ``run`` for all of them.

The sub-commands are :data:`medauc.stages.COMMANDS`, read from the stage registry; each lives in
its own module that defines ``add_arguments(parser)`` and ``main(args) -> int``. This file only
wires them together, so a stage can be built, tested and replaced on its own.
Every stage sub-command accepts ``--config NAME|PATH``, ``--out DIR``, ``--force`` and dotted
``key=value`` overrides (``data.image_size=96 train.seeds=[0,1,2]``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Sequence

from medauc.stages import COMMANDS


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str = "runs/<config>-<timestamp>",
                         force_help: str = "") -> None:
    parser.add_argument("--config", default="demo", help="config name in configs/ (demo, smoke, study) or a YAML path [demo]")
    parser.add_argument("--out", default=None, help=f"run folder [{out_default}]")
    parser.add_argument("--force", action="store_true", help=force_help or "recompute stages already finished with other inputs in --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.image_size=96")


def _force_help(name: str) -> str:
    command = COMMANDS[name]
    if command.stage is None:
        return ("recompute the stages finished in --out with other inputs, or whose files were changed since "
                "(truncated, damaged or edited: they are replaced)")
    return (f"recompute {name} if it finished in --out with other inputs, or if a file it wrote was changed since "
            f"(that file is replaced); its files: {', '.join(command.stage.outputs)}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None), so help is fast."""
    parser = argparse.ArgumentParser(
        prog="medauc",
        description="Which image classifier is really best for a clinic, and how sure can we be.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        p = sub.add_parser(name, help=entry.summary, description=entry.summary)
        if command is not None and name != command:
            continue  # not the sub-command asked for: its module (torch, timm...) need not load
        try:
            module = importlib.import_module(entry.module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not entry.module.startswith(exc.name):
                raise
            p.set_defaults(_missing=name)
            p.epilog = "This stage is not built yet in this version of medauc."
            if entry.common:
                add_common_arguments(p)
            continue
        module.add_arguments(p)
        if entry.common:
            # `run` continues in one folder per config; a single stage starts a new one unless told
            add_common_arguments(p, "runs/<config>" if name == "run" else "runs/<config>-<timestamp>", _force_help(name))
        p.set_defaults(_main=module.main)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


def _early_config_error(command: str, argv: list[str]) -> str | None:
    """The config's error, found before the stage's module (and torch) is imported: under a second.

    Reads ``--config`` and the ``key=value`` overrides straight from ``argv``; anything this quick
    look cannot read is left to the full parser, which checks the same things again.
    """
    if command not in COMMANDS or not COMMANDS[command].common or any(a in ("-h", "--help") for a in argv):
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
    from medauc.errors import RunFolderError
    from medauc.lock import release_all

    if argv is None:  # the `medauc` command itself (not a call from Python): the allocator settings first
        from medauc.allocator import ensure_tunables

        ensure_tunables(sys.argv[1:])
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), "")
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
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if hasattr(args, "config"):
            from medauc.config import load_config
            from medauc.validate import check_models

            # Validated (ranges, choices, timm names) before anything runs; stages read it as args.cfg.
            args.cfg = load_config(args.config, overrides)
            check_models(args.cfg)
            from medauc import preflight

            # Known before compute, checked before it (and before the run folder is made).
            preflight.check(args.cfg, command, getattr(args, "data", None), getattr(args, "out", None))
            stage = COMMANDS[command].stage
            if stage is not None and stage.reads_manifest and getattr(args, "out", None):
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
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"medauc {args.command}: {how}; run the same command again to continue", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        print(f"medauc {args.command}: error: ran out of memory ({type(exc).__name__}: {_first_line(exc)}); "
              "lower data.image_size, train.batch_size or train.jobs (or data.workers), or use a machine with more memory",
              file=sys.stderr)
        return 2
    finally:
        release_all()  # the run folder's lock: the command is over
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit): ends the command like Ctrl-C, with a message."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError and torch's (CPU or GPU) allocation failures, found without importing torch."""
    text = str(exc)
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        "out of memory" in text.lower() or "can't allocate memory" in text)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else "no details"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
