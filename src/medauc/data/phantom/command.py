"""``medauc phantom``: write the built-in synthetic brain-MRI data set into a folder.

Here ``--out`` is the data set folder itself (default ``runs/phantom-<n>-<seed>``). A folder that
already holds the same phantom is left as it is; any other non-empty folder is refused unless
``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from medauc import records
from medauc.config import replace
from medauc.data.phantom.cache import is_complete, phantom_key
from medauc.data.phantom.design import CLASSES
from medauc.data.phantom.generate import generate_phantom
from medauc.errors import DataError

STAGE = "phantom"
# What generate_phantom writes at the top of the folder; --force clears only these.
_OWN = [*CLASSES, "masks", "images.csv", "subjects.csv", "phantom.json", "montage.png", "montage_masks.png", "montage_subjects.png"] + [
    f"montage_{c}.png" for c in CLASSES
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=None, help="number of images (overrides phantom.n)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides seed)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (overrides phantom.size)")


def main(args: argparse.Namespace) -> int:
    cfg = args.cfg
    changes = {}
    if args.n is not None:
        changes["phantom.n"] = args.n
    if args.size is not None:
        changes["phantom.size"] = args.size
    if args.seed is not None:
        changes["seed"] = args.seed
    if changes:
        cfg = replace(cfg, **changes)
    out = Path(args.out) if args.out else Path("runs") / f"phantom-{cfg.phantom.n}-{cfg.seed}"
    key = phantom_key(cfg)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        record = records.stage_record(out, STAGE)
        if record is not None and record.get("key") == key and is_complete(out):
            print(f"{out}: already holds this phantom (key {key}); nothing to do")
            return 0
        if not args.force:
            what = "a different phantom" if record is not None else "other files"
            raise DataError(
                f"--out {out} is not empty and holds {what}; choose an empty or new folder, "
                "or pass --force to write this phantom there (its class folders, masks and montages are replaced)"
            )
        records.clear_stage(out, STAGE)
        for name in _OWN:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    # Until the record below, the folder says it is unfinished: `medauc prepare --data` refuses a killed run's half.
    again = ["medauc", "phantom", "--force", "--config", str(args.config), "--out", str(out), *[
        f"--{k} {v}" for k, v in (("n", args.n), ("size", args.size), ("seed", args.seed)) if v is not None], *args.overrides]
    records.start_stage(out, STAGE, key=None, command=" ".join(again))
    t = time.perf_counter()
    summary = generate_phantom(out, cfg.phantom, cfg.seed)
    seconds = time.perf_counter() - t
    records.mark_stage(out, STAGE, key, n_images=summary["n_images"])
    counts = ", ".join(f"{c} {n}" for c, n in summary["counts"].items())
    subjects = ", ".join(f"{c} {n}" for c, n in summary["subjects"].items())
    print(f"phantom: {summary['n_images']} images ({counts}) at {cfg.phantom.size} px, seed {cfg.seed} -> {out}")
    print(f"subjects: {summary['n_subjects']} ({subjects}); file names sub-<n>_s<slice>.png, each image's subject in images.csv "
          "(medauc prepare reads it: no data.group_pattern needed)")
    print(f"anatomy: {summary['anatomy']['description']}")
    print(f"time: {seconds:.1f} s, {summary['n_images'] / seconds:.1f} images/s; montage: {out / 'montage.png'}")
    return 0
