"""Phantom generation speed (goal: >= 30 images/s at 256 px on 2 cores) and its shortcut AUC.

    python benchmarks/phantom_speed.py [--n 600] [--size 256] [--workers 2]

Prints images/s with 1 and with ``--workers`` processes (same seed: the outputs must be
identical), then the cross-validated one-vs-rest AUC of a logistic regression on global image
properties and the data stage's own shortcut audit (goal for both: max <= 0.7).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medauc.config import PhantomConfig  # noqa: E402
from medauc.data.audit import scan_files, shortcut_audit  # noqa: E402
from medauc.data.phantom import generate_phantom  # noqa: E402
from medauc.data.phantom.anatomy import load_anatomy  # noqa: E402
from medauc.data.phantom.check import shortcut_auc  # noqa: E402
from medauc.data.phantom.design import CLASSES  # noqa: E402


def _cpu() -> float:
    """CPU seconds used by this process and its finished children (the workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--single", action="store_true", help="also time one process and compare the bytes")
    args = ap.parse_args()
    load_anatomy()  # build the anatomy cache outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        runs = [args.workers] + ([1] if args.single else [])
        folders = []
        for w in runs:
            out = Path(tmp) / f"w{w}"
            t = time.perf_counter()
            cpu0 = _cpu()
            generate_phantom(out, PhantomConfig(n=args.n, size=args.size, workers=w), args.seed)
            s = time.perf_counter() - t
            cpu = _cpu() - cpu0
            # The cores are shared: CPU seconds say what the code costs, wall time what others left us.
            print(
                f"workers={w}: {args.n} images at {args.size} px in {s:.1f} s wall = {args.n / s:.1f} images/s "
                f"(goal >= 30 with 2); {1000 * cpu / args.n:.1f} CPU ms/image = {w * args.n / cpu:.1f} images/s "
                f"if {w} core(s) were free; load average {os.getloadavg()[0]:.1f}"
            )
            folders.append(out)
        if len(folders) == 2:
            a, b = folders
            files = sorted(str(p.relative_to(a)) for p in a.rglob("*.png"))
            match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
            print(f"same bytes with 1 and {args.workers} workers: {len(match)}/{len(files)} files identical")
        auc = shortcut_auc(folders[0], seed=args.seed)
        print("shortcut one-vs-rest AUC (global features, 5-fold logistic regression): "
              + ", ".join(f"{k} {v:.3f}" for k, v in auc.items())
              + f"; max {max(auc.values()):.3f} (goal <= 0.7)")
        paths = [p for c in CLASSES for p in sorted((folders[0] / c).glob("*.png"))]
        labels = [p.parent.name for p in paths]
        audit = shortcut_audit(scan_files(paths, workers=args.workers), labels, list(CLASSES), seed=args.seed)
        print("data stage's shortcut audit (extra trees): "
              + ", ".join(f"{k} {v:.3f}" for k, v in audit["per_class"].items())
              + f"; max {audit['max']:.3f} (goal <= 0.7)")


if __name__ == "__main__":
    main()
