"""The default config on a plain folder-per-class set whatever its file names: no file-name pattern
for the phantom's patients travels with it (the phantom names them itself, in its images.csv)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from medauc.cli import main
from medauc.config import load_config
from test_data_command import smooth

# The default config (demo) cut to seconds: one tiny model, no augmentation, few resamples.
TINY = ["data.classes=[healthy, glioma]", "data.image_size=32", "data.workers=1", "data.shortcut_audit=false",
        "model.names=[test_resnet]", "train.epochs_by_model={}", "train.lr_by_model={}", "train.epochs=1", "train.jobs=1", "train.batch_size=8", "augment.enabled=false",
        "evaluate.n_bootstrap=50", "evaluate.external={}", "explain.max_images=8", "explain.min_grid=1"]


def plain_folder(root):
    """healthy/ and glioma/ of 20 images each, named as a camera or an export names them (no patient)."""
    for c, label in enumerate(("healthy", "glioma")):
        for i in range(20):
            p = root / label / f"IMG {c}{i:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth(900 + 40 * c + i)).save(p)
    return root


def test_no_config_carries_a_file_name_pattern():
    # Mutation caught: data.group_pattern back in a built-in config (demo.yaml had '(sub-\d+)').
    for name in ("demo", "smoke", "study"):
        cfg = load_config(name)
        assert cfg.data.group_pattern == "" and cfg.data.groups_csv == "", name


@pytest.mark.slow
def test_prepare_and_run_with_the_default_config_on_a_plain_folder(tmp_path, capsys):
    data = plain_folder(tmp_path / "data")
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "prep"), *TINY]) == 0
    df = pd.read_csv(tmp_path / "prep" / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(df) == 40 and ("subject" not in df.columns or (df["subject"] == "").all())  # none invented
    assert json.loads((tmp_path / "prep" / "data_audit.json").read_text())["subjects"]["known"] is False
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unit"] == "images" and metrics["primary_metric"] == "auc_macro"
    assert (out / "report.html").is_file()
    capsys.readouterr()
