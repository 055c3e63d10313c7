"""Figures for the report, each drawn from a run's files and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_png(fig: Any, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], col_labels: Sequence[str], cell: float = 1.4) -> bytes:
    """A grid of grayscale images (values in [0, 1]); rows may be shorter than the longest."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows + 0.3), squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(rows[i]):
                ax.imshow(rows[i][j], cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str, diagonal: bool = False) -> bytes:
    """Line plot of named (x, y) series: ROC, PR or reliability curves."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, lw=1.5, label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right" if diagonal else "best")
    fig.tight_layout()
    return to_png(fig)


def confusion_matrices(mats: dict[str, np.ndarray], classes: Sequence[str]) -> bytes:
    """One confusion-matrix panel per model (rows = true class, columns = predicted)."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        m = np.asarray(m, dtype=float)
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.6 else "black")
        labels = [c if len(c) <= 12 else c[:11] + "…" for c in classes]  # "meningioma" whole; a long name shortened visibly
        ax.set_xticks(range(len(classes)), labels, fontsize=7, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(classes)), labels, fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def interval_plot(names: Sequence[str], values: Sequence[float], lows: Sequence[float], highs: Sequence[float], xlabel: str, title: str) -> bytes:
    """Point estimates with confidence intervals, one row per model."""
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(names) + 1.0))
    y = np.arange(len(names))
    v = np.asarray(values, dtype=float)
    lo = np.asarray(lows, dtype=float)
    hi = np.asarray(highs, dtype=float)
    ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="o", capsize=3)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def read_png(path: Path) -> bytes:
    return Path(path).read_bytes()
