"""``medauc compare A.csv B.csv [C.csv ...]``: paired tests between predictions files of the same test images.

``--detectable`` prints, for every paired comparison, the smallest difference the test set could
detect (``--power``, at its Holm family's Bonferroni level: two-sided alpha / m, alpha = 1 - ``--level``;
a zero standard error is "not assessable", never 0), and with ``--test-images N`` the same for a
planned test set of N images (standard errors scaled by sqrt(n / N); the assumptions are in
:mod:`medauc.evaluate.power`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

from medauc.evaluate.bootstrap import UNDEFINED_SHARE_WARN
from medauc.errors import EvaluationError
from medauc.evaluate.compare import compare_files
from medauc.evaluate.power import detectable_difference, images_for

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
    parser.add_argument("--detectable", action="store_true",
                        help="print the smallest difference each paired comparison could detect, instead of the tests")
    parser.add_argument("--power", type=float, default=0.8, help="power of the detectable difference [0.8]")
    parser.add_argument("--test-images", type=int, default=None, metavar="N",
                        help="with --detectable: also for a planned test set of N images drawn like this one")


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
    over = "patients" if result.get("unit") == "patients" else "images"
    lines = [f"Metrics (value [{level:.0%} CI], stratified bootstrap over {over}, {result['n_bootstrap']} resamples)",
             "  " + _unit_line(result)]
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
    lines.append(f"Paired comparisons (difference = a - b; Holm within each family: the primary one is "
                 f"{result.get('primary_metric', 'auc_macro')}'s pairs, every other metric a secondary family of its own; "
                 f"detectable: the smallest difference the test could detect with {result['power']:.0%} power at the "
                 "family's Bonferroni level alpha/m)")
    header = ["table", "metric", "a", "b", "value_a", "value_b", "diff", "ci_low", "ci_high", "p", "p_holm", "test",
              "detectable", "sig"]
    rows = [[r["table"], r["metric"], r["model_a"], r["model_b"], _num(r["value_a"]), _num(r["value_b"]),
             _num(r["difference"]), _num(r["ci_low"]), _num(r["ci_high"]), _num(r["p_value"], 3),
             _num(r["p_holm"], 3), r["test"], "n/a" if r.get("note") else _num(r["detectable"]), _verdict(r["significant"])]
            for r in result["comparisons"]]
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


def _unit_line(result: dict[str, Any]) -> str:
    if result.get("unit") == "patients":
        return f"{result['n_images']} test images of {result['n_patients']} patients; intervals and tests over patients"
    return f"{result['n_images']} test images; intervals and tests over images (no patient ids known)"


def detectable_rows(result: dict[str, Any], test_images: int | None = None) -> list[dict[str, Any]]:
    """Per comparison: observed difference, its SE, the detectable difference now and at ``test_images``
    (SE x sqrt(n / N)), and the test images needed to detect the observed difference."""
    n, level, power = result["n_images"], result["level"], result["power"]
    rows = []
    for r in result["comparisons"]:
        row = {k: r[k] for k in ("table", "metric", "model_a", "model_b", "difference", "se", "p_value", "test", "detectable",
                                 "family", "family_size")}
        bonferroni = 1 - (1 - level) / max(int(r.get("family_size") or 1), 1)
        se = r["se"] if r["se"] else float("nan")  # a zero SE: not assessable, never "detectable 0"
        if test_images is not None:
            row["detectable_planned"] = detectable_difference(se, bonferroni, power, n_now=n, n_planned=test_images)
        row["images_for_observed"] = images_for(se, n, r["difference"], bonferroni, power)
        row["note"] = r.get("note", "")
        rows.append(row)
    return rows


def format_detectable(result: dict[str, Any], test_images: int | None = None) -> str:
    """Readable text: the detectable difference of every paired comparison."""
    rows = detectable_rows(result, test_images)
    lines = [
        f"Smallest difference each paired comparison could detect ({result['power']:.0%} power, two-sided alpha "
        f"{1 - result['level']:.2g}/m, m = the tests of its Holm family: Bonferroni's bound of Holm's first step): "
        "(z_(1-alpha/2m) + z_power) x SE of the difference; a zero SE is not assessable",
        "  " + _unit_line(result),
    ]
    if test_images is not None:
        lines.append(f"  planned: {test_images} test images, SE x sqrt({result['n_images']}/{test_images}), assuming the same "
                     "class mix, the same models" + (" and the same images per patient" if result.get("unit") == "patients" else ""))
    header = ["table", "metric", "a", "b", "diff", "se", "p", "test", "m", "detectable"]
    header += [f"at N={test_images}"] if test_images is not None else []
    header += ["N for diff"]
    body = []
    for r in rows:
        need = r["images_for_observed"]
        # Not assessable (too few images, a degenerate interval, a zero SE): its SE is rounding noise, so is
        # anything made of it.
        unassessed = bool(r["note"]) or r["se"] == 0
        cells = [r["table"], r["metric"], r["model_a"], r["model_b"], _num(r["difference"]),
                 "n/a" if unassessed else _num(r["se"]), _num(r["p_value"], 3), r["test"], str(r["family_size"]),
                 "not assessable" if unassessed else _num(r["detectable"])]
        cells += [("not assessable" if unassessed else _num(r["detectable_planned"]))] if test_images is not None else []
        cells += ["n/a" if unassessed or (not math.isfinite(need) and need != math.inf) else "never" if need == math.inf
                  else f"{math.ceil(need):,}"]
        body.append(cells + (["(not assessable)"] if r["note"] else []))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *[b[:len(header)] for b in body])]
    for row in [header] + body:
        lines.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)) + ("  " + row[-1] if len(row) > len(header) else ""))
    lines.append("  N for diff: test images needed to detect the observed difference at that power (same assumptions; "
                 "never for a difference of 0).")
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
    if args.test_images is not None and (not args.detectable or args.test_images < 1):
        raise EvaluationError(f"--test-images {args.test_images}: must be >= 1 and goes with --detectable")
    if args.n_bootstrap < 1:
        raise EvaluationError(f"--n-bootstrap {args.n_bootstrap}: must be >= 1 (e.g. 2000)")
    if args.seed < 0:
        raise EvaluationError(f"--seed {args.seed}: must be >= 0")
    if not (0.0 < args.level < 1.0):
        raise EvaluationError(f"--level {args.level}: must lie strictly between 0 and 1 (e.g. 0.95)")
    if not (0.0 < args.power < 1.0):
        raise EvaluationError(f"--power {args.power}: must lie strictly between 0 and 1 (e.g. 0.8)")
    result = compare_files(
        args.files, negative_class=args.negative_class, level=args.level,
        n_bootstrap=args.n_bootstrap, seed=args.seed, renormalise=not args.no_renormalise, power=args.power,
    )
    if args.detectable:
        rows = detectable_rows(result, args.test_images)
        if args.json:
            keep = ("files", "level", "power", "unit", "n_images", "n_patients", "primary_metric")
            print(to_json({**{k: result[k] for k in keep}, "test_images": args.test_images, "detectable": rows}))
        else:
            print(format_detectable(result, args.test_images))
        return 0
    if args.json:
        print(to_json(result))
    else:
        print(format_table(result))
    return 0
