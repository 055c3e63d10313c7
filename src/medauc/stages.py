"""The pipeline's stages, declared once, and the bookkeeping done around every one of them.

Each :class:`Stage` says what its cache key is made of (config keys and the run-folder files it
reads), which files it writes, which stages' files it reads, and which function does its work. The
CLI's sub-commands, ``medauc run``, ``--force`` and the report's reproducibility section all read
:data:`STAGES`; adding a stage is adding one entry here and its function.

:func:`run` is the only place that decides whether a stage runs::

    lock the run folder                    (a second process is refused, naming the holder)
    verify the files of the stages it reads (damaged or missing: stop, naming the file)
    compute its key                         (config values + sha256 of its input files)
    record with the same key, files intact  -> skip (its result is read back)
    record with the same key, a file missing -> rebuild
    record with the same key, a file changed -> stop, naming it (truncated or edited by hand?),
                                               unless --force: then rebuild
    record with another key                 -> stop unless --force (or the stage is not guarded)
    run the function, then write the record: the key and the sha256 of every file it wrote

The record is written only after the function returned, so it never vouches for a half-written
stage. A stage's own parts (one model of the training stage, the classic strategy's images) keep
their own records through :func:`medauc.records.check_stage`, which verifies files the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medauc import fileio, lock, records
from medauc.config import Config, config_hash, to_dict, without_later_defaults
from medauc.errors import RunFolderError

log = logging.getLogger(__name__)


def _always(cfg: Config) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    ``config``: config sections or keys its cache key is made of, in order (``-section.key`` leaves
    one key of a section out). ``inputs``: run-folder files in its key; a plain path adds its sha256
    (None when absent); templates over ``{model}``, ``{seed}`` and ``{strategy}`` (the configured
    model folders, ``train.seeds``, ``augment.strategies``) and globs add one ``{path: sha256}``
    (a templated path that is absent maps to None, so configuring a model changes the key). ``key``: ``"module:function"`` computing the whole key instead, for a
    key that needs more than that (``config`` and ``inputs`` then say what it hashes). ``extra``:
    ``"module:function"`` giving more key parts. ``also``: those extra parts in words.
    ``outputs``: globs of the run-folder files it writes; its record vouches for them.
    ``needs``: stages whose files it reads, verified before it runs. ``result``: the file read back
    when the stage is skipped. ``guarded``: a key change needs ``--force`` (False for a stage whose
    function decides per part, or whose outputs are a view of other files). ``recorded``: False for
    a step cached elsewhere. ``when``: whether the config runs it.
    """

    name: str
    summary: str
    function: str
    command: str | None = None
    config: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    key: str | None = None
    extra: str | None = None
    also: str = ""
    outputs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    result: str | None = None
    guarded: bool = True
    recorded: bool = True
    reads_manifest: bool = True
    when: Callable[[Config], bool] = _always


@dataclass(frozen=True)
class Command:
    """A CLI sub-command: ``module`` defines ``add_arguments(parser)`` and ``main(args) -> int``."""

    name: str
    module: str
    summary: str
    common: bool = True  # takes --config, --out, --force and key=value overrides
    stage: Stage | None = None


