"""What a resumed training needs besides weights and optimiser: every random state, saved in ``last.pt``.

The states are tensors and plain values, so ``torch.load(..., weights_only=True)`` reads them back;
restoring them makes the resumed epochs draw the same batches, flips and augmentation as an
uninterrupted run (see :meth:`medauc.classify.train.Trainer.state`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random state a resumed run needs, as tensors and plain values (``weights_only`` loadable)."""
    npst = np.random.get_state(legacy=False)
    return {
        "shuffle": gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
            "pos": int(npst["state"]["pos"]),
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved: ``gen`` and the torch, CUDA, NumPy and Python generators."""
    gen.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"]))
    random.setstate(state["python"])
