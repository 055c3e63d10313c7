"""sources.py: layouts, aliases, masks, hidden files and the class errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medauc.config import DataConfig, load_config
from medauc.data.sources import discover
from medauc.errors import DataError

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def _img(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(path)


def _plain(root: Path, classes=CLASSES, n: int = 3) -> None:
    for ci, c in enumerate(classes):
        for i in range(n):
            _img(root / c / f"{i}.png", 100 * ci + i)


def test_plain_layout_recursive_hidden_and_non_images(tmp_path):
    _plain(tmp_path)
    _img(tmp_path / "glioma" / "deeper" / "x" / "nested.png", 999)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "glioma" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "glioma" / "._0.png").write_bytes(b"\0")
    (tmp_path / "glioma" / "readme.txt").write_text("x")
    (tmp_path / "__MACOSX" / "glioma").mkdir(parents=True)
    _img(tmp_path / "__MACOSX" / "glioma" / "0.png", 5)
    (tmp_path / "notes.md").write_text("x")
    d = discover(tmp_path, DataConfig())
    assert d.layout == "folders" and d.classes == CLASSES
    assert len(d.items) == 13
    assert any(it.class_rel == "deeper/x/nested.png" and it.label == "glioma" for it in d.items)
    reasons = {Path(s["path"]).name: s["reason"] for s in d.skipped}
    assert reasons[".DS_Store"].startswith("hidden")
    assert reasons["Thumbs.db"].startswith("hidden")
    assert reasons["._0.png"].startswith("hidden")
    assert reasons["readme.txt"].startswith("not an image file")
    assert reasons["__MACOSX"] == "hidden or system folder"
    assert reasons["notes.md"] == "not inside a class folder"
    assert all(it.path.is_absolute() for it in d.items)


def test_wrapper_folder_aliases_and_case(tmp_path):
    root = tmp_path / "brain-tumor-mri-scans" / "Brain Tumor MRI Scans"
    _plain(root, ["No_Tumor", "Glioma", "meningioma_tumor", "PITUITARY"])
    d = discover(tmp_path, DataConfig())
    assert d.root == root.resolve()
    assert sorted({it.label for it in d.items}) == sorted(CLASSES)
    assert d.folders["No_Tumor"] == "healthy"


def test_unknown_folder_lists_found_and_fix(tmp_path):
    _plain(tmp_path, ["healthy", "glioma", "astrocytoma"])
    with pytest.raises(DataError) as exc:
        discover(tmp_path, DataConfig())
    msg = str(exc.value)
    assert "astrocytoma" in msg and "data.aliases" in msg and "data.classes" in msg
    # an empty class list means "the folders as found"
    d = discover(tmp_path, DataConfig(classes=[]))
    assert d.classes == ["astrocytoma", "glioma", "healthy"]


def test_empty_class_and_single_class_are_errors(tmp_path):
    _plain(tmp_path / "a", ["healthy", "glioma", "meningioma"])
    (tmp_path / "a" / "glioma" / "0.png").unlink()
    for i in (1, 2):
        (tmp_path / "a" / "glioma" / f"{i}.png").unlink()
    (tmp_path / "a" / "glioma" / "note.txt").write_text("x")
    with pytest.raises(DataError, match="glioma have no image files"):
        discover(tmp_path / "a", DataConfig(classes=["healthy", "glioma", "meningioma"]))
    _plain(tmp_path / "b", ["healthy"])
    with pytest.raises(DataError, match="single class"):
        discover(tmp_path / "b", DataConfig(classes=["healthy", "glioma"]))
    with pytest.raises(DataError, match="single class"):
        discover(tmp_path / "b", DataConfig(classes=[]))
    _plain(tmp_path / "c", ["healthy", "glioma"])
    with pytest.raises(DataError, match="meningioma, pituitary have no image files"):
        discover(tmp_path / "c", DataConfig())
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope", DataConfig())


def test_masks_are_recorded_and_never_a_class(tmp_path):
    _plain(tmp_path, ["healthy", "glioma"])
    _img(tmp_path / "masks" / "glioma" / "1.bmp", 7)  # same relative path, another extension
    d = discover(tmp_path, DataConfig(classes=["healthy", "glioma"]))
    assert d.classes == ["healthy", "glioma"]
    with_mask = [it for it in d.items if it.mask_path]
    assert [it.rel for it in with_mask] == ["glioma/1.png"]
    assert with_mask[0].mask_path == str((tmp_path / "masks" / "glioma" / "1.bmp").resolve())
    assert all("masks" not in it.rel for it in d.items)


def test_masoud_layout_given_split(tmp_path):
    for split, n in (("Training", 4), ("Testing", 2)):
        _plain(tmp_path / split, ["notumor", "glioma", "meningioma", "pituitary"], n)
    d = discover(tmp_path, load_config(None, ["data.split=given"]).data)
    assert d.layout == "given"
    assert {it.given_split for it in d.items} == {"train", "test"}
    assert sum(it.given_split == "test" and it.label == "healthy" for it in d.items) == 2
    with pytest.raises(DataError, match="Training/ and Testing/"):
        _plain(tmp_path / "plain")
        discover(tmp_path / "plain", DataConfig(split="given"))
