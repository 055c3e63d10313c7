"""The image cache: each image stored once per size, a damaged shard never read as images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medauc.data.datasets as ds
from medauc.data.datasets import load_images
from medauc.data.images import save_png


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    return [save_png(tmp_path / "img" / f"{i}.png", rng.random((20, 20))) for i in range(6)]


def _counting(monkeypatch) -> list[Path]:
    seen: list[Path] = []
    real = ds._decode

    def decode(path, size):
        seen.append(Path(path))
        return real(path, size)

    monkeypatch.setattr(ds, "_decode", decode)
    return seen


def test_overlapping_requests_decode_and_store_each_image_once(tmp_path, files, monkeypatch):
    seen = _counting(monkeypatch)
    cache = tmp_path / "cache"
    first = load_images(files[:4], 16, cache)  # e.g. the training split
    subset = load_images([files[3], files[1]], 16, cache)  # e.g. augment's healthy subset of it
    more = load_images(files, 16, cache)  # all six: only the two new ones are decoded
    twice = load_images([files[5], files[5], files[0]], 16, cache)  # a duplicate strategy lists a file twice
    assert sorted(seen) == sorted(files)  # every image decoded exactly once
    assert torch.equal(subset, first[[3, 1]]) and torch.equal(more[:4], first) and torch.equal(twice, more[[5, 5, 0]])
    stored = sum(np.load(p, mmap_mode="r").shape[0] for p in (cache / "images-16").glob("*.npy"))
    assert stored == 6  # on disk: one copy of each image, not one per request
    assert torch.equal(more, load_images(files, 16, None))  # the same pixels as decoding without a cache
    load_images(files[:2], 12, cache)  # another size is another store
    assert len(list((cache / "images-12").glob("*.npy"))) == 1


def test_a_zeroed_or_truncated_shard_is_decoded_again_not_read(tmp_path, files, monkeypatch, caplog):
    cache = tmp_path / "cache"
    good = load_images(files, 16, cache)
    shard = next((cache / "images-16").glob("*.npy"))
    raw = shard.read_bytes()
    shard.write_bytes(raw[:128] + bytes(len(raw) - 128))  # header kept, pixels zeroed
    ds_images = load_images(files, 16, cache)
    assert torch.equal(ds_images, good) and "changed since written" in caplog.text
    shard = next((cache / "images-16").glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:200])  # truncated
    assert torch.equal(load_images(files, 16, cache), good)
