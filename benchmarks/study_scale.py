"""The study at its real size: every stage of `medauc run --config study` on 7,023 images at 224 px.

Only the data volume is real: the models are tiny and train one epoch (issue 23), so what is
measured is the work that grows with the data (reading, hashing, splitting, the denoiser's
generation and checks, prediction, evaluation, Grad-CAM on 2,109 test images, the report), the
work a GPU user waits for on the CPU.

    python benchmarks/study_scale.py --phantom DIR --out runs/study-scale   # DIR: a phantom folder
    python benchmarks/study_scale.py --growth                               # checks b-d at 1k..21k images

Each stage runs as its own `medauc <stage>` command under `/usr/bin/time -v`, so its wall time,
CPU seconds (user + system: less disturbed by neighbours on shared cores) and peak RSS are its
own. The `medauc` command sets the allocator tunables itself (medauc.allocator). Each size's
measurements are kept in `benchmarks/results/study_scale_<n>.json`; `study_scale.md` is rebuilt from
all of them (a table a size, with the run folder's size on disk) and, from the two largest, fits each
stage's peak at 70,000 images (`--table` rebuilds it without running anything).

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
    audit = json.loads((out / "data_audit.json").read_text())
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    run = {"n_images": int(audit["n_images"]), "commit": commit, "date": time.strftime("%Y-%m-%d"),
           "stages": rows, "counts": audit["counts"], "disk_mb": _du(out), "note": ""}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    (RESULTS.parent / f"study_scale_{run['n_images']}.json").write_text(json.dumps(run, indent=1) + "\n")
    write_results()
    print(RESULTS.read_text())


def _runs() -> list[dict]:
    """Every measured size (benchmarks/results/study_scale_<n>.json), smallest first."""
    runs = [json.loads(p.read_text()) for p in RESULTS.parent.glob("study_scale_*.json")]
    return sorted(runs, key=lambda r: r["n_images"])


def fit_peaks(runs: list[dict], target: int = 70_000) -> list[dict]:
    """Each stage's peak RSS at ``target`` images from the two largest measured sizes.

    Two fits, and the larger is the estimate: a straight line through the two points (what a stage
    that holds a per-image amount grows by) and a power law (log peak on log images), whose exponent
    says how the peak grows. A stage whose peak does not grow gives the measured peak.
    """
    import numpy as np

    a, b = runs[-2], runs[-1]
    peaks = {r["n_images"]: {s["stage"]: s["peak_gb"] for s in r["stages"]} for r in (a, b)}
    cpu = {r["n_images"]: {s["stage"]: s.get("cpu_s") for s in r["stages"]} for r in (a, b)}
    out = []
    for stage in [s["stage"] for s in b["stages"]]:
        if stage not in peaks[a["n_images"]]:
            continue
        x = np.array([a["n_images"], b["n_images"]], float)
        y = np.array([peaks[a["n_images"]][stage], peaks[b["n_images"]][stage]])
        slope = (y[1] - y[0]) / (x[1] - x[0])
        line = y[1] + slope * (target - x[1])
        exponent = float(np.log(y[1] / y[0]) / np.log(x[1] / x[0]))
        power = y[1] * (target / x[1]) ** exponent
        ca, cb = cpu[a["n_images"]][stage], cpu[b["n_images"]][stage]
        cpu_exponent = float(np.log(cb / ca) / np.log(x[1] / x[0])) if ca and cb else float("nan")
        out.append({"stage": stage, "peak_a": y[0], "peak_b": y[1], "gb_per_1k": 1000 * slope, "exponent": exponent,
                    "at_target": float(max(line, power, y[1])), "cpu_exponent": cpu_exponent})
    return out


def write_results(target: int = 70_000) -> None:
    """benchmarks/results/study_scale.md from every measured size, the fit, and --growth's section."""
    runs = _runs()
    lines = ["# The study at its real size (benchmarks/study_scale.py)", "",
             f"`medauc <stage> --config study` on phantom images at 224 px, with the models tiny ({' '.join(TINY)}); "
             "each stage a separate command under `/usr/bin/time -v`. One table a data-set size.", ""]
    for r in runs:
        lines += [f"## {r['n_images']:,} images (commit {r['commit']}, {r['date']})", "",
                  "| stage | wall s | CPU s (user+sys) | of which kernel s | peak RSS GB | commit |", "|---|---|---|---|---|---|"]
        st = r["stages"]
        lines += [f"| {s['stage']} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} | {s['kernel_s']:.0f} | {s['peak_gb']:.2f} | "
                  f"{s.get('commit', r['commit'])} |" for s in st]
        lines += [f"| **all** | {sum(s['wall_s'] for s in st):.0f} | {sum(s['cpu_s'] for s in st):.0f} | "
                  f"{sum(s['kernel_s'] for s in st):.0f} | {max(s['peak_gb'] for s in st):.2f} (max) | |", "",
                  "Split (images per class and split):", "", "```", json.dumps(r["counts"]), "```", "",
                  f"Run folder on disk: {sum(r['disk_mb'].values()):.0f} MB ("
                  + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["disk_mb"].items(), key=lambda kv: -kv[1]) if v >= 1) + ")."]
        if r.get("note"):
            lines += ["", r["note"]]
        lines.append("")
    if len(runs) >= 2:
        fit = fit_peaks(runs, target)
        a, b = runs[-2]["n_images"], runs[-1]["n_images"]
        lines += [f"## Peak RSS at {target:,} images, fitted over {a:,} and {b:,}", "",
                  "Per stage the larger of a straight line and a power law through the two measured peaks "
                  "(`fit_peaks`); the exponent is the power law's. The last column is the growth exponent of the "
                  "stage's CPU seconds between the two sizes (training is capped at 512 images here, so its "
                  "CPU is mostly prediction).", "",
                  f"| stage | peak at {a:,} GB | peak at {b:,} GB | GB per 1,000 images | exponent | at {target:,} GB "
                  "| CPU s exponent |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {f['stage']} | {f['peak_a']:.2f} | {f['peak_b']:.2f} | {f['gb_per_1k']:.3f} | {f['exponent']:.2f} | "
                  f"{f['at_target']:.2f} | {f['cpu_exponent']:.2f} |" for f in fit]
        lines += ["", f"Largest: {max(f['at_target'] for f in fit):.2f} GB "
                  f"({max(fit, key=lambda f: f['at_target'])['stage']}).", ""]
    marker = "\n## Growth of augment's checks"  # --growth's section is kept
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    kept = marker + old.split(marker, 1)[1] if marker in old else ""
    RESULTS.write_text("\n".join(lines).rstrip("\n") + "\n" + kept)


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
    ap.add_argument("--table", action="store_true", help="only rewrite study_scale.md from the measured sizes' JSON")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.growth:
        growth()
        return
    if args.table:
        write_results()
        print(RESULTS.read_text())
        return
    if args.phantom is None:
        raise SystemExit("give --phantom DIR: make one with `medauc phantom --config study --n 7023` (its folder is printed)")
    medauc = str(Path(sys.executable).with_name("medauc"))
    if not os.access(medauc, os.X_OK):
        raise SystemExit(f"{medauc} not found: run `make setup` first")
    study(args.phantom.resolve(), args.out.resolve(), medauc)


if __name__ == "__main__":
    main()
