"""``manifest.csv``: one row per usable image, the hand-off from ``prepare`` to every later stage.

Columns: ``image_id, path, label, split, sha256, phash, width, height, mode, group``, then
``subject`` (the patient id, text, "" = unknown; written only when some patient is known),
``mask_path`` (empty string when an image has no mask) and ``source_file`` (DICOM and NIfTI
sets: the converted file's reference ``<class folder>/file-<n>``, :mod:`medauc.data.convert`;
``path`` is then the PNG in the run folder); later stages add ``source_image_id`` and
``sigma``. ``image_id`` is unique and stable (``<label>/<path below the class folder, without
extension>``; converted files: ``<label>/file-<n>[-f<frame>|-s<slice>]``). ``path`` and ``mask_path`` are
written relative to the manifest's folder when they lie inside its run folder (generated images, converted
DICOM/NIfTI slices: a copied or moved run folder reads its own files) and absolute otherwise (the data
folder); :func:`read_manifest` gives them absolute, and maps an old manifest's absolute paths into a
run folder that was moved or copied since.
``group`` is what the split keeps together: the connected components of duplicates and patients.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from medauc.config import Config, replace
from medauc.data.split import SPLITS
from medauc.errors import DataError
from medauc.fileio import atomic_path

REQUIRED_COLUMNS = ("image_id", "path", "label", "split", "sha256", "phash", "width", "height", "mode", "group")
# What a stage that reads labelled images needs (training, prediction): a manifest written by
# another stage or by hand qualifies without the audit columns.
IMAGE_COLUMNS = ("image_id", "path", "label", "split")
OPTIONAL_COLUMNS = ("subject", "mask_path", "source_file", "source_image_id", "sigma")
_INT_COLUMNS = ("width", "height", "group")
_FLOAT_COLUMNS = ("sigma",)


PATH_COLUMNS = ("path", "mask_path")


def run_root(folder: str | os.PathLike[str]) -> Path | None:
    """The run folder holding ``folder`` (itself or the nearest parent with ``config.yaml`` or ``.medauc/``), or None."""
    folder = Path(os.path.abspath(folder))
    return next((p for p in (folder, *folder.parents) if (p / "config.yaml").is_file() or (p / ".medauc").is_dir()), None)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _relative_paths(df: pd.DataFrame, manifest: Path) -> pd.DataFrame:
    root = run_root(manifest.parent)
    if root is None:
        return df
    folder = Path(os.path.abspath(manifest.parent))
    df = df.copy()
    for col in [c for c in PATH_COLUMNS if c in df.columns]:
        df[col] = [os.path.relpath(Path(v).resolve(), folder.resolve()) if v and Path(str(v)).is_absolute()
                   and _inside(Path(v), root) else v for v in df[col].astype(str).where(df[col].notna(), "")]
    return df


def _absolute_paths(df: pd.DataFrame, manifest: Path) -> pd.DataFrame:
    """Relative paths taken from the manifest's folder; an absolute path into another copy of this run folder
    (written before paths were relative) mapped into this one when the file is there.

    The old run folder is the prefix of the path that is a run folder (the original of a copy) or is
    gone (a moved folder); below a sub-folder's manifest (``augment/``) it must also hold that sub-folder.
    A path into a data folder (which exists and is no run folder) is left as it is.
    """
    folder = Path(os.path.abspath(manifest.parent))
    root = run_root(folder)
    inner = folder.relative_to(root).parts if root is not None else ()
    old_root: dict[tuple[str, ...], bool] = {}
    inside = tuple(os.path.join(r, "") for r in {os.path.abspath(root), os.path.realpath(root)}) if root is not None else ()

    def was_run_folder(prefix: tuple[str, ...]) -> bool:
        if prefix not in old_root:
            p = Path(*prefix)
            old_root[prefix] = run_root(p) == p if p.exists() else True
        return old_root[prefix]

    moved_dirs: dict[str, str | None] = {}

    def moved_dir(head: str) -> str | None:
        """This run folder's copy of the folder ``head`` of an old run folder, or None (decided once per folder)."""
        if head not in moved_dirs:
            parts, moved_dirs[head] = Path(head).parts, None
            for i in range(len(parts), 0, -1):  # the longest prefix first: the nearest old run folder
                if (inner and parts[i:i + len(inner)] != inner) or not was_run_folder(parts[:i]):
                    continue
                if not inner and (i == len(parts) or not root.joinpath(parts[i]).is_dir()):
                    continue  # at the top: the rest starts with one of this run folder's folders (images/, phantom/)
                if root.joinpath(*parts[i:]).is_dir():
                    moved_dirs[head] = str(root.joinpath(*parts[i:]))
                    break
        return moved_dirs[head]

    def absolute(value: str) -> str:
        if not value:
            return value
        if not os.path.isabs(value):
            p = Path(value)
            return os.path.normpath(folder / p) if (folder / p).exists() or not p.exists() else value
        norm = os.path.normpath(value)
        if root is None or norm.startswith(inside):
            return value
        head, name = os.path.split(norm)
        target = moved_dir(head)
        moved = os.path.join(target, name) if target is not None else None
        return moved if moved is not None and os.path.exists(moved) else value

    for col in [c for c in PATH_COLUMNS if c in df.columns]:
        df[col] = [absolute(str(v)) for v in df[col]]
    return df


