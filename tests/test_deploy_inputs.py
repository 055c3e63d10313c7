"""New inputs for `medauc predict` read exactly as `prepare` read the run's own DICOM and NIfTI files (the same
8-bit pixels, the same patient hashes), named by position, with every unreadable file given its reason."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medauc.config import load_config
from medauc.data.convert import convert_medical, load_salt, locate
from medauc.data.images import load_image
from medauc.data.sources import discover
from medauc.deploy.inputs import InputImage, Unreadable, find_inputs, read_input
from medauc.deploy.predict import seen_in_run
from medical_data import PLANTED, make_dicom_tree, make_nifti_tree

OVERRIDES = ["data.classes=[healthy,glioma]", "data.source=folder", "data.shortcut_audit=false"]


def _same_as_prepare(data, run_dir, *overrides):
    """For every image prepare converted: (its PNG as later stages read it, predict's image of the same source file)."""
    cfg = load_config("smoke", [*OVERRIDES, *overrides])
    disc, conv = convert_medical(discover(data, cfg.data), cfg.data, run_dir)
    salt = load_salt(run_dir)
    pairs = []
    for it in disc.items:
        if str(it.path) not in conv.source:
            continue
        src = locate(data, conv.refs[str(it.path)], cfg.data)
        files, bad, _ = find_inputs([src], cfg.data.mask_pattern)
        assert not bad and len(files) == 1
        got = read_input(files[0], cfg.data, salt)
        assert isinstance(got, list)
        suffix = it.rel[len(conv.refs[str(it.path)]):]  # "", "-f<k>" or "-s<k>"
        mine = next(g for g in got if g.name == "file-00001" + suffix)
        pairs.append((it, load_image(it.path), mine))
    return pairs


def test_dicom_inputs_give_prepares_pixels_and_patient_hashes(tmp_path):
    # MONOCHROME1, rescale with a window, JPEG 2000 and a multi-frame file are all in the tree.
    data = make_dicom_tree(tmp_path / "export", patients=2, slices=4, size=32)
    pairs = _same_as_prepare(data, tmp_path / "run")
    assert len(pairs) == 16
    for item, png, mine in pairs:
        assert np.array_equal(mine.image, png), item.rel  # bit for bit: the 8-bit rounding prepare's PNG makes
        assert mine.subject == item.subject  # the run's salt: a patient the run has seen keeps his hash


def test_patients_the_run_has_seen_are_flagged_with_their_splits(tmp_path):
    import pandas as pd

    assert seen_in_run(tmp_path) == {}  # no manifest
    rows = [("a", "train"), ("a", "test"), ("b", "val"), ("", "train"), ("a", "train")]
    pd.DataFrame({"image_id": list("vwxyz"), "subject": [r[0] for r in rows], "split": [r[1] for r in rows]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    assert seen_in_run(tmp_path) == {"a": "train,test", "b": "val"}


def test_nifti_slices_and_all_dicom_frames_are_named_by_position(tmp_path):
    data = make_nifti_tree(tmp_path / "brats", volumes=2, size=24, depth=8)
    pairs = _same_as_prepare(data, tmp_path / "run", "data.slices=middle:3")
    assert len(pairs) == 5 * 3  # 2 healthy t1, 2 glioma t1 and one t2, 3 slices each
    for item, png, mine in pairs:
        assert np.array_equal(mine.image, png) and re.fullmatch(r"file-00001-s\d{3}", mine.name)
    frames = make_dicom_tree(tmp_path / "frames", patients=2, slices=4, size=32)
    names = [m.name for _, _, m in _same_as_prepare(frames, tmp_path / "run2", "data.dicom_frames=all")]
    # every file its frames (the multi-frame file has three), each the same pixels as prepare's
    assert len(names) == 18 and all(re.fullmatch(r"file-00001-f00\d", n) for n in names)
    assert sorted(names)[-3:] == ["file-00001-f000", "file-00001-f001", "file-00001-f002"]


def test_unreadable_inputs_get_a_reason_without_their_path(tmp_path):
    data = make_dicom_tree(tmp_path / "export", patients=1, slices=1, size=32)
    cfg = load_config("smoke", OVERRIDES)
    (tmp_path / "notes.csv").write_text("a,b\n")
    files, bad, passed_over = find_inputs([data, tmp_path / "missing.png", tmp_path / "notes.csv"], cfg.data.mask_pattern)
    assert [b.name for b in bad] == ["arg-2", "arg-3"] and bad[0].reason == "no such file or folder"
    assert "not an image, DICOM or NIfTI file" in bad[1].reason
    assert passed_over == 1  # the glioma folder's notes.txt
    results = [read_input(f, cfg.data, load_salt(tmp_path / "run")) for f in files]
    reasons = [r.reason for r in results if isinstance(r, Unreadable)]
    images = [i for r in results if isinstance(r, list) for i in r]
    assert all(isinstance(i, InputImage) for i in images) and len(images) == 2
    # the structured report, the colour, truncated and 12-bit JPEG files bundled with pydicom
    assert sorted(r.split(" (")[0] for r in reasons) == ["colour DICOM", "compressed DICOM that cannot be decoded",
                                                         "non-image DICOM", "truncated or corrupt DICOM pixel data"]
    for r in results:
        if isinstance(r, Unreadable):
            assert str(data) not in r.reason and not any(p.lower() in r.reason.lower() for p in PLANTED)
            assert re.fullmatch(r"file-\d{5}", r.name) and r.line().startswith(r.name + ": ")
    with pytest.raises(ValueError, match="need the run's salt"):
        read_input(next(f for f in files if f.kind == "dicom"), cfg.data, None)


def test_model_card_gives_the_model_at_each_external_site():
    """Issue 25 in the card: the chosen model's numbers at another hospital, or that none was tested."""
    from types import SimpleNamespace

    from medauc.deploy.card import _external_notes

    est = lambda v: {"value": v, "low": v - 0.1, "high": v + 0.1}  # noqa: E731  (as evaluate writes it)
    ext = {"primary_metric": "auc_macro", "question_5": {"answer": "No: m1 is not best at b."},
           "sites": {"b": {"n_images": 30, "models": {"m1": {"seeds": {"0": {
               "metrics": {"auc_macro": est(0.71), "op_sensitivity": est(0.8), "op_specificity": est(0.5)},
               "change": {"auc_macro": est(-0.12)}}}}}}}}
    cfg = lambda external: SimpleNamespace(evaluate=SimpleNamespace(external=external))  # noqa: E731
    chosen = SimpleNamespace(model="m1", seed=0, cfg=cfg({"b": "phantom:b"}))
    notes = _external_notes(SimpleNamespace(json=lambda name: ext), chosen)
    assert "At the external set b (30 images): auc_macro 0.710" in notes[0] and "change of -0.120" in notes[0]
    assert notes[-1].endswith("No: m1 is not best at b.")
    none = _external_notes(SimpleNamespace(json=lambda name: ext), SimpleNamespace(model="m1", seed=0, cfg=cfg({})))
    assert none[0].startswith("No external test set")
