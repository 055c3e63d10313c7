"""Figures for the report, each drawn from a run's files and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
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


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str, diagonal: bool = False,
           points: dict[str, tuple[float, float]] | None = None, points_label: str = "") -> bytes:
    """Line plot of named (x, y) series: ROC, PR or reliability curves. ``points``: {series name: (x, y)}
    marked on that series' curve in its colour (an operating point), described once by ``points_label``."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    colour = {name: ax.plot(x, y, lw=1.5, label=name)[0].get_color() for name, (x, y) in series.items()}
    marked = [n for n in series if points and n in points and all(np.isfinite(points[n]))]
    for i, name in enumerate(marked):  # after every curve, so the legend lists the marker last
        ax.plot(*(points or {})[name], marker="o", ms=7, mfc="white", mec=colour[name], mew=2, ls="none",
                label=points_label if i == 0 else None, zorder=5)
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


def _grid(n: int, per_row: int, w: float, h: float, sharey: bool = False) -> tuple[Any, list[Any]]:
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False, sharey=sharey)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def roc_panels(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
               points: dict[str, tuple[float, float]] | None = None, points_label: str = "") -> bytes:
    """One ROC panel per model: ``panels`` {model: {curve label: (fpr, tpr)}}; ``points`` {model: (fpr, tpr)}
    marks a point on the panel's *last* curve (the screening operating point)."""
    fig, axes = _grid(len(panels), 4, 3.3, 3.4)
    for i, (ax, (model, series)) in enumerate(zip(axes, panels.items())):
        for j, (name, (x, y)) in enumerate(series.items()):
            last = j == len(series) - 1
            (line,) = ax.plot(x, y, lw=2.0 if last else 1.2, color="black" if last else None,
                              ls="-" if not last else (0, (4, 1.5)), label=name)
        p = (points or {}).get(model)
        if p is not None and all(np.isfinite(p)):
            ax.plot(*p, marker="o", ms=7, mfc="white", mec="black", mew=2, ls="none", label=points_label, zorder=5)
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("1 − specificity (false-positive rate)", fontsize=7)
        if i % 4 == 0:
            ax.set_ylabel("sensitivity (true-positive rate)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right", framealpha=0.85)
    fig.tight_layout()
    return to_png(fig)


def training_curves(models: dict[str, dict[str, dict[str, Sequence[float]]]], monitored: str, best: dict[str, dict[str, int]] | None = None) -> bytes:
    """Per model (columns): loss per epoch (top; training solid, monitored split dashed, a dot at the epoch
    kept) and the monitored split's macro AUC (bottom), seeds overlaid in colours.

    ``models`` {model: {seed: {"epoch", "train_loss", "val_loss", "val_macro_auc": sequences}}};
    ``best`` {model: {seed: epoch kept}}."""
    n = len(models)
    fig, axes = plt.subplots(2, n, figsize=(3.3 * n, 5.0), squeeze=False, sharex="col")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (model, seeds) in enumerate(models.items()):
        top, bottom = axes[0][j], axes[1][j]
        for k, (seed, h) in enumerate(seeds.items()):
            c = colours[k % len(colours)]
            ep = np.asarray(h["epoch"], dtype=float)
            top.plot(ep, h["train_loss"], color=c, lw=1.4, marker=".", ms=4)
            top.plot(ep, h["val_loss"], color=c, lw=1.4, ls="--", marker=".", ms=4)
            kept = (best or {}).get(model, {}).get(seed)
            if kept is not None and kept in list(ep):
                i = list(ep).index(kept)
                top.plot([kept], [h["val_loss"][i]], marker="o", ms=8, mfc="none", mec=c, mew=1.8, ls="none")
            bottom.plot(ep, h["val_macro_auc"], color=c, lw=1.4, marker=".", ms=4)
        top.set_title(model, fontsize=9)
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
        bottom.set_xlabel("epoch", fontsize=8)
        top.tick_params(labelsize=7)
        bottom.tick_params(labelsize=7)
        bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if j == 0:
            top.set_ylabel("cross-entropy loss", fontsize=8)
            bottom.set_ylabel(f"{monitored} macro AUC", fontsize=8)
    from matplotlib.lines import Line2D

    seeds = list(dict.fromkeys(seed for by_seed in models.values() for seed in by_seed))
    handles = [Line2D([], [], color=colours[k % len(colours)], lw=1.6, label=f"seed {seed}") for k, seed in enumerate(seeds)]
    handles += [Line2D([], [], color="dimgrey", lw=1.4, label="training loss"),
                Line2D([], [], color="dimgrey", lw=1.4, ls="--", label=f"{monitored} loss (monitored)"),
                Line2D([], [], color="dimgrey", marker="o", ms=7, mfc="none", ls="none", label="checkpoint kept")]
    fig.tight_layout(rect=(0, 0, 1, 0.9 if n > 1 else 0.84))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4 if n > 1 else 2), fontsize=7, frameon=False)
    return to_png(fig)


def decision_panels(panels: list[dict[str, Any]], ylabel: str) -> bytes:
    """Decision curves, one panel per set/prevalence. Each panel: ``{title, x (T,), models {name: (T,)},
    treat_all (T,), ylim (low, high)}``; treat none is the zero line. Curves below ``ylim``'s low end are
    clipped, and the panel says so."""
    fig, axes = _grid(len(panels), 3, 4.2, 3.5)
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        x = np.asarray(panel["x"], dtype=float)
        low, high = panel["ylim"]
        for name, y in panel["models"].items():
            ax.plot(x, y, lw=1.6, label=name)
        ax.plot(x, panel["treat_all"], color="grey", lw=1.4, ls="--", label="treat all")
        ax.axhline(0.0, color="black", lw=1.2, label="treat none")
        below = any(np.nanmin(np.asarray(y, dtype=float)) < low for y in panel["models"].values())
        if below:
            ax.text(0.98, 0.03, "below the axis: net harm", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                    color="dimgrey")
        ax.set_ylim(low, high)
        ax.set_xlim(0, float(x.max()))
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("threshold probability pt", fontsize=8)
        if i % 3 == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best", framealpha=0.85)
    fig.tight_layout()
    return to_png(fig)


def read_png(path: Path) -> bytes:
    return Path(path).read_bytes()
