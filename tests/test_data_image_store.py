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


def test_missing_images_are_decoded_and_stored_a_block_at_a_time(tmp_path, files, monkeypatch):
    import medauc.data.image_store as store

    monkeypatch.setattr(store, "BLOCK", 4)
    whole = load_images(files, 16, None)  # no cache: decoded at once
    seen = _counting(monkeypatch)
    cache = tmp_path / "cache"
    assert torch.equal(load_images(files, 16, cache), whole)
    shards = sorted(np.load(p).shape[0] for p in (cache / "images-16").glob("*.npy"))
    assert shards == [2, 4] and len(seen) == 6  # six images in blocks of four, each decoded once
    assert torch.equal(load_images(files[::-1], 16, cache), whole.flip(0)) and len(seen) == 6


def test_a_lazy_set_reads_the_rows_asked_for_and_equals_the_images(tmp_path, files, monkeypatch):
    import pickle

    import medauc.data.image_store as store

    monkeypatch.setattr(store, "BLOCK", 4)
    cache = tmp_path / "cache"
    load_images(files[:3], 16, cache)  # a first shard
    order = [files[5], files[0], files[2], files[4], files[0], files[1]]  # spans every shard, one file twice
    whole = load_images(order, 16, cache)
    lazy = load_images(order, 16, cache, lazy=True)
    assert isinstance(lazy, store.ShardImages) and len(lazy) == 6 and lazy.shape == (6, 16, 16)
    for idx in (torch.tensor([5, 0, 3]), np.array([1, 4]), slice(1, 5), slice(None, None, -1), 2, torch.arange(6)):
        got = lazy[idx]
        ref = whole.numpy()[idx.numpy() if isinstance(idx, torch.Tensor) else idx]
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), ref), idx
    # what a training process receives: shard names and row numbers, not the images
    assert len(pickle.dumps(lazy)) < whole.numel() // 2


def test_predictions_from_a_lazy_set_equal_those_from_memory(tmp_path, files):
    from medauc.classify.models import InputTransform
    from medauc.classify.predict import predict_logits

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    meta = {"mean": [0.5] * 3, "std": [0.25] * 3, "in_chans": 3}
    cache = tmp_path / "cache"
    eager = predict_logits(net, load_images(files, 16, cache), InputTransform(meta), batch_size=4)
    lazy = predict_logits(net, load_images(files, 16, cache, lazy=True), InputTransform(meta), batch_size=4)
    assert torch.equal(eager, lazy)
