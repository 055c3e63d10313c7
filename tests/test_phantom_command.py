"""``medauc phantom`` on the command line."""

from __future__ import annotations

import json
import sys

import argparse

from medauc.cli import add_common_arguments
from medauc.config import load_config
from medauc.data.phantom import command
from medauc.errors import MedaucError


def main(argv: list[str]) -> int:
    """``medauc phantom ...`` as cli.main runs it, without importing every other stage (torch)."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.cfg = load_config(args.config, args.overrides)
    try:
        return command.main(args)
    except MedaucError as exc:
        print(f"medauc phantom: error: {exc}", file=sys.stderr)
        return 2


def test_phantom_command_writes_skips_and_refuses(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["phantom", "--config", "smoke", "--n", "6", "--size", "64", "--seed", "2", "--out", str(out), "phantom.workers=1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "6 images" in text and "anatomy:" in text and "images/s" in text
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 2 and meta["config"]["size"] == 64
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    changed = [a if a != "2" else "5" for a in args]
    assert main(changed) == 2
    assert "--force" in capsys.readouterr().err
    assert main(changed + ["--force"]) == 0
    assert json.loads((out / "phantom.json").read_text())["seed"] == 5
    assert len(list((out / "healthy").glob("*.png"))) == 2


def test_phantom_command_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["phantom", "--config", "smoke", "--n", "4", "--size", "64", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_killed_phantom_folder_is_refused_as_data_and_its_suggestion_rewrites_it(tmp_path, monkeypatch):
    # Issue 27: `medauc phantom --out DIR` killed left a half-written DIR that `prepare --data DIR` used silently
    import shlex

    import pytest

    from medauc import preflight

    out = tmp_path / "ph"
    real = command.generate_phantom

    def killed(folder, *args, **kwargs):
        (folder / "healthy").mkdir(parents=True)
        (folder / "healthy" / "sub-1_s00.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "generate_phantom", killed)
    args = ["phantom", "--config", "smoke", "--n", "6", "--size", "64", "--out", str(out), "phantom.workers=1"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(command, "generate_phantom", real)
    with pytest.raises(MedaucError, match="started writing this folder and did not finish") as exc:
        preflight.check_data(load_config("smoke"), str(out))
    fix = shlex.split(str(exc.value).split("`")[-2])  # the last command the message names
    assert fix[:3] == ["medauc", "phantom", "--force"] and "--n" in fix and "phantom.workers=1" in fix
    assert main(fix[1:]) == 0
    preflight.check_data(load_config("smoke"), str(out))  # whole now
    assert len(list((out / "healthy").glob("*.png"))) == 2
