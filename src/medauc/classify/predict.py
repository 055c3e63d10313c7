"""Predictions from a trained model: arrays for other stages, CSV files for evaluation."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medauc import allocator
from medauc.classify import distributed as ddp
from medauc.classify.models import InputTransform, load_trained, prepare_batch
from medauc.data.datasets import image_set
from medauc.data.manifest import IMAGE_COLUMNS, known_subjects, read_manifest
from medauc.errors import DataError
from medauc.fileio import write_csv


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, transform: InputTransform, batch_size: int, d: ddp.Dist = ddp.Dist(),
    autocast: Any = nullcontext, desc: str | None = None,
) -> torch.Tensor:
    """uint8 images (N, S, S) -> float32 logits (N, C) on CPU, sharded over ranks and gathered.

    With ``desc``, the main rank shows progress (off a terminal, a log line at least every 30 s: at the
    study's size one set is tens of thousands of images and minutes of work on a CPU)."""
    from medauc.progress import progress_bar

    was_training = model.training
    model.eval()
    idx = ddp.shard(len(images), d)
    outs = []
    chunks = idx.split(batch_size)
    for chunk in progress_bar(chunks, desc=desc, unit="batch", disable=desc is None or not d.is_main or not chunks):
        with autocast():
            outs.append(model(transform(images[chunk])).float())
        allocator.release_every()
    n_classes = outs[0].shape[1] if outs else 0
    local = torch.cat(outs) if outs else torch.empty((0, n_classes))
    model.train(was_training)
    return ddp.gather_rows(local.cpu() if not d.enabled else local, len(images), d).cpu()


def predictions_frame(
    image_ids: list[str], labels: list[str], logits: torch.Tensor, classes: list[str], subjects: list[str] | None = None,
) -> pd.DataFrame:
    """The predictions contract: ``image_id, label[, subject], prob_<class>...`` (softmax in float64).

    ``subjects`` (n,) patient ids from the manifest ("" = unknown); the column is left out when None.
    """
    prob = torch.softmax(logits.double(), dim=1).numpy()
    df = pd.DataFrame({"image_id": image_ids, "label": labels})
    if subjects is not None:
        df["subject"] = subjects
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = prob[:, j]
    return df


@torch.no_grad()
def predict_images(model: nn.Module, meta: dict[str, Any], images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float images (N, H, W) in [0, 1] -> class probabilities (N, C), float64, rows summing to 1.

    ``model`` and ``meta`` as returned by :func:`medauc.classify.models.load_trained`; images are
    resized and normalised exactly as in training.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = prepare_batch(images[start : start + batch_size], meta).to(device)
        out.append(torch.softmax(model(x).double(), dim=1).cpu())
    model.train(was_training)
    if not out:
        return np.empty((0, len(meta["classes"])))
    return torch.cat(out).numpy()


def predict_manifest(
    model_dir: str | os.PathLike[str],
    df: pd.DataFrame | str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Predict every row of a manifest (a frame or a CSV path; columns ``image_id, path, label``)
    with the model in ``model_dir``; write ``image_id, label, prob_<class>...`` to ``out_csv``
    (with ``subject`` after ``label`` when the manifest knows patients).

    Labels outside the model's classes are kept as they are (their rows still get probabilities).
    """
    base = None
    if not isinstance(df, pd.DataFrame):
        base = Path(df).parent
        df = read_manifest(Path(df), required=IMAGE_COLUMNS)
    missing = [c for c in ("image_id", "path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"predict_manifest: the image table lacks column(s) {missing}; it needs image_id, path, label")
    model, meta = load_trained(model_dir)
    classes = list(meta["classes"])
    labels = list(df["label"].astype(str))
    # image_set checks labels against the classes; unknown labels are allowed here, so map them away.
    frame = df.assign(label=classes[0])
    s = image_set(frame, classes, int(meta["image_size"]), cache_dir, base, lazy=cache_dir is not None)
    logits = predict_logits(model, s.images, InputTransform(meta), batch_size, desc=f"predict {Path(out_csv).name}")
    pred = predictions_frame(s.image_ids, labels, logits, classes, known_subjects(df))
    write_csv(out_csv, pred.to_dict("records"), list(pred.columns))
    return pred
