"""Localisation scores on hand-made maps and masks, bootstrap intervals, stratified sampling."""

from __future__ import annotations

import numpy as np
import pytest

from medauc.explain import scores as sc
from medauc.explain.inputs import stratified_sample


def _mask(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows, cols] = True
    return m


def test_known_values_for_a_map_on_and_off_the_lesion():
    mask = _mask((10, 10), slice(0, 5), slice(0, 5))  # area share 0.25
    on = np.zeros((10, 10))
    on[1, 1] = 1.0
    on[8, 8] = 0.5  # 2/3 of the energy inside
    off = np.zeros((10, 10))
    off[9, 9] = 1.0
    s = sc.localisation_scores(np.stack([on, off]), np.stack([mask, mask]))
    np.testing.assert_allclose(s["pointing_game"], [1.0, 0.0])
    np.testing.assert_allclose(s["energy_share"], [2 / 3, 0.0])
    np.testing.assert_allclose(s["area_share"], [0.25, 0.25])
    np.testing.assert_allclose(s["energy_ratio"], [(2 / 3) / 0.25, 0.0])


def test_uniform_and_zero_maps_score_like_chance():
    mask = _mask((8, 8), slice(0, 2), slice(0, 8))  # area share 0.25
    s = sc.localisation_scores(np.stack([np.ones((8, 8)), np.zeros((8, 8))]), np.stack([mask, mask]))
    # Ties are shared: a flat map hits with probability = area share; energy ratio 1 = chance.
    np.testing.assert_allclose(s["pointing_game"], [0.25, 0.25])
    np.testing.assert_allclose(s["energy_share"], [0.25, 0.25])
    np.testing.assert_allclose(s["energy_ratio"], [1.0, 1.0])


def test_tied_maxima_share_the_hit():
    mask = _mask((4, 4), slice(0, 1), slice(0, 1))
    m = np.zeros((4, 4))
    m[0, 0] = m[3, 3] = 1.0  # two maxima, one inside
    assert sc.localisation_scores(m, mask)["pointing_game"][0] == pytest.approx(0.5)


def test_tolerance_widens_only_the_pointing_game():
    mask = _mask((20, 20), slice(5, 8), slice(5, 8))
    m = np.zeros((20, 20))
    m[10, 6] = 1.0  # 3 px below the mask
    strict = sc.localisation_scores(m, mask)
    loose = sc.localisation_scores(m, mask, tolerance=3.0)
    too_small = sc.localisation_scores(m, mask, tolerance=2.9)
    assert strict["pointing_game"][0] == 0.0
    assert loose["pointing_game"][0] == 1.0
    assert too_small["pointing_game"][0] == 0.0
    assert loose["energy_share"][0] == strict["energy_share"][0] == 0.0


def test_empty_mask_gives_nan_and_summaries_skip_it():
    maps = np.random.default_rng(0).random((2, 6, 6))
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 2:4, 2:4] = True
    s = sc.localisation_scores(maps, masks)
    assert np.isfinite(s["energy_ratio"][0]) and np.isnan(s["energy_ratio"][1])
    summary = sc.bootstrap_mean(s["energy_ratio"], 200, 0.95, np.random.default_rng(0))
    assert summary["n"] == 1


def test_bad_input_is_refused_with_shapes():
    with pytest.raises(ValueError, match="same shape"):
        sc.localisation_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="non-negative"):
        sc.localisation_scores(-np.ones((4, 4)), np.ones((4, 4), bool))


def test_bootstrap_is_seeded_and_covers_the_mean():
    v = np.random.default_rng(1).random(200)
    a = sc.bootstrap_mean(v, 500, 0.95, np.random.default_rng(7))
    b = sc.bootstrap_mean(v, 500, 0.95, np.random.default_rng(7))
    assert a == b
    assert a["ci_low"] < a["mean"] < a["ci_high"]
    # The half-width is about 1.96 * sd / sqrt(n) for a mean.
    assert a["ci_high"] - a["ci_low"] == pytest.approx(2 * 1.96 * v.std() / np.sqrt(v.size), rel=0.2)
    empty = sc.bootstrap_mean(np.array([np.nan]), 100, 0.95, np.random.default_rng(0))
    assert empty["n"] == 0 and np.isnan(empty["mean"])


