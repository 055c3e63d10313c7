"""``medauc compare A.csv B.csv [C.csv ...]``: paired tests between predictions files of the same test images."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN
from medauc.evaluate.compare import compare_files

SUMMARY_METRICS = ["accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "screening_auc",
                   "screening_sensitivity", "screening_specificity"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE.csv", help="predictions files (image_id, label, prob_<class>...) of the same test images")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--negative-class", default="healthy", help="screening negative class [healthy]")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level [0.95]")
    parser.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples [2000]")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed [0]")
    parser.add_argument("--no-renormalise", action="store_true", help="refuse probabilities that do not sum to 1")


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def _verdict(significant: Any) -> str:
    """yes / no, or "not assessable" where the comparison got no verdict (None)."""
    return "not assessable" if significant is None else _num(bool(significant))


def format_table(result: dict[str, Any]) -> str:
    """Readable text: per-file metrics with CIs, then every paired comparison."""
    level = result["level"]
    lines = [f"Metrics (value [{level:.0%} CI], stratified bootstrap, {result['n_bootstrap']} resamples)"]
    names = list(result["models"])
    width = max(len(n) for n in names + ["file"])
    lines.append("  " + "file".ljust(width) + "".join(f"  {m:>28}" for m in SUMMARY_METRICS))
    for n in names:
        cells = []
        for m in SUMMARY_METRICS:
            c = result["models"][n].get(m)
            cells.append(f"  {(_num(c['value']) + ' [' + _num(c['low']) + ', ' + _num(c['high']) + ']') if c else 'n/a':>28}")
        lines.append("  " + n.ljust(width) + "".join(cells))
    for n in names:
        flagged = {m: c["undefined_share"] for m, c in result["models"][n].items()
                   if math.isfinite(c.get("value", math.nan)) and c.get("undefined_share", 0.0) > UNDEFINED_SHARE_WARN}
        if flagged:
            lines.append(f"  Warning: {n}: undefined in more than {UNDEFINED_SHARE_WARN:.0%} of the resamples, so the interval "
                         "describes only the others: " + ", ".join(f"{m} {v:.0%}" for m, v in flagged.items()))
    lines.append("")
    lines.append("Paired comparisons (difference = a - b; Holm within each table)")
    header = ["table", "metric", "a", "b", "value_a", "value_b", "diff", "ci_low", "ci_high", "p", "p_holm", "test", "sig"]
    rows = [[r["table"], r["metric"], r["model_a"], r["model_b"], _num(r["value_a"]), _num(r["value_b"]),
             _num(r["difference"]), _num(r["ci_low"]), _num(r["ci_high"]), _num(r["p_value"], 3),
             _num(r["p_holm"], 3), r["test"], _verdict(r["significant"])] for r in result["comparisons"]]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        lines.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    notes: dict[str, list[str]] = {}
    for r in result["comparisons"]:
        if r.get("note"):
            notes.setdefault(r["note"], []).append(r["metric"])
    if notes:
        lines.append(f"  {sum(map(len, notes.values()))} of {len(rows)} comparisons are not assessable (no verdict, left out of Holm):")
        lines += [f"    {note.removeprefix('not assessable: ')}: {', '.join(dict.fromkeys(ms))}" for note, ms in notes.items()]
    lines.append("")
    lines.append(result["question_1"]["answer"])
    lines += ["  " + p["sentence"] for p in result["question_1"]["pairs"]]
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    """JSON text; NaN (an undefined metric) becomes null so that any reader can parse it."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return float(x) if math.isfinite(x) else None
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.bool_):
            return bool(x)
        return x

    return json.dumps(plain(result), indent=2, allow_nan=False)


def main(args: argparse.Namespace) -> int:
    result = compare_files(
        args.files, negative_class=args.negative_class, level=args.level,
        n_bootstrap=args.n_bootstrap, seed=args.seed, renormalise=not args.no_renormalise,
    )
    if args.json:
        print(to_json(result))
    else:
        print(format_table(result))
    return 0
