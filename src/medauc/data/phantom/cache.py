"""The phantom cache: one finished phantom per key, generated on first use and shared by runs.

``<cache_root or $MEDAUC_CACHE or ~/.cache/medauc>/phantom-<key>``, the key made of the phantom
config (less ``workers``), the seed, the anatomy and :data:`~medauc.data.phantom.generate.PHANTOM_VERSION`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from medauc.config import Config, config_hash, to_dict
from medauc.data.phantom.anatomy import cache_root as default_cache_root, resolve_source
from medauc.data.phantom.generate import PHANTOM_VERSION, generate_phantom

log = logging.getLogger(__name__)


def phantom_key(cfg: Config, anatomy_path: str | os.PathLike[str] | None = None) -> str:
    """Hash of what the phantom depends on: phantom config (less ``workers``), seed, anatomy, version."""
    source, path = resolve_source(cfg.phantom.anatomy, anatomy_path)
    # lesion_contrast at its default leaves the hash as it was before the field existed: caches stay valid.
    # So does site at its default ("").
    section = {k: v for k, v in to_dict(cfg.phantom).items()
               if k != "workers" and not (k == "lesion_contrast" and v == 1.0) and not (k == "site" and v == "")}
    return config_hash(section, cfg.seed, source, str(path) if path else "", PHANTOM_VERSION)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished phantom (``phantom.json`` is written last)."""
    return (Path(folder) / "phantom.json").is_file()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.phantom-<key>.tmp-<pid>`` folders whose process no longer runs (a killed run's leftovers)."""
    removed = []
    for tmp in Path(root).glob(".phantom-*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if tmp.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            log.info("phantom: removing %s, left by process %s that no longer runs", tmp, pid)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def ensure_phantom(cfg: Config, cache_root: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The phantom for ``cfg`` in the cache, generated on first use; returns its folder.

    ``<cache_root or $MEDAUC_CACHE or ~/.cache/medauc>/phantom-<hash>``: generated into a
    temporary sibling and renamed when complete, so an interrupted run never looks finished.
    """
    root = Path(cache_root) if cache_root else default_cache_root()
    remove_stale_temps(root)
    final = root / f"phantom-{phantom_key(cfg)}"
    if is_complete(final) and not force:
        return final
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    generate_phantom(tmp, cfg.phantom, cfg.seed)
    if final.exists():
        if is_complete(final) and not force:  # another process finished first: keep its copy
            shutil.rmtree(tmp)
            return final
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
