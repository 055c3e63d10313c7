"""Figures: CAM overlays on the grayscale image, every model side by side.

One figure per class and method: a row per image, the columns are the image (with the lesion
outline when there is a mask) and, for each model, the map for the true class and the map for
the class the model predicted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medauc.fileio import atomic_path


@dataclass
class ModelCell:
    """One model's view of one image: maps (H, W) in [0, 1] at the image's size."""

    true_map: np.ndarray
    pred_map: np.ndarray
    predicted: str
    prob: float  # the model's probability of the predicted class


@dataclass
class PanelRow:
    image_id: str
    image: np.ndarray  # (H, W) float in [0, 1]
    label: str
    mask: np.ndarray | None = None  # (H, W) bool, or None
    cells: list[ModelCell] = field(default_factory=list)


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map (h, w) to ``shape`` (H, W), kept in [0, 1]."""
    import cv2

    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == tuple(shape):
        return cam
    out = cv2.resize(cam, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """RGB uint8 (H, W, 3): the jet-coloured map over the grayscale ``image`` (H, W) in [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    return show_cam_on_image(rgb, resize_map(cam, img.shape), use_rgb=True, image_weight=image_weight)


def class_panel(path: str | os.PathLike[str], title: str, rows: list[PanelRow], model_names: list[str]) -> Path:
    """Write one PNG: rows = images, columns = image, then (true-class, predicted-class) map per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = 1 + 2 * len(model_names)
    n_rows = max(len(rows), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.75 * n_rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, row in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(row.image, cmap="gray", vmin=0, vmax=1)
        if row.mask is not None and row.mask.any():
            ax.contour(row.mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(f"{row.image_id}\ntrue: {row.label}", fontsize=6)
        for m, cell in enumerate(row.cells):
            ok = cell.predicted == row.label
            for k, (cam, text) in enumerate(
                ((cell.true_map, f"{model_names[m]}\nmap for {row.label}"),
                 (cell.pred_map, f"pred {cell.predicted} {cell.prob:.2f} {'ok' if ok else 'WRONG'}"))
            ):
                ax = axes[r, 1 + 2 * m + k]
                ax.imshow(overlay(row.image, cam))
                if row.mask is not None and row.mask.any():
                    ax.contour(row.mask.astype(float), levels=[0.5], colors="white", linewidths=0.5)
                ax.set_title(text, fontsize=6, color="black" if ok or k == 0 else "red")
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no test images of this class", ha="center", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
