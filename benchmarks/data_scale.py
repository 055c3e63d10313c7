"""How do the data stage's parts grow with the images? Goal (issue 23): growth exponent at most 1.2
from 1k to 21k images for the near-duplicate search, the split and the shortcut audit.

Inputs at 1k, 3k, 7k and 21k images are drawn from a real phantom's scan records (its perceptual
hashes, labels, patients and metadata): each drawn "patient" is a phantom patient with random
bits of its slices' hashes flipped and its metadata jittered, so the near-duplicate structure
(slices of one head, heads alike across patients, chains) is the phantom's at every size. Each
part is timed ``--repeats`` times and the fastest kept (the machine is shared, timings are noisy);
the exponent is the log-log slope from the smallest to the largest size. Writes
``benchmarks/results/data_scale.md``.

    python benchmarks/data_scale.py --phantom DIR [--sizes 1000 3000 7000 21000] [--repeats 3] [--brute]
    (DIR: a folder made by ``medauc phantom``; its images are read once, 1-2 minutes at 7k)
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from medauc.data import audit
from medauc.data.neardup import near_pairs, near_pairs_brute
from medauc.data.split import split_indices

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def load(phantom: str) -> dict:
    paths = sorted(glob.glob(os.path.join(phantom, "*", "sub-*.png")))
    if not paths:
        raise SystemExit(f"{phantom}: no <class>/sub-*.png images; make one with `medauc phantom --out {phantom}`")
    recs = audit.scan_files(paths, workers=2, desc="data_scale: reading")
    return {"recs": recs, "labels": [p.split(os.sep)[-2] for p in paths],
            "subjects": [re.search(r"(sub-\d+)", p).group(1) for p in paths]}


def draw(src: dict, n: int, seed: int) -> dict:
    """About ``n`` images: whole phantom patients drawn with replacement, each copy a new patient
    (the same 10 hash bits flipped in all its slices; half the time instead 3 bits away from the
    previous copy, so near-duplicate chains of patients grow with the data; each bit of each slice
    also flipped with probability 1/128; metadata jittered by 1%)."""
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[int]] = {}
    for i, s in enumerate(src["subjects"]):
        by_subject.setdefault(s, []).append(i)
    names = sorted(by_subject)
    idx, subj, head = [], [], []
    last: dict[str, int] = {}
    while len(idx) < n:
        s = names[int(rng.integers(len(names)))]
        idx += by_subject[s]
        subj += [f"{s}-{len(subj)}"] * len(by_subject[s])
        # A new head like this one: the same random bits flipped in each of its slices; half the
        # time 3 bits from the previous copy (a near-duplicate of it: chains grow with the data).
        fresh = np.uint64(1) << rng.choice(64, 10, replace=False).astype(np.uint64)
        near = np.uint64(1) << rng.choice(64, 3, replace=False).astype(np.uint64)
        mask = last[s] ^ int(np.bitwise_or.reduce(near)) if s in last and rng.random() < 0.5 \
            else int(np.bitwise_or.reduce(fresh))
        last[s] = mask
        head += [mask] * len(by_subject[s])
    idx, subj = idx[:n], subj[:n]
    h = audit.hex_to_uint64([src["recs"][i]["phash"] for i in idx]) ^ np.array(head[:n], dtype=np.uint64)
    flips = (rng.random((n, 64)) < 1 / 128) @ (np.uint64(1) << np.arange(64, dtype=np.uint64))  # and a slice's own noise
    h = h ^ flips.astype(np.uint64)
    recs = []
    for i in idx:
        r = dict(src["recs"][i])
        for k in ("file_size", *audit.INTENSITY_FEATURES):
            r[k] = float(r[k]) * (1 + rng.normal(0, 0.01))
        recs.append(r)
    labels = [src["labels"][i] for i in idx]
    return {"hashes": h, "labels": labels, "subjects": subj, "recs": recs, "ids": [f"{lab}/{k:06d}" for k, lab in enumerate(labels)],
            "sha": [f"{int(x):016x}" for x in h]}


def best_of(repeats: int, fn) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 7000, 21000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--brute", action="store_true", help="also time the all-pairs near-duplicate search (quadratic)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_scale.md"))
    args = ap.parse_args()
    src = load(args.phantom)
    real = audit.hex_to_uint64([r["phash"] for r in src["recs"]])
    as_is = {"n": len(real), "pairs": len(near_pairs(real, 6)),
             "index": best_of(args.repeats, lambda: near_pairs(real, 6)), "brute": best_of(1, lambda: near_pairs_brute(real, 6))}
    rows = []
    for n in args.sizes:
        d = draw(src, n, seed=n)
        pairs = near_pairs(d["hashes"], 6)
        dup = audit.duplicate_groups(d["sha"], [f"{int(x):016x}" for x in d["hashes"]], 6)
        whole = dup["group"]
        row = {"n": n, "pairs": len(pairs), "largest group": max(len(v) for v in dup["members"].values())}
        row["near-duplicates (index)"] = best_of(args.repeats, lambda: near_pairs(d["hashes"], 6))
        if args.brute:
            row["near-duplicates (all pairs)"] = best_of(1, lambda: near_pairs_brute(d["hashes"], 6))
        row["split, no patients"] = best_of(args.repeats, lambda: split_indices(d["labels"], whole, d["ids"], seed=0))
        row["split, patients"] = best_of(args.repeats, lambda: split_indices(d["labels"], whole, d["ids"], seed=0,
                                                                             subjects=d["subjects"]))
        row["shortcut audit"] = best_of(args.repeats, lambda: audit.shortcut_audit(d["recs"], d["labels"], CLASSES, seed=0))
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    timed = [k for k in rows[0] if k not in ("n", "pairs", "largest group")]
    lines = [
        "# Data stage: growth with the number of images (issue 23)",
        "",
        f"`python benchmarks/data_scale.py --phantom {args.phantom}` (inputs drawn from that phantom's patients; "
        f"fastest of {args.repeats} runs; 2 shared CPU cores). Exponent: log-log slope from "
        f"{rows[0]['n']:,} to {rows[-1]['n']:,} images (goal: at most 1.2).",
        "",
        "| images | near-dup pairs | largest group | " + " | ".join(f"{k} (s)" for k in timed) + " |",
        "|---|---|---|" + "---|" * len(timed),
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['pairs']:,} | {r['largest group']} | " + " | ".join(f"{r[k]:.3f}" for k in timed) + " |")
    slope = {k: math.log(rows[-1][k] / rows[0][k]) / math.log(rows[-1]["n"] / rows[0]["n"]) for k in timed}
    lines.append("| **exponent** | | | " + " | ".join(f"**{slope[k]:.2f}**" for k in timed) + " |")
    lines += ["", f"The phantom as it is ({as_is['n']:,} real perceptual hashes, {as_is['pairs']:,} near-duplicate pairs): "
              f"index {as_is['index']:.3f} s, all pairs {as_is['brute']:.3f} s.",
              "The shortcut audit samples at most 3,000 images, so beyond that only reading the features grows.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
