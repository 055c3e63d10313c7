"""Which trained model of a run folder is put to use, with which seed, and at which screening threshold.

``--model`` may be left out: the run's best model by ``evaluate.primary_metric`` (the seed mean in
``metrics.json``, the report's question 3), or its only model. ``--seed`` may be left out: the first
of ``train.seeds`` trained. The threshold is the run's operating point: the largest threshold on the
screening score ``1 - p(negative class)`` whose validation sensitivity reaches
``evaluate.target_sensitivity`` (``metrics.json``, ``operating_point``); a run without
``metrics.json`` has none, and predictions then carry scores without decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medauc import fileio, records
from medauc.config import Config, load_config
from medauc.errors import ModelError, RunFolderError


def folder_name(model: str) -> str:
    """A timm name as training names its folder (``hf-hub:org/x`` -> ``hf-hub_org_x``)."""
    return model.replace("/", "_").replace(":", "_")


@dataclass(frozen=True)
class Chosen:
    """One trained model of a run, ready to be loaded (:func:`medauc.classify.models.load_trained`)."""

    run_dir: Path
    cfg: Config
    model: str  # the model's folder name below train/ (its timm name, made safe for a folder)
    seed: int
    model_dir: Path  # train/<model>/<seed>
    why: str  # how it was chosen, in words
    operating_point: dict[str, Any] | None  # metrics.json's, or None (no metrics.json)
    metrics: dict[str, Any] | None  # metrics.json as read, or None

    @property
    def negative_class(self) -> str:
        return self.cfg.data.negative_class

    @property
    def threshold(self) -> float | None:
        op = self.operating_point or {}
        t = op.get("threshold")
        return float(t) if t is not None else None

    def threshold_text(self) -> str:
        """Where the threshold comes from, in one sentence (printed by predict, kept in its JSON and the card)."""
        op = self.operating_point
        if self.threshold is None or not op:
            return ("no screening threshold: this run has no operating point (run `medauc evaluate` on it); "
                    "predictions carry the screening score without a decision")
        how = ("the threshold maximising Youden's J (sensitivity + specificity - 1) on validation"
               if op.get("threshold_rule") == "youden" else
               f"the largest threshold whose validation sensitivity reaches evaluate.target_sensitivity={op.get('target_sensitivity')}")
        return (f"screening threshold {self.threshold:.6g} on 1 - p({self.negative_class}): the run's configured operating "
                f"point, {how} (validation sensitivity {_num(op.get('val_sensitivity'))}, "
                f"specificity {_num(op.get('val_specificity'))}); positive when the score is at or above it")


def _num(x: Any) -> str:
    return f"{float(x):.3f}" if isinstance(x, (int, float)) else "n/a"


def run_config(run_dir: str | os.PathLike[str]) -> Config:
    """The resolved config of a finished run folder (its ``config.yaml``, ``data.classes`` from the manifest)."""
    from medauc.data.manifest import resolve_classes

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunFolderError(f"--run {run_dir}: no config.yaml there; give the folder of a medauc run (its --out)")
    return resolve_classes(load_config(str(path)), run_dir)


def _trained_seeds(run_dir: Path, folder: str) -> list[int]:
    base = run_dir / "train" / folder
    if not base.is_dir():
        return []
    return sorted(int(d.name) for d in base.iterdir() if d.name.lstrip("-").isdigit() and (d / "best.safetensors").is_file())


def _best_model(cfg: Config, metrics: dict[str, Any] | None, folders: list[str]) -> tuple[str, str]:
    key = cfg.evaluate.primary_metric
    means = {m: ((metrics or {}).get("models", {}).get(m, {}).get("summary", {}).get(key) or {}).get("mean") for m in folders}
    means = {m: v for m, v in means.items() if v is not None}
    if not means:
        raise ModelError(f"this run has {len(folders)} models ({', '.join(folders)}) and no metrics.json to choose "
                         "between them; pass --model NAME, or run `medauc evaluate` on the run first")
    best = max(means, key=lambda m: means[m])
    return best, f"best by {key} (seed mean {means[best]:.4f}) of {len(means)} models in metrics.json"


def choose(run_dir: str | os.PathLike[str], model: str | None = None, seed: int | None = None) -> Chosen:
    """The model of ``run_dir`` to use (module docstring); raises ModelError naming the choices when there is none.

    Its training record's files (weights, ``model.json``) are checked by sha256 first: a changed file
    is an error naming it.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    folders = [folder_name(m) for m in cfg.model.names]
    metrics_path = run_dir / "metrics.json"
    metrics = fileio.read_json(metrics_path) if metrics_path.is_file() else None
    if model is None:
        folder, why = (folders[0], "the run's only model") if len(folders) == 1 else _best_model(cfg, metrics, folders)
    else:
        folder, why = folder_name(model), "chosen with --model"
        trained = sorted(d.name for d in (run_dir / "train").glob("*") if d.is_dir()) if (run_dir / "train").is_dir() else []
        if folder not in trained:
            raise ModelError(f"--model {model}: no such trained model in {run_dir / 'train'}; trained: {', '.join(trained) or 'none'}")
    seeds = _trained_seeds(run_dir, folder)
    if seed is None:
        ordered = [s for s in cfg.train.seeds if s in seeds] or seeds
        if not ordered:
            raise ModelError(f"{run_dir / 'train' / folder} holds no finished training (best.safetensors); run `medauc train` first")
        seed = ordered[0]
    elif seed not in seeds:
        raise ModelError(f"--seed {seed}: {folder} has no finished training with that seed in {run_dir}; trained seeds: "
                         f"{', '.join(map(str, seeds)) or 'none'}")
    model_dir = run_dir / "train" / folder / str(seed)
    rec = records.stage_record(run_dir, f"train/{folder}/{seed}")
    damage = records.record_damage(run_dir, rec) if rec else []
    if damage:
        raise ModelError(f"{damage[0].text(run_dir)}; it is part of the training of {folder} seed {seed}: put the original "
                         f"back, or retrain it (`medauc train --force --out {run_dir}`)")
    cell = ((metrics or {}).get("models", {}).get(folder, {}).get("seeds", {}).get(str(seed)) or {})
    return Chosen(run_dir=run_dir, cfg=cfg, model=folder, seed=int(seed), model_dir=model_dir, why=why,
                  operating_point=cell.get("operating_point"), metrics=metrics)
