"""The explanation stage: class activation maps for every model, scored against lesion masks.

Modules: ``layers`` (which layer to explain, token-to-grid reshape), ``cam`` (pytorch-grad-cam
wrapper), ``scores`` (pointing game, energy share and ratio, bootstrap), ``panels`` (figures),
``inputs`` (models and test sample from the run folder), ``passes`` (one model's maps and scores),
``sanity`` (summaries, the random-twin test), ``panel_rows`` (what the panels show), ``stage``
(``explain_stage``, the schema of explain.json), ``command`` (``medauc explain``).
"""

from __future__ import annotations

from typing import Any


def explain_stage(cfg: Any, run_dir: Any, force: bool = False) -> dict[str, Any]:
    """See :func:`medauc.explain.stage.explain_stage` (imported lazily: it pulls in torch)."""
    from medauc.explain.stage import explain_stage as run

    return run(cfg, run_dir, force)
