"""Write the phantom: class folders of PNG slices, parallel lesion masks, montages, phantom.json.

Every image is drawn from its own generator seeded by ``(seed, index)``, so the output is the
same byte for byte whatever the number of worker processes.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from medauc.progress import progress_bar

from medauc import __version__ as medauc_version
from medauc.config import Config, PhantomConfig, config_hash, to_dict
from medauc.data.phantom.anatomy import Anatomy, cache_root as default_cache_root, load_anatomy, resolve_source
from medauc.data.phantom.augment import PLANES, SliceGeometry, photometric, sample, slice_geometry
from medauc.data.phantom.lesions import Lesion, draw_lesion, mass_effect, pituitary_lesion, place_lesion, sella_cut
from medauc.errors import DataError
from medauc.runs import write_bytes, write_csv, write_json

log = logging.getLogger(__name__)

PHANTOM_VERSION = "1"  # bump whenever a change alters the generated images
CLASSES = ("healthy", "glioma", "meningioma", "pituitary")
KAGGLE_COUNTS = {"healthy": 2000, "glioma": 1621, "meningioma": 1645, "pituitary": 1757}
SELLA_SLICE_SHARE = 0.4  # non-pituitary images cut through the sella too, like pituitary ones
# Pituitary tumours are seen mainly in sagittal and coronal cuts; every class gets the same plane
# mix so that the plane is no class cue.
PLANE_WEIGHT = {"sagittal": 0.4, "coronal": 0.4, "axial": 0.2}
MIN_LESION_PX = 4


def class_counts(pcfg: PhantomConfig) -> dict[str, int]:
    """Images per class: ``pcfg.counts`` or the Kaggle proportions scaled to ``pcfg.n`` (largest remainder)."""
    if pcfg.counts:
        unknown = sorted(set(pcfg.counts) - set(CLASSES))
        if unknown:
            raise DataError(f"phantom.counts has unknown class {unknown[0]!r}; classes are {', '.join(CLASSES)}")
        bad = {k: v for k, v in pcfg.counts.items() if v < 0}
        if bad:
            raise DataError(f"phantom.counts must be >= 0; got {bad}")
        return {c: int(pcfg.counts.get(c, 0)) for c in CLASSES}
    if pcfg.n < len(CLASSES):
        raise DataError(f"phantom.n={pcfg.n} is too small; give at least {len(CLASSES)} (one image per class)")
    total = sum(KAGGLE_COUNTS.values())
    exact = {c: pcfg.n * KAGGLE_COUNTS[c] / total for c in CLASSES}
    counts = {c: int(np.floor(v)) for c, v in exact.items()}
    for c in sorted(CLASSES, key=lambda c: (counts[c] - exact[c], CLASSES.index(c)))[: pcfg.n - sum(counts.values())]:
        counts[c] += 1
    return counts


def _validate(pcfg: PhantomConfig) -> None:
    if pcfg.size < 32:
        raise DataError(f"phantom.size={pcfg.size} is too small; use at least 32 (pixels)")
    bad = [p for p in pcfg.planes if p not in PLANES]
    if bad or not pcfg.planes:
        raise DataError(f"phantom.planes={pcfg.planes} must be a non-empty list of {', '.join(PLANES)}")
    if pcfg.confound not in ("", "aspect", "intensity"):
        raise DataError(f"phantom.confound={pcfg.confound!r} is not one of '', 'aspect', 'intensity'")
    if not 0.0 <= pcfg.subtle_fraction <= 1.0:
        raise DataError(f"phantom.subtle_fraction={pcfg.subtle_fraction} must be within [0, 1]")
    if not 0.0 < pcfg.lesion_contrast <= 4.0:
        raise DataError(f"phantom.lesion_contrast={pcfg.lesion_contrast} must be within (0, 4]; 1 draws tumours as designed")
    if pcfg.workers < 1:
        raise DataError(f"phantom.workers={pcfg.workers} must be at least 1")


def plan(pcfg: PhantomConfig) -> list[tuple[int, str, str]]:
    """(index, class, image id) for every image, in a fixed order."""
    out = []
    i = 0
    for cls in CLASSES:
        for _ in range(class_counts(pcfg)[cls]):
            out.append((i, cls, f"{cls}_{i:05d}"))
            i += 1
    return out


def _choose_plane(planes: list[str], rng: np.random.Generator) -> str:
    w = np.array([PLANE_WEIGHT[p] for p in planes])
    return str(planes[int(rng.choice(len(planes), p=w / w.sum()))])


@dataclass
class Rendered:
    """One phantom image: ``image`` uint8 (H, W), ``mask`` uint8 (H, W) 0/255 and its ``facts``.

    ``brain()`` and ``coords()`` give, for tests and inspection, the undeformed brain mask and the
    voxel coordinates behind every output pixel, flipped and cropped like the image.
    """

    image: np.ndarray
    mask: np.ndarray
    facts: dict[str, Any]
    anat: Anatomy
    geom: SliceGeometry
    flip: bool
    cols: slice

    def _view(self, a: np.ndarray) -> np.ndarray:
        a = a[..., ::-1] if self.flip else a
        return a[..., self.cols]

    def brain(self) -> np.ndarray:
        """Brain probability (H, W) in [0, 1] of the head before any mass effect."""
        return self._view(self.geom.lookup(self.anat.brain))

    def coords(self) -> np.ndarray:
        """Voxel coordinates (3, H, W) of each pixel in the anatomy volume."""
        return self._view(self.geom.coords)


def render(anat: Anatomy, cls: str, pcfg: PhantomConfig, seed: int, index: int) -> Rendered:
    """Image ``index`` of the phantom, of class ``cls``, drawn from its own generator (seed, index)."""
    rng = np.random.default_rng([seed, index, 0x9E3779B9])
    size = pcfg.size
    subtle = cls != "healthy" and rng.random() < pcfg.subtle_fraction
    # Drawn once, not per attempt: retries must not make the plane mix depend on the class.
    plane = _choose_plane(list(pcfg.planes), rng)
    for attempt in range(50):
        lesion: Lesion | None = None
        through = None
        if cls == "pituitary":
            lesion = pituitary_lesion(anat, rng, subtle)
            through = sella_cut(lesion.centre, lesion.radius, plane, rng)
        elif rng.random() < SELLA_SLICE_SHARE:
            # Same cut as a pituitary case would get, so position in the head is no class cue.
            decoy = pituitary_lesion(anat, rng, subtle=rng.random() < pcfg.subtle_fraction)
            through = sella_cut(decoy.centre, decoy.radius, plane, rng)
        geom = slice_geometry(anat, plane, size, rng, through)
        if cls in ("glioma", "meningioma"):
            lesion = place_lesion(cls, anat, geom, rng, subtle)
            if lesion is None:
                continue
        looked_up = mass_effect(anat, geom, lesion, rng) if lesion is not None else geom.coords
        # Receive-coil fall-off below the head, instead of the hard edge where the volume ends.
        image = sample(anat.t1, looked_up) * np.clip(looked_up[2] / 25.0, 0.0, 1.0)
        mask = np.zeros((size, size), dtype=bool)
        if lesion is not None:
            image, mask = draw_lesion(image, anat, geom, looked_up, lesion, rng, pcfg.lesion_contrast)
            if mask.sum() < MIN_LESION_PX:
                continue
        break
    else:
        raise DataError(f"phantom image {index} ({cls}): no usable slice in 50 attempts with planes={pcfg.planes}")
    scale = 0.72 if (pcfg.confound == "intensity" and cls == "healthy") else 1.0
    out = photometric(image, rng, intensity_scale=scale)
    flip = bool(rng.random() < 0.5)
    if flip:
        out, mask = out[:, ::-1], mask[:, ::-1]
    cols = slice(0, size)
    if pcfg.confound == "aspect" and cls == "healthy":
        keep = int(round(size * 0.8))
        cols = slice((size - keep) // 2, (size - keep) // 2 + keep)
        out, mask = out[:, cols], mask[:, cols]
    facts: dict[str, Any] = {
        "plane": plane,
        "slice_index": round(geom.slice_index, 2),
        "pixel_mm": round(geom.pixel_mm, 4),
        "flipped": flip,
        "attempts": attempt + 1,
        "subtle": subtle,
        "site": lesion.site if lesion else "",
        "radius_mm": round(lesion.radius, 2) if lesion else 0.0,
        "lesion_px": int(mask.sum()),
    }
    image_u8 = np.ascontiguousarray(out)
    mask_u8 = np.ascontiguousarray(mask.astype(np.uint8) * 255)
    return Rendered(image_u8, mask_u8, facts, anat, geom, flip, cols)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG", compress_level=2)
    return buf.getvalue()


# ----------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the process that started it ends, even by SIGKILL (no orphans left running).

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG). Elsewhere: a
    daemon thread polls the parent id once a second.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="medauc-parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _init_pool_worker(parent_pid: int, *init: Any) -> None:
    _die_with_parent(parent_pid)
    _init_worker(*init)


def _init_worker(anatomy: str, anatomy_path: str | None, out_dir: str, pcfg: dict[str, Any], seed: int) -> None:
    _WORKER.update(
        anat=load_anatomy(anatomy, anatomy_path), out=Path(out_dir), pcfg=PhantomConfig(**pcfg), seed=seed
    )


def _make(task: tuple[int, str, str]) -> dict[str, Any]:
    index, cls, image_id = task
    r = render(_WORKER["anat"], cls, _WORKER["pcfg"], _WORKER["seed"], index)
    out: Path = _WORKER["out"]
    write_bytes(out / cls / f"{image_id}.png", _png(r.image))
    write_bytes(out / "masks" / cls / f"{image_id}.png", _png(r.mask))
    return {"image_id": image_id, "label": cls, "path": f"{cls}/{image_id}.png", "mask_path": f"masks/{cls}/{image_id}.png", **r.facts}


def generate_phantom(
    out_dir: str | os.PathLike[str], pcfg: PhantomConfig, seed: int, anatomy_path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Write the phantom into ``out_dir``; return what ``phantom.json`` records.

    Layout: ``<class>/<id>.png`` (8-bit grayscale, ``pcfg.size`` square), ``masks/<class>/<id>.png``
    (0/255; empty for healthy), ``images.csv`` (per-image facts), ``montage.png``,
    ``montage_masks.png``, ``montage_<class>.png`` and, written last, ``phantom.json``.
    """
    _validate(pcfg)
    out = Path(out_dir)
    counts = class_counts(pcfg)
    tasks = plan(pcfg)
    source, path = resolve_source(pcfg.anatomy, anatomy_path)
    started = time.perf_counter()
    anat = load_anatomy(pcfg.anatomy, anatomy_path)  # builds the cache before workers start
    if source != "colin27":
        log.warning("phantom anatomy: %s", anat.description)
    out.mkdir(parents=True, exist_ok=True)
    init = (pcfg.anatomy, str(path) if path else None, str(out), to_dict(pcfg), seed)
    bar = dict(total=len(tasks), desc="phantom", unit="img", disable=None)
    workers = min(pcfg.workers, len(tasks))
    if workers <= 1:
        _init_worker(*init)
        rows = [_make(t) for t in progress_bar(tasks, **bar)]
    else:
        # spawn, not fork: the caller may already run torch threads, which fork would copy broken.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(os.getpid(), *init)) as pool:
            rows = list(progress_bar(pool.map(_make, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers)))), **bar))
    seconds = time.perf_counter() - started
    write_csv(out / "images.csv", rows)
    write_montages(out, rows)
    summary = {
        "config": to_dict(pcfg),
        "seed": seed,
        "anatomy": {"source": source, "path": str(path) if path else None, "description": anat.description},
        "counts": counts,
        "n_images": len(rows),
        "subtle": int(sum(r["subtle"] for r in rows)),
        "mask": "tumour only (glioma oedema excluded), 0/255",
        "phantom_version": PHANTOM_VERSION,
        "medauc_version": medauc_version,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(rows) / seconds, 2) if seconds > 0 else None,
    }
    write_json(out / "phantom.json", summary)
    return summary


