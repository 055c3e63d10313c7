"""The external stage: read each external set as ``prepare`` reads a folder, audit it against the
training data, and have every trained model (each of ``model.names`` and ``train.seeds``) predict it
once, with its own preprocessing.

Writes, per set ``<name>`` of ``evaluate.external``: ``external/<name>/manifest.csv`` (split
"test": all of it; DICOM and NIfTI converted to PNGs in ``external/<name>/images/``, patients named by the
run's salt, so a patient the run has seen is recognised), ``external/<name>/audit.json`` (shared
images and patients, the statistics gap: :mod:`medauc.external.audit`) and
``predictions/<model>/<seed>/external-<name>.csv`` (the predictions contract, as ``test.csv``).
Its key (:func:`stage_key`) holds the sets, the run's data and phantom settings, each folder's file
list (names, sizes, times) or the external phantom's cache key, the manifest and every trained
model's files: a changed folder, setting or model rebuilds it. The evaluate stage reads its files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from medauc import fileio, runs
from medauc.config import Config, config_hash, replace, to_dict
from medauc.errors import ModelError
from medauc.relocate import key_sha256
from medauc.external.spec import ExternalSet, external_sets, phantom_config

log = logging.getLogger(__name__)
STAGE = "external"


def model_dirs(cfg: Config, run_dir: Path) -> list[tuple[str, int, Path]]:
    """``(model folder, seed, train/<model>/<seed>)`` of every configured model and seed."""
    from medauc.stage_keys import model_folder

    return [(model_folder(m), int(s), run_dir / "train" / model_folder(m) / str(s))
            for m in cfg.model.names for s in cfg.train.seeds]


def _data_settings(cfg: Config) -> Any:
    # The reading settings (the split, the shortcut audit and the worker count do not change an external set).
    return {k: v for k, v in to_dict(cfg.data).items()
            if k not in ("workers", "path", "source", "split", "test_fraction", "val_fraction", "shortcut_audit", "groups_csv")}


def source_fingerprint(cfg: Config, s: ExternalSet) -> str:
    """What a set's content is known by without reading it: the phantom's cache key, or the folder's file list."""
    if s.kind == "phantom":
        from medauc.data.phantom.cache import phantom_key

        return "phantom-" + phantom_key(phantom_config(cfg, s))
    from medauc.data.sources import discover

    disc = discover(s.path or Path(s.source), replace(cfg.data, split="random"))
    return hashlib.sha256(json.dumps([str(disc.root), sorted(disc.fingerprint)]).encode()).hexdigest()


def stage_key(cfg: Config, run_dir: str | Path, **_: Any) -> str:
    """The stage's cache key (module docstring)."""
    run_dir = Path(run_dir)
    sets = external_sets(cfg)
    models = {f"{m}/{s}": [fileio.file_sha256(d / f) if (d / f).is_file() else None for f in ("best.safetensors", "model.json")]
              for m, s, d in model_dirs(cfg, run_dir)}
    manifest = run_dir / "manifest.csv"
    return config_hash(dict(cfg.evaluate.external), _data_settings(cfg), to_dict(cfg.phantom), cfg.seed,
                       {s.name: source_fingerprint(cfg, s) for s in sets}, models,
                       key_sha256(run_dir, manifest) if manifest.is_file() else None)  # as before a relative rewrite


def source_folder(cfg: Config, s: ExternalSet) -> Path:
    """The folder of set ``s``: its path, or its phantom (generated on first use, cached like the main one)."""
    if s.kind == "phantom":
        from medauc.data.phantom import ensure_phantom

        return Path(ensure_phantom(phantom_config(cfg, s)))
    return s.path or Path(s.source)


