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


# ----------------------------------------------------------------------------- issue 27: one line, never a traceback


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(e in err for e in expected), err
    return err


def test_yaml_syntax_errors_and_duplicate_keys_are_one_line(tmp_path, capsys):
    # was: a 7-line message for a syntax error; a duplicate key taken silently (the last one won)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 2\n  lr: [0.1\nmodel:\n  names: [test_resnet]\n")
    _one_line_error(capsys, ["prepare", "--config", str(bad)], f"{bad}: not valid YAML at line 4")
    bad.write_text("train:\n  epochs: 2\n  epochs: 8\n")
    _one_line_error(capsys, ["prepare", "--config", str(bad)], f"{bad}: line 3: key 'epochs' is given twice")


def test_sizes_that_cannot_fit_and_catastrophic_group_patterns_are_refused_at_load(tmp_path, capsys):
    # was: data.image_size=100000 accepted (2048 ran out of memory); data.group_pattern='(a+)+' hung prepare
    out = str(tmp_path / "r")
    _one_line_error(capsys, ["prepare", "--config", "smoke", "--out", out, "data.image_size=100000"],
                    "data.image_size=100000", "[8, 1024]")
    _one_line_error(capsys, ["prepare", "--config", "smoke", "--out", out, "data.group_pattern=(s+)+x"],
                    "data.group_pattern", "repeats a part that itself repeats")


def test_running_out_of_memory_is_one_line(monkeypatch, capsys):
    import medauc.evaluate.compare_cli as compare_cli

    def oom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 79.3 GiB total capacity)")

    monkeypatch.setattr(compare_cli, "main", oom)
    _one_line_error(capsys, ["compare", "a.csv", "b.csv"], "ran out of memory", "lower data.image_size")

    def other(args):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(compare_cli, "main", other)
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not disguised as memory
        main(["compare", "a.csv", "b.csv"])


def test_sigterm_ends_the_command_with_a_message(monkeypatch, capsys):
    # was: SIGTERM ended the command without a word
    import os
    import signal
    import threading
    import time

    import medauc.evaluate.compare_cli as compare_cli

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(compare_cli, "main", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["compare", "a.csv", "b.csv"]) == 143
    assert "medauc compare: terminated (SIGTERM); run the same command again to continue" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before
