"""Decoded, resized images held in memory as uint8, cached on disk so that epochs never decode.

``load_images`` decodes each file once (:func:`medauc.data.images.load_image`), resizes it to
the classifier's square input size and quantises it to 8 bits; the result is kept as one
``uint8`` tensor ``(N, S, S)`` and saved as ``cache/images-<S>-<hash>.npy`` in the run folder.
The hash covers every path, its content hash (manifest ``sha256``) or its size and mtime, and
``S``, so an edited image or a changed size makes a new cache file instead of a stale read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from medauc.progress import progress_bar

from medauc.data.images import load_image, resize, to_uint8
from medauc.errors import DataError
from medauc.fileio import atomic_path, file_sha256, write_text

log = logging.getLogger(__name__)


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


def cache_key(paths: Sequence[Path], size: int, sha256: Sequence[str] | None = None) -> str:
    """16-hex hash of the image files (content hash or size+mtime) and the target size."""
    h = hashlib.sha256(f"size={size}\n".encode())
    for i, p in enumerate(paths):
        h.update(_file_key(Path(p), sha256[i] if sha256 is not None else None).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _decode(path: Path, size: int) -> np.ndarray:
    return to_uint8(resize(load_image(path), size))


def load_images(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    sha256: Sequence[str] | None = None,
    workers: int = 1,
    desc: str = "decode images",
) -> torch.Tensor:
    """Image files -> uint8 tensor (N, size, size), from the disk cache when it is there.

    ``cache_dir=None`` decodes without caching. ``workers`` threads decode in parallel
    (PIL releases the GIL while decoding). No paths: an empty tensor, and no cache file.
    Stages that compute on float images read them through :func:`uint8_to_float`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return torch.empty((0, size, size), dtype=torch.uint8)
    if cache_dir is not None:
        key = cache_key(paths, size, sha256)
        cache_file = Path(cache_dir) / f"images-{size}-{key}.npy"
        arr = _read_cache(cache_file, (len(paths), size, size))
        if arr is not None:
            return torch.from_numpy(arr)
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, img in enumerate(progress_bar(pool.map(lambda p: _decode(p, size), paths), total=len(paths), desc=desc, leave=False)):
            out[i] = img
    if cache_dir is not None:
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as fh:
            np.save(fh, out, allow_pickle=False)
        write_text(_sha_file(cache_file), file_sha256(cache_file) + "\n")  # after the cache: it vouches for a whole file
    return torch.from_numpy(out)


def _sha_file(cache_file: Path) -> Path:
    return cache_file.with_name(cache_file.name + ".sha256")


def _read_cache(cache_file: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The cached images, or None (decode again) when the file is absent, or is not the file that was written:
    its sha256 differs from the one kept beside it (zeroed, truncated, edited), or none was kept."""
    if not cache_file.is_file():
        return None
    sha_file = _sha_file(cache_file)
    recorded = sha_file.read_text().strip() if sha_file.is_file() else ""
    if recorded != file_sha256(cache_file):
        log.warning("%s is not the cache that was written (%s); decoding the images again",
                    cache_file, "its sha256 differs" if recorded else f"no {sha_file.name} beside it")
        return None
    arr = np.load(cache_file, allow_pickle=False)
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def uint8_to_float(images: torch.Tensor) -> np.ndarray:
    """uint8 tensor (N, S, S) -> float32 array (N, S, S) in [0, 1] (value / 255): the 8-bit images
    as the classifier sees them, for stages that compute on floats (the denoiser, its checks)."""
    return images.numpy().astype(np.float32) / np.float32(255.0)


@dataclass
class ImageSet:
    """One split in memory: images uint8 (N, S, S), labels int64 (N,) indexing ``classes``."""

    image_ids: list[str]
    labels: torch.Tensor
    images: torch.Tensor
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
) -> ImageSet:
    """Manifest rows -> an :class:`ImageSet` at ``size`` px (labels outside ``classes`` are a DataError)."""
    unknown = sorted(set(df["label"].astype(str)) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's classes {classes}; fix the manifest or data.classes")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in df["label"].astype(str)], dtype=torch.int64)
    sha = None
    if "sha256" in df.columns:
        col = df["sha256"].fillna("").astype(str)
        sha = list(col) if (col.str.len() > 0).all() else None
    images = load_images(resolve_paths(df, base), size, cache_dir, sha, workers, desc)
    return ImageSet(list(df["image_id"].astype(str)), labels, images, list(classes), df.reset_index(drop=True))
