"""train.jobs: several trainings at once on a CPU, each in its own process, equal to one at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medauc.classify import parallel
from medauc.classify import stage as st
from medauc.config import load_config
from medauc.errors import ModelError
from test_classify_models import make_dataset

TWO = ["model.names=[test_resnet, test_vit]", "train.epochs=2", "train.batch_size=8", "train.num_threads=1",
       "train.epochs_by_model={test_vit: 1}"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def files(run: Path, model: str) -> dict[str, bytes]:
    out = {"best": (run / "train" / model / "0" / "best.safetensors").read_bytes()}
    for split in ("val", "test"):
        out[split] = (run / "predictions" / model / "0" / f"{split}.csv").read_bytes()
    return out


def test_two_jobs_equal_one_at_a_time_bit_for_bit(manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: the worker's config losing a setting on its way (epochs_by_model: test_vit would train
    # 2 epochs), another seed or thread count in the worker, results returned in finishing order.
    one = st.train_stage(load_config("smoke", TWO), tmp_path / "one", manifest)
    two = st.train_stage(load_config("smoke", [*TWO, "train.jobs=2"]), tmp_path / "two", manifest)
    assert [(r["model"], r["seed"]) for r in two] == [("test_resnet", 0), ("test_vit", 0)]
    assert [r["epochs"] for r in two] == [2, 1]
    for model in ("test_resnet", "test_vit"):
        assert files(tmp_path / "two", model) == files(tmp_path / "one", model), model
        hist = [pd.read_csv(tmp_path / run / "train" / model / "0" / "history.csv")[["train_loss", "val_loss"]]
                for run in ("one", "two")]
        pd.testing.assert_frame_equal(*hist)
    # Each worker recorded its own model: a rerun in one process skips both.
    again = st.train_stage(load_config("smoke", TWO), tmp_path / "two", manifest)
    assert all(r["skipped"] for r in again)
    # A rerun with jobs 2 neither times nor trains a finished model (parallel.training_cost).
    probed: list[str] = []
    monkeypatch.setattr(parallel, "step_seconds", lambda cfg, models, *a, **k: probed.extend(models) or {})
    again = st.train_stage(load_config("smoke", [*TWO, "train.jobs=2"]), tmp_path / "two", manifest)
    assert all(r["skipped"] for r in again) and probed == []


def test_a_failing_training_stops_the_stage_naming_the_model(manifest: Path, tmp_path: Path) -> None:
    cfg = load_config("smoke", [*TWO, "train.jobs=2", "model.names=[test_resnet, no_such_model_xyz]",
                                "train.epochs_by_model={}"])
    with pytest.raises(ModelError, match=r"no_such_model_xyz seed 0 \(in a train.jobs worker\)"):
        st.train_stage(cfg, tmp_path, manifest)


def test_plan_shares_the_cores_and_keeps_gpus_and_torchrun_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 8)
    cfg = load_config("smoke", ["model.names=[test_resnet, test_vit]", "train.jobs=3"])
    cpu = torch.device("cpu")
    assert parallel.plan(cfg, 4, cpu, False) == (3, 2)
    assert parallel.plan(cfg, 2, cpu, False) == (2, 4)  # never more processes than trainings
    assert parallel.plan(cfg, 1, cpu, False) == (1, 0)
    assert parallel.plan(load_config("smoke", ["train.jobs=3", "train.num_threads=1"]), 4, cpu, False) == (3, 1)
    assert parallel.plan(cfg, 4, torch.device("cuda", 0), False) == (1, 0)
    assert parallel.plan(cfg, 4, cpu, True) == (1, 0)
    assert parallel.order([2, 3, 9, 9]) == [2, 3, 1, 0]


def test_the_costliest_training_starts_first_by_epochs_times_step_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: the order by epochs alone (the demo's tf_efficientnetv2_b0, 12 epochs, started first
    # and resnet18 beside it, leaving densenet121 and efficientformerv2_s0 to one core), each seed
    # timed again, a finished model timed, an unknown model stopping the stage here instead of in
    # its own training.
    cfg = load_config("smoke", ["train.num_threads=1"])
    timed: list[str] = []

    def fake(cfg, models, num_classes, threads):
        timed.extend(models)
        return {"slow": 1.0, "fast": 0.1, "broken": float("inf")}

    monkeypatch.setattr(parallel, "step_seconds", fake)
    tasks = [("fast", 0), ("fast", 1), ("slow", 0), ("broken", 0), ("done", 0)]
    costs = parallel.training_cost(cfg, tasks, [12, 12, 8, 8, 0], 4, 1)  # epochs 0: finished
    assert costs == pytest.approx([1.2, 1.2, 8.0, float("inf"), 0.0])
    assert timed == ["fast", "slow", "broken"]
    assert parallel.order(costs) == [3, 2, 0, 1, 4]


def test_step_seconds_times_each_network_without_touching_the_random_state() -> None:
    # Catches: the probe drawing from the global generator (a training started after it in this
    # process would initialise other weights), the thread count left changed, a zero or missing time,
    # a network that cannot be built stopping the stage here instead of in its own training.
    cfg = load_config("smoke", ["data.image_size=32"])
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    seconds = parallel.step_seconds(cfg, ["test_resnet", "no_such_model_xyz"], 3, 1, batch=4, rounds=1)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
    assert torch.get_num_threads() == threads
    assert 0 < seconds["test_resnet"] < 10
    assert seconds["no_such_model_xyz"] == float("inf")


def test_step_seconds_keeps_the_probe_small_at_the_studys_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # Catches: 16 images at every size (at the study's 224 px with its four models: 148 s and 5 GB),
    # a network that takes over a second timed in every round.
    import time

    from medauc.classify import models

    seen: dict[str, list[int]] = {}

    class Probe(torch.nn.Module):
        def __init__(self, name: str, seconds: float) -> None:
            super().__init__()
            self.name, self.seconds, self.w = name, seconds, torch.nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.setdefault(self.name, []).append(len(x))
            time.sleep(self.seconds)
            return x.flatten(1)[:, :2] * self.w

    monkeypatch.setattr(models, "create_model", lambda name, *a, **k: Probe(name, {"slow": 1.05, "fast": 0.0}[name]))
    for size, batch in ((224, 2), (64, 16), (32, 16)):
        seen.clear()
        seconds = parallel.step_seconds(load_config("smoke", [f"data.image_size={size}"]), ["slow", "fast"], 2, 1)
        assert seen == {"slow": [batch, batch], "fast": [batch] * 3}, size
        assert seconds["slow"] > 1.0 > seconds["fast"]
        assert parallel.probe_batch(size) == batch  # the count the log names


_TRAIN = """
import sys
from medauc.classify import stage as st
from medauc.config import load_config
cfg = load_config("smoke", ["model.names=[test_resnet, test_vit]", "train.epochs=500", "train.batch_size=8",
                            "train.num_threads=1", "train.jobs=2", "train.early_stopping_patience=500"])
