import subprocess
import sys

import pytest

from medauc.cli import STAGES, build_parser, main


def test_every_stage_has_help(capsys):
    parser = build_parser()
    for name in STAGES:
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