def write_manifest(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Validate ``df`` (as :func:`read_manifest` would) and write it atomically as CSV, paths inside the run
    folder relative to the manifest's folder."""
    _validate(df, Path(path))
    df = _relative_paths(df, Path(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return Path(path)


def read_manifest(path: str | os.PathLike[str], required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read and validate a manifest: the ``required`` columns, unique image ids, known split names.

    Text columns stay text (empty, not NaN; a ``subject`` of ``007`` stays ``"007"``); width/height/group
    are ints, sigma a float. ``required``: prepare's full set by default; :data:`IMAGE_COLUMNS` for
    a table of labelled images from any stage (what training and prediction read).
    Raises DataError naming the file and the missing column or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; run `medauc prepare` first (or check --out)")
    try:
        head = pd.read_csv(path, nrows=0)
        dtypes = {c: str for c in head.columns if c not in _INT_COLUMNS + _FLOAT_COLUMNS}
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"manifest {path} cannot be parsed as CSV ({exc})") from exc
    _validate(df, path, required)
    df = _absolute_paths(df, path)
    for c in _INT_COLUMNS:
        if c in df.columns:
            try:
                df[c] = df[c].astype("int64")
            except (ValueError, TypeError) as exc:
                raise DataError(f"manifest {path}: column {c!r} must hold integers ({exc})") from exc
    for c in _FLOAT_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c].replace("", "nan"), errors="coerce")
    return df


def known_subjects(df: pd.DataFrame) -> list[str] | None:
    """The ``subject`` column as text ("" = unknown), or None when no row has a known patient."""
    if "subject" not in df.columns:
        return None
    col = df["subject"].fillna("").astype(str)
    return list(col) if (col != "").any() else None


def class_order(labels: Iterable[str], negative_class: str) -> list[str]:
    """The classes found, in a fixed order: ``negative_class`` first (when present), then sorted.

    The order ``data.classes=[]`` stands for: the order of the ``prob_`` columns in every stage.
    """
    found = sorted({str(x) for x in labels})
    return ([negative_class] if negative_class in found else []) + [c for c in found if c != negative_class]


def resolve_classes(cfg: Config, run_dir: str | os.PathLike[str]) -> Config:
    """``cfg`` with ``data.classes`` filled in from ``run_dir/manifest.csv`` when it is empty.

    Every stage after ``prepare`` sees the classes this way (``medauc run`` and each sub-command),
    so ``data.classes=[]`` means the same list everywhere. Unchanged when the list is set or no
    manifest exists yet.
    """
    path = Path(run_dir) / "manifest.csv"
    if cfg.data.classes or not path.is_file():
        return cfg
    labels = pd.read_csv(path, usecols=["label"], dtype=str, keep_default_na=False)["label"]
    return replace(cfg, **{"data.classes": class_order(labels, cfg.data.negative_class)})


def _validate(df: pd.DataFrame, path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"manifest {path} lacks column {missing[0]!r} (has: {', '.join(map(str, df.columns))}); "
            "it was not written by this version of `medauc prepare`: run it again with --force"
        )
    if "image_id" in df.columns:
        dup = df["image_id"][df["image_id"].duplicated()]
        if len(dup):
            raise DataError(f"manifest {path}: image_id {dup.iloc[0]!r} appears more than once; image ids must be unique")
    if "split" in df.columns:
        bad = sorted(set(df["split"]) - set(SPLITS))
        if bad:
            raise DataError(f"manifest {path}: unknown split {bad[0]!r}; allowed: {', '.join(SPLITS)}")
