"""Bootstrap of every metric: 2,000 resamples, n = 2,109, 4 classes, 5 models (goal: <= 30 s and
>= 20x faster than looping scikit-learn over the resamples); optionally the CI coverage study.

    .venv/bin/python benchmarks/bootstrap_speed.py [--loop-resamples 20] [--coverage]

The scikit-learn loop computes the same metrics (4-class, per class, screening, operating point,
calibration) for each resample with scikit-learn calls; it is timed on ``--loop-resamples``
resamples and extrapolated to 2,000. ``--coverage`` runs the coverage study of 95% intervals on
simulated data (2,000 data sets per metric), the long version of the test in
tests/test_evaluate_bootstrap.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn import metrics as skm

from medauc.config import load_config
from medauc.evaluate.bootstrap import bootstrap_many, bootstrap_weights, percentile_interval
from medauc.evaluate.compare import evaluate_predictions
from medauc.evaluate.metrics import MetricEngine, RankIndex, auc_from_groups
from medauc.evaluate.predictions import read_predictions
from medauc.evaluate.synthetic import simulate_run

STUDY_TEST = (600, 487, 494, 528)  # healthy, glioma, meningioma, pituitary: the study's 2,109 test images
MODELS = {"resnet18": 3.0, "densenet121": 3.1, "efficientnet_b0": 3.3, "vit": 3.2, "vit_small": 3.0}


def sklearn_metrics(y: np.ndarray, p: np.ndarray, threshold: float, bins: int = 15) -> dict[str, float]:
    """The metrics of MetricEngine, one resample, with scikit-learn calls."""
    labels = [0, 1, 2, 3]
    yhat = p.argmax(1)
    pos, score = y != 0, 1 - p[:, 0]
    spred, opred = yhat != 0, score >= threshold
    out = {
        "accuracy": skm.accuracy_score(y, yhat),
        "balanced_accuracy": skm.balanced_accuracy_score(y, yhat),
        "auc_macro": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
        "f1_macro": skm.f1_score(y, yhat, average="macro"),
        "log_loss": skm.log_loss(y, p, labels=labels),
        "brier": skm.brier_score_loss(y, p, labels=labels, scale_by_half=False),
        "screening_auc": skm.roc_auc_score(pos, score),
        "screening_auprc": skm.average_precision_score(pos, score),
        "screening_sensitivity": skm.recall_score(pos, spred),
        "screening_specificity": skm.recall_score(~pos, ~spred),
        "screening_ppv": skm.precision_score(pos, spred),
        "screening_npv": skm.precision_score(~pos, ~spred),
        "screening_f1": skm.f1_score(pos, spred),
        "screening_brier": skm.brier_score_loss(pos, score),
        "op_sensitivity": skm.recall_score(pos, opred),
        "op_specificity": skm.recall_score(~pos, ~opred),
        "op_ppv": skm.precision_score(pos, opred),
        "op_f1": skm.f1_score(pos, opred),
    }
    sens = skm.recall_score(y, yhat, average=None, labels=labels)
    ppv = skm.precision_score(y, yhat, average=None, labels=labels)
    f1 = skm.f1_score(y, yhat, average=None, labels=labels)
    for c in labels:
        out[f"auc_{c}"] = skm.roc_auc_score(y == c, p[:, c])
        out[f"spec_{c}"] = skm.recall_score(y != c, yhat != c)
        out[f"sens_{c}"], out[f"ppv_{c}"], out[f"f1_{c}"] = sens[c], ppv[c], f1[c]
    from sklearn.calibration import calibration_curve

    for name, truth, conf in (("ece", yhat == y, p.max(1)), ("screening_ece", pos, score)):
        pt, pp = calibration_curve(truth, conf, n_bins=bins, strategy="quantile")
        edges = np.percentile(conf, np.linspace(0, 100, bins + 1))
        counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=bins)
        counts = counts[counts > 0]
        out[name] = float(np.sum(counts / counts.sum() * np.abs(pt - pp)))
    return out


def speed(loop_resamples: int) -> bool:
    cfg = load_config("demo", ["evaluate.n_bootstrap=2000"])
    with tempfile.TemporaryDirectory() as tmp:
        files = simulate_run(tmp, MODELS, n_per_class=STUDY_TEST, n_val_per_class=(150, 120, 120, 130))
        vals = {m: {0: Path(f[0]).with_name("val.csv")} for m, f in files.items()}
        preds = [read_predictions(f[0]) for f in files.values()]
        engines = [MetricEngine(p, threshold=0.5, prevalences=cfg.evaluate.prevalences) for p in preds]
        t = time.perf_counter()
        reps = bootstrap_many(preds[0].y, 2000, 0, {i: e.compute for i, e in enumerate(engines)})
        t_vec = time.perf_counter() - t
        n_metrics = len(reps[0])
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluate_predictions(files, cfg, val_files=vals)
        t_full = time.perf_counter() - t
        # scikit-learn loop on a few resamples of the same kind, extrapolated
        rng = np.random.default_rng(1)
        w = bootstrap_weights(preds[0].y, loop_resamples, rng)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for row in w:
                idx = np.repeat(np.arange(row.size), row.astype(int))
                for p in preds:
                    sklearn_metrics(p.y[idx], p.probs[idx], 0.5)
        t_loop = (time.perf_counter() - t) / loop_resamples * 2000
    speedup = t_loop / t_vec
    ok = t_vec <= 30 and speedup >= 20
    print(f"bootstrap, 2,000 resamples x 5 models x {n_metrics} metrics, n = {sum(STUDY_TEST):,}: {t_vec:.1f} s (goal <= 30 s)")
    print(f"  scikit-learn loop: {t_loop:.0f} s extrapolated from {loop_resamples} resamples; speed-up {speedup:.0f}x (goal >= 20x)")
    print(f"  whole evaluate_predictions (reading files, bootstrap, DeLong and bootstrap comparisons, Holm): {t_full:.1f} s")
    print("PASS" if ok else "FAIL")
    return ok


def coverage(n_sets: int = 2000, n_resamples: int = 1000) -> None:
    rng = np.random.default_rng(7)
    d = 1.19
    true_auc = norm.cdf(d / np.sqrt(2))
    for n_pos, n_neg in ((100, 100), (50, 450), (500, 500)):
        y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
        hits = 0
        for _ in range(n_sets):
            s = rng.standard_normal(y.size) + d * y
            w = bootstrap_weights(y.astype(int), n_resamples, rng)
            low, high = percentile_interval(auc_from_groups(*RankIndex(s, y).group_weights(w)), 0.95)
            hits += low <= true_auc <= high
        print(f"coverage of 95% AUC interval, {n_pos} positives + {n_neg} negatives, true AUC {true_auc:.3f}: "
              f"{hits / n_sets:.3f} ({n_sets} data sets, {n_resamples} resamples)")
    for n, p_true in ((200, 0.85), (2109, 0.98)):
        correct = rng.random((n_sets, n)) < p_true
        w = bootstrap_weights(np.zeros(n), n_resamples, rng)
        reps = (correct.astype(float) @ w.T) / n
        low, high = np.quantile(reps, [0.025, 0.975], axis=1)
        print(f"coverage of 95% accuracy interval, n = {n}, true accuracy {p_true}: {np.mean((low <= p_true) & (p_true <= high)):.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loop-resamples", type=int, default=20)
    ap.add_argument("--coverage", action="store_true", help="also run the CI coverage study (minutes)")
    args = ap.parse_args()
    ok = speed(args.loop_resamples)
    if args.coverage:
        coverage()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
