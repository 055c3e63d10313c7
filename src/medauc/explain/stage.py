"""The explanation stage: CAMs for every trained model, panels, localisation scores, sanity check.

Reads ``manifest.csv`` (test split, ``mask_path``) and ``train/<model>/<seed>/`` (the first
trained seed of ``train.seeds`` of each model in ``model.names``; other folders are listed as
ignored); writes, in the run folder:

* ``explain/<method>_<class>.png``: per class, a row per image, the image and each model's map
  for the true and for the predicted class (correct and misclassified cases when there are any);
* ``explain/per_image.csv``: one row per (model, method, weights, image) with a lesion mask:
  ``model, method, weights (trained|random), image_id, label, pointing_game, energy_share,
  energy_ratio, area_share``;
* ``explain/scores.csv``: the summaries below in long form
  (``model, method, weights, class, score, mean, ci_low, ci_high, n``);
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
              "trained":      {"by_class": {class: {score: {mean, ci_low, ci_high, n}}},
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from medauc.progress import progress_bar

from medauc import runs
from medauc.classify.distributed import resolve_device
from medauc.config import Config, config_hash
from medauc.errors import DataError, ModelError
from medauc.explain import scores as sc
from medauc.explain.cam import CamExplainer, check_methods
from medauc.explain.panels import ModelCell, PanelRow, class_panel, resize_map

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
    "ci": "percentile bootstrap over images",
}


@dataclass
class ExplainModel:
    """A trained model ready to explain, with a way to turn images into its inputs."""

    name: str
    model: nn.Module
    classes: list[str]
    prepare: Callable[[np.ndarray], torch.Tensor]  # (N, H, W) float32 [0, 1] -> (N, C, S, S)
    input_shape: tuple[int, int, int]  # (C, S, S)
    make_twin: Callable[[], nn.Module] | None = None  # random-weight twin, for the sanity check
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for explain.json (seed, dir)


@dataclass
class _Pass:
    """Maps and predictions of one model and method over the sample."""

    layer: str
    grid: tuple[int, int]
    true_maps: np.ndarray  # (N, S, S) float16
    probs: np.ndarray  # (N, K)
    scores: dict[str, np.ndarray]  # per-image localisation scores (N,), nan without a mask
    seconds: float


def stratified_sample(labels: np.ndarray, max_images: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_images`` items with class shares as in ``labels``; sorted."""
    labels = np.asarray(labels)
    n = labels.size
    if max_images <= 0 or max_images >= n:
        return np.arange(n)
    values, counts = np.unique(labels, return_counts=True)
    quota = counts * max_images / n
    take = np.floor(quota).astype(int)
    # Largest remainders get the leftover places, so the total is exactly max_images.
    for i in np.argsort(-(quota - take), kind="stable")[: max_images - take.sum()]:
        take[i] += 1
    chosen = [rng.choice(np.flatnonzero(labels == v), size=k, replace=False) for v, k in zip(values, take)]
    return np.sort(np.concatenate(chosen))


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _cam_pass(
    model: nn.Module,
    entry: ExplainModel,
    method: str,
    images: list[np.ndarray],
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    zones: list[np.ndarray | None],
    cfg: Config,
    target_layer: str,
    desc: str,
) -> _Pass:
    """Run one CAM method over all images (batched), keep the maps, score them against the masks."""
    n = len(images)
    e = cfg.explain
    device = next(model.parameters()).device
    score_lists: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in (*sc.SCORES, "area_share")}
    true_maps = None
    probs = np.zeros((n, len(entry.classes)), dtype=np.float32)
    with runs.Timer() as timer, CamExplainer(
        model, method, entry.input_shape, target_layer, batch_size=max(e.batch_size, 64), seed=cfg.seed, min_grid=e.min_grid
    ) as cam, progress_bar(total=n, desc=desc, unit="img", leave=False) as bar:
        for sl in _batches(n, e.batch_size):
            batch = [images[i] for i in range(sl.start, sl.stop)]
            x = torch.cat([entry.prepare(img[None]) for img in batch]).to(device)
            maps, logits = cam(x, labels[sl].tolist())
            if true_maps is None:
                true_maps = np.zeros((n, *maps.shape[1:]), dtype=np.float16)
            true_maps[sl] = maps
            probs[sl] = _softmax(logits)
            for j, i in enumerate(range(sl.start, sl.stop)):
                if masks[i] is None:
                    continue
                s = sc.localisation_scores(resize_map(maps[j], masks[i].shape)[None], masks[i][None], hit_zones=zones[i][None])
                for k in score_lists:
                    score_lists[k][i] = s[k][0]
            bar.update(len(batch))
        layer, grid = cam.layer.name, cam.layer.grid
    if true_maps is None:  # no images
        true_maps = np.zeros((0, *entry.input_shape[1:]), dtype=np.float16)
    return _Pass(layer, grid, true_maps, probs, score_lists, timer.seconds)


