"""Stage keys and files: what a stage's cache key is made of, hashed, and the files its patterns name.

Split from :mod:`medauc.stages` (which re-exports these names): the functions take a
:class:`medauc.stages.Stage` and a config, never the registry itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medauc import fileio
from medauc.config import Config, config_hash, to_dict, without_later_defaults
from medauc.relocate import key_sha256

if TYPE_CHECKING:
    from medauc.stages import Stage


def _function(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def report_code(cfg: Config, run_dir: Path) -> list[list[str]]:
    """The report's own code, part of its key (a newer medauc rebuilds an old run's report); found
    without importing it, so a skipped report loads no matplotlib."""
    spec = importlib.util.find_spec("medauc.report")
    folder = Path(next(iter(spec.submodule_search_locations or [])))
    # The answers' sentences and the number formats are written beside the package, not in it.
    files = sorted(folder.rglob("*.py")) + [folder.parent / "answers.py", folder.parent / "formatting.py"]
    return [[fileio.file_sha256(p) for p in files]]


def model_folder(model: str) -> str:
    """A timm name as one folder name (``hf-hub:org/x`` -> ``hf-hub_org_x``): ``train/<it>/``, ``predictions/<it>/``.

    The one definition (:func:`medauc.classify.stage.safe_name` is it), here where no torch is imported."""
    return model.replace("/", "_").replace(":", "_")


def _fill(pattern: str, cfg: Config) -> list[str]:
    """``pattern`` with ``{model}``, ``{seed}`` and ``{strategy}`` replaced by every configured value."""
    values = {"model": [model_folder(m) for m in cfg.model.names], "seed": [str(s) for s in cfg.train.seeds],
              "strategy": list(cfg.augment.strategies)}
    filled = [pattern]
    for name, options in values.items():
        if "{" + name + "}" in pattern:
            filled = [f.replace("{" + name + "}", v) for f in filled for v in options]
    return filled


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand(patterns: tuple[str, ...], cfg: Config, run_dir: Path) -> list[Path]:
    """The existing files of ``run_dir`` that ``patterns`` (paths, globs, ``{model}``/``{seed}``/``{strategy}``
    templates) name, sorted, each once."""
    found: set[Path] = set()
    for pattern in patterns:
        for f in _fill(pattern, cfg):
            found.update(p for p in run_dir.glob(f) if p.is_file())
    return sorted(found)


def _input_hashes(patterns: tuple[str, ...], cfg: Config, run_dir: Path) -> dict[str, str | None]:
    """``{path: sha256}`` of the files ``patterns`` name; a templated path without a file maps to None."""
    out: dict[str, str | None] = {}
    for pattern in patterns:
        for f in _fill(pattern, cfg):
            if _is_glob(f):
                out.update({str(p.relative_to(run_dir)): key_sha256(run_dir, p) for p in sorted(run_dir.glob(f)) if p.is_file()})
            else:
                out[f] = key_sha256(run_dir, run_dir / f) if (run_dir / f).is_file() else None
    return out


# Fields of a config section added after the registry: left out of every key while at their default,
# so that run folders made before them keep their keys (config.without_later_defaults).
LATER = {"train": ("lr_by_model",), "evaluate": ("threshold_rule", "decision_thresholds", "external"), "phantom": ("site",)}


def _config_value(cfg: Config, path: str, drop: list[str]) -> Any:
    section, *rest = path.split(".")
    top = getattr(cfg, section)
    value: Any = without_later_defaults(top, LATER.get(section, ())) if dataclasses.is_dataclass(top) else to_dict(cfg)[section]
    for part in rest:
        value = value[part]
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if f"{path}.{k}" not in drop}
    return value


def _option_part(value: Any) -> Any:
    if isinstance(value, os.PathLike) or (isinstance(value, str) and Path(value).is_file()):
        return [str(value), fileio.file_sha256(value) if Path(value).is_file() else None]
    return value


def stage_key(stage: Stage, cfg: Config, run_dir: Path, options: dict[str, Any] | None = None) -> str:
    """The cache key of ``stage`` for ``cfg`` in ``run_dir``: what its declaration names, hashed.

    ``options`` (the keyword arguments of a CLI call, e.g. ``models``) enter the key when not None.
    """
    options = {k: v for k, v in (options or {}).items() if v is not None and k != "progress"}
    if stage.key:
        return _function(stage.key)(cfg, run_dir, **options)
    drop = [c[1:] for c in stage.config if c.startswith("-")]
    parts = [_config_value(cfg, c, drop) for c in stage.config if not c.startswith("-")]
    if stage.extra:
        parts += list(_function(stage.extra)(cfg, run_dir))
    parts += [{k: _option_part(v)} for k, v in sorted(options.items())]
    patterns = tuple(f for f in stage.inputs if _is_glob(f) or "{" in f)
    for f in stage.inputs:
        if f not in patterns:
            parts.append(key_sha256(run_dir, run_dir / f) if (run_dir / f).is_file() else None)
    if patterns:
        parts.append(_input_hashes(patterns, cfg, run_dir))
    return config_hash(*parts)


def settings_key(stage: Stage, cfg: Config) -> str:
    """The hash of the config values ``stage`` is computed from (its ``config``), without files or options.

    Kept in the stage's record, so a later stage can tell that it was made under other settings
    (``train.epochs=2`` results read under ``train.epochs=8``) even when no file it reads changed.
    """
    drop = [c[1:] for c in stage.config if c.startswith("-")]
    return config_hash(*[_config_value(cfg, c, drop) for c in stage.config if not c.startswith("-")])


def describe(stage: Stage) -> dict[str, str]:
    """The declaration in words, for the report: what the key is made of, what the stage writes."""
    config = [c for c in stage.config if not c.startswith("-")]
    left_out = [c[1:] for c in stage.config if c.startswith("-")]
    key = "config " + ", ".join(config) if config else ""
    if left_out:
        key += f" (except {', '.join(left_out)})"
    if stage.inputs:
        key += ("; " if key else "") + "files " + ", ".join(stage.inputs)
    if stage.also:
        key += ("; " if key else "") + stage.also
    return {"key": key, "outputs": ", ".join(stage.outputs), "reads": ", ".join(stage.needs)}


