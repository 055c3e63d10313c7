"""Run folders, seeding, environment capture and atomic writes.

A run folder holds ``config.yaml`` (resolved), ``environment.json`` and every stage's outputs.
Each finished stage leaves ``.medauc/stages/<stage>.json`` with the hash of what it was computed
from and the sha256 of every file it wrote, so a re-run skips it when nothing it depends on changed
and its files are intact, and refuses to overwrite it when something did (unless ``--force``).
One process at a time works in a run folder: it holds ``.medauc/lock`` (see :func:`lock_run`).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medauc.config import Config, dump_yaml, to_dict

log = logging.getLogger(__name__)


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch from one integer; return a NumPy generator for explicit use.

    Prefer passing the returned generator (or a ``torch.Generator`` seeded from the same value)
    to anything random over relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    A crash leaves either the old file or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    # JSON has no NaN/inf: write null so that any reader (browsers included) can parse the file.
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomic JSON write; NaN and inf become null."""
    text = json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """Atomic CSV write of a list of dicts (column order from ``fieldnames`` or the first row)."""
    if fieldnames is None:
        fieldnames = list(rows[0].keys()) if rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- environment


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() if out.returncode == 0 else ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5,
        )
        if commit and dirty.returncode == 0 and dirty.stdout.strip():
            commit += "+dirty"
        return commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info() -> dict[str, Any]:
    """Versions, device and machine facts needed to repeat a run."""
    from importlib import metadata

    versions = {}
    for pkg in ("medauc", "torch", "torchvision", "timm", "grad-cam", "monai", "numpy", "scipy", "scikit-learn", "pandas", "nilearn",
                "nibabel", "pydicom", "pylibjpeg-openjpeg", "python-gdcm"):  # the last three decode DICOM
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["cuda_version"] = torch.version.cuda
        info["cuda_device_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        info["device"] = "cpu"
    return info


# ----------------------------------------------------------------------------- run folders


def default_run_dir(cfg: Config, root: str | os.PathLike[str] = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.name}-{stamp}"


def open_run(out: str | os.PathLike[str] | None, cfg: Config, force: bool = False) -> Path:
    """Create or reopen a run folder for ``cfg`` and write ``config.yaml`` and ``environment.json``.

    A folder that already holds a run is reopened when its config is the same (so interrupted or
    cached runs continue). A different config there is refused unless ``force``: the old
    ``config.yaml`` is then kept as ``config.previous.yaml`` and stages rerun as their hashes say.
    The folder's lock is taken first and held until :func:`release_run` (the CLI releases it when
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
        if old != cfg_text and _resolved_old(old, run_dir) != cfg_text:
            if not force:
                raise RunFolderError(
                    f"{run_dir} already holds a run with a different configuration; "
                    "pass --force to reuse it (stages whose inputs changed are recomputed), "
                    "or choose another --out"
                )
            write_text(run_dir / "config.previous.yaml", old)
    try:
        write_text(cfg_path, cfg_text)
        write_json(run_dir / "environment.json", environment_info())
    except OSError as exc:
        raise _unwritable(run_dir, exc) from exc
    return run_dir


def _unwritable(run_dir: Path, exc: OSError) -> RunFolderError:
    return RunFolderError(
        f"--out {run_dir}: cannot write the run folder there ({exc.strerror or exc}: {exc.filename or run_dir}); "
        "choose a folder you can write to"
    )


def _config_text(cfg: Config, run_dir: Path) -> str:
    """``config.yaml`` as written: with ``data.classes=[]`` resolved once the run has a manifest."""
    from medauc.data.manifest import resolve_classes  # imports this module

    return dump_yaml(resolve_classes(cfg, run_dir))


def _resolved_old(text: str, run_dir: Path) -> str | None:
    # A config.yaml written before prepare ran holds data.classes=[]; it means the manifest's classes.
    from medauc.config import ConfigError, from_dict

    try:
        return _config_text(from_dict(yaml.safe_load(text) or {}), run_dir)
    except (ConfigError, yaml.YAMLError, TypeError):
        return None


def record_config(run_dir: str | os.PathLike[str], cfg: Config) -> Config:
    """Rewrite ``config.yaml`` after ``prepare``, with ``data.classes`` resolved; return that config."""
    from medauc.data.manifest import resolve_classes

    resolved = resolve_classes(cfg, run_dir)
    if resolved is not cfg:
        write_text(Path(run_dir) / "config.yaml", dump_yaml(resolved))
    return resolved


# ----------------------------------------------------------------------------- the lock

LOCK_FILE = Path(".medauc") / "lock"
_held: dict[Path, int] = {}  # resolved run folder -> the open file that holds its lock


def lock_run(run_dir: str | os.PathLike[str]) -> None:
    """Hold ``run_dir``'s lock for this process (until :func:`release_run` or the process ends).

    The lock is an exclusive ``flock`` on ``.medauc/lock``, which also notes who holds it (pid, host,
    start time, command). The kernel drops a ``flock`` when its process ends, however it ends, so a
    killed run leaves only its note behind: the next process takes the lock over and logs whose it
    was. Taking a lock this process already holds does nothing. Raises :class:`RunFolderError` at
    once, naming the holder, when another running process holds it.
    """
    folder = Path(run_dir).resolve()
    if folder in _held:
        return
    path = folder / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_note(fd)
        os.close(fd)
        raise RunFolderError(
            f"{run_dir} is in use by {_holder_text(holder)}; wait for it to finish, or choose another --out"
        ) from None
    except OSError:
        os.close(fd)
        raise
    previous = _lock_note(fd)
    if previous and (previous.get("pid"), previous.get("host")) != (os.getpid(), socket.gethostname()):
        log.warning("%s: taking over the lock left by %s, which no longer holds it (it ended, or the folder was copied)",
                    run_dir, _holder_text(previous))
    note = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["medauc", *sys.argv[1:]])[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(note).encode(), 0)
    _held[folder] = fd


def release_run(run_dir: str | os.PathLike[str]) -> None:
    """Give up ``run_dir``'s lock if this process holds it (its note is cleared: nothing to take over)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@atexit.register
def release_all() -> None:
    """Give up every run-folder lock this process holds."""
    for folder in list(_held):
        release_run(folder)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``run_dir``'s lock inside the block; a lock held before the block stays held after it."""
    held = Path(run_dir).resolve() in _held
    lock_run(run_dir)
    try:
        yield
    finally:
        if not held:
            release_run(run_dir)


def _lock_note(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 4096, 0)
    try:
        note = json.loads(raw) if raw.strip() else None
    except ValueError:
        return {"pid": "?", "note": raw[:80].decode(errors="replace")}
    return note if isinstance(note, dict) else None


def _holder_text(note: dict[str, Any] | None) -> str:
    if not note:
        return "another process (it has not written its pid to .medauc/lock yet)"
    return (f"process {note.get('pid')} on {note.get('host', '?')} (started {note.get('started', '?')}: "
            f"{note.get('command', '?')})")


# ----------------------------------------------------------------------------- stage records


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
    out = []
    for name, sha in files.items():
        full = Path(run_dir) / name
        if not full.is_file():
            out.append(Damage(name, "missing"))
        elif file_sha256(full) != sha:
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


def clear_stage(run_dir: str | os.PathLike[str], stage: str) -> None:
    _stage_file(Path(run_dir), stage).unlink(missing_ok=True)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """``shutil.rmtree`` that accepts entries already gone (the folder may be half removed)."""
    def gone_is_fine(function: Any, name: str, exc_info: Any) -> None:
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    if Path(path).exists():
        shutil.rmtree(path, onerror=gone_is_fine)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def config_section_dict(cfg: Config, *sections: str) -> dict[str, Any]:
    d = to_dict(cfg)
    return {s: d[s] for s in sections}
