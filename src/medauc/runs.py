"""Run folders: create or reopen one for a config, and keep its ``config.yaml`` true.

A run folder holds ``config.yaml`` (resolved), ``environment.json`` and every stage's outputs. The
jobs around it live beside this module: the folder's lock (:mod:`medauc.lock`, taken by
:func:`open_run`), stage records and file checks (:mod:`medauc.records`), atomic writes
(:mod:`medauc.fileio`), seeding and environment capture (:mod:`medauc.reproducibility`).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import yaml

from medauc.config import Config, dump_yaml, from_dict
from medauc.errors import ConfigError, RunFolderError
from medauc.fileio import write_json, write_text
from medauc.lock import lock_run
from medauc.reproducibility import environment_info


def default_run_dir(cfg: Config, root: str | os.PathLike[str] = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.name}-{stamp}"


def open_run(out: str | os.PathLike[str] | None, cfg: Config, force: bool = False) -> Path:
    """Create or reopen a run folder for ``cfg`` and write ``config.yaml`` and ``environment.json``.

    A folder that already holds a run is reopened when its config is the same (so interrupted or
    cached runs continue). A different config there is refused unless ``force``: the old
    ``config.yaml`` is then kept as ``config.previous.yaml`` and stages rerun as their hashes say.
    The folder's lock is taken first and held until :func:`medauc.lock.release_run` (the CLI releases it when
    the command ends) or the process exits; a folder another process holds is refused.
    """
    run_dir = Path(out) if out else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder; choose another --out")
    blocker = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RunFolderError(f"--out {run_dir}: {blocker} is a file, not a folder; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run(run_dir)
    except OSError as exc:  # PermissionError, read-only file system, disk full...
        raise _unwritable(run_dir, exc) from exc
    cfg_text = _config_text(cfg, run_dir)
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        old = cfg_path.read_text(encoding="utf-8")
        _check_not_edited(run_dir, old, force)
        if old != cfg_text and _resolved_old(old, run_dir) != cfg_text:
            if not force:
                raise RunFolderError(
                    f"{run_dir} already holds a run with a different configuration ({config_changes(old, cfg_text)}); "
                    "pass --force to reuse it (stages whose inputs changed are recomputed), "
                    "or choose another --out"
                )
            write_text(run_dir / "config.previous.yaml", old)
    try:
        write_config(run_dir, cfg_text)
        write_json(run_dir / "environment.json", environment_info())
    except OSError as exc:
        raise _unwritable(run_dir, exc) from exc
    return run_dir


def _flat(d: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(d, dict) or (not d and prefix):  # an empty mapping is a value ("external: {}")
        return {prefix: d}
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: str, new: str, most: int = 4) -> str:
    """The settings two ``config.yaml`` texts differ in, as ``key: old -> new`` (at most ``most`` named)."""
    try:
        a, b = _flat(yaml.safe_load(old) or {}), _flat(yaml.safe_load(new) or {})
    except yaml.YAMLError:
        return "the folder's config.yaml does not parse"
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "(unset)") != b.get(k, "(unset)"))
    shown = [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys[:most]]
    more = f"; and {len(keys) - most} more" if len(keys) > most else ""
    return ("changed: " + "; ".join(shown) + more) if keys else "the same settings written differently"


def _written_copy(run_dir: Path) -> Path:
    return run_dir / ".medauc" / "config.yaml"


def write_config(run_dir: str | os.PathLike[str], text: str) -> None:
    """Write ``config.yaml`` and medauc's own copy of it (``.medauc/config.yaml``), by which a hand edit is found."""
    write_text(_written_copy(Path(run_dir)), text)
    write_text(Path(run_dir) / "config.yaml", text)


def _check_not_edited(run_dir: Path, text: str, force: bool) -> None:
    """Refuse a ``config.yaml`` edited by hand: the results in the folder were not made with it."""
    copy = _written_copy(run_dir)
    if not copy.is_file() or copy.read_text(encoding="utf-8") == text or force:
        return  # a folder from before the copy was kept, or an unchanged file, or --force: the run is redone under it
    cfg_path = run_dir / "config.yaml"
    raise RunFolderError(
        f"{cfg_path} was edited since medauc wrote it: the results in {run_dir} were made with the settings in {copy}, "
        f"not with these; put them back (`cp {copy} {cfg_path}`), or run `medauc run --force --config {cfg_path} "
        f"--out {run_dir}` to recompute the run under the edited settings"
    )


def _unwritable(run_dir: Path, exc: OSError) -> RunFolderError:
    return RunFolderError(
        f"--out {run_dir}: cannot write the run folder there ({exc.strerror or exc}: {exc.filename or run_dir}); "
        "choose a folder you can write to"
    )


def _config_text(cfg: Config, run_dir: Path) -> str:
    """``config.yaml`` as written: with ``data.classes=[]`` resolved once the run has a manifest."""
    from medauc.data.manifest import resolve_classes  # here: the data package loads pandas

    return dump_yaml(resolve_classes(cfg, run_dir))


def _resolved_old(text: str, run_dir: Path) -> str | None:
    # A config.yaml written before prepare ran holds data.classes=[]; it means the manifest's classes.
    try:
        return _config_text(from_dict(yaml.safe_load(text) or {}), run_dir)
    except (ConfigError, yaml.YAMLError, TypeError):
        return None


def record_config(run_dir: str | os.PathLike[str], cfg: Config) -> Config:
    """Rewrite ``config.yaml`` after ``prepare``, with ``data.classes`` resolved; return that config."""
    from medauc.data.manifest import resolve_classes

    resolved = resolve_classes(cfg, run_dir)
    if resolved is not cfg:
        write_config(run_dir, dump_yaml(resolved))
    return resolved
