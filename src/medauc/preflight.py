"""What can be known before any compute, checked before it: the data folder, local and pretrained weights.

Run by the CLI once the config is loaded and before the run folder is created (so a typo leaves
nothing behind, and a later corrected command is not refused as "a different configuration"):

- ``--data`` / ``data.path``: an existing folder; ``data.path`` with the phantom as ``data.source`` is
  refused (it would be ignored: the run would train on the phantom and ``config.yaml`` record both);
- ``model.weights``: a file, or a folder holding ``<model>.safetensors`` (``.pth``...) for every model;
- ``model.pretrained``: timm's weights in the local cache, or reachable (a 10-second look-up), unless
  the run folder already holds finished trainings under these settings (a rerun needs no weights).

Torch and timm are imported only for the pretrained check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medauc.config import Config
from medauc.errors import DataError, ModelError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DATA_COMMANDS = ("prepare", "run")
TRAIN_COMMANDS = ("train", "strategies", "run")
EXTERNAL_COMMANDS = ("external", "evaluate", "run")  # evaluate.external: names, folders, phantom specs


def resolve_weights(name: str, weights: str) -> Path | None:
    """``model.weights`` -> the file for model ``name`` (None when no local weights are set).

    ``weights`` is a file, or a folder holding ``<name>.safetensors`` (or ``.pth``/``.pt``/``.bin``).
    """
    if not weights:
        return None
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for suffix in WEIGHT_SUFFIXES:
            candidate = path / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        raise ModelError(
            f"model.weights={weights}: no weights for {name!r} in that folder; "
            f"expected one of {', '.join(name + s for s in WEIGHT_SUFFIXES)}"
        )
    raise ModelError(f"model.weights={weights}: no such file or folder; give a weights file or a folder of <model name>.safetensors")


def check_data(cfg: Config, data: str | None) -> None:
    """``--data`` or ``data.path``: an existing folder; ``data.path`` never silently ignored."""
    if cfg.data.path and cfg.data.source == "phantom" and not data:
        raise DataError(
            f"data.path={cfg.data.path} is set, but data.source=phantom (config {cfg.name!r}) reads the built-in phantom "
            "and would ignore it; add data.source=folder to read that folder, or leave data.path out"
        )
    folder = data or (cfg.data.path if cfg.data.source == "folder" else "")
    what = "--data" if data else "data.path"
    if folder and not Path(folder).expanduser().is_dir():
        why = "is a file, not a folder" if Path(folder).expanduser().exists() else "does not exist"
        raise DataError(f"{what} {folder} {why}; give the folder that holds one sub-folder per class (nothing was created)")
    if folder:
        from medauc import records

        rec = records.stage_record(Path(folder).expanduser(), "phantom")
        if rec is not None and rec.get("unfinished"):
            raise DataError(
                f"{what} {folder}: `medauc phantom` started writing this folder and did not finish (killed or stopped, "
                f"{rec.get('started', '')}); its images are incomplete: run `{rec.get('command') or 'medauc phantom --force --out ' + str(folder)}` to write it again"
            )


def check_negative_class(cfg: Config, found: list[str], root: str | os.PathLike[str]) -> None:
    """With ``data.classes=[]`` (the folders found), ``data.negative_class`` must be one of them.

    Refused, not worked around: the screening view (tumour against healthy), the restoration-based
    augmentation (it generates negative-class images) and the study's answers all rest on the negative
    class, so a run without it would train every model and then present a report without its main
    answer. Found in prepare, before any training.
    """
    if not cfg.data.classes and cfg.data.negative_class not in found:
        raise DataError(
            f"data.negative_class={cfg.data.negative_class!r} is not among the classes found in {root} "
            f"({', '.join(found)}); set data.negative_class to the class a screening rules out, e.g. "
            f"data.negative_class={found[0] if found else 'healthy'}, or add its folder"
        )


def _trained(cfg: Config, out: str | None) -> bool:
    """True when ``out`` already holds the training stage finished under ``cfg``'s settings."""
    if not out:
        return False
    from medauc import records, stages
    from medauc.data.manifest import resolve_classes

    rec = records.stage_record(out, "train")
    return bool(rec and "key" in rec and rec.get("settings") == stages.settings_key(stages.get("train"), resolve_classes(cfg, out)))


def _cached_or_reachable(pcfg: dict[str, Any]) -> str | None:
    """None when the pretrained weights of timm config ``pcfg`` are in the local cache or reachable; else why not."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    repo = pcfg.get("hf_hub_id")
    if repo:
        import huggingface_hub as hf

        names = [pcfg["hf_hub_filename"]] if pcfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        if any(isinstance(hf.try_to_load_from_cache(repo, n), str) for n in names):
            return None
        if offline:
            return f"not in the local Hugging Face cache ({repo}) and HF_HUB_OFFLINE is set"
        try:
            hf.get_hf_file_metadata(hf.hf_hub_url(repo, names[0]), timeout=10)
        except (OSError, ValueError) as exc:  # the hub's HTTP errors are OSErrors; a timeout or refused connection too
            return f"{repo} cannot be reached ({type(exc).__name__})"
        return None
    url = pcfg.get("url")
    if url:
        import torch.hub

        if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file():
            return None
        return f"not in torch's cache ({os.path.basename(url)})" if offline else None
    return "timm has no pretrained weights for it"


def check_weights(cfg: Config, out: str | None) -> None:
    """``model.weights`` for every model; ``model.pretrained`` weights present or reachable (unless trained)."""
    names = list(cfg.model.names)
    if cfg.augment.enabled and cfg.augment.strategies and cfg.augment.strategy_model not in names:
        names.append(cfg.augment.strategy_model)
    for name in names:
        resolve_weights(name, cfg.model.weights)
    if cfg.model.weights or not cfg.model.pretrained or _trained(cfg, out):
        return
    import timm

    for name in names:
        pretrained = timm.models.get_pretrained_cfg(name)
        why = _cached_or_reachable(pretrained.to_dict() if pretrained is not None else {})
        if why:
            raise ModelError(
                f"model.pretrained=true: the weights of {name} are {why}; put them in a folder as {name}.safetensors "
                "(or .pth) and set model.weights=/path/to/folder, or set model.pretrained=false to train from scratch "
                "(checked before any stage ran)"
            )


def check(cfg: Config, command: str, data: str | None = None, out: str | None = None) -> None:
    """Everything :mod:`medauc.preflight` checks that ``command`` needs; raises DataError or ModelError."""
    if command in DATA_COMMANDS:
        check_data(cfg, data)
    if command in EXTERNAL_COMMANDS and cfg.evaluate.external:
        from medauc.external.spec import check as check_external

        check_external(cfg, data)
    if command in TRAIN_COMMANDS:
        check_weights(cfg, out)
