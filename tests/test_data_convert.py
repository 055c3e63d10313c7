"""DICOM/NIfTI folders through ``prepare``: PNGs in the run folder, patients as salted hashes,
references instead of paths, a cache, and clear reasons for every file left out."""

import json
import re
import stat

import numpy as np
import pandas as pd
import pytest

from medauc.config import ConfigError, load_config
from medauc.data import medical
from medauc.data.command import prepare_stage, stage_key
from medauc.data.convert import SALT_FILE, convert_medical, locate
from medauc.data.dicom import read_dicom
from medauc.data.images import load_image
from medauc.data.sources import discover
from medauc.errors import DataError
from medauc.validate import CHOICES
from medical_data import PLANTED, make_dicom_tree, make_nifti_tree, planted_hits

OVERRIDES = ["data.classes=[healthy,glioma]", "data.source=folder", "data.shortcut_audit=false"]


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    return make_dicom_tree(tmp_path_factory.mktemp("dicom") / "export", patients=3, slices=3, size=32)


@pytest.fixture(scope="module")
def nifti_dir(tmp_path_factory):
    return make_nifti_tree(tmp_path_factory.mktemp("nifti") / "brats", volumes=3, size=24, depth=8)


def _convert(data, run_dir, *overrides):
    cfg = load_config("smoke", [*OVERRIDES, *overrides])
    return convert_medical(discover(data, cfg.data), cfg.data, run_dir), cfg


def test_dicom_files_become_pngs_with_hashed_patients(dicom_dir, tmp_path):
    (disc, conv), cfg = _convert(dicom_dir, tmp_path / "run")
    items = [it for it in disc.items if str(it.path) in conv.source]
    assert len(items) == 18 and all(it.path.parent == tmp_path / "run" / "images" for it in items)
    # One patient per PatientID, as 16 hex digits of a salted hash, never the id itself.
    by_folder = {}
    for it in items:
        by_folder.setdefault(locate(dicom_dir, conv.refs[str(it.path)], cfg.data).parent.name + it.label, set()).add(it.subject)
    assert all(len(s) == 1 for s in by_folder.values()) and len(set.union(*by_folder.values())) == 6
    assert all(len(it.subject) == 16 and int(it.subject, 16) >= 0 for it in items)
    salt = tmp_path / "run" / SALT_FILE
    assert len(salt.read_text().strip()) == 64 and stat.S_IMODE(salt.stat().st_mode) == 0o600
    # References lead back to the file, whose first frame is the PNG (8-bit).
    for it in items[:4]:
        src = locate(dicom_dir, conv.refs[str(it.path)], cfg.data)
        np.testing.assert_allclose(load_image(it.path), read_dicom(src).images[0], atol=0.5 / 255 + 1e-6)
    assert {conv.source[str(it.path)][0] for it in items} == {"DICOM MR"}
    # Nothing that names the patient: not the skipped paths, not the ids of the images.
    assert not any(p.lower() in json.dumps(disc.skipped).lower() for p in PLANTED)
    assert not any(p.lower() in (it.rel + it.class_rel).lower() for it in items for p in PLANTED)
    assert conv.summary["subject_from"] == {"PatientID": 18} and conv.summary["skipped_files"] == 4


def test_conversion_is_cached_and_deterministic_and_the_salt_changes_only_the_hashes(dicom_dir, tmp_path):
    (first, conv), _ = _convert(dicom_dir, tmp_path / "a")
    pngs = {it.rel: it.path.read_bytes() for it in first.items}
    mtimes = {it.rel: it.path.stat().st_mtime_ns for it in first.items}
    (again, conv2), _ = _convert(dicom_dir, tmp_path / "a")
    # 18 images, the structured report and 3 bundled files (skips are cached too); the .txt is no DICOM
    assert conv2.summary["converted"] == 0 and conv2.summary["reused"] == conv.summary["converted"] == 22
    assert {it.rel: it.path.stat().st_mtime_ns for it in again.items} == mtimes  # reused, not rewritten
    assert [(it.rel, it.subject) for it in again.items] == [(it.rel, it.subject) for it in first.items]
    # Another run folder, another salt: the same images and ids (so the same split), other patient hashes.
    (other, _), _ = _convert(dicom_dir, tmp_path / "b")
    assert {it.rel: it.path.read_bytes() for it in other.items} == pngs
    assert not {it.subject for it in other.items} & {it.subject for it in first.items}
    same = lambda d: sorted(sorted(it.rel for it in d.items if it.subject == s) for s in {i.subject for i in d.items})
    assert same(other) == same(first)
    # Other settings: converted again, and the PNGs of the old settings are removed.
    (changed, conv3), _ = _convert(dicom_dir, tmp_path / "a", "data.window=percentile")
    assert conv3.summary["converted"] == 22
    left = {p.name for p in (tmp_path / "a" / "images").glob("*.png")}
    assert left == {it.path.name for it in changed.items}


def test_nifti_cases_give_masked_slices_and_one_patient_per_segmentation(nifti_dir, tmp_path):
    (disc, conv), cfg = _convert(nifti_dir, tmp_path / "run", "data.slices=middle:4")
    glioma = [it for it in disc.items if it.label == "glioma"]
    # 3 cases, 4 slices each (those with the lesion), case 0 twice (t1 and t2 share its segmentation)
    assert len(glioma) == 16 and all(it.mask_path.endswith("-mask.png") for it in glioma)
    assert all(load_image(it.mask_path).max() == 1.0 for it in glioma)
    assert len({it.subject for it in glioma}) == 3
    assert all(it.mask_path == "" for it in disc.items if it.label == "healthy")
    assert all(re.fullmatch(r"file-\d{5}-s00[2-5]", it.class_rel) for it in glioma)
    skipped = {d["path"]: d["reason"].split(" (")[0] for d in disc.skipped}
    assert sorted(skipped.values()) == ["4-D NIfTI volume", "segmentation volume", "segmentation volume",
                                        "segmentation volume", "truncated or corrupt NIfTI volume"]
    assert all(re.fullmatch(r"(healthy|glioma)/file-\d{5}", p) for p in skipped)


