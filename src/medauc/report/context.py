"""What every report section is given: the run folder's configuration and files, the document it adds
blocks to, and the results it fills (``results.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medauc.config import Config
from medauc.fileio import read_json
from medauc.report.document import Document


@dataclass
class Context:
    cfg: Config
    run_dir: Path
    doc: Document
    results: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def json(self, name: str) -> Any | None:
        p = self.path(name)
        return read_json(p) if p.exists() else None

    def missing(self, what: str, command: str) -> None:
        self.doc.p(f"No {what} in this run folder: run `{command}` to produce it.", "note")

    def required(self, name: str, what: str, command: str) -> Any | None:
        """``json(name)``, or None after a note saying which command produces it."""
        data = self.json(name)
        if not data:
            self.missing(what, command)
        return data
