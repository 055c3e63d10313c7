import subprocess
import sys

import pytest

from medauc.cli import build_parser, main
from medauc.stages import COMMANDS


def test_every_stage_has_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0
        assert name in capsys.readouterr().out


def test_bad_override_is_a_clear_error(capsys, tmp_path):
    rc = main(["prepare", "--config", "smoke", "--out", str(tmp_path / "r"), "data.nosuch=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown key data.nosuch" in err and "image_size" in err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "medauc", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "prepare" in out.stdout and "run" in out.stdout


def _folder_set(root, classes, n=10):
    import numpy as np
    from PIL import Image

    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            low = np.random.default_rng(100 * ci + i).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(low).resize((32, 32), Image.Resampling.BICUBIC).save(root / c / f"{i}.png")


def test_empty_data_classes_means_the_folders_found_in_every_stage(tmp_path, capsys):
    import json

    import pandas as pd

    from medauc.config import load_config

    data, out = tmp_path / "data", tmp_path / "run"
    _folder_set(data, ["tumour", "clear", "unsure"])
    common = ["--config", "smoke", "--out", str(out), "data.classes=[]", "data.negative_class=clear", "data.workers=1",
              "model.names=[test_resnet]", "train.epochs=1", "augment.enabled=false"]
    assert main(["prepare", "--data", str(data), *common]) == 0
    # config.yaml holds the classes found: the negative class first, then sorted
    assert load_config(str(out / "config.yaml")).data.classes == ("clear", "tumour", "unsure")
    assert main(["train", *common]) == 0, capsys.readouterr().err
    header = pd.read_csv(out / "predictions" / "test_resnet" / "0" / "test.csv", nrows=0).columns
    assert [c for c in header if c.startswith("prob_")] == ["prob_clear", "prob_tumour", "prob_unsure"]
    assert main(["evaluate", *common]) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["classes"] == ["clear", "tumour", "unsure"]
