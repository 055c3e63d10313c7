"""Predictions from a trained model: arrays for other stages, CSV files for evaluation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medauc.classify.models import InputTransform, load_trained, prepare_batch
from medauc.classify.train import predict_logits, predictions_frame, read_manifest
from medauc.data.datasets import image_set
from medauc.data.manifest import known_subjects
from medauc.errors import DataError
from medauc.runs import write_csv


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
        df = read_manifest(Path(df))
    missing = [c for c in ("image_id", "path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"predict_manifest: the image table lacks column(s) {missing}; it needs image_id, path, label")
    model, meta = load_trained(model_dir)
    classes = list(meta["classes"])
    labels = list(df["label"].astype(str))
    # image_set checks labels against the classes; unknown labels are allowed here, so map them away.
    frame = df.assign(label=classes[0])
    s = image_set(frame, classes, int(meta["image_size"]), cache_dir, base)
    logits = predict_logits(model, s.images, InputTransform(meta), batch_size)
    pred = predictions_frame(s.image_ids, labels, logits, classes, known_subjects(df))
    write_csv(out_csv, pred.to_dict("records"), list(pred.columns))
    return pred
