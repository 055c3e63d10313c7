"""The demo's numbers as one table: seconds per stage, each model's test metrics, the denoiser against its baselines.

    make demo                                         # or: .venv/bin/medauc run --config demo
    .venv/bin/python benchmarks/demo_results.py       # reads runs/demo, writes benchmarks/results/demo.md

``--run DIR`` reads another run folder, ``--out FILE`` writes elsewhere (``-`` prints). ``--baseline DIR``
adds a table of both runs' seconds per stage side by side: a shared machine's speed moves from hour
to hour, so two commits compare only when run back to back (``../shared/MACHINE-NOTES.md``). Everything
comes from the run's own files (``timings.json``, ``metrics.json``, ``augment_checks.json``,
``strategies.json``, ``environment.json``), so the table can be remade without training anything.
The README's demo section cites the file this writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BARS = "issue 12: ResNet/DenseNet macro AUC >= 0.85 (CI low >= 0.75); EfficientNet/transformer >= 0.75 (CI low >= 0.65); no class > 80%"


def _read(run: Path, name: str) -> Any | None:
    path = run / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _est(cell: dict[str, Any] | None, digits: int = 3) -> str:
    if not cell:
        return "-"
    return f"{cell['value']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def _seconds(timings: dict[str, Any]) -> dict[str, float]:
    """Each stage's seconds when it last did its work, and their total (the last run's, for a run from before
    ``computed`` was recorded)."""
    last = timings.get("last_run", {})
    computed = timings.get("computed") or last
    out = {k: float(computed.get(k, v)) for k, v in last.items() if k != "total"}
    out["total"] = sum(out.values()) if "computed" in timings else float(last.get("total", sum(out.values())))
    return out


def stage_rows(timings: dict[str, Any]) -> list[str]:
    """Each stage's seconds when it last did its work (``computed``; older runs: the last run's)."""
    seconds = _seconds(timings)
    rows = [f"| {k} | {v:.1f} |" for k, v in seconds.items() if k != "total"]
    if "total" in timings.get("last_run", {}):
        rows.append(f"| **total** | **{seconds['total']:.1f}** |")
    return ["| stage | seconds |", "|---|---|", *rows]


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def baseline_rows(timings: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """Seconds per stage of a baseline run and of this run, with this run's share of the baseline's time."""
    now, before = _seconds(timings), _seconds(base)
    rows = []
    for k in [*[k for k in now if k != "total"], *[k for k in before if k not in now], "total"]:
        a, b = before.get(k), now.get(k)
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        bold = "**" if k == "total" else ""
        rows.append(f"| {bold}{k}{bold} | {_cell(a)} | {_cell(b)} | {ratio} |")
    return ["| stage | baseline | this run | this run / baseline |", "|---|---|---|---|", *rows]


def training_line(run: Path) -> str:
    """Each model's training seconds and epochs, from its history.csv (seed 0), as one sentence."""
    import csv

    parts = []
    for hist in sorted(run.glob("train/*/0/history.csv")):
        with hist.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        meta = _read(hist.parent, "model.json") or {}
        threads = f", {meta['torch_threads']} thread(s)" if "torch_threads" in meta else ""
        parts.append(f"{hist.parent.parent.name} {sum(float(r['seconds']) for r in rows):.0f} s ({len(rows)} epochs{threads})")
    return f"Training per model (seconds of its epochs): {', '.join(parts)}." if parts else ""


def model_rows(metrics: dict[str, Any]) -> list[str]:
    out = ["| model | seed | accuracy | macro AUC [95% CI] | screening AUC [95% CI] | largest predicted class share |",
           "|---|---|---|---|---|---|"]
    for model, node in metrics.get("models", {}).items():
        for seed, s in node.get("seeds", {}).items():
            m = s["metrics"]
            counts = s.get("confusion_matrix", {}).get("counts") or [[0]]
            col = [sum(r[j] for r in counts) for j in range(len(counts[0]))]
            share = max(col) / max(sum(col), 1)
            out.append(f"| {model} | {seed} | {_est(m.get('accuracy'))} | {_est(m.get('auc_macro'))} | "
                       f"{_est(m.get('screening_auc'))} | {share:.2f} |")
    return out


