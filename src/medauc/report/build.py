"""Build the report from a run folder's files: ``report.html``, ``report.md``, ``results.json``.

No number is typed here: every table, figure and sentence comes from a file the stages wrote
(``manifest.csv``, ``data_audit.json``, ``augment_checks.json``, ``strategies.json``,
``metrics.json``, ``comparisons.csv``, ``curves/``, ``explain.json``, ``config.yaml``,
``environment.json``, ``timings.json``). A section whose files are missing says which stage
to run instead of showing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medauc.config import Config, config_hash
from medauc.report import sections
from medauc.report.document import Document, to_html, to_markdown
from medauc.runs import check_stage, file_sha256, mark_stage, write_bytes, write_json, write_text

# Files whose content the report depends on (for the stage cache key).
INPUT_FILES = (
    "config.yaml",
    "manifest.csv",
    "data_audit.json",
    "phantom/phantom.json",
    "augment_checks.json",
    "strategies.json",
    "metrics.json",
    "comparisons.csv",
    "explain.json",
)  # timings.json is left out: it changes on every run, cached stages included


def build_document(cfg: Config, run_dir: Path) -> tuple[Document, dict[str, Any]]:
    """The report as a :class:`Document` plus the machine-readable results behind it."""
    run_dir = Path(run_dir)
    doc = Document(cfg.report.title + f" — run {run_dir.name}")
    results: dict[str, Any] = {"run": str(run_dir), "config_name": cfg.name}
    ctx = sections.Context(cfg=cfg, run_dir=run_dir, doc=doc, results=results)
    for section in sections.ALL:
        section(ctx)
    return doc, results


def report_stage(cfg: Config, run_dir: Path, force: bool = False) -> dict[str, Any]:
    """Write ``report.html``, ``report.md`` (+ ``report_files/``) and ``results.json``."""
    run_dir = Path(run_dir)
    hashes = [file_sha256(run_dir / f) if (run_dir / f).exists() else None for f in INPUT_FILES]
    extra = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("explain/*.png"))
    # The report's own code is an input too: a newer medauc rebuilds an old run's report.
    code = [file_sha256(p) for p in sorted(Path(__file__).parent.glob("*.py"))]
    key = config_hash(cfg.report, hashes, extra, code)
    if not check_stage(run_dir, "report", key, force=True):
        return {"skipped": True}
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
    mark_stage(run_dir, "report", key, outputs=outputs)
    return outputs
