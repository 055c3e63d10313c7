"""The bootstrap: stratified, seeded, vectorised; p-values, Holm; CI coverage on simulated data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from medauc.errors import EvaluationError
from medauc.evaluate.bootstrap import bootstrap_weights, paired_p_value, percentile_interval, weight_chunks
from medauc.evaluate.paired import holm
from medauc.evaluate.metrics import RankIndex, auc_from_groups


def test_weights_are_stratified_and_seeded():
    strata = np.array([0] * 7 + [1] * 3 + [2] * 5)
    w1 = bootstrap_weights(strata, 300, np.random.default_rng(4))
    w2 = bootstrap_weights(strata, 300, np.random.default_rng(4))
    assert np.array_equal(w1, w2)
    for s, n in ((0, 7), (1, 3), (2, 5)):
        assert np.all(w1[:, strata == s].sum(axis=1) == n)  # every resample keeps the class sizes
    assert w1.min() >= 0 and (w1 != 1).any()
    # each image is drawn once per resample on average
    assert np.allclose(w1.mean(axis=0), 1.0, atol=0.25)


def test_chunks_bound_memory_and_stay_seeded(monkeypatch):
    import medauc.evaluate.bootstrap as b

    strata = np.repeat([0, 1], 50)
    monkeypatch.setattr(b, "CHUNK_ENTRIES", 1000)  # 10 resamples of 100 images per chunk
    parts = list(weight_chunks(strata, 45, seed=1))
    again = np.concatenate(list(weight_chunks(strata, 45, seed=1)))
    assert [p.shape[0] for p in parts] == [10, 10, 10, 10, 5]
    whole = np.concatenate(parts)
    assert np.array_equal(whole, again)
    assert np.all(whole[:, :50].sum(axis=1) == 50) and np.all(whole[:, 50:].sum(axis=1) == 50)
    assert len({row.tobytes() for row in whole}) == 45  # no chunk repeats another's draws


def test_bad_resample_count():
    with pytest.raises(EvaluationError, match="n_bootstrap"):
        bootstrap_weights(np.zeros(3), 0, np.random.default_rng(0))


def test_paired_p_value_and_interval():
    rng = np.random.default_rng(0)
    assert paired_p_value(np.zeros(100)) == 1.0
    assert paired_p_value(rng.normal(5, 1, 2000)) == pytest.approx(2 / 2001)
    p = paired_p_value(rng.normal(0, 1, 4000))
    assert 0.2 < p <= 1
    assert np.isnan(paired_p_value(np.full(10, np.nan)))
    low, high = percentile_interval(np.r_[np.arange(1000.0), np.nan], 0.9)
    assert low == pytest.approx(49.95) and high == pytest.approx(949.05)


def test_holm_matches_hand_computation():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    adj = holm(p)
    # sorted: 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.04, 0.06)
    assert adj[4] == pytest.approx(0.02)
    assert adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06)
    assert adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[3])
    assert np.all(holm([0.5, 0.9]) <= 1)


def test_bootstrap_ci_coverage_is_near_nominal():
    """Coverage of 95% percentile intervals on simulated data, within 2 points of 95%.

    AUC: 500 simulated binormal data sets (100 + 100 cases, true AUC 0.80), 500 resamples each;
    accuracy: 2,000 data sets. The full study (more data sets, more metrics) is
    benchmarks/bootstrap_speed.py --coverage.
    """
    rng = np.random.default_rng(2026)
    d = 1.19
    true_auc = norm.cdf(d / np.sqrt(2))
    y = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    strata = y.astype(int)
    hits = 0
    for _ in range(500):
        s = rng.standard_normal(y.size) + d * y
        w = bootstrap_weights(strata, 500, rng)
        low, high = percentile_interval(auc_from_groups(*RankIndex(s, y).group_weights(w)), 0.95)
        hits += low <= true_auc <= high
    auc_coverage = hits / 500
    # accuracy of a classifier that is right with probability 0.85 (one stratum: the cases)
    n, p_true = 200, 0.85
    correct = rng.random((2000, n)) < p_true
    w = bootstrap_weights(np.zeros(n), 400, rng)
    acc_reps = (correct.astype(float) @ w.T) / n  # (2000 data sets, 400 resamples)
    low, high = np.quantile(acc_reps, [0.025, 0.975], axis=1)
    acc_coverage = np.mean((low <= p_true) & (p_true <= high))
    print(f"coverage: AUC {auc_coverage:.3f}, accuracy {acc_coverage:.3f}")
    assert abs(auc_coverage - 0.95) <= 0.02, auc_coverage
    assert abs(acc_coverage - 0.95) <= 0.02, acc_coverage


def test_the_bootstrap_bar_goes_through_the_progress_helper_off_a_terminal(monkeypatch):
    # Issue 27: evaluate's bar called tqdm directly and wrote carriage returns into logs
    import io

    from medauc import progress as progress_mod
    from medauc.evaluate.bootstrap import bootstrap_many

    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(progress_mod.sys, "stderr", err)
    monkeypatch.setattr("sys.stderr", err)
    strata = np.repeat([0, 1], 20)
    out = bootstrap_many(strata, 300, 0, {"m": lambda W: {"mean": W.mean(axis=1)}}, progress=True)
    assert out["m"]["mean"].shape == (300,)
    assert "\r" not in err.getvalue()
