"""Generation and the augment stage: targets, provenance, nothing generated from or into val/test."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from medauc.augment.command import augment_stage
from medauc.augment.generate import check_no_leak, generation_plan, n_to_generate
from medauc.config import AugmentConfig
from medauc.data.manifest import read_manifest
from medauc.errors import DataError, RunFolderError
from test_augment_fixtures import make_run, tiny_config


def test_targets_multiple_count_share():
    assert n_to_generate(1400, 3514, AugmentConfig(target="multiple", multiple=6.0)) == 7000  # the study: 1,400 -> 8,400
    assert n_to_generate(1400, 3514, AugmentConfig(target="count", count=2000)) == 600
    # healthy share 0.7 of the training set: h / (h + 3514) = 0.7 -> h = 8200 (rounded up)
    assert n_to_generate(1400, 3514, AugmentConfig(target="share", share=0.7)) == 8200 - 1400
    assert n_to_generate(100, 10, AugmentConfig(target="count", count=50)) == 0  # never drops originals
    with pytest.raises(DataError, match="augment.target"):
        n_to_generate(10, 10, AugmentConfig(target="ratio"))
    with pytest.raises(DataError, match="augment.share"):
        n_to_generate(10, 10, AugmentConfig(target="share", share=1.5))


def test_plan_six_times_is_each_source_once_per_sigma():
    sigmas = [0.1, 0.2, 0.3, 0.4, 0.5]
    plan = generation_plan(7, sigmas, 35)
    assert sorted((s, sig) for s, sig, _ in plan) == sorted((s, sig) for s in range(7) for sig in sigmas)
    assert {rep for *_, rep in plan} == {0}
    partial = generation_plan(10, sigmas, 20)  # 3x: two per source, sigmas used evenly, no repeats
    assert Counter(s for s, _, _ in partial) == {s: 2 for s in range(10)}
    assert set(Counter(sig for _, sig, _ in partial).values()) == {4}
    assert len({(s, sig) for s, sig, _ in partial}) == 20
    more = generation_plan(2, [0.1], 5)  # more than source x sigma pairs: fresh noise, new repeat index
    assert [rep for *_, rep in more] == [0, 0, 1, 1, 2]


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("aug")
    manifest = make_run(run_dir)
    cfg = tiny_config()
    result = augment_stage(cfg, run_dir, progress=False)
    return run_dir, manifest, cfg, result


def test_augmented_manifest_has_provenance_and_study_multiple(augmented_run):
    run_dir, manifest, cfg, result = augmented_run
    aug = read_manifest(run_dir / "augment" / "manifest.csv")
    gen = aug[aug["source_image_id"] != ""]
    healthy_train = manifest[(manifest["split"] == "train") & (manifest["label"] == "healthy")]
    assert len(gen) == 5 * len(healthy_train)  # 6x: originals + 5 restorations each
    assert set(gen["label"]) == {"healthy"} and set(gen["augmentation"]) == {"restoration"}
    assert Counter(gen["source_image_id"]) == {i: 5 for i in healthy_train["image_id"]}
    assert sorted(gen["sigma"].unique().tolist()) == list(cfg.augment.sigmas)
    assert all((run_dir / "augment" / "generated").glob("**/*.png"))
    first = gen.iloc[0]
    assert first["path"].endswith(".png") and len(first["sha256"]) == 64
    # the originals are all still there, unchanged
    pd.testing.assert_frame_equal(
        aug[aug["source_image_id"] == ""][list(manifest.columns)].reset_index(drop=True),
        read_manifest(run_dir / "manifest.csv"), check_dtype=False,
    )
    assert result["counts"]["healthy_train_augmented"] == 6 * len(healthy_train)


def test_nothing_generated_touches_val_or_test(augmented_run):
    run_dir, manifest, _, _ = augmented_run
    aug = read_manifest(run_dir / "augment" / "manifest.csv")
    gen = aug[aug["source_image_id"] != ""]
    held_out = set(manifest.loc[manifest["split"] != "train", "image_id"])
    assert set(gen["split"]) == {"train"}
    assert not set(gen["source_image_id"]) & held_out
    assert not set(gen["image_id"]) & held_out
    assert (aug["split"] != "train").sum() == (manifest["split"] != "train").sum()  # val/test not augmented
    # restored tumour test images are kept in their own file, never in the training manifest
    restored = read_manifest(run_dir / "augment" / "restored_test.csv")
    assert set(restored["source_image_id"]) <= set(manifest.loc[manifest["split"] == "test", "image_id"])
    assert not set(restored["image_id"]) & set(aug["image_id"])


def test_leak_guard_refuses_planted_leaks(augmented_run):
    run_dir, manifest, _, _ = augmented_run
    aug = read_manifest(run_dir / "augment" / "manifest.csv")
    gen_row = aug.index[aug["source_image_id"] != ""][0]
    moved = aug.copy()
    moved.loc[gen_row, "split"] = "test"
    with pytest.raises(DataError, match="only train"):
        check_no_leak(moved)
    from_test = aug.copy()
    from_test.loc[gen_row, "source_image_id"] = manifest.loc[manifest["split"] == "test", "image_id"].iloc[0]
    with pytest.raises(DataError, match="not train"):
        check_no_leak(from_test)


def test_checks_file_and_denoiser_written(augmented_run):
    run_dir, _, cfg, result = augmented_run
    on_disk = json.loads((run_dir / "augment_checks.json").read_text())
    for key in ("b_restoration_quality", "c_memorisation", "d_artefact_detectability"):
        assert on_disk[key] is not None
    assert on_disk["a_predicted_healthy"] is None and on_disk["e_shortcut_flip"] is None  # need --strategies
    validation = on_disk["b_restoration_quality"]["validation"]
    assert [r["sigma"] for r in validation] == [0.0, *cfg.augment.sigmas]  # sigma 0: a clean input
    for r in validation:
        assert {"psnr_restored", "psnr_blur", "blur_sigma", "psnr_nlm", "ssim_blur", "ssim_nlm"} <= set(r)
    with np.load(run_dir / "augment" / "restoration_examples.npz") as ex:
        assert ex["unet"].shape == ex["blur"].shape == ex["nlm"].shape == ex["noisy"].shape
        assert ex["noisy"].shape[1:] == ex["clean"].shape and len(ex["sigmas"]) == ex["noisy"].shape[0]
    assert 0 <= on_disk["c_memorisation"]["near_copy_share"] <= 1
    assert 0 <= on_disk["d_artefact_detectability"]["auc"] <= 1
    assert (run_dir / "augment" / "denoiser.safetensors").is_file()
    assert json.loads((run_dir / "augment" / "denoiser.json").read_text())["n_train"] == 24
    assert on_disk["image_size"] == {"denoiser": 32, "classifier": 32, "warning": None}
    assert on_disk["d_artefact_detectability"]["image_size"] == 32


def test_rerun_is_skipped_and_changed_config_needs_force(augmented_run):
    run_dir, _, cfg, result = augmented_run
    mtime = (run_dir / "augment" / "manifest.csv").stat().st_mtime_ns
    again = augment_stage(cfg, run_dir, progress=False)
    assert again["counts"] == result["counts"]
    assert (run_dir / "augment" / "manifest.csv").stat().st_mtime_ns == mtime
    from medauc.config import replace

    with pytest.raises(RunFolderError, match="--force"):
        augment_stage(replace(cfg, **{"augment.multiple": 3.0}), run_dir, progress=False)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="medauc prepare"):
        augment_stage(tiny_config(), tmp_path, progress=False)


def test_generation_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_run(a, {"healthy": (12, 2, 2), "glioma": (3, 1, 1)})
    make_run(b, {"healthy": (12, 2, 2), "glioma": (3, 1, 1)})
    cfg = tiny_config(**{"augment.sigmas": [0.1, 0.3], "augment.multiple": 2.0, "data.classes": ["healthy", "glioma"]})
    augment_stage(cfg, a, progress=False)
    augment_stage(cfg, b, progress=False)
    ha = read_manifest(a / "augment" / "manifest.csv")["sha256"].tolist()
    hb = read_manifest(b / "augment" / "manifest.csv")["sha256"].tolist()
    assert ha == hb and len(ha) == 21 + 12  # 21 originals + 12 generated (2x healthy train)
    assert np.isfinite(json.loads((a / "augment_checks.json").read_text())["d_artefact_detectability"]["auc"])


def test_denoiser_at_another_size_is_warned_and_check_d_sees_the_classifier_size(tmp_path, monkeypatch, caplog):
    from medauc.augment import artefacts

    seen = []

    def spy(images, *args, **kwargs):
        seen.append(images.shape)
        return real(images, *args, **kwargs)

    real = artefacts.image_features
    monkeypatch.setattr(artefacts, "image_features", spy)
    make_run(tmp_path, {"healthy": (12, 2, 2), "glioma": (3, 1, 1)})
    cfg = tiny_config(**{"augment.image_size": 16, "data.image_size": 32, "augment.sigmas": [0.1], "augment.multiple": 2.0,
                         "data.classes": ["healthy", "glioma"]})
    with caplog.at_level("WARNING", logger="medauc.augment.command"):
        result = augment_stage(cfg, tmp_path, progress=False)
    # check (d) on the 12 originals and 12 restorations as the classifier reads them (32 px), not as
    # the denoiser made them (16 px): the resizing signature is part of what it must catch
    assert seen == [(12, 32, 32), (12, 32, 32)]  # the originals, then the restorations
    assert result["d_artefact_detectability"]["image_size"] == 32
    assert result["image_size"]["denoiser"] == 16 and result["image_size"]["classifier"] == 32
    assert "augment.image_size=16 differs from data.image_size=32" in result["image_size"]["warning"]
    assert result["image_size"]["warning"] in caplog.text
    from medauc import stages
    from medauc.config import replace

    # check (d) depends on the classifier's size: another one must recompute the stage
    key = stages.stage_key(stages.get("augment"), cfg, tmp_path)
    assert stages.stage_key(stages.get("augment"), replace(cfg, **{"data.image_size": 64}), tmp_path) != key


def test_command_options_and_disabled_stage(tmp_path, capsys):
    import argparse

    from medauc.augment import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--strategies", "--no-progress"])
    assert args.strategies and args.no_progress
    args.cfg, args.out, args.force = tiny_config(**{"augment.enabled": False}), str(tmp_path / "r"), False
    assert command.main(args) == 0
    assert "augment.enabled is false" in capsys.readouterr().out
    assert not (tmp_path / "r" / "augment").exists()


def test_small_healthy_class_is_refused_before_any_work(tmp_path):
    make_run(tmp_path, {"healthy": (6, 2, 2), "glioma": (6, 2, 2)})
    with pytest.raises(DataError, match=r"class 'healthy' .* has 6 training image\(s\).*at least 10.*augment.enabled=false"):
        augment_stage(tiny_config(), tmp_path)
    assert not (tmp_path / "augment").exists()  # nothing trained, nothing generated


def test_the_denoiser_never_trains_on_the_validation_images_check_b_scores(tmp_path, monkeypatch):
    # Mutation caught: the healthy validation images (which check b restores and scores) added to, or
    # used as, the denoiser's training images; check b would then grade the denoiser on what it learnt.
    from medauc.augment import command
    from medauc.data.datasets import load_images, uint8_to_float

    seen = []
    original = command.train_denoiser

    def spy(clean, *args, **kwargs):
        seen.append(np.array(clean, copy=True))
        return original(clean, *args, **kwargs)

    monkeypatch.setattr(command, "train_denoiser", spy)
    run_dir = tmp_path / "run"
    manifest = make_run(run_dir)
    cfg = tiny_config()
    result = augment_stage(cfg, run_dir, progress=False)
    (trained,) = seen
    assert trained.dtype == np.uint8  # the healthy sources stay 8-bit as cached; the denoiser reads value / 255
    trained = trained.astype(np.float32) / np.float32(255)
    size = cfg.augment.image_size
    rows = {s: manifest[(manifest["split"] == s) & (manifest["label"] == "healthy")] for s in ("train", "val")}
    images = {s: uint8_to_float(load_images(list(r["path"]), size, run_dir / "cache")) for s, r in rows.items()}
    assert len(images["val"]) and result["b_restoration_quality"]["validation"][0]["n"] == len(images["val"])
    assert trained.shape == images["train"].shape
    np.testing.assert_array_equal(trained, images["train"])
    for v in images["val"]:
        assert not np.any(np.all(np.isclose(trained, v[None]), axis=(1, 2))), "a validation image trained the denoiser"
