"""Typed configuration: frozen dataclasses, a YAML file over them, ``key=value`` overrides over that.

Resolution order (later wins): dataclass defaults -> ``configs/<name>.yaml`` (or a path) ->
command-line overrides such as ``data.image_size=96`` or ``train.seeds=[0,1,2]``.
An unknown key or a value of the wrong type raises :class:`ConfigError` naming the valid keys
or the expected type. Lists and mappings are held as tuples and read-only mappings
(:mod:`medauc.config_types`); :func:`to_dict` gives them back as plain lists and dicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medauc.config_types import Frozen, build, to_plain
from medauc.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _kaggle_aliases() -> dict[str, str]:
    # Folder names seen in public brain-tumour MRI sets, mapped to medauc's class names.
    return {
        "notumor": "healthy",
        "no_tumor": "healthy",
        "no-tumor": "healthy",
        "no tumor": "healthy",
        "normal": "healthy",
        "glioma_tumor": "glioma",
        "meningioma_tumor": "meningioma",
        "pituitary_tumor": "pituitary",
    }


@dataclass(frozen=True)
class DataConfig(Frozen):
    """Where the images come from and how they are split."""

    source: str = "phantom"  # "phantom" (built-in synthetic MRI) or "folder"
    path: str = ""  # folder-per-class root when source == "folder"
    classes: tuple[str, ...] = ("healthy", "glioma", "meningioma", "pituitary")  # class names, in the order of the prob_ columns; [] = the folders found
    aliases: Mapping[str, str] = field(default_factory=_kaggle_aliases)  # folder name -> class name (case-insensitive), e.g. notumor -> healthy
    negative_class: str = "healthy"  # screening view: every other class is "positive"
    split: str = "random"  # "random" (stratified, seeded) or "given" (Training/ and Testing/ folders)
    group_pattern: str = ""  # regular expression with one capture group naming each image's patient, searched in its path relative to data.path, e.g. '(sub-\d+)'; "" = none
    groups_csv: str = ""  # CSV with columns path (relative to data.path) and group (patient id), instead of group_pattern; "" = none
    test_fraction: float = 0.30  # share of each class held out for test (stratified)
    val_fraction: float = 0.10  # share of the remaining train carved out for validation (model selection)
    image_size: int = 224  # classifier input size (square), images are cached at this size
    near_duplicate_hamming: int = 6  # perceptual-hash distance (of 64 bits) that counts as near-duplicate
    near_duplicates: str = "report"  # patients known: a near-duplicate of another patient's image is "report"ed (data_audit.json, a warning) or "merge"s the two patients into one split; exact copies always join; no patient ids: near-duplicates always stay together
    shortcut_audit: bool = True  # train a metadata-only classifier to detect acquisition shortcuts
    workers: int = 2  # processes used to read and hash images
    dicom_frames: str = "first"  # multi-frame DICOM files: "first" frame only, or "all" (each frame an image)
    window: str | tuple[float, ...] = "dicom"  # DICOM/NIfTI values to grey levels: "dicom" (the file's window: Window Center/Width, NIfTI cal_min/cal_max; else percentile), "percentile" (0.5-99.5%), or [low, high]
    volume_axis: int = 2  # NIfTI slicing axis after reorientation to RAS+: 0 sagittal, 1 coronal, 2 axial
    slices: str = "all"  # NIfTI slices taken: "all", "middle:K" (the K central ones) or "mask" (those whose segmentation has tissue)
    mask_pattern: str = "_seg.nii.gz"  # file-name ending of NIfTI segmentations: the lesion masks of the volumes next to them; "" = none


@dataclass(frozen=True)
class PhantomConfig(Frozen):
    """The built-in synthetic brain-MRI data set (used when data.source == "phantom")."""

    n: int = 2000  # number of images
    size: int = 256  # image side in px
    # Per-class counts; empty = the Kaggle rm1000 proportions (2000/1621/1645/1757) scaled to n.
    counts: Mapping[str, int] = field(default_factory=dict)  # per-class counts; {} = Kaggle proportions scaled to n
    planes: tuple[str, ...] = ("axial", "coronal", "sagittal")  # slice orientations drawn
    slices_per_subject: tuple[int, ...] = (4, 8)  # [fewest, most] nearby slices per virtual subject (uniform; a class's last subject takes the rest); [1, 1] = one image per subject
    subtle_fraction: float = 0.15  # share of tumours that are small and low-contrast
    lesion_contrast: float = 1.0  # scales each tumour's intensity difference from white matter (1 = as drawn)
    confound: str = ""  # "", "aspect" or "intensity": a deliberate healthy-class shortcut, for teaching
    anatomy: str = "auto"  # "auto" (Colin27 if installed, else MNI152), "colin27", "mni152"
    site: str = ""  # the virtual hospital: "" (the default), "b" (older 1.5 T scanner, older population) or "c" (3 T, younger); scanner and population only, same anatomy and class balance
    workers: int = 2  # processes used to generate


@dataclass(frozen=True)
class ModelConfig(Frozen):
    """Which classifiers, by timm name, and where their weights come from."""

    names: tuple[str, ...] = ("resnet18", "densenet121", "efficientnet_b0", "vit_base_patch16_224")  # timm model names; each is trained and compared
    pretrained: bool = False  # timm's own download (needs the internet)
    weights: str = ""  # local weights: a file (one model) or a folder of <model name>.safetensors/.pth
    in_chans: int = 1  # 1 = grayscale stem; 3 = replicate the channel for a pretrained RGB stem
    drop_rate: float = 0.0  # dropout before the classifier head


@dataclass(frozen=True)
class TrainConfig(Frozen):
    """The study's protocol, every part configurable."""

    epochs: int = 10  # at most this many epochs
    epochs_by_model: Mapping[str, int] = field(default_factory=dict)  # {timm name: epochs} for models that need another count than train.epochs
    lr_by_model: Mapping[str, float] = field(default_factory=dict)  # {timm name: learning rate} for models that need another train.lr
    batch_size: int = 32  # images per step (total over all processes under torchrun)
    lr: float = 1e-4  # learning rate (the peak under schedule onecycle)
    weight_decay: float = 1e-4  # weight decay (Adam: L2 in the gradient; AdamW: decoupled)
    eps: float = 1e-8  # Adam epsilon
    plateau_factor: float = 0.1  # ReduceLROnPlateau factor on the monitored loss
    plateau_patience: int = 3  # ReduceLROnPlateau patience, epochs
    early_stopping_patience: int = 2  # stop after this many epochs without a lower monitored loss
    monitor: str = "val"  # "val" (default) or "test" (the study's leaky protocol, warned)
    hflip: bool = True  # random horizontal flip (brain MRI is roughly left-right symmetric)
    imbalance: str = "none"  # "none", "weighted_loss", "balanced_sampler"
    seeds: tuple[int, ...] = (0,)  # each model is trained once per seed
    amp: bool = True  # mixed-precision autocast on CUDA (CPU training stays float32)
    amp_dtype: str = "auto"  # "auto" (bf16 where the GPU supports it, else fp16 with loss scaling), "bf16", "fp16"
    channels_last: bool = True  # channels-last memory format (faster for CNNs on CPU and GPU)
    num_threads: int = 0  # 0 = all cores
    jobs: int = 1  # trainings at once on a CPU, one process each (classify/parallel.py); 1 = one after the other
    device: str = "auto"  # "auto", "cpu", "cuda"
    max_train_images: int = 0  # 0 = all; a cap for quick runs
    zero_head: bool = False  # new classifier heads start at 0 (loss ln C); timm's EfficientNet head starts at ~4.5 for 4 classes
    affine: float = 0.0  # random rotation/scale/shift in training, strength 0..1 (1: +/-15 deg, +/-15%, +/-10%); 0 = off, as in the study
    optimizer: str = "adam"  # "adam" (the study's: L2 penalty in the gradient) or "adamw" (decoupled weight decay)
    schedule: str = "plateau"  # "plateau" (the study's ReduceLROnPlateau on the monitored loss) or "onecycle" (per step: warm-up, then cosine decay)
    warmup: float = 0.25  # schedule 'onecycle': share of all steps spent rising to train.lr
    label_smoothing: float = 0.0  # training loss only (the monitored loss stays plain cross-entropy); 0 = off, as in the study
    sync_bn: bool = True  # under torchrun, BatchNorm uses the statistics of the whole global batch (timm's --sync-bn), as one process does; no effect in one process


