"""`medauc run` end to end on a DICOM folder and on a NIfTI folder, at smoke size; no patient
identifier planted in the files' headers or folder names reaches any output."""

import json

import pandas as pd
import pytest

from medauc.cli import main
from invariants import assert_evaluated_per_patient
from medical_data import make_dicom_tree, make_nifti_tree, planted_hits

# Smoke, cut to one model and one strategy: the formats are under test, not the models.
FAST = ["model.names=[test_resnet]", "augment.strategies=[balanced]", "evaluate.n_bootstrap=50",
        "explain.max_images=8", "data.classes=[healthy,glioma]", "data.source=folder"]


def _run(tmp_path, capsys, data, *extra):
    out = tmp_path / "run"
    assert main(["run", "--config", "smoke", "--out", str(out), "--data", str(data), *FAST, *extra]) == 0
    captured = capsys.readouterr()
    return out, captured.out + captured.err


@pytest.mark.slow
def test_dicom_folder_runs_end_to_end_and_keeps_patients_whole_and_unnamed(tmp_path, capsys):
    data = make_dicom_tree(tmp_path / "export")
    out, log = _run(tmp_path, capsys, data)
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["table1"]] == ["test_resnet"]
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    # 6 patients x 4 files per class, the multi-frame file as its first frame; the bundled files skipped
    assert len(df) == 48 and df["subject"].nunique() == 12
    assert df.groupby("subject")["split"].nunique().max() == 1  # a patient in one split
    assert df["path"].str.startswith("images/").all()  # inside the run folder: relative, the folder can move
    from medauc.data.manifest import read_manifest

    assert read_manifest(out / "manifest.csv")["path"].str.startswith(str(out / "images")).all()
    audit = json.loads((out / "data_audit.json").read_text())
    reasons = {d["path"]: d["reason"] for d in audit["skipped"]}
    assert any("JPEG Extended" in r and "1.2.840.10008.1.2.4.51" in r for r in reasons.values())
    assert any(r.startswith("non-image DICOM (SOP class Comprehensive SR Storage") for r in reasons.values())
    assert any(r.startswith("colour DICOM") for r in reasons.values())
    assert any(r.startswith("truncated or corrupt DICOM") for r in reasons.values())
    assert audit["medical"]["subject_from"] == {"PatientID": 48}
    # Mutation caught: predictions written without the subject column (evaluation then runs per image).
    assert_evaluated_per_patient(out)
    # Mutation caught: a stored path, id, file name, log line or report naming the patient.
    assert planted_hits(out, (log,)) == []
    # The trained model on the same export: every patient recognised by the run's salted hash, nothing named.
    pred_dir = tmp_path / "predict"
    assert main(["predict", "--run", str(out), str(data), "--out", str(pred_dir / "p.csv")]) == 0
    captured = capsys.readouterr()
    pred = pd.read_csv(pred_dir / "p.csv", dtype=str, keep_default_na=False)
    assert len(pred) == 48 and set(pred["subject"]) == set(df["subject"])
    splits = df.groupby("subject")["split"].first()
    assert (pred["seen_in_run"] == pred["subject"].map(splits)).all()
    assert "48 image(s) come from patients whose images this run trained" in captured.err
    assert len([x for x in captured.err.splitlines() if x.startswith("medauc predict: skipped")]) == 4
    assert planted_hits(pred_dir, (captured.out + captured.err,)) == []


@pytest.mark.slow
def test_nifti_folder_runs_end_to_end_with_masks_and_one_patient_per_case(tmp_path, capsys):
    data = make_nifti_tree(tmp_path / "brats")
    out, log = _run(tmp_path, capsys, data, "data.slices=middle:4")
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    # 6 cases per class, 4 slices each, plus the glioma case with a second (t2) volume
    assert len(df) == 52 and df["subject"].nunique() == 12
    glioma = df[df["label"] == "glioma"]
    assert (glioma["mask_path"] != "").all() and (df.loc[df["label"] == "healthy", "mask_path"] == "").all()
    explain = json.loads((out / "explain.json").read_text())
    assert explain["n_with_mask"] > 0  # Grad-CAM scored against the converted masks
    audit = json.loads((out / "data_audit.json").read_text())
    reasons = [d["reason"] for d in audit["skipped"]]
    assert any(r.startswith("4-D NIfTI volume") for r in reasons)
    assert any(r.startswith(("truncated or corrupt NIfTI", "not a readable NIfTI")) for r in reasons)
    assert_evaluated_per_patient(out)
    assert planted_hits(out, (log,)) == []
