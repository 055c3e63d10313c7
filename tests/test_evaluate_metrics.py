"""Every metric against scikit-learn on random data, and every bad input of issue 5 point 6."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from medauc.errors import EvaluationError
from medauc.evaluate import UndefinedMetricWarning
from medauc.evaluate.metrics import MetricEngine, ap_from_groups, point_metrics, screening_threshold
from medauc.evaluate.predictions import from_arrays, read_predictions
from medauc.evaluate.prevalence import npv_at, ppv_at
from medauc.evaluate.synthetic import CLASSES, simulate_probs, write_predictions


def random_preds(seed: int, n: int = 400, skill: float = 1.5, decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    p = simulate_probs(y, 4, skill, rng)
    if decimals is not None:  # ties in every score, as in real files
        p = np.round(p, decimals)
        p[:, 0] = 1 - p[:, 1:].sum(axis=1)
        p = np.clip(p, 0, 1)
    return from_arrays(np.array(CLASSES)[y], p, CLASSES, "healthy"), y, p


@pytest.mark.parametrize("seed", range(3))
def test_four_class_metrics_match_sklearn(seed):
    pred, y, p = random_preds(seed)
    p = pred.probs
    v = point_metrics(MetricEngine(pred))
    yhat = p.argmax(1)
    labels = list(range(4))
    assert v["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-12)
    assert v["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yhat), abs=1e-12)
    assert v["auc_macro"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert v["f1_macro"] == pytest.approx(skm.f1_score(y, yhat, average="macro"), abs=1e-12)
    assert v["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=labels), abs=1e-12)
    assert v["brier"] == pytest.approx(skm.brier_score_loss(y, p, labels=labels, scale_by_half=False), abs=1e-12)
    sens = skm.recall_score(y, yhat, average=None, labels=labels)
    ppv = skm.precision_score(y, yhat, average=None, labels=labels)
    f1 = skm.f1_score(y, yhat, average=None, labels=labels)
    cm = skm.confusion_matrix(y, yhat, labels=labels)
    assert np.array_equal(MetricEngine(pred).confusion_matrix(), cm)
    for c, name in enumerate(CLASSES):
        assert v[f"auc_{name}"] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
        assert v[f"sensitivity_{name}"] == pytest.approx(sens[c], abs=1e-12)
        assert v[f"ppv_{name}"] == pytest.approx(ppv[c], abs=1e-12)
        assert v[f"f1_{name}"] == pytest.approx(f1[c], abs=1e-12)
        spec = skm.recall_score(y != c, yhat != c)  # specificity = recall of "not c"
        assert v[f"specificity_{name}"] == pytest.approx(spec, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_screening_and_calibration_metrics_match_sklearn(seed):
    pred, y, _ = random_preds(seed, n=500)
    t, _, _ = screening_threshold(random_preds(seed + 10)[0], 0.95)
    eng = MetricEngine(pred, threshold=t, n_bins=10)
    v = point_metrics(eng)
    pos = y != 0
    score = 1 - pred.probs[:, 0]
    spred = pred.probs.argmax(1) != 0
    assert v["screening_auc"] == pytest.approx(skm.roc_auc_score(pos, score), abs=1e-12)
    assert v["screening_auprc"] == pytest.approx(skm.average_precision_score(pos, score), abs=1e-12)
    assert v["screening_sensitivity"] == pytest.approx(skm.recall_score(pos, spred), abs=1e-12)
    assert v["screening_specificity"] == pytest.approx(skm.recall_score(~pos, ~spred), abs=1e-12)
    assert v["screening_ppv"] == pytest.approx(skm.precision_score(pos, spred), abs=1e-12)
    assert v["screening_npv"] == pytest.approx(skm.precision_score(~pos, ~spred), abs=1e-12)
    assert v["screening_f1"] == pytest.approx(skm.f1_score(pos, spred), abs=1e-12)
    assert v["screening_brier"] == pytest.approx(skm.brier_score_loss(pos, score), abs=1e-12)
    opred = score >= t
    assert v["op_sensitivity"] == pytest.approx(skm.recall_score(pos, opred), abs=1e-12)
    assert v["op_specificity"] == pytest.approx(skm.recall_score(~pos, ~opred), abs=1e-12)
    assert v["op_ppv"] == pytest.approx(skm.precision_score(pos, opred), abs=1e-12)
    # reliability data and ECE against sklearn's equal-mass calibration curve
    prob_true, prob_pred = calibration_curve(pos, score, n_bins=10, strategy="quantile")
    rows = [r for r in eng.reliability() if r["curve"] == "screening"]
    assert np.allclose([r["observed"] for r in rows], prob_true)
    assert np.allclose([r["mean_predicted"] for r in rows], prob_pred)
    counts = np.array([r["count"] for r in rows])
    assert v["screening_ece"] == pytest.approx(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred)), abs=1e-12)
    conf = pred.probs.max(1)
    correct = pred.probs.argmax(1) == y
    pt, pp = calibration_curve(correct, conf, n_bins=10, strategy="quantile")
    top = [r for r in eng.reliability() if r["curve"] == "top_label"]
    counts = np.array([r["count"] for r in top])
    assert v["ece"] == pytest.approx(np.sum(counts / counts.sum() * np.abs(pt - pp)), abs=1e-12)


def test_weighted_metrics_equal_metrics_of_the_resampled_set():
    """A bootstrap weight row must give exactly the metrics of the data set it stands for."""
    pred, y, p = random_preds(5, n=120)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, pred.n, pred.n)
    w = np.bincount(idx, minlength=pred.n)[None, :].astype(float)
    t = 0.6
    by_weight = MetricEngine(pred, threshold=t, prevalences=[0.01]).compute(w)
    resampled = from_arrays(np.array(CLASSES)[pred.y[idx]], pred.probs[idx], CLASSES, "healthy", image_ids=[f"r{i}" for i in range(idx.size)])
    direct = MetricEngine(resampled, threshold=t, prevalences=[0.01]).compute(np.ones((1, idx.size)))
    for k in direct:
        if k.startswith("ece") or k == "screening_ece":
            continue  # bins are fixed on the original sample by design
        assert by_weight[k][0] == pytest.approx(direct[k][0], abs=1e-12, nan_ok=True), k


def test_prevalence_formulas_and_auprc_at_own_prevalence():
    assert ppv_at(0.9, 0.95, 0.5) == pytest.approx(0.9 / (0.9 + 0.05))
    assert npv_at(0.9, 0.95, 0.5) == pytest.approx(0.95 / (0.95 + 0.1))
    assert ppv_at(0.99, 0.99, 1e-4) == pytest.approx(0.99e-4 / (0.99e-4 + 0.01 * (1 - 1e-4)))
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 2, (1, 50)).astype(float)
    neg = 1 - pos
    own = pos.sum() / (pos.sum() + neg.sum())
    assert ap_from_groups(pos, neg, own)[0] == pytest.approx(ap_from_groups(pos, neg)[0], abs=1e-12)
    # AUPRC falls with prevalence for the same ROC curve
    assert ap_from_groups(pos, neg, 0.01)[0] < ap_from_groups(pos, neg, 0.5)[0]


def test_operating_point_reaches_target_on_validation():
    val, _, _ = random_preds(1, n=400, decimals=None)
    t, sens, spec = screening_threshold(val, 0.97)
    assert sens >= 0.97
    s, pos = val.screening_score, val.positive
    assert (s[pos] >= np.nextafter(t, 2)).mean() < 0.97  # the largest such threshold
    assert 0 <= spec <= 1


# ----------------------------------------------------------------------------- bad inputs (issue 5, point 6)


def test_class_absent_from_labels_warns_and_gives_nan_not_a_crash():
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3], 100)  # no meningioma
    p = simulate_probs(y, 4, 1.0, rng)
    pred = from_arrays(np.array(CLASSES)[y], p, CLASSES)
    with pytest.warns(UndefinedMetricWarning, match="meningioma"):
        v = point_metrics(MetricEngine(pred))
    assert np.isnan(v["auc_meningioma"]) and np.isnan(v["auc_macro"])
    assert np.isnan(v["sensitivity_meningioma"])
    assert v["auc_glioma"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert np.isfinite(v["screening_auc"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert v["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))


def test_constant_scores_give_auc_half():
    y = np.array([0, 1, 2, 3] * 10)
    pred = from_arrays(np.array(CLASSES)[y], np.full((40, 4), 0.25), CLASSES)
    with pytest.warns(UndefinedMetricWarning, match="screening_ppv"):  # arg-max is always class 0: no positive calls
        v = point_metrics(MetricEngine(pred))
    assert v["auc_macro"] == 0.5 and v["screening_auc"] == 0.5


def test_probabilities_not_summing_to_one(tmp_path):
    y = np.array(CLASSES)[[0, 1, 2, 3]]
    p = np.full((4, 4), 0.3)  # rows sum to 1.2
    with pytest.warns(UserWarning, match="renormalised"):
        pred = from_arrays(y, p, CLASSES, renormalise=True)
    assert np.allclose(pred.probs.sum(1), 1)
    with pytest.raises(EvaluationError, match="do not sum to 1.*renormalise"):
        from_arrays(y, p, CLASSES, renormalise=False)
    tiny = np.full((4, 4), 0.25) + 1e-7  # float rounding in a CSV: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_arrays(y, tiny, CLASSES, renormalise=False)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p: p.__setitem__((1, 2), np.nan), "NaN or infinite"),
        (lambda p: p.__setitem__((1, 2), np.inf), "NaN or infinite"),
        (lambda p: p.__setitem__((1, 2), -0.5), "outside \\[0, 1\\]"),
        (lambda p: p.__setitem__((1, 2), 3.0), "outside \\[0, 1\\]"),
    ],
)
def test_bad_probabilities_are_refused(mutate, match):
    p = np.full((4, 4), 0.25)
    mutate(p)
    with pytest.raises(EvaluationError, match=match):
        from_arrays(np.array(CLASSES), p, CLASSES)


def test_labels_outside_class_list(tmp_path):
    f = write_predictions(tmp_path / "t.csv", ["a", "b"], np.array([0, 1]), np.full((2, 4), 0.25))
    text = f.read_text().replace("glioma,0.25", "astrocytoma,0.25", 1)
    f.write_text(text)
    with pytest.raises(EvaluationError, match="astrocytoma.*not in the class list"):
        read_predictions(f)


def test_empty_and_malformed_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EvaluationError, match="empty"):
        read_predictions(empty)
    header = tmp_path / "header.csv"
    header.write_text("image_id,label,prob_healthy,prob_glioma\n")
    with pytest.raises(EvaluationError, match="no rows"):
        read_predictions(header)
    nocols = tmp_path / "nocols.csv"
    nocols.write_text("image_id,label\na,healthy\n")
    with pytest.raises(EvaluationError, match="prob_<class>"):
        read_predictions(nocols)
    with pytest.raises(EvaluationError, match="does not exist"):
        read_predictions(tmp_path / "missing.csv")
    text = tmp_path / "text.csv"
    text.write_text("image_id,label,prob_healthy,prob_glioma\na,healthy,high,0.1\n")
    with pytest.raises(EvaluationError, match="not a number"):
        read_predictions(text)


def test_duplicate_ids_and_wrong_negative_class(tmp_path):
    f = write_predictions(tmp_path / "t.csv", ["a", "a"], np.array([0, 1]), np.full((2, 4), 0.25))
    with pytest.raises(EvaluationError, match="duplicate image ids"):
        read_predictions(f)
    g = write_predictions(tmp_path / "g.csv", ["a", "b"], np.array([0, 1]), np.full((2, 4), 0.25))
    with pytest.raises(EvaluationError, match="negative class 'normal'"):
        read_predictions(g, negative_class="normal")
    with pytest.raises(EvaluationError, match="differ from the configured classes"):
        read_predictions(g, classes=["healthy", "glioma"])
