"""The chosen model in use, on a smoke run: `medauc predict` (PNG and DICOM input, no patient identifiers),
`medauc export` to ONNX (checked against PyTorch, tampering caught), the model card and its link in the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medauc.cli import main
from medauc.fileio import read_json
from cache_env import cache_at
from medical_data import PLANTED, dicom_dataset, planted_hits, write_dicom, write_sr

MODELS = ("test_resnet", "test_vit")  # the smoke config's: a CNN and a transformer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A smoke run without augmentation (check e's card text is tested on test_pipeline's full run)."""
    root = tmp_path_factory.mktemp("deploy")
    with cache_at(root / "cache"):
        assert main(["run", "--config", "smoke", "--out", str(root / "run"), "augment.enabled=false",
                     "explain.max_images=8"]) == 0
    return root / "run"


def _test_rows(run):
    manifest = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    return manifest[manifest["split"] == "test"].reset_index(drop=True)


def _max_diff(pred: pd.DataFrame, run, model: str) -> float:
    """Largest |p| difference between predict's rows (with an image_id column) and the run's test.csv."""
    ref = pd.read_csv(run / "predictions" / model / "0" / "test.csv")
    cols = [c for c in ref.columns if c.startswith("prob_")]
    got = pred.set_index("image_id").loc[ref["image_id"], cols].to_numpy()
    return float(np.abs(got - ref[cols].to_numpy()).max())


def test_predict_from_png_equals_the_runs_test_predictions_for_every_model(run, tmp_path, capsys):
    test = _test_rows(run)
    metrics = read_json(run / "metrics.json")
    for model in MODELS:
        out = tmp_path / f"{model}.csv"
        assert main(["predict", "--run", str(run), "--model", model, *test["path"], "--out", str(out), "--paths"]) == 0
        pred = pd.read_csv(out, keep_default_na=False)
        assert len(pred) == len(test) and list(pred["input"])[:2] == ["file-00001", "file-00002"]
        pred["image_id"] = pred["path"].map(dict(zip(test["path"], test["image_id"])))
        # Mutations caught: another resize or rounding, a missing normalisation, channels, softmax, row order.
        assert _max_diff(pred, run, model) <= 1e-6, model
        side = read_json(out.with_suffix(".json"))
        threshold = metrics["models"][model]["seeds"]["0"]["operating_point"]["threshold"]
        assert side["threshold"] == threshold and "configured operating point" in side["threshold_source"]
        assert side["preprocessing"]["image_size"] == 32 and side["model"] == model
        np.testing.assert_allclose(pred["screening_score"], 1 - pred["prob_healthy"], atol=1e-12)
        assert (pred["screening_positive"].astype(int) == (pred["screening_score"] >= threshold)).all()
    assert "configured operating point" in capsys.readouterr().out


def _dicom_export(run, root):
    """The run's test images as DICOM files of one planted patient, in a folder named after him, as a PACS exports
    them; the window maps the stored values back to the PNG's 8-bit levels exactly. Plus two unreadable inputs."""
    from medauc.data.images import load_image

    folder = root / "Zyxwvu_Qortsa_0"
    for i, path in enumerate(_test_rows(run)["path"]):
        ds = dicom_dataset(load_image(path), i + 1, window=(500.5, 1001.0))  # stored = round(1000 * level / 255)
        write_dicom(folder / f"IM{i:04d}", ds)
    write_sr(folder / "SR0001.dcm")  # a structured report: no image
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return folder


def test_predict_from_dicom_equals_the_runs_test_predictions_and_names_no_patient(run, tmp_path, capsys):
    folder = _dicom_export(run, tmp_path / "pacs")
    test = _test_rows(run)
    out_dir = tmp_path / "out"
    for model in MODELS:
        cam = ["--cam", str(out_dir / "cam")] if model == MODELS[0] else []
        out = out_dir / f"{model}.csv"
        assert main(["predict", "--run", str(run), "--model", model, str(folder), "--out", str(out), *cam]) == 0
        pred = pd.read_csv(out, dtype={"subject": str}, keep_default_na=False)
        # IM0000.. in sorted order are the test images in manifest order; the report and the broken PNG give no row
        assert list(pred["input"]) == [f"file-{i + 1:05d}" for i in range(len(test))]
        pred["image_id"] = list(test["image_id"])
        assert _max_diff(pred, run, model) <= 1e-6, model
        assert "path" not in pred.columns and pred["subject"].nunique() == 1 and len(pred["subject"][0]) == 16
        assert (pred["seen_in_run"] == "").all()  # the phantom run knows no patients
    captured = capsys.readouterr()
    log = captured.out + captured.err
    skipped = [line for line in captured.err.splitlines() if line.startswith("medauc predict: skipped")]
    assert len(skipped) == 2 * len(MODELS)  # one line per unreadable input, per call
    assert any(f"file-{len(test) + 1:05d}: non-image DICOM" in line for line in skipped)  # SR0001.dcm
    assert any(f"file-{len(test) + 2:05d}: not an image PIL can read" in line for line in skipped)  # broken.png
    assert len(list((out_dir / "cam").glob("file-*.png"))) == len(test)
    # Mutation caught: a path, folder name, PatientID, UID or name in the CSV, the JSON, a CAM file name or the log.
    assert planted_hits(out_dir, (log,)) == []
    assert not any(p.lower() in json.dumps(read_json(out_dir / "test_resnet.json")).lower() for p in PLANTED)


