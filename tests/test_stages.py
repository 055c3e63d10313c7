"""The stage registry: keys from the declarations, records that vouch for files, damage found, the lock.

The runner's rules are tested on two toy stages (no torch, milliseconds); the registry's real
declarations are checked against the keys they produce; the lock against a real second process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medauc import fileio, lock, stages
from medauc.config import Config, config_hash, load_config, replace, to_dict
from medauc.errors import RunFolderError
from medauc.fileio import read_json, write_text
from medauc.records import stage_record

CALLS: list[str] = []


def toy(cfg, run_dir, fail=False):
    """A stage writing toy/a.txt (from the seed and input.txt) and toy/b.txt; ``fail`` stops after a.txt."""
    CALLS.append("toy")
    write_text(run_dir / "toy" / "a.txt", f"seed {cfg.seed}: {(run_dir / 'input.txt').read_text()}")
    if fail:
        raise RuntimeError("killed half way")
    write_text(run_dir / "toy" / "b.txt", "b\n")
    return "computed"


def reader(cfg, run_dir):
    CALLS.append("reader")
    write_text(run_dir / "reader.txt", (run_dir / "toy" / "a.txt").read_text())


TOY = stages.Stage("toy", "a toy stage", function="test_stages:toy", config=("seed",), inputs=("input.txt",),
                   outputs=("toy/*.txt",), result="toy/a.txt", reads_manifest=False)
READER = stages.Stage("reader", "reads the toy stage", function="test_stages:reader", outputs=("reader.txt",),
                      needs=("toy",), reads_manifest=False)


@pytest.fixture
def toy_run(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "STAGES", (TOY, READER))
    CALLS.clear()
    write_text(tmp_path / "input.txt", "one\n")
    assert stages.run("toy", Config(), tmp_path) == "computed"
    return tmp_path


def test_a_finished_stage_is_skipped_and_its_record_lists_its_files(toy_run):
    assert stages.run("toy", Config(), toy_run) == toy_run / "toy" / "a.txt"  # skipped: its result file
    assert CALLS == ["toy"]
    rec = stage_record(toy_run, "toy")
    assert rec["files"] == {"toy/a.txt": fileio.file_sha256(toy_run / "toy/a.txt"), "toy/b.txt": fileio.file_sha256(toy_run / "toy/b.txt")}


def test_a_relative_run_folder_records_paths_inside_it(toy_run, monkeypatch):
    monkeypatch.chdir(toy_run.parent)
    write_text(toy_run / "input.txt", "two\n")
    assert stages.run("toy", Config(), toy_run.name, force=True) == "computed"
    assert list(stage_record(toy_run, "toy")["files"]) == ["toy/a.txt", "toy/b.txt"]  # not <run>/toy/a.txt
    assert stages.run("toy", Config(), toy_run.name) == Path(toy_run.name) / "toy" / "a.txt"


def test_a_missing_file_rebuilds_the_stage_without_force(toy_run, caplog):
    (toy_run / "toy" / "b.txt").unlink()
    with caplog.at_level(logging.WARNING):
        assert stages.run("toy", Config(), toy_run) == "computed"
    assert (toy_run / "toy" / "b.txt").is_file() and "b.txt is missing" in caplog.text
    assert stages.run("toy", Config(), toy_run) == toy_run / "toy" / "a.txt"  # intact again: skipped


def test_a_changed_file_stops_the_stage_naming_it_until_force(toy_run):
    good = (toy_run / "toy" / "a.txt").read_text()
    (toy_run / "toy" / "a.txt").write_text(good[:3])  # truncated (or edited by hand: nothing tells them apart)
    with pytest.raises(RunFolderError, match=r"toy/a\.txt is not the file that was recorded.*pass --force to rebuild toy"):
        stages.run("toy", Config(), toy_run)
    assert (toy_run / "toy" / "a.txt").read_text() == good[:3]  # refused: nothing was overwritten
    assert stages.run("toy", Config(), toy_run, force=True) == "computed"
    assert (toy_run / "toy" / "a.txt").read_text() == good


def test_the_record_is_written_only_when_the_stage_finished(toy_run, monkeypatch):
    # Mutation caught: a record written (or kept) before the function returns vouches for a half-made stage.
    write_text(toy_run / "input.txt", "two\n")
    monkeypatch.setattr(stages, "STAGES", (dataclasses.replace(TOY, function="test_stages:_half"), READER))
    with pytest.raises(RuntimeError, match="half way"):
        stages.run("toy", Config(), toy_run, force=True)
    rec = stage_record(toy_run, "toy")
    assert rec["unfinished"] and "key" not in rec and "files" not in rec  # started, vouching for nothing
    monkeypatch.setattr(stages, "STAGES", (TOY, READER))
    # Issue 27: a reader of an interrupted stage is refused, naming the command that finishes it
    with pytest.raises(RunFolderError, match=r"stage 'toy' was started .* has not finished.*run `medauc toy --force --config .*config\.yaml --out "):
        stages.run("reader", Config(), toy_run)
    assert stages.run("toy", Config(), toy_run) == "computed"  # unfinished: it runs, no --force needed


def _half(cfg, run_dir):
    return toy(cfg, run_dir, fail=True)


def test_other_inputs_need_force_unless_the_stage_is_not_guarded(toy_run, monkeypatch):
    write_text(toy_run / "input.txt", "two\n")
    with pytest.raises(RunFolderError, match="computed from other inputs.*--force"):
        stages.run("toy", Config(), toy_run)
    with pytest.raises(RunFolderError, match="computed from other inputs"):
        stages.run("toy", replace(Config(), seed=1), toy_run)  # config key: declared, so in the key
    monkeypatch.setattr(stages, "STAGES", (dataclasses.replace(TOY, guarded=False), READER))
    assert stages.run("toy", Config(), toy_run) == "computed"


def test_a_reader_refuses_damaged_upstream_files_naming_the_file_and_the_fix(toy_run):
    stages.run("reader", Config(), toy_run)
    (toy_run / "toy" / "a.txt").write_text("seed 0: on")
    with pytest.raises(RunFolderError, match=r"a\.txt is not the file.*stage 'toy' wrote it and reader reads it: "
                                             r"run `medauc toy --force --config .*config\.yaml --out .*` to rebuild it"):
        stages.run("reader", Config(), toy_run, force=True)  # --force on the reader does not make a bad input good
    (toy_run / "toy" / "a.txt").unlink()
    with pytest.raises(RunFolderError, match=r"a\.txt is missing; .*run `medauc toy --config .*config\.yaml --out"):
        stages.run("reader", Config(), toy_run)
    assert CALLS == ["toy", "reader"]


def test_a_reader_of_changed_upstream_results_is_never_up_to_date(toy_run, capsys):
    # Issue 27 case 1: a reader whose own key did not change said "up to date" on results made from the old inputs
    stages.run("reader", Config(), toy_run)
    write_text(toy_run / "input.txt", "two\n")
    stages.run("toy", Config(), toy_run, force=True)
    capsys.readouterr()
    stages.run("reader", Config(), toy_run)
    assert "reader: up to date" not in capsys.readouterr().out
    assert (toy_run / "reader.txt").read_text() == "seed 0: two\n" and CALLS == ["toy", "reader", "toy", "reader"]
    stages.run("reader", Config(), toy_run)
    assert "reader: up to date" in capsys.readouterr().out
    # ... and results made under other settings are not read under these
    with pytest.raises(RunFolderError, match=r"stage 'toy' .* computed under other settings .*`medauc toy --force --config"):
        stages.run("reader", replace(Config(), seed=1), toy_run, force=True)


def test_a_record_from_before_file_lists_is_trusted_once_then_checked(toy_run):
    rec = stage_record(toy_run, "toy")
    fileio.write_json(toy_run / ".medauc/stages/toy.json", {k: v for k, v in rec.items() if k != "files"})
    assert stages.run("toy", Config(), toy_run) == toy_run / "toy" / "a.txt"  # an old run folder stays cached
    assert stage_record(toy_run, "toy")["files"] == rec["files"]
    assert CALLS == ["toy"]


# ----------------------------------------------------------------------------- the real declarations


def _leaf(cfg: Config, path: str) -> str:
    """A scalar config key at or under ``path`` to perturb."""
    value = getattr(cfg, path) if "." not in path else getattr(getattr(cfg, path.split(".")[0]), path.split(".")[1])
    if not dataclasses.is_dataclass(value):
        return path
    return next(f"{path}.{f.name}" for f in dataclasses.fields(value)
                if isinstance(getattr(value, f.name), (int, float, str)) and f"{path}.{f.name}" not in _SKIP)


_SKIP = {"data.source"}  # would make the key's data folder another one


def _perturbed(cfg: Config, key: str) -> Config:
    section, _, name = key.partition(".")
    old = getattr(getattr(cfg, section), name) if name else getattr(cfg, section)
    new = (not old) if isinstance(old, bool) else old + 1 if isinstance(old, int) else old / 2 if isinstance(old, float) \
        else ["x"] if isinstance(old, tuple) else {"x": "phantom:b"} if isinstance(old, Mapping) else old + "x"
    return replace(cfg, **{key: new})


@pytest.mark.parametrize("name", ["augment", "train", "strategies", "evaluate", "report"])
def test_each_declared_config_key_is_in_the_key_and_nothing_else(name, tmp_path):
    # Mutation caught: a declaration and a key that drift apart (a key that misses a declared
    # setting keeps stale results; one that reads an undeclared or excluded one reruns for nothing).
    stage = stages.get(name)
    cfg = load_config("smoke")
    write_text(tmp_path / "manifest.csv", "image_id,label\n")
    base = stages.stage_key(stage, cfg, tmp_path)
    for path in stage.config:
        key = _leaf(cfg, path.lstrip("-"))
        changed = stages.stage_key(stage, _perturbed(cfg, key), tmp_path) != base
        assert changed is not path.startswith("-"), f"{name}: {key}"
    declared = {c.lstrip("-") for c in stage.config}
    for outside in ("explain.per_class", "report.title", "phantom.n"):
        if not any(outside == d or outside.startswith(d + ".") for d in declared):
            assert stages.stage_key(stage, _perturbed(cfg, outside), tmp_path) == base, f"{name}: {outside}"


def test_keys_are_those_of_before_the_registry(tmp_path):
    # Run folders made before the registry keep their stages cached: same key, no --force.
    cfg = load_config("smoke")
    write_text(tmp_path / "manifest.csv", "image_id,label\n")
    write_text(tmp_path / "augment" / "manifest.csv", "image_id,label,augmentation\n")
    sha, aug = fileio.file_sha256(tmp_path / "manifest.csv"), fileio.file_sha256(tmp_path / "augment" / "manifest.csv")
    assert stages.stage_key(stages.get("augment"), cfg, tmp_path) == config_hash(
        cfg.augment, cfg.seed, cfg.data.negative_class, cfg.evaluate.n_bootstrap, cfg.evaluate.level, sha)
    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "names"}
    train = {k: v for k, v in to_dict(cfg.train).items() if k not in ("jobs", "lr_by_model")}  # added later
    later = ("threshold_rule", "decision_thresholds", "external")  # added later
    evaluate = {k: v for k, v in to_dict(cfg.evaluate).items() if k not in later}
    assert stages.stage_key(stages.get("strategies"), cfg, tmp_path) == config_hash(
        cfg.augment, model, train, cfg.data.image_size, cfg.data.classes, evaluate, cfg.seed, sha, aug)
    with_site = replace(cfg, **{"evaluate.external": {"b": "phantom:b"}})  # not a strategies setting
    assert stages.stage_key(stages.get("strategies"), with_site, tmp_path) == stages.stage_key(stages.get("strategies"), cfg, tmp_path)


def test_configuring_a_model_without_predictions_changes_the_evaluate_key(tmp_path):
    cfg = load_config("smoke", ["model.names=[test_resnet]"])
    write_text(tmp_path / "predictions" / "test_resnet" / "0" / "test.csv", "image_id,label\n")
    key = stages.stage_key(stages.get("evaluate"), cfg, tmp_path)
    more = replace(cfg, **{"model.names": ["test_resnet", "resnet18"]})
    assert stages.stage_key(stages.get("evaluate"), more, tmp_path) != key  # else the stage skips, resnet18 unevaluated


def test_every_declared_function_and_command_exists():
    import importlib

    for stage in stages.STAGES:
        for ref in filter(None, (stage.function, stage.key, stage.extra)):
            assert callable(stages._function(ref)), ref
    for command in stages.COMMANDS.values():
        module = importlib.import_module(command.module)
        assert callable(module.add_arguments) and callable(module.main)
    assert list(stages.COMMANDS) == ["phantom", "prepare", "augment", "train", "strategies", "external", "evaluate",
                                     "explain",
                                     "report", "compare", "predict", "export", "run"]


# ----------------------------------------------------------------------------- the lock

_HOLD = """
import sys, time
from medauc.lock import lock_run
lock_run(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_is_refused_at_once_naming_the_folder_and_the_holder(tmp_path):
    # The race: `medauc run ... --out X &` then the same command; the second must not touch X.
    out = tmp_path / "run"
    lock.lock_run(out)
    try:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "medauc", "run", "--config", "smoke", "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - t0
    finally:
        lock.release_run(out)
    assert res.returncode == 2, res.stderr
    assert f"medauc run: error: {out} is in use by process {os.getpid()} on " in res.stderr
    assert "wait for it to finish, or choose another --out" in res.stderr
    assert not (out / "config.yaml").exists() and not (out / "manifest.csv").exists()  # refused before any work
    assert seconds < 30  # at once: a Python start-up, no stage


def test_the_lock_of_a_killed_process_is_taken_over_with_a_log_line(tmp_path, caplog):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"is in use by process {holder.pid} on "):
            lock.lock_run(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with caplog.at_level(logging.WARNING):
        lock.lock_run(out)  # the kernel dropped the dead process's lock; its note is left
    try:
        assert f"taking over the lock left by process {holder.pid} on " in caplog.text
        assert read_json(out / lock.LOCK_FILE)["pid"] == os.getpid()
    finally:
        lock.release_run(out)
    assert (out / lock.LOCK_FILE).read_text() == ""  # a clean release leaves nothing to take over


def test_the_lock_is_held_while_a_stage_runs_and_given_back_after(toy_run, monkeypatch):
    seen = []
    plain = toy

    def peek(cfg, run_dir):
        seen.append(read_json(run_dir / lock.LOCK_FILE)["pid"])
        return plain(cfg, run_dir)

    monkeypatch.setattr(sys.modules[__name__], "toy", peek)
    write_text(toy_run / "input.txt", "two\n")
    stages.run("toy", Config(), toy_run, force=True)
    assert seen == [os.getpid()]
    assert (toy_run / lock.LOCK_FILE).read_text() == ""


def test_remove_tree_accepts_entries_already_gone(tmp_path, monkeypatch):
    # Two processes cleaning one folder raised a raw FileNotFoundError; the lock stops the second,
    # and the cleanup itself no longer trips over an entry that vanished under it.
    for i in range(3):
        write_text(tmp_path / "gen" / f"{i}.png", "x")
    real_unlink = os.unlink

    def racing_unlink(path, *a, **k):
        real_unlink(path, *a, **k)
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "unlink", racing_unlink)
    fileio.remove_tree(tmp_path / "gen")
    monkeypatch.undo()
    assert not (tmp_path / "gen").exists()
    fileio.remove_tree(tmp_path / "gen")  # already gone: fine


