"""Tiny generated data sets for the augment tests (imported by the other test_augment_* files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from medauc.config import load_config, replace

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def synthetic_images(n: int, size: int, rng: np.random.Generator, lesion: int = 0) -> np.ndarray:
    """(n, size, size) float32 in [0, 1]: a textured ellipse ("head"); lesion > 0 adds a bright disc at a class-specific place."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx = 0.5 + rng.normal(0, 0.03, 2)
        a, b = rng.uniform(0.32, 0.42, 2)
        head = (((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2) < 1
        coarse = rng.random((8, 8))
        tex = np.kron(coarse, np.ones((size // 8, size // 8)))
        img = head * (0.35 + 0.3 * tex) + rng.normal(0, 0.02, (size, size))
        if lesion:
            ly, lx = [(0.4, 0.4), (0.3, 0.6), (0.65, 0.5)][lesion - 1]
            img += 0.4 * ((((yy - ly) ** 2 + (xx - lx) ** 2) < 0.01))
        out[i] = np.clip(img, 0, 1)
    return out


def make_run(
    run_dir: Path,
    per_class: dict[str, tuple[int, int, int]] | None = None,
    size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """Write tiny PNGs and ``run_dir/manifest.csv``; per_class: label -> (n_train, n_val, n_test)."""
    from medauc.data.images import save_png
    from medauc.data.manifest import write_manifest

    per_class = per_class or {"healthy": (24, 6, 6), "glioma": (6, 2, 4), "meningioma": (6, 2, 4), "pituitary": (6, 2, 4)}
    rng = np.random.default_rng(seed)
    rows = []
    group = 0
    for ci, label in enumerate(CLASSES):
        counts = per_class.get(label, (0, 0, 0))
        imgs = synthetic_images(sum(counts), size, rng, lesion=ci)
        splits = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
        for k, (img, split) in enumerate(zip(imgs, splits)):
            image_id = f"{label}/img{k:03d}"
            path = save_png(run_dir / "images" / label / f"img{k:03d}.png", img).resolve()
            rows.append(
                {"image_id": image_id, "path": str(path), "label": label, "split": split,
                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "phash": "0" * 16,
                 "width": size, "height": size, "mode": "L", "group": group, "mask_path": ""}
            )
            group += 1
    df = pd.DataFrame(rows)
    write_manifest(run_dir / "manifest.csv", df)
    return df


def tiny_config(**changes):
    """The smoke config, smaller still: a denoiser that trains in about a second."""
    cfg = load_config("smoke")
    base = {"augment.image_size": 32, "augment.channels": [4, 8], "augment.epochs": 1, "augment.batch_size": 16,
            "evaluate.n_bootstrap": 50, "data.workers": 1}
    base.update(changes)
    return replace(cfg, **base)


def test_fixture_images_differ_by_class():
    rng = np.random.default_rng(0)
    h = synthetic_images(4, 32, rng, 0)
    t = synthetic_images(4, 32, rng, 1)
    assert h.shape == (4, 32, 32) and h.dtype == np.float32
    assert t.mean() > h.mean()