def denoiser_rows(checks: dict[str, Any]) -> list[str]:
    out = ["| sigma | noisy | U-Net | best Gaussian blur (width px) | non-local means |", "|---|---|---|---|---|"]
    for r in (checks.get("b_restoration_quality") or {}).get("validation", []):
        blur = f"{r['psnr_blur']:.2f} ({r['blur_sigma']:g})" if "psnr_blur" in r else "-"
        nlm = f"{r['psnr_nlm']:.2f}" if "psnr_nlm" in r else "-"
        out.append(f"| {r['sigma']:g} | {r['psnr_noisy']:.2f} | {r['psnr_restored']:.2f} | {blur} | {nlm} |")
    return out


def strategy_rows(strategies: dict[str, Any]) -> list[str]:
    out = ["| strategy | n train (healthy) | accuracy | macro AUC | screening AUC |", "|---|---|---|---|---|"]
    for r in strategies.get("rows", []):
        out.append(f"| {r['strategy']} | {r['n_train']} ({r['n_train_healthy']}) | {r.get('accuracy', float('nan')):.3f} | "
                   f"{r.get('auc_macro', float('nan')):.3f} | {r.get('screening_auc', float('nan')):.3f} |")
    return out


def _commit(run: Path) -> str:
    return str((_read(run, "environment.json") or {}).get("git_commit", "?"))[:7]


def table(run: Path, baseline: Path | None = None) -> str:
    lines = [f"# Demo results ({run})", ""]
    env = _read(run, "environment.json") or {}
    if env:
        lines += [f"Commit {env.get('git_commit', '?')}, "
                  f"torch {env.get('packages', {}).get('torch', '?')}, {env.get('device', '?')}, "
                  f"{env.get('cpu_count', env.get('cpus', '?'))} CPUs.", ""]
    timings = _read(run, "timings.json")
    if timings:
        lines += ["## Seconds per stage (`medauc run --config demo`)", "", *stage_rows(timings), ""]
        line = training_line(run)
        lines += [line, ""] if line else []
        base = _read(baseline, "timings.json") if baseline is not None else None
        if base:
            lines += [f"### Back to back with {baseline} (commit {_commit(baseline)})", "", *baseline_rows(timings, base), ""]
    metrics = _read(run, "metrics.json")
    if metrics:
        lines += ["## Table 1: test metrics, trained on the augmented set", "", f"Bars ({BARS}).", "", *model_rows(metrics), ""]
    checks = _read(run, "augment_checks.json")
    if checks:
        lines += ["## Denoiser: mean PSNR (dB) on held-out healthy images, same noisy inputs", "", *denoiser_rows(checks), ""]
    strategies = _read(run, "strategies.json")
    if strategies:
        lines += [f"## Table 2: imbalance strategies ({strategies.get('model')})", "", *strategy_rows(strategies), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="run folder [runs/demo]")
    parser.add_argument("--out", default="benchmarks/results/demo.md", help="Markdown file to write, or - to print")
    parser.add_argument("--baseline", default=None, help="a run folder made just before or after, to set beside this one")
    args = parser.parse_args(argv)
    run = Path(args.run)
    baseline = Path(args.baseline) if args.baseline else None
    if baseline is not None and not (baseline / "timings.json").is_file():
        print(f"--baseline {baseline} holds no timings.json; give a finished run folder", file=sys.stderr)
        return 2
    if not (run / "timings.json").is_file() and not (run / "metrics.json").is_file():
        print(f"{run} holds no finished run (no timings.json or metrics.json); run `make demo` first", file=sys.stderr)
        return 2
    text = table(run, baseline)
    if args.out == "-":
        print(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
