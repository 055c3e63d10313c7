"""Build the report from a run folder's files: ``report.html``, ``report.md``, ``results.json``.

No number is typed here: every table, figure and sentence comes from a file the stages wrote
(``manifest.csv``, ``data_audit.json``, ``augment_checks.json``, ``strategies.json``,
``metrics.json``, ``comparisons.csv``, ``curves/``, ``explain.json``, ``config.yaml``,
``environment.json``, ``timings.json``). A section whose files are missing says which stage
to run instead of showing anything. The files the report's cache key hashes are the report
stage's ``inputs`` in :data:`medauc.stages.STAGES` (``timings.json`` is left out: it changes on
every run, cached stages included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medauc.config import Config
from medauc.fileio import write_bytes, write_json, write_text
from medauc.report.context import Context
from medauc.report.document import Document, to_html, to_markdown
from medauc.report.sections import ALL


def build_document(cfg: Config, run_dir: Path) -> tuple[Document, dict[str, Any]]:
    """The report as a :class:`Document` plus the machine-readable results behind it."""
    run_dir = Path(run_dir)
    doc = Document(cfg.report.title + f" — run {run_dir.name}")
    results: dict[str, Any] = {"run": str(run_dir), "config_name": cfg.name}
    ctx = Context(cfg=cfg, run_dir=run_dir, doc=doc, results=results)
    for section in ALL:
        section(ctx)
    return doc, results


def report_stage(cfg: Config, run_dir: Path, force: bool = False) -> dict[str, Any]:
    """Write ``report.html``, ``report.md`` (+ ``report_files/``) and ``results.json``; returns their paths.

    Rebuilt whenever a file it reads (or the report's code) changed, without ``--force``; returns
    ``{"skipped": True}`` when nothing did and its files are intact (:func:`medauc.stages.run`).
    """
    from medauc import stages

    return stages.run("report", cfg, run_dir, force) or {"skipped": True}


def compute(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The report stage's work (no caching: :func:`report_stage` decides whether it runs)."""
    run_dir = Path(run_dir)
    doc, results = build_document(cfg, run_dir)
    outputs = {}
    if "html" in cfg.report.formats:
        outputs["html"] = str(write_text(run_dir / "report.html", to_html(doc)))
    if "md" in cfg.report.formats:
        files = run_dir / "report_files"
        for fig in doc.figures():
            write_bytes(files / fig.name, fig.png)
        outputs["md"] = str(write_text(run_dir / "report.md", to_markdown(doc, "report_files")))
    if "json" in cfg.report.formats:
        outputs["json"] = str(write_json(run_dir / "results.json", results))
    return outputs
