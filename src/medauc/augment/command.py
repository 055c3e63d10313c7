"""``medauc augment``: train the denoiser, generate restored healthy images, check them.

``medauc augment --strategies`` then runs the strategies stage (:mod:`medauc.strategies`, also
``medauc strategies``): the imbalance strategies (the study's Table 2, extended) and the checks
that need a classifier (a and e), in ``strategies.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medauc import allocator, fileio, runs
from medauc.augment import artefacts, checks
from medauc.augment.classifier_checks import known_subjects
from medauc.augment.denoiser import model_restore_fn, save_denoiser
from medauc.augment.restoration import quality_per_sigma, restoration_examples
from medauc.augment.training import train_denoiser
from medauc.augment.generate import generate_for_manifest, healthy_train, manifest_plan, restore_test_set
from medauc.config import Config, resolve, to_dict
from medauc.data.datasets import load_images, uint8_to_float
from medauc.errors import DataError

log = logging.getLogger(__name__)

STAGE = "augment"
# Check d (artefact detectability) scores out of 5 folds over source images, two per fold at least.
MIN_SOURCE_IMAGES = 10
VALIDATION_IMAGES = 256


def augment_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "augment"


def augment_stage(cfg: Config, run_dir: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Denoiser, generation and checks b, c, d for the run in ``run_dir`` (needs ``manifest.csv``).

    Writes ``augment/denoiser.safetensors``, ``augment/denoiser.json``, ``augment/generated/*.png``,
    ``augment/manifest.csv`` (original + generated rows), ``augment/restored_test/*.png`` with
    ``augment/restored_test.csv`` (tumour test images restored, for check e),
    ``augment/restoration_examples.npz`` (held-out images: U-Net beside blur and non-local means) and
    ``augment_checks.json``. Returns the checks dict. Skipped when done with the same inputs and its
    files intact (:func:`medauc.stages.run`).
    """
    if not cfg.augment.enabled:
        log.info("augment: augment.enabled is false; nothing to do")
        return {"enabled": False}
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force, progress=progress)