@dataclass(frozen=True)
class AugmentConfig(Frozen):
    """Restoration-based augmentation of the negative (healthy) class."""

    enabled: bool = True  # train the classifiers of Table 1 on the augmented set
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)  # Gaussian noise levels on [0, 1] images
    target: str = "multiple"  # "multiple", "count" or "share"
    multiple: float = 6.0  # healthy train images become this many times the original (study: 6x)
    count: int = 0  # target 'count': healthy training images after augmentation
    share: float = 0.0  # target 'share': healthy share of the training set after augmentation
    image_size: int = 0  # denoiser and generated-image size in px; 0 = data.image_size (another size makes generated images differ from real ones in resampling, a shortcut: warned)
    channels: tuple[int, ...] = (16, 32, 64, 128)  # U-Net channels per level
    epochs: int = 20  # denoiser training epochs
    batch_size: int = 16  # denoiser batch size
    lr: float = 1e-3  # denoiser Adam learning rate
    loss: str = "l1"  # "l1" or "mse"
    loss_on_noise: bool = True  # divide each image's loss by its sigma (squared for mse): low noise levels weigh as much as high
    noise_level_input: bool = True  # give the U-Net each image's sigma as a second input channel (FFDNet); false = blind
    noise_scaled_output: bool = True  # U-Net estimates unit noise, restored = noisy - sigma * estimate: a clean input passes unchanged
    train_noise: str = "uniform"  # training sigma: "uniform" on [0, max(sigmas)] (clean included) or "listed" (only the sigmas)
    lr_schedule: str = "cosine"  # denoiser learning rate: "cosine" (decays to 0 over training) or "constant"
    num_res_units: int = 0  # residual units per U-Net level (MONAI UNet)
    patch_size: int = 0  # train the denoiser on random crops of this many px (0 = whole images)
    strategies: tuple[str, ...] = (  # imbalance strategies compared in Table 2
        "balanced", "restoration", "duplicate", "classic", "weighted_loss")
    strategy_model: str = "efficientnet_b0"  # the timm model trained under each strategy
    near_copy_threshold: float = 0.98  # SSIM to the source above which a generated image is a near-copy
    num_threads: int = 1  # CPU threads for the denoiser (0 = torch default); its small convolutions run fastest on one