st.train_stage(cfg, sys.argv[1], sys.argv[2])
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_parent_ends_the_training_workers_before_they_write(manifest: Path, tmp_path: Path) -> None:
    # Issue 27 case 6: after kill -9 of `medauc run` with train.jobs=2, both workers kept training for
    # 24-30 s and wrote best.safetensors, history.csv and model.json into a folder a new run held.
    import os
    import signal
    import sys
    import time

    from test_phantom_generate import sigkill_when_working

    run = tmp_path / "run"
    _, orphans = sigkill_when_working([sys.executable, "-c", _TRAIN, str(run), str(manifest)],
                                      lambda: len(list(run.glob("train/*/0/*"))) >= 2, "the training workers", 120)
    snapshot = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    time.sleep(2.0 if orphans else 0.5)
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    for w in orphans:  # do not leave them behind when the test fails
        os.kill(w, signal.SIGKILL)
    assert not orphans, "training workers outlived their parent"
    assert after == snapshot, "a worker wrote into the run folder after its parent was killed"


# Every training setting away from its default (and the per-model tables), so a worker that rebuilds
# its config without one of them differs from the parent's.
NON_DEFAULT = [*TWO, "train.lr=0.003", "train.weight_decay=0.05", "train.eps=1e-7", "train.plateau_factor=0.5",
               "train.plateau_patience=2", "train.early_stopping_patience=4", "train.hflip=false",
               "train.imbalance=weighted_loss", "train.amp=false", "train.amp_dtype=bf16", "train.channels_last=false",
               "train.max_train_images=40", "train.zero_head=true", "train.affine=0.3", "train.optimizer=adamw",
               "train.schedule=onecycle", "train.warmup=0.1", "train.label_smoothing=0.1", "train.sync_bn=false",
               "train.lr_by_model={test_vit: 0.002}", "train.device=cpu", "train.monitor=test"]


def received_config(cfg, out_dir, model, seed, classes, train, sets, monitor_split, manifest_sha, d, force):
    """Stands in for classify.stage.train_one (module level: a spawned worker imports it): the config it got."""
    from medauc.config import to_dict

    return {"model": model, "seed": seed, "config": to_dict(cfg)}


def test_a_worker_gets_every_training_setting(manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Mutation caught: a train.jobs worker losing a setting held away from its default (label smoothing,
    # optimizer, schedule, affine, zero_head, warmup...). The bit-for-bit test above runs at the
    # defaults, where a lost setting is rebuilt at the same value and nothing shows.
    from medauc.config import TrainConfig, to_dict

    one = load_config("smoke", NON_DEFAULT)
    changed = {k for k, v in to_dict(one.train).items() if v != to_dict(TrainConfig())[k]}
    assert changed >= set(to_dict(TrainConfig())) - {"seeds", "jobs", "num_threads", "epochs_by_model"}
    monkeypatch.setattr(st, "train_one", received_config)
    sequential = st.train_stage(one, tmp_path / "one", manifest)
    two = load_config("smoke", [*NON_DEFAULT, "train.jobs=2"])
    parallel_ = st.train_stage(two, tmp_path / "two", manifest)
    assert [r["model"] for r in parallel_] == ["test_resnet", "test_vit"]
    for s, p in zip(sequential, parallel_):
        assert s["config"] == to_dict(one) and p["config"] == to_dict(two), p["model"]
