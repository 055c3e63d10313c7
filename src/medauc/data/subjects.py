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
import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

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
    return None


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
        key, rx = f"data.group_pattern={dcfg.group_pattern!r}", re.compile(dcfg.group_pattern)
        for i in todo:
            m = rx.search(rel_given(items[i]))
            if m and m.group(1):
                found[i] = m.group(1)
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
