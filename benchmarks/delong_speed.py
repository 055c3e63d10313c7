"""DeLong on n = 1,000,000 paired scores vs two scikit-learn roc_auc_score calls (goal: at most 5x).

    .venv/bin/python benchmarks/delong_speed.py [--n 1000000] [--repeats 3]

Timings are the best of ``--repeats`` runs (shared CPUs are noisy); the ratio is within one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from medauc.evaluate import delong_test


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.random(args.n) < 0.3
    a = rng.normal(size=args.n) + y
    b = np.round(a + rng.normal(scale=0.7, size=args.n), 3)  # with ties
    t_sk = best_of(lambda: (roc_auc_score(y, a), roc_auc_score(y, b)), args.repeats)
    t_dl = best_of(lambda: delong_test(y, a, b), args.repeats)
    r = delong_test(y, a, b)
    assert abs(r.auc_a - roc_auc_score(y, a)) < 1e-12 and abs(r.auc_b - roc_auc_score(y, b)) < 1e-12
    ratio = t_dl / t_sk
    print(f"n = {args.n:,}: delong_test {t_dl:.3f} s; two roc_auc_score calls {t_sk:.3f} s; "
          f"ratio {ratio:.2f}x (goal <= 5x): {'PASS' if ratio <= 5 else 'FAIL'}")
    print(f"  AUCs {r.auc_a:.6f} vs {r.auc_b:.6f}, z = {r.z:.2f}, p = {r.p_value:.3g}")
    return 0 if ratio <= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
