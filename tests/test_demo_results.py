"""benchmarks/demo_results.py: the seconds per stage of two runs side by side (--baseline)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("demo_results", Path(__file__).parents[1] / "benchmarks" / "demo_results.py")
demo_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_results)


def _run(folder: Path, last: dict[str, float], computed: dict[str, float], commit: str) -> Path:
    folder.mkdir()
    (folder / "timings.json").write_text(json.dumps({"last_run": last, "computed": computed}), encoding="utf-8")
    (folder / "environment.json").write_text(json.dumps({"git_commit": commit}), encoding="utf-8")
    return folder


def test_baseline_table_uses_computed_seconds_and_keeps_stages_of_either_run(tmp_path, capsys):
    # The rerun found "train" up to date (0.2 s last time): its computed 400 s is what compares.
    run = _run(tmp_path / "new", {"train": 0.2, "external": 20.0, "total": 20.2}, {"train": 400.0, "external": 20.0}, "a" * 40)
    base = _run(tmp_path / "old", {"train": 500.0, "strategies": 100.0, "total": 600.0},
                {"train": 500.0, "strategies": 100.0}, "b" * 40)
    assert demo_results.main(["--run", str(run), "--baseline", str(base), "--out", "-"]) == 0
    text = capsys.readouterr().out
    assert f"Back to back with {base} (commit bbbbbbb)" in text
    assert "| train | 500.0 | 400.0 | 0.80 |" in text
    assert "| external | - | 20.0 | - |" in text       # a stage only this run has
    assert "| strategies | 100.0 | - | - |" in text     # a stage only the baseline has
    assert "| **total** | 600.0 | 420.0 | 0.70 |" in text
    lines = text.splitlines()
    assert lines.index("| train | 500.0 | 400.0 | 0.80 |") < lines.index("| **total** | 600.0 | 420.0 | 0.70 |")


def test_baseline_without_timings_is_refused_before_anything_is_written(tmp_path, capsys):
    run = _run(tmp_path / "new", {"train": 1.0, "total": 1.0}, {"train": 1.0}, "a" * 40)
    out = tmp_path / "demo.md"
    assert demo_results.main(["--run", str(run), "--baseline", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "holds no timings.json" in capsys.readouterr().err
    assert not out.exists()
