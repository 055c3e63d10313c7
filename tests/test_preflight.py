"""Issue 27 case 7 (and 8): what is knowable before compute is refused before compute, leaving no run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medauc import cli


def refused(capsys: pytest.CaptureFixture[str], out: Path, *argv: str) -> str:
    assert cli.main([*argv[:1], "--config", "smoke", "--out", str(out), *argv[1:]]) == 2
    assert not out.exists(), "a refused command left a run folder behind"
    return capsys.readouterr().err


def test_missing_local_weights_are_refused_before_training(tmp_path, capsys):
    # was: found only at the train stage, after prepare and augment
    err = refused(capsys, tmp_path / "run", "run", "model.weights=/nonexistent")
    assert "model.weights=/nonexistent: no such file or folder" in err
    (tmp_path / "w").mkdir()
    err = refused(capsys, tmp_path / "run", "train", f"model.weights={tmp_path / 'w'}", "model.names=[test_resnet]")
    assert "no weights for 'test_resnet' in that folder" in err


def test_unreachable_pretrained_weights_are_refused_before_any_stage(tmp_path, capsys, monkeypatch):
    # was: --config study ran prepare and augment (124 s) before finding that they cannot be fetched
    import huggingface_hub.constants  # a lazy submodule: imported here, not only once timm has loaded it

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    err = refused(capsys, tmp_path / "run", "run", "model.pretrained=true", "model.names=[resnet18]")
    assert "weights of resnet18 are not in the local Hugging Face cache" in err and "model.pretrained=false" in err


def test_a_data_folder_typo_leaves_no_run_folder(tmp_path, capsys):
    # was: the run folder was created, and the corrected command refused as "a different configuration"
    err = refused(capsys, tmp_path / "run", "run", "--data", str(tmp_path / "typo"))
    assert f"--data {tmp_path / 'typo'} does not exist" in err
    err = refused(capsys, tmp_path / "run", "prepare", "data.source=folder", f"data.path={tmp_path / 'typo'}")
    assert f"data.path {tmp_path / 'typo'} does not exist" in err


def test_data_path_with_the_phantom_source_is_refused_not_ignored(tmp_path, capsys):
    # was (case 8): the run trained on the phantom, and config.yaml recorded both
    err = refused(capsys, tmp_path / "run", "run", f"data.path={tmp_path}")
    assert "data.source=phantom" in err and "add data.source=folder" in err


def test_a_negative_class_not_among_the_folders_found_is_refused_in_prepare(tmp_path, capsys):
    # was: data.classes=[] on a folder without healthy/ trained every model, then stopped in evaluate
    for c in ("glioma", "meningioma"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + (c == "glioma") * 9, np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    err = refused(capsys, tmp_path / "run", "prepare", "--data", str(tmp_path / "data"), "data.classes=[]")
    assert "data.negative_class='healthy' is not among the classes found" in err and "glioma, meningioma" in err
