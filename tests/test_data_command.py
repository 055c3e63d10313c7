"""`medauc prepare` end to end on a messy folder, the stage cache, and the manifest contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medauc import cli
from medauc.config import load_config
from medauc.data.command import _warnings, prepare_stage
from medauc.data.manifest import read_manifest, write_manifest
from medauc.errors import DataError
from medauc.runs import open_run

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def smooth(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    low = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC))


def _messy(root: Path) -> None:
    for ci, c in enumerate(CLASSES):
        for i in range(8):
            p = root / c / f"img{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth(100 * ci + i)).save(p)
    Image.fromarray(smooth(0)).save(root / "healthy" / "img0_copy.bmp")  # exact duplicate of healthy/img0
    Image.fromarray(smooth(101)).save(root / "healthy" / "from_glioma.png")  # same image under two classes
    Image.fromarray(smooth(102)).convert("RGB").resize((24, 24)).save(root / "glioma" / "img2_small.jpg", quality=85)
    Image.fromarray(smooth(7)).convert("RGBA").save(root / "pituitary" / "rgba.png")
    (root / "glioma" / "empty.png").write_bytes(b"")
    (root / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "meningioma" / "notes.txt").write_text("x")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "healthy" / "Thumbs.db").write_bytes(b"\0")
    (root / "masks" / "glioma").mkdir(parents=True)
    Image.fromarray((smooth(9) > 128).astype(np.uint8) * 255).save(root / "masks" / "glioma" / "img1.png")


def test_cli_prepare_on_a_messy_folder(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    _messy(data)
    rc = cli.main(["prepare", "--data", str(data), "--out", str(out), "--config", "smoke", "data.workers=1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "prepare: 36 images, 4 classes" in printed and "label conflict" in printed

    df = read_manifest(out / "manifest.csv")
    assert len(df) == 36 and df["image_id"].is_unique
    assert set(df["split"]) == {"train", "val", "test"}
    assert all(Path(p).is_absolute() for p in df["path"])
    assert list(df.columns[:10]) == ["image_id", "path", "label", "split", "sha256", "phash", "width", "height", "mode", "group"]
    masked = df[df["mask_path"] != ""]
    assert list(masked["image_id"]) == ["glioma/img1"] and Path(masked["mask_path"].iloc[0]).is_file()
    for _, grp in df.groupby("group"):
        assert grp["split"].nunique() == 1

    audit = json.loads((out / "data_audit.json").read_text())
    for key in ("counts", "unreadable", "exact_duplicate_groups", "near_duplicate_groups", "label_conflicts",
                "cross_split_duplicates", "class_stats", "shortcut_auc"):
        assert key in audit
    assert sum(audit["counts"]["total"].values()) == 36
    assert sorted(Path(u["path"]).name for u in audit["unreadable"]) == ["broken.jpg", "empty.png"]
    skipped = {Path(s["path"]).name for s in audit["skipped"]}
    assert {".DS_Store", "Thumbs.db", "notes.txt"} <= skipped
    assert any(set(g) == {"healthy/img0", "healthy/img0_copy"} for g in audit["exact_duplicate_groups"])
    assert any(set(g) == {"glioma/img2", "glioma/img2_small"} for g in audit["near_duplicate_groups"])
    assert any(c["labels"] == ["glioma", "healthy"] and c["kind"] == "exact" for c in audit["label_conflicts"])
    assert set(audit["shortcut_auc"]["per_class"]) == set(CLASSES)
    assert audit["class_stats"]["pituitary"]["modes"] == {"L": 8, "RGBA": 1}

    # same command again: cached, nothing rewritten
    mtime = (out / "manifest.csv").stat().st_mtime_ns
    assert cli.main(["prepare", "--data", str(data), "--out", str(out), "--config", "smoke", "data.workers=1"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "manifest.csv").stat().st_mtime_ns == mtime

    # other data into the same run: refused without --force, recomputed with it
    Image.fromarray(smooth(555)).save(data / "glioma" / "new.png")
    args = ["prepare", "--data", str(data), "--out", str(out), "--config", "smoke", "data.workers=1"]
    assert cli.main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(args + ["--force"]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 37


def test_prepare_stage_given_split_and_errors(tmp_path):
    for split, n in (("Training", 6), ("Testing", 3)):
        for ci, c in enumerate(["notumor", "glioma"]):
            for i in range(n):
                p = tmp_path / "masoud" / split / c / f"{split[:2]}-{i}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(smooth(1000 * ci + 10 * i + len(split))).save(p, quality=95)
    copy = tmp_path / "masoud" / "Training" / "glioma" / "copy-of-Te-0.jpg"  # a Training copy of a Testing image
    copy.write_bytes((tmp_path / "masoud" / "Testing" / "glioma" / "Te-0.jpg").read_bytes())
    cfg = load_config("smoke", ["data.split=given", "data.classes=[healthy, glioma]", "data.workers=1",
                                "data.shortcut_audit=false"])
    run = open_run(tmp_path / "run", cfg)
    df = read_manifest(prepare_stage(cfg, run, data_dir=tmp_path / "masoud"))
    assert (df["split"] == "test").sum() == 6 and (df["split"] == "val").sum() == 2  # the copy is not moved
    audit = json.loads((run / "data_audit.json").read_text())
    (group,) = audit["given_split_duplicates"]
    assert len(group) == 2 and any("copy-of-Te-0" in i for i in group)
    assert any("given test set" in w for w in audit["warnings"])
    assert all("/Testing/" in p for p in df.loc[df["split"] == "test", "path"])
    assert set(df["label"]) == {"healthy", "glioma"}

    cfg2 = load_config("smoke", ["data.source=folder"])
    with pytest.raises(DataError, match="--data DIR or set data.path"):
        prepare_stage(cfg2, open_run(tmp_path / "run2", cfg2))

    bad = tmp_path / "bad"
    for i in range(3):
        (bad / "healthy").mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth(i)).save(bad / "healthy" / f"{i}.png")
        (bad / "glioma").mkdir(exist_ok=True)
        (bad / "glioma" / f"{i}.png").write_bytes(b"")
    cfg3 = load_config("smoke", ["data.classes=[healthy, glioma]", "data.workers=1"])
    with pytest.raises(DataError, match=r"single class.*3 file\(s\) could not be read.*zero-byte"):
        prepare_stage(cfg3, open_run(tmp_path / "run3", cfg3), data_dir=bad)


def test_manifest_validation_names_file_and_column(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="cannot be parsed"):
        read_manifest(tmp_path / "empty.csv")
    df = pd.DataFrame({"image_id": ["a/1"], "path": ["/x/1.png"], "label": ["a"], "split": ["train"]})
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m\.csv lacks column 'sha256'"):
        read_manifest(tmp_path / "m.csv")
    full = df.assign(sha256="00", phash="0a", width=3, height=4, mode="L", group=0, mask_path="", sigma="")
    write_manifest(tmp_path / "ok.csv", full)
    back = read_manifest(tmp_path / "ok.csv")
    assert back["phash"].iloc[0] == "0a" and back["mask_path"].iloc[0] == "" and back["width"].dtype == np.int64
    assert np.isnan(back["sigma"].iloc[0])
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        write_manifest(tmp_path / "bad.csv", full.assign(split="holdout"))
    with pytest.raises(DataError, match="appears more than once"):
        write_manifest(tmp_path / "bad.csv", pd.concat([full, full]))


def test_warnings_for_shortcuts_conflicts_and_giant_groups():
    shortcut = {"per_class": {"healthy": 0.97, "glioma": 0.6}, "max": 0.97,
                "top_features": [{"feature": "aspect_ratio", "class": "healthy", "auc": 0.99}]}
    out = _warnings(shortcut, [{"labels": ["a", "b"]}], largest_group=40, n=1000, hamming=6)
    assert len(out) == 3
    assert "'healthy' with AUC 0.97" in out[0] and "aspect_ratio" in out[0]
    assert "1 label conflict" in out[1] and "40 images" in out[2]
    assert _warnings({"per_class": {"a": 0.6}, "max": 0.6}, [], largest_group=3, n=1000, hamming=6) == []


def _patients(root: Path) -> None:
    """Two classes, 8 patients each of 3 near-identical slices; healthy p0 and p1 look alike (one
    base image): near-duplicates between two different patients."""
    for ci, c in enumerate(["healthy", "glioma"]):
        for p in range(8):
            base = smooth(50 * ci + (0 if (ci, p) == (0, 1) else p)).astype(np.int16)
            for s in range(3):
                noise = np.random.default_rng(1000 * ci + 10 * p + s).integers(-2, 3, base.shape)
                path = root / c / f"p{ci}{p}_s{s}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


def test_near_duplicates_between_patients_are_reported_and_merged_only_when_asked(tmp_path, capsys):
    _patients(tmp_path / "data")
    common = ["data.classes=[healthy, glioma]", "data.workers=1", "data.shortcut_audit=false",
              r"data.group_pattern=(p\d+)_", "data.test_fraction=0.25", "data.val_fraction=0.2"]
    out = {}
    for mode in ("report", "merge"):
        cfg = load_config("smoke", [*common, f"data.near_duplicates={mode}"])
        run = open_run(tmp_path / mode, cfg)
        df = read_manifest(prepare_stage(cfg, run, data_dir=tmp_path / "data"))
        out[mode] = (df, json.loads((run / "data_audit.json").read_text()), capsys.readouterr().out)
    df, audit, printed = out["report"]
    links = audit["near_duplicate_patients"]
    assert links["mode"] == "report" and links["patient_pairs"] == 1 and links["image_pairs"] >= 3
    assert all({a.split("/")[1][:3], b.split("/")[1][:3]} == {"p00", "p01"} for a, b in links["examples"])
    assert links["joined_patients"] == 0 and df.groupby("subject")["group"].nunique().max() == 1
    assert df.loc[df["subject"] == "p00", "group"].iloc[0] != df.loc[df["subject"] == "p01", "group"].iloc[0]
    assert "near-duplicate image pair(s) between 1 pair(s) of different patients" in printed
    df, audit, printed = out["merge"]
    links = audit["near_duplicate_patients"]
    assert links["joined_patients"] == 2 and links["largest_joined"] == {"patients": 2, "images": 6}
    assert len(set(df.loc[df["subject"].isin(["p00", "p01"]), "split"])) == 1  # one split for the two
    assert "2 patients joined into 1 group(s)" in printed


def test_prepare_key_gains_near_duplicates_only_where_patients_may_be_known(tmp_path):
    # Run folders made without patient ids keep their prepare keys (the setting acts on links
    # between patients only); with patients the default changed what prepare writes, so it is keyed.
    import hashlib

    from medauc.config import config_hash, replace, without_later_defaults
    from medauc.data.command import _KEY_IGNORES, _KEY_LATER, stage_key
    from medauc.data.sources import discover

    _messy(tmp_path)
    cfg = load_config("smoke")
    disc = discover(tmp_path, cfg.data)
    key = stage_key(cfg, disc)
    data = {k: v for k, v in without_later_defaults(cfg.data, _KEY_LATER).items()
            if k not in _KEY_IGNORES and k != "near_duplicates"}
    files = hashlib.sha256(json.dumps(sorted(disc.fingerprint)).encode()).hexdigest()
    assert key == config_hash(data, cfg.seed, str(disc.root), files)  # the key before issue 23
    assert stage_key(replace(cfg, **{"data.near_duplicates": "merge"}), disc) == key
    pat = replace(cfg, **{"data.group_pattern": r"(img\d)"})
    assert stage_key(pat, disc) != stage_key(replace(pat, **{"data.near_duplicates": "merge"}), disc)
