"""Invariants every comparisons file must hold, checked on the files the test suite writes (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def detectable_violations(df: pd.DataFrame) -> list[str]:
    """Rows that say "not significant" beside a difference larger than their own detectable difference,
    or with no detectable difference at all (a zero or undefined SE must be "not assessable")."""
    if not len(df) or "significant" not in df.columns:
        return []
    notes = df["note"].astype(object).fillna("").astype(str) if "note" in df.columns else pd.Series([""] * len(df), index=df.index)
    sig = df["significant"].astype(str)
    no = (sig == "False") & (notes == "")
    out = []
    for i in np.flatnonzero(no.to_numpy()):
        r = df.iloc[i]
        det = pd.to_numeric(pd.Series([r.get("detectable")]), errors="coerce").iloc[0]
        diff = abs(float(r["difference"]))
        if not np.isfinite(det) or det <= 0 or diff > det:
            out.append(f"{r.get('metric')} {r.get('model_a', r.get('strategy'))} vs {r.get('model_b', r.get('reference'))}: "
                       f"'no' with difference {diff:.4g} and detectable {det}")
    return out


def check_folder(root: Path) -> list[str]:
    """Violations in every comparisons.csv (and strategies.json's paired tests) below ``root``."""
    out = []
    for path in sorted(Path(root).rglob("comparisons.csv")):
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if "detectable" not in df.columns:
            continue  # a hand-made file of a test, not one the evaluation wrote
        out += [f"{path}: {v}" for v in detectable_violations(df)]
    for path in sorted(Path(root).rglob("strategies.json")):
        try:
            tests = json.loads(path.read_text()).get("paired_tests", [])
        except (json.JSONDecodeError, AttributeError):
            continue
        if tests and "detectable" in tests[0]:
            out += [f"{path}: {v}" for v in detectable_violations(pd.DataFrame(tests))]
    return out