@dataclass(frozen=True)
class EvaluateConfig(Frozen):
    """Statistics: intervals, tests and prevalence."""

    n_bootstrap: int = 2000  # stratified bootstrap resamples for every CI
    level: float = 0.95  # confidence level of intervals and tests
    prevalences: tuple[float, ...] = (1e-4, 1e-2)  # clinical prevalences for PPV/NPV (the study planned 1 in 10,000)
    target_sensitivity: float = 0.99  # operating point: chosen on validation for at least this sensitivity
    threshold_rule: str = "sensitivity"  # how the screening operating threshold is chosen on validation: "sensitivity" (at target_sensitivity) or "youden" (max sensitivity + specificity - 1); carried unchanged to test
    decision_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)  # threshold probabilities at which the decision-curve table gives net benefit with CIs
    calibration_bins: int = 15  # equal-mass bins for ECE and reliability curves
    renormalise: bool = True  # probabilities that do not sum to 1: renormalise with a warning (else refuse)
    primary_metric: str = "auc_macro"  # the pre-specified primary analysis, its pairs one Holm family (questions 1 and 3): "auc_macro" or "screening_auc"
    power: float = 0.8  # power at which each paired comparison's smallest detectable difference is reported
    external: Mapping[str, str] = field(default_factory=dict)  # external test sets {name: folder-per-class path (PNG/JPEG, DICOM, NIfTI), or "phantom:<site>[:<images>]", a phantom of another virtual hospital}; every trained model predicts them, thresholds and all carried from validation; {} = none


@dataclass(frozen=True)
class ExplainConfig(Frozen):
    """Grad-CAM and its localisation scores."""

    methods: tuple[str, ...] = ("gradcam",)  # gradcam, gradcampp, scorecam
    per_class: int = 4  # panels per class (correct and misclassified cases)
    max_images: int = 400  # test images scored per model
    batch_size: int = 16  # images per CAM batch
    sanity_check: bool = True  # compare with a randomised-weights twin (Adebayo et al. 2018)
    target_layer: str = ""  # dotted module name to explain; "" = deepest usable feature_info layer
    min_grid: int = 2  # skip layers whose map is smaller than this many cells a side (1x1 says nothing)
    pointing_tolerance: float = 0.067  # pointing-game hit radius around the mask, share of the image side (15 px of 224)


