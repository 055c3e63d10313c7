"""Which images come from one patient (subject), from the configuration.

Brain-MRI sets hold several slices per patient. A split that keeps every patient in one split
needs the patient of each image; medauc takes it from, in this order:

* the file itself (``SourceItem.subject`` as a reader filled it, e.g. from DICOM or NIfTI headers);
* ``data.group_pattern``: a regular expression with exactly one capture group, applied with
  :func:`re.search` to the image's path relative to the data folder (``data.path`` or ``--data``),
  with POSIX separators; the captured text is the patient id. ``(sub-\\d+)`` finds BIDS subjects
  anywhere in the path, ``^[^/]+/([^_]+)_`` takes the file-name prefix before the first ``_``
  below the class folder;
* ``data.groups_csv``: a CSV file with columns ``path`` (relative to the data folder; wrapper
  folders that medauc steps through may be left out) and ``group`` (the patient id);
* neither key set and the data folder is a phantom (``phantom.json`` and ``images.csv`` in it):
  the phantom's own record of each image's subject (``images.csv``: ``path``, ``subject``), so a
  config needs no file-name pattern for the phantom, and one used with ``--data DIR`` on any other
  folder carries none.

Ids are compared as text, across classes: a patient with tumour and healthy slices is one
patient. Every image must get a patient once either key is set: an image left "unknown" could
put one patient's slices into two splits, so it is an error that lists the images, not a guess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from medauc.errors import DataError

if TYPE_CHECKING:  # the up-front config check imports this module: no image libraries, nor the config
    from medauc.config import DataConfig
    from medauc.data.sources import SourceItem

SHOWN = 5  # how many offending paths an error message lists
PHANTOM_FILES = ("phantom.json", "images.csv")  # a folder holding both is a phantom that names its subjects
PHANTOM_SOURCE = "phantom images.csv"  # the audit's subject source for them


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name patients (it does not compile, or has not exactly one capture
    group), or None when it can. Cheap: used by the up-front config check and by prepare."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression ({exc}); e.g. '(sub-\\d+)'"
    if compiled.groups != 1:
        return (
            f"needs exactly one capture group, the part of the path that names the patient (it has "
            f"{compiled.groups}); e.g. '(sub-\\d+)', with (?:...) for any other grouping"
        )
    if _nested_repeat(re._parser.parse(pattern)):  # type: ignore[attr-defined]
        return (
            "repeats a part that itself repeats (like '(a+)+' or '(\\w*)*'): matching it can take time that doubles "
            "with every character of a file name; repeat once, e.g. '(sub-\\w+)'"
        )
    return None


# re.search in a child process (a plain Python, no medauc): one line out per path, so a pattern that backtracks
# without end is stopped, and the path it stuck on named. The bound: SEARCH_SECONDS plus 10 ms a path.
SEARCH_SECONDS = 10.0
_SEARCH = """
import json, re, sys
rx = re.compile(sys.argv[1])
for line in sys.stdin:
    m = rx.search(json.loads(line))
    print(json.dumps(m.group(1) if m else None), flush=True)
