"""Stage records: what a finished stage was computed from, and the files it vouches for.

Each finished stage (or part of one: a model of the training stage) leaves
``.medauc/stages/<stage>.json`` with the hash of its inputs (its key) and the sha256 of every file
it wrote, written only once all of them are complete. A re-run skips it when the key is the same
and its files are intact; a missing or changed file is found by :func:`record_damage`.
:mod:`medauc.stages` decides what to do about it for whole stages; :func:`check_stage` for parts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medauc.errors import RunFolderError
from medauc.fileio import file_sha256, read_json, write_json

log = logging.getLogger(__name__)


def _stage_file(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / ".medauc" / "stages" / f"{stage}.json"


def stage_record(run_dir: str | os.PathLike[str], stage: str) -> dict[str, Any] | None:
    """``.medauc/stages/<stage>.json``: ``{stage, key, finished, files: {path: sha256}, ...}``, or None.

    A record that cannot be read (damaged) counts as no record: the stage runs again.
    """
    f = _stage_file(Path(run_dir), stage)
    if not f.exists():
        return None
    try:
        rec = read_json(f)
    except ValueError:
        log.warning("%s is damaged (not JSON); stage %r counts as not run", f, stage)
        return None
    return rec if isinstance(rec, dict) else None


@dataclass(frozen=True)
class Damage:
    """A file a stage record vouches for that is not as recorded."""

    path: str  # as recorded: relative to the run folder (absolute when outside it)
    kind: str  # "missing" or "changed" (its sha256 differs: truncated, damaged or edited)

    def text(self, run_dir: str | os.PathLike[str]) -> str:
        full = Path(run_dir) / self.path
        return f"{full} is missing" if self.kind == "missing" else f"{full} is not the file that was recorded (its sha256 differs)"


def record_files(run_dir: str | os.PathLike[str], paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """``{path relative to run_dir: sha256}`` of ``paths`` (as they are opened: absolute, or relative to
    the working directory, like ``run_dir / "manifest.csv"``), sorted; a path outside ``run_dir`` stays absolute."""
    base = Path(os.path.abspath(run_dir))
    out = {}
    for p in paths:
        full = Path(os.path.abspath(p))
        try:
            name = full.relative_to(base).as_posix()
        except ValueError:
            name = str(full)
        out[name] = file_sha256(full)
    return dict(sorted(out.items()))


def verify_files(run_dir: str | os.PathLike[str], files: dict[str, str]) -> list[Damage]:
    """The files of ``files`` (``{path: sha256}``, as :func:`record_files` writes it) that are not as recorded."""
    from medauc.relocate import aliases

    out = []
    table: dict[str, str] | None = None  # read once, and only when a file differs
    for name, sha in files.items():
        full = Path(run_dir) / name
        if not full.is_file():
            out.append(Damage(name, "missing"))
            continue
        now = file_sha256(full)  # hashed once (key_sha256 would hash a differing file again)
        if now != sha:
            table = aliases(run_dir) if table is None else table
            if table.get(now, now) != sha:  # not a manifest rewritten relative either (medauc.relocate)
                out.append(Damage(name, "changed"))
    return out


def record_damage(run_dir: str | os.PathLike[str], rec: dict[str, Any]) -> list[Damage]:
    """What is wrong with the files ``rec`` vouches for ([] when intact, or when it lists none)."""
    return verify_files(run_dir, rec.get("files") or {})


def stage_is_done(run_dir: str | os.PathLike[str], stage: str, key: str) -> bool:
    """True when ``stage`` finished in ``run_dir`` from inputs hashing to ``key`` and its files are intact."""
    rec = stage_record(run_dir, stage)
    return rec is not None and rec.get("key") == key and not record_damage(run_dir, rec)


def check_stage(run_dir: str | os.PathLike[str], stage: str, key: str, force: bool) -> bool:
    """Decide whether to run ``stage``: False = already done with this key, its files intact (skip).

    For a part of a stage (one model of the training stage, say); whole stages are run by
    :func:`medauc.stages.run`. A damaged or missing file it recorded means it runs again. Raises
    :class:`RunFolderError` if the stage finished with other inputs and ``force`` is off.
    """
    rec = stage_record(run_dir, stage)
    if rec is None:
        return True
    if rec.get("key") == key:
        damage = record_damage(run_dir, rec)
        if not damage:
            return False
        log.warning("%s; recomputing %s", damage[0].text(run_dir), stage)
        clear_stage(run_dir, stage)
        return True
    if not force:
        raise RunFolderError(
            f"stage {stage!r} in {run_dir} was computed from other inputs (key {rec.get('key')} != {key}); "
            "pass --force to recompute it, or choose another --out"
        )
    clear_stage(run_dir, stage)
    return True


def mark_stage(
    run_dir: str | os.PathLike[str], stage: str, key: str, files: Iterable[str | os.PathLike[str]] = (), **extra: Any
) -> None:
    """Record that ``stage`` finished from inputs hashing to ``key``, vouching for ``files`` (their sha256).

    Call it only once every one of ``files`` is complete: the record is what a later run trusts.
    """
    write_json(
        _stage_file(Path(run_dir), stage),
        {"stage": stage, "key": key, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "files": record_files(run_dir, files), **extra},
    )


def start_stage(run_dir: str | os.PathLike[str], stage: str, **extra: Any) -> None:
    """Record that ``stage`` started (replacing its finished record): until :func:`mark_stage`, later stages
    and commands see an unfinished stage, not the results of an earlier run under other settings."""
    write_json(
        _stage_file(Path(run_dir), stage),
        {"stage": stage, "unfinished": True, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra},
    )


def clear_stage(run_dir: str | os.PathLike[str], stage: str) -> None:
    _stage_file(Path(run_dir), stage).unlink(missing_ok=True)