def _pred_maps(entry: ExplainModel, method: str, images: list[np.ndarray], idx: list[int], classes: list[int], cfg: Config, layer: str) -> dict[int, np.ndarray]:
    """Maps (S, S) for ``classes[j]`` of images ``idx[j]`` (the few misclassified panel images)."""
    if not idx:
        return {}
    device = next(entry.model.parameters()).device
    out: dict[int, np.ndarray] = {}
    with CamExplainer(entry.model, method, entry.input_shape, layer, seed=cfg.seed, min_grid=cfg.explain.min_grid) as cam:
        for sl in _batches(len(idx), cfg.explain.batch_size):
            x = torch.cat([entry.prepare(images[i][None]) for i in idx[sl]]).to(device)
            maps, _ = cam(x, classes[sl])
            out.update(zip(idx[sl], maps))
    return out


def _summary(scores: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], lesion: list[int], cfg: Config, rng: np.random.Generator) -> dict[str, Any]:
    n_boot, level = cfg.evaluate.n_bootstrap, cfg.evaluate.level
    by_class = {}
    for c in lesion:
        sel = labels == c
        by_class[classes[c]] = {k: sc.bootstrap_mean(scores[k][sel], n_boot, level, rng) for k in sc.SCORES}
    pooled = {k: sc.bootstrap_mean(scores[k], n_boot, level, rng) for k in sc.SCORES}
    return {"by_class": by_class, "all": pooled}


def _verdict(name: str, method: str, trained: dict, twin: dict, pg: dict, ratio: dict) -> tuple[str, str]:
    if pg["n"] == 0:
        return "no_masks", f"{name} ({method}): no test image has a lesion mask, so localisation was not scored"
    t, r = trained["all"], twin["all"]
    better = pg["ci_low"] > 0 and ratio["ci_low"] > 0
    head = "localises clearly better than" if better else "does not localise clearly better than"
    text = (
        f"{name} ({method}) {head} its randomised twin: pointing game "
        f"{t['pointing_game']['mean']:.2f} vs {r['pointing_game']['mean']:.2f} "
        f"(difference {pg['mean']:+.2f}, CI {pg['ci_low']:+.2f} to {pg['ci_high']:+.2f}); energy ratio "
        f"{t['energy_ratio']['mean']:.2f} vs {r['energy_ratio']['mean']:.2f} "
        f"(difference {ratio['mean']:+.2f}, CI {ratio['ci_low']:+.2f} to {ratio['ci_high']:+.2f})"
    )
    return ("better" if better else "not_better"), text


