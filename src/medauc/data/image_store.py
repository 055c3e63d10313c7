"""The run folder's image cache: every image decoded and resized once per size, stored once.

``cache/images-<S>/`` holds shards (``<hash>.npy``, uint8 (k, S, S)) and ``index.json``, which maps
each image's key (its path with its content hash, or its size and modification time) to a shard and
a row, and records every shard's sha256. A request decodes only the images no shard holds yet and
writes them as one new shard; the images of every stage (training splits, the augment stage's
subsets, the strategies' sets, explain) are then one copy on disk, not one per request. A shard
whose bytes no longer match its recorded sha256 (zeroed, truncated, edited) is dropped with its
index entries and its images decoded again: a damaged cache is never read as images. Processes
that share a run folder (``train.jobs``) take ``index.lock`` while they read or change the index.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medauc.fileio import atomic_path, file_sha256, write_json

log = logging.getLogger(__name__)

_VERIFIED: dict[tuple[str, int, int], str] = {}  # (shard, size, mtime) -> sha256 checked in this process


class ImageStore:
    """The images of one size in a run folder's cache (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike[str], size: int) -> None:
        self.dir = Path(cache_dir) / f"images-{size}"
        self.size = size

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = self.dir / "index.json"
                index = json.loads(path.read_text()) if path.is_file() else {"images": {}, "shards": {}}
                yield index
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, index: dict) -> None:
        write_json(self.dir / "index.json", index)

    def _open_shard(self, name: str, sha256: str) -> np.ndarray | None:
        """The shard as a read-only memory map, or None when it is missing or its bytes changed."""
        path = self.dir / name
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if _VERIFIED.get(key) != sha256:
            if file_sha256(path) != sha256:
                return None
            _VERIFIED[key] = sha256
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (self.size, self.size):
            return None
        return arr

    def get(self, keys: Sequence[str], decode: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """uint8 (N, S, S) for the images ``keys`` (one string per image; equal keys, equal images).

        ``decode(positions)`` returns the images at those positions of ``keys`` (k, S, S) for the
        ones not in the store; they are stored as one new shard before being returned.
        """
        ids = [hashlib.sha256(k.encode()).hexdigest()[:24] for k in keys]
        out = np.empty((len(keys), self.size, self.size), dtype=np.uint8)
        with self._locked() as index:
            where: dict[str, tuple[str, int]] = {}
            shards: dict[str, np.ndarray | None] = {}
            for i in set(ids):
                entry = index["images"].get(i)
                if entry is None:
                    continue
                name = entry[0]
                if name not in shards:
                    shards[name] = self._open_shard(name, index["shards"].get(name, ""))
                if shards[name] is not None:
                    where[i] = (name, entry[1])
            bad = [n for n, a in shards.items() if a is None]
            if bad:
                log.warning("image cache: %d shard(s) in %s missing or changed since written (e.g. %s); their images "
                            "are decoded again", len(bad), self.dir, bad[0])
                index["images"] = {k: v for k, v in index["images"].items() if v[0] not in bad}
                for n in bad:
                    index["shards"].pop(n, None)
                    (self.dir / n).unlink(missing_ok=True)
            missing_ids = list(dict.fromkeys(i for i in ids if i not in where))
            if missing_ids:
                first = {}
                for pos, i in enumerate(ids):
                    first.setdefault(i, pos)
                new = np.ascontiguousarray(decode([first[i] for i in missing_ids]), dtype=np.uint8)
                name = hashlib.sha256("\n".join(missing_ids).encode()).hexdigest()[:16] + ".npy"
                with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, new, allow_pickle=False)
                index["shards"][name] = file_sha256(self.dir / name)
                for row, i in enumerate(missing_ids):
                    index["images"][i] = [name, row]
                    where[i] = (name, row)
                shards[name] = new
            if bad or missing_ids:
                self._save(index)
        by_shard: dict[str, list[int]] = {}
        for pos, i in enumerate(ids):
            by_shard.setdefault(where[i][0], []).append(pos)
        for name, positions in by_shard.items():
            rows = np.array([where[ids[p]][1] for p in positions])
            out[positions] = shards[name][rows]
        return out


__all__ = ["ImageStore"]
