"""Up-front checks of every configuration value, run before the first stage starts.

Types and unknown keys are checked when the config is built (:mod:`medauc.config`); this module
checks ranges and choices (:func:`check_ranges`, no heavy imports) and the timm model names
(:func:`check_models`, imports only timm's registry). Each error is a :class:`ConfigError` that
names the key, the value received and what is allowed, e.g. ``train.batch_size=0: must be >= 1``.
The stages keep their own checks for callers that bypass the CLI; the choices below mirror them
(``tests/test_validate.py`` keeps the two in step).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from medauc.config_types import to_plain
from medauc.errors import ConfigError

if TYPE_CHECKING:  # medauc.config.load_config imports this module
    from medauc.config import Config

# The allowed strings of every choice-valued key. Stage modules check the same sets late.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": ("phantom", "folder"),
    "data.split": ("random", "given"),
    "data.near_duplicates": ("report", "merge"),
    "data.dicom_frames": ("first", "all"),
    "data.volume_axis": (0, 1, 2),  # type: ignore[dict-item]
    "phantom.confound": ("", "aspect", "intensity"),
    "phantom.anatomy": ("auto", "colin27", "mni152"),
    "phantom.site": ("", "b", "c"),  # medauc.data.phantom.sites.SITES (not imported here: config loads light)
    "phantom.planes": ("axial", "coronal", "sagittal"),
    "model.in_chans": (1, 3),  # type: ignore[dict-item]
    "train.monitor": ("val", "test"),
    "train.imbalance": ("none", "weighted_loss", "balanced_sampler"),
    "train.amp_dtype": ("auto", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.optimizer": ("adam", "adamw"),
    "train.schedule": ("plateau", "onecycle"),
    "augment.target": ("multiple", "count", "share"),
    "augment.loss": ("l1", "mse"),
    "augment.train_noise": ("uniform", "listed"),
    "augment.lr_schedule": ("cosine", "constant"),
    "augment.strategies": ("balanced", "restoration", "duplicate", "classic", "weighted_loss"),
    "evaluate.primary_metric": ("auc_macro", "screening_auc"),
    "evaluate.threshold_rule": ("sensitivity", "youden"),
    "explain.methods": ("gradcam", "gradcampp", "scorecam"),
    "report.formats": ("html", "md", "json"),
}
PHANTOM_CLASSES = ("healthy", "glioma", "meningioma", "pituitary")

# Images are held decoded in memory (N x S x S bytes, float copies for the denoiser) and networks run on
# S x S inputs: at 2048 px a 7000-image set alone takes 29 GB, and training runs out of memory. 1024 is
# four times the largest input the study's models were made for (224 px, ViTs 384).
MAX_IMAGE_SIZE = 1024

Check = Callable[[Any], str | None]  # value -> None when fine, else what is allowed


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low:g}"


def between(low: float, high: float, low_open: bool = True, high_open: bool = True) -> Check:
    """low < v < high by default; ``*_open=False`` includes that end."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")

    def check(v: float) -> str | None:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        return None if ok and math.isfinite(v) else f"must lie in {lo}{low:g}, {high:g}{hi}"

    return check


def one_of(key: str) -> Check:
    allowed = CHOICES[key]
    return lambda v: None if v in allowed else "must be one of " + ", ".join(repr(a) for a in allowed)


def each(check: Check, non_empty: bool = True, unique: bool = False) -> Check:
    def run(values: Sequence[Any]) -> str | None:
        if non_empty and not values:
            return "must not be empty"
        if unique and len(set(values)) != len(values):
            return "must not repeat a value"
        for v in values:
            why = check(v)
            if why:
                return f"{v!r} {why}"
        return None

    return run


def member(key: str) -> Check:
    allowed = CHOICES[key]
    return lambda v: None if v in allowed else "is not one of " + ", ".join(repr(a) for a in allowed)


def non_empty(v: str) -> str | None:
    return None if str(v).strip() else "must not be empty"


def regex_one_group(v: str) -> str | None:
    """"" (unset) or a regular expression with exactly one capture group."""
    from medauc.data.subjects import pattern_problem

    return pattern_problem(v) if v else None


def int_range(low: int) -> Check:
    """A list [lo, hi] of two integers with low <= lo <= hi."""

    def check(v: Sequence[Any]) -> str | None:
        if len(v) != 2 or v[0] < low or v[0] > v[1]:
            return f"must be [lo, hi] with {low} <= lo <= hi, e.g. [4, 8]"
        return None

    return check


def window_choice(v: str | list[float]) -> str | None:
    """'dicom', 'percentile' or [low, high] with low < high."""
    from medauc.data.medical import window_problem

    return window_problem(v)


def slices_choice(v: str) -> str | None:
    """'all', 'mask' or 'middle:K' with K >= 1."""
    from medauc.data.medical import slices_problem

    return slices_problem(v)


