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


def assert_evaluated_per_patient(run: Path) -> None:
    """The run's predictions name each test image's patient and its evaluation resampled patients: the
    unit and patient count of metrics.json (and of the strategies' evaluation, checks a and e) are the
    test split's patients in manifest.csv, and every comparison row says "patients"."""
    run = Path(run)
    manifest = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    test = manifest[manifest["split"] == "test"]
    assert (test["subject"] != "").all(), "the manifest does not know every test image's patient"
    patients = dict(zip(test["image_id"], test["subject"]))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["unit"], metrics["n_patients"]) == ("patients", len(set(patients.values())))
    for model, m in metrics["models"].items():
        for seed, s in m["seeds"].items():
            pred = pd.read_csv(s["test_file"], dtype=str, keep_default_na=False)
            assert "subject" in pred.columns, f"{s['test_file']} has no subject column"
            assert dict(zip(pred["image_id"], pred["subject"])) == patients, s["test_file"]
            assert s["n_patients"] == len(set(patients.values()))
    comparisons = run / "comparisons.csv"
    if comparisons.is_file() and comparisons.stat().st_size:
        df = pd.read_csv(comparisons)
        assert len(df) == 0 or set(df["unit"]) == {"patients"}
    strategies = run / "strategies.json"
    if strategies.is_file():
        table = json.loads(strategies.read_text())
        assert table["evaluation"]["unit"] == "patients"
        checks = table.get("checks") or {}
        if checks.get("a_predicted_healthy"):
            assert checks["a_predicted_healthy"]["unit"] == "patients"
        if (checks.get("e_shortcut_flip") or {}).get("comparison"):
            assert checks["e_shortcut_flip"]["comparison"]["unit"] == "patients"
