"""The study at its real size: every stage of `medauc run --config study` on 7,023 images at 224 px.

Only the data volume is real: the models are tiny and train one epoch (issue 23), so what is
measured is the work that grows with the data (reading, hashing, splitting, the denoiser's
generation and checks, prediction, evaluation, Grad-CAM on 2,109 test images, the report), the
work a GPU user waits for on the CPU.

    python benchmarks/study_scale.py --phantom DIR --out runs/study-scale   # DIR: a phantom folder
    python benchmarks/study_scale.py --growth                               # checks b-d at 1k..21k images

Each stage runs as its own `medauc <stage>` command under `/usr/bin/time -v`, so its wall time,
CPU seconds (user + system: less disturbed by neighbours on shared cores) and peak RSS are its
own. The `medauc` command sets the allocator tunables itself (medauc.allocator). Writes
`benchmarks/results/study_scale.md` (the table, with the run folder's size on disk).

`--growth` times the augment checks (b, c, d: generation-side accumulation, the nearest-other
search, the artefact classifier) on synthetic 64-px images for data sets of 1k, 3k, 7k and 21k
images in the study's proportions (healthy train 18%, generated 5 per healthy train image,
original train 63%), and fits the growth exponent (slope of log seconds on log images).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "study_scale.md"
TINY = ["model.pretrained=false", "model.names=[test_resnet]", "augment.strategy_model=test_resnet",
        "train.epochs=1", "augment.epochs=1", "train.max_train_images=512"]
STAGES = ["prepare", "augment", "train", "strategies", "evaluate", "explain", "report"]


def _time_v(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` under /usr/bin/time -v; its wall seconds, CPU seconds and peak RSS (GB)."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=fh, stderr=subprocess.PIPE, text=True)
        fh.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")

    def field(name: str) -> float:
        m = re.search(rf"{re.escape(name)}: ([0-9.]+)", proc.stderr)
        return float(m.group(1)) if m else float("nan")

    return {"wall_s": time.perf_counter() - t0, "cpu_s": field("User time (seconds)") + field("System time (seconds)"),
            "kernel_s": field("System time (seconds)"), "peak_gb": field("Maximum resident set size (kbytes)") / 1e6}


def _du(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in path.rglob("*"):
        if p.is_file():
            top = p.relative_to(path).parts[0]
            out[top] = out.get(top, 0.0) + p.stat().st_size / 1e6
    return out


def study(phantom: Path, out: Path, medauc: str) -> None:
    log = out.with_suffix(".log")
    rows = []
    for stage in STAGES:
        cmd = [medauc, stage, "--config", "study", "--out", str(out), f"data.path={phantom}", *TINY]
        print(f"study_scale: {stage} ...", flush=True)
        r = _time_v(cmd, log)
        rows.append({"stage": stage, **r})
        print(f"study_scale: {stage}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, peak {r['peak_gb']:.2f} GB", flush=True)
    sizes = _du(out)
    audit = json.loads((out / "data_audit.json").read_text())
    lines = [
        "# The study at its real size (benchmarks/study_scale.py)",
        "",
        f"`medauc <stage> --config study` on {audit['n_images']} phantom images at 224 px, with the models tiny "
        f"({' '.join(TINY)}); each stage a separate command under `/usr/bin/time -v`.",
        "",
        "| stage | wall s | CPU s (user+sys) | of which kernel s | peak RSS GB |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['stage']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['kernel_s']:.0f} | {r['peak_gb']:.2f} |" for r in rows]
    lines += [
        f"| **all** | {sum(r['wall_s'] for r in rows):.0f} | {sum(r['cpu_s'] for r in rows):.0f} | "
        f"{sum(r['kernel_s'] for r in rows):.0f} | {max(r['peak_gb'] for r in rows):.2f} (max) |",
        "",
        "Split (images per class and split):",
        "",
        "```",
        json.dumps(audit["counts"]),
        "```",
        "",
        f"Run folder on disk: {sum(sizes.values()):.0f} MB ("
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v >= 1) + ").",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    marker = "\n## Growth of augment's checks"  # --growth's section is kept
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    kept = marker + old.split(marker, 1)[1] if marker in old else ""
    RESULTS.write_text("\n".join(lines) + "\n" + kept)
    print(RESULTS.read_text())


def _checks_once(n_images: int, size: int = 64) -> dict[str, float]:
    import numpy as np

    from medauc.augment import artefacts, checks

    rng = np.random.default_rng(0)
    n_healthy = max(10, round(0.18 * n_images))
    n_train = max(n_healthy + 10, round(0.63 * n_images))
    train = rng.integers(0, 256, size=(n_train, size, size), dtype=np.uint8)
    healthy = np.arange(n_healthy)
    src = np.repeat(healthy, 5)
    sig = np.tile([0.1, 0.2, 0.3, 0.4, 0.5], n_healthy)
    sources = train[:n_healthy].astype(np.float32) / 255
    t0 = time.perf_counter()
    acc = checks.GeneratedChecks(sources, src, sig, features=artefacts.image_features)
    for start in range(0, len(src), 64):
        sl = slice(start, min(start + 64, len(src)))
        acc.add(sl, np.clip(sources[src[sl]] + rng.normal(0, 0.02, (sl.stop - sl.start, size, size)), 0, 1).astype(np.float32))
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc.quality()
    acc.memorisation(train, healthy, healthy, 0.98)
    t_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    artefacts.detectability_from_features(artefacts.image_features(sources), acc.feature_rows, src, sig, n_bootstrap=2000)
    t_d = time.perf_counter() - t0
    return {"accumulate_s": t_add, "c_s": t_c, "d_s": t_d}


def growth() -> None:
    import numpy as np

    sizes = [1000, 3000, 7000, 21000]
    rows = []
    for n in sizes:
        best = min((_checks_once(n) for _ in range(2)), key=lambda r: sum(r.values()))
        rows.append({"n": n, **best})
        print(f"study_scale: checks at {n} images: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()), flush=True)
    x = np.log([r["n"] for r in rows])
    lines = ["", "## Growth of augment's checks (synthetic 64-px images, best of 2)", "",
             "| images | accumulate (b, c, d per block) s | check c s | check d s |", "|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['accumulate_s']:.2f} | {r['c_s']:.2f} | {r['d_s']:.2f} |" for r in rows]
    slopes = {k: float(np.polyfit(x, np.log([r[k] for r in rows]), 1)[0]) for k in ("accumulate_s", "c_s", "d_s")}
    lines += ["| growth exponent (1k-21k) | " + " | ".join(f"{slopes[k]:.2f}" for k in ("accumulate_s", "c_s", "d_s")) + " |"]
    text = RESULTS.read_text() if RESULTS.is_file() else "# The study at its real size (benchmarks/study_scale.py)\n"
    marker = "\n## Growth of augment's checks"
    text = text.split(marker)[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", type=Path, help="a phantom folder (medauc phantom --config study --n 7023)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "study-scale")
    ap.add_argument("--growth", action="store_true", help="time augment's checks at 1k..21k images instead")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.growth:
        growth()
        return
    if args.phantom is None:
        raise SystemExit("give --phantom DIR: make one with `medauc phantom --config study --n 7023` (its folder is printed)")
    medauc = str(Path(sys.executable).with_name("medauc"))
    if not os.access(medauc, os.X_OK):
        raise SystemExit(f"{medauc} not found: run `make setup` first")
    study(args.phantom.resolve(), args.out.resolve(), medauc)


if __name__ == "__main__":
    main()