def test_a_class_left_without_images_is_an_error_with_the_reasons(nifti_dir, tmp_path):
    # data.slices=mask on healthy volumes without segmentations: nothing left of the class.
    with pytest.raises(DataError, match=r"class 'healthy' .*none of its DICOM/NIfTI files gave an image \(3 no segmentation for data.slices=mask, 1 4-D NIfTI volume\)"):
        _convert(nifti_dir, tmp_path / "run", "data.slices=mask", "data.classes=[healthy,glioma]")


def test_prepare_writes_manifest_and_audit_without_identifiers(nifti_dir, tmp_path, capsys):
    cfg = load_config("smoke", [*OVERRIDES, "data.slices=middle:3", "data.test_fraction=0.34", "data.val_fraction=0.2"])
    manifest = prepare_stage(cfg, tmp_path / "run", data_dir=nifti_dir)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert {"subject", "source_file", "mask_path"} <= set(df.columns)
    assert df.groupby("subject")["split"].nunique().max() == 1
    assert set(df["mode"]) == {"int16"} and df["source_file"].str.fullmatch(r"(healthy|glioma)/file-\d{5}").all()
    audit = json.loads((tmp_path / "run" / "data_audit.json").read_text())
    reasons = {d["reason"].split(" (")[0] for d in audit["skipped"]}
    assert reasons == {"4-D NIfTI volume", "truncated or corrupt NIfTI volume", "segmentation volume"}
    assert audit["medical"]["files"] == {"nifti": 9} and audit["medical"]["masks"] == 12
    out = capsys.readouterr()
    assert planted_hits(tmp_path / "run", (out.out, out.err)) == []


def test_new_settings_at_their_defaults_keep_earlier_prepare_keys(dicom_dir):
    cfg = load_config("smoke", OVERRIDES)
    disc = discover(dicom_dir, cfg.data)
    key = stage_key(cfg, disc)
    assert stage_key(load_config("smoke", [*OVERRIDES, "data.window=[0,1000]"]), disc) != key
    assert stage_key(load_config("smoke", [*OVERRIDES, "data.window=dicom", "data.slices=all"]), disc) == key


@pytest.mark.parametrize("override,message", [
    ("data.window=[200,100]", "data.window=[200.0,100.0]: as a list must be [low, high] with low < high"),
    ("data.window=auto", "data.window='auto': must be 'dicom', 'percentile' or [low, high]"),
    ("data.slices=middle:0", "data.slices='middle:0': must be 'all', 'mask'"),
    ("data.volume_axis=3", "data.volume_axis=3: must be one of 0, 1, 2"),
    ("data.dicom_frames=last", "data.dicom_frames='last': must be one of 'first', 'all'"),
])
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config("smoke", [override])


def test_choices_mirror_the_readers():
    assert CHOICES["data.dicom_frames"] == medical.DICOM_FRAMES and CHOICES["data.volume_axis"] == medical.AXES


def test_mixed_modalities_and_sizes_are_kept_and_warned_about(dicom_dir, tmp_path):
    import shutil

    from pydicom.data import get_testdata_file

    data = tmp_path / "mixed"
    shutil.copytree(dicom_dir, data)
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "healthy" / "ct.dcm")  # 128 px CT among 32 px MR
    (disc, conv), _ = _convert(data, tmp_path / "run")
    ct = [it for it in disc.items if conv.source.get(str(it.path), ("",))[0] == "DICOM CT"]
    assert len(ct) == 1 and load_image(ct[0].path).shape == (128, 128)
    assert conv.warnings[0].startswith("DICOM modalities differ: CT (healthy 1); MR (glioma 9, healthy 9)")
    # The shortcut audit and the manifest see the source's format and mode, not "PNG", "L".
    recs = [{"format": "PNG", "mode": "L"} for _ in disc.items]
    conv.annotate(disc.items, recs)
    assert {(r["format"], r["mode"]) for r in recs} == {("DICOM CT", "MONOCHROME2 16-bit"), ("DICOM MR", "MONOCHROME1 12-bit"),
                                                        ("DICOM MR", "MONOCHROME2 12-bit")}


def test_prepare_cli_takes_dicom_patients_from_headers_not_from_the_pattern(dicom_dir, tmp_path, capsys):
    # data.group_pattern names the patients of other images; it must not be demanded of DICOM files
    # (mutation caught: the up-front patient check run on unconverted DICOM files fails here).
    from medauc.cli import main

    out = tmp_path / "run"
    assert main(["prepare", "--config", "smoke", "--out", str(out), "--data", str(dicom_dir), *OVERRIDES,
                 "data.group_pattern=(sub-\\d+)"]) == 0
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert df["subject"].nunique() == 6 and (df["subject"].str.len() == 16).all()
    assert planted_hits(out, tuple(capsys.readouterr())) == []
    # Another run folder (another salt): the same split, image by image; only the hashes differ.
    assert main(["prepare", "--config", "smoke", "--out", str(tmp_path / "again"), "--data", str(dicom_dir), *OVERRIDES]) == 0
    again = pd.read_csv(tmp_path / "again" / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(zip(again["image_id"], again["split"])) == list(zip(df["image_id"], df["split"]))
    assert not set(again["subject"]) & set(df["subject"])
