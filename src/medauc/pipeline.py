"""``medauc run``: every stage in order, in one run folder, each cached by content.

Each stage records the hash of its inputs in ``.medauc/stages/<stage>.json``; running the same
command again skips finished stages, and an interrupted run continues where it stopped (the
training stage also resumes inside a model). Changing a setting in an existing run folder needs
``--force``; then only the stages whose inputs changed are recomputed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medauc.config import Config
from medauc.runs import open_run, read_json, record_config, write_json

log = logging.getLogger(__name__)


def _phantom(cfg: Config, run_dir: Path, data: str | None) -> Path | None:
    """The data folder: --data, cfg.data.path, or the built-in phantom (cached across runs)."""
    if data:
        return Path(data)
    if cfg.data.source != "phantom":
        return Path(cfg.data.path) if cfg.data.path else None
    from medauc.data.phantom import ensure_phantom

    folder = Path(ensure_phantom(cfg))
    # The phantom lives in a shared cache; keep its montage and provenance with the run for the report.
    dest = run_dir / "phantom"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("phantom.json", "montage.png", "montage_masks.png"):
        if (folder / name).exists():
            shutil.copy2(folder / name, dest / name)
    return folder


# stage -> (module, function(cfg, run_dir, force=...)); prepare and the data step take more arguments.
STAGE_FUNCTIONS = {
    "augment": ("medauc.augment", "augment_stage"),
    "train": ("medauc.classify.train", "train_stage"),
    "strategies": ("medauc.augment", "strategies_stage"),
    "evaluate": ("medauc.evaluate", "evaluate_stage"),
    "explain": ("medauc.explain", "explain_stage"),
    "report": ("medauc.report", "report_stage"),
}


def stages(cfg: Config, data: str | None) -> list[tuple[str, Callable[[Path, bool], Any]]]:
    """The pipeline as (name, function(run_dir, force)) in order; optional stages as the config says."""
    data_dir: dict[str, Path | None] = {}

    def phantom(run_dir: Path, force: bool) -> Any:
        data_dir["path"] = _phantom(cfg, run_dir, data)  # keyed by the config: --force would remake the same images
        return str(data_dir["path"])

    def prepare(run_dir: Path, force: bool) -> Any:
        from medauc.data.command import prepare_stage

        manifest = prepare_stage(cfg, run_dir, data_dir.get("path"), force=force)
        record_config(run_dir, cfg)  # data.classes=[] -> the classes found, in config.yaml
        return str(manifest)

    def stage(name: str) -> Callable[[Path, bool], Any]:
        module, function = STAGE_FUNCTIONS[name]

        def run(run_dir: Path, force: bool) -> Any:
            from medauc.data.manifest import resolve_classes

            # Imported when the stage runs: torch, timm and friends load only if needed. Every stage
            # after prepare sees data.classes=[] as the manifest's classes.
            return getattr(importlib.import_module(module), function)(resolve_classes(cfg, run_dir), run_dir, force=force)

        return run

    names = (["augment"] if cfg.augment.enabled else []) + ["train"]
    if cfg.augment.enabled and cfg.augment.strategies:
        names.append("strategies")
    names += ["evaluate", "explain", "report"]
    return [("data", phantom), ("prepare", prepare)] + [(n, stage(n)) for n in names]


def run_pipeline(cfg: Config, run_dir: Path, data: str | None = None, force: bool = False) -> dict[str, float]:
    """Run every stage; return seconds per stage (also written to ``timings.json``)."""
    timings_path = run_dir / "timings.json"
    timings: dict[str, float] = {}
    total = time.perf_counter()
    for name, fn in stages(cfg, data):
        t0 = time.perf_counter()
        print(f"medauc run: stage {name} ...", flush=True)
        fn(run_dir, force)
        timings[name] = round(time.perf_counter() - t0, 2)
        print(f"medauc run: stage {name} done in {timings[name]:.1f} s", flush=True)
        # Written after every stage, so the report (the last stage) can show the earlier ones.
        previous = read_json(timings_path) if timings_path.exists() else {}
        write_json(timings_path, {**previous, "last_run": timings})
    timings["total"] = round(time.perf_counter() - total, 2)
    write_json(timings_path, {"last_run": timings})
    return timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="folder-per-class image set (default: the built-in phantom)")


def main(args: argparse.Namespace) -> int:
    cfg: Config = args.cfg
    if args.data and cfg.data.source == "phantom":
        from medauc.config import replace

        cfg = replace(cfg, **{"data.source": "folder", "data.path": str(Path(args.data).resolve())})
    if cfg.data.source == "folder" and not (args.data or cfg.data.path):
        from medauc.errors import DataError

        raise DataError(
            f"config {cfg.name!r} reads a folder-per-class data set: pass --data PATH (or data.path=PATH), "
            "e.g. the unpacked Kaggle brain-tumor-mri-scans folder"
        )
    out = args.out or str(Path("runs") / cfg.name)
    run_dir = open_run(out, cfg, args.force)
    print(f"medauc run: config {cfg.name!r}, run folder {run_dir}", flush=True)
    timings = run_pipeline(cfg, run_dir, args.data, args.force)
    report = run_dir / "report.html"
    print(f"medauc run: finished in {timings['total']:.0f} s; report: {report}")
    return 0
