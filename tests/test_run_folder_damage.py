"""Damaged run folders, as found when the pipeline was tried the way a reliability engineer would.

Each test damages a copy of one small real run (prepare, train and evaluate through the CLI) and
checks what each command then does: before the stage registry, a truncated manifest was "up to
date", `--force` rebuilt downstream stages from it, and a truncated predictions file was evaluated.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medauc import cli
from medauc.records import stage_record

CLASSES = ["healthy", "glioma", "meningioma"]
ARGS = ["--config", "smoke", "data.workers=1", "data.shortcut_audit=false", "model.names=[test_resnet]",
        "train.epochs=1", "augment.enabled=false", "data.classes=[healthy,glioma,meningioma]"]


def _truncate(path: Path, drop_rows: int = 3) -> bytes:
    """Cut the last ``drop_rows`` rows off a CSV, at a row boundary: it still parses. Returns the original bytes."""
    good = path.read_bytes()
    path.write_bytes(b"".join(good.splitlines(keepends=True)[:-drop_rows]))
    return good


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    for ci, c in enumerate(CLASSES):
        for i in range(12):
            low = np.random.default_rng(100 * ci + i).integers(0, 256, (8, 8), dtype=np.uint8)
            (root / "data" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(low).resize((32, 32), Image.Resampling.BICUBIC).save(root / "data" / c / f"{i}.png")
    out = root / "run"
    assert cli.main(["prepare", "--data", str(root / "data"), "--out", str(out), *ARGS]) == 0
    assert cli.main(["train", "--out", str(out), *ARGS]) == 0
    assert cli.main(["evaluate", "--out", str(out), *ARGS]) == 0
    return root


@pytest.fixture
def run(finished, tmp_path):
    # A copy at the same depth: the manifest's image paths point into finished/data, which stays.
    out = tmp_path / "run"
    shutil.copytree(finished / "run", out)
    return out


def main(*argv: str) -> int:
    return cli.main([*argv, *ARGS])


def test_truncated_manifest_is_not_up_to_date_and_nothing_is_built_from_it(run, finished, capsys):
    good = _truncate(run / "manifest.csv")
    model = run / "train" / "test_resnet" / "0" / "best.safetensors"
    before = model.stat().st_mtime_ns
    data = ["--data", str(finished / "data")]
    assert main("prepare", "--out", str(run), *data) == 2  # was: "manifest.csv is up to date ... nothing to do"
    err = capsys.readouterr().err
    assert f"{run / 'manifest.csv'} is not the file that was recorded" in err and "pass --force to rebuild prepare" in err
    # was: `--force` on the next stage rebuilt it from the damaged manifest and overwrote good outputs
    assert main("train", "--force", "--out", str(run)) == 2
    err = capsys.readouterr().err
    assert "manifest.csv is not the file that was recorded" in err and f"run `medauc prepare --force --out {run}`" in err
    assert model.stat().st_mtime_ns == before
    assert main("prepare", "--force", "--out", str(run), *data) == 0  # was: "up to date" under --force too
    assert (run / "manifest.csv").read_bytes() == good
    capsys.readouterr()
    assert main("train", "--out", str(run)) == 0  # the same manifest again: nothing to retrain
    assert "train: up to date" in capsys.readouterr().out and model.stat().st_mtime_ns == before


def test_truncated_predictions_file_is_not_evaluated(run, capsys):
    test_csv = run / "predictions" / "test_resnet" / "0" / "test.csv"
    metrics = (run / "metrics.json").read_bytes()
    good = _truncate(test_csv)
    for force in ([], ["--force"]):
        assert main("evaluate", "--out", str(run), *force) == 2  # was: evaluated silently, 3 images short
        err = capsys.readouterr().err
        assert f"{test_csv} is not the file that was recorded" in err and "stage 'train' wrote it and evaluate reads it" in err
        assert f"run `medauc train --force --out {run}` to rebuild it" in err
    assert (run / "metrics.json").read_bytes() == metrics
    assert main("train", "--out", str(run)) == 2  # changed, maybe by hand: replaced only when asked
    assert "pass --force to rebuild train" in capsys.readouterr().err
    model = run / "train" / "test_resnet" / "0" / "best.safetensors"
    before = model.stat().st_mtime_ns
    assert main("train", "--force", "--out", str(run)) == 0
    assert model.stat().st_mtime_ns == before  # the predictions are rewritten from the model, not retrained
    rewritten, original = pd.read_csv(test_csv), pd.read_csv(io.BytesIO(good))
    assert list(rewritten["image_id"]) == list(original["image_id"])
    np.testing.assert_allclose(rewritten.filter(like="prob_"), original.filter(like="prob_"), atol=1e-6)  # float32 noise
    assert main("evaluate", "--force", "--out", str(run)) == 0


def test_a_deleted_model_file_is_retrained_not_loaded(run):
    # Mutation caught: a model's own record trusted without its files (load_best on a missing file).
    (run / "train" / "test_resnet" / "0" / "best.safetensors").unlink()
    assert main("train", "--out", str(run)) == 0  # missing: rebuilt without --force
    rec = stage_record(run, "train/test_resnet/0")
    assert set(rec["files"]) == {f"train/test_resnet/0/{f}" for f in ("best.safetensors", "model.json", "history.csv")}
    assert stage_record(run, "train")["files"]["train/test_resnet/0/best.safetensors"] == rec["files"]["train/test_resnet/0/best.safetensors"]
