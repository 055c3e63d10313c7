"""A tiny document model rendered to self-contained HTML and to Markdown.

The report is built once as a list of blocks (headings, paragraphs, tables, figures); both
renderers walk the same list, so the HTML and Markdown reports can never disagree. Every piece
of text is escaped when rendered: file and class names come from the user's data.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Paragraph:
    text: str
    kind: str = ""  # "", "note", "warning", "answer"


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file name used by the Markdown report (written next to report.md)
    width: int = 0  # CSS max width in px; 0 = natural


@dataclass
class Code:
    text: str


@dataclass
class Links:
    items: list[tuple[str, str]]  # (text, href relative to the report)


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
        self.blocks.append(Heading(text, level, anchor))

    def p(self, text: str, kind: str = "") -> None:
        self.blocks.append(Paragraph(text, kind))

    def table(self, header: list[str], rows: list[list[Any]], caption: str = "") -> None:
        self.blocks.append(Table(header, rows, caption))

    def figure(self, png: bytes, caption: str, name: str, width: int = 0) -> None:
        self.blocks.append(Figure(png, caption, name, width))

    def code(self, text: str) -> None:
        self.blocks.append(Code(text))

    def links(self, items: list[tuple[str, str]]) -> None:
        self.blocks.append(Links(items))

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # nan
            return "n/a"
        return f"{value:.4g}"
    return str(value)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d2330;line-height:1.45}
h1{border-bottom:3px solid #2b6cb0;padding-bottom:.3em}
h2{margin-top:2em;border-bottom:1px solid #cbd5e0;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #cbd5e0;padding:.3em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#edf2f7}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #e2e8f0}
figcaption{font-size:.9em;color:#4a5568}
.note{color:#4a5568;font-size:.92em}
.warning{background:#fffaf0;border-left:4px solid #dd6b20;padding:.5em 1em}
.answer{background:#ebf8ff;border-left:4px solid #2b6cb0;padding:.5em 1em}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.8em;overflow-x:auto;font-size:.85em}
nav ul{columns:2}
"""


def to_html(doc: Document) -> str:
    """Self-contained HTML: CSS inline, figures as base64 data URIs, no scripts, no external files."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(doc.title)}</h1>",
    ]
    toc = [b for b in doc.blocks if isinstance(b, Heading) and b.level == 2]
    if toc:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#{esc(h.anchor)}">{esc(h.text)}</a></li>' for h in toc) + "</ul></nav>")
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(f'<h{b.level} id="{esc(b.anchor)}">{esc(b.text)}</h{b.level}>')
        elif isinstance(b, Paragraph):
            cls = f' class="{esc(b.kind)}"' if b.kind else ""
            parts.append(f"<p{cls}>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            rows = ["<table>"]
            if b.caption:
                rows.append(f"<caption>{esc(b.caption)}</caption>")
            rows.append("<thead><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in b.header) + "</tr></thead><tbody>")
            for r in b.rows:
                rows.append("<tr>" + "".join(_td(c) for c in r) + "</tr>")
            rows.append("</tbody></table>")
            parts.append("".join(rows))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            style = f' style="max-width:{b.width}px"' if b.width else ""
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(b.caption)}"{style}>'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            parts.append(f"<pre>{esc(b.text)}</pre>")
        elif isinstance(b, Links):
            parts.append("<ul>" + "".join(f'<li><a href="{esc(h)}">{esc(t)}</a></li>' for t, h in b.items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


_NUMERIC = re.compile(r"^[-+−<>≥≤ ]*[\d.]+(e[-+]?\d+)?%?( ± [\d.]+| \[[-\d., ]+\])?( → [\d.]+)?$")


def _td(value: Any) -> str:
    text = _cell(value)
    cls = ' class="num"' if isinstance(value, (int, float)) or _NUMERIC.match(text) else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def _md_escape(text: str) -> str:
    # Enough to keep data-derived names from turning into Markdown or HTML.
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def to_markdown(doc: Document, figure_dir: str = "report_files") -> str:
    """Markdown; figures are referenced as ``<figure_dir>/<name>`` (written by the caller)."""
    out = [f"# {_md_escape(doc.title)}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + _md_escape(b.text), ""]
        elif isinstance(b, Paragraph):
            text = _md_escape(b.text)
            out += [f"> {text}" if b.kind in ("warning", "answer") else text, ""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"**{_md_escape(b.caption)}**", ""]
            out.append("| " + " | ".join(_md_escape(str(h)) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            for r in b.rows:
                out.append("| " + " | ".join(_md_escape(_cell(c)) for c in r) + " |")
            out.append("")
        elif isinstance(b, Figure):
            out += [f"![{_md_escape(b.caption)}]({figure_dir}/{b.name})", "", f"*{_md_escape(b.caption)}*", ""]
        elif isinstance(b, Code):
            out += ["```", b.text, "```", ""]
        elif isinstance(b, Links):
            out += [f"- [{_md_escape(t)}](<{h}>)" for t, h in b.items] + [""]
    return "\n".join(out)
