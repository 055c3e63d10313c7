"""``medauc run``: every stage of :data:`medauc.stages.STAGES` in order, in one run folder.

Each stage records the hash of its inputs and of the files it wrote in ``.medauc/stages/<stage>.json``;
running the same command again skips finished stages whose files are intact, and an interrupted
run continues where it stopped (the training stage also resumes inside a model). Changing a
setting in an existing run folder needs ``--force``; then only the stages whose inputs changed are
recomputed. :func:`medauc.stages.run` does that bookkeeping; this module only walks the list.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from medauc import records, stages
from medauc.config import Config
from medauc.fileio import read_json, write_json
from medauc.runs import open_run


def phantom_step(cfg: Config, run_dir: Path) -> Path:
    """Generate the built-in phantom (or find it in the shared cache); copy its montages and provenance
    into ``run_dir/phantom/`` for the report. Returns the data folder."""
    from medauc.data.phantom import ensure_phantom

    folder = Path(ensure_phantom(cfg))
    dest = run_dir / "phantom"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("phantom.json", "montage.png", "montage_masks.png", "montage_subjects.png"):
        if (folder / name).exists():
            shutil.copy2(folder / name, dest / name)
    return folder


def run_pipeline(cfg: Config, run_dir: Path, data: str | None = None, force: bool = False) -> dict[str, float]:
    """Run every stage the config asks for; return seconds per stage (also written to ``timings.json``)."""
    timings_path = run_dir / "timings.json"
    timings: dict[str, float] = {}
    # "computed": each stage's seconds when it last did its work. A rerun that finds a stage up to
    # date spends a fraction of a second on it ("last_run"), and keeps the stage's computed time.
    computed: dict[str, float] = (read_json(timings_path).get("computed", {}) if timings_path.exists() else {})
    verified: set[Any] = set()  # stages whose files were checked in this run: none is hashed twice
    total = time.perf_counter()
    for stage in stages.pipeline(cfg):
        t0 = time.perf_counter()
        print(f"medauc run: stage {stage.name} ...", flush=True)
        options = {"data_dir": data} if stage.name == "prepare" else {}
        before = records.stage_record(run_dir, stage.name)
        stages.run(stage.name, cfg, run_dir, force, verified=verified, **options)
        timings[stage.name] = round(time.perf_counter() - t0, 2)
        if not stage.recorded or before is None or records.stage_record(run_dir, stage.name) != before:
            computed[stage.name] = timings[stage.name]  # it ran (a new record), or it has no record to skip by
        print(f"medauc run: stage {stage.name} done in {timings[stage.name]:.1f} s", flush=True)
        # Written after every stage, so the report (the last stage) can show the earlier ones.
        write_json(timings_path, {"last_run": timings, "computed": computed})
    timings["total"] = round(time.perf_counter() - total, 2)
    write_json(timings_path, {"last_run": timings, "computed": computed})
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
    from medauc.data.subjects import check_settings

    check_settings(cfg.data)  # an unreadable data.groups_csv fails before the run folder and the phantom exist
    out = args.out or str(Path("runs") / cfg.name)
    run_dir = open_run(out, cfg, args.force)
    print(f"medauc run: config {cfg.name!r}, run folder {run_dir}", flush=True)
    timings = run_pipeline(cfg, run_dir, args.data, args.force)
    report = run_dir / "report.html"
    print(f"medauc run: finished in {timings['total']:.0f} s; report: {report}")
    return 0
