"""The strategies stage: training sets, the table, checks a and e (with stand-in training)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medauc import fileio, records
from medauc.augment.command import augment_stage
from medauc.strategies.stage import classic_augment, strategies_stage, strategy_inputs
from medauc.data.manifest import read_manifest
from test_augment_fixtures import CLASSES, make_run, synthetic_images, tiny_config


def test_classic_augment_is_seeded_and_stays_an_image():
    x = synthetic_images(6, 32, np.random.default_rng(0))
    a = classic_augment(x, torch.Generator().manual_seed(0))
    b = classic_augment(x, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not np.allclose(a, x)
    # small rotations and jitter: each output still looks most like its own source
    corr = np.corrcoef(a.reshape(6, -1), x.reshape(6, -1))[:6, 6:]
    assert (corr.argmax(axis=1) == np.arange(6)).all()


def fake_train_stage(cfg, run_dir, manifest_path=None, out_dir=None, models=None, extra_sets=None, force=False):
    """Stand-in for medauc.classify.stage.train_stage: writes plausible predictions files, trains nothing.

    The "restoration" model calls restored images healthy (the shortcut check e must see it).
    """
    df = read_manifest(manifest_path)
    strategy = Path(out_dir).name
    results = []
    for seed in cfg.train.seeds:
        rng = np.random.default_rng(zlib.crc32(f"{strategy}{seed}".encode()))
        pred_dir = Path(out_dir) / "predictions" / models[0] / str(seed)
        written = {}
        sets = {"val": df[df["split"] == "val"], "test": df[df["split"] == "test"], **(extra_sets or {})}
        for name, frame in sets.items():
            logits = rng.normal(0, 1, (len(frame), len(CLASSES)))
            logits[np.arange(len(frame)), [CLASSES.index(c) for c in frame["label"]]] += 2.0
            if name == "restored_test" and strategy == "restoration":
                logits[:, 0] += 10.0
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            out = pd.DataFrame({"image_id": frame["image_id"].to_numpy(), "label": frame["label"].to_numpy()})
            for j, c in enumerate(CLASSES):
                out[f"prob_{c}"] = p[:, j]
            pred_dir.mkdir(parents=True, exist_ok=True)
            out.to_csv(pred_dir / f"{name}.csv", index=False)
            written[name] = str(pred_dir / f"{name}.csv")
        results.append({"model": models[0], "seed": seed, "predictions": written})
    return results


@pytest.fixture(scope="module")
def strategy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("strat")
    make_run(run_dir, {"healthy": (12, 4, 8), "glioma": (4, 2, 6), "meningioma": (4, 2, 6), "pituitary": (4, 2, 6)})
    cfg = tiny_config(**{"augment.sigmas": [0.1, 0.3], "augment.multiple": 3.0, "train.seeds": [0, 1]})
    augment_stage(cfg, run_dir, progress=False)
    mp = pytest.MonkeyPatch()
    mp.setattr("medauc.classify.stage.train_stage", fake_train_stage)
    table = strategies_stage(cfg, run_dir, progress=False)
    yield run_dir, cfg, table
    mp.undo()


def test_table_has_every_strategy_and_seed_with_cis(strategy_run):
    run_dir, cfg, table = strategy_run
    rows = table["rows"]
    assert [(r["strategy"], r["seed"]) for r in rows] == [(s, seed) for s in cfg.augment.strategies for seed in (0, 1)]
    for r in rows:
        for metric in ("accuracy", "auc_macro", "screening_auc"):
            assert r[f"{metric}_ci_low"] <= r[metric] <= r[f"{metric}_ci_high"]
    by = {r["strategy"]: r for r in rows}
    assert by["balanced"]["n_train_healthy"] == by["weighted_loss"]["n_train_healthy"] == 12
    assert by["restoration"]["n_train_healthy"] == by["duplicate"]["n_train_healthy"] == by["classic"]["n_train_healthy"] == 36
    assert by["weighted_loss"]["imbalance"] == "weighted_loss" and by["balanced"]["imbalance"] == "none"
    csv = pd.read_csv(run_dir / "strategies.csv")
    assert len(csv) == 10 and "screening_auc_ci_high" in csv.columns
    assert json.loads((run_dir / "strategies.json").read_text())["reference"] == "restoration"


def test_paired_tests_are_against_restoration(strategy_run):
    _, _, table = strategy_run
    tests = table["paired_tests"]
    assert tests and {t["reference"] for t in tests} == {"restoration"}
    assert {t["strategy"] for t in tests} == {"balanced", "duplicate", "classic", "weighted_loss"}
    auc = [t for t in tests if t["metric"] == "screening_auc" and t["strategy"] == "balanced" and t["seed"] == 0][0]
    assert auc["test"] == "delong" and 0 <= auc["p_value"] <= 1
    assert auc["difference"] == pytest.approx(auc["value_a"] - auc["value_b"])


def test_strategy_training_sets(strategy_run):
    run_dir, cfg, _ = strategy_run
    dup = read_manifest(run_dir / "strategies" / "duplicate" / "manifest.csv")
    extra = dup[dup["source_image_id"] != ""]
    assert set(extra["split"]) == {"train"} and len(extra) == 24
    src_path = dict(zip(dup["image_id"], dup["path"]))
    assert all(src_path[s] == p for s, p in zip(extra["source_image_id"], extra["path"]))  # true duplicates
    classic = read_manifest(run_dir / "strategies" / "classic" / "manifest.csv")
    new = classic[classic["augmentation"] == "classic"]
    assert len(new) == 24 and all(Path(p).is_file() and "strategies/classic/generated" in p for p in new["path"])
    held_out = set(classic.loc[classic["split"] != "train", "image_id"])
    assert not set(new["source_image_id"]) & held_out


def test_checks_a_and_e_are_the_stages_own(strategy_run):
    run_dir, _, table = strategy_run
    c = json.loads((run_dir / "strategies.json").read_text())["checks"]
    assert c == json.loads(json.dumps(table["checks"]))
    a = c["a_predicted_healthy"]
    assert a["strategy"] == "balanced" and a["n"] == 24 and len(a["per_sigma"]) == 2 and len(a["per_seed"]) == 2
    assert 0 <= a["baseline"]["test_tumour_called_healthy"] <= 1 and a["study_share"] == 0.9766
    e = c["e_shortcut_flip"]
    assert set(e["strategies"]) == {"balanced", "restoration", "duplicate", "classic", "weighted_loss"}
    assert e["strategies"]["restoration"]["healthy_share_restored"] == 1.0  # the planted shortcut
    assert e["comparison"]["difference"] > 0.3 and e["comparison"]["ci"][0] > 0
    # augment_checks.json stays the augment stage's: its checks kept, a and e not written there
    augment = json.loads((run_dir / "augment_checks.json").read_text())
    assert augment["d_artefact_detectability"] is not None
    assert augment["a_predicted_healthy"] is None and augment["e_shortcut_flip"] is None


def test_rerun_skips_and_main_run_model_is_reused(strategy_run, monkeypatch):
    run_dir, cfg, table = strategy_run

    def boom(*a, **k):
        raise AssertionError("must not train again")

    monkeypatch.setattr("medauc.classify.stage.train_stage", boom)
    assert strategies_stage(cfg, run_dir, progress=False)["rows"] == table["rows"]
    # when the main run trained strategy_model on the same augmented manifest, it is reused
    from medauc.classify.stage import safe_name, stage_key
    from medauc.config import replace

    plain = replace(cfg, **{"train.imbalance": "none"})
    sha = fileio.file_sha256(run_dir / "augment" / "manifest.csv")
    for seed in cfg.train.seeds:
        records.mark_stage(run_dir, f"train/{safe_name(cfg.augment.strategy_model)}/{seed}", stage_key(plain, cfg.augment.strategy_model, seed, sha))
    manifest = read_manifest(run_dir / "manifest.csv")
    augmented = read_manifest(run_dir / "augment" / "manifest.csv")
    _, path, out_dir = strategy_inputs("restoration", cfg, run_dir, manifest, augmented, progress=False)
    assert out_dir == run_dir and path == run_dir / "augment" / "manifest.csv"
