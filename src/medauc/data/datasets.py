"""Decoded, resized images held in memory as uint8, cached on disk so that epochs never decode.

``load_images`` decodes each file once (:func:`medauc.data.images.load_image`), resizes it to
the classifier's square input size and quantises it to 8 bits; the result is kept as one
``uint8`` tensor ``(N, S, S)``. The run folder's cache (:mod:`medauc.data.image_store`,
``cache/images-<S>/``) keeps each image once per size, keyed by its path with its content hash
(manifest ``sha256``) or its size and mtime, so an edited image or a changed size is decoded
again instead of read stale, and an image two stages ask for is stored once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from medauc.progress import progress_bar

from medauc.data.image_store import ImageStore, ShardImages
from medauc.data.images import load_image, resize, to_uint8
from medauc.errors import DataError


def resize_uint8(images: np.ndarray | Sequence[np.ndarray], size: int) -> torch.Tensor:
    """float images (N, H, W) (or a list of (H, W)) in [0, 1] -> uint8 tensor (N, size, size).

    Bilinear, antialiased resize (``medauc.data.images.resize``), then rounded to 8 bits: the
    same path for the training cache and for :func:`medauc.classify.models.prepare_batch`.
    """
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = to_uint8(resize(img, size))
    return torch.from_numpy(out)


def _file_key(path: Path, sha256: str | None) -> str:
    if sha256:
        return f"{path}|{sha256}"
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"image {path} cannot be read ({exc.strerror}); fix the manifest's path column or re-run `medauc prepare`") from exc
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _decode(path: Path, size: int) -> np.ndarray:
    return to_uint8(resize(load_image(path), size))


def load_images(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: Sequence[str] | None = None,
    workers: int = 1,
    desc: str = "decode images",
    lazy: bool = False,
) -> torch.Tensor | ShardImages:
    """Image files -> uint8 tensor (N, size, size), from the disk cache when it is there.

    ``cache_dir=None`` decodes without caching. ``lazy`` (with a cache): a
    :class:`~medauc.data.image_store.ShardImages` that reads the rows asked for from the cache, for a
    set that is only predicted a chunk at a time (its memory does not grow with the set). ``workers`` threads decode in parallel
    (PIL releases the GIL while decoding). No paths: an empty tensor, and no cache file.
    Stages that compute on float images read them through :func:`uint8_to_float`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return torch.empty((0, size, size), dtype=torch.uint8)

    def decode(positions: list[int]) -> np.ndarray:
        out = np.empty((len(positions), size, size), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            images = pool.map(lambda i: _decode(paths[i], size), positions)
            for k, img in enumerate(progress_bar(images, total=len(positions), desc=desc, leave=False)):
                out[k] = img
        return out

    if cache_dir is None:
        return torch.from_numpy(decode(list(range(len(paths)))))
    keys = [_file_key(p, sha256[i] if sha256 is not None else None) for i, p in enumerate(paths)]
    got = ImageStore(cache_dir, size).get(keys, decode, lazy=lazy)
    return got if lazy else torch.from_numpy(got)


def uint8_to_float(images: torch.Tensor) -> np.ndarray:
    """uint8 tensor (N, S, S) -> float32 array (N, S, S) in [0, 1] (value / 255): the 8-bit images
    as the classifier sees them, for stages that compute on floats (the denoiser, its checks)."""
    return images.numpy().astype(np.float32) / np.float32(255.0)


@dataclass
class ImageSet:
    """One split: images uint8 (N, S, S) (in memory, or read from the cache a chunk at a time), labels
    int64 (N,) indexing ``classes``."""

    image_ids: list[str]
    labels: torch.Tensor
    images: torch.Tensor | ShardImages
    classes: list[str]
    frame: pd.DataFrame  # the manifest rows, in the same order

    def __len__(self) -> int:
        return len(self.image_ids)


def resolve_paths(df: pd.DataFrame, base: str | os.PathLike[str] | None) -> list[Path]:
    """The manifest's ``path`` column as paths; relative ones are taken from ``base`` (the manifest's folder)."""
    out = []
    for p in df["path"].astype(str):
        path = Path(p)
        if not path.is_absolute() and base is not None and not path.exists():
            path = Path(base) / path
        out.append(path)
    return out


def image_set(
    df: pd.DataFrame,
    classes: list[str],
    size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    workers: int = 1,
    desc: str = "decode images",
    lazy: bool = False,
) -> ImageSet:
    """Manifest rows -> an :class:`ImageSet` at ``size`` px (labels outside ``classes`` are a DataError).

    ``lazy``: the images stay in the cache and are read a request at a time (see :func:`load_images`)."""
    unknown = sorted(set(df["label"].astype(str)) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's classes {classes}; fix the manifest or data.classes")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in df["label"].astype(str)], dtype=torch.int64)
    sha = None
    if "sha256" in df.columns:
        col = df["sha256"].fillna("").astype(str)
        sha = list(col) if (col.str.len() > 0).all() else None
    images = load_images(resolve_paths(df, base), size, cache_dir, sha, workers, desc, lazy=lazy)
    return ImageSet(list(df["image_id"].astype(str)), labels, images, list(classes), df.reset_index(drop=True))
