"""The strategies stage: imbalance strategies on one split, one test set, the same seeds (Table 2, extended).

Strategies (``augment.strategies``), each trained with :func:`medauc.classify.stage.train_stage` on
``augment.strategy_model`` into ``run_dir/strategies/<name>/``:

- ``balanced``: the original training data (plain cross-entropy);
- ``restoration``: the study's: original + restored healthy images (``augment/manifest.csv``); the
  main run's model is reused when it was trained on that same manifest with the same settings;
- ``duplicate``: healthy training rows duplicated up to the restoration strategy's healthy count;
- ``classic``: healthy training images augmented classically (flip, small rotation, intensity
  jitter), saved as images, up to the same count;
- ``weighted_loss``: the original data, ``train.imbalance=weighted_loss``.

Every strategy also predicts the generated images (``generated.csv``, check a) and the restored
tumour test images (``restored_test.csv``, check e). ``strategies.json``::

    model, reference ("restoration"), seeds
    rows: [{strategy, model, seed, n_train, n_train_healthy, imbalance, folder,
            <metric>, <metric>_ci_low, <metric>_ci_high, ...}]   # also strategies.csv
    paired_tests: [{strategy, reference, metric, seed, difference (strategy - reference), ci_low,
                    ci_high, p_value, p_holm, test, significant, note, ...}]
    evaluation: the evaluation of every strategy's predictions (as metrics.json)
    predictions: {strategy: {seed: test.csv path}}
    checks: {a_predicted_healthy, e_shortcut_flip}   # schemas in medauc.augment.checks
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from medauc.progress import progress_bar

from medauc import allocator, fileio, records
from medauc.relocate import key_sha256
from medauc.augment.generate import (
    append_rows, derived_rows, generation_plan, healthy_train, write_stream,
)
from medauc.config import Config, config_hash, replace
from medauc.data.datasets import load_images, uint8_to_float
from medauc.errors import DataError
from medauc.strategies.checks import classifier_checks

log = logging.getLogger(__name__)

STAGE = "strategies"
STRATEGIES = ("balanced", "restoration", "duplicate", "classic", "weighted_loss")
REFERENCE = "restoration"


def classic_augment(images: np.ndarray, generator: torch.Generator, max_degrees: float = 10.0) -> np.ndarray:
    """Flip (p = 0.5), rotate by U(-max_degrees, max_degrees) and jitter intensity: (M, S, S) -> (M, S, S) in [0, 1].

    Intensity jitter: contrast x U(0.9, 1.1), brightness + U(-0.05, 0.05), gamma U(0.9, 1.1).
    Rotation pads with black (the background of a head scan).
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    m = x.shape[0]
    u = torch.rand((m, 5), generator=generator)
    flip = u[:, 0] < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    theta = (u[:, 1] * 2 - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros(m)
    affine = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = 0.9 + 0.2 * u[:, 2]
    bright = (u[:, 3] * 2 - 1) * 0.05
    gamma = 0.9 + 0.2 * u[:, 4]
    x = (x * contrast[:, None, None, None] + bright[:, None, None, None]).clamp(0.0, 1.0)
    x = x ** gamma[:, None, None, None]
    return x[:, 0].numpy()


def _seeds_done(run_dir: Path, cfg: Config, model: str, manifest_path: Path) -> bool:
    from medauc.classify.stage import is_trained

    sha = key_sha256(run_dir, manifest_path)
    return all(is_trained(run_dir, cfg, model, seed, sha) for seed in cfg.train.seeds)


def strategy_inputs(
    name: str, cfg: Config, run_dir: Path, manifest: pd.DataFrame, augmented: pd.DataFrame, progress: bool = True
) -> tuple[Config, Path, Path]:
    """(config, manifest path, output folder) for one strategy; writes its manifest (and images) if needed."""
    from medauc.data.manifest import write_manifest

    from medauc.config import resolve

    cfg = resolve(cfg)  # augment.image_size=0 -> data.image_size, for a Config built in code too
    neg = cfg.data.negative_class
    sdir = run_dir / "strategies" / name
    plain = replace(cfg, **{"train.imbalance": "none"})
    n_gen = int((augmented["augmentation"] == "restoration").sum())
    if name == "balanced":
        return plain, run_dir / "manifest.csv", sdir
    if name == "restoration":
        aug_path = run_dir / "augment" / "manifest.csv"
        if _seeds_done(run_dir, plain, cfg.augment.strategy_model, aug_path):
            log.info("strategy restoration: reusing the main run's %s (trained on the same augmented manifest); "
                     "not training it again", cfg.augment.strategy_model)
            return plain, aug_path, run_dir
        return plain, aug_path, sdir
    if name == "weighted_loss":
        return replace(cfg, **{"train.imbalance": "weighted_loss"}), run_dir / "manifest.csv", sdir
    src = healthy_train(manifest, neg)
    plan = generation_plan(len(src), [float("nan")], n_gen)
    path = sdir / "manifest.csv"
    if name == "duplicate":
        new = pd.DataFrame(derived_rows(src, plan, "duplicate"))
        for col in ("path", "sha256", "phash", "width", "height", "mode"):
            new[col] = new["source_image_id"].map(dict(zip(src["image_id"], src[col])))
        write_manifest(path, append_rows(manifest, new))
        return plain, path, sdir
    if name == "classic":
        key = config_hash("classic", cfg.augment.image_size, cfg.seed, n_gen, key_sha256(run_dir, run_dir / "manifest.csv"))
        if records.stage_is_done(run_dir, "strategies/classic_images", key) and path.is_file():
            return plain, path, sdir
        fileio.remove_tree(sdir / "generated")
        images = load_images(list(src["path"]), cfg.augment.image_size, run_dir / "cache", workers=cfg.data.workers,
                             desc="load healthy").numpy()  # uint8, as cached; a block at a time as floats
        gen = torch.Generator().manual_seed(cfg.seed + 5)
        idx = np.array([p[0] for p in plan], dtype=np.int64)
        blocks = ((slice(start, start + 256), classic_augment(uint8_to_float(torch.from_numpy(images[idx[start : start + 256]])), gen))
                  for start in progress_bar(range(0, len(plan), 256), desc="classic", unit="batch", disable=not progress or not plan))
        new = write_stream(blocks, derived_rows(src, plan, "classic"), sdir / "generated")
        del images
        allocator.release()
        write_manifest(path, append_rows(manifest, new))
        records.mark_stage(run_dir, "strategies/classic_images", key, files=[path, *new["path"]])
        return plain, path, sdir
    raise DataError(f"augment.strategies: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")


# ----------------------------------------------------------------------------- the table


def _flatten_metrics(ev: Any, prefix: str = "") -> dict[str, Any]:
    """Nested evaluation output -> flat ``{metric: value, metric_ci_low: ..., metric_ci_high: ...}``."""
    out: dict[str, Any] = {}
    if isinstance(ev, dict):
        if "value" in ev and isinstance(ev.get("value"), (int, float)):
            out[prefix.rstrip("_")] = ev["value"]
            for lo, hi in (("ci_low", "ci_high"), ("low", "high")):
                if lo in ev:
                    out[f"{prefix}ci_low"], out[f"{prefix}ci_high"] = ev[lo], ev[hi]
            if "ci" in ev and isinstance(ev["ci"], (list, tuple)) and len(ev["ci"]) == 2:
                out[f"{prefix}ci_low"], out[f"{prefix}ci_high"] = ev["ci"]
            return out
        for k, v in ev.items():
            out.update(_flatten_metrics(v, f"{prefix}{k}_"))
    elif isinstance(ev, (int, float)) and not isinstance(ev, bool):
        out[prefix.rstrip("_")] = ev
    return out


def paired_tests(ev: dict[str, Any], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """The evaluation's paired comparisons (DeLong for AUCs, paired bootstrap otherwise, Holm-adjusted)
    that involve ``reference``, oriented as (strategy, reference): ``difference`` = strategy - reference."""
    out = []
    for row in ev.get("comparisons", []):
        if reference not in (row.get("model_a"), row.get("model_b")):
            continue
        r = dict(row)
        if r["model_a"] == reference:
            r["model_a"], r["model_b"] = r["model_b"], r["model_a"]
            r["value_a"], r["value_b"] = r.get("value_b"), r.get("value_a")
            for k in ("difference", "z"):
                if isinstance(r.get(k), (int, float)):
                    r[k] = -r[k]
            for lo, hi in (("ci_low", "ci_high"), ("low", "high")):
                if isinstance(r.get(lo), (int, float)) and isinstance(r.get(hi), (int, float)):
                    r[lo], r[hi] = -r[hi], -r[lo]
        out.append({"strategy": r.pop("model_a"), "reference": r.pop("model_b"), **r})
    return out


def strategies_stage(cfg: Config, run_dir: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every strategy in ``cfg.augment.strategies``; then checks a and e.

    Needs the augment stage done in ``run_dir``. Writes ``strategies/<name>/``, ``strategies.json``
    and ``strategies.csv``; returns the strategies.json dict. Skipped when done with the same inputs
    and its files intact (:func:`medauc.stages.run`).
    """
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force, progress=progress)


def compute(cfg: Config, run_dir: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """The strategies stage's work (no caching of its own beyond each model's: :func:`strategies_stage` decides)."""
    from medauc.classify.stage import train_stage
    from medauc.data.manifest import read_manifest
    from medauc.evaluate import evaluate_predictions

    run_dir = Path(run_dir)
    aug_path = run_dir / "augment" / "manifest.csv"
    restored_path = run_dir / "augment" / "restored_test.csv"
    if not aug_path.is_file() or not restored_path.is_file():
        from medauc.stages import repair

        raise DataError(f"{aug_path} does not exist; run `{repair('augment', run_dir)}` before the strategies")
    names = list(cfg.augment.strategies)
    bad = [n for n in names if n not in STRATEGIES]
    if bad:
        raise DataError(f"augment.strategies: unknown strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}")
    neg = cfg.data.negative_class
    model = cfg.augment.strategy_model

    manifest = read_manifest(run_dir / "manifest.csv")
    augmented = read_manifest(aug_path)
    generated = augmented[augmented["augmentation"] == "restoration"].reset_index(drop=True)
    restored_test = read_manifest(restored_path)
    extra = {"generated": generated, "restored_test": restored_test}

    pred_files: dict[str, dict[int, Path]] = {}
    val_files: dict[str, dict[int, Path]] = {}
    counts: dict[str, dict[str, Any]] = {}
    for name in names:
        scfg, mpath, out_dir = strategy_inputs(name, cfg, run_dir, manifest, augmented, progress)
        if out_dir != run_dir:  # strategy "restoration" may reuse the main run's model (logged where it is decided)
            log.info("strategy %s: training %s on %s (%s)", name, model, mpath, out_dir)
        results = train_stage(scfg, run_dir, manifest_path=mpath, out_dir=out_dir, models=[model], extra_sets=extra, force=force)
        pred_files[name] = {r["seed"]: Path(r["predictions"]["test"]) for r in results}
        val_files[name] = {r["seed"]: Path(r["predictions"]["val"]) for r in results if "val" in r["predictions"]}
        tr = read_manifest(mpath)
        tr = tr[tr["split"] == "train"]
        counts[name] = {"n_train": int(len(tr)), "n_train_healthy": int((tr["label"] == neg).sum()),
                        "imbalance": scfg.train.imbalance, "folder": str(out_dir)}
        allocator.release()  # the next strategy starts from what is held (see medauc.allocator)

    ev = evaluate_predictions(pred_files, cfg, val_files=val_files)
    tests = paired_tests(ev)
    rows = []
    for name in names:
        for seed in pred_files[name]:
            metrics = _metrics_for(ev, name, seed)
            rows.append({"strategy": name, "model": model, "seed": seed, **counts[name], **metrics})
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    table = {
        "model": model,
        "reference": REFERENCE,
        "seeds": list(cfg.train.seeds),
        "rows": rows,
        "paired_tests": tests,
        "evaluation": ev,
        "predictions": {n: {str(s): str(p) for s, p in d.items()} for n, d in pred_files.items()},
        "checks": classifier_checks(cfg, run_dir, pred_files, generated, restored_test, model),
    }
    fileio.write_csv(run_dir / "strategies.csv", rows, columns)
    fileio.write_json(run_dir / "strategies.json", table)
    return table


def _metrics_for(ev: Any, name: str, seed: int) -> dict[str, Any]:
    """Pick the metrics of one strategy and seed out of evaluate_predictions' result (flat, with CIs)."""
    node = ev.get("models", ev) if isinstance(ev, dict) else {}
    node = node.get(name, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        seeds = node.get("seeds", node)
        if isinstance(seeds, dict) and (str(seed) in seeds or seed in seeds):
            node = seeds.get(str(seed), seeds.get(seed))
        node = node.get("metrics", node) if isinstance(node, dict) else node
    return _flatten_metrics(node)


__all__ = ["STRATEGIES", "classic_augment", "compute", "paired_tests", "strategies_stage", "strategy_inputs"]
