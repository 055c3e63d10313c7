"""What the explain stage reads from the run folder: the trained models to explain and the test sample.

Models: the first trained seed of ``train.seeds`` of each model in ``model.names``
(``train/<model>/<seed>/``), with a factory for its random-weight twin; other trained folders are
listed as ignored. Sample: the test split of ``manifest.csv``, stratified by class, at most
``explain.max_images`` images, with their lesion masks (``mask_path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medauc.config import Config
from medauc.errors import DataError, ModelError
from medauc.explain.passes import ExplainModel
from medauc.progress import progress_bar


def stratified_sample(labels: np.ndarray, max_images: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_images`` items with class shares as in ``labels``; sorted."""
    labels = np.asarray(labels)
    n = labels.size
    if max_images <= 0 or max_images >= n:
        return np.arange(n)
    values, counts = np.unique(labels, return_counts=True)
    quota = counts * max_images / n
    take = np.floor(quota).astype(int)
    # Largest remainders get the leftover places, so the total is exactly max_images.
    for i in np.argsort(-(quota - take), kind="stable")[: max_images - take.sum()]:
        take[i] += 1
    chosen = [rng.choice(np.flatnonzero(labels == v), size=k, replace=False) for v, k in zip(values, take)]
    return np.sort(np.concatenate(chosen))


def model_dirs(cfg: Config, run_dir: Path) -> tuple[list[tuple[str, Path]], list[dict[str, Any]]]:
    """``(model name, train/<model>/<first trained seed of train.seeds>/)`` for every model in
    ``model.names``, in config order, and ``{model, seed, reason}`` for every other trained folder
    (an old model or seed left in the run folder is not explained)."""
    train = run_dir / "train"
    if not train.is_dir():
        raise ModelError(f"{train} does not exist; run `medauc train` (or `medauc run`) before `medauc explain`")
    # training writes a timm name such as "hf-hub:org/x" to the folder "hf-hub_org_x"
    folders = {name.replace("/", "_").replace(":", "_"): name for name in cfg.model.names}
    on_disk = {
        d.name: sorted(int(s.name) for s in d.iterdir() if s.is_dir() and s.name.lstrip("-").isdigit())
        for d in sorted(train.iterdir()) if d.is_dir()
    }
    out, ignored = [], []
    for folder, name in folders.items():
        trained = [s for s in on_disk.get(folder, []) if s in cfg.train.seeds]
        if not trained:
            raise ModelError(
                f"model.names includes {name!r} but {train / folder} has no trained seed of train.seeds={list(cfg.train.seeds)}; "
                "run `medauc train` (or `medauc run`) first, or remove it from model.names"
            )
        out.append((folder, train / folder / str(trained[0])))
    for folder, seeds in on_disk.items():
        for seed in seeds:
            if folder not in folders or seed not in cfg.train.seeds:
                ignored.append({"model": folder, "seed": seed,
                                "reason": "model not in model.names" if folder not in folders else "seed not in train.seeds"})
    return out, ignored


def load_sample(
    cfg: Config, run_dir: Path, classes: list[str]
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray | None], list[str], list[str] | None]:
    """The test sample: images (H, W) float32 in [0, 1], labels (N,) indices into ``classes``,
    masks (H, W) bool or None, image ids, and each image's patient (None when the manifest has no
    ``subject`` column); sorted by image id, then drawn by :func:`stratified_sample`."""
    from medauc.data.images import load_image
    from medauc.data.manifest import IMAGE_COLUMNS, read_manifest

    manifest = run_dir / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest} does not exist; run `medauc prepare` (or `medauc run`) first")
    # As every stage reads it: text columns as text, paths relative to the manifest's folder (never the working
    # directory's), an old folder's absolute paths mapped into this one.
    df = read_manifest(manifest, required=IMAGE_COLUMNS)
    test = df[df["split"] == "test"].sort_values("image_id").reset_index(drop=True)
    if test.empty:
        raise DataError(f"{manifest} has no rows with split == 'test'; nothing to explain")
    unknown = sorted(set(test["label"]) - set(classes))
    if unknown:
        raise DataError(f"{manifest}: test labels {unknown} are not among the model's classes {classes}")
    labels_all = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    idx = stratified_sample(labels_all, cfg.explain.max_images, np.random.default_rng([cfg.seed, 0]))
    images, masks, ids = [], [], []
    has_masks = "mask_path" in test.columns
    for i in progress_bar(idx, desc="explain: loading test images", unit="img", leave=False):
        row = test.iloc[int(i)]
        images.append(np.asarray(load_image(row["path"]), dtype=np.float32))
        mask = None
        if has_masks and str(row["mask_path"]).strip():
            mpath = Path(str(row["mask_path"]))
            if not mpath.is_file():
                raise DataError(f"{manifest}: mask {mpath} of image {row['image_id']} does not exist; rerun `medauc prepare`")
            mask = np.asarray(load_image(mpath)) > 0.5
        masks.append(mask)
        ids.append(str(row["image_id"]))
    subjects = [str(test.iloc[int(i)]["subject"]) for i in idx] if "subject" in test.columns else None
    return images, labels_all[idx], masks, ids, subjects


def load_model(name: str, model_dir: Path, cfg: Config, device: torch.device) -> ExplainModel:
    """The trained model in ``model_dir`` on ``device`` (eval mode), with its random twin's factory."""
    from medauc.classify.models import create_model, load_trained, prepare_batch

    model, meta = load_trained(model_dir)
    model = model.to(device).eval()
    size = int(meta["image_size"])
    in_chans = int(meta["in_chans"])

    def make_twin() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            twin = create_model(meta["model_name"], num_classes=len(meta["classes"]), in_chans=in_chans, image_size=size, pretrained=False)
        return twin.to(device).eval()

    return ExplainModel(
        name=name,
        model=model,
        classes=list(meta["classes"]),
        prepare=lambda images: prepare_batch(images, meta),
        input_shape=(in_chans, size, size),
        make_twin=make_twin,
        info={"seed": meta.get("seed", int(model_dir.name)), "dir": str(model_dir.relative_to(model_dir.parents[2]))},
    )
