"""Damaged run folders, as found when the pipeline was tried the way a reliability engineer would.

Each test damages a copy of one small real run (prepare, train and evaluate through the CLI) and
checks what each command then does: before the stage registry, a truncated manifest was "up to
date", `--force` rebuilt downstream stages from it, and a truncated predictions file was evaluated.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medauc import cli
from medauc.records import stage_record

CLASSES = ["healthy", "glioma", "meningioma"]
ARGS = ["--config", "smoke", "data.workers=1", "data.shortcut_audit=false", "model.names=[test_resnet]",
        "train.epochs=1", "augment.enabled=false", "data.classes=[healthy,glioma,meningioma]"]


def _truncate(path: Path, drop_rows: int = 3) -> bytes:
    """Cut the last ``drop_rows`` rows off a CSV, at a row boundary: it still parses. Returns the original bytes."""
    good = path.read_bytes()
    path.write_bytes(b"".join(good.splitlines(keepends=True)[:-drop_rows]))
    return good


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    for ci, c in enumerate(CLASSES):
        for i in range(12):
            low = np.random.default_rng(100 * ci + i).integers(0, 256, (8, 8), dtype=np.uint8)
            (root / "data" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(low).resize((32, 32), Image.Resampling.BICUBIC).save(root / "data" / c / f"{i}.png")
    out = root / "run"
    assert cli.main(["prepare", "--data", str(root / "data"), "--out", str(out), *ARGS]) == 0
    assert cli.main(["train", "--out", str(out), *ARGS]) == 0
    assert cli.main(["evaluate", "--out", str(out), *ARGS]) == 0
    return root


@pytest.fixture
def run(finished, tmp_path):
    # A copy at the same depth: the manifest's image paths point into finished/data, which stays.
    out = tmp_path / "run"
    shutil.copytree(finished / "run", out)
    return out


def main(*argv: str) -> int:
    # key=value arguments after ARGS: argparse takes the overrides as one run of positionals
    return cli.main([*[a for a in argv if "=" not in a], *ARGS, *[a for a in argv if "=" in a]])


def test_truncated_manifest_is_not_up_to_date_and_nothing_is_built_from_it(run, finished, capsys):
    good = _truncate(run / "manifest.csv")
    model = run / "train" / "test_resnet" / "0" / "best.safetensors"
    before = model.stat().st_mtime_ns
    data = ["--data", str(finished / "data")]
    assert main("prepare", "--out", str(run), *data) == 2  # was: "manifest.csv is up to date ... nothing to do"
    err = capsys.readouterr().err
    assert f"{run / 'manifest.csv'} is not the file that was recorded" in err and "pass --force to rebuild prepare" in err
    # was: `--force` on the next stage rebuilt it from the damaged manifest and overwrote good outputs
    assert main("train", "--force", "--out", str(run)) == 2
    err = capsys.readouterr().err
    assert "manifest.csv is not the file that was recorded" in err and f"run `medauc prepare --force --config {run / 'config.yaml'} --out {run} --data {finished / 'data'}`" in err
    assert model.stat().st_mtime_ns == before
    assert main("prepare", "--force", "--out", str(run), *data) == 0  # was: "up to date" under --force too
    assert (run / "manifest.csv").read_bytes() == good
    capsys.readouterr()
    assert main("train", "--out", str(run)) == 0  # the same manifest again: nothing to retrain
    assert "train: up to date" in capsys.readouterr().out and model.stat().st_mtime_ns == before


def test_truncated_predictions_file_is_not_evaluated(run, capsys):
    test_csv = run / "predictions" / "test_resnet" / "0" / "test.csv"
    metrics = (run / "metrics.json").read_bytes()
    good = _truncate(test_csv)
    for force in ([], ["--force"]):
        assert main("evaluate", "--out", str(run), *force) == 2  # was: evaluated silently, 3 images short
        err = capsys.readouterr().err
        assert f"{test_csv} is not the file that was recorded" in err and "stage 'train' wrote it and evaluate reads it" in err
        assert f"run `medauc train --force --config {run / 'config.yaml'} --out {run}` to rebuild it" in err
    assert (run / "metrics.json").read_bytes() == metrics
    assert main("train", "--out", str(run)) == 2  # changed, maybe by hand: replaced only when asked
    assert "pass --force to rebuild train" in capsys.readouterr().err
    model = run / "train" / "test_resnet" / "0" / "best.safetensors"
    before = model.stat().st_mtime_ns
    assert main("train", "--force", "--out", str(run)) == 0
    assert model.stat().st_mtime_ns == before  # the predictions are rewritten from the model, not retrained
    rewritten, original = pd.read_csv(test_csv), pd.read_csv(io.BytesIO(good))
    assert list(rewritten["image_id"]) == list(original["image_id"])
    np.testing.assert_allclose(rewritten.filter(like="prob_"), original.filter(like="prob_"), atol=1e-6)  # float32 noise
    assert main("evaluate", "--force", "--out", str(run)) == 0


def test_a_deleted_model_file_is_retrained_not_loaded(run):
    # Mutation caught: a model's own record trusted without its files (load_best on a missing file).
    (run / "train" / "test_resnet" / "0" / "best.safetensors").unlink()
    assert main("train", "--out", str(run)) == 0  # missing: rebuilt without --force
    rec = stage_record(run, "train/test_resnet/0")
    assert set(rec["files"]) == {f"train/test_resnet/0/{f}" for f in ("best.safetensors", "model.json", "history.csv")}
    assert stage_record(run, "train")["files"]["train/test_resnet/0/best.safetensors"] == rec["files"]["train/test_resnet/0/best.safetensors"]


# ----------------------------------------------------------------------------- issue 27: a run folder never lies


def suggestion(err: str) -> list[str]:
    """The first command a message suggests (between backticks), as arguments for ``cli.main``."""
    import re
    import shlex

    found = re.search(r"`(medauc [^`]+)`", err)
    assert found, f"no command suggested in: {err}"
    return shlex.split(found.group(1))[1:]


def test_an_interrupted_force_is_recognised_and_its_suggestion_finishes_it(run, capsys, monkeypatch):
    # Issue 27 case 1: train --force under new settings, interrupted; evaluate then said "up to date"
    # on the old predictions and the report presented them under the new settings.
    from medauc.classify import stage as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_stage", interrupted)
    assert main("train", "--force", "--out", str(run), "train.epochs=2") == 130
    monkeypatch.undo()
    capsys.readouterr()
    for command in ("evaluate", "report"):
        assert main(command, "--out", str(run), "train.epochs=2") == 2
        err = capsys.readouterr().err
        assert "stage 'train' was started" in err and "has not finished" in err, err
    fix = suggestion(err)
    assert fix == ["train", "--force", "--config", str(run / "config.yaml"), "--out", str(run)]  # as interrupted
    assert cli.main(fix) == 0  # the suggestion as written: finishes train under the run's own settings
    # (without --force it would continue with the interrupted run's --force: same inputs, same intent)
    assert len(pd.read_csv(run / "train" / "test_resnet" / "0" / "history.csv")) == 2  # train.epochs=2
    assert main("evaluate", "--force", "--out", str(run), "train.epochs=2") == 0  # the new predictions, evaluated
    assert "evaluate: up to date" not in capsys.readouterr().out


def test_results_made_under_other_settings_are_not_evaluated_or_reported(run, capsys):
    # Issue 27 case 1: evaluate --force under train.epochs=2 evaluated the epochs=1 predictions as epochs=2
    metrics = (run / "metrics.json").read_bytes()
    assert main("evaluate", "--force", "--out", str(run), "train.epochs=2") == 2
    err = capsys.readouterr().err
    assert "stage 'train'" in err and "computed under other settings" in err, err
    assert (run / "metrics.json").read_bytes() == metrics
    assert suggestion(err) == ["train", "--force", "--config", str(run / "config.yaml"), "--out", str(run)]


def test_a_hand_edited_config_yaml_is_refused_by_the_report(run, capsys):
    # Issue 27 case 2: the report showed `epochs: 4` for models trained 1 epoch
    config = run / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("epochs: 1", "epochs: 4"))
    assert cli.main(["report", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{config} was edited since medauc wrote it" in err and "cp " in err
    assert not (run / "report.md").exists()
    config.write_text(good)  # what the message's `cp` does
    assert cli.main(["report", "--out", str(run)]) == 0
    assert "epochs: 1" in (run / "report.md").read_text()


def test_every_suggested_repair_command_repairs_and_changes_nothing_else(run, finished, capsys):
    # Issue 27 case 5: `medauc train --force --out DIR` (no --config) replaced the run's config with the demo's
    config = (run / "config.yaml").read_text()
    model = run / "train" / "test_resnet" / "0" / "best.safetensors"
    model.write_bytes(model.read_bytes()[:-8])
    assert main("evaluate", "--force", "--out", str(run)) == 2
    assert cli.main(suggestion(capsys.readouterr().err)) == 0
    _truncate(run / "manifest.csv")
    assert main("train", "--out", str(run)) == 2
    fix = suggestion(capsys.readouterr().err)
    assert fix[-2:] == ["--data", str(finished / "data")]  # --data is not a config value: read from prepare's record
    assert cli.main(fix) == 0
    assert (run / "config.yaml").read_text() == config and sorted(p.name for p in (run / "train").iterdir()) == ["test_resnet"]
    assert main("evaluate", "--force", "--out", str(run)) == 0  # a retrained model: new predictions


def test_a_moved_run_folder_skips_finished_stages_and_reads_its_own_generated_images(run, finished, tmp_path, capsys):
    # Issue 27 case 4: augment/manifest.csv and strategies/classic/manifest.csv held absolute paths: a copy
    # read the original's images, and once the original moved, the copy's report failed.
    from medauc.data.manifest import read_manifest, write_manifest

    moved = tmp_path / "elsewhere" / "deeper" / "run"
    shutil.move(str(run), str(moved))
    capsys.readouterr()
    assert main("prepare", "--out", str(moved), "--data", str(finished / "data")) == 0
    assert main("train", "--out", str(moved)) == 0
    assert main("evaluate", "--out", str(moved)) == 0
    out = capsys.readouterr().out
    assert all(f"{s}: up to date" in out for s in ("prepare", "train", "evaluate")), out
    assert cli.main(["report", "--out", str(moved)]) == 0
    for inner in ("augment", "strategies/classic"):
        image = moved / inner / "generated" / "healthy" / "g.png"
        image.parent.mkdir(parents=True)
        image.write_bytes((finished / "data" / "healthy" / "0.png").read_bytes())
        rows = read_manifest(moved / "manifest.csv").head(2).assign(path=[str(finished / "data" / "healthy" / "1.png"), str(image)])
        write_manifest(moved / inner / "manifest.csv", rows)
        written = pd.read_csv(moved / inner / "manifest.csv")["path"].tolist()
        assert written == [str(finished / "data" / "healthy" / "1.png"), "generated/healthy/g.png"]  # inside: relative
        rows.to_csv(moved / inner / "old.csv", index=False)  # as written before: absolute
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)  # the original stays: the copy must still read its own images
    for inner in ("augment", "strategies/classic"):
        for name in ("manifest.csv", "old.csv"):
            assert read_manifest(copy / inner / name)["path"].tolist() == [
                str(finished / "data" / "healthy" / "1.png"), str(copy / inner / "generated" / "healthy" / "g.png")]


def test_an_old_folder_with_absolute_paths_is_rewritten_relative_and_nothing_is_recomputed(
    run, finished, tmp_path, capsys, monkeypatch
):
    """Issue 27 item 3: manifests written before paths were relative are read and rewritten; the
    finished stages stay finished (their keys hold the old manifest's sha256, through an alias)."""
    from medauc import records, relocate
    from medauc.relocate import aliases

    # An old folder whose images live inside it (as DICOM/NIfTI conversions do), its manifest absolute.
    df = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    for i, p in enumerate(df["path"]):
        inside = run / "images" / Path(p).parent.name / Path(p).name
        inside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, inside)
        df.loc[i, "path"] = str(inside)
    df.to_csv(run / "manifest.csv", index=False)  # as written before: absolute
    rec = stage_record(run, "prepare")
    records.mark_stage(run, "prepare", rec["key"], files=[run / "manifest.csv", run / "data_audit.json"],
                       **{k: rec[k] for k in ("settings", "upstream", "options") if k in rec})
    with monkeypatch.context() as m:  # the code before the rewrite existed: keys from the absolute manifest
        m.setattr(relocate, "rewrite_manifests", lambda run_dir: [])
        assert main("train", "--force", "--out", str(run)) == 0
        assert main("evaluate", "--force", "--out", str(run)) == 0
    assert Path(pd.read_csv(run / "manifest.csv")["path"][0]).is_absolute()
    model = (run / "train" / "test_resnet" / "0" / "best.safetensors").read_bytes()

    moved = tmp_path / "moved" / "run"
    shutil.move(str(run), str(moved))
    capsys.readouterr()
    assert main("train", "--out", str(moved)) == 0
    assert main("evaluate", "--out", str(moved)) == 0
    out = capsys.readouterr().out
    assert "train: up to date" in out and "evaluate: up to date" in out, out
    written = pd.read_csv(moved / "manifest.csv")["path"]
    assert all(p.startswith("images/") for p in written), written.tolist()  # rewritten relative, not only mapped
    assert len(aliases(moved)) == 1
    assert (moved / "train" / "test_resnet" / "0" / "best.safetensors").read_bytes() == model
    assert cli.main(["report", "--out", str(moved)]) == 0
    # The alias covers exactly the rewritten file: an edit afterwards is still a change.
    _truncate(moved / "manifest.csv")
    assert main("train", "--out", str(moved)) == 2
    assert "manifest.csv" in capsys.readouterr().err