def test_paired_difference_sees_a_consistent_gain():
    rng = np.random.default_rng(3)
    base = rng.random(100)
    d = sc.paired_difference(base + 0.05, base, 300, 0.95, np.random.default_rng(0))
    assert d["mean"] == pytest.approx(0.05)
    assert d["ci_low"] == pytest.approx(0.05) and d["ci_high"] == pytest.approx(0.05)


def test_rank_correlation():
    a = np.arange(16, dtype=float).reshape(1, 4, 4)
    r = sc.rank_correlation(np.concatenate([a, a, np.zeros((1, 4, 4))]), np.concatenate([a, -a, a]))
    np.testing.assert_allclose(r[:2], [1.0, -1.0])
    assert np.isnan(r[2])


def test_stratified_sample_keeps_class_shares():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_sample(labels, 20, np.random.default_rng(0))
    assert idx.size == 20 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [12, 6, 2]
    assert stratified_sample(labels, 0, np.random.default_rng(0)).size == 100
    again = stratified_sample(labels, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)


def test_panel_rows_mix_correct_and_misclassified():
    from medauc.explain.panel_rows import select_panel_rows

    labels = np.array([0] * 10 + [1] * 10)
    wrong = np.zeros(20, bool)
    wrong[[1, 2, 3]] = True  # three misclassified in class 0, none in class 1
    rows = select_panel_rows(labels, wrong, 4, 2, np.random.default_rng(0))
    assert len(rows[0]) == 4 and wrong[rows[0]].sum() == 2 and not wrong[rows[0][:2]].any()
    assert len(rows[1]) == 4 and not wrong[rows[1]].any()
    all_wrong = select_panel_rows(labels, np.ones(20, bool), 3, 2, np.random.default_rng(0))
    assert len(all_wrong[0]) == 3  # filled up with misclassified ones when nothing is correct


def test_rank_correlation_in_blocks_equals_one_block():
    """The study's 2,109 maps at 224 px took 4.4 GB as float64 ranks at once; in blocks each map's value is the same."""
    import numpy as np

    from medauc.explain import scores as sc

    rng = np.random.default_rng(0)
    a = rng.random((10, 12, 12)).astype(np.float16)
    b = (a + rng.normal(0, 0.3, a.shape)).astype(np.float16)
    b[3] = 0.5  # a flat map: nan
    whole = sc.rank_correlation(a, b, block=100)
    np.testing.assert_array_equal(sc.rank_correlation(a, b, block=3), whole)
    assert np.isnan(whole[3]) and np.isfinite(np.delete(whole, 3)).all()


def test_bootstrap_over_patients_counts_a_patient_once():
    """Five identical slices of each of 40 patients carry the evidence of 40 values, not 200:
    the patient interval is as wide as the 40 values' own, the image interval sqrt(5) narrower."""
    v40 = np.random.default_rng(2).random(40)
    v = np.repeat(v40, 5)
    patients = np.repeat(np.arange(40), 5).astype(str)
    by_patient = sc.bootstrap_mean(v, 4000, 0.95, np.random.default_rng(0), clusters=patients)
    by_image = sc.bootstrap_mean(v, 4000, 0.95, np.random.default_rng(0))
    own = sc.bootstrap_mean(v40, 4000, 0.95, np.random.default_rng(0))
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert by_patient["mean"] == pytest.approx(v40.mean()) and by_patient["n"] == 200 and by_patient["n_patients"] == 40
    assert width(by_patient) == pytest.approx(width(own), rel=0.1)
    assert width(by_image) == pytest.approx(width(own) / np.sqrt(5), rel=0.15)
    # nan values are left out with their patient rows; a patient left with nothing is not a unit.
    v2 = v.copy()
    v2[:5] = np.nan
    assert sc.bootstrap_mean(v2, 100, 0.95, np.random.default_rng(0), clusters=patients)["n_patients"] == 39
    # A patient's replicate mean weighs its images: unequal sizes give the pooled image mean.
    d = sc.paired_difference(v + 0.1, v, 200, 0.95, np.random.default_rng(0), clusters=patients)
    assert d["mean"] == pytest.approx(0.1) and d["n_patients"] == 40
    with pytest.raises(ValueError, match="one entry per value"):
        sc.bootstrap_mean(v, 10, 0.95, np.random.default_rng(0), clusters=patients[:10])
