"""What the panels show: which test images each class's figure holds, and every model's maps for them.

The same images for every model, so that the maps can be compared side by side; drawing is
:mod:`medauc.explain.panels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medauc.config import Config
from medauc.explain.panels import ModelCell, PanelRow, class_panel, resize_map
from medauc.explain.passes import CamPass, ExplainModel, predicted_class_maps


def select_panel_rows(labels: np.ndarray, wrong_any: np.ndarray, per_class: int, n_classes: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Per class, up to ``per_class`` image indices: correct ones first, then misclassified (by any
    model) ones, about ``per_class // 2`` of them when there are any."""
    out = {}
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        wrong = idx[wrong_any[idx]]
        right = idx[~wrong_any[idx]]
        k_wrong = min(wrong.size, per_class // 2)
        k_right = min(right.size, per_class - k_wrong)
        k_wrong = min(wrong.size, per_class - k_right)  # fill up with misclassified ones if too few correct
        chosen = list(rng.choice(right, k_right, replace=False)) + list(rng.choice(wrong, k_wrong, replace=False))
        out[c] = [int(i) for i in chosen]
    return out


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits, '-' and '_' replaced by '_' (for file names)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def write_panels(
    entries: list[ExplainModel],
    passes: dict[tuple[str, str], CamPass],
    methods: list[str],
    images: list[np.ndarray],
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    image_ids: list[str],
    cfg: Config,
    run_dir: Path,
) -> dict[str, dict[str, str]]:
    """Write ``explain/<method>_<class>.png`` under ``run_dir``; returns explain.json's ``panels``.

    passes: the trained models' :class:`CamPass` by (model name, method); images (H, W) float32 in
    [0, 1], labels (N,) class indices, masks (H, W) bool or None per image.
    """
    classes = entries[0].classes
    n = len(images)
    wrong_any = np.zeros(n, dtype=bool)
    for entry in entries:
        wrong_any |= passes[(entry.name, methods[0])].probs.argmax(1) != labels
    chosen = select_panel_rows(labels, wrong_any, cfg.explain.per_class, len(classes), np.random.default_rng([cfg.seed, 2]))
    names = [e.name for e in entries]
    panel_idx = [i for idx in chosen.values() for i in idx]
    panels: dict[str, dict[str, str]] = {}
    for method in methods if cfg.explain.per_class > 0 else []:
        pred_maps = {}
        for entry in entries:
            p = passes[(entry.name, method)]
            wrong = [i for i in panel_idx if p.probs[i].argmax() != labels[i]]
            pred_maps[entry.name] = predicted_class_maps(entry, method, images, wrong, [int(p.probs[i].argmax()) for i in wrong], cfg, p.layer)
        panels[method] = {}
        for c, idx in chosen.items():
            rows = []
            for i in idx:
                row = PanelRow(image_ids[i], images[i], classes[c], masks[i])
                for entry in entries:
                    p = passes[(entry.name, method)]
                    k = int(p.probs[i].argmax())
                    true_map = resize_map(p.true_maps[i].astype(np.float32), images[i].shape)
                    pred_map = true_map if k == c else resize_map(pred_maps[entry.name][i], images[i].shape)
                    row.cells.append(ModelCell(true_map, pred_map, classes[k], float(p.probs[i, k])))
                rows.append(row)
            rel = f"explain/{method}_{safe_name(classes[c])}.png"
            class_panel(run_dir / rel, f"{method}: {classes[c]} (green/white outline: lesion mask)", rows, names)
            panels[method][classes[c]] = rel
    return panels
