"""audit.py: exact and near duplicates, label conflicts, statistics and the shortcut audit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medauc.data import audit


def smooth(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    """uint8 (h, w): a random 8x8 field upsampled, structured enough for perceptual hashing."""
    low = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC))


def _save(path: Path, arr: np.ndarray, **kw) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return str(path)


def test_png_and_bmp_of_one_image_are_exact_duplicates(tmp_path):
    a = smooth(1)
    recs = audit.scan_files([_save(tmp_path / "a.png", a), _save(tmp_path / "a.bmp", a), _save(tmp_path / "b.png", smooth(2))])
    assert recs[0]["sha256"] == recs[1]["sha256"] != recs[2]["sha256"]
    assert recs[0]["format"] == "PNG" and recs[1]["format"] == "BMP"
    dup = audit.duplicate_groups([r["sha256"] for r in recs], [r["phash"] for r in recs], 6)
    assert dup["exact"] == [[0, 1]] and dup["near"] == []
    assert dup["group"][0] == dup["group"][1] != dup["group"][2]


def test_resized_jpeg_copy_is_a_near_duplicate_and_others_are_not(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", smooth(i)) for i in range(20)]
    small = Image.fromarray(smooth(3)).resize((48, 48), Image.Resampling.BILINEAR)
    paths.append(_save(tmp_path / "copy.jpg", np.asarray(small), quality=80))
    recs = audit.scan_files(paths)
    dup = audit.duplicate_groups([r["sha256"] for r in recs], [r["phash"] for r in recs], 6)
    assert dup["exact"] == []
    assert dup["near"] == [[3, 20]]
    assert recs[20]["width"] == 48 and recs[20]["format"] == "JPEG"


def test_label_conflicts_exact_and_near():
    sha = ["a", "a", "b", "c", "d"]
    group = np.array([0, 0, 1, 1, 2])
    labels = ["glioma", "healthy", "glioma", "pituitary", "glioma"]
    out = audit.label_conflicts(group, labels, sha, ["i0", "i1", "i2", "i3", "i4"])
    assert [(c["kind"], c["labels"], c["image_ids"]) for c in out] == [
        ("exact", ["glioma", "healthy"], ["i0", "i1"]),
        ("near", ["glioma", "pituitary"], ["i2", "i3"]),
    ]


def test_bad_files_become_records_with_reasons(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    recs = audit.scan_files([str(tmp_path / "z.png"), _save(tmp_path / "ok.png", smooth(0))])
    assert recs[0] == {"error": "zero-byte file"}
    assert "sha256" in recs[1]


def test_parallel_scan_equals_serial(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", smooth(i, 16, 16)) for i in range(70)]
    assert audit.scan_files(paths, workers=2, min_parallel=0) == audit.scan_files(paths, workers=1)


def _records(n_per_class: int, confound: bool, seed: int = 0):
    """Metadata records of generated PNGs, in memory: the audit needs only what scan_file returns."""
    recs, labels = [], []
    rng = np.random.default_rng(seed)
    for c in ["healthy", "glioma", "meningioma", "pituitary"]:
        for _ in range(n_per_class):
            h, w = (48, 64) if confound and c == "healthy" else (64, 64)
            arr = smooth(int(rng.integers(1 << 30)), h, w)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            rec = {"width": w, "height": h, "mode": "L", "format": "PNG", "file_size": buf.tell()}
            rec.update(audit.intensity_features(arr / 255.0))
            recs.append(rec)
            labels.append(c)
    return recs, labels


def test_shortcut_audit_flags_a_confounded_set_and_not_a_clean_one():
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    recs, labels = _records(40, confound=True)
    bad = audit.shortcut_audit(recs, labels, classes, seed=0)
    assert bad["max"] > 0.9 and bad["per_class"]["healthy"] == bad["max"]
    assert bad["top_features"][0]["class"] == "healthy"
    assert bad["top_features"][0]["feature"] in ("height", "aspect_ratio", "log_file_size", "bytes_per_pixel")
    recs, labels = _records(40, confound=False)
    clean = audit.shortcut_audit(recs, labels, classes, seed=0)
    assert clean["max"] < 0.7 and abs(clean["macro"] - 0.5) < 0.1
    assert set(clean["per_class"]) == set(classes) and clean["folds"] == 5


def test_shortcut_audit_skips_when_a_class_is_tiny_and_stats_per_class():
    recs, labels = _records(3, confound=False)
    recs, labels = recs[:7], labels[:7]  # pituitary absent, meningioma 1 image
    out = audit.shortcut_audit(recs, labels, ["healthy", "glioma", "meningioma"], seed=0)
    assert out["max"] is None and "fewer than 2" in out["note"]
    stats = audit.class_stats(recs, labels, ["healthy", "glioma", "meningioma"])
    assert stats["healthy"]["n"] == 3 and stats["healthy"]["formats"] == {"PNG": 3}
    assert stats["healthy"]["aspect_ratio"]["median"] == pytest.approx(1.0)


def test_shortcut_audit_folds_keep_patients_whole():
    # Each patient's scanner gives all its slices one image size, unrelated to the class. Folds by
    # image see a patient's other slices in training and "predict" the class from the size (a
    # patient shortcut); folds by patient must not. Catches passing groups=None or plain KFold.
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    rng = np.random.default_rng(1)
    recs, labels, groups = [], [], []
    for p in range(48):
        label, side = classes[p % 4], int(rng.integers(40, 120))
        for _ in range(5):
            recs.append({"width": side, "height": side, "mode": "L", "format": "PNG", "file_size": side * side,
                         **{k: 0.5 for k in audit.INTENSITY_FEATURES}})
            labels.append(label)
            groups.append(p)
    by_patient = audit.shortcut_audit(recs, labels, classes, seed=0, groups=groups)
    assert by_patient["folds_by"] == "patient" and by_patient["macro"] < 0.7
    # Patients unknown: clusters of near-identical metadata stand in for them (folds by image: macro 0.98).
    by_cluster = audit.shortcut_audit(recs, labels, classes, seed=0)
    assert by_cluster["folds_by"] == "metadata cluster" and by_cluster["macro"] < 0.7


def _slices(n_patients: int, per_patient: int, confound: bool, seed: int = 0):
    """Records of patients with several slices each: a patient's scanner fixes its noise, contrast
    and file size (identity in the metadata); the class has no effect unless ``confound`` (every
    healthy image 48 px high)."""
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    rng = np.random.default_rng(seed)
    recs, labels, patients = [], [], []
    for p in range(n_patients):
        label = classes[p % 4]
        noise, contrast, size = rng.uniform(0.01, 0.06), rng.uniform(0.8, 1.2), rng.uniform(9, 11)
        h = 48 if confound and label == "healthy" else 64
        for s in range(per_patient):
            depth = s / per_patient
            feats = {k: contrast * (0.3 + 0.02 * depth + 0.02 * i) + rng.normal(0, 0.002)
                     for i, k in enumerate(audit.INTENSITY_FEATURES)}
            feats["std"] = noise + rng.normal(0, 0.001)
            recs.append({"width": 64, "height": h, "mode": "L", "format": "PNG",
                         "file_size": float(np.exp(size + 5 * noise + rng.normal(0, 0.01))), **feats})
            labels.append(label)
            patients.append(p)
    return recs, labels, patients


@pytest.mark.parametrize("per_patient", [4, 8])
def test_shortcut_audit_is_quiet_without_a_shortcut_and_loud_with_one_patients_known_or_not(per_patient):
    # Issue 23: folds by image gave AUC about 1 on a phantom with no shortcut (a patient's slices
    # share its metadata and its label). Catches folds by image when patients are unknown, and a
    # clustering so coarse that a confounded class becomes one cluster (the audit then skips or misses it).
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    for confound in (False, True):
        recs, labels, patients = _slices(120, per_patient, confound)
        for groups in (None, patients):
            out = audit.shortcut_audit(recs, labels, classes, seed=0, groups=groups)
            if confound:
                assert out["max"] > 0.9 and out["per_class"]["healthy"] == out["max"], (groups is None, out["max"])
            else:
                assert out["max"] < audit.SHORTCUT_WARN_AUC, (groups is None, out["max"])


def test_shortcut_audit_verdict_does_not_depend_on_data_size():
    # The audit samples at most SHORTCUT_MAX_IMAGES images; a sample that keeps fewer slices per
    # patient must not turn a warning into silence or back (issue 23: 0.998 at 1k, 0.906 at 7k).
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    for n_patients in (120, 800):
        quiet = audit.shortcut_audit(*_slices(n_patients, 6, False)[:2], classes, seed=0)
        loud = audit.shortcut_audit(*_slices(n_patients, 6, True)[:2], classes, seed=0)
        assert quiet["max"] < audit.SHORTCUT_WARN_AUC and loud["max"] > 0.9, n_patients
