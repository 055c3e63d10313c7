"""DeLong test and AUC intervals against R's pROC (stored fixtures) and scikit-learn."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medauc.errors import EvaluationError
from medauc.evaluate import UndefinedMetricWarning, auc_ci, delong_test
from medauc.evaluate.delong import delong_variance

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "proc_delong.json").read_text())
CASES = sorted(k for k in FIXTURE if not k.startswith("_"))


@pytest.mark.parametrize("name", CASES)
def test_delong_matches_proc(name):
    data, ref = FIXTURE[name]["data"], FIXTURE[name]["proc"]
    y, a, b = np.array(data["y"]), np.array(data["a"]), np.array(data["b"])
    r = delong_test(y, a, b)
    tol = dict(rel=0, abs=1e-9)
    assert r.auc_a == pytest.approx(ref["auc_a"], **tol)
    assert r.auc_b == pytest.approx(ref["auc_b"], **tol)
    assert r.var_a == pytest.approx(ref["var_a"], **tol)
    assert r.var_b == pytest.approx(ref["var_b"], **tol)
    assert r.covariance == pytest.approx(ref["cov"], **tol)
    assert r.z == pytest.approx(ref["z"], **tol)
    assert r.p_value == pytest.approx(ref["p_value"], **tol)
    assert r.ci_low == pytest.approx(ref["ci_low"], **tol)
    assert r.ci_high == pytest.approx(ref["ci_high"], **tol)
    for score, key in ((a, "ci_auc_a"), (b, "ci_auc_b")):
        ci = auc_ci(y, score, method="delong")
        assert (ci.low, ci.high) == pytest.approx(tuple(ref[key]), **tol)


def test_fixture_covers_ties_imbalance_and_sizes():
    sizes = [len(FIXTURE[k]["data"]["y"]) for k in CASES]
    assert min(sizes) <= 50 and max(sizes) >= 2000
    tied = [k for k in CASES if len(set(FIXTURE[k]["data"]["a"])) < len(FIXTURE[k]["data"]["a"]) / 2]
    assert tied, "at least one fixture must have heavy ties"
    prev = [np.mean(FIXTURE[k]["data"]["y"]) for k in CASES]
    assert min(prev) < 0.15


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    a = np.round(rng.normal(size=n) + y, 1)  # ties
    b = rng.random(n)
    r = delong_test(y, a, b)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert r.difference == pytest.approx(r.auc_a - r.auc_b, abs=1e-15)


def test_swapping_models_flips_sign_only():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    a, b = rng.normal(size=200) + y, rng.normal(size=200) + 0.5 * y
    r1, r2 = delong_test(y, a, b), delong_test(y, b, a)
    assert r1.z == pytest.approx(-r2.z)
    assert r1.p_value == pytest.approx(r2.p_value)
    assert (r1.ci_low, r1.ci_high) == pytest.approx((-r2.ci_high, -r2.ci_low))


def test_large_n_is_fast_and_correct():
    rng = np.random.default_rng(2)
    n = 200_000
    y = rng.random(n) < 0.1
    a = rng.normal(size=n) + y
    b = a + rng.normal(scale=0.5, size=n)
    r = delong_test(y, a, b)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert 0 < r.p_value < 1


def test_bootstrap_ci_contains_auc_and_is_seeded():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    s = rng.normal(size=150) + y
    c1 = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=7)
    c2 = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=7)
    d = auc_ci(y, s, method="delong")
    assert c1 == c2
    assert c1.low < c1.auc < c1.high
    assert c1.auc == pytest.approx(d.auc)
    assert abs((c1.high - c1.low) - (d.high - d.low)) < 0.05  # same width to within a few points


def test_one_class_only_warns_and_gives_nan():
    y = np.ones(10, dtype=int)
    with pytest.warns(UndefinedMetricWarning, match="undefined"):
        r = delong_test(y, np.arange(10.0), np.arange(10.0))
    assert np.isnan(r.auc_a) and np.isnan(r.p_value)
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(auc_ci(y, np.arange(10.0)).auc)


def test_constant_scores_give_auc_half_and_identical_models_p_one():
    y = np.array([0, 1] * 20)
    c = np.full(40, 0.3)
    r = delong_test(y, c, c)
    assert r.auc_a == 0.5 and r.z == 0.0 and r.p_value == 1.0
    auc, var = delong_variance(y, c)
    assert auc == 0.5 and var == 0.0


def test_perfect_vs_imperfect_zero_variance_warns():
    y = np.array([0] * 5 + [1] * 5)
    perfect = np.arange(10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = delong_test(y, perfect, perfect)  # identical: z = 0, p = 1, no warning
    assert r.p_value == 1.0


@pytest.mark.parametrize(
    "y, a, match",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN or infinite"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "NaN or infinite"),
        ([0, 1], [0.1, 0.2, 0.3], "shape"),
        ([], [], "empty"),
    ],
)
def test_bad_input_is_refused_with_a_message(y, a, match):
    with pytest.raises(EvaluationError, match=match):
        delong_test(y, a, a)


def test_bad_level_and_method():
    with pytest.raises(EvaluationError, match="level"):
        auc_ci([0, 1], [0.1, 0.2], level=95)
    with pytest.raises(EvaluationError, match="method"):
        auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], method="wald")


def test_bootstrap_ci_works_in_chunks_of_bounded_memory(monkeypatch):
    """auc_ci(method="bootstrap") held n_bootstrap x n weights at once (2,000 x 100,000: 1.6 GB); in
    chunks the numpy peak stays near one chunk, and a single chunk gives what it always gave."""
    import tracemalloc

    import medauc.evaluate.bootstrap as bs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40_000)
    s = y + rng.normal(0, 1.5, y.size)
    whole = auc_ci(y, s, method="bootstrap", n_bootstrap=200, seed=1)
    monkeypatch.setattr(bs, "CHUNK_ENTRIES", 400_000)  # 10 resamples a chunk instead of all 200
    tracemalloc.start()
    chunked = auc_ci(y, s, method="bootstrap", n_bootstrap=200, seed=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30e6, peak  # all 200 resamples at once: 64 MB of weights alone
    assert chunked.auc == whole.auc and abs(chunked.low - whole.low) < 0.01 and abs(chunked.high - whole.high) < 0.01
