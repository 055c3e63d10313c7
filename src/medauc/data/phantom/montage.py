"""Contact sheets of a written phantom: a row per class, per-class grids, a row per subject."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medauc.data.phantom.design import CLASSES
from medauc.fileio import write_bytes


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (H, W)."""
    p = np.pad(mask, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _tile(out: Path, rows: list[list[dict[str, Any]]], outlines: bool, thumb: int) -> Image.Image:
    h, w = len(rows), max(len(r) for r in rows)
    canvas = Image.new("RGB", (w * thumb, h * thumb))
    for y, row in enumerate(rows):
        for x, rec in enumerate(row):
            img = Image.open(out / rec["path"]).convert("L")
            scale = thumb / max(img.size)
            dims = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            rgb = np.stack([np.asarray(img.resize(dims, Image.BILINEAR))] * 3, -1)
            if outlines and rec["label"] != "healthy":
                mask = np.asarray(Image.open(out / rec["mask_path"]).resize(dims, Image.BILINEAR)) > 127
                rgb[_outline(mask)] = (255, 40, 40)
            canvas.paste(Image.fromarray(rgb), (x * thumb + (thumb - dims[0]) // 2, y * thumb + (thumb - dims[1]) // 2))
    return canvas


def write_montages(out: Path, rows: list[dict[str, Any]], per_row: int = 8, thumb: int = 128, subjects_per_class: int = 2) -> None:
    """montage.png and montage_masks.png (a row per class), montage_<class>.png (4 x 4 of one class),
    each with the middle slice of one subject per tile; montage_subjects.png: ``subjects_per_class``
    subjects of each class, a row per subject with its slices side by side."""
    stacks: dict[str, list[list[dict[str, Any]]]] = {c: [] for c in CLASSES}
    for r in rows:  # rows come subject by subject, slices in order
        stack = stacks[r["label"]]
        if not stack or stack[-1][0]["subject"] != r["subject"]:
            stack.append([])
        stack[-1].append(r)
    middle = {c: [s[len(s) // 2] for s in stacks[c]] for c in CLASSES}
    present = [c for c in CLASSES if stacks[c]]
    grid = [middle[c][:per_row] for c in present]
    for name, outlines in (("montage.png", False), ("montage_masks.png", True)):
        buf = io.BytesIO()
        _tile(out, grid, outlines, thumb).save(buf, format="PNG")
        write_bytes(out / name, buf.getvalue())
    for c in present:
        recs = middle[c][:16]
        buf = io.BytesIO()
        _tile(out, [recs[i : i + 4] for i in range(0, len(recs), 4)], False, thumb).save(buf, format="PNG")
        write_bytes(out / f"montage_{c}.png", buf.getvalue())
    series = [s[:per_row] for c in present for s in stacks[c][:subjects_per_class]]
    buf = io.BytesIO()
    _tile(out, series, False, thumb).save(buf, format="PNG")
    write_bytes(out / "montage_subjects.png", buf.getvalue())