def compute(cfg: Config, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """The augment stage's work (no caching: :func:`augment_stage` decides whether it runs)."""
    cfg = resolve(cfg)  # a Config built without load_config may still hold augment.image_size=0
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.csv"
    if not manifest_path.is_file():
        from medauc.stages import repair

        raise DataError(f"{manifest_path} does not exist; run `{repair('prepare', run_dir)}` first")
    _check_counts(cfg, manifest_path)
    checks_path = run_dir / "augment_checks.json"
    threads = torch.get_num_threads()
    if cfg.augment.num_threads > 0:
        # Measured on the shared 2-core machine: one thread trains the small U-Net 5-7x faster
        # (wall) than two, which spend their time waiting on each other.
        torch.set_num_threads(cfg.augment.num_threads)
    try:
        return _augment(cfg, run_dir, manifest_path, checks_path, progress)
    finally:
        torch.set_num_threads(threads)


def key_extra(cfg: Config, run_dir: Path) -> list[Any]:
    """More of the augment stage's cache key: the classifier's size, where check (d) runs at a size
    other than the denoiser's (nothing otherwise, so such runs keep their keys)."""
    size = resolve(cfg).augment.image_size
    return [] if size == cfg.data.image_size else [{"check_d_image_size": cfg.data.image_size}]


def size_warning(cfg: Config) -> str | None:
    """A sentence when the denoiser works at another size than the classifier, else None."""
    a, d = cfg.augment.image_size, cfg.data.image_size
    if a in (0, d):
        return None
    return (f"augment.image_size={a} differs from data.image_size={d}: the classifier sees generated healthy images "
            f"resized twice (to {a} px for the denoiser, then to {d} px) and real ones once, a resampling signature "
            "it can learn as 'healthy'; set augment.image_size=0 (= data.image_size) unless this is intended")


def _check_counts(cfg: Config, manifest_path: Path) -> None:
    """Refuse, before any work, a negative class with too few training images to augment and check."""
    import pandas as pd

    neg = cfg.data.negative_class
    df = pd.read_csv(manifest_path, usecols=["label", "split"], dtype=str, keep_default_na=False)
    n = int(((df["label"] == neg) & (df["split"] == "train")).sum())
    if n < MIN_SOURCE_IMAGES:
        raise DataError(
            f"class {neg!r} (data.negative_class) has {n} training image(s) in {manifest_path}; restoration-based "
            f"augmentation needs at least {MIN_SOURCE_IMAGES} (the denoiser and check d's 5-fold artefact test). "
            "Add images of that class, or lower data.test_fraction/data.val_fraction, "
            "or run without augmentation: augment.enabled=false"
        )


def _augment(cfg: Config, run_dir: Path, manifest_path: Path, checks_path: Path, progress: bool) -> dict[str, Any]:
    from medauc.data.manifest import read_manifest, write_manifest

    acfg = cfg.augment
    neg = cfg.data.negative_class
    out = augment_dir(run_dir)
    for sub in ("generated", "restored_test"):
        fileio.remove_tree(out / sub)  # our own output from an earlier config: start clean
    cache = run_dir / "cache"
    manifest = read_manifest(manifest_path)
    if "source_image_id" in manifest.columns and (manifest["source_image_id"].astype(str) != "").any():
        raise DataError(f"{manifest_path} already holds generated rows; give `medauc augment` the manifest written by `medauc prepare`")

    src_rows = healthy_train(manifest, neg)
    # Check (b) scores the denoiser on at most VALIDATION_IMAGES held-out healthy images (in manifest
    # order): enough for a mean PSNR to +-0.1 dB, and its cost (non-local means) stays fixed.
    val_rows = manifest[(manifest["split"] == "val") & (manifest["label"] == neg)].head(VALIDATION_IMAGES)
    train_rows = manifest[manifest["split"] == "train"].reset_index(drop=True)
    if len(src_rows) < 2:
        raise DataError(f"{manifest_path}: {len(src_rows)} healthy ({neg!r}) training images; the denoiser needs at least 2")
    if size_warning(cfg):
        log.warning("augment: %s", size_warning(cfg))
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    # The healthy training images stay uint8 as cached (a quarter of float32's memory at the study's size); the denoiser,
    # generation and the checks read each block as value / 255.
    clean = load_images(list(src_rows["path"]), acfg.image_size, cache, workers=cfg.data.workers, desc="load healthy train").numpy()
    val = uint8_to_float(load_images(list(val_rows["path"]), acfg.image_size, cache, workers=cfg.data.workers, desc="load healthy val"))
    timing["load_seconds"] = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    model, history = train_denoiser(clean, acfg, cfg.seed, cfg.train.device, progress)
    timing["denoiser_train_seconds"] = time.perf_counter() - t0
    # CPU seconds (all threads) as well: on shared cores wall time says more about the neighbours.
    timing["denoiser_train_cpu_seconds"] = time.process_time() - c0
    allocator.release()  # each phase's peak its own (medauc.allocator)
    restore_fn = model_restore_fn(model)
    # sigma 0 (a clean image) first: a denoiser that erases anatomy shows there. Blur and non-local
    # means on the same noisy images say whether the U-Net earns its place.
    t0 = time.perf_counter()
    val_sigmas = [0.0] + [s for s in acfg.sigmas if s != 0]
    val_quality = quality_per_sigma(val, restore_fn, val_sigmas, cfg.seed + 1, baselines=True) if len(val) else []
    if val_quality:
        examples = restoration_examples(val, restore_fn, val_quality, cfg.seed + 4)
        with fileio.atomic_path(out / "restoration_examples.npz") as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to the temporary name
                np.savez_compressed(fh, **examples)
    timing["validation_seconds"] = time.perf_counter() - t0
    allocator.release()
    save_denoiser(model, acfg, out, seed=cfg.seed, n_train=len(clean), n_val=len(val), history=history, validation=val_quality)

    # Generation streams a block at a time: each block is written and measured for checks b, c
    # (and d when the classifier reads the denoiser's size) before the next; memory stays at a block.
    _, plan = manifest_plan(manifest, acfg, neg)
    gen_src = np.array([p[0] for p in plan], dtype=np.int64)
    sig = np.array([p[1] for p in plan], dtype=float)
    same_size = acfg.image_size == cfg.data.image_size
    acc = checks.GeneratedChecks(clean, gen_src, sig, features=artefacts.image_features if same_size else None, seed=cfg.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    augmented, _, _ = generate_for_manifest(
        manifest, acfg, neg, restore_fn, out / "generated", cfg.seed + 2, sources_images=clean, progress=progress,
        on_block=acc.add,
    )
    write_manifest(out / "manifest.csv", augmented)
    timing["generate_seconds"] = time.perf_counter() - t0
    timing["generate_cpu_seconds"] = time.process_time() - c0
    allocator.release()
    t0 = time.perf_counter()
    restored_test = restore_test_set(manifest, acfg, neg, restore_fn, out / "restored_test", cfg.seed + 3, progress, cache)
    write_manifest(out / "restored_test.csv", restored_test)
    timing["restore_test_seconds"] = time.perf_counter() - t0
    allocator.release()

    t0 = time.perf_counter()
    gen_rows = augmented[augmented["augmentation"] == "restoration"].reset_index(drop=True)
    result: dict[str, Any] = {
        "schema": "see medauc.augment.checks (module docstring)",
        "negative_class": neg,
        "counts": {
            "healthy_train_original": int(len(src_rows)),
            "generated": int(len(gen_rows)),
            "healthy_train_augmented": int(len(src_rows) + len(gen_rows)),
            "other_train": int((train_rows["label"] != neg).sum()),
            "restored_test": int(len(restored_test)),
        },
        "denoiser": {"epochs": acfg.epochs, "final_loss": history[-1]["loss"] if history else float("nan"), "loss": acfg.loss},
        "a_predicted_healthy": None,  # in strategies.json: the strategies stage needs a classifier
        "b_restoration_quality": {"validation": val_quality, "generated": acc.quality() if len(gen_rows) else []},
    }
    if len(gen_rows):
        # The original training images are read from the image cache a block at a time (a view, not a copy).
        all_train = load_images(list(train_rows["path"]), acfg.image_size, cache, workers=cfg.data.workers, desc="load train",
                                lazy=cache is not None)
        train_pos = {sid: i for i, sid in enumerate(train_rows["image_id"])}
        source_rows = src_rows["image_id"].map(train_pos).to_numpy(np.int64)  # the sources are the healthy rows
        result["c_memorisation"] = acc.memorisation(all_train, source_rows, source_rows, acfg.near_copy_threshold)
        del all_train
        allocator.release()
        if same_size:
            x_orig, x_gen = _block_features(clean), acc.feature_rows
        else:
            # Check (d) asks what a classifier could use, so it sees the images as the classifier
            # does: every one read from its file and resized to data.image_size, a block at a time.
            x_orig = _features_of(list(src_rows["path"]), cfg.data.image_size, cache, cfg.data.workers)
            x_gen = _features_of(list(gen_rows["path"]), cfg.data.image_size, None, cfg.data.workers)
        result["d_artefact_detectability"] = artefacts.detectability_from_features(
            x_orig, x_gen, gen_src, sig, seed=cfg.seed, n_bootstrap=cfg.evaluate.n_bootstrap, level=cfg.evaluate.level,
            source_patients=known_subjects(src_rows),  # over patients when every source names one
        )
        result["d_artefact_detectability"]["image_size"] = cfg.data.image_size
    else:
        result["c_memorisation"] = None
        result["d_artefact_detectability"] = None
    result["e_shortcut_flip"] = None  # in strategies.json, as check a
    result["image_size"] = {"denoiser": acfg.image_size, "classifier": cfg.data.image_size, "warning": size_warning(cfg)}
    timing["checks_seconds"] = time.perf_counter() - t0
    result["timing"] = timing
    result["config"] = to_dict(acfg)
    fileio.write_json(checks_path, result)
    return result


def _features_of(paths: list[str], size: int, cache: Path | None, workers: int, block: int = artefacts.FEATURE_BLOCK) -> np.ndarray:
    """Check (d)'s features of image files read at ``size`` px, ``block`` files at a time.

    With ``cache`` the images come from the run's image cache (one file for all of them); without,
    each block is decoded and dropped."""
    if cache is not None:
        return _block_features(load_images(paths, size, cache, workers=workers, desc=f"load at {size} px", lazy=True), block)
    parts = [artefacts.image_features(checks.quantise(uint8_to_float(load_images(paths[i:i + block], size, None, workers=workers,
                                                                                   desc=f"load at {size} px"))))
             for i in range(0, len(paths), block)]
    return np.concatenate(parts) if parts else np.zeros((0, len(artefacts.FEATURE_NAMES)))


def _block_features(images: Any, block: int = artefacts.FEATURE_BLOCK) -> np.ndarray:
    """Check (d)'s features of uint8 images (an array or a cache view), ``block`` images at a time:
    no float copy of them all (each image's features depend on that image alone)."""
    parts = [artefacts.image_features(checks.quantise(uint8_to_float(torch.as_tensor(np.asarray(images[i:i + block])))))
             for i in range(0, len(images), block)]
    return np.concatenate(parts) if parts else np.zeros((0, len(artefacts.FEATURE_NAMES)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategies",
        action="store_true",
        help="then run the strategies stage (as `medauc strategies`): augment.strategies and checks a and e",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    cfg: Config = args.cfg
    run_dir = runs.open_run(args.out, cfg, args.force)
    if not cfg.augment.enabled:
        print("augment: augment.enabled is false; set augment.enabled=true to generate images")
        return 0
    result = augment_stage(cfg, run_dir, args.force, progress=not args.no_progress)
    _print_summary(result)
    if args.strategies:
        from medauc.strategies import strategies_stage
        from medauc.strategies.command import print_results

        print_results(strategies_stage(cfg, run_dir, args.force, progress=not args.no_progress))
    print(f"augment: results in {run_dir}")
    return 0


def _print_summary(result: dict[str, Any]) -> None:
    c = result.get("counts", {})
    print(f"augment: {c.get('healthy_train_original')} healthy train images -> {c.get('healthy_train_augmented')} "
          f"({c.get('generated')} generated)")
    for row in result.get("b_restoration_quality", {}).get("validation", []):
        base = (f"; best blur {row['psnr_blur']:.1f}, NLM {row['psnr_nlm']:.1f} dB" if "psnr_nlm" in row else "")
        print(f"  sigma {row['sigma']:.2f}: PSNR {row['psnr_noisy']:.1f} -> {row['psnr_restored']:.1f} dB{base}, "
              f"SSIM {row['ssim_noisy']:.3f} -> {row['ssim_restored']:.3f} (validation)")
    m = result.get("c_memorisation")
    if m:
        print(f"  memorisation: SSIM to source {m['ssim_to_source']['mean']:.3f}, to nearest other {m['ssim_to_nearest_other']['mean']:.3f}, "
              f"near-copies {m['near_copy_share']:.1%}")
    d = result.get("d_artefact_detectability")
    if d:
        print(f"  artefact detectability AUC {d['auc']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]")
    a = result.get("a_predicted_healthy")
    if a:
        print(f"  predicted healthy by the balanced model: {a['share']:.2%} of {a['n']} generated images "
              f"(study: {a.get('study_share', float('nan')):.2%}); of original test tumours it calls "
              f"{a.get('baseline', {}).get('test_tumour_called_healthy', float('nan')):.2%} healthy")
    e = result.get("e_shortcut_flip")
    if e and e.get("comparison"):
        cmp_ = e["comparison"]
        print(f"  restored tumour test images called healthy: restoration {cmp_['healthy_share_restored_a']:.2%} "
              f"vs balanced {cmp_['healthy_share_restored_b']:.2%}")
