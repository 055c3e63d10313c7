"""Finding the images of a folder-per-class data set, and what each file is.

Layouts recognised below ``root`` (after stepping through up to two wrapper folders that hold
a single sub-folder and no images, as unzipped Kaggle downloads do):

* plain: ``root/<class>/**/<image>`` (rm1000/brain-tumor-mri-scans: ``healthy/ glioma/
  meningioma/ pituitary/``);
* given split: ``root/Training/<class>/**`` and ``root/Testing/<class>/**``
  (masoudnickparvar/brain-tumor-mri-dataset, ``notumor`` = healthy);
* ``root/masks/<same relative path>.<any image extension>``: lesion masks (never a class).

DICOM and NIfTI files are candidates too (:mod:`medauc.data.medical` says which files are);
``prepare`` converts them (:mod:`medauc.data.convert`). A NIfTI mask is ``masks/<same relative
path>`` or, next to its volumes, a file named by ``data.mask_pattern``.

Folder names go through ``data.aliases`` (case-insensitive) and then must name one of
``data.classes`` (case-insensitive; empty = the classes found). Hidden and system files and
non-image files are skipped and listed with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medauc.config import DataConfig
from medauc.data.images import IMAGE_EXTENSIONS
from medauc.data.medical import candidate_reason, is_nifti_name
from medauc.errors import DataError

MASKS_DIR = "masks"
TRAIN_DIRS = ("training", "train")
TEST_DIRS = ("testing", "test")
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
_SYSTEM_DIRS = frozenset({"__macosx", "$recycle.bin", "system volume information"})


@dataclass(frozen=True)
class SourceItem:
    """One candidate image file."""

    path: Path  # absolute
    label: str  # class name from data.classes
    rel: str  # path relative to the data root, POSIX separators
    class_rel: str  # path relative to its class folder, POSIX separators
    given_split: str = ""  # "train" / "test" in the given-split layout, else ""
    mask_path: str = ""  # absolute path of the lesion mask, or ""
    subject: str = ""  # patient/subject id (data.group_pattern, data.groups_csv or file headers), "" = unknown


@dataclass
class Discovery:
    """What :func:`discover` found under a data root."""

    root: Path  # the data root after stepping through wrapper folders
    layout: str  # "folders" or "given"
    classes: list[str]  # label order (data.classes, or the folders found)
    items: list[SourceItem]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    folders: dict[str, str] = field(default_factory=dict)  # folder name -> class
    fingerprint: list[tuple[str, int, int]] = field(default_factory=list)  # (rel, bytes, mtime_ns) of every file


def skip_reason(name: str) -> str | None:
    """Why a file called ``name`` is not an image candidate, or None if it is one."""
    low = name.lower()
    if low.startswith(".") or low in _SYSTEM_FILES:
        return "hidden or system file"
    ext = os.path.splitext(low)[1]
    if ext not in IMAGE_EXTENSIONS:
        return f"not an image file (extension {ext or 'none'!r})"
    return None


def _is_hidden_dir(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_DIRS


def _visible_entries(d: Path) -> tuple[list[Path], list[Path]]:
    """Sub-folders and files of ``d``, sorted; hidden and system ones are left out."""
    dirs, files = [], []
    for p in sorted(d.iterdir()):
        if p.is_dir():
            if not _is_hidden_dir(p.name):
                dirs.append(p)
        elif skip_reason(p.name) != "hidden or system file":
            files.append(p)
    return dirs, files


def _hidden_entries(d: Path) -> list[dict[str, str]]:
    out = []
    for p in sorted(d.iterdir()):
        if (p.is_dir() and _is_hidden_dir(p.name)) or (not p.is_dir() and skip_reason(p.name) == "hidden or system file"):
            out.append({"path": str(p), "reason": "hidden or system " + ("folder" if p.is_dir() else "file")})
    return out


def walk(d: Path, skipped: list[dict[str, str]] | None = None) -> Iterable[tuple[Path, list[str]]]:
    """(folder, sorted file names) below ``d``; hidden and system folders are not entered (but listed)."""
    for cur, dirnames, filenames in os.walk(d):
        if skipped is not None:
            skipped += [{"path": str(Path(cur) / x), "reason": "hidden or system folder"} for x in sorted(dirnames) if _is_hidden_dir(x)]
        dirnames[:] = sorted(x for x in dirnames if not _is_hidden_dir(x))
        yield Path(cur), sorted(filenames)


class _ClassMap:
    def __init__(self, dcfg: DataConfig) -> None:
        self.aliases = {k.lower(): v for k, v in dcfg.aliases.items()}
        self.classes = list(dcfg.classes)
        self.by_lower = {c.lower(): c for c in self.classes}

    def name(self, folder: str) -> str:
        """Folder name -> class name (after aliases), or the aliased folder name if not a class."""
        aliased = self.aliases.get(folder.lower(), folder)
        if not self.classes:
            return aliased.lower()
        return self.by_lower.get(aliased.lower(), aliased)

    def known(self, folder: str) -> bool:
        return bool(self.classes) and self.name(folder) in self.classes


def _unwrap(root: Path, cmap: _ClassMap) -> Path:
    for _ in range(2):
        dirs, files = _visible_entries(root)
        has_images = any(skip_reason(f.name) is None for f in files)
        if len(dirs) != 1 or has_images:
            break
        only = dirs[0]
        low = only.name.lower()
        if cmap.known(only.name) or low == MASKS_DIR or low in TRAIN_DIRS + TEST_DIRS:
            break  # a single class folder is a single-class data set, reported as such below
        if any(skip_reason(f.name) is None for f in _visible_entries(only)[1]):
            break  # it holds images itself: a class folder, not a wrapper
        root = only
    return root


def _find_dir(dirs: list[Path], names: tuple[str, ...]) -> Path | None:
    for d in dirs:
        if d.name.lower() in names:
            return d
    return None


def discover(root: str | os.PathLike[str], dcfg: DataConfig) -> Discovery:
    """List the candidate images of the data set at ``root`` (nothing is decoded here).

    Raises DataError for a missing root, unknown class folders, a class without image files,
    fewer than two classes, or ``data.split=given`` without Training/ and Testing/ folders.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder; pass --data DIR or set data.path")
    root = _unwrap(root.resolve(), _ClassMap(dcfg))
    cmap = _ClassMap(dcfg)
    dirs, top_files = _visible_entries(root)
    train_dir, test_dir = _find_dir(dirs, TRAIN_DIRS), _find_dir(dirs, TEST_DIRS)
    given = train_dir is not None and test_dir is not None
    if dcfg.split == "given" and not given:
        raise DataError(
            f"data.split=given needs Training/ and Testing/ folders in {root}, found "
            f"{', '.join(d.name for d in dirs) or 'no folders'}; use data.split=random"
        )
    if dcfg.split not in ("given", "random"):
        raise DataError(f"data.split={dcfg.split!r} is not known; use 'random' or 'given'")

    disc = Discovery(root=root, layout="given" if given else "folders", classes=[], items=[])
    # (parent folder holding class folders, given split tag)
    parents: list[tuple[Path, str]] = [(train_dir, "train"), (test_dir, "test")] if given else [(root, "")]
    other_dirs = [d for d in dirs if d.name.lower() != MASKS_DIR and (not given or d not in (train_dir, test_dir))]
    if given:
        for d in other_dirs:
            disc.skipped.append({"path": str(d), "reason": "folder outside Training/ and Testing/"})
    disc.skipped += _hidden_entries(root)
    for f in top_files:
        disc.skipped.append({"path": str(f), "reason": "not inside a class folder"})

    mask_dir = _find_dir(dirs, (MASKS_DIR,))
    masks = _index_masks(mask_dir) if mask_dir is not None else {}
    class_dirs: list[tuple[Path, str]] = []
    for parent, tag in parents:
        sub_dirs, sub_files = _visible_entries(parent) if parent is not root else (other_dirs, [])
        if parent is not root:
            disc.skipped += _hidden_entries(parent)
            for f in sub_files:
                disc.skipped.append({"path": str(f), "reason": "not inside a class folder"})
        class_dirs += [(d, tag) for d in sub_dirs]
    if not class_dirs:
        raise DataError(f"no class folders in {root}: expected one folder per class, e.g. {root}/healthy/, {root}/glioma/")

    unknown = sorted({d.name for d, _ in class_dirs if cmap.classes and cmap.name(d.name) not in cmap.classes})
    if unknown:
        found = sorted({d.name for d, _ in class_dirs})
        raise DataError(
            f"class folder(s) {', '.join(unknown)} in {root} are not in data.classes "
            f"({', '.join(cmap.classes)}); folders found: {', '.join(found)}. Map each to a class with "
            f"data.aliases (e.g. 'data.aliases={{{unknown[0]}: CLASS}}', which replaces the default aliases), or set "
            f"data.classes=[{', '.join(sorted({cmap.name(x) for x in found}))}] (an empty list "
            "data.classes=[] uses the folders as found)"
        )

    per_class_files: dict[str, int] = {}
    for d, tag in class_dirs:
        label = cmap.name(d.name)
        disc.folders[str(d.relative_to(root))] = label
        per_class_files.setdefault(label, 0)
        for cur, names in walk(d, disc.skipped):
            for name in names:
                p = cur / name
                rel = p.relative_to(root).as_posix()
                try:
                    st = p.stat()
                except OSError as exc:
                    disc.skipped.append({"path": str(p), "reason": f"cannot stat ({exc.strerror or exc})"})
                    continue
                disc.fingerprint.append((rel, st.st_size, st.st_mtime_ns))
                reason = skip_reason(name)
                if reason is not None and reason != "hidden or system file":
                    reason = candidate_reason(p, dcfg.mask_pattern, reason)  # DICOM and NIfTI are images too
                if reason is not None:
                    disc.skipped.append({"path": str(p), "reason": reason})
                    continue
                per_class_files[label] += 1
                disc.items.append(
                    SourceItem(
                        path=p,
                        label=label,
                        rel=rel,
                        class_rel=p.relative_to(d).as_posix(),
                        given_split=tag,
                        mask_path=masks.get(os.path.splitext(rel)[0], ""),
                    )
                )
    for rel, path in sorted(masks.items()):
        st = Path(path).stat()
        disc.fingerprint.append((f"{MASKS_DIR}/{rel}", st.st_size, st.st_mtime_ns))

    disc.classes = list(cmap.classes) if cmap.classes else sorted(per_class_files)
    check_classes(disc.classes, per_class_files, root, what="image files")
    return disc


