"""Generate tests/fixtures/proc_delong.json: fixed data sets and R pROC's DeLong results for them.

    .venv/bin/python scripts/make_proc_fixture.py    # needs Rscript with pROC (r-cran-proc) and jsonlite

The data (y, a, b per set) are stored in the fixture with the reference numbers, so the test
needs neither R nor this script.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "proc_delong.json"


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20260101)

    def pair(n: int, prevalence: float, shift_a: float, shift_b: float, rho: float = 0.6):
        y = (rng.random(n) < prevalence).astype(int)
        y[:2], y[2:4] = 1, 0  # at least two of each class
        shared = rng.standard_normal(n)
        a = shift_a * y + np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal(n)
        b = shift_b * y + np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal(n)
        return y, a, b

    sets = {}
    y, a, b = pair(50, 0.5, 1.0, 0.8)
    sets["n50_balanced"] = (y, np.round(a, 6), np.round(b, 6))
    y, a, b = pair(200, 0.4, 1.2, 1.0)
    sets["n200_heavy_ties"] = (y, np.round(a, 1), np.round(b, 1))
    y, a, b = pair(500, 0.1, 1.5, 1.3)
    sets["n500_unbalanced_ties"] = (y, np.round(a, 2), np.round(b, 2))
    y, a, b = pair(2000, 0.05, 2.0, 1.9)
    sets["n2000_unbalanced"] = (y, np.round(a, 8), np.round(b, 8))
    y, a, b = pair(120, 0.3, 1.0, 1.0)
    ratings = np.digitize(b, np.quantile(b, [0.2, 0.4, 0.6, 0.8])) + 1  # 1..5, a reader's scale
    sets["n120_rating_scale"] = (y, np.round(a, 4), ratings.astype(float))
    y, a, _ = pair(80, 0.5, 1.0, 0.0)
    sets["n80_identical_scores"] = (y, np.round(a, 3), np.round(a, 3))
    return sets


def main() -> int:
    sets = datasets()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (y, a, b) in sets.items():
            with open(Path(tmp) / f"{name}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["y", "a", "b"])
                w.writerows(zip(y.tolist(), map(repr, a.tolist()), map(repr, b.tolist())))
        ref_path = Path(tmp) / "ref.json"
        subprocess.run(["Rscript", str(ROOT / "scripts" / "proc_reference.R"), tmp, str(ref_path)], check=True)
        ref = json.loads(ref_path.read_text())
    fixture = {"_meta": {**ref.pop("_meta"), "script": "scripts/proc_reference.R via scripts/make_proc_fixture.py"}}
    for name, (y, a, b) in sets.items():
        fixture[name] = {"data": {"y": y.tolist(), "a": a.tolist(), "b": b.tolist()}, "proc": ref[name]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
