"""How fast is ``medauc prepare``? Goal: 7,000 PNGs of 256x256 in at most 2 minutes on 2 cores.

Writes the Kaggle rm1000 class counts (2000/1621/1645/1757 = 7,023 images) of smooth random
256x256 grey PNGs into a temporary folder, runs ``prepare_stage`` with ``data.workers`` processes
(default 2) and prints images/s, the time of each part, and the split counts next to the study's.

    python benchmarks/prepare_speed.py [--workers 2] [--n-scale 1.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COUNTS = {"healthy": 2000, "glioma": 1621, "meningioma": 1645, "pituitary": 1757}
STUDY_TEST = {"healthy": 600, "glioma": 487, "meningioma": 494, "pituitary": 528}


def _write(job: tuple[str, int, int]) -> None:
    folder, start, stop = job
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        low = Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).resize((256, 256), Image.Resampling.BICUBIC)
        img = np.asarray(low, dtype=np.float32) + rng.normal(0, 8, (256, 256))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(Path(folder) / f"img_{i:05d}.png")


def make_dataset(root: Path, scale: float, workers: int) -> int:
    """Write the images (skipped when ``root`` already holds them, e.g. a second run with --keep)."""
    jobs, offset = [], 0
    for c, n in COUNTS.items():
        n = max(3, round(n * scale))
        (root / c).mkdir(parents=True, exist_ok=True)
        if len(list((root / c).glob("*.png"))) != n:
            jobs += [(str(root / c), offset + s, offset + min(n, s + 250)) for s in range(0, n, 250)]
        offset += n
    if jobs:
        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(_write, jobs)
    return offset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-scale", type=float, default=1.0, help="fraction of the 7,023 images to generate")
    ap.add_argument("--keep", default=None, help="write the data set and run folder here instead of a temp folder")
    args = ap.parse_args()

    from medauc.config import load_config
    from medauc.data.command import prepare_stage
    from medauc.fileio import read_json
    from medauc.records import clear_stage
    from medauc.runs import open_run

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        data, out = base / "data", base / "run"
        t = time.perf_counter()
        n = make_dataset(data, args.n_scale, args.workers)
        t_gen = time.perf_counter() - t
        cfg = load_config(None, [f"data.workers={args.workers}", "data.source=folder", f"data.path={data}"])
        run_dir = open_run(out, cfg, force=True)
        clear_stage(run_dir, "prepare")  # time the work, not the cache (workers are not part of the stage key)
        t = time.perf_counter()
        prepare_stage(cfg, run_dir, force=True)
        t_prep = time.perf_counter() - t
        audit = read_json(run_dir / "data_audit.json")
        tv = {c: audit["counts"]["train"][c] + audit["counts"]["val"][c] for c in COUNTS}
        result = {
            "images": n,
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            "generate_s": round(t_gen, 1),
            "prepare_s": round(t_prep, 1),
            "images_per_s": round(n / t_prep, 1),
            "goal_s": 120,
            "test_counts": audit["counts"]["test"],
            "study_test_counts": STUDY_TEST if args.n_scale == 1.0 else None,
            "train_plus_val_counts": tv,
            "shortcut_max_auc": audit["shortcut_auc"]["max"],
            "timings": audit["timings"],
            "load_average": os.getloadavg()[0],  # other work on the machine makes the times noisy
        }
        print(json.dumps(result, indent=2))
        print(f"prepare: {n} images in {t_prep:.1f} s = {n / t_prep:.0f} images/s with {args.workers} worker(s) "
              f"(goal: 7,000 in <= 120 s)")
    return 0 if t_prep <= 120 or args.n_scale != 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
