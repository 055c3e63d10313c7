"""The report stage: one HTML report (and Markdown/JSON) generated from a run folder's files."""

from medauc.report.build import build_document, report_stage

__all__ = ["build_document", "report_stage"]
