"""The explanation stage: CAMs for every trained model, panels, localisation scores, sanity check.

This module runs the stage and writes its files; the parts are :mod:`~medauc.explain.inputs`
(models and test sample from the run folder), :mod:`~medauc.explain.passes` (one model's maps and
scores), :mod:`~medauc.explain.sanity` (summaries, the random twin) and
:mod:`~medauc.explain.panel_rows` (the panels' images and maps).

Reads ``manifest.csv`` (test split, ``mask_path``) and ``train/<model>/<seed>/`` (the first
trained seed of ``train.seeds`` of each model in ``model.names``; other folders are listed as
ignored); writes, in the run folder:

* ``explain/<method>_<class>.png``: per class, a row per image, the image and each model's map
  for the true and for the predicted class (correct and misclassified cases when there are any);
* ``explain/per_image.csv``: one row per (model, method, weights, image) with a lesion mask:
  ``model, method, weights (trained|random), image_id, label, pointing_game, energy_share,
  energy_ratio, area_share``;
* ``explain/scores.csv``: the summaries below in long form
  (``model, method, weights, class, score, mean, ci_low, ci_high, n, n_patients``: empty when patients are unknown);
* ``explain.json``::

    {
      "schema": 1,
      "definitions": {score name: definition, ...},   # see medauc.explain.scores
      "classes": [...], "lesion_classes": [classes with at least one mask],
      "methods": [...], "n_images": int, "n_with_mask": int,
      "sample": "how the images were drawn", "level": 0.95, "n_bootstrap": int, "seed": int,
      "pointing_tolerance": float,   # share of the image side
      "models": {
        "<model>": {
          "seed": int, "dir": "train/<model>/<seed>", "target_layer": "layer4", "grid": [h, w],
          "accuracy_on_sample": float,
          "methods": {
            "<method>": {
              "trained":      {"by_class": {class: {score: {mean, ci_low, ci_high, n[, n_patients]}}},
                               "all": {score: {...}}},       # pooled over lesion classes
              "random_twin":  same as "trained", or null when explain.sanity_check is off,
              "sanity": {"pointing_game_difference": {mean, ci_low, ci_high, n},   # trained - twin
                         "energy_ratio_difference": {...},
                         "map_rank_correlation": {...},   # Spearman, trained vs twin map
                         "verdict": "better" | "not_better" | "no_masks", "text": str} or null,
              "seconds": {"trained": float, "random_twin": float}
            }
          }
        }
      },
      "panels": {method: {class: "explain/<method>_<class>.png"}},
      "ignored": [{"model", "seed", "reason"}]   # trained folders not in model.names / train.seeds
    }

Scores use the map for the *true* class (the lesion is the evidence for it), resized to the
mask's resolution. The random twin (Adebayo et al. 2018, model randomisation test) is the same
architecture created with random weights (seed = the config's seed); the verdict is "better"
when the paired bootstrap CIs of both the pointing-game and the energy-ratio differences
(trained minus twin) lie above 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medauc import fileio
from medauc.relocate import key_sha256
from medauc.config import Config, config_hash
from medauc.device import resolve_device
from medauc.errors import ModelError
from medauc.explain import scores as sc
from medauc.explain.cam import check_methods
from medauc.explain.inputs import load_model, load_sample, model_dirs
from medauc.explain.panel_rows import write_panels
from medauc.explain.passes import CamPass, ExplainModel, cam_pass
from medauc.explain.sanity import summarise, twin_comparison

log = logging.getLogger(__name__)
STAGE = "explain"

DEFINITIONS = {
    "pointing_game": "1 if the map's maximum lies inside the lesion mask or within explain.pointing_tolerance "
    "(share of the image side) of it, else 0 (ties: share of maximal pixels that hit)",
    "energy_share": "sum of the map inside the mask / sum of the map (a zero map counts as uniform)",
    "energy_ratio": "energy share / mask area share; 1 = no better than a uniform map",
    "area_share": "mask area / image area",
    "map_rank_correlation": "Spearman correlation between the trained model's and the random twin's map of an image",
    "random_twin": "same architecture, random weights (Adebayo et al. 2018, model randomisation test)",
    "ci": "percentile bootstrap over patients (each drawn patient brings all its explained images) when every "
    "explained image names its patient, else over images; ci_unit says which",
}


@dataclass
class _Sample:
    """The images being explained, with what the scores need of them."""

    images: list[np.ndarray]  # (H, W) float32 in [0, 1]
    labels: np.ndarray  # (N,) int, indices into classes
    masks: list[np.ndarray | None]  # (H, W) bool; None where there is no (non-empty) mask
    zones: list[np.ndarray | None]  # the masks widened by explain.pointing_tolerance (pointing game)
    image_ids: list[str]
    classes: list[str]
    lesion: list[int]  # classes with at least one mask
    subjects: np.ndarray | None = None  # (N,) each image's patient, when every image names one


def _sample(
    entries: list[ExplainModel], images: list[np.ndarray], labels: np.ndarray, masks: list[np.ndarray | None],
    image_ids: list[str], cfg: Config, run_dir: Path, subjects: list[str] | None = None,
) -> _Sample:
    """Check that the models share their classes and the inputs their length; drop empty masks."""
    if not entries:
        raise ModelError(f"no trained models to explain in {run_dir / 'train'}; run `medauc train` first")
    classes = entries[0].classes
    for entry in entries[1:]:
        if entry.classes != classes:
            raise ModelError(f"{entry.name} was trained on classes {entry.classes}, {entries[0].name} on {classes}; explain models of one run only")
    labels = np.asarray(labels, dtype=int)
    n = len(images)
    if not (len(labels) == len(masks) == len(image_ids) == n) or (subjects is not None and len(subjects) != n):
        raise ValueError("images, labels, masks, image_ids (and subjects) must have the same length")
    known = subjects is not None and all(str(x).strip() for x in subjects)
    lesion = sorted({int(labels[i]) for i in range(n) if masks[i] is not None and masks[i].any()})
    masks = [m if m is not None and m.any() else None for m in masks]
    # The pointing game's widened masks depend on the image only: computed once for all passes.
    tol = cfg.explain.pointing_tolerance
    zones = [None if m is None else sc.widen(m, tol * max(m.shape)) for m in masks]
    return _Sample(images, labels, masks, zones, image_ids, classes, lesion, np.asarray(subjects, dtype=str) if known else None)


def _header(sample: _Sample, methods: list[str], cfg: Config, ignored: list[dict[str, Any]] | None) -> dict[str, Any]:
    """explain.json's facts about the sample and settings, with empty ``models`` and ``panels``."""
    classes, seed = sample.classes, cfg.seed
    return {
        "schema": 1,
        "definitions": DEFINITIONS,
        "classes": classes,
        "lesion_classes": [classes[c] for c in sample.lesion],
        "methods": methods,
        "n_images": len(sample.images),
        "n_with_mask": sum(1 for m in sample.masks if m is not None),
        "sample": f"test split, stratified by class, at most explain.max_images={cfg.explain.max_images}, seed {seed}",
        "level": cfg.evaluate.level,
        "n_bootstrap": cfg.evaluate.n_bootstrap,
        "seed": seed,
        "pointing_tolerance": cfg.explain.pointing_tolerance,
        "ci_unit": "patients" if sample.subjects is not None else "images",
        "n_patients": None if sample.subjects is None else int(np.unique(sample.subjects).size),
        "models": {},
        "panels": {},
        "ignored": list(ignored or []),
    }


