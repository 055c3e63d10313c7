"""The run folder's image cache: every image decoded and resized once per size, stored once.

``cache/images-<S>/`` holds shards (``<hash>.npy``, uint8 (k, S, S)) and ``index.json``, which maps
each image's key (its path with its content hash, or its size and modification time) to a shard and
a row, and records every shard's sha256. A request decodes only the images no shard holds yet and
writes them as new shards (``BLOCK`` images each); the images of every stage (training splits, the augment stage's
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
from typing import TYPE_CHECKING

import numpy as np

from medauc.fileio import atomic_path, file_sha256, write_json

if TYPE_CHECKING:
    import torch

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

    def get(self, keys: Sequence[str], decode: Callable[[list[int]], np.ndarray], lazy: bool = False) -> np.ndarray | ShardImages:
        """uint8 (N, S, S) for the images ``keys`` (one string per image; equal keys, equal images).

        ``decode(positions)`` returns the images at those positions of ``keys`` (k, S, S) for the
        ones not in the store; they are decoded and stored in blocks of ``BLOCK`` images (a shard each)
        before being returned. ``lazy``: a :class:`ShardImages` that reads the rows a request asks for
        from the shards, so a set only predicted (a chunk at a time) is never held in memory whole.
        """
        ids = [hashlib.sha256(k.encode()).hexdigest()[:24] for k in keys]
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
                for start in range(0, len(missing_ids), BLOCK):  # one block in memory at a time
                    block = missing_ids[start : start + BLOCK]
                    new = np.ascontiguousarray(decode([first[i] for i in block]), dtype=np.uint8)
                    name = hashlib.sha256("\n".join(block).encode()).hexdigest()[:16] + ".npy"
                    with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, new, allow_pickle=False)
                    index["shards"][name] = file_sha256(self.dir / name)
                    for row, i in enumerate(block):
                        index["images"][i] = [name, row]
                        where[i] = (name, row)
                    del new
                self._save(index)
            elif bad:
                self._save(index)
        names = sorted({where[i][0] for i in ids})
        number = {n: k for k, n in enumerate(names)}
        view = ShardImages(self.dir, self.size, names, np.array([number[where[i][0]] for i in ids], dtype=np.int64),
                           np.array([where[i][1] for i in ids], dtype=np.int64))
        return view if lazy else view[np.arange(len(ids))].numpy()


BLOCK = 2048  # images decoded (and written as one shard) at a time: 100 MB at 224 px


class ShardImages:
    """uint8 images (N, S, S) in a cache's shards, read a request at a time (``view[idx]`` -> a tensor).

    Indexing with an int, a slice, or an integer array or tensor returns a uint8 tensor of those rows;
    each shard is mapped only while its rows are copied out, so what stays in memory is the request's
    rows. Small to pickle (shard names and row numbers), so a training process receives it cheaply.
    """

    dtype = np.uint8

    def __init__(self, folder: Path, size: int, names: list[str], shard: np.ndarray, row: np.ndarray) -> None:
        self.folder, self.size, self.names, self.shard, self.row = Path(folder), size, names, shard, row

    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.row), self.size, self.size)

    def __getitem__(self, idx: object) -> torch.Tensor:
        import torch

        if isinstance(idx, slice):
            pos = np.arange(len(self))[idx]
        else:
            pos = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
            if pos.ndim == 0:
                return self[pos.reshape(1)][0]
        out = np.empty((len(pos), self.size, self.size), dtype=np.uint8)
        shard = self.shard[pos]
        for k in np.unique(shard):
            take = np.flatnonzero(shard == k)
            arr = np.load(self.folder / self.names[k], mmap_mode="r", allow_pickle=False)
            rows = self.row[pos[take]]
            order = np.argsort(rows, kind="stable")  # rows in file order: sequential reads
            out[take[order]] = arr[rows[order]]
            del arr  # unmapped: the shard's pages leave this process
        return torch.from_numpy(out)


__all__ = ["BLOCK", "ImageStore", "ShardImages"]
