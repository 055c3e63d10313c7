"""explain_stage on a run folder: manifest + train/<model>/<seed>/ in, explain.json + panels out.

The classifier and image-loading modules are replaced by small stand-ins that honour their
contracts (load_trained, prepare_batch, create_model, load_image), so that this stage is tested
on its own.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from medauc import fileio, runs
from medauc.config import load_config, replace
from medauc.errors import DataError, ModelError

IMG, SIZE = 48, 32
CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def _create_model(name, num_classes, in_chans, image_size, pretrained=False, weights=""):
    kw = {"img_size": image_size} if "vit" in name else {}
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kw)


def _load_trained(model_dir):
    from safetensors.torch import load_file

    meta = json.loads((model_dir / "model.json").read_text())
    model = _create_model(meta["model_name"], len(meta["classes"]), meta["in_chans"], meta["image_size"])
    model.load_state_dict(load_file(str(model_dir / "best.safetensors")))
    return model.eval(), meta


def _prepare_batch(images, meta):
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    x = torch.nn.functional.interpolate(x, size=(meta["image_size"],) * 2, mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.25


def _load_image(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def _stand_in(monkeypatch, module_name, **functions):
    # Patch the real module when it exists (other code may import more names from it),
    # else put a stand-in module in its place.
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        module = types.ModuleType(module_name)
        monkeypatch.setitem(sys.modules, module_name, module)
    for name, fn in functions.items():
        monkeypatch.setattr(module, name, fn, raising=False)


@pytest.fixture
def stand_ins(monkeypatch):
    _stand_in(monkeypatch, "medauc.classify.models", load_trained=_load_trained, prepare_batch=_prepare_batch, create_model=_create_model)
    _stand_in(monkeypatch, "medauc.data.images", load_image=_load_image)


def _cfg(**changes):
    base = {"explain.max_images": 12, "explain.per_class": 2, "evaluate.n_bootstrap": 100, "data.image_size": SIZE}
    return replace(load_config("smoke"), **{**base, **changes})


def _make_run(tmp_path, cfg, subjects=None):
    from safetensors.torch import save_file

    run = runs.open_run(tmp_path / "run", cfg)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        label = CLASSES[i % 4]
        img = 0.2 + 0.05 * rng.standard_normal((IMG, IMG))
        mask_path = ""
        if label != "healthy":
            r, c = rng.integers(4, IMG - 14, 2)
            img[r : r + 10, c : c + 10] += 0.6
            mask = np.zeros((IMG, IMG), np.uint8)
            mask[r : r + 10, c : c + 10] = 255
            mask_path = f"phantom/masks/{label}/{i:03d}.png"
            (run / mask_path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(run / mask_path)
        path = f"phantom/{label}/{i:03d}.png"
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(run / path)
        rows.append({"image_id": f"{i:03d}", "path": path, "label": label, "split": "test" if i < 16 else "train", "mask_path": mask_path,
                     **({"subject": subjects(i)} if subjects else {})})
    fileio.write_csv(run / "manifest.csv", rows)
    for name in cfg.model.names:
        d = run / "train" / name / "0"
        d.mkdir(parents=True)
        torch.manual_seed(1)
        model = _create_model(name, 4, 1, SIZE)
        save_file(model.state_dict(), str(d / "best.safetensors"))
        meta = {"model_name": name, "classes": CLASSES, "image_size": SIZE, "in_chans": 1, "mean": [0.5], "std": [0.25], "seed": 0, "epoch": 1}
        (d / "model.json").write_text(json.dumps(meta))
    return run


def test_stage_writes_scores_and_panels_and_caches(tmp_path, stand_ins, monkeypatch):
    from medauc.explain import stage

    cfg = _cfg()
    run = _make_run(tmp_path, cfg)
    result = stage.explain_stage(cfg, run)
    assert list(result["models"]) == ["test_resnet", "test_vit"]
    assert result["n_images"] == 12 and result["lesion_classes"] == CLASSES[1:]
    vit = result["models"]["test_vit"]
    assert vit["target_layer"].startswith("blocks.") and vit["grid"] == [2, 2]
    assert vit["dir"] == "train/test_vit/0"
    g = vit["methods"]["gradcam"]
    assert set(g["trained"]["by_class"]) == set(CLASSES[1:])
    assert g["random_twin"] is not None and g["sanity"]["verdict"] in ("better", "not_better")
    for c in CLASSES:
        assert (run / "explain" / f"gradcam_{c}.png").stat().st_size > 1000
    stored = json.loads((run / "explain.json").read_text())
    assert stored["models"]["test_resnet"]["methods"]["gradcam"]["trained"]["all"]["pointing_game"]["n"] == 9

    # Same inputs: skipped, the stored result comes back.
    monkeypatch.setattr(stage, "explain_models", lambda *a, **k: pytest.fail("recomputed an up-to-date stage"))
    assert stage.explain_stage(cfg, run) == stored


def test_other_inputs_need_force(tmp_path, stand_ins):
    from medauc.explain import stage
    from medauc.errors import RunFolderError

    cfg = _cfg(**{"model.names": ["test_resnet"], "explain.sanity_check": False, "explain.per_class": 0})
    run = _make_run(tmp_path, cfg)
    first = stage.explain_stage(cfg, run)
    assert first["models"]["test_resnet"]["methods"]["gradcam"]["sanity"] is None
    other = replace(cfg, **{"explain.methods": ["gradcampp"]})
    with pytest.raises(RunFolderError, match="--force"):
        stage.explain_stage(other, run)
    again = stage.explain_stage(other, run, force=True)
    assert list(again["models"]["test_resnet"]["methods"]) == ["gradcampp"]
    assert again["panels"] == {} and not (run / "explain" / "gradcam_glioma.png").exists()


def test_only_configured_models_and_seeds_are_explained(tmp_path, stand_ins):
    import shutil

    from medauc.explain import stage

    cfg = _cfg(**{"explain.sanity_check": False, "explain.per_class": 0, "explain.max_images": 8})
    run = _make_run(tmp_path, cfg)  # trains test_resnet and test_vit, seed 0
    shutil.copytree(run / "train/test_resnet/0", run / "train/test_resnet/7")  # a seed not in train.seeds
    only = replace(cfg, **{"model.names": ["test_resnet"]})
    result = stage.explain_stage(only, run)
    assert list(result["models"]) == ["test_resnet"] and result["models"]["test_resnet"]["dir"] == "train/test_resnet/0"
    assert result["ignored"] == [{"model": "test_resnet", "seed": 7, "reason": "seed not in train.seeds"},
                                 {"model": "test_vit", "seed": 0, "reason": "model not in model.names"}]
    # a configured seed that was never trained is not silently replaced by another one
    with pytest.raises(ModelError, match=r"model.names includes 'test_resnet'.*train.seeds=\[3\].*medauc train"):
        stage.explain_stage(replace(only, **{"train.seeds": [3]}), run, force=True)
    with pytest.raises(ModelError, match="model.names includes 'resnet18'"):
        stage.explain_stage(replace(cfg, **{"model.names": ["test_resnet", "resnet18"]}), run, force=True)


def test_cli_runs_the_stage(tmp_path, stand_ins, capsys):
    from medauc.cli import main

    cfg = _cfg(**{"model.names": ["test_resnet"], "explain.max_images": 8, "explain.per_class": 0})
    run = _make_run(tmp_path, cfg)
    overrides = ["explain.max_images=8", "explain.per_class=0", "evaluate.n_bootstrap=100", f"data.image_size={SIZE}", "model.names=[test_resnet]"]
    assert main(["explain", "--config", "smoke", "--out", str(run), *overrides]) == 0
    out = capsys.readouterr().out
    assert "test_resnet gradcam" in out and "explain.json" in out
    assert (run / "explain.json").is_file()


def test_clear_errors_for_missing_inputs(tmp_path, stand_ins):
    from medauc.explain.stage import explain_stage

    cfg = _cfg(**{"model.names": ["test_resnet"]})
    empty = runs.open_run(tmp_path / "empty", cfg)
    with pytest.raises(ModelError, match="run `medauc train`"):
        explain_stage(cfg, empty)
    run = _make_run(tmp_path, cfg)
    (run / "manifest.csv").unlink()
    with pytest.raises(DataError, match="manifest.csv does not exist"):
        explain_stage(cfg, run)


def test_localisation_intervals_are_over_patients_when_known(tmp_path, stand_ins):
    """Issue 24: with patients in the manifest, every localisation interval resamples patients."""
    from medauc.explain import stage

    cfg = _cfg()
    # 16 test images of 4 patients (one per class): the intervals have 4 units, not 12 images.
    run = _make_run(tmp_path, cfg, subjects=lambda i: f"p{i % 4}")
    result = stage.explain_stage(cfg, run)
    assert result["ci_unit"] == "patients" and result["n_patients"] == 4
    g = result["models"]["test_resnet"]["methods"]["gradcam"]
    assert g["trained"]["all"]["pointing_game"]["n_patients"] == 3  # the healthy patient has no mask
    assert g["trained"]["by_class"]["glioma"]["energy_ratio"]["n_patients"] == 1
    assert g["sanity"]["pointing_game_difference"]["n_patients"] == 3
    # One patient per class: a class's interval cannot vary with a resample of one patient.
    er = g["trained"]["by_class"]["glioma"]["energy_ratio"]
    assert er["ci_low"] == er["ci_high"] == pytest.approx(er["mean"])


def test_localisation_intervals_are_over_images_without_patients(tmp_path, stand_ins):
    from medauc.explain import stage

    result = stage.explain_stage(_cfg(), _make_run(tmp_path, _cfg()))
    assert result["ci_unit"] == "images" and result["n_patients"] is None
    assert "n_patients" not in result["models"]["test_resnet"]["methods"]["gradcam"]["trained"]["all"]["pointing_game"]


def test_the_sample_is_read_from_the_run_folder_not_the_working_directory(tmp_path, stand_ins, monkeypatch):
    """Relative manifest paths are relative to the manifest's folder: a file of the same relative name in the
    working directory (another run folder, say) must not be explained instead."""
    from medauc.explain.inputs import load_sample

    cfg = _cfg()
    run = _make_run(tmp_path, cfg)
    elsewhere = tmp_path / "elsewhere"
    for f in (run / "phantom").rglob("*.png"):
        decoy = elsewhere / f.relative_to(run)
        decoy.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((IMG, IMG), 255 if "masks" not in f.parts else 0, np.uint8)).save(decoy)
    monkeypatch.chdir(elsewhere)
    images, _, masks, ids, _ = load_sample(cfg, run, CLASSES)
    for image, i in zip(images, ids):
        assert np.array_equal(image, _load_image(run / "phantom" / f"{CLASSES[int(i) % 4]}/{i}.png"))
    assert any(m is not None and m.any() for m in masks)
