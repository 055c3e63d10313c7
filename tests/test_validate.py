"""Up-front config checks: ranges, choices and timm names, before any stage runs."""

from __future__ import annotations

import time

from pathlib import Path

import pytest

from medauc import cli
from medauc.config import ConfigError, load_config
from medauc.errors import MedaucError
from medauc.validate import CHOICES, check_models


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
        ("data.image_size=0", "data.image_size=0: must lie in [8, 1024]"),
        ("data.image_size=2048", "data.image_size=2048: must lie in [8, 1024]"),
        ("train.epochs=0", "train.epochs=0: must be >= 1"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: must lie in (0, 1)"),
        ("train.optimizer=sgd", "train.optimizer='sgd': must be one of 'adam', 'adamw'"),
        ("data.near_duplicates=maybe", "data.near_duplicates='maybe': must be one of 'report', 'merge'"),
        ("explain.methods=[gradcam,foo]", "'foo' is not one of 'gradcam'"),
        ("augment.image_size=33", "augment.image_size=33: must be divisible by 2"),
        ("evaluate.prevalences=[0.5,2]", "2.0 must lie in (0, 1)"),
        ("data.classes=[glioma,pituitary]", "data.negative_class='healthy': must be one of data.classes"),
        ("data.group_pattern=(sub-\\d+", "data.group_pattern='(sub-\\\\d+': is not a valid regular expression"),
        ("data.group_pattern=sub-\\d+", "needs exactly one capture group, the part of the path that names the patient (it has 0)"),
        ("data.group_pattern=(sub)-(\\d+)", "(it has 2)"),
    ],
)
def test_out_of_range_values_name_key_and_range(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config("smoke", [override])
    assert message in str(exc.value)
    assert isinstance(exc.value, MedaucError)


def test_model_names_are_checked_against_timm_with_suggestions():
    with pytest.raises(ConfigError, match=r"model.names\[1\]='densnet121': not a timm model; similar names: densenet121"):
        check_models(load_config("smoke", ["model.names=[test_resnet,densnet121]"]))
    with pytest.raises(ConfigError, match="augment.strategy_model='resnet_18'.*resnet18"):
        check_models(load_config("smoke", ["augment.strategy_model=resnet_18"]))
    check_models(load_config("smoke", ["augment.enabled=false", "augment.strategy_model=nothing"]))  # not used


@pytest.mark.parametrize("command", ["prepare", "train", "run"])
def test_every_command_refuses_before_any_stage(tmp_path, capsys, command):
    out = tmp_path / "r"
    t = time.perf_counter()
    rc = cli.main([command, "--config", "smoke", "--out", str(out), "model.names=[notamodel]"])
    assert rc == 2 and time.perf_counter() - t < 30  # no phantom, no prepare: just the registry
    assert "model.names[0]='notamodel': not a timm model" in capsys.readouterr().err
    assert not out.exists()


def test_choices_mirror_the_stages():
    from medauc.strategies.stage import STRATEGIES
    from medauc.classify import train
    from medauc.device import AMP_DTYPES
    from medauc.explain.cam import METHODS

    assert CHOICES["augment.strategies"] == STRATEGIES
    assert CHOICES["explain.methods"] == tuple(METHODS)
    assert CHOICES["train.imbalance"] == train.IMBALANCE and CHOICES["train.optimizer"] == train.OPTIMIZERS
    assert CHOICES["train.schedule"] == train.SCHEDULES and CHOICES["train.amp_dtype"] == AMP_DTYPES


def test_shipped_timm_names_equal_the_installed_timm_and_need_no_torch(monkeypatch):
    """timm_models.txt is the pinned timm's list_models(): names are checked without importing torch
    (after a timm upgrade: scripts/update_timm_names.py)."""
    import subprocess
    import sys

    import timm

    from medauc.validate import timm_model_names

    assert timm_model_names() == timm.list_models()
    # a fresh interpreter checks a good and a bad name without loading torch
    code = ("import sys; from medauc.config import load_config; from medauc.validate import check_models\n"
            "check_models(load_config('smoke', ['model.names=[resnet18,resnet18.a1_in1k]']))\n"
            "try:\n    check_models(load_config('smoke', ['model.names=[densnet121]']))\nexcept Exception as e: print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "similar names: densenet121" in out and out.strip().endswith("False")
    monkeypatch.setattr("medauc.validate.TIMM_NAMES", Path(timm.__file__))  # not a names file: falls back to timm itself
    assert timm_model_names() is None
    with pytest.raises(ConfigError, match="not a timm model"):
        check_models(load_config("smoke", ["model.names=[densnet121]"]))


def test_cli_refuses_a_bad_config_before_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from medauc.cli import main\n"
            "rc = main(['train', '--config', 'smoke', '--out', '/nonexistent/x', 'train.batch_size=0'])\n"
            "print(rc, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "2 False" and "train.batch_size=0: must be >= 1" in run.stderr