def test_predict_refuses_to_overwrite_and_names_the_trained_models(run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("mine\n")
    path = _test_rows(run)["path"][0]
    assert main(["predict", "--run", str(run), path, "--out", str(out)]) == 2
    assert out.read_text() == "mine\n" and "--force" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--model", "resnet18", path, "--out", str(tmp_path / "q.csv")]) == 2
    assert "trained: test_resnet, test_vit" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--seed", "3", path, "--out", str(tmp_path / "q.csv")]) == 2
    assert "trained seeds: 0" in capsys.readouterr().err
    # weights changed since training recorded them: named, not used
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("cache", "explain", "curves"))
    with open(copy / "train" / "test_vit" / "0" / "best.safetensors", "ab") as fh:
        fh.write(b"\0")
    assert main(["predict", "--run", str(copy), "--model", "test_vit", path, "--out", str(tmp_path / "q.csv")]) == 2
    assert "best.safetensors is not the file that was recorded" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(run):
    for model in MODELS:
        assert main(["export", "--run", str(run), "--model", model]) == 0
    return {m: run / "export" / m / "0" for m in MODELS}


def test_onnx_equals_pytorch_for_a_cnn_and_a_transformer(run, exported):
    import onnx
    import onnxruntime as ort

    from medauc.data.datasets import load_images

    test = _test_rows(run)
    images = load_images(test["path"], 32).unsqueeze(1).float().numpy()  # 8-bit levels, as the metadata says
    for model, folder in exported.items():
        facts = read_json(folder / "export.json")
        assert facts["check"]["n_images"] == len(test) and max(facts["check"]["max_abs_diff"].values()) <= 1e-4
        meta = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
        assert json.loads(meta["medauc.classes"]) == ["healthy", "glioma", "meningioma", "pituitary"]
        assert json.loads(meta["medauc.preprocessing"])["image_size"] == 32
        # Independently of the export's own check: onnxruntime against the run's predictions file.
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        probs = session.run(["probabilities"], {"image": images})[0]
        pred = pd.DataFrame(probs, columns=[f"prob_{c}" for c in json.loads(meta["medauc.classes"])])
        pred["image_id"] = list(test["image_id"])
        assert _max_diff(pred, run, model) <= 1e-4, model


def test_a_tampered_or_foreign_onnx_file_is_caught(run, exported, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(exported["test_resnet"] / "model.onnx"))
    # the classifier head's bias (the only (4,) tensor), one logit moved by 0.001
    init = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).shape == (4,))
    bias = numpy_helper.to_array(init).copy()
    bias[1] += np.float32(1e-3)
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, str(tampered))
    assert main(["export", "--run", str(run), "--model", "test_resnet", "--verify", str(tampered)]) == 2
    err = capsys.readouterr().err
    assert "does not reproduce the PyTorch model" in err and "probabilities by" in err and "tolerance 0.0001" in err
    # another model's file, and a damaged one
    assert main(["export", "--run", str(run), "--model", "test_resnet", "--verify", str(exported["test_vit"] / "model.onnx")]) == 2
    assert "does not reproduce" in capsys.readouterr().err
    (tmp_path / "cut.onnx").write_bytes((exported["test_resnet"] / "model.onnx").read_bytes()[:5000])
    assert main(["export", "--run", str(run), "--model", "test_resnet", "--verify", str(tmp_path / "cut.onnx")]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err
    assert main(["export", "--run", str(run), "--model", "test_resnet", "--verify", str(exported["test_resnet"] / "model.onnx")]) == 0


def test_an_operator_onnx_cannot_convert_is_named():
    import torch
    from torch import nn

    from medauc.deploy.onnx_export import to_onnx
    from medauc.errors import ExportError

    @torch.library.custom_op("medauc_test::mystery", mutates_args=(), schema="(Tensor x) -> Tensor")
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    mystery.register_fake(lambda x: torch.empty_like(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(mystery(x).flatten(1))

    meta = {"in_chans": 1, "mean": [0.5], "std": [0.5], "image_size": 8, "classes": ["a", "b", "c"]}
    with pytest.raises(ExportError, match=r"mystery_net cannot be exported to ONNX: it uses the operator medauc_test\.mystery"):
        to_onnx(Net().eval(), meta, "mystery_net", torch.zeros(2, 8, 8, dtype=torch.uint8))


def test_model_card_has_its_sections_and_the_report_links_it(run, exported):
    card = (exported["test_vit"] / "model_card.md").read_text()
    for heading in ("## Model details", "## Intended use", "## Data", "## Evaluation", "### Operating threshold",
                    "### Calibration", "## Explanations (Grad-CAM)", "## Limitations, as measured in this run", "## How to use"):
        assert heading in card, heading
    threshold = read_json(run / "metrics.json")["models"]["test_vit"]["seeds"]["0"]["operating_point"]["threshold"]
    assert f"screening threshold {threshold:.6g}" in card and "macro one-vs-rest AUC" in card and "Brier score" in card
    assert "synthetic phantom" in card and "Checked against PyTorch on" in card
    assert "No external test set" in card  # this run has none: the card says what is not measured
    results = read_json(run / "results.json")
    assert results["model_cards"] == ["export/test_resnet/0/model_card.md", "export/test_vit/0/model_card.md"]
    assert "(<export/test_vit/0/model_card.md>)" in (run / "report.md").read_text()
    assert 'href="export/test_vit/0/model_card.md"' in (run / "report.html").read_text()