STAGES: tuple[Stage, ...] = (
    Stage(
        "phantom", "write the built-in synthetic brain-MRI data set (with lesion masks)",
        function="medauc.pipeline:phantom_step", command="medauc.data.phantom.command",
        config=("phantom", "seed"), also="cached across runs by these settings in $MEDAUC_CACHE",
        outputs=("phantom/phantom.json", "phantom/montage.png", "phantom/montage_masks.png"),
        recorded=False, reads_manifest=False, when=lambda cfg: cfg.data.source == "phantom",
    ),
    Stage(
        "prepare", "load, audit and split a folder-per-class image set; write manifest.csv",
        function="medauc.data.command:compute", command="medauc.data.command",
        config=("data", "-data.workers", "-data.image_size", "-data.negative_class", "-data.path", "seed"),
        key="medauc.data.command:source_key",
        also="the data folder's file list (names, sizes, times) and the content of data.groups_csv",
        outputs=("manifest.csv", "data_audit.json", "images/index.json", "images/**/*.png"),  # images/: DICOM/NIfTI as PNG
        result="manifest.csv", reads_manifest=False,
    ),
    Stage(
        "augment", "train the U-Net denoiser, generate restored healthy images, check them",
        function="medauc.augment.command:compute", command="medauc.augment.command",
        config=("augment", "seed", "data.negative_class", "evaluate.n_bootstrap", "evaluate.level"),
        inputs=("manifest.csv",),
        extra="medauc.augment.command:key_extra", also="data.image_size where it differs from augment.image_size (check d runs at it)",
        outputs=("augment_checks.json", "augment/manifest.csv", "augment/restored_test.csv", "augment/denoiser.safetensors",
                 "augment/denoiser.json", "augment/restoration_examples.npz", "augment/generated/**/*.png",
                 "augment/restored_test/**/*.png"),
        needs=("prepare",), result="augment_checks.json", when=lambda cfg: cfg.augment.enabled,
    ),
    Stage(
        "train", "train classifiers (any timm model) and write predictions files",
        function="medauc.classify.stage:train_stage", command="medauc.classify.command",
        config=("model", "train", "-train.num_threads", "-train.jobs", "-train.device", "data.image_size", "data.classes"),
        inputs=("manifest.csv", "augment/manifest.csv"),
        also="each model and seed also keeps its own record (train/<model>/<seed>), so a changed input "
             "retrains only the models it concerns and an interrupted model resumes",
        outputs=("train/*/*/best.safetensors", "train/*/*/model.json", "train/*/*/history.csv",
                 "predictions/*/*/val.csv", "predictions/*/*/test.csv"),
        needs=("prepare", "augment"), guarded=False,
    ),
    Stage(
        "strategies", "train and compare the imbalance strategies (Table 2) and run checks a and e",
        function="medauc.strategies.stage:compute", command="medauc.strategies.command",
        config=("augment", "model", "-model.names", "train", "-train.jobs", "data.image_size", "data.classes", "evaluate", "seed"),
        inputs=("manifest.csv", "augment/manifest.csv"),
        outputs=("strategies.json", "strategies.csv", "strategies/*/manifest.csv", "strategies/*/generated/**/*.png",
                 "strategies/*/train/*/*/best.safetensors", "strategies/*/train/*/*/model.json",
                 "strategies/*/train/*/*/history.csv", "strategies/*/predictions/*/*/*.csv",
                 "predictions/*/*/generated.csv", "predictions/*/*/restored_test.csv"),
        needs=("prepare", "augment", "train"), result="strategies.json",
        when=lambda cfg: cfg.augment.enabled and bool(cfg.augment.strategies),
    ),
    Stage(
        "evaluate", "metrics, bootstrap CIs, DeLong tests, prevalence, from predictions files",
        function="medauc.evaluate.command:compute", command="medauc.evaluate.command",
        config=("evaluate", "data.classes", "data.negative_class", "seed"),
        inputs=("predictions/{model}/{seed}/test.csv", "predictions/{model}/{seed}/val.csv"),
        outputs=("metrics.json", "comparisons.csv", "curves/*/*/*.csv"), needs=("train",), result="metrics.json",
    ),
    Stage(
        "explain", "Grad-CAM panels and localisation scores against lesion masks",
        function="medauc.explain.stage:compute", command="medauc.explain.command",
        config=("explain", "seed", "evaluate.n_bootstrap", "evaluate.level"),
        inputs=("manifest.csv", "train/{model}/{seed}/*.safetensors", "train/{model}/{seed}/*.json"),
        key="medauc.explain.stage:stage_key", also="of each model, the first of train.seeds trained",
        outputs=("explain.json", "explain/*.png", "explain/*.csv"), needs=("prepare", "train"), result="explain.json",
    ),
    Stage(
        "report", "write report.html, report.md and results.json from a run folder",
        function="medauc.report.build:compute", command="medauc.report.command",
        config=("report",),
        inputs=("config.yaml", "manifest.csv", "data_audit.json", "phantom/phantom.json", "augment_checks.json",
                "strategies.json", "metrics.json", "comparisons.csv", "explain.json", "explain/*.png",
                "export/*/*/model_card.md"),
        extra="medauc.stages:report_code", also="medauc's report code",
        outputs=("report.html", "report.md", "results.json", "report_files/*.png"),
        needs=("prepare", "augment", "strategies", "evaluate", "explain"), guarded=False,
    ),
)

