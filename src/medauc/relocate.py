"""Old run folders' absolute paths, rewritten relative, without recomputing anything (issue 27).

Manifests written before paths were relative hold absolute paths into the run folder they were
made in; :func:`medauc.data.manifest.read_manifest` maps them into a moved or copied folder, and
:func:`rewrite_manifests` (called by every stage under the run's lock) writes them back relative,
so the folder no longer depends on where it once was.

A manifest's sha256 is part of later stages' keys (training, strategies, explain), so a rewritten
manifest would make every finished stage look stale and retrain every model. The rewrite therefore
records the new file's sha256 as an alias of the old one in ``.medauc/aliases.json``
(``{new sha256: old sha256}``): keys read a file's sha256 through :func:`key_sha256` and stage records
verify files through it, so a finished stage keeps its key and its files count as intact. The alias
holds for exactly the rewritten content: an edit afterwards changes the sha256 and counts as a change.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medauc.fileio import file_sha256, read_json, write_json

log = logging.getLogger(__name__)

MANIFESTS = ("manifest.csv", "augment/manifest.csv", "augment/restored_test.csv", "strategies/*/manifest.csv")


def _aliases_file(run_dir: Path) -> Path:
    return Path(run_dir) / ".medauc" / "aliases.json"


def aliases(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{sha256 of a rewritten file: sha256 of the file it replaced}`` ({} when none was rewritten)."""
    f = _aliases_file(Path(run_dir))
    if not f.is_file():
        return {}
    try:
        data = read_json(f)
    except ValueError:
        log.warning("%s is damaged (not JSON): rewritten manifests count as changed", f)
        return {}
    return data if isinstance(data, dict) else {}


def key_sha256(run_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The sha256 of ``path`` as keys and records know it: that of the file it was rewritten from, if it was."""
    sha = file_sha256(path)
    return aliases(run_dir).get(sha, sha)


def _needs_rewrite(path: Path) -> bool:
    """True when ``path`` holds an absolute path that lies (or, moved, would lie) inside its run folder."""
    import pandas as pd

    from medauc.data.manifest import PATH_COLUMNS, _absolute_paths, _relative_paths

    raw = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in PATH_COLUMNS)
    if not any(Path(v).is_absolute() for col in raw.columns for v in raw[col] if v):
        return False
    rel = _relative_paths(_absolute_paths(raw.copy(), path), path)
    return any(Path(a).is_absolute() and not Path(b).is_absolute()
               for col in raw.columns for a, b in zip(raw[col], rel[col]) if a)


def rewrite_manifests(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Rewrite the run folder's manifests that hold absolute paths into it, relative; returns those rewritten.

    The alias is written before the file, so an interruption leaves either the old file (the alias
    unused) or the new one with its alias; never a rewritten file without one.
    """
    from medauc.data.manifest import IMAGE_COLUMNS, read_manifest, write_manifest
    from medauc.errors import DataError

    run_dir = Path(run_dir)
    done = []
    for pattern in MANIFESTS:
        for path in sorted(run_dir.glob(pattern)):
            if not path.is_file() or not _needs_rewrite(path):
                continue
            old = file_sha256(path)
            tmp = path.with_name(path.name + ".relative")
            try:
                write_manifest(tmp, read_manifest(path, required=IMAGE_COLUMNS))
            except DataError as exc:  # left as it is: reading still maps its paths
                log.warning("%s: not rewritten with relative paths (%s)", path, exc)
                continue
            new = file_sha256(tmp)
            table = aliases(run_dir)
            table[new] = table.get(old, old)  # a chain of rewrites keeps the first file's sha256
            write_json(_aliases_file(run_dir), table)
            os.replace(tmp, path)
            done.append(path)
            log.info("%s: absolute paths into the run folder rewritten relative to it (finished stages stay valid)", path)
    return done


__all__ = ["MANIFESTS", "aliases", "key_sha256", "rewrite_manifests"]
