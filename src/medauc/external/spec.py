"""``evaluate.external``: ``{name: source}``, each source a folder or a phantom of another virtual hospital.

A source is a folder-per-class image set that ``prepare`` could read (PNG/JPEG/TIFF, DICOM, NIfTI;
read with the run's ``data.*`` settings), or ``phantom:<site>[:<images>]``: the built-in phantom with
the run's ``phantom.*`` settings, ``phantom.site=<site>`` (:mod:`medauc.data.phantom.sites`), ``<images>``
images (default: as many as the internal test set holds, ``phantom.n x data.test_fraction``, in the
Kaggle class proportions) and its own seed (:func:`external_seed`), so its virtual patients are other
people than the training phantom's; they are named ``<name>-sub-<n>`` in its manifest. It is cached
like the main phantom. Everything here is checked before any compute (:func:`check`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from medauc.config import Config, replace
from medauc.errors import ConfigError, DataError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
# Names the run's own files use for other sets (predictions/<model>/<seed>/<name>.csv) or that would mislead.
RESERVED = ("train", "val", "test", "internal", "generated", "restored_test")
PHANTOM = "phantom:"
SITES = ("", "a", "b", "c")  # "a" = "": the phantom's own hospital (medauc.data.phantom.sites.SITES; not imported here)


@dataclass(frozen=True)
class ExternalSet:
    """One configured external set: ``kind`` "folder" (``path``) or "phantom" (``site``, ``n`` images)."""

    name: str
    source: str
    kind: str
    path: Path | None = None
    site: str = ""
    n: int = 0


def _parse(cfg: Config, name: str, source: str) -> ExternalSet:
    if not NAME.fullmatch(name):
        raise ConfigError(f"evaluate.external: the name {name!r} must be 1-40 letters, digits, '-' or '_', starting "
                          "with a letter or digit (it names files); e.g. hospital_b")
    if name.lower() in RESERVED:
        raise ConfigError(f"evaluate.external: the name {name!r} is taken by the run's own sets "
                          f"({', '.join(RESERVED)}); choose another, e.g. {name}_ext")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"evaluate.external.{name}: give a folder path or phantom:<site>[:<images>], got {source!r}")
    if source.startswith(PHANTOM):
        parts = source[len(PHANTOM):].split(":")
        site = "" if parts[0] == "a" else parts[0]
        if parts[0] not in SITES or len(parts) > 2:
            raise ConfigError(f"evaluate.external.{name}={source!r}: write phantom:<site>[:<images>] with a site among "
                              f"{', '.join(repr(s) for s in SITES if s)} (phantom.site presets), e.g. phantom:b:300")
        default = max(4, round(cfg.phantom.n * cfg.data.test_fraction))
        try:
            n = int(parts[1]) if len(parts) == 2 else default
        except ValueError:
            raise ConfigError(f"evaluate.external.{name}={source!r}: the number of images {parts[1]!r} is not an integer") from None
        if n < 4:
            raise ConfigError(f"evaluate.external.{name}={source!r}: at least 4 images (one per class), got {n}")
        return ExternalSet(name, source, "phantom", site=site, n=n)
    return ExternalSet(name, source, "folder", path=Path(source).expanduser())


def external_sets(cfg: Config) -> list[ExternalSet]:
    """The configured sets, in config order; ConfigError naming a bad name, a name clash or a bad phantom spec."""
    out = [_parse(cfg, name, source) for name, source in cfg.evaluate.external.items()]
    seen: dict[str, str] = {}
    for s in out:
        if s.name.lower() in seen:
            raise ConfigError(f"evaluate.external: the names {seen[s.name.lower()]!r} and {s.name!r} differ only in case "
                              "(they would share files on some file systems); rename one")
        seen[s.name.lower()] = s.name
    return out


def check(cfg: Config, data: str | None = None) -> None:
    """Before any compute: every set's source exists, is not the training data, and no two names share one."""
    training = data or (cfg.data.path if cfg.data.source == "folder" else "")
    by_source: dict[str, str] = {}
    for s in external_sets(cfg):
        if s.kind == "folder":
            path = s.path or Path(s.source)
            if not path.is_dir():
                why = "is a file, not a folder" if path.exists() else "does not exist"
                raise DataError(f"evaluate.external.{s.name}={s.source} {why}; give a folder with one sub-folder per class "
                                "(or phantom:<site>), or remove it (nothing was created)")
            key = str(path.resolve())
            if training and key == str(Path(training).expanduser().resolve()):
                raise DataError(f"evaluate.external.{s.name}={s.source} is the training data folder; an external test set "
                                "must come from elsewhere (another hospital, scanner or time)")
        else:
            key = f"{PHANTOM}{s.site}:{s.n}"  # never the training phantom: its seed is another (external_seed)
        if key in by_source:
            raise DataError(f"evaluate.external: {by_source[key]!r} and {s.name!r} name the same source ({s.source}); "
                            "keep one of them")
        by_source[key] = s.name


def external_seed(cfg: Config, site: str) -> int:
    """The seed of an external phantom: never the run's own, and one per site (other virtual patients)."""
    return cfg.seed + 1 + zlib.crc32(f"medauc-external:{site}".encode()) % 999_983


def phantom_config(cfg: Config, s: ExternalSet) -> Config:
    """The config whose phantom is external set ``s``: another site, its own size and seed, the run's other settings.

    Only the run's classes (``data.classes``; all four when it is ``[]``), in the Kaggle proportions, ``s.n`` images.
    """
    from medauc.data.phantom.design import CLASSES, KAGGLE_COUNTS

    keep = [c for c in CLASSES if not cfg.data.classes or c in cfg.data.classes]
    if len(keep) < 2:
        raise ConfigError(f"evaluate.external.{s.name}={s.source}: the phantom's classes ({', '.join(CLASSES)}) share fewer "
                          f"than two with data.classes ({', '.join(cfg.data.classes)}); use a folder of this run's classes, "
                          "or evaluate.external={}")
    total = sum(KAGGLE_COUNTS[c] for c in keep)
    counts = {c: int(s.n * KAGGLE_COUNTS[c] // total) if c in keep else 0 for c in CLASSES}
    for c in sorted(keep, key=lambda c: -(s.n * KAGGLE_COUNTS[c] % total))[: s.n - sum(counts.values())]:
        counts[c] += 1  # largest remainders, as design.class_counts
    return replace(cfg, **{"phantom.site": s.site, "phantom.n": s.n, "phantom.counts": counts, "seed": external_seed(cfg, s.site)})