def read_set(cfg: Config, s: ExternalSet, run_dir: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Set ``s`` read as ``prepare`` reads a folder: (manifest frame, scan records, facts for the audit)."""
    from medauc.data.command import _manifest_frame, _read_all
    from medauc.data.convert import convert_medical
    from medauc.data.sources import discover
    from medauc.data.subjects import assign_subjects

    dcfg = replace(cfg.data, split="random", groups_csv="")  # data.groups_csv names the training folder's files
    root = source_folder(cfg, s)
    disc = discover(root, dcfg)
    disc, medical = convert_medical(disc, dcfg, run_dir / "external" / s.name, cfg.data.workers, salt_dir=run_dir)
    disc.items, subject_source = assign_subjects(disc.items, root, disc.root, dcfg)
    items, ids, recs, unreadable = _read_all(disc, cfg.data.workers)
    df = _manifest_frame(items, ids, recs, list(range(len(items))), ["test"] * len(items))  # all of it is test data
    if s.kind == "phantom" and "subject" in df.columns:
        df["subject"] = [f"{s.name}-{x}" for x in df["subject"]]  # other virtual people than the training phantom's
    facts = {"source": s.source, "kind": s.kind, "root": str(disc.root), "n_files": len(disc.fingerprint),
             "n_images": len(items), "unreadable": unreadable, "skipped": disc.skipped,
             "patients_from": "the phantom's images.csv" if s.kind == "phantom" else subject_source or "unknown",
             "medical": medical.summary if medical is not None else None}
    return df, recs, facts


def compute(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The stage's work (module docstring); returns ``{name: {n_images, overlaps_training, seconds}}``."""
    import torch

    from medauc.device import resolve_device

    device = resolve_device(cfg.train.device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and (cfg.train.num_threads > 0 or cfg.train.jobs > 1):
        # Small networks do not keep several cores busy (train.jobs): measured on the 2-core machine under load,
        # the demo's four models predicted 300 images in 9 s on one thread, 53 s on two.
        torch.set_num_threads(cfg.train.num_threads or 1)
    try:
        return _predict_sets(cfg, Path(run_dir), device)
    finally:
        torch.set_num_threads(threads)


def _predict_sets(cfg: Config, run_dir: Path, device: Any) -> dict[str, Any]:
    import torch

    from medauc.classify.models import InputTransform, load_trained
    from medauc.classify.predict import predict_logits, predictions_frame
    from medauc.data.datasets import image_set
    from medauc.data.manifest import known_subjects, read_manifest, write_manifest
    from medauc.external import audit

    sets = external_sets(cfg)
    models = model_dirs(cfg, run_dir)
    missing = [str(d) for _, _, d in models if not (d / "best.safetensors").is_file()]
    if missing:
        raise ModelError(f"{missing[0]} holds no trained model; run `medauc train` for this run first")
    _remove_stale(run_dir, {s.name for s in sets})
    man = read_manifest(run_dir / "manifest.csv")
    train_records: list[dict[str, Any]] | None = None
    summary: dict[str, Any] = {}
    for s in sets:
        t0 = time.perf_counter()
        df, recs, facts = read_set(cfg, s, run_dir)
        site_dir = run_dir / "external" / s.name
        write_manifest(site_dir / "manifest.csv", df)
        images = audit.shared_images(df, man, cfg.data.near_duplicate_hamming)
        patients = audit.shared_patients(df, man)
        if train_records is None:
            train_records = audit.training_records(man, cfg.seed)
        verdict = audit.verdict(images, patients)
        counts = df["label"].value_counts().to_dict()
        fileio.write_json(site_dir / "audit.json", {
            "schema": "medauc.external_audit/1", "name": s.name, **facts,
            "n_per_class": {c: int(counts.get(c, 0)) for c in cfg.data.classes},
            "n_patients": int(df["subject"].nunique()) if "subject" in df.columns else None,
            "shared_images": images, "shared_patients": patients, **verdict,
            "statistics_gap": audit.statistics_gap(recs, train_records, cfg.seed),
        })
        if verdict["overlaps_training"]:
            log.warning("external set %s %s: it is no independent test", s.name, verdict["text"])
        frame = df.assign(label=cfg.data.classes[0])  # labels outside the classes are kept in the predictions file
        by_size: dict[int, Any] = {}
        for model, seed, folder in models:
            net, meta = load_trained(folder)
            size = int(meta["image_size"])
            if size not in by_size:
                by_size[size] = image_set(frame, list(meta["classes"]), size, None, None, desc=f"external {s.name}")
            images_u8 = by_size[size]
            # As the model was trained and as `medauc predict` runs it: its device and memory format (channels-last
            # CNNs run 1.5-2x slower on channels-first input on a CPU).
            cl = bool(meta.get("channels_last", False))
            net = net.to(device, memory_format=torch.channels_last) if cl else net.to(device)
            with torch.inference_mode():
                logits = predict_logits(net, images_u8.images, InputTransform(meta, device, cl), 64,
                                        desc=f"predict external {s.name} ({model} seed {seed})")
            pred = predictions_frame(images_u8.image_ids, list(df["label"].astype(str)), logits, list(meta["classes"]),
                                     known_subjects(df))
            fileio.write_csv(run_dir / "predictions" / model / str(seed) / f"external-{s.name}.csv",
                             pred.to_dict("records"), list(pred.columns))
        summary[s.name] = {"n_images": len(df), "overlaps_training": verdict["overlaps_training"],
                           "seconds": round(time.perf_counter() - t0, 2)}
        print(f"external: {s.name}: {len(df)} images, {verdict['text']}; predicted by {len(models)} model(s) "
              f"in {summary[s.name]['seconds']:.1f} s")
    return summary


def _remove_stale(run_dir: Path, names: set[str]) -> None:
    """Files of sets no longer configured: they must not be read as if they were."""
    for f in run_dir.glob("predictions/*/*/external-*.csv"):
        if f.stem[len("external-"):] not in names:
            f.unlink()
    root = run_dir / "external"
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name not in names:
                shutil.rmtree(d)


def external_stage(cfg: Config, run_dir: str | Path, force: bool = False) -> Any:
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: --config, --out, --force and overrides come from cli.py."""


def main(args: argparse.Namespace) -> int:
    from medauc.errors import EvaluationError

    if not args.out:
        raise EvaluationError("medauc external needs --out RUN, the run folder whose trained models predict the external sets")
    if not args.cfg.evaluate.external:
        raise EvaluationError("medauc external: evaluate.external is empty; name a set, e.g. 'evaluate.external={hospital_b: phantom:b}'")
    run_dir = runs.open_run(args.out, args.cfg, args.force)
    external_stage(args.cfg, run_dir, args.force)
    print(f"wrote {run_dir / 'external'}/ and predictions/<model>/<seed>/external-<name>.csv")
    return 0