def _per_image_rows(name: str, method: str, weights: str, p: CamPass, sample: _Sample) -> list[dict[str, Any]]:
    """per_image.csv's rows of one pass: the images with a mask."""
    return [
        {
            "model": name, "method": method, "weights": weights, "image_id": sample.image_ids[i],
            "label": sample.classes[sample.labels[i]], **{k: float(p.scores[k][i]) for k in (*sc.SCORES, "area_share")},
        }
        for i in range(len(sample.images)) if sample.masks[i] is not None
    ]


def _explain_model(
    entry: ExplainModel, methods: list[str], sample: _Sample, cfg: Config
) -> tuple[dict[str, Any], dict[str, CamPass], list[dict[str, Any]]]:
    """One model, every method, with its random twin when the sanity check applies.

    Returns explain.json's block for the model, the trained model's pass per method (for the
    panels) and its per_image.csv rows.
    """
    images, labels, masks, zones = sample.images, sample.labels, sample.masks, sample.zones
    twin_model = None
    if cfg.explain.sanity_check and entry.make_twin is not None and sample.lesion:
        twin_model = entry.make_twin()
    model_out: dict[str, Any] = {**entry.info, "methods": {}}
    passes: dict[str, CamPass] = {}
    rows: list[dict[str, Any]] = []
    for method in methods:
        p = cam_pass(entry.model, entry, method, images, labels, masks, zones, cfg, cfg.explain.target_layer, f"explain {entry.name} {method}")
        passes[method] = p
        accuracy = float((p.probs.argmax(1) == labels).mean()) if len(images) else float("nan")
        model_out.update(target_layer=p.layer, grid=list(p.grid), accuracy_on_sample=accuracy)
        # One generator per (model, method): the twin's draws follow the trained model's.
        rng = np.random.default_rng([cfg.seed, 1])
        trained = summarise(p.scores, labels, sample.classes, sample.lesion, cfg, rng, sample.subjects)
        out: dict[str, Any] = {"trained": trained, "random_twin": None, "sanity": None, "seconds": {"trained": p.seconds}}
        rows += _per_image_rows(entry.name, method, "trained", p, sample)
        if twin_model is not None:
            q = cam_pass(twin_model, entry, method, images, labels, masks, zones, cfg, p.layer, f"explain {entry.name} {method} (random twin)")
            twin, sanity = twin_comparison(entry.name, method, p, q, trained, labels, sample.classes, sample.lesion, cfg, rng,
                                           sample.subjects)
            out.update(random_twin=twin, sanity=sanity)
            out["seconds"]["random_twin"] = q.seconds
            rows += _per_image_rows(entry.name, method, "random", q, sample)
            log.info("%s", sanity["text"])
        model_out["methods"][method] = out
    return model_out, passes, rows