def check_classes(classes: list[str], counts: dict[str, int], root: Path, what: str) -> None:
    """DataError when a class has no images or fewer than two classes have any."""
    empty = [c for c in classes if counts.get(c, 0) == 0]
    present = [c for c in classes if counts.get(c, 0) > 0]
    if len(present) < 2:
        raise DataError(
            f"{root} holds a single class with {what} ({', '.join(present) or 'none'}"
            f"{'; none for ' + ', '.join(empty) if empty else ''}): a classifier needs at least two classes, "
            "one folder each, e.g. healthy/ and glioma/"
        )
    if empty:
        present = ", ".join(f"{c} ({counts[c]})" for c in classes if counts.get(c, 0)) or "none"
        raise DataError(
            f"class(es) {', '.join(empty)} have no {what} in {root} (classes with {what}: {present}); "
            "add images, or leave the class out with data.classes=[...]"
        )


def _index_masks(mask_root: Path) -> dict[str, str]:
    """Relative path without extension -> absolute mask path."""
    out: dict[str, str] = {}
    for cur, names in walk(mask_root):
        for name in names:
            if skip_reason(name) is None or is_nifti_name(name):
                p = cur / name
                out.setdefault(os.path.splitext(p.relative_to(mask_root).as_posix())[0], str(p))
    return out
