import json
from pathlib import Path

import numpy as np
import pytest

from medauc.config import Config, load_config
from medauc.errors import RunFolderError
from medauc.fileio import atomic_path, read_json, write_json
from medauc.records import check_stage, mark_stage, stage_is_done
from medauc.reproducibility import seed_everything
from medauc.runs import open_run


def test_open_run_writes_config_and_environment(tmp_path):
    cfg = load_config("smoke")
    run = open_run(tmp_path / "r", cfg)
    assert (run / "config.yaml").read_text().startswith("name: smoke")
    env = read_json(run / "environment.json")
    for key in ("python", "packages", "device", "cpu_count", "git_commit"):
        assert key in env
    assert env["packages"]["torch"]


def test_same_config_reopens_different_config_needs_force(tmp_path):
    cfg = load_config("smoke")
    run = open_run(tmp_path / "r", cfg)
    assert open_run(run, cfg) == run  # same config: continue
    other = load_config("smoke", ["seed=1"])
    with pytest.raises(RunFolderError, match=r"different configuration \(changed: seed: 0 -> 1\); pass --force"):
        open_run(run, other)
    assert "seed: 0" in (run / "config.yaml").read_text()  # untouched
    open_run(run, other, force=True)
    assert "seed: 1" in (run / "config.yaml").read_text()
    assert "seed: 0" in (run / "config.previous.yaml").read_text()  # nothing lost


def test_config_changes_names_nested_added_and_removed_settings():
    from medauc.runs import config_changes

    old = "seed: 0\nevaluate:\n  external: {}\n  level: 0.95\ntrain:\n  epochs: 8\n"
    new = "seed: 0\nevaluate:\n  external:\n    site_b: phantom:b\n  level: 0.95\ntrain:\n  epochs: 8\n  jobs: 2\n"
    assert config_changes(old, new) == ("changed: evaluate.external: {} -> (unset); evaluate.external.site_b: (unset) -> "
                                        "phantom:b; train.jobs: (unset) -> 2")
    many = "\n".join(f"k{i}: {i}" for i in range(6))
    assert config_changes("", many, most=2).endswith("; and 4 more")
    assert config_changes("seed: 0", "seed:   0") == "the same settings written differently"


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    with pytest.raises(RunFolderError, match="is a file"):
        open_run(f, load_config("smoke"))
    assert f.read_text() == "mine"


def test_stage_records(tmp_path):
    assert check_stage(tmp_path, "prepare", "k1", force=False) is True
    mark_stage(tmp_path, "prepare", "k1")
    assert stage_is_done(tmp_path, "prepare", "k1")
    assert check_stage(tmp_path, "prepare", "k1", force=False) is False
    with pytest.raises(RunFolderError, match="other inputs"):
        check_stage(tmp_path, "prepare", "k2", force=False)
    assert check_stage(tmp_path, "prepare", "k2", force=True) is True
    assert not stage_is_done(tmp_path, "prepare", "k1")


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_nan_becomes_null(tmp_path):
    write_json(tmp_path / "n.json", {"a": float("nan"), "b": [np.float64("inf"), 1.5]})
    assert read_json(tmp_path / "n.json") == {"a": None, "b": [None, 1.5]}


def test_seed_everything_is_deterministic():
    import torch

    g1 = seed_everything(5)
    a = (g1.random(3), np.random.rand(2), torch.rand(2))
    g2 = seed_everything(5)
    b = (g2.random(3), np.random.rand(2), torch.rand(2))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_out_below_a_file_names_the_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match=r"f is a file, not a folder"):
        open_run(tmp_path / "f" / "run", Config())


def test_out_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # root ignores chmod, so refuse the way a read-only place does
    with pytest.raises(RunFolderError, match=r"cannot write the run folder there \(Permission denied: .*run"):
        open_run(tmp_path / "run", Config())
