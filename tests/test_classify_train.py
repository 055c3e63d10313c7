"""The training loop: seeds, bit-exact resume, the study's leak flag, imbalance options, caching, predictions."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medauc.classify import stage as st
from medauc.classify import train as tr
from medauc.classify.models import load_trained
from medauc.classify.predict import predict_images, predict_manifest
from medauc.config import load_config
from medauc.data.images import load_image
from medauc.device import amp_context
from test_classify_models import make_dataset

VIT = ["model.names=[test_vit]"]
OVERRIDES = ["model.names=[test_resnet]", "train.epochs=3", "train.batch_size=8", "train.early_stopping_patience=5"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def cfg(*extra: str):
    # Overrides applied with replace(), which checks types but not ranges: the trainer's own (late)
    # checks are tested here; load_config refuses such values up front (tests/test_validate.py).
    from medauc.config import parse_override, replace

    changes = {".".join(keys): value for keys, value in map(parse_override, extra)}
    base = load_config("smoke", list(OVERRIDES))
    return replace(base, **changes) if changes else base


def history(run: Path, model: str = "test_resnet", seed: int = 0) -> pd.DataFrame:
    return pd.read_csv(run / "train" / model / str(seed) / "history.csv").drop(columns=["seconds", "images_per_s", "data_wait_fraction"])


def killed_then_resumed(config, run: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch, on_kill=None) -> dict:
    """Train ``config`` in ``run``, killed after epoch 2's training pass (before it is recorded), then run
    the same command again; returns the resumed run's result. ``on_kill(trainer)`` runs at the kill."""
    original = tr.Trainer.train_epoch

    def killed_in_epoch_2(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.epoch == 1:  # epoch 2 ran, but the process dies before recording it
            if on_kill is not None:
                on_kill(self)
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(tr.Trainer, "train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        st.train_stage(config, run, manifest)
    monkeypatch.setattr(tr.Trainer, "train_epoch", original)
    return st.train_stage(config, run, manifest)[0]


def predictions_of(result: dict) -> pd.DataFrame:
    return pd.read_csv(result["predictions"]["test"])


def test_same_seed_same_bits_resume_after_interrupt_and_other_seed_differs(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test_vit: its validation loss improves until epoch 3 here, so the predictions come from after the interruption
    whole = st.train_stage(cfg(*VIT), tmp_path / "a", manifest)[0]
    assert whole["epochs"] == 3 and whole["best_epoch"] == 3 and not whole["skipped"]

    at_kill = {}

    def look(trainer: tr.Trainer) -> None:
        at_kill["history"] = len(history(tmp_path / "b", "test_vit"))
        at_kill["state"] = torch.load(tmp_path / "b/train/test_vit/0/last.pt", weights_only=True)

    resumed = killed_then_resumed(cfg(*VIT), tmp_path / "b", manifest, monkeypatch, look)
    assert at_kill["history"] == 1
    state = at_kill["state"]
    assert state["epoch"] == 1 and "shuffle" in state["rng"] and "numpy" in state["rng"]
    assert resumed["epochs"] == 3
    assert not (tmp_path / "b/train/test_vit/0/last.pt").exists()  # a finished model needs no resume state

    for split in ("val", "test"):
        a = (tmp_path / f"a/predictions/test_vit/0/{split}.csv").read_bytes()
        b = (tmp_path / f"b/predictions/test_vit/0/{split}.csv").read_bytes()
        assert a == b
    pd.testing.assert_frame_equal(history(tmp_path / "a", "test_vit"), history(tmp_path / "b", "test_vit"))
    assert (tmp_path / "a/train/test_vit/0/best.safetensors").read_bytes() == (
        tmp_path / "b/train/test_vit/0/best.safetensors"
    ).read_bytes()

    other = st.train_stage(cfg(*VIT, "train.seeds=[1]"), tmp_path / "c", manifest)[0]
    assert other["seed"] == 1
    pa = pd.read_csv(tmp_path / "a/predictions/test_vit/0/test.csv")
    pc = pd.read_csv(tmp_path / "c/predictions/test_vit/1/test.csv")
    assert not np.array_equal(pa.filter(like="prob_").to_numpy(), pc.filter(like="prob_").to_numpy())

    # a second call skips the finished model, and writes extra predictions that were not there yet
    extra = pd.read_csv(manifest).query("split == 'train'").head(5)
    again = st.train_stage(cfg(*VIT), tmp_path / "a", manifest, extra_sets={"generated": extra})[0]
    assert again["skipped"]
    gen = pd.read_csv(again["predictions"]["generated"])
    assert list(gen["image_id"]) == list(extra["image_id"])
    assert list(gen.columns) == ["image_id", "label", "prob_healthy", "prob_glioma", "prob_meningioma", "prob_pituitary"]
    assert np.allclose(gen.filter(like="prob_").sum(axis=1), 1.0)

    # the hand-off functions other stages use give the same probabilities as the predictions file
    model, meta = load_trained(tmp_path / "a/train/test_vit/0")
    assert {"model_name", "classes", "image_size", "in_chans", "mean", "std", "seed", "epoch"} <= set(meta)
    test_rows = pd.read_csv(manifest).query("split == 'test'")
    prob = predict_images(model, meta, np.stack([load_image(p) for p in test_rows["path"]]))
    assert np.allclose(prob, pa.filter(like="prob_").to_numpy(), atol=1e-6)
    via_csv = predict_manifest(tmp_path / "a/train/test_vit/0", test_rows, tmp_path / "pm.csv")
    assert np.allclose(via_csv.filter(like="prob_").to_numpy(), pa.filter(like="prob_").to_numpy(), atol=1e-6)
    assert (tmp_path / "pm.csv").is_file()


def test_monitoring_the_test_set_is_recorded_as_a_leak(manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        r = st.train_stage(cfg("train.monitor=test", "train.epochs=1", "train.imbalance=weighted_loss"), tmp_path, manifest)[0]
    assert r["test_leak"] is True
    assert "TEST loss" in caplog.text
    meta = load_trained(r["model_dir"])[1]
    assert meta["test_leak"] is True and meta["monitor"] == "test"
    h = pd.read_csv(Path(r["model_dir"]) / "history.csv")
    assert h["test_leak"].all() and (h["monitored_split"] == "test").all()


def test_changed_settings_are_refused_without_force(manifest: Path, tmp_path: Path) -> None:
    from medauc.errors import RunFolderError

    st.train_stage(cfg("train.epochs=1"), tmp_path, manifest)
    with pytest.raises(RunFolderError, match="--force"):
        st.train_stage(cfg("train.epochs=1", "train.lr=0.01"), tmp_path, manifest)
    r = st.train_stage(cfg("train.epochs=1", "train.lr=0.01"), tmp_path, manifest, force=True)[0]
    assert not r["skipped"]


def test_imbalance_options() -> None:
    labels = torch.tensor([0] * 30 + [1] * 10)
    w = tr.class_weights(labels, 2)
    assert torch.allclose(w, torch.tensor([40 / 60, 40 / 20]))
    plan = tr.epoch_plan(labels, 8, torch.Generator().manual_seed(0), balanced=True, hflip=True)
    drawn = labels[torch.cat([b for b, _ in plan])]
    assert 0.3 < drawn.float().mean() < 0.7  # about half from the minority class
    flips = torch.cat([f for _, f in plan])
    assert 0 < flips.sum() < len(flips)
    plain = tr.epoch_plan(labels, 8, torch.Generator().manual_seed(0), balanced=False, hflip=False)
    assert sorted(torch.cat([b for b, _ in plain]).tolist()) == list(range(40))
    # a last batch of one image is dropped (batch norm cannot train on it)
    assert [len(b) for b, _ in tr.epoch_plan(torch.zeros(17, dtype=torch.long), 8, torch.Generator(), False, False)] == [8, 8]


def test_errors_name_the_value_and_the_fix(manifest: Path, tmp_path: Path) -> None:
    from medauc.errors import DataError, ModelError

    with pytest.raises(ModelError, match="train.imbalance"):
        st.train_stage(cfg("train.imbalance=oversample"), tmp_path, manifest)
    no_val = tmp_path / "noval.csv"
    pd.read_csv(manifest).query("split != 'val'").to_csv(no_val, index=False)
    with pytest.raises(DataError, match="train.monitor=test"):
        st.train_stage(cfg(), tmp_path, no_val)


def test_cli_trains_the_named_models_and_reports_errors(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medauc.cli import main

    out = tmp_path / "run"
    args = ["train", "--config", "smoke", "--out", str(out), "--manifest", str(manifest), "train.epochs=1", "train.batch_size=8"]
    assert main([*args, "--models", "test_resnet"]) == 0
    assert (out / "predictions/test_resnet/0/test.csv").is_file() and not (out / "train/test_vit").exists()
    assert "test_resnet seed 0" in capsys.readouterr().out
    assert main([*args, "--models", "resnet_nope"]) == 2
    assert "not a timm model" in capsys.readouterr().err


def test_random_affine_is_identity_at_zero_and_moves_pixels_otherwise() -> None:
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(tr.random_affine(x, torch.full((3, 4), 0.5), 1.0), x, atol=1e-5)
    assert torch.allclose(tr.random_affine(x, torch.rand(3, 4), 0.0), x, atol=1e-5)
    moved = tr.random_affine(x, torch.tensor([[1.0, 0.5, 0.5, 0.5]] * 3), 1.0)  # +15 degrees
    assert moved.shape == x.shape and (moved - x).abs().mean() > 0.05


def test_affine_augmentation_is_seeded_and_resumable(manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aff = ["train.affine=1.0", "train.epochs=2"]
    a = st.train_stage(cfg(*aff), tmp_path / "a", manifest)[0]
    b = killed_then_resumed(cfg(*aff), tmp_path / "b", manifest, monkeypatch)
    plain = st.train_stage(cfg("train.epochs=2"), tmp_path / "c", manifest)[0]
    read = predictions_of
    assert read(a).equals(read(b))  # same seed, interrupted or not: the same bits
    assert not read(a).equals(read(plain))  # and the augmentation does change training


def test_mixed_precision_loss_scaling_and_resume(manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA AMP path (autocast + GradScaler, scaler state in last.pt) run on CPU, where torch supports it too."""
    from medauc.errors import ModelError

    assert tr.mixed_precision(torch.device("cpu"), cfg().train)[1] is None  # CPU training stays float32
    with pytest.raises(ModelError, match="train.amp_dtype='fp8'"):
        st.train_stage(cfg("train.amp_dtype=fp8"), tmp_path / "bad", manifest)
    autocast, scaler = amp_context("cpu", "bf16")
    assert scaler is None
    with autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")

    monkeypatch.setattr(tr, "mixed_precision", lambda device, tc: amp_context("cpu", "fp16"))
    two = ["train.epochs=2"]
    a = st.train_stage(cfg(*two), tmp_path / "a", manifest)[0]
    saved = {}
    b = killed_then_resumed(cfg(*two), tmp_path / "b", manifest, monkeypatch,
                            lambda trainer: saved.update(torch.load(trainer.last_path, weights_only=True)))
    assert saved["scaler"]["scale"] > 0 and "_growth_tracker" in saved["scaler"]  # the loss scale is checkpointed
    read = predictions_of
    assert read(a).equals(read(b))  # interrupted or not: the same bits, loss scale included
    assert np.allclose(read(a).filter(like="prob_").sum(axis=1), 1.0)
    assert load_trained(a["model_dir"])[1]["precision"] == "float16"

    monkeypatch.setattr(tr, "mixed_precision", lambda device, tc: (nullcontext, None))
    fp32 = st.train_stage(cfg(*two), tmp_path / "c", manifest)[0]
    assert load_trained(fp32["model_dir"])[1]["precision"] == "float32"
    assert not read(a).equals(read(fp32))  # half precision does change the arithmetic


def test_one_cycle_rate_equals_torch_one_cycle_lr() -> None:
    """The step-number formula gives torch's OneCycleLR values (cosine both ways, its default factors)."""
    for total, warmup in ((40, 0.25), (7, 0.3), (100, 0.1)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total, pct_start=warmup, cycle_momentum=False)
        expected = []
        for _ in range(total):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            ref.step()
        got = [tr.one_cycle_lr(k, total, 0.01, warmup) for k in range(total)]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert max(got) == pytest.approx(0.01, rel=1e-3) and got[-1] < 1e-6


def test_adamw_one_cycle_label_smoothing_change_training_and_resume_bit_for_bit(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = ["train.optimizer=adamw", "train.schedule=onecycle", "train.label_smoothing=0.1", "train.weight_decay=0.05", "train.epochs=2"]
    a = st.train_stage(cfg(*recipe), tmp_path / "a", manifest)[0]
    lrs = history(tmp_path / "a")["lr"].tolist()
    assert lrs[0] == pytest.approx(0.001 / 25)  # the cycle starts low, not at train.lr
    b = killed_then_resumed(cfg(*recipe), tmp_path / "b", manifest, monkeypatch)
    read = predictions_of
    assert read(a).equals(read(b))  # the rate comes from the step number: a resumed run continues the same cycle
    for i, part in enumerate(recipe[:3]):  # each part of the recipe changes the result on its own
        single = st.train_stage(cfg(part, "train.epochs=2"), tmp_path / f"c{i}", manifest)[0]
        assert not read(single).equals(read(a)), part


def test_recipe_values_are_checked() -> None:
    from medauc.errors import ModelError

    for bad, words in (("train.optimizer=sgd", "adamw"), ("train.schedule=cosine", "onecycle"),
                       ("train.warmup=1.5", "0 < warmup < 1"), ("train.label_smoothing=1.0", "label_smoothing")):
        with pytest.raises(ModelError, match=words):
            tr.Trainer(cfg(bad), "test_resnet", 0, ["a", "b"], Path("unused"), "k")


def test_epochs_by_model_sets_one_models_epochs_and_key_only() -> None:
    # Catches: the table ignored (efficientnet_es trains train.epochs), the table left in the
    # per-model config (every model's key, and so its cached run, changes when another model's
    # entry is added), and names outside model.names accepted silently.
    from medauc.config import ConfigError

    cfg = load_config("smoke", ["model.names=[test_resnet,test_vit]", "train.epochs=2"])
    with_table = load_config("smoke", ["model.names=[test_resnet,test_vit]", "train.epochs=2",
                                       "train.epochs_by_model={test_vit: 5}"])
    assert st.model_config(with_table, "test_vit").train.epochs == 5
    assert st.model_config(with_table, "test_resnet").train.epochs == 2
    assert st.stage_key(with_table, "test_resnet", 0, "m") == st.stage_key(cfg, "test_resnet", 0, "m")
    five = load_config("smoke", ["model.names=[test_resnet,test_vit]", "train.epochs=5"])
    assert st.stage_key(with_table, "test_vit", 0, "m") == st.stage_key(five, "test_vit", 0, "m")
    assert st.stage_key(with_table, "test_vit", 0, "m") != st.stage_key(cfg, "test_vit", 0, "m")
    with pytest.raises(ConfigError, match="not in model.names"):
        load_config("smoke", ["model.names=[test_resnet]", "train.epochs_by_model={test_vit: 5}"])
    with pytest.raises(ConfigError, match="train.epochs_by_model"):
        load_config("smoke", ["model.names=[test_resnet]", "train.epochs_by_model={test_resnet: 0}"])


def test_lr_by_model_sets_one_models_rate_and_key_only() -> None:
    # Catches: the table ignored (test_vit trains at train.lr), another model's key changed by an entry
    # that is not its own, and a bad rate or a stray name accepted.
    from medauc.config import ConfigError

    base = ["model.names=[test_resnet,test_vit]", "train.lr=0.003"]
    cfg = load_config("smoke", base)
    with_table = load_config("smoke", [*base, "train.lr_by_model={test_vit: 0.001}"])
    assert st.model_config(with_table, "test_vit").train.lr == 0.001
    assert st.model_config(with_table, "test_resnet").train.lr == 0.003
    assert st.stage_key(with_table, "test_resnet", 0, "m") == st.stage_key(cfg, "test_resnet", 0, "m")
    low = load_config("smoke", ["model.names=[test_resnet,test_vit]", "train.lr=0.001"])
    assert st.stage_key(with_table, "test_vit", 0, "m") == st.stage_key(low, "test_vit", 0, "m")
    with pytest.raises(ConfigError, match="not in model.names"):
        load_config("smoke", ["model.names=[test_resnet]", "train.lr_by_model={test_vit: 0.001}"])
    with pytest.raises(ConfigError, match="train.lr_by_model"):
        load_config("smoke", ["model.names=[test_resnet]", "train.lr_by_model={test_resnet: 0}"])


def test_best_checkpoint_is_the_lowest_monitored_loss_not_the_last_epoch(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mutation caught: best = last epoch. Elsewhere the monitored loss falls every epoch, so best and
    # last coincide; here it is scripted to rise after epoch 2 of 3, and best.safetensors, model.json
    # and the test predictions must all be epoch 2's.
    from safetensors.torch import load_file

    scripted = iter([1.0, 0.5, 0.9])
    real_metrics = tr.split_metrics
    monkeypatch.setattr(tr, "split_metrics", lambda logits, labels: {**real_metrics(logits, labels), "loss": next(scripted)})
    snapshots = []
    real_epoch = tr.Trainer.train_epoch

    def keep_weights(self, *args, **kwargs):
        out = real_epoch(self, *args, **kwargs)
        snapshots.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})
        return out

    monkeypatch.setattr(tr.Trainer, "train_epoch", keep_weights)
    result = st.train_stage(cfg(), tmp_path / "run", manifest)[0]
    model_dir = tmp_path / "run" / "train" / "test_resnet" / "0"
    assert history(tmp_path / "run")["val_loss"].tolist() == [1.0, 0.5, 0.9] and len(snapshots) == 3
    best = load_file(str(model_dir / "best.safetensors"))
    assert all(torch.equal(best[k], snapshots[1][k]) for k in best)
    assert not all(torch.equal(best[k], snapshots[2][k]) for k in best)
    model, meta = load_trained(model_dir)
    assert meta["epoch"] == 2
    test_rows = pd.read_csv(manifest).query("split == 'test'")
    prob = predict_images(model, meta, np.stack([load_image(p) for p in test_rows["path"]]))
    assert np.allclose(prob, predictions_of(result).filter(like="prob_").to_numpy(), atol=1e-6)


def test_a_model_trained_but_not_recorded_finishes_even_when_its_files_went_since(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while predicting (training done, last.pt kept, nothing recorded); then a rebuild removes the
    files an older record listed. The next run resumes from last.pt and writes history.csv again; without
    best.safetensors it trains from the start. Before, the first crashed (history.csv missing) and the
    second reported that no epoch had finished."""
    config = cfg("train.epochs=2")
    whole = st.train_stage(config, tmp_path / "a", manifest)[0]
    original = st.predict_logits

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    for gone in (["history.csv"], ["history.csv", "best.safetensors", "model.json"]):
        run = tmp_path / f"b-{len(gone)}"
        monkeypatch.setattr(st, "predict_logits", killed)
        with pytest.raises(KeyboardInterrupt):
            st.train_stage(config, run, manifest)
        monkeypatch.setattr(st, "predict_logits", original)
        folder = run / "train/test_resnet/0"
        assert (folder / "last.pt").is_file()
        for name in gone:
            (folder / name).unlink()
        again = st.train_stage(config, run, manifest)[0]
        assert again["epochs"] == 2 and not (folder / "last.pt").exists()
        pd.testing.assert_frame_equal(history(tmp_path / "a"), history(run))
        assert predictions_of(again).equals(predictions_of(whole))