def _select_panel_rows(labels: np.ndarray, wrong_any: np.ndarray, per_class: int, n_classes: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Per class, up to ``per_class`` image indices: correct ones first, then misclassified (by any
    model) ones, about ``per_class // 2`` of them when there are any."""
    out = {}
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        wrong = idx[wrong_any[idx]]
        right = idx[~wrong_any[idx]]
        k_wrong = min(wrong.size, per_class // 2)
        k_right = min(right.size, per_class - k_wrong)
        k_wrong = min(wrong.size, per_class - k_right)  # fill up with misclassified ones if too few correct
        chosen = list(rng.choice(right, k_right, replace=False)) + list(rng.choice(wrong, k_wrong, replace=False))
        out[c] = [int(i) for i in chosen]
    return out


def explain_models(
    entries: list[ExplainModel],
    images: list[np.ndarray],
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    image_ids: list[str],
    cfg: Config,
    run_dir: str | Path,
    ignored: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The stage's work on loaded models and images; writes explain.json and explain/ under ``run_dir``.

    images: list of (H, W) float32 in [0, 1]; labels (N,) class indices into ``entries[i].classes``;
    masks: (H, W) bool or None per image; ignored: trained folders left out, for explain.json.
    """
    run_dir = Path(run_dir)
    methods = check_methods(cfg.explain.methods)
    if not entries:
        raise ModelError(f"no trained models to explain in {run_dir / 'train'}; run `medauc train` first")
    classes = entries[0].classes
    for entry in entries[1:]:
        if entry.classes != classes:
            raise ModelError(f"{entry.name} was trained on classes {entry.classes}, {entries[0].name} on {classes}; explain models of one run only")
    labels = np.asarray(labels, dtype=int)
    n = len(images)
    if not (len(labels) == len(masks) == len(image_ids) == n):
        raise ValueError("images, labels, masks and image_ids must have the same length")
    lesion = sorted({int(labels[i]) for i in range(n) if masks[i] is not None and masks[i].any()})
    n_with_mask = sum(1 for m in masks if m is not None and m.any())
    masks = [m if m is not None and m.any() else None for m in masks]
    # The pointing game's widened masks depend on the image only: computed once for all passes.
    tol = cfg.explain.pointing_tolerance
    zones = [None if m is None else sc.widen(m, tol * max(m.shape)) for m in masks]
    seed = cfg.seed

    result: dict[str, Any] = {
        "schema": 1,
        "definitions": DEFINITIONS,
        "classes": classes,
        "lesion_classes": [classes[c] for c in lesion],
        "methods": methods,
        "n_images": n,
        "n_with_mask": n_with_mask,
        "sample": f"test split, stratified by class, at most explain.max_images={cfg.explain.max_images}, seed {seed}",
        "level": cfg.evaluate.level,
        "n_bootstrap": cfg.evaluate.n_bootstrap,
        "seed": seed,
        "pointing_tolerance": cfg.explain.pointing_tolerance,
        "models": {},
        "panels": {},
        "ignored": list(ignored or []),
    }
    per_image: list[dict[str, Any]] = []
    passes: dict[tuple[str, str], _Pass] = {}
    for entry in entries:
        twin_model = None
        if cfg.explain.sanity_check and entry.make_twin is not None and lesion:
            twin_model = entry.make_twin()
        model_out: dict[str, Any] = {**entry.info, "methods": {}}
        for method in methods:
            p = _cam_pass(entry.model, entry, method, images, labels, masks, zones, cfg, cfg.explain.target_layer, f"explain {entry.name} {method}")
            passes[(entry.name, method)] = p
            model_out.update(target_layer=p.layer, grid=list(p.grid), accuracy_on_sample=float((p.probs.argmax(1) == labels).mean()) if n else float("nan"))
            rng = np.random.default_rng([seed, 1])
            trained = _summary(p.scores, labels, classes, lesion, cfg, rng)
            out: dict[str, Any] = {"trained": trained, "random_twin": None, "sanity": None, "seconds": {"trained": p.seconds}}
            rows = [("trained", p)]
            if twin_model is not None:
                q = _cam_pass(twin_model, entry, method, images, labels, masks, zones, cfg, p.layer, f"explain {entry.name} {method} (random twin)")
                twin = _summary(q.scores, labels, classes, lesion, cfg, rng)
                n_boot, level = cfg.evaluate.n_bootstrap, cfg.evaluate.level
                pg = sc.paired_difference(p.scores["pointing_game"], q.scores["pointing_game"], n_boot, level, rng)
                ratio = sc.paired_difference(p.scores["energy_ratio"], q.scores["energy_ratio"], n_boot, level, rng)
                corr = sc.bootstrap_mean(sc.rank_correlation(p.true_maps, q.true_maps), n_boot, level, rng)
                verdict, text = _verdict(entry.name, method, trained, twin, pg, ratio)
                out.update(random_twin=twin, sanity={
                    "pointing_game_difference": pg, "energy_ratio_difference": ratio,
                    "map_rank_correlation": corr, "verdict": verdict, "text": text,
                })
                out["seconds"]["random_twin"] = q.seconds
                rows.append(("random", q))
                log.info("%s", text)
            for weights, pp in rows:
                for i in range(n):
                    if masks[i] is None:
                        continue
                    per_image.append({
                        "model": entry.name, "method": method, "weights": weights, "image_id": image_ids[i],
                        "label": classes[labels[i]], **{k: float(pp.scores[k][i]) for k in (*sc.SCORES, "area_share")},
                    })
            model_out["methods"][method] = out
        result["models"][entry.name] = model_out
        del twin_model

    # Panels: the same images for every model, so that the maps can be compared side by side.
    wrong_any = np.zeros(n, dtype=bool)
    for entry in entries:
        wrong_any |= passes[(entry.name, methods[0])].probs.argmax(1) != labels
    chosen = _select_panel_rows(labels, wrong_any, cfg.explain.per_class, len(classes), np.random.default_rng([seed, 2]))
    names = [e.name for e in entries]
    panel_idx = [i for idx in chosen.values() for i in idx]
    for method in methods if cfg.explain.per_class > 0 else []:
        pred_maps = {}
        for entry in entries:
            p = passes[(entry.name, method)]
            wrong = [i for i in panel_idx if p.probs[i].argmax() != labels[i]]
            pred_maps[entry.name] = _pred_maps(entry, method, images, wrong, [int(p.probs[i].argmax()) for i in wrong], cfg, p.layer)
        result["panels"][method] = {}
        for c, idx in chosen.items():
            rows = []
            for i in idx:
                row = PanelRow(image_ids[i], images[i], classes[c], masks[i])
                for entry in entries:
                    p = passes[(entry.name, method)]
                    k = int(p.probs[i].argmax())
                    true_map = resize_map(p.true_maps[i].astype(np.float32), images[i].shape)
                    pred_map = true_map if k == c else resize_map(pred_maps[entry.name][i], images[i].shape)
                    row.cells.append(ModelCell(true_map, pred_map, classes[k], float(p.probs[i, k])))
                rows.append(row)
            rel = f"explain/{method}_{_safe(classes[c])}.png"
            class_panel(run_dir / rel, f"{method}: {classes[c]} (green/white outline: lesion mask)", rows, names)
            result["panels"][method][classes[c]] = rel

    score_rows = []
    for name, m in result["models"].items():
        for method, out in m["methods"].items():
            for weights, block in (("trained", out["trained"]), ("random", out["random_twin"])):
                if block is None:
                    continue
                for cls_name, vals in [*block["by_class"].items(), ("all", block["all"])]:
                    for score, v in vals.items():
                        score_rows.append({"model": name, "method": method, "weights": weights, "class": cls_name, "score": score, **v})
    runs.write_csv(run_dir / "explain" / "scores.csv", score_rows,
                   ["model", "method", "weights", "class", "score", "mean", "ci_low", "ci_high", "n"])
    runs.write_csv(run_dir / "explain" / "per_image.csv", per_image,
                   ["model", "method", "weights", "image_id", "label", *sc.SCORES, "area_share"])
    runs.write_json(run_dir / "explain.json", result)
    return result


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# ----------------------------------------------------------------------------- run folder


def _resolve(path: str, run_dir: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return run_dir / p


def _model_dirs(cfg: Config, run_dir: Path) -> tuple[list[tuple[str, Path]], list[dict[str, Any]]]:
    """``(model name, train/<model>/<first trained seed of train.seeds>/)`` for every model in
    ``model.names``, in config order, and ``{model, seed, reason}`` for every other trained folder
    (an old model or seed left in the run folder is not explained)."""
    train = run_dir / "train"
    if not train.is_dir():
        raise ModelError(f"{train} does not exist; run `medauc train` (or `medauc run`) before `medauc explain`")
    # training writes a timm name such as "hf-hub:org/x" to the folder "hf-hub_org_x"
    folders = {name.replace("/", "_").replace(":", "_"): name for name in cfg.model.names}
    on_disk = {
        d.name: sorted(int(s.name) for s in d.iterdir() if s.is_dir() and s.name.lstrip("-").isdigit())
        for d in sorted(train.iterdir()) if d.is_dir()
    }
    out, ignored = [], []
    for folder, name in folders.items():
        trained = [s for s in on_disk.get(folder, []) if s in cfg.train.seeds]
        if not trained:
            raise ModelError(
                f"model.names includes {name!r} but {train / folder} has no trained seed of train.seeds={list(cfg.train.seeds)}; "
                "run `medauc train` (or `medauc run`) first, or remove it from model.names"
            )
        out.append((folder, train / folder / str(trained[0])))
    for folder, seeds in on_disk.items():
        for seed in seeds:
            if folder not in folders or seed not in cfg.train.seeds:
                ignored.append({"model": folder, "seed": seed,
                                "reason": "model not in model.names" if folder not in folders else "seed not in train.seeds"})
    return out, ignored


def _load_sample(cfg: Config, run_dir: Path, classes: list[str]) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray | None], list[str]]:
    import pandas as pd

    from medauc.data.images import load_image

    manifest = run_dir / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest} does not exist; run `medauc prepare` (or `medauc run`) first")
    df = pd.read_csv(manifest, dtype={"image_id": str, "mask_path": str}, keep_default_na=False)
    missing = {"image_id", "path", "label", "split"} - set(df.columns)
    if missing:
        raise DataError(f"{manifest} lacks columns {sorted(missing)}; rerun `medauc prepare`")
    test = df[df["split"] == "test"].sort_values("image_id").reset_index(drop=True)
    if test.empty:
        raise DataError(f"{manifest} has no rows with split == 'test'; nothing to explain")
    unknown = sorted(set(test["label"]) - set(classes))
    if unknown:
        raise DataError(f"{manifest}: test labels {unknown} are not among the model's classes {classes}")
    labels_all = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    idx = stratified_sample(labels_all, cfg.explain.max_images, np.random.default_rng([cfg.seed, 0]))
    images, masks, ids = [], [], []
    has_masks = "mask_path" in test.columns
    for i in progress_bar(idx, desc="explain: loading test images", unit="img", leave=False):
        row = test.iloc[int(i)]
        images.append(np.asarray(load_image(_resolve(row["path"], run_dir)), dtype=np.float32))
        mask = None
        if has_masks and str(row["mask_path"]).strip():
            mpath = _resolve(str(row["mask_path"]), run_dir)
            if not mpath.is_file():
                raise DataError(f"{manifest}: mask {mpath} of image {row['image_id']} does not exist; rerun `medauc prepare`")
            mask = np.asarray(load_image(mpath)) > 0.5
        masks.append(mask)
        ids.append(str(row["image_id"]))
    return images, labels_all[idx], masks, ids


def _entry(name: str, model_dir: Path, cfg: Config, device: torch.device) -> ExplainModel:
    from medauc.classify.models import create_model, load_trained, prepare_batch

    model, meta = load_trained(model_dir)
    model = model.to(device).eval()
    size = int(meta["image_size"])
    in_chans = int(meta["in_chans"])

    def make_twin() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            twin = create_model(meta["model_name"], num_classes=len(meta["classes"]), in_chans=in_chans, image_size=size, pretrained=False)
        return twin.to(device).eval()

    return ExplainModel(
        name=name,
        model=model,
        classes=list(meta["classes"]),
        prepare=lambda images: prepare_batch(images, meta),
        input_shape=(in_chans, size, size),
        make_twin=make_twin,
        info={"seed": meta.get("seed", int(model_dir.name)), "dir": str(model_dir.relative_to(model_dir.parents[2]))},
    )


def _stage_key(cfg: Config, run_dir: Path, model_dirs: list[tuple[str, Path]]) -> str:
    files = []
    for name, d in model_dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".json", ".pth", ".pt"):
                files.append((name, d.name, f.name, runs.file_sha256(f)))
    return config_hash(
        cfg.explain, cfg.seed, cfg.evaluate.n_bootstrap, cfg.evaluate.level,
        runs.file_sha256(run_dir / "manifest.csv") if (run_dir / "manifest.csv").is_file() else "", files,
    )


def stage_key(cfg: Config, run_dir: str | Path) -> str:
    """The explain stage's cache key: its settings, the manifest and the explained models' files."""
    check_methods(cfg.explain.methods)  # a bad method is reported before anything is hashed
    return _stage_key(cfg, Path(run_dir), _model_dirs(cfg, Path(run_dir))[0])


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
    model_dirs, ignored = _model_dirs(cfg, run_dir)
    if ignored:
        log.warning("explain: ignoring trained models not in this run's model.names/train.seeds: %s",
                    ", ".join(f"{r['model']}/{r['seed']}" for r in ignored))
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    entries = [_entry(name, d, cfg, device) for name, d in model_dirs]
    images, labels, masks, ids = _load_sample(cfg, run_dir, entries[0].classes)
    return explain_models(entries, images, labels, masks, ids, cfg, run_dir, ignored=ignored)
