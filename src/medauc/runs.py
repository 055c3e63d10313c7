"""Run folders, seeding, environment capture and atomic writes.

A run folder holds ``config.yaml`` (resolved), ``environment.json`` and every stage's outputs.
Each finished stage leaves ``.medauc/stages/<stage>.json`` with the hash of what it was computed
from, so a re-run skips it when nothing it depends on changed, and refuses to overwrite it when
something did (unless ``--force``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medauc.config import Config, dump_yaml, to_dict


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
    for pkg in ("medauc", "torch", "torchvision", "timm", "grad-cam", "monai", "numpy", "scipy", "scikit-learn", "pandas", "nilearn"):
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
    """
    run_dir = Path(out) if out else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder; choose another --out")
    blocker = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RunFolderError(f"--out {run_dir}: {blocker} is a file, not a folder; choose another --out")
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
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(cfg_path, cfg_text)
        write_json(run_dir / "environment.json", environment_info())
    except OSError as exc:  # PermissionError, read-only file system, disk full...
        raise RunFolderError(
            f"--out {run_dir}: cannot write the run folder there ({exc.strerror or exc}: {exc.filename or run_dir}); "
            "choose a folder you can write to"
        ) from exc
    return run_dir


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


def _stage_file(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / ".medauc" / "stages" / f"{stage}.json"


def stage_record(run_dir: str | os.PathLike[str], stage: str) -> dict[str, Any] | None:
    f = _stage_file(Path(run_dir), stage)
    return read_json(f) if f.exists() else None


def stage_is_done(run_dir: str | os.PathLike[str], stage: str, key: str) -> bool:
    """True when ``stage`` finished in ``run_dir`` from inputs hashing to ``key``."""
    rec = stage_record(run_dir, stage)
    return rec is not None and rec.get("key") == key


def check_stage(run_dir: str | os.PathLike[str], stage: str, key: str, force: bool) -> bool:
    """Decide whether to run ``stage``: False = already done with this key (skip).

    Raises :class:`RunFolderError` if the stage finished with other inputs and ``force`` is off.
    """
    rec = stage_record(run_dir, stage)
    if rec is None:
        return True
    if rec.get("key") == key:
        return False
    if not force:
        raise RunFolderError(
            f"stage {stage!r} in {run_dir} was computed from other inputs (key {rec.get('key')} != {key}); "
            "pass --force to recompute it, or choose another --out"
        )
    clear_stage(run_dir, stage)
    return True


def mark_stage(run_dir: str | os.PathLike[str], stage: str, key: str, **extra: Any) -> None:
    """Record that ``stage`` finished from inputs hashing to ``key``."""
    write_json(
        _stage_file(Path(run_dir), stage),
        {"stage": stage, "key": key, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra},
    )


def clear_stage(run_dir: str | os.PathLike[str], stage: str) -> None:
    f = _stage_file(Path(run_dir), stage)
    if f.exists():
        f.unlink()


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
