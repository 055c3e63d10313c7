"""Patients (subjects): from data.group_pattern / data.groups_csv to the split, the manifest, the
audit, the predictions files and the report's data section."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medauc import cli
from medauc.config import ConfigError, load_config
from medauc.data.command import prepare_stage, stage_key
from medauc.data.manifest import read_manifest, write_manifest
from medauc.data.sources import SourceItem, discover
from medauc.data.split import combine_groups, split_indices
from medauc.data.subjects import assign_subjects, check_settings, read_groups_csv
from medauc.errors import DataError
from medauc.report.context import Context
from medauc.report.document import Document, to_markdown
from medauc.report.sections.data import data_section
from medauc.runs import open_run
from test_data_command import smooth

PATTERN = r"^[^/]+/(sub-\d+)_"
# (subject, class, slices): uneven sizes; sub-03 and sub-08 hold slices of two classes
LAYOUT = [("sub-01", "healthy", 3), ("sub-02", "healthy", 1), ("sub-03", "healthy", 2), ("sub-03", "glioma", 3),
          ("sub-04", "glioma", 4), ("sub-05", "glioma", 1), ("sub-06", "healthy", 2), ("sub-07", "glioma", 2),
          ("sub-08", "healthy", 1), ("sub-08", "glioma", 2), ("sub-09", "healthy", 3), ("sub-10", "glioma", 2),
          ("sub-11", "healthy", 2), ("sub-12", "glioma", 3), ("sub-13", "healthy", 2), ("sub-14", "glioma", 2)]


def _folder(root: Path, wrapper: str = "") -> Path:
    """A folder-per-class set below ``root`` (inside ``wrapper`` if given) with patients in the file names."""
    base = root / wrapper if wrapper else root
    k = 0
    for subject, label, n in LAYOUT:
        for i in range(n):
            p = base / label / f"{subject}_slice{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth(500 + k)).save(p)
            k += 1
    # An exact duplicate of a sub-01 slice filed under sub-02: the two patients become one group.
    shutil.copy(base / "healthy" / "sub-01_slice0.png", base / "healthy" / "sub-02_slice9.png")
    return root


def _cfg(*extra: str):
    return load_config("smoke", ["data.classes=[healthy, glioma]", "data.workers=1", "data.shortcut_audit=false", *extra])


# ----------------------------------------------------------------------------- settings and their errors




def test_both_keys_set_is_an_error_at_load_and_in_prepare(tmp_path):
    with pytest.raises(ConfigError, match="name the patients one way"):
        load_config("smoke", ["data.group_pattern=(x)", "data.groups_csv=a.csv"])
    from medauc.config import replace

    both = replace(load_config("smoke"), **{"data.group_pattern": "(x)", "data.groups_csv": "a.csv"})
    with pytest.raises(DataError, match="are both set"):
        check_settings(both.data)  # callers that bypass load_config


def test_groups_csv_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"data.groups_csv=.*none.csv: file not found.*columns path .* and group"):
        read_groups_csv(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,patient\na.png,1\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) 'path', 'group' \(has: 'file', 'patient'\)"):
        read_groups_csv(bad)
    bad.write_text("path,group\n")
    with pytest.raises(DataError, match="no rows"):
        read_groups_csv(bad)
    bad.write_text("path,group\na.png,1\nb.png,\n")
    with pytest.raises(DataError, match="empty path or group in 1 row.*lines 3"):
        read_groups_csv(bad)
    bad.write_text("path,group\na.png,1\n./a.png,2\n")
    with pytest.raises(DataError, match="a.png is given two patients, '1' and '2'"):
        read_groups_csv(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("path, group ,note\nhealthy\\007.png, 007 ,x\n./glioma/b.png,p2,\n")
    # Windows separators, ./ and spaces are normalised; "007" stays text, not the number 7.
    assert read_groups_csv(ok) == {"healthy/007.png": "007", "glioma/b.png": "p2"}


def test_pattern_fills_subjects_and_unmatched_images_are_listed(tmp_path):
    data = _folder(tmp_path / "d")
    cfg = _cfg(f"data.group_pattern={PATTERN}")
    disc = discover(data, cfg.data)
    items, source = assign_subjects(disc.items, data, disc.root, cfg.data)
    assert source == "data.group_pattern"
    assert {it.subject for it in items} == {f"sub-{i:02d}" for i in range(1, 15)}
    assert all(it.subject == it.path.name.split("_")[0] for it in items)
    # the pattern sees the path relative to data.path: a class-less pattern start misses every image
    for i in range(7):
        Image.fromarray(smooth(900 + i)).save(data / "glioma" / f"extra{i}.png")
    disc = discover(data, cfg.data)
    with pytest.raises(DataError) as exc:
        assign_subjects(disc.items, data, disc.root, cfg.data)
    msg = str(exc.value)
    assert "does not match (or captures nothing in) 7 of" in msg and "glioma/extra0.png" in msg and "(7 in all)" in msg
    assert "one patient's slices could land in two splits" in msg
    # a reader's subject (file headers) is kept: only the empty ones need the pattern
    from_header = [SourceItem(it.path, it.label, it.rel, it.class_rel, subject="hdr") if "extra" in it.rel else it for it in disc.items]
    items, source = assign_subjects(from_header, data, disc.root, cfg.data)
    assert source == "data.group_pattern and file headers" and sum(it.subject == "hdr" for it in items) == 7


def test_groups_csv_relative_to_data_path_with_or_without_the_wrapper_folder(tmp_path):
    data = _folder(tmp_path / "d", wrapper="Brain MRI")  # one wrapper folder, stepped through by discover
    rels = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    table = pd.DataFrame({"path": rels, "group": [r.split("/")[-1].split("_")[0].upper() for r in rels]})
    # half the rows name the path below the wrapper folder: both forms are accepted
    table.loc[::2, "path"] = table.loc[::2, "path"].str.replace("Brain MRI/", "", regex=False)
    table.to_csv(tmp_path / "groups.csv", index=False)
    cfg = _cfg(f"data.groups_csv={tmp_path / 'groups.csv'}")
    disc = discover(data, cfg.data)
    assert disc.root.name == "Brain MRI"
    items, source = assign_subjects(disc.items, data, disc.root, cfg.data)
    assert source == "data.groups_csv" and all(it.subject == it.path.name.split("_")[0].upper() for it in items)

    pd.concat([table, pd.DataFrame({"path": ["healthy/gone.png", "x/y.png"], "group": ["A", "B"]})]).to_csv(
        tmp_path / "extra.csv", index=False)
    with pytest.raises(DataError, match=r"names 2 file\(s\) that do not exist .*healthy/gone.png, x/y.png"):
        assign_subjects(disc.items, data, disc.root, _cfg(f"data.groups_csv={tmp_path / 'extra.csv'}").data)
    table.iloc[3:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"the CSV has no row for 3 of .* add a row \(path, group\)"):
        assign_subjects(disc.items, data, disc.root, _cfg(f"data.groups_csv={tmp_path / 'short.csv'}").data)


# ----------------------------------------------------------------------------- the split


def _patients(seed: int, n_subjects: int = 120):
    """Uneven patients (1 to 30 slices); tumour patients also have healthy slices."""
    rng = np.random.default_rng(seed)
    classes = ["healthy", "glioma", "meningioma", "pituitary"]
    labels, subjects = [], []
    for s in range(n_subjects):
        c = int(rng.integers(4))
        for _ in range(int(rng.integers(1, 31))):
            labels.append(classes[c] if c == 0 or rng.random() < 0.7 else "healthy")
            subjects.append(f"p{s:03d}")
    n = len(labels)
    return np.array(labels, dtype=object), np.array(subjects, dtype=object), np.array([f"k{i:05d}" for i in range(n)], dtype=object)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_patient_in_one_split_and_classes_stay_stratified(seed):
    labels, subjects, keys = _patients(seed)
    groups = np.arange(len(labels))
    groups[[3, 400]] = 3  # a duplicate pair joins two patients into one group
    res = split_indices(labels, groups, keys, seed=seed, subjects=subjects)
    assert res.by_subject
    for s in np.unique(subjects):
        assert len(set(res.split[subjects == s])) == 1, s  # a patient in two splits is impossible
    assert res.split[3] == res.split[400]  # ... and so is a duplicate group across splits
    for c in np.unique(labels):
        n = np.sum(labels == c)
        n_test = math.ceil(0.3 * n)
        n_val = math.ceil(0.1 * (n - n_test))
        for split, want in (("test", n_test), ("val", n_val)):
            got = np.sum((labels == c) & (res.split == split))
            # Whole patients of up to 30 slices cannot hit the plan exactly; 3% of a class is a few
            # patients. The same split blind to the classes misses by 6-13% here.
            assert abs(got - want) <= 0.03 * n, (c, split, got, want)
    # same seed, any input order: the same split
    perm = np.random.default_rng(9).permutation(len(labels))
    again = split_indices(labels[perm], groups[perm], keys[perm], seed=seed, subjects=subjects[perm])
    np.testing.assert_array_equal(res.split[perm], again.split)


def test_no_patients_split_exactly_as_before():
    # Digests of the split that medauc wrote before patients existed (same inputs, seed 7): without
    # a known patient the split must not change by a single image, random or given.
    rng = np.random.default_rng(5)
    counts = {"healthy": 300, "glioma": 200, "meningioma": 150, "pituitary": 120}
    labels = np.array([c for c, n in counts.items() for _ in range(n)], dtype=object)
    keys = np.array([f"{c}/{i:05d}" for c, n in counts.items() for i in range(n)], dtype=object)
    groups = np.arange(len(labels))
    for _ in range(60):
        a, b = rng.integers(len(labels), size=2)
        groups[groups == groups[b]] = groups[a]
    given = np.where(rng.random(len(labels)) < 0.25, "test", "train")
    for kw, digest in (({}, "8ec5d6e7dfaa91eb"), ({"given": given}, "c6958d9924013c50")):
        for subjects in (None, [""] * len(labels)):
            res = split_indices(labels, groups, keys, seed=7, subjects=subjects, **kw)
            assert hashlib.sha256("".join(res.split).encode()).hexdigest()[:16] == digest
            assert not res.by_subject
    np.testing.assert_array_equal(combine_groups(groups, [""] * len(labels)), groups)


def test_combined_groups_join_duplicates_and_patients():
    groups = np.array([0, 1, 1, 2, 3, 4])  # images 1 and 2 are duplicates
    subjects = ["a", "a", "b", "b", "", "c"]  # a-b joined through the duplicate; "" joins nothing
    np.testing.assert_array_equal(combine_groups(groups, subjects), [0, 0, 0, 0, 1, 2])


def test_given_split_keeps_its_test_set_and_reports_patients_in_both():
    labels, subjects, keys = _patients(3, n_subjects=40)
    given = np.where(np.isin(subjects, [f"p{i:03d}" for i in range(0, 40, 4)]), "test", "train")
    straddler = np.flatnonzero(subjects == "p001")[0]
    given[straddler] = "test"  # the data set's own split put one slice of p001 in its test set
    res = split_indices(labels, np.arange(len(labels)), keys, seed=0, given=given, subjects=subjects)
    assert np.array_equal(res.split == "test", given == "test")
    assert res.cross_subjects == ("p001",) and res.cross_split == ()  # patients reported apart from duplicates
    for s in np.unique(subjects[given == "train"]):
        if s != "p001":
            assert len(set(res.split[subjects == s])) == 1, s  # val takes whole patients
    assert (res.split == "val").any()


def test_too_few_patients_of_a_class_is_an_error_naming_it():
    labels = np.array(["healthy"] * 40 + ["glioma"] * 6, dtype=object)
    subjects = np.array([f"h{i // 4}" for i in range(40)] + ["g0"] * 3 + ["g1"] * 3, dtype=object)
    keys = np.array([f"{i:03d}" for i in range(46)], dtype=object)
    with pytest.raises(DataError, match="class 'glioma' has images of 2 patient group"):
        split_indices(labels, np.arange(46), keys, seed=0, subjects=subjects)


# ----------------------------------------------------------------------------- prepare, manifest, audit


def test_prepare_with_a_pattern_writes_subjects_groups_and_counts(tmp_path, capsys):
    data = _folder(tmp_path / "d")
    cfg = _cfg(f"data.group_pattern={PATTERN}")
    run = open_run(tmp_path / "run", cfg)
    df = read_manifest(prepare_stage(cfg, run, data_dir=data))
    printed = capsys.readouterr().out
    assert list(df.columns[9:11]) == ["group", "subject"]
    assert (df["subject"] == df["path"].map(lambda p: Path(p).name.split("_")[0])).all()
    for _, rows in df.groupby("subject"):
        assert rows["split"].nunique() == 1
    # group: components of duplicates and patients; sub-01 and sub-02 share a duplicate
    assert df.groupby("group")["subject"].nunique().max() == 2
    assert df.loc[df["subject"].isin(["sub-01", "sub-02"]), "group"].nunique() == 1
    assert df.loc[df["subject"] == "sub-03", "group"].nunique() == 1

    audit = json.loads((run / "data_audit.json").read_text())
    sa = audit["subjects"]
    assert sa["known"] and sa["source"] == "data.group_pattern" and sa["n_subjects"] == 14
    assert sa["in_two_splits"] == [] and sa["across_classes"] == 2  # sub-03 and sub-08
    assert sum(sa["counts"][s]["all"] for s in ("train", "val", "test")) == 14
    for s in ("train", "val", "test", "total"):
        for c in ("healthy", "glioma"):
            rows = df if s == "total" else df[df["split"] == s]
            assert sa["counts"][s][c] == rows.loc[rows["label"] == c, "subject"].nunique()
    assert audit["exact_duplicate_groups"] == [["healthy/sub-01_slice0", "healthy/sub-02_slice9"]]  # duplicates only
    assert "patients: 14 (from data.group_pattern), each in one split" in printed

    # the manifest round trip keeps the column, as text
    df2 = df.assign(subject=["007"] * len(df))
    write_manifest(tmp_path / "m.csv", df2)
    back = read_manifest(tmp_path / "m.csv")
    assert back["subject"].tolist() == ["007"] * len(df) and back["group"].dtype == np.int64

    # the pattern is part of the stage key; without patients the key is what it was before the keys existed
    disc = discover(data, cfg.data)
    plain = _cfg()
    assert stage_key(cfg, disc) != stage_key(plain, disc)
    from medauc.config import config_hash, to_dict

    # the data settings that made the key before patients (and other later keys) existed
    before = ("source", "classes", "aliases", "split", "test_fraction", "val_fraction", "near_duplicate_hamming", "shortcut_audit")
    old = {k: v for k, v in to_dict(plain.data).items() if k in before}
    files = hashlib.sha256(json.dumps(sorted(disc.fingerprint)).encode()).hexdigest()
    assert stage_key(plain, disc) == config_hash(old, plain.seed, str(disc.root), files)


def test_prepare_without_patients_says_so_and_writes_no_subject_column(tmp_path, capsys):
    data = _folder(tmp_path / "d")
    cfg = _cfg()
    run = open_run(tmp_path / "run", cfg)
    df = read_manifest(prepare_stage(cfg, run, data_dir=data))
    assert "subject" not in df.columns
    sa = json.loads((run / "data_audit.json").read_text())["subjects"]
    assert sa["known"] is False and "slices of one patient may sit in train and test" in sa["note"]
    assert "patients: unknown" in capsys.readouterr().out


def test_groups_csv_content_enters_the_cache_key_and_errors_leave_no_run_folder(tmp_path, capsys):
    data = _folder(tmp_path / "d")
    rels = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    csv = tmp_path / "g.csv"
    pd.DataFrame({"path": rels, "group": [r.split("/")[1].split("_")[0] for r in rels]}).to_csv(csv, index=False)
    cfg = _cfg(f"data.groups_csv={csv}")
    disc = discover(data, cfg.data)
    key = stage_key(cfg, disc)
    pd.DataFrame({"path": rels, "group": ["one"] * len(rels)}).to_csv(csv, index=False)
    assert stage_key(cfg, disc) != key  # same path, other patients: prepare runs again

    out = tmp_path / "run"
    rc = cli.main(["prepare", "--data", str(data), "--out", str(out), "--config", "smoke",
                   "data.classes=[healthy, glioma]", f"data.groups_csv={tmp_path / 'missing.csv'}"])
    assert rc == 2 and "missing.csv: file not found" in capsys.readouterr().err
    rc = cli.main(["prepare", "--data", str(data), "--out", str(out), "--config", "smoke",
                   "data.classes=[healthy, glioma]", "data.group_pattern=(nomatch)"])
    assert rc == 2 and "does not match (or captures nothing in) 36 of 36 image(s)" in capsys.readouterr().err
    assert not out.exists()


def test_given_layout_reports_patients_in_its_train_and_test_sets(tmp_path):
    k = 0
    for split, subjects in (("Training", range(0, 12)), ("Testing", range(11, 16))):  # sub-11 is in both
        for s in subjects:
            for label in ("notumor", "glioma"):
                p = tmp_path / "d" / split / label / f"sub-{s:02d}_{label}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(smooth(700 + k)).save(p)
                k += 1
    cfg = _cfg("data.split=given", "data.group_pattern=(sub-\\d+)_")
    run = open_run(tmp_path / "run", cfg)
    df = read_manifest(prepare_stage(cfg, run, data_dir=tmp_path / "d"))
    assert all("/Testing/" in p for p in df.loc[df["split"] == "test", "path"])  # the test set as given
    audit = json.loads((run / "data_audit.json").read_text())
    assert audit["subjects"]["given_split_subjects"] == ["sub-11"] and audit["subjects"]["in_two_splits"] == ["sub-11"]
    assert audit["given_split_duplicates"] == []  # the duplicate list stays about duplicates
    assert any("1 patient(s) have images in both the given training and test sets" in w for w in audit["warnings"])


# ----------------------------------------------------------------------------- predictions and the report


def test_predictions_carry_the_subject_after_the_label(tmp_path):
    from medauc.classify.predict import predict_manifest, predictions_frame
    from medauc.classify.stage import train_stage
    from medauc.evaluate.predictions import read_predictions
    from test_classify_models import make_dataset

    manifest = make_dataset(tmp_path / "data", {"train": 4, "val": 2, "test": 2})
    df = pd.read_csv(manifest)
    df["subject"] = [f"{i // 2:03d}" for i in range(len(df))]  # "000": must stay text
    df.to_csv(manifest, index=False)
    cfg = load_config("smoke", ["model.names=[test_resnet]", "train.epochs=1", "train.batch_size=8"])
    result = train_stage(cfg, tmp_path / "run", manifest)[0]
    truth = dict(zip(df["image_id"], df["subject"]))
    for split in ("val", "test"):
        pred = pd.read_csv(result["predictions"][split], dtype={"subject": str})
        assert list(pred.columns[:3]) == ["image_id", "label", "subject"]
        assert pred["subject"].tolist() == [truth[i] for i in pred["image_id"]]
        assert read_predictions(result["predictions"][split], classes=["healthy", "glioma", "meningioma", "pituitary"]).n == len(pred)
    out = predict_manifest(result["model_dir"], df[df["split"] == "test"], tmp_path / "p.csv")
    assert list(out.columns[:3]) == ["image_id", "label", "subject"]
    # without known patients the file has no subject column
    plain = predictions_frame(["a"], ["healthy"], __import__("torch").zeros(1, 2), ["healthy", "glioma"])
    assert list(plain.columns) == ["image_id", "label", "prob_healthy", "prob_glioma"]


def test_derived_images_keep_their_source_patient():
    from medauc.augment.generate import derived_rows

    src = pd.DataFrame({"image_id": ["healthy/a"], "label": ["healthy"], "group": [4], "subject": ["sub-07"]})
    (row,) = derived_rows(src, [(0, 0.1, 0)], "restoration")
    assert row["subject"] == "sub-07" and row["group"] == 4


def _report_data(tmp_path, subjects):
    cfg = _cfg()
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for i in range(24):
        label = ("healthy", "glioma")[i % 2]
        rows.append({"image_id": f"{label}/{i}", "label": label, "split": ("train", "val", "test")[(i // 2) % 3],
                     "group": i, **({"subject": subjects(i)} if subjects else {})})
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    ctx = Context(cfg, run, Document("t"), {})
    data_section(ctx)
    return to_markdown(ctx.doc), ctx.results["data"]


def test_report_states_patients_per_split_and_class(tmp_path):
    # patient = (i // 6) within a split block: "007"-style ids stay text
    md, res = _report_data(tmp_path, lambda i: f"{(i // 6) * 10 + (i // 2) % 3:03d}")
    assert "Patients per class and split" in md and "12 patients" in md
    assert res["patients"]["known"] and res["patients"]["n_patients"] == 12
    assert res["patients"]["counts"]["healthy"] == {"train": 4, "val": 4, "test": 4}
    assert res["patients"]["per_split"] == {"train": 4, "val": 4, "test": 4}
    assert "No patient ids" not in md


def test_report_says_what_unknown_patients_mean(tmp_path):
    md, res = _report_data(tmp_path, None)
    assert res["patients"] == {"known": False}
    assert "No patient ids are known" in md
    assert "slices of one patient may therefore sit in both train and test" in md.lower()
    assert "intervals may be too narrow" in md


def test_a_backtracking_group_pattern_is_stopped_naming_the_path(monkeypatch):
    # Issue 27 case 9: a catastrophic data.group_pattern hung prepare silently, doubling per character.
    # Nested repetition is refused at config load; overlapping alternatives are stopped by a time bound.
    from medauc.data import subjects
    from medauc.errors import DataError

    assert subjects.search_bounded(r"(sub-\d+)", ["x/sub-12_s0.png", "y/none.png"]) == ["sub-12", None]
    monkeypatch.setattr(subjects, "SEARCH_SECONDS", 1.0)
    slow = "healthy/" + "a" * 40 + "!.png"
    with pytest.raises(DataError, match=r"matching took more than 1 s and was stopped, on 'healthy/aaa.*' \(1 of 2 paths done\)"):
        subjects.search_bounded(r"((?:a|a)*b)", ["healthy/b.png", slow])
