"""The train stage: which models and seeds, their run-folder files, their predictions files.

Per model and seed, ``<out>/train/<model>/<seed>/`` receives ``history.csv``, ``best.safetensors``,
``model.json`` and, after every epoch, ``last.pt`` (everything needed to resume bit for bit; see
:class:`medauc.classify.train.Trainer`). Predictions go to
``<out>/predictions/<model>/<seed>/<split>.csv``. Each model and seed keeps its own stage record,
so a changed input retrains only the models it concerns and an interrupted model resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medauc import allocator, fileio, records
from medauc.relocate import key_sha256
from medauc.stage_keys import model_folder
from medauc.classify import distributed as ddp
from medauc.classify import parallel
from medauc.classify.predict import predict_logits, predictions_frame
from medauc.classify.train import Trainer
from medauc.config import Config, config_hash, to_dict, without_later_defaults
from medauc.data.datasets import ImageSet, image_set
from medauc.data.manifest import IMAGE_COLUMNS, class_order, known_subjects, read_manifest
from medauc.errors import DataError, ModelError, RunFolderError

log = logging.getLogger(__name__)


def safe_name(model_name: str) -> str:
    """A timm name usable as one folder name (``hf-hub:org/x`` -> ``hf-hub_org_x``): :func:`medauc.stage_keys.model_folder`."""
    return model_folder(model_name)


def default_manifest(cfg: Config, run_dir: Path) -> Path:
    augmented = run_dir / "augment" / "manifest.csv"
    return augmented if cfg.augment.enabled and augmented.is_file() else run_dir / "manifest.csv"


def data_classes(cfg: Config, df: pd.DataFrame) -> list[str]:
    """The classes to learn: ``data.classes`` in that order (empty: the manifest's labels, negative
    class first, see :func:`medauc.data.manifest.class_order`), those present in the training split."""
    labels = set(df["label"].astype(str))
    configured = list(cfg.data.classes) or class_order(labels, cfg.data.negative_class)
    unknown = sorted(labels - set(configured))
    if unknown:
        raise DataError(f"manifest labels {unknown} are not in data.classes {cfg.data.classes}; add them or fix the manifest")
    train_labels = set(df.loc[df["split"] == "train", "label"].astype(str))
    missing = sorted(labels - train_labels)
    if missing:
        raise DataError(f"classes {missing} have no training images in the manifest; the classifier cannot learn them")
    classes = [c for c in configured if c in train_labels]
    if len(classes) < 2:
        raise DataError(f"the manifest's training split holds {len(classes)} class(es) ({classes}); at least 2 are needed")
    return classes


def model_config(cfg: Config, model_name: str) -> Config:
    """``cfg`` as one model trains under it: ``train.epochs`` from ``train.epochs_by_model`` and
    ``train.lr`` from ``train.lr_by_model`` when they name the model, and the per-model tables emptied,
    so that a model's key (and its run) depends only on its own settings, not on another model's entry."""
    by_model, lrs = cfg.train.epochs_by_model, cfg.train.lr_by_model
    if not by_model and not lrs:
        return cfg
    # dataclasses.replace, not config.replace: the latter merges dicts, so it cannot empty the tables.
    train = dataclasses.replace(cfg.train, epochs=int(by_model.get(model_name, cfg.train.epochs)), epochs_by_model={},
                                lr=float(lrs.get(model_name, cfg.train.lr)), lr_by_model={})
    return dataclasses.replace(cfg, train=train)


def stage_key(cfg: Config, model_name: str, seed: int, manifest_sha: str) -> str:
    """What a trained model depends on: its name and seed, the model/train/data settings, the manifest."""
    cfg = model_config(cfg, model_name)
    # Fields added after the first trained models: at their default, old models keep their keys.
    later = ("zero_head", "affine", "amp_dtype", "optimizer", "schedule", "warmup", "label_smoothing", "sync_bn",
             "epochs_by_model", "lr_by_model")
    train = {k: v for k, v in without_later_defaults(cfg.train, later).items() if k not in ("seeds", "num_threads", "jobs", "device")}
    model = {k: v for k, v in to_dict(cfg.model).items() if k != "names"}
    data = {"image_size": cfg.data.image_size, "classes": cfg.data.classes}
    return config_hash({"model_name": model_name, "seed": seed}, model, train, data, manifest_sha)


def record_name(model_name: str, seed: int) -> str:
    """The stage record of one trained model and seed: ``train/<model folder>/<seed>``."""
    return f"train/{safe_name(model_name)}/{seed}"


def is_trained(out_dir: Path, cfg: Config, model_name: str, seed: int, manifest_sha: str) -> bool:
    """Whether ``model_name`` seed ``seed`` finished in ``out_dir`` with these inputs (its record's key matches)."""
    return records.stage_is_done(out_dir, record_name(model_name, seed), stage_key(cfg, model_name, seed, manifest_sha))


def _write_predictions(path: Path, frame: pd.DataFrame) -> None:
    fileio.write_csv(path, frame.to_dict("records"), list(frame.columns))


def train_stage(
    cfg: Config,
    run_dir: str | Path,
    manifest_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    models: list[str] | None = None,
    extra_sets: dict[str, pd.DataFrame] | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Train every model (``models`` or ``cfg.model.names``) once per seed in ``cfg.train.seeds``.

    Writes ``<out_dir>/train/<model>/<seed>/`` and ``<out_dir>/predictions/<model>/<seed>/<split>.csv``
    for val, test and each of ``extra_sets`` (manifest-like frames: ``image_id, path, label``).
    A finished model is skipped (missing extra predictions are still written), an interrupted one
    resumes. Returns one dict per model and seed: paths, best epoch, seconds.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    manifest_path = Path(manifest_path) if manifest_path is not None else default_manifest(cfg, run_dir)
    models = list(models) if models is not None else list(cfg.model.names)
    if not models:
        raise ModelError("no models to train: set model.names (e.g. [resnet18, efficientnet_b0])")
    if cfg.model.weights and Path(cfg.model.weights).is_file() and len(models) > 1:
        raise ModelError(f"model.weights={cfg.model.weights} is one file but {len(models)} models are named; give a folder of <model name>.safetensors")
    df = read_manifest(manifest_path, required=IMAGE_COLUMNS)
    manifest_sha = key_sha256(run_dir, manifest_path)  # as before a rewrite with relative paths (medauc.relocate)
    classes = data_classes(cfg, df)
    d = ddp.setup(cfg.train.device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    cache_dir = run_dir / "cache"
    base = manifest_path.parent
    size = cfg.data.image_size

    def load(frame: pd.DataFrame, desc: str, lazy: bool = True) -> ImageSet:
        # Rank 0 decodes and writes the cache; the other ranks then read it. Every set but the training
        # set is only predicted, a chunk at a time: it is read from the cache as it is asked for (lazy).
        if d.is_main:
            s = image_set(frame, classes, size, cache_dir, base, cfg.data.workers, desc, lazy=lazy)
        ddp.barrier(d)
        if not d.is_main:
            s = image_set(frame, classes, size, cache_dir, base, 1, desc, lazy=lazy)
        return s

    split = df["split"].astype(str)
    train_df = df[split == "train"]
    if cfg.train.max_train_images and len(train_df) > cfg.train.max_train_images:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_df))[: cfg.train.max_train_images])
        train_df = train_df.iloc[keep]
    sets: dict[str, pd.DataFrame] = {s: df[split == s] for s in ("val", "test") if (split == s).any()}
    monitor_split = cfg.train.monitor
    if monitor_split not in sets:
        raise DataError(
            f"manifest {manifest_path} has no {monitor_split!r} rows to monitor; prepare with data.val_fraction>0, "
            "or set train.monitor=test to reproduce the study's (leaky) protocol"
        )
    for name, frame in (extra_sets or {}).items():
        if name in ("train", "val", "test"):
            raise DataError(f"extra_sets: {name!r} clashes with a split name; choose another name")
        sets[name] = frame
    train = load(train_df, "decode train", lazy=False)
    loaded = {name: load(frame, f"decode {name}") for name, frame in sets.items()}

    tasks = [(model_name, seed) for model_name in models for seed in cfg.train.seeds]
    jobs, threads = parallel.plan(cfg, len(tasks), d.device, d.enabled)
    try:
        if jobs > 1:
            # A finished training costs nothing: only the others are timed and ordered (medauc.classify.parallel).
            epochs = [0 if is_trained(out_dir, cfg, m, s, manifest_sha) else model_config(cfg, m).train.epochs for m, s in tasks]
            costs = parallel.training_cost(cfg, tasks, epochs, len(classes), threads)
            return parallel.train_parallel(train_one, cfg, out_dir, tasks, costs, classes, train, loaded, monitor_split,
                                           manifest_sha, force, jobs, threads)
        return [train_one(cfg, out_dir, m, s, classes, train, loaded, monitor_split, manifest_sha, d, force) for m, s in tasks]
    finally:
        ddp.cleanup(d)