# ----------------------------------------------------------------------------- montages


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (H, W)."""
    p = np.pad(mask, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _tile(out: Path, rows: list[list[dict[str, Any]]], outlines: bool, thumb: int) -> Image.Image:
    h, w = len(rows), max(len(r) for r in rows)
    canvas = Image.new("RGB", (w * thumb, h * thumb))
    for y, row in enumerate(rows):
        for x, rec in enumerate(row):
            img = Image.open(out / rec["path"]).convert("L")
            scale = thumb / max(img.size)
            dims = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            rgb = np.stack([np.asarray(img.resize(dims, Image.BILINEAR))] * 3, -1)
            if outlines and rec["label"] != "healthy":
                mask = np.asarray(Image.open(out / rec["mask_path"]).resize(dims, Image.BILINEAR)) > 127
                rgb[_outline(mask)] = (255, 40, 40)
            canvas.paste(Image.fromarray(rgb), (x * thumb + (thumb - dims[0]) // 2, y * thumb + (thumb - dims[1]) // 2))
    return canvas


def write_montages(out: Path, rows: list[dict[str, Any]], per_row: int = 8, thumb: int = 128) -> None:
    """montage.png and montage_masks.png (a row per class), montage_<class>.png (4 x 4 of one class)."""
    by_class = {c: [r for r in rows if r["label"] == c] for c in CLASSES}
    present = [c for c in CLASSES if by_class[c]]
    grid = [by_class[c][:per_row] for c in present]
    for name, outlines in (("montage.png", False), ("montage_masks.png", True)):
        buf = io.BytesIO()
        _tile(out, grid, outlines, thumb).save(buf, format="PNG")
        write_bytes(out / name, buf.getvalue())
    for c in present:
        recs = by_class[c][:16]
        buf = io.BytesIO()
        _tile(out, [recs[i : i + 4] for i in range(0, len(recs), 4)], False, thumb).save(buf, format="PNG")
        write_bytes(out / f"montage_{c}.png", buf.getvalue())


# ----------------------------------------------------------------------------- cache


def phantom_key(cfg: Config, anatomy_path: str | os.PathLike[str] | None = None) -> str:
    """Hash of what the phantom depends on: phantom config (less ``workers``), seed, anatomy, version."""
    source, path = resolve_source(cfg.phantom.anatomy, anatomy_path)
    # lesion_contrast at its default leaves the hash as it was before the field existed: caches stay valid.
    section = {k: v for k, v in to_dict(cfg.phantom).items() if k != "workers" and not (k == "lesion_contrast" and v == 1.0)}
    return config_hash(section, cfg.seed, source, str(path) if path else "", PHANTOM_VERSION)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished phantom (``phantom.json`` is written last)."""
    return (Path(folder) / "phantom.json").is_file()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.phantom-<key>.tmp-<pid>`` folders whose process no longer runs (a killed run's leftovers)."""
    removed = []
    for tmp in Path(root).glob(".phantom-*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if tmp.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            log.info("phantom: removing %s, left by process %s that no longer runs", tmp, pid)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def ensure_phantom(cfg: Config, cache_root: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The phantom for ``cfg`` in the cache, generated on first use; returns its folder.

    ``<cache_root or $MEDAUC_CACHE or ~/.cache/medauc>/phantom-<hash>``: generated into a
    temporary sibling and renamed when complete, so an interrupted run never looks finished.
    """
    root = Path(cache_root) if cache_root else default_cache_root()
    remove_stale_temps(root)
    final = root / f"phantom-{phantom_key(cfg)}"
    if is_complete(final) and not force:
        return final
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    generate_phantom(tmp, cfg.phantom, cfg.seed)
    if final.exists():
        if is_complete(final) and not force:  # another process finished first: keep its copy
            shutil.rmtree(tmp)
            return final
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final
