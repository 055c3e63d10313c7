"""One model's class activation maps over the sample: maps, predictions and localisation scores.

:func:`cam_pass` runs one CAM method over every image (batched), for a trained model or its random
twin alike; :func:`predicted_class_maps` adds the maps for the predicted class of the few
misclassified images shown in the panels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medauc.config import Config
from medauc.explain import scores as sc
from medauc.explain.cam import CamExplainer
from medauc.explain.panels import resize_map
from medauc.progress import Timer, progress_bar


@dataclass
class ExplainModel:
    """A trained model ready to explain, with a way to turn images into its inputs."""

    name: str
    model: nn.Module
    classes: list[str]
    prepare: Callable[[np.ndarray], torch.Tensor]  # (N, H, W) float32 [0, 1] -> (N, C, S, S)
    input_shape: tuple[int, int, int]  # (C, S, S)
    make_twin: Callable[[], nn.Module] | None = None  # random-weight twin, for the sanity check
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for explain.json (seed, dir)


@dataclass
class CamPass:
    """Maps and predictions of one model and method over the sample."""

    layer: str
    grid: tuple[int, int]
    true_maps: np.ndarray  # (N, S, S) float16
    probs: np.ndarray  # (N, K)
    scores: dict[str, np.ndarray]  # per-image localisation scores (N,), nan without a mask
    seconds: float


def batches(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cam_pass(
    model: nn.Module,
    entry: ExplainModel,
    method: str,
    images: list[np.ndarray],
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    zones: list[np.ndarray | None],
    cfg: Config,
    target_layer: str,
    desc: str,
) -> CamPass:
    """Run one CAM method over all images (batched), keep the maps, score them against the masks.

    ``model`` is ``entry.model`` or its random twin; ``zones`` are the masks widened by the
    pointing tolerance (:func:`medauc.explain.scores.widen`), None where there is no mask.
    """
    n = len(images)
    e = cfg.explain
    device = next(model.parameters()).device
    score_lists: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in (*sc.SCORES, "area_share")}
    true_maps = None
    probs = np.zeros((n, len(entry.classes)), dtype=np.float32)
    with Timer() as timer, CamExplainer(
        model, method, entry.input_shape, target_layer, batch_size=max(e.batch_size, 64), seed=cfg.seed, min_grid=e.min_grid
    ) as cam, progress_bar(total=n, desc=desc, unit="img", leave=False) as bar:
        for sl in batches(n, e.batch_size):
            batch = [images[i] for i in range(sl.start, sl.stop)]
            x = torch.cat([entry.prepare(img[None]) for img in batch]).to(device)
            maps, logits = cam(x, labels[sl].tolist())
            if true_maps is None:
                true_maps = np.zeros((n, *maps.shape[1:]), dtype=np.float16)
            true_maps[sl] = maps
            probs[sl] = _softmax(logits)
            for j, i in enumerate(range(sl.start, sl.stop)):
                if masks[i] is None:
                    continue
                s = sc.localisation_scores(resize_map(maps[j], masks[i].shape)[None], masks[i][None], hit_zones=zones[i][None])
                for k in score_lists:
                    score_lists[k][i] = s[k][0]
            bar.update(len(batch))
        layer, grid = cam.layer.name, cam.layer.grid
    if true_maps is None:  # no images
        true_maps = np.zeros((0, *entry.input_shape[1:]), dtype=np.float16)
    return CamPass(layer, grid, true_maps, probs, score_lists, timer.seconds)


def predicted_class_maps(
    entry: ExplainModel, method: str, images: list[np.ndarray], idx: list[int], classes: list[int], cfg: Config, layer: str
) -> dict[int, np.ndarray]:
    """Maps (S, S) for ``classes[j]`` of images ``idx[j]`` (the few misclassified panel images)."""
    if not idx:
        return {}
    device = next(entry.model.parameters()).device
    out: dict[int, np.ndarray] = {}
    with CamExplainer(entry.model, method, entry.input_shape, layer, seed=cfg.seed, min_grid=cfg.explain.min_grid) as cam:
        for sl in batches(len(idx), cfg.explain.batch_size):
            x = torch.cat([entry.prepare(images[i][None]) for i in idx[sl]]).to(device)
            maps, _ = cam(x, classes[sl])
            out.update(zip(idx[sl], maps))
    return out