"""


def search_bounded(pattern: str, texts: list[str], key: str = "data.group_pattern") -> list[str | None]:
    """``re.search(pattern, t).group(1)`` (None when no match) of every text, in bounded time.

    Patterns with nested repetition are refused when the config loads (:func:`pattern_problem`); others can
    still backtrack for a time that doubles per character (``(a|a)*b``). Raises DataError naming the path.
    """
    if not texts:
        return []
    limit = SEARCH_SECONDS + 0.01 * len(texts)
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _SEARCH, pattern], input="".join(json.dumps(t) + "\n" for t in texts),
                              capture_output=True, text=True, timeout=limit, check=True).stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stuck = texts[min(out.count("\n"), len(texts) - 1)]
        raise DataError(
            f"{key}: matching took more than {limit:.0f} s and was stopped, on {stuck!r} ({out.count(chr(10))} of "
            f"{len(texts)} paths done): the pattern backtracks for a time that grows with every character; "
            "simplify it, e.g. '(sub-\\d+)', or name the patients in data.groups_csv"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise DataError(f"{key}: matching failed ({' '.join(exc.stderr.split())[-300:]})") from exc
    return [json.loads(line) or None for line in done.splitlines()]


_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


def _nested_repeat(parsed: Any, inside: bool = False) -> bool:
    """True when a repetition without a small bound holds another one (catastrophic backtracking)."""
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS:
            low, high, body = arg
            unbounded = high is re._constants.MAXREPEAT or high > 16  # type: ignore[attr-defined]
            if unbounded and inside:
                return True
            if _nested_repeat(body, inside or unbounded):
                return True
        elif name == "SUBPATTERN" and _nested_repeat(arg[-1], inside):
            return True
        elif name == "BRANCH" and any(_nested_repeat(b, inside) for b in arg[1]):
            return True
        elif name in ("ASSERT", "ASSERT_NOT") and _nested_repeat(arg[1], inside):
            return True
    return False


def _norm(path: str) -> str:
    """A CSV path as a POSIX relative path: backslashes to slashes, no leading ./ or trailing /."""
    text = path.strip().replace("\\", "/")
    return PurePosixPath(text).as_posix() if text else ""


def read_groups_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """``data.groups_csv`` -> {relative POSIX path: patient id}.

    Raises DataError naming the file for a missing or unreadable file, a missing ``path`` or
    ``group`` column, empty cells, or one path given two different patients.
    """
    import pandas as pd  # here: the up-front checks import this module without pandas

    p = Path(path).expanduser()
    fix = "it needs one row per image with columns path (relative to data.path) and group (the patient id)"
    if not p.is_file():
        raise DataError(f"data.groups_csv={path}: file not found ({p.resolve()}); {fix}, or set data.groups_csv=''")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"data.groups_csv={path}: not a readable CSV ({exc}); {fix}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("path", "group") if c not in df.columns]
    if missing:
        raise DataError(
            f"data.groups_csv={path} lacks column(s) {', '.join(map(repr, missing))} "
            f"(has: {', '.join(map(repr, df.columns)) or 'none'}); {fix}"
        )
    if len(df) == 0:
        raise DataError(f"data.groups_csv={path} has a header but no rows; {fix}")
    paths = [_norm(x) for x in df["path"]]
    groups = [str(x).strip() for x in df["group"]]
    empty = [i + 2 for i, (a, b) in enumerate(zip(paths, groups)) if not a or not b]  # file line numbers
    if empty:
        raise DataError(
            f"data.groups_csv={path}: empty path or group in {len(empty)} row(s), lines "
            f"{', '.join(map(str, empty[:SHOWN]))}; every row needs both"
        )
    out: dict[str, str] = {}
    for rel, group in zip(paths, groups):
        if out.setdefault(rel, group) != group:
            raise DataError(f"data.groups_csv={path}: {rel} is given two patients, {out[rel]!r} and {group!r}; keep one row per image")
    return out


def phantom_subjects(data_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """The phantom's own patients, ``{path relative to the phantom folder: subject}`` from its ``images.csv``;
    None when ``data_dir`` is not a phantom (:data:`PHANTOM_FILES`)."""
    import csv

    base = Path(data_dir).expanduser()
    if not all((base / f).is_file() for f in PHANTOM_FILES):
        return None
    with open(base / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "subject"} <= set(rows[0]):
        raise DataError(f"{base / 'images.csv'} lacks the columns path and subject; regenerate the phantom "
                        f"(medauc phantom --force) or name the patients with data.groups_csv")
    return {_norm(r["path"]): r["subject"] for r in rows}


def check_settings(dcfg: DataConfig) -> None:
    """The subject settings before any image is read: not both keys, the pattern compiles with one
    group, the CSV is readable with its columns. DataError naming the key and the fix."""
    if dcfg.group_pattern and dcfg.groups_csv:
        raise DataError(
            f"data.group_pattern={dcfg.group_pattern!r} and data.groups_csv={dcfg.groups_csv} are both set; "
            "name the patients one way: set the other to ''"
        )
    if dcfg.group_pattern:
        why = pattern_problem(dcfg.group_pattern)
        if why:
            raise DataError(f"data.group_pattern={dcfg.group_pattern!r}: {why}")
    if dcfg.groups_csv:
        read_groups_csv(dcfg.groups_csv)


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return f"{shown}, ... ({len(paths)} in all)" if len(paths) > SHOWN else shown


def assign_subjects(
    items: list[SourceItem], data_dir: str | os.PathLike[str], root: str | os.PathLike[str], dcfg: DataConfig
) -> tuple[list[SourceItem], str]:
    """``items`` with ``subject`` filled from ``data.group_pattern``, ``data.groups_csv`` or a phantom's
    own ``images.csv`` (:func:`phantom_subjects`) where a reader left it empty, and where the ids came
    from (for the audit).

    ``data_dir`` is the data folder as given (``data.path`` or ``--data``), ``root`` the folder
    :func:`medauc.data.sources.discover` settled on below it. Returns the items unchanged and
    "file headers" or "" when neither key is set. Raises DataError when an image gets no patient
    or the CSV names files that do not exist.
    """
    check_settings(dcfg)
    from_files = any(it.subject for it in items)
    phantom = None if dcfg.group_pattern or dcfg.groups_csv else phantom_subjects(data_dir)
    if not dcfg.group_pattern and not dcfg.groups_csv and phantom is None:
        return items, "file headers" if from_files else ""
    base = Path(data_dir).expanduser().resolve()
    root = Path(root)

    def rel_given(it: SourceItem) -> str:
        try:
            return it.path.relative_to(base).as_posix()
        except ValueError:  # root is always below the folder given; kept safe for direct callers
            return it.rel

    todo = [i for i, it in enumerate(items) if not it.subject]
    found: dict[int, str] = {}
    if dcfg.group_pattern:
        key = f"data.group_pattern={dcfg.group_pattern!r}"
        for i, subject in zip(todo, search_bounded(dcfg.group_pattern, [rel_given(items[i]) for i in todo], key)):
            if subject:
                found[i] = subject
        fix = (
            "fix the pattern (re.search on the path relative to data.path, POSIX separators, one capture "
            "group), or name every image's patient in data.groups_csv"
        )
        what = "the pattern does not match (or captures nothing in)"
    else:
        key, table = ((f"data.groups_csv={dcfg.groups_csv}", read_groups_csv(dcfg.groups_csv)) if dcfg.groups_csv
                      else (f"the phantom's {base / 'images.csv'}", phantom or {}))
        used: set[str] = set()
        for i in todo:
            it = items[i]
            for rel in (rel_given(it), it.rel):
                if rel in table:
                    found[i] = table[rel]
                    used.add(rel)
                    break
        absent = sorted(r for r in set(table) - used if not (base / r).exists() and not (root / r).exists())
        if absent:
            raise DataError(
                f"{key} names {len(absent)} file(s) that do not exist below {base}: {_listing(absent)}; "
                "paths are relative to data.path, with / as separator"
            )
        fix = "add a row (path, group) for each, or take them out of the data folder"
        what = "the CSV has no row for"
    unmatched = [rel_given(items[i]) for i in todo if i not in found]
    if unmatched:
        raise DataError(
            f"{key}: {what} {len(unmatched)} of {len(items)} image(s), e.g. {_listing(unmatched)}. "
            f"Every image needs its patient, or one patient's slices could land in two splits: {fix}"
        )
    out = [dataclasses.replace(it, subject=found[i]) if i in found else it for i, it in enumerate(items)]
    source = "data.group_pattern" if dcfg.group_pattern else "data.groups_csv" if dcfg.groups_csv else PHANTOM_SOURCE
    return out, (f"{source} and file headers" if from_files else source)
