"""The phantom's worker processes: each renders whole subjects and writes their PNG slices and masks.

Workers end with the process that started them, even when it is killed (:func:`medauc.processes.die_with_parent`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medauc.config import PhantomConfig
from medauc.data.phantom.anatomy import load_anatomy
from medauc.data.phantom.design import SubjectTask
from medauc.data.phantom.render import render_subject
from medauc.fileio import write_bytes
from medauc.processes import die_with_parent


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG", compress_level=2)
    return buf.getvalue()


_WORKER: dict[str, Any] = {}  # this process's anatomy, output folder, config and seed (init_worker)


def init_pool_worker(parent_pid: int, *init: Any) -> None:
    """A pool worker's initialiser: tie it to ``parent_pid``, then :func:`init_worker`."""
    die_with_parent(parent_pid)
    init_worker(*init)


def init_worker(anatomy: str, anatomy_path: str | None, out_dir: str, pcfg: dict[str, Any], seed: int) -> None:
    """Load the anatomy and keep what :func:`make_subject` needs (plain values: they cross processes)."""
    _WORKER.update(
        anat=load_anatomy(anatomy, anatomy_path), out=Path(out_dir), pcfg=PhantomConfig(**pcfg), seed=seed
    )


def make_subject(task: SubjectTask) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render and write one subject's slices and masks -> (one row per image, the subject's row)."""
    r = render_subject(_WORKER["anat"], task.label, _WORKER["pcfg"], _WORKER["seed"], task.index, task.n_slices)
    out: Path = _WORKER["out"]
    rows = []
    for j, sl in enumerate(r.slices):
        image_id = f"{task.subject_id}_s{j:02d}"
        write_bytes(out / task.label / f"{image_id}.png", _png(sl.image))
        write_bytes(out / "masks" / task.label / f"{image_id}.png", _png(sl.mask))
        rows.append({"image_id": image_id, "subject": task.subject_id, "label": task.label, "path": f"{task.label}/{image_id}.png",
                     "mask_path": f"masks/{task.label}/{image_id}.png", **sl.facts})
    return rows, {"subject": task.subject_id, "label": task.label, **r.facts}
