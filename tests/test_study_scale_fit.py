"""benchmarks/study_scale.py's fit of each stage's peak memory at 70,000 images from two measured sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("study_scale", Path(__file__).parents[1] / "benchmarks" / "study_scale.py")
study_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study_scale)


def _run(n, peaks):
    return {"n_images": n, "stages": [{"stage": s, "peak_gb": p, "cpu_s": n / 100} for s, p in peaks.items()]}


def test_fit_takes_the_larger_of_line_and_power_law():
    runs = [_run(7000, {"flat": 2.0, "linear": 1.0 + 0.7, "square": 1.0}), _run(21000, {"flat": 2.0, "linear": 1.0 + 2.1, "square": 9.0})]
    fit = {f["stage"]: f for f in study_scale.fit_peaks(runs, 70_000)}
    assert fit["flat"]["at_target"] == pytest.approx(2.0) and fit["flat"]["exponent"] == pytest.approx(0.0)
    # 0.1 GB per 1,000 images on top of 1 GB: the line gives 8.0 GB; the power law (exponent < 1) less
    assert fit["linear"]["gb_per_1k"] == pytest.approx(0.1) and fit["linear"]["at_target"] == pytest.approx(8.0)
    # a peak that grows with the square of the images: the power law (100 GB), not the line (~33 GB)
    assert fit["square"]["exponent"] == pytest.approx(2.0) and fit["square"]["at_target"] == pytest.approx(100.0)


def test_fit_uses_the_two_largest_sizes_and_skips_stages_missing_from_one():
    runs = [_run(1000, {"a": 50.0}), _run(7000, {"a": 1.0}), _run(21000, {"a": 1.0, "new": 3.0})]
    fit = study_scale.fit_peaks(runs, 70_000)
    assert [f["stage"] for f in fit] == ["a"] and fit[0]["at_target"] == pytest.approx(1.0)


def test_cpu_exponent_is_the_log_log_slope_of_cpu_seconds():
    fit = study_scale.fit_peaks([_run(7000, {"a": 1.0}), _run(21000, {"a": 1.0})], 70_000)
    assert fit[0]["cpu_exponent"] == pytest.approx(1.0)  # cpu_s = n / 100: linear