COMMANDS: dict[str, Command] = {
    **{s.name: Command(s.name, s.command, s.summary, stage=s) for s in STAGES if s.command},
    **{name: Command(name, module, summary, common=False) for name, module, summary in (
        ("compare", "medauc.evaluate.compare_cli", "compare predictions files: paired DeLong and bootstrap tests"),
        ("predict", "medauc.deploy.predict", "apply a run's trained model to new images (PNG, JPEG, DICOM, NIfTI)"),
        ("export", "medauc.deploy.export", "export a run's trained model to ONNX, checked against PyTorch, with its model card"))},
    "run": Command("run", "medauc.pipeline", "run every stage end to end, with caching"),
}


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def pipeline(cfg: Config) -> list[Stage]:
    """The stages ``medauc run`` runs for ``cfg``, in order."""
    return [s for s in STAGES if s.when(cfg)]


def _function(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------- keys and files


def report_code(cfg: Config, run_dir: Path) -> list[list[str]]:
    """The report's own code, part of its key (a newer medauc rebuilds an old run's report); found
    without importing it, so a skipped report loads no matplotlib."""
    spec = importlib.util.find_spec("medauc.report")
    folder = Path(next(iter(spec.submodule_search_locations or [])))
    # The answers' sentences and the number formats are written beside the package, not in it.
    files = sorted(folder.rglob("*.py")) + [folder.parent / "answers.py", folder.parent / "formatting.py"]
    return [[fileio.file_sha256(p) for p in files]]


def _folder(model: str) -> str:
    return model.replace("/", "_").replace(":", "_")  # as training names its folders


def _fill(pattern: str, cfg: Config) -> list[str]:
    """``pattern`` with ``{model}``, ``{seed}`` and ``{strategy}`` replaced by every configured value."""
    values = {"model": [_folder(m) for m in cfg.model.names], "seed": [str(s) for s in cfg.train.seeds],
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
                out.update({str(p.relative_to(run_dir)): fileio.file_sha256(p) for p in sorted(run_dir.glob(f)) if p.is_file()})
            else:
                out[f] = fileio.file_sha256(run_dir / f) if (run_dir / f).is_file() else None
    return out


# Fields of a config section added after the registry: left out of every key while at their default,
# so that run folders made before them keep their keys (config.without_later_defaults).
LATER = {"train": ("lr_by_model",)}


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
            parts.append(fileio.file_sha256(run_dir / f) if (run_dir / f).is_file() else None)
    if patterns:
        parts.append(_input_hashes(patterns, cfg, run_dir))
    return config_hash(*parts)


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


# ----------------------------------------------------------------------------- running a stage


def _is_main() -> bool:  # under torchrun only rank 0 holds the lock and writes records; the others decide alike
    return int(os.environ.get("RANK", "0")) == 0


def _damage_text(damage: list[records.Damage], run_dir: Path) -> str:
    more = f" (and {len(damage) - 1} more file(s))" if len(damage) > 1 else ""
    return damage[0].text(run_dir) + more


def check_needs(stage: Stage, cfg: Config, run_dir: Path, verified: set[tuple[Path, str]] | None = None) -> None:
    """Verify the recorded files of the stages ``stage`` reads; raise :class:`RunFolderError` naming a damaged one.

    A stage without a record (never run here, or files put there by hand) is not checked.
    """
    for name in stage.needs:
        need = get(name)
        token = (run_dir.resolve(), name)
        if not need.when(cfg) or (verified is not None and token in verified):
            continue
        rec = records.stage_record(run_dir, name)
        damage = records.record_damage(run_dir, rec) if rec else []
        if damage:
            changed = any(d.kind == "changed" for d in damage)
            how = (f"run `medauc {name} --force --out {run_dir}` to rebuild it (the file is replaced), or put the original back"
                   if changed else f"run `medauc {name} --out {run_dir}` to rebuild it")
            raise RunFolderError(f"{_damage_text(damage, run_dir)}; stage {name!r} wrote it and {stage.name} reads it: {how}")
        if verified is not None:
            verified.add(token)


def run(name: str, cfg: Config, run_dir: str | os.PathLike[str], force: bool = False,
        verified: set[tuple[Path, str]] | None = None, **options: Any) -> Any:
    """Run stage ``name`` in ``run_dir`` unless it is done with the same inputs and intact files.

    ``options`` go to the stage's function (e.g. ``progress``, ``models``); ``verified`` collects the
    stages already checked in this pipeline run, so that none is hashed twice. Returns the
    function's result, or the stage's ``result`` file read back when it is skipped (None if it has
    none). Raises :class:`medauc.errors.RunFolderError` as the module docstring says.
    """
    stage = get(name)
    run_dir = Path(run_dir)
    if stage.reads_manifest:
        from medauc.data.manifest import resolve_classes

        cfg = resolve_classes(cfg, run_dir)  # data.classes=[] means the classes prepare found
    main = _is_main()
    with lock.run_lock(run_dir) if main else contextlib.nullcontext():
        check_needs(stage, cfg, run_dir, verified)
        if not stage.recorded:
            return _call(stage, cfg, run_dir, force, options)
        key = stage_key(stage, cfg, run_dir, options)
        rec = records.stage_record(run_dir, name)
        if rec is not None:
            if rec.get("key") == key:
                if "files" not in rec:  # written before records listed files: trust it once, then verify
                    if main:
                        records.mark_stage(run_dir, name, key, files=expand(stage.outputs, cfg, run_dir))
                        log.info("%s: recorded the sha256 of its files (its record predates file checks)", name)
                    return _skipped(stage, run_dir, verified)
                damage = records.record_damage(run_dir, rec)
                if not damage:
                    print(f"{name}: up to date in {run_dir} (same inputs, its {len(rec['files'])} files intact); nothing to do")
                    return _skipped(stage, run_dir, verified)
                changed = [d for d in damage if d.kind == "changed"]
                if changed and not force:
                    raise RunFolderError(
                        f"{_damage_text(changed, run_dir)}: stage {name!r} wrote it, and it has been truncated, damaged or "
                        f"edited since; pass --force to rebuild {name} (the file is replaced), or put the original back"
                    )
                log.warning("%s: %s; rebuilding it", name, _damage_text(damage, run_dir))
                if main:
                    for d in changed:  # ours (the record says so) and wrong: a part-wise stage must not keep it
                        (run_dir / d.path).unlink(missing_ok=True)
            elif stage.guarded and not force:
                raise RunFolderError(
                    f"stage {name!r} in {run_dir} was computed from other inputs (key {rec.get('key')} != {key}); "
                    "pass --force to recompute it, or choose another --out"
                )
            if main:
                records.clear_stage(run_dir, name)
        result = _call(stage, cfg, run_dir, force, options)
        if main:
            records.mark_stage(run_dir, name, key, files=expand(stage.outputs, cfg, run_dir))
        if verified is not None:
            verified.add((run_dir.resolve(), name))
        return result


def _call(stage: Stage, cfg: Config, run_dir: Path, force: bool, options: dict[str, Any]) -> Any:
    # Imported only when the stage runs: a skipped stage loads no torch, timm or MONAI.
    function = _function(stage.function)
    if "force" in inspect.signature(function).parameters:  # a stage with parts of its own passes it on
        options = {**options, "force": force}
    return function(cfg, run_dir, **options)


def _skipped(stage: Stage, run_dir: Path, verified: set[tuple[Path, str]] | None) -> Any:
    if verified is not None:
        verified.add((run_dir.resolve(), stage.name))
    if stage.result is None:
        return None
    path = run_dir / stage.result
    return fileio.read_json(path) if path.suffix == ".json" else path