# key -> check, for keys whose check does not depend on other keys.
RULES: dict[str, Check] = {
    "name": non_empty,
    "seed": at_least(0),
    "data.source": one_of("data.source"),
    "data.classes": each(non_empty, non_empty=False, unique=True),
    "data.negative_class": non_empty,
    "data.split": one_of("data.split"),
    "data.group_pattern": regex_one_group,
    "data.test_fraction": between(0, 1),
    "data.val_fraction": between(0, 1),
    "data.image_size": between(8, MAX_IMAGE_SIZE, low_open=False, high_open=False),
    "data.near_duplicate_hamming": between(0, 64, low_open=False, high_open=False),
    "data.near_duplicates": one_of("data.near_duplicates"),
    "data.workers": at_least(1),
    "data.dicom_frames": one_of("data.dicom_frames"),
    "data.window": window_choice,
    "data.volume_axis": one_of("data.volume_axis"),
    "data.slices": slices_choice,
    "phantom.n": at_least(len(PHANTOM_CLASSES)),
    "phantom.size": between(32, MAX_IMAGE_SIZE, low_open=False, high_open=False),
    "phantom.planes": each(member("phantom.planes"), unique=True),
    "phantom.slices_per_subject": int_range(1),
    "phantom.subtle_fraction": between(0, 1, low_open=False, high_open=False),
    "phantom.lesion_contrast": between(0, 4, high_open=False),
    "phantom.confound": one_of("phantom.confound"),
    "phantom.anatomy": one_of("phantom.anatomy"),
    "phantom.site": one_of("phantom.site"),
    "phantom.workers": at_least(1),
    "model.names": each(non_empty, unique=True),
    "model.in_chans": one_of("model.in_chans"),
    "model.drop_rate": between(0, 1, low_open=False),
    "train.epochs": at_least(1),
    "train.batch_size": at_least(1),
    "train.lr": between(0, math.inf),
    "train.weight_decay": at_least(0),
    "train.eps": between(0, math.inf),
    "train.plateau_factor": between(0, 1),
    "train.plateau_patience": at_least(0),
    "train.early_stopping_patience": at_least(1),
    "train.monitor": one_of("train.monitor"),
    "train.imbalance": one_of("train.imbalance"),
    "train.seeds": each(at_least(0), unique=True),
    "train.amp_dtype": one_of("train.amp_dtype"),
    "train.num_threads": at_least(0),
    "train.jobs": at_least(1),
    "train.device": one_of("train.device"),
    "train.max_train_images": at_least(0),
    "train.affine": between(0, 1, low_open=False, high_open=False),
    "train.optimizer": one_of("train.optimizer"),
    "train.schedule": one_of("train.schedule"),
    "train.warmup": between(0, 1),
    "train.label_smoothing": between(0, 1, low_open=False),
    "augment.sigmas": each(between(0, 1, low_open=False, high_open=False)),
    "augment.target": one_of("augment.target"),
    "augment.image_size": lambda v: None if v == 0 or 8 <= v <= MAX_IMAGE_SIZE else f"must be 0 (= data.image_size) or in [8, {MAX_IMAGE_SIZE}]",
    "augment.channels": each(at_least(1)),
    "augment.epochs": at_least(1),
    "augment.batch_size": at_least(1),
    "augment.lr": between(0, math.inf),
    "augment.loss": one_of("augment.loss"),
    "augment.train_noise": one_of("augment.train_noise"),
    "augment.lr_schedule": one_of("augment.lr_schedule"),
    "augment.num_res_units": at_least(0),
    "augment.patch_size": at_least(0),
    "augment.strategies": each(member("augment.strategies"), non_empty=False, unique=True),
    "augment.near_copy_threshold": between(0, 1, high_open=False),
    "augment.num_threads": at_least(0),
    "evaluate.n_bootstrap": at_least(1),
    "evaluate.level": between(0, 1),
    "evaluate.prevalences": each(between(0, 1), non_empty=False),
    "evaluate.target_sensitivity": between(0, 1, high_open=False),
    "evaluate.threshold_rule": one_of("evaluate.threshold_rule"),
    "evaluate.decision_thresholds": each(between(0, 1), unique=True),
    "evaluate.calibration_bins": at_least(1),
    "evaluate.primary_metric": one_of("evaluate.primary_metric"),
    "evaluate.power": between(0, 1),
    "explain.methods": each(member("explain.methods"), unique=True),
    "explain.per_class": at_least(0),
    "explain.max_images": at_least(1),
    "explain.batch_size": at_least(1),
    "explain.min_grid": at_least(1),
    "explain.pointing_tolerance": between(0, 1, low_open=False),
    "report.formats": each(member("report.formats"), non_empty=False, unique=True),
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("aliases", "counts", "epochs_by_model", "lr_by_model"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fail(key: str, value: Any, why: str) -> ConfigError:
    value = to_plain(value)  # a config's tuples and read-only mappings are shown as the lists and dicts given
    shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    if isinstance(value, list):
        shown = "[" + ",".join(str(v) for v in value) + "]"
    return ConfigError(f"{key}={shown}: {why}")


def _check_by_model(cfg: Config, name: str, ok: Any, what: str) -> None:
    """``train.<name>`` (a per-model table): every value ``ok``, every model in model.names."""
    table = getattr(cfg.train, name)
    bad = {k: v for k, v in table.items() if not ok(v)}
    if bad:
        raise _fail(f"train.{name}", table, f"{what}; got {bad}")
    stray = sorted(set(table) - set(cfg.model.names))
    if stray:
        raise _fail(f"train.{name}", table,
                    f"{stray[0]!r} is not in model.names ({', '.join(cfg.model.names)}); name a configured model or remove it")


def check_ranges(cfg: Config) -> None:
    """Every value in its range and every choice among the allowed strings; ConfigError on the first bad one.

    Cheap (no torch): called by :func:`medauc.config.load_config`.
    """
    values = _flat(to_plain(cfg))
    for key, check in RULES.items():
        why = check(values[key])
        if why:
            raise _fail(key, values[key], why)
    d, p, a = cfg.data, cfg.phantom, cfg.augment
    if d.classes and d.negative_class not in d.classes:
        raise _fail("data.negative_class", d.negative_class, f"must be one of data.classes ({', '.join(d.classes)})")
    if len(d.classes) == 1:
        raise _fail("data.classes", d.classes, "a classifier needs at least 2 classes ([] = the folders found)")
    if d.group_pattern and d.groups_csv:
        raise _fail("data.groups_csv", d.groups_csv, f"name the patients one way: data.group_pattern={d.group_pattern!r} is set too; set one of them to ''")
    unknown = sorted(set(p.counts) - set(PHANTOM_CLASSES))
    if unknown:
        raise _fail("phantom.counts", p.counts, f"unknown class {unknown[0]!r}; classes are {', '.join(PHANTOM_CLASSES)}")
    negative = {k: v for k, v in p.counts.items() if v < 0}
    if negative:
        raise _fail("phantom.counts", p.counts, "counts must be >= 0")
    if p.counts and sum(p.counts.values()) < 1:
        raise _fail("phantom.counts", p.counts, "must hold at least one image")
    _check_by_model(cfg, "epochs_by_model", lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= 1,
                    "epochs must be integers >= 1")
    _check_by_model(cfg, "lr_by_model", lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0,
                    "learning rates must be numbers > 0")
    if len(a.channels) < 2:
        raise _fail("augment.channels", a.channels, "the U-Net needs at least two levels, e.g. [16, 32, 64]")
    div = 2 ** (len(a.channels) - 1)
    size = a.image_size or d.image_size  # 0 = data.image_size
    if size % div and (a.enabled or a.image_size):
        given = "" if a.image_size else f" (augment.image_size=0 takes data.image_size={d.image_size}; set augment.image_size)"
        raise _fail("augment.image_size", size, f"must be divisible by {div} (2**(levels-1) of augment.channels), e.g. {div * 8}{given}")
    if a.patch_size and a.patch_size < size and a.patch_size % div:
        raise _fail("augment.patch_size", a.patch_size, f"must be divisible by {div}, e.g. {div * 4} (0 = whole images)")
    if a.target == "multiple" and a.multiple < 1:
        raise _fail("augment.multiple", a.multiple, "must be >= 1 (1 = no augmentation; the study used 6)")
    if a.target == "count" and a.count < 1:
        raise _fail("augment.count", a.count, "must be >= 1 with augment.target=count: the healthy training count to reach, e.g. 8400")
    if a.target == "share" and not 0 < a.share < 1:
        raise _fail("augment.share", a.share, "must lie in (0, 1) with augment.target=share, e.g. 0.7")


TIMM_NAMES = Path(__file__).with_name("timm_models.txt")


def timm_model_names() -> list[str] | None:
    """``timm.list_models()`` of the installed timm, read from ``timm_models.txt`` without importing
    timm (and torch: ~5 s); None when the file was made for another timm version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("timm")
    except PackageNotFoundError:
        return None
    lines = TIMM_NAMES.read_text(encoding="utf-8").splitlines() if TIMM_NAMES.is_file() else []
    if not lines or not lines[0].startswith(f"# timm {installed}:"):
        return None
    return [n for n in lines[1:] if n]


def check_models(cfg: Config) -> None:
    """``model.names`` and (when strategies run) ``augment.strategy_model`` are timm models.

    Reads the shipped list of the pinned timm's names (under a second); another timm version
    imports timm's registry instead (torch included, a few seconds). ConfigError suggests similar names.
    """
    keys = [(f"model.names[{i}]", n) for i, n in enumerate(cfg.model.names)]
    if cfg.augment.enabled and cfg.augment.strategies:
        keys.append(("augment.strategy_model", cfg.augment.strategy_model))
    names = timm_model_names()
    if names is None:
        import timm

        names = timm.list_models()
    known = set(names)
    for key, name in keys:
        # "resnet18.a1_in1k": the architecture before the pretrained tag must be known
        if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or name.split(".", 1)[0] in known:
            continue
        close = difflib.get_close_matches(name, names, n=6, cutoff=0.6)
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ConfigError(f"{key}={name!r}: not a timm model{hint} (all: timm.list_models())")


def validate(cfg: Config, models: bool = True) -> Config:
    """Ranges, choices and (``models``) the timm names; returns ``cfg`` unchanged."""
    check_ranges(cfg)
    if models:
        check_models(cfg)
    return cfg
