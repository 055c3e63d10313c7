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
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medauc import allocator, fileio, lock, records, relocate
from medauc.config import Config
from medauc.errors import RunFolderError
from medauc.stage_keys import LATER, _function, describe, expand, report_code, settings_key, stage_key  # noqa: F401 (re-exported)

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
        config=("augment", "model", "-model.names", "train", "-train.jobs", "data.image_size", "data.classes", "evaluate",
                "-evaluate.external", "seed"),
        inputs=("manifest.csv", "augment/manifest.csv"),
        outputs=("strategies.json", "strategies.csv", "strategies/*/manifest.csv", "strategies/*/generated/**/*.png",
                 "strategies/*/train/*/*/best.safetensors", "strategies/*/train/*/*/model.json",
                 "strategies/*/train/*/*/history.csv", "strategies/*/predictions/*/*/*.csv",
                 "predictions/*/*/generated.csv", "predictions/*/*/restored_test.csv"),
        needs=("prepare", "augment", "train"), result="strategies.json",
        when=lambda cfg: cfg.augment.enabled and bool(cfg.augment.strategies),
    ),
    Stage(
        "external", "predict the external test sets (evaluate.external) with every trained model; audit them against training",
        function="medauc.external.stage:compute", command="medauc.external.stage",
        config=("evaluate.external", "data", "-data.workers", "phantom", "seed"), key="medauc.external.stage:stage_key",
        inputs=("manifest.csv", "train/{model}/{seed}/best.safetensors", "train/{model}/{seed}/model.json"),
        also="each set's file list (names, sizes, times) or its phantom's cache key",
        outputs=("external/*/manifest.csv", "external/*/audit.json", "external/*/images/**/*",
                 "predictions/*/*/external-*.csv"),
        needs=("prepare", "train"), when=lambda cfg: bool(cfg.evaluate.external),
    ),
    Stage(
        "evaluate", "metrics, bootstrap CIs, DeLong tests, prevalence, from predictions files; the external sets too",
        function="medauc.evaluate.command:compute", command="medauc.evaluate.command",
        config=("evaluate", "data.classes", "data.negative_class", "seed"),
        inputs=("predictions/{model}/{seed}/test.csv", "predictions/{model}/{seed}/val.csv",
                "predictions/{model}/{seed}/external-*.csv", "external/*/audit.json"),
        outputs=("metrics.json", "comparisons.csv", "curves/*/*/*.csv", "external.json", "decision.json", "decision.csv",
                 "decision_curves.csv", "decision_external-*"),
        needs=("train", "external"), result="metrics.json",
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
                "strategies.json", "metrics.json", "comparisons.csv", "external.json", "decision.json", "decision_curves.csv",
                "decision_external-*.json", "decision_external-*_curves.csv", "train/{model}/{seed}/history.csv",
                "explain.json", "explain/*.png",
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


# ----------------------------------------------------------------------------- running a stage


def _is_main() -> bool:  # under torchrun only rank 0 holds the lock and writes records; the others decide alike
    return int(os.environ.get("RANK", "0")) == 0


def _damage_text(damage: list[records.Damage], run_dir: Path) -> str:
    more = f" (and {len(damage) - 1} more file(s))" if len(damage) > 1 else ""
    return damage[0].text(run_dir) + more


# A stage function's path options and the command-line flag that gives each (kept in its record for repair()).
OPTION_FLAGS = {"data_dir": "--data", "manifest_path": "--manifest"}


def command_options(options: dict[str, Any]) -> dict[str, str]:
    """``{flag: absolute path}`` of the path options a stage ran with (``--data DIR``), for its record."""
    return {flag: os.path.abspath(options[k]) for k, flag in OPTION_FLAGS.items() if options.get(k)}


def repair(name: str, run_dir: Path, force: bool = False) -> str:
    """The command that (re)builds stage ``name`` in ``run_dir`` under the run's own settings, and nothing else.

    It names the folder's ``config.yaml`` (the resolved config, overrides included), so it never
    replaces the run's configuration with a built-in one, and the paths the stage last ran with
    (``--data DIR``: not a config value), read from its record.
    """
    rec = records.stage_record(run_dir, name) or {}
    paths = "".join(f" {flag} {path}" for flag, path in (rec.get("options") or {}).items())
    force = force or bool(rec.get("unfinished") and rec.get("force"))  # as it was started (it would continue so anyway)
    return f"medauc {name}{' --force' if force else ''} --config {Path(run_dir) / 'config.yaml'} --out {run_dir}{paths}"


def upstream(stage: Stage, cfg: Config) -> list[Stage]:
    """The recorded stages whose files ``stage`` reads, directly or through another stage, in pipeline order."""
    names: set[str] = set()
    todo = list(stage.needs)
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            todo.extend(get(name).needs)
    return [s for s in STAGES if s.name in names and s.recorded and s.when(cfg)]


def upstream_keys(stage: Stage, cfg: Config, run_dir: Path) -> dict[str, str | None]:
    """``{stage: its record's key}`` of :func:`upstream` (None: no finished record); kept in ``stage``'s record."""
    out = {}
    for need in upstream(stage, cfg):
        rec = records.stage_record(run_dir, need.name)
        out[need.name] = rec.get("key") if rec else None
    return out


def check_upstream(stage: Stage, cfg: Config, run_dir: Path) -> None:
    """Refuse to run ``stage`` on results not made under ``cfg``: raise :class:`RunFolderError` when a stage it
    reads (directly or not) was started and not finished (an interrupted run or ``--force``), was computed
    under other settings, or read results that have changed or gone since.

    A stage that never ran here (files put there by hand) is not checked; nor is a record from before
    records kept settings.
    """
    from medauc.data.manifest import resolve_classes

    current = upstream_keys(stage, cfg, run_dir)
    for need in upstream(stage, cfg):
        rec = records.stage_record(run_dir, need.name)
        if rec is None:
            continue
        if rec.get("unfinished"):
            raise RunFolderError(
                f"stage {need.name!r} was started in {run_dir} and has not finished (interrupted, or stopped by an "
                f"error); {stage.name} would read what an earlier run left: run `{repair(need.name, run_dir)}` to finish it first"
            )
        if "settings" in rec and rec["settings"] != settings_key(need, resolve_classes(cfg, run_dir)):
            raise RunFolderError(
                f"stage {need.name!r} in {run_dir} was computed under other settings than this command's "
                f"({describe(need)['key'].split(';')[0]}), so {stage.name} would present its results under settings "
                f"they were not made with: run `{repair(need.name, run_dir, force=True)}` to recompute it under "
                f"{run_dir / 'config.yaml'}, or give the settings the run was made with"
            )
        stale = [n for n, k in (rec.get("upstream") or {}).items() if n in current and current[n] != k]
        if stale:
            raise RunFolderError(
                f"stage {need.name!r} in {run_dir} was computed from results of stage {stale[0]!r} that have changed or "
                f"gone since; run `{repair(need.name, run_dir)}` to recompute it first"
            )


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
            how = (f"run `{repair(name, run_dir, force=True)}` to rebuild it (the file is replaced), or put the original back"
                   if changed else f"run `{repair(name, run_dir)}` to rebuild it")
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
        if main:  # an old folder's absolute paths, made relative; finished stages keep their keys
            relocate.rewrite_manifests(run_dir)
        check_needs(stage, cfg, run_dir, verified)
        if not stage.recorded:
            return _call(stage, cfg, run_dir, force, options)
        check_upstream(stage, cfg, run_dir)
        key = stage_key(stage, cfg, run_dir, options)
        read = upstream_keys(stage, cfg, run_dir)
        rec = records.stage_record(run_dir, name)
        if rec is not None and rec.get("unfinished"):
            # The same inputs as an interrupted --force run: that run's --force holds until it finishes.
            resumed = bool(rec.get("force")) and rec.get("attempt") == key and not force
            force = force or resumed
            log.warning("%s: an earlier run of it in %s did not finish; running it again%s", name, run_dir,
                        " (with the --force it was started with)" if resumed else "")
        elif rec is not None and rec.get("key") == key and rec.get("upstream", read) != read:
            log.warning("%s: the results it read have changed since it ran; recomputing it", name)
        elif rec is not None:
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
                        f"edited since; pass --force to rebuild {name} (the file is replaced: `{repair(name, run_dir, force=True)}`), "
                        "or put the original back"
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
        if main:  # until it finishes, later stages see that it started and did not finish
            records.start_stage(run_dir, name, options=command_options(options), force=force, attempt=key)
        result = _call(stage, cfg, run_dir, force, options)
        if main:
            from medauc.data.manifest import resolve_classes

            # As later stages will compare them: with data.classes=[] resolved (prepare has just found them).
            settings = settings_key(stage, resolve_classes(cfg, run_dir))
            records.mark_stage(run_dir, name, key, files=expand(stage.outputs, cfg, run_dir), settings=settings, upstream=read,
                               options=command_options(options))
        if verified is not None:
            verified.add((run_dir.resolve(), name))
        return result


def _call(stage: Stage, cfg: Config, run_dir: Path, force: bool, options: dict[str, Any]) -> Any:
    # Imported only when the stage runs: a skipped stage loads no torch, timm or MONAI.
    function = _function(stage.function)
    if "force" in inspect.signature(function).parameters:  # a stage with parts of its own passes it on
        options = {**options, "force": force}
    try:
        return function(cfg, run_dir, **options)
    finally:  # the next stage of a run starts from what is held, not from the largest heap this one needed
        allocator.release()


def _skipped(stage: Stage, run_dir: Path, verified: set[tuple[Path, str]] | None) -> Any:
    if verified is not None:
        verified.add((run_dir.resolve(), stage.name))
    if stage.result is None:
        return None
    path = run_dir / stage.result
    return fileio.read_json(path) if path.suffix == ".json" else path
