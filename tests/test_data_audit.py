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


def test_near_pairs_matches_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    h[150] = h[3] ^ np.uint64(0b1011)  # 3 bits apart
    h[299] = h[0]
    got = {tuple(p) for p in audit.near_pairs(h, 3, block=64)}
    want = {(i, j) for i in range(300) for j in range(i + 1, 300) if bin(int(h[i]) ^ int(h[j])).count("1") <= 3}
    assert got == want and (3, 150) in got and (0, 299) in got


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
    by_image = audit.shortcut_audit(recs, labels, classes, seed=0)
    by_patient = audit.shortcut_audit(recs, labels, classes, seed=0, groups=groups)
    assert by_image["folds_by"] == "image" and by_image["macro"] > 0.9
    assert by_patient["folds_by"] == "patient" and by_patient["macro"] < 0.7