def test_every_evaluate_setting_changes_the_evaluate_key(tmp_path):
    # Mutation caught: a setting of the evaluate section left out of the evaluate stage's key (say
    # evaluate.prevalences or the new primary_metric), so changing it would keep stale metrics; before,
    # only a pinned digest noticed. Every field, each to a valid other value.
    from medauc.config import EvaluateConfig

    cfg = load_config("smoke")
    write_text(tmp_path / "predictions" / "test_resnet" / "0" / "test.csv", "image_id,label\n")
    base = stages.stage_key(stages.get("evaluate"), cfg, tmp_path)
    other = {"n_bootstrap": 300, "level": 0.9, "prevalences": [0.001], "target_sensitivity": 0.95, "calibration_bins": 10,
             "renormalise": False, "primary_metric": "screening_auc", "power": 0.9,
             "threshold_rule": "youden", "decision_thresholds": [0.1, 0.25], "external": {"b": "phantom:b"}}
    fields = [f.name for f in dataclasses.fields(EvaluateConfig)]
    assert sorted(other) == sorted(fields), "give the new evaluate field a value to try here"
    for name, value in other.items():
        changed = load_config("smoke", [f"evaluate.{name}={value}"])
        assert getattr(changed.evaluate, name) != getattr(cfg.evaluate, name), name
        assert stages.stage_key(stages.get("evaluate"), changed, tmp_path) != base, f"evaluate.{name} is not in the evaluate key"
