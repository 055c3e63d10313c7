"""Generation: noisy copies of healthy training images, restored by the denoiser, become new images.

Every generated row keeps its provenance: ``source_image_id`` (the healthy training image it was
made from), ``sigma`` (the noise level) and ``augmentation`` ("restoration"). Only training images
are ever used as sources, and generated rows are always ``split == "train"``, so nothing generated
can reach validation or test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from medauc import allocator
from medauc.progress import progress_bar

from medauc.augment.denoiser import RestoreFn
from medauc.augment.quality import add_noise
from medauc.config import AugmentConfig
from medauc.data.datasets import load_images
from medauc.errors import DataError

PROVENANCE_COLUMNS = ["source_image_id", "sigma", "augmentation"]


def n_to_generate(n_negative: int, n_other: int, acfg: AugmentConfig) -> int:
    """How many images to generate so the negative (healthy) training class meets ``acfg.target``.

    - ``multiple``: healthy becomes ``multiple`` x its original count (study: 6 -> 1,400 to 8,400);
    - ``count``: healthy becomes ``count`` images in all (originals included);
    - ``share``: healthy becomes ``share`` of the whole training set.
    A target below the current count gives 0 (medauc never drops originals).
    """
    if n_negative <= 0:
        raise DataError("the manifest has no healthy (negative-class) training images to augment")
    if acfg.target == "multiple":
        if acfg.multiple < 1:
            raise DataError(f"augment.multiple={acfg.multiple}: must be >= 1 (1 = no augmentation; the study used 6)")
        total = round(acfg.multiple * n_negative)
    elif acfg.target == "count":
        if acfg.count <= 0:
            raise DataError(f"augment.count={acfg.count}: give the healthy training count to reach, e.g. augment.count=8400")
        total = acfg.count
    elif acfg.target == "share":
        if not 0.0 < acfg.share < 1.0:
            raise DataError(f"augment.share={acfg.share}: give the healthy share of the training set, 0 < share < 1, e.g. 0.7")
        total = math.ceil(acfg.share * n_other / (1.0 - acfg.share))
    else:
        raise DataError(f"augment.target={acfg.target!r}; use 'multiple', 'count' or 'share'")
    return max(0, int(total) - n_negative)


def generation_plan(n_sources: int, sigmas: Sequence[float], n_generated: int) -> list[tuple[int, float, int]]:
    """Which (source index, sigma, repeat) to generate, ``n_generated`` items in all.

    Sources are used evenly (each gets ``n_generated // n_sources`` or one more) and, per round,
    every source gets a different sigma, so the sigmas are used evenly too. With 6x and five sigmas
    this is exactly the study's: each source once at each sigma. ``repeat`` > 0 only when more images
    than source-sigma pairs are asked for (fresh noise on the same pair).
    """
    if not sigmas:
        raise DataError("augment.sigmas is empty; give noise levels such as [0.1, 0.2, 0.3, 0.4, 0.5]")
    n_sig = len(sigmas)
    pairs = n_sources * n_sig
    plan = []
    for k in range(n_generated):
        rep, r = divmod(k, pairs)
        rnd, src = divmod(r, n_sources)
        plan.append((src, float(sigmas[(rnd + src) % n_sig]), rep))
    return plan


def generate_blocks(
    sources: np.ndarray,
    plan: Sequence[tuple[int, float, int]],
    restore_fn: RestoreFn,
    seed: int,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "generate",
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Noise and restore in blocks: yields ``(plan slice, restored (b, S, S), noisy (b, S, S))``.

    ``sources`` (N, S, S) in [0, 1] (float, or uint8 read as value / 255; or a cache view,
    :class:`~medauc.data.image_store.ShardImages`, read a block at a time). The noise comes from one
    generator seeded with ``seed`` and consumed in plan order, so the same seed and plan give the
    same images whatever the caller keeps of them: memory stays at one block, not the whole plan.
    ``restore_fn`` gets each noisy copy's own sigma from the plan.
    """
    gen = torch.Generator().manual_seed(seed)
    m = len(plan)
    idx = np.array([p[0] for p in plan], dtype=np.int64)
    sig = np.array([p[1] for p in plan], dtype=np.float32)
    for start in progress_bar(range(0, m, batch_size), desc=desc, unit="batch", disable=not progress or m == 0):
        sl = slice(start, min(start + batch_size, m))
        src = sources[idx[sl]]
        if isinstance(src, torch.Tensor):  # uint8 tensors, as load_images and a ShardImages view return them
            src = src.numpy()
        if src.dtype == np.uint8:
            src = src.astype(np.float32) / np.float32(255.0)
        noisy = add_noise(src, sig[sl], gen)
        yield sl, restore_fn(noisy, sig[sl]), noisy


def generate(
    sources: np.ndarray, plan: Sequence[tuple[int, float, int]], restore_fn: RestoreFn, seed: int, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """All of :func:`generate_blocks` at once: (restored (M, S, S), noisy (M, S, S)), M = len(plan).

    For small sets and tests; the stages stream the blocks instead. ``options``: ``batch_size``,
    ``progress``, ``desc`` of :func:`generate_blocks`.
    """
    m = len(plan)
    restored = np.empty((m, *sources.shape[1:]), dtype=np.float32)
    noisy_all = np.empty_like(restored)
    for sl, rest, noisy in generate_blocks(sources, plan, restore_fn, seed, **options):
        restored[sl] = rest
        noisy_all[sl] = noisy
    return restored, noisy_all


def write_images(
    images: np.ndarray, rows: list[dict[str, Any]], out_dir: Path, progress: bool = True, desc: str = "write"
) -> pd.DataFrame:
    """Save ``images`` (M, S, S) as PNGs named ``<image_id>.png`` in ``out_dir``; fill the manifest columns.

    ``rows`` (one dict per image, with at least ``image_id``) get ``path`` (absolute), ``sha256``,
    ``phash``, ``width``, ``height`` and ``mode``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for img, row in progress_bar(list(zip(images, rows)), desc=desc, unit="img", disable=not progress or not rows):
        _write_one(img, row, out_dir)
    return pd.DataFrame(rows)


def _write_one(img: np.ndarray, row: dict[str, Any], out_dir: Path) -> None:
    from medauc.data.audit import perceptual_hash, pixel_sha256
    from medauc.data.images import load_image, save_png

    path = save_png(out_dir / f"{row['image_id']}.png", img)
    row.update(
        path=str(path.resolve()),
        sha256=pixel_sha256(load_image(path)),  # the manifest's hash: of the decoded pixels
        phash=perceptual_hash(img),
        width=int(img.shape[1]),
        height=int(img.shape[0]),
        mode="L",
    )


def write_stream(
    blocks: Iterable[tuple[slice, np.ndarray]], rows: list[dict[str, Any]], out_dir: Path,
    on_block: Callable[[slice, np.ndarray], None] | None = None,
) -> pd.DataFrame:
    """Write each block of images (``(slice into rows, images (b, S, S))``) as it comes, then forget it.

    ``on_block(slice, images)`` sees every block first (the checks accumulate their per-image
    numbers there). Memory: one block. Returns the filled ``rows`` as a frame, as :func:`write_images`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for sl, images in blocks:
        if on_block is not None:
            on_block(sl, images)
        for img, row in zip(images, rows[sl]):
            _write_one(img, row, out_dir)
        allocator.release_every()  # generation, the restored test set and the classic augmentation all stream here
    return pd.DataFrame(rows)


def sigma_tag(sigma: float) -> str:
    """0.25 -> "s0p25" (file-name safe)."""
    return "s" + f"{sigma:g}".replace(".", "p").replace("-", "m")


def derived_rows(
    sources: pd.DataFrame, plan: Sequence[tuple[int, float, int]], augmentation: str, split: str = "train"
) -> list[dict[str, Any]]:
    """Manifest rows for images derived from ``sources`` rows per ``plan``: provenance filled, file columns not yet."""
    rows = []
    for src, sigma, rep in plan:
        s = sources.iloc[src]
        tag = sigma_tag(sigma) if not math.isnan(sigma) else "x"
        rows.append(
            {
                "image_id": f"{s['image_id']}__{augmentation[:4]}_{tag}_r{rep}",
                "label": s["label"],
                "split": split,
                "group": s["group"] if "group" in s.index else s["image_id"],
                **({"subject": s["subject"]} if "subject" in s.index else {}),  # a derived image is its source's patient
                "source_image_id": s["image_id"],
                "sigma": sigma,
                "augmentation": augmentation,
            }
        )
    return rows


def append_rows(manifest: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The manifest with provenance columns (empty for originals) plus ``new`` rows, columns in manifest order."""
    base = manifest.copy()
    for col in PROVENANCE_COLUMNS:
        if col not in base.columns:
            base[col] = np.nan if col == "sigma" else ""
    cols = list(base.columns)
    new = new.reindex(columns=cols)
    out = pd.concat([base, new], ignore_index=True) if len(new) else base
    if out["image_id"].duplicated().any():
        dup = out.loc[out["image_id"].duplicated(), "image_id"].iloc[0]
        raise DataError(f"image_id {dup!r} appears twice in the augmented manifest; the manifest already holds generated rows?")
    return out


def check_no_leak(manifest: pd.DataFrame) -> None:
    """Raise DataError if a generated row is outside ``train`` or its source is not a training image."""
    if "source_image_id" not in manifest.columns:
        return
    gen = manifest[manifest["source_image_id"].fillna("").astype(str) != ""]
    if gen.empty:
        return
    if (gen["split"] != "train").any():
        bad = gen.loc[gen["split"] != "train", "image_id"].iloc[0]
        raise DataError(f"generated image {bad!r} is in split {gen.loc[gen['image_id'] == bad, 'split'].iloc[0]!r}; only train may hold generated images")
    split_of = dict(zip(manifest["image_id"], manifest["split"]))
    for sid in gen["source_image_id"].unique():
        if split_of.get(sid) != "train":
            raise DataError(f"generated images come from {sid!r}, which is in split {split_of.get(sid)!r}, not train")


def originals(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of real images (no ``source_image_id``), in manifest order."""
    if "source_image_id" not in manifest.columns:
        return manifest
    return manifest[manifest["source_image_id"].fillna("").astype(str) == ""]


def healthy_train(manifest: pd.DataFrame, negative_class: str) -> pd.DataFrame:
    """The original (not generated) negative-class training rows, in manifest order."""
    orig = originals(manifest)
    rows = orig[(orig["split"] == "train") & (orig["label"] == negative_class)]
    return rows.reset_index(drop=True)


def manifest_plan(
    manifest: pd.DataFrame, acfg: AugmentConfig, negative_class: str
) -> tuple[pd.DataFrame, list[tuple[int, float, int]]]:
    """(the healthy training rows that are the sources, the generation plan) for ``manifest``."""
    src_rows = healthy_train(manifest, negative_class)
    n_other = int(((manifest["split"] == "train") & (manifest["label"] != negative_class)).sum())
    return src_rows, generation_plan(len(src_rows), acfg.sigmas, n_to_generate(len(src_rows), n_other, acfg))


def generate_for_manifest(
    manifest: pd.DataFrame,
    acfg: AugmentConfig,
    negative_class: str,
    restore_fn: RestoreFn,
    out_dir: Path,
    seed: int,
    sources_images: np.ndarray | None = None,
    progress: bool = True,
    cache_dir: Path | None = None,
    on_block: Callable[[slice, np.ndarray], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, float, int]]]:
    """Generate the restored healthy images for ``manifest`` and write them to ``out_dir``, a block at a time.

    ``on_block(plan slice, restored images (b, S, S))`` sees each block before it is written and
    dropped (the checks). Returns (augmented manifest, the healthy train rows used as sources, in
    the order of ``sources_images``, the plan: (source index, sigma, repeat) per generated row).
    """
    src_rows, plan = manifest_plan(manifest, acfg, negative_class)
    if sources_images is None:
        sources_images = load_images(list(src_rows["path"]), acfg.image_size, cache_dir, desc="load healthy").numpy()
    rows = derived_rows(src_rows, plan, "restoration")
    blocks = ((sl, rest) for sl, rest, _ in generate_blocks(sources_images, plan, restore_fn, seed, progress=progress))
    new = write_stream(blocks, rows, out_dir, on_block)
    augmented = append_rows(manifest, new)
    check_no_leak(augmented)
    return augmented, src_rows, plan


def restore_test_set(
    manifest: pd.DataFrame,
    acfg: AugmentConfig,
    negative_class: str,
    restore_fn: RestoreFn,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Restore every positive (tumour) TEST image once at each sigma, for the shortcut check (e).

    Returns manifest-like rows (``split == "test"``) with provenance; images in ``out_dir``,
    written a block at a time. Nothing here is ever trained on.
    """
    orig = originals(manifest)
    rows = orig[(orig["split"] == "test") & (orig["label"] != negative_class)].reset_index(drop=True)
    # Read from the cache a block at a time (lazy), not held whole: at the study's size these are thousands of images.
    images = load_images(list(rows["path"]), acfg.image_size, cache_dir, desc="load tumour test", lazy=cache_dir is not None)
    plan = [(i, float(s), 0) for i in range(len(rows)) for s in acfg.sigmas]
    # split stays "test": these are test images (never trained on), kept in their own file.
    new = derived_rows(rows, plan, "restoration", split="test")
    blocks = ((sl, rest) for sl, rest, _ in generate_blocks(images, plan, restore_fn, seed, progress=progress,
                                                            desc="restore tumour test"))
    return write_stream(blocks, new, out_dir)