def _score_rows(models: dict[str, Any]) -> list[dict[str, Any]]:
    """scores.csv's rows: every summary of explain.json's ``models`` in long form."""
    rows = []
    for name, m in models.items():
        for method, out in m["methods"].items():
            for weights, block in (("trained", out["trained"]), ("random", out["random_twin"])):
                if block is None:
                    continue
                for cls_name, vals in [*block["by_class"].items(), ("all", block["all"])]:
                    for score, v in vals.items():
                        rows.append({"model": name, "method": method, "weights": weights, "class": cls_name, "score": score, **v})
    return rows


def explain_models(
    entries: list[ExplainModel],
    images: list[np.ndarray],
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    image_ids: list[str],
    cfg: Config,
    run_dir: str | Path,
    ignored: list[dict[str, Any]] | None = None,
    subjects: list[str] | None = None,
) -> dict[str, Any]:
    """The stage's work on loaded models and images; writes explain.json and explain/ under ``run_dir``.

    images: list of (H, W) float32 in [0, 1]; labels (N,) class indices into ``entries[i].classes``;
    masks: (H, W) bool or None per image; ignored: trained folders left out, for explain.json;
    subjects: each image's patient (intervals over patients when every image names one).
    """
    run_dir = Path(run_dir)
    methods = check_methods(cfg.explain.methods)
    sample = _sample(entries, images, labels, masks, image_ids, cfg, run_dir, subjects)
    result = _header(sample, methods, cfg, ignored)
    per_image: list[dict[str, Any]] = []
    passes: dict[tuple[str, str], CamPass] = {}
    for entry in entries:
        model_out, model_passes, rows = _explain_model(entry, methods, sample, cfg)
        result["models"][entry.name] = model_out
        passes.update({(entry.name, method): p for method, p in model_passes.items()})
        per_image += rows
    result["panels"] = write_panels(entries, passes, methods, sample.images, sample.labels, sample.masks, sample.image_ids, cfg, run_dir)
    fileio.write_csv(run_dir / "explain" / "scores.csv", _score_rows(result["models"]),
                   ["model", "method", "weights", "class", "score", "mean", "ci_low", "ci_high", "n", "n_patients"])
    fileio.write_csv(run_dir / "explain" / "per_image.csv", per_image,
                   ["model", "method", "weights", "image_id", "label", *sc.SCORES, "area_share"])
    fileio.write_json(run_dir / "explain.json", result)
    return result


# ----------------------------------------------------------------------------- run folder


def _stage_key(cfg: Config, run_dir: Path, dirs: list[tuple[str, Path]]) -> str:
    files = []
    for name, d in dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".json", ".pth", ".pt"):
                files.append((name, d.name, f.name, fileio.file_sha256(f)))
    return config_hash(
        cfg.explain, cfg.seed, cfg.evaluate.n_bootstrap, cfg.evaluate.level,
        key_sha256(run_dir, run_dir / "manifest.csv") if (run_dir / "manifest.csv").is_file() else "", files,
    )


def stage_key(cfg: Config, run_dir: str | Path) -> str:
    """The explain stage's cache key: its settings, the manifest and the explained models' files."""
    check_methods(cfg.explain.methods)  # a bad method is reported before anything is hashed
    return _stage_key(cfg, Path(run_dir), model_dirs(cfg, Path(run_dir))[0])


def explain_stage(cfg: Config, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Explain the first seed of every configured model in ``run_dir/train/``; returns explain.json's content.

    Skips the work (and returns the stored result) when it already ran with the same inputs and its
    files are intact (:func:`medauc.stages.run`).
    """
    from medauc import stages

    return stages.run(STAGE, cfg, run_dir, force)


def compute(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The explain stage's work (no caching: :func:`explain_stage` decides whether it runs)."""
    run_dir = Path(run_dir)
    check_methods(cfg.explain.methods)
    dirs, ignored = model_dirs(cfg, run_dir)
    if ignored:
        log.warning("explain: ignoring trained models not in this run's model.names/train.seeds: %s",
                    ", ".join(f"{r['model']}/{r['seed']}" for r in ignored))
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    entries = [load_model(name, d, cfg, device) for name, d in dirs]
    images, labels, masks, ids, subjects = load_sample(cfg, run_dir, entries[0].classes)
    return explain_models(entries, images, labels, masks, ids, cfg, run_dir, ignored=ignored, subjects=subjects)