@dataclass(frozen=True)
class ReportConfig(Frozen):
    """The report's title and the files it is written as."""

    title: str = "medauc report"  # report title
    formats: tuple[str, ...] = ("html", "md", "json")  # html, md, json


@dataclass(frozen=True)
class Config:
    name: str = "default"  # run name; default run folder runs/<name>-<time>
    seed: int = 0  # one seed for data split, phantom, augmentation and bootstrap
    data: DataConfig = field(default_factory=DataConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# ----------------------------------------------------------------------------- building and loading


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k not in ("aliases", "counts", "external"):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (or one section): lists and dicts, as YAML and JSON write them."""
    return to_plain(cfg)


def from_dict(values: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from a (possibly partial) nested dict."""
    return build(Config, values, "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.seeds=[0,1]"`` -> (["train", "seeds"], [0, 1]). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. data.image_size=96)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; write section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def resolve_config_path(name_or_path: str) -> Path:
    """A config name (``demo``) from ``configs/``, or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"no config named {name_or_path!r}; built-in configs: {', '.join(names)}, or give a path to a .yaml file")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The YAML of ``path``; a syntax error or a duplicate key is one line naming the file and line."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML at {where}{exc.problem or exc.context}; fix that line") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc


def load_config(name_or_path: str | None = "demo", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides; types, ranges and choices validated."""
    values: dict[str, Any] = {}
    if name_or_path:
        path = resolve_config_path(name_or_path)
        loaded = _read_yaml(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        values = loaded
        values.setdefault("name", path.stem)
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    _renamed(values)
    merged = _deep_merge(to_dict(Config()), values)
    from medauc.validate import check_ranges  # here: validate imports this module

    cfg = from_dict(merged)
    check_ranges(cfg)
    return resolve(cfg)


# Keys renamed since a run folder's config.yaml may have been written: old name -> new name (same values).
RENAMED = {("evaluate", "question_auc"): "primary_metric"}


def _renamed(values: dict[str, Any]) -> None:
    """Read a renamed key under its new name (in place), so older config.yaml files still load."""
    for (section, old), new in RENAMED.items():
        node = values.get(section)
        if isinstance(node, dict) and old in node:
            if new in node and node[new] != node[old]:
                raise ConfigError(f"{section}.{old} is the old name of {section}.{new}, and they differ "
                                  f"({node[old]!r} vs {node[new]!r}); keep only {section}.{new}")
            node[new] = node.pop(old)


def resolve(cfg: Config) -> Config:
    """Fill the keys whose value defaults to another key's: ``augment.image_size=0`` -> ``data.image_size``.

    :func:`load_config` calls it, so stages and the run folder's config.yaml see the resolved size.
    """
    if cfg.augment.image_size == 0:
        cfg = replace(cfg, **{"augment.image_size": cfg.data.image_size})
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def without_later_defaults(section: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``to_dict(section)`` without the fields in ``names`` that hold their default: fields added
    after a stage's key was first defined, so that runs made before them keep their keys."""
    values, defaults = to_dict(section), to_dict(type(section)())
    return {k: v for k, v in values.items() if not (k in names and v == defaults[k])}


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (dataclasses or plain values), for stage caching."""
    def plain(x: Any) -> Any:
        return to_dict(x) if dataclasses.is_dataclass(x) else x

    def unknown(x: Any) -> Any:  # a read-only mapping hashes as the dict it holds; anything else as before
        return dict(x) if isinstance(x, Mapping) else str(x)

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=unknown)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that also accepts dotted section names: replace(cfg, **{"train.epochs": 2})."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if "." in key:
            section, sub = key.split(".", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            flat[key] = value
    for section, sub in nested.items():
        flat[section] = replace(getattr(cfg, section), **sub)
    d = _deep_merge(to_dict(cfg), {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in flat.items()})
    return build(type(cfg), d, "")
