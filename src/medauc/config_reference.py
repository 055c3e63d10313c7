"""The configuration reference (README section) generated from the dataclasses in config.py.

``python -m medauc.config_reference`` prints it as Markdown; a test checks that the README's
copy lists every key, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from medauc.config import Config, to_dict
from medauc.config_types import type_name

_FIELD = re.compile(r"^\s+(\w+):\s*([^=#]+?)\s*=\s*(.+?)\s*(?:#\s*(.*))?$")


def _comments(cls: type) -> dict[str, str]:
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD.match(line)
        if m and m.group(4):
            out[m.group(1)] = m.group(4).strip()
    return out


def rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every configuration key, sections in order."""
    out = []
    defaults = Config()
    hints = typing.get_type_hints(Config)
    top = _comments(Config)
    for f in dataclasses.fields(Config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            section = to_dict(getattr(defaults, f.name))  # defaults as YAML writes them: lists, dicts
            comments = _comments(tp)
            sub_hints = typing.get_type_hints(tp)
            doc = (tp.__doc__ or "").strip().splitlines()[0] if tp.__doc__ else ""
            out.append((f"**{f.name}**", "section", "", doc))
            for g in dataclasses.fields(tp):
                out.append((f"{f.name}.{g.name}", type_name(sub_hints[g.name]),
                            repr(section[g.name]), comments.get(g.name, "")))
        else:
            out.append((f.name, type_name(tp), repr(getattr(defaults, f.name)), top.get(f.name, "")))
    return out


def markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, meaning in rows():
        if tp == "section":
            lines.append(f"| {key} | | | {meaning} |")
            continue
        default = default.replace("|", "\\|")
        tp = tp.replace("|", "\\|")  # a union type (str | list[float]) would split the row
        lines.append(f"| `{key}` | {tp} | `{default}` | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown())