def train_one(
    cfg: Config, out_dir: Path, model_name: str, seed: int, classes: list[str], train: ImageSet,
    sets: dict[str, ImageSet], monitor_split: str, manifest_sha: str, d: ddp.Dist, force: bool,
) -> dict[str, Any]:
    cfg = model_config(cfg, model_name)
    model_dir = out_dir / "train" / safe_name(model_name) / str(seed)
    pred_dir = out_dir / "predictions" / safe_name(model_name) / str(seed)
    stage = record_name(model_name, seed)
    key = stage_key(cfg, model_name, seed, manifest_sha)
    t0 = time.perf_counter()
    todo = records.check_stage(out_dir, stage, key, force)
    last = model_dir / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if todo and last.is_file() else None
    if state is not None and state.get("key") != key:
        if not force:
            raise RunFolderError(
                f"{last} belongs to a training with other inputs; pass --force to start {model_name} seed {seed} again, "
                "or choose another --out"
            )
        state = None
    if state is not None and not (model_dir / "best.safetensors").is_file():
        # The best epoch's weights are not in last.pt; without them a resumed model cannot predict.
        log.warning("%s seed %d: %s has no best.safetensors beside it; training from the start", model_name, seed, last)
        state = None
    if todo and state is None and d.is_main:
        for stale in ("last.pt", "best.safetensors", "model.json", "history.csv"):
            (model_dir / stale).unlink(missing_ok=True)
    ddp.barrier(d)
    trainer = Trainer(cfg, model_name, seed, classes, model_dir, key, d, init_weights=todo and state is None)
    if todo:
        if state is not None:
            trainer.resume(state)
            log.info("%s seed %d: resuming after epoch %d", model_name, seed, trainer.epoch)
        trainer.fit(train, sets[monitor_split], monitor_split)
        allocator.release()  # each phase's peak its own: the freed training heap does not stay under the predictions
    trainer.load_best()
    written = {}
    for name, s in sets.items():
        path = pred_dir / f"{name}.csv"
        if todo or not path.is_file():
            logits = predict_logits(trainer.net, s.images, trainer.transform, 2 * cfg.train.batch_size, d, trainer.autocast,
                                    desc=f"predict {name} ({model_name} seed {seed})")
            if d.is_main:
                _write_predictions(path, predictions_frame(s.image_ids, [classes[i] for i in s.labels], logits, classes,
                                                           known_subjects(s.frame)))
            allocator.release()
        written[name] = str(path)
    meta = fileio.read_json(model_dir / "model.json")
    if todo and d.is_main:
        records.mark_stage(out_dir, stage, key, files=[model_dir / f for f in ("best.safetensors", "model.json", "history.csv")],
                        model=model_name, seed=seed, best_epoch=meta["epoch"])
        # Only an unfinished model needs last.pt; with Adam's moments it is 3x the model's size.
        (model_dir / "last.pt").unlink(missing_ok=True)
    ddp.barrier(d)
    return {
        "model": model_name, "seed": seed, "model_dir": str(model_dir), "predictions": written,
        "best_epoch": meta["epoch"], "epochs": len(trainer.history) if todo else None,
        "seconds": round(time.perf_counter() - t0, 2), "skipped": not todo, "test_leak": meta["test_leak"],
    }
