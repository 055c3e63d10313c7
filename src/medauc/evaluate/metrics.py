"""Every metric medauc reports, computed for many bootstrap weights at once.

The metrics are computed from :class:`~medauc.evaluate.predictions.Predictions` (one predictions
file as arrays, see :mod:`medauc.evaluate.predictions`). Every metric is a function of per-image
indicator columns summed with weights: the plain estimate uses weight 1 for every image, a
bootstrap resample uses how often each image was drawn. :class:`MetricEngine` computes all metrics for a matrix of weights ``W`` (B, n) in a few
matrix products and one sort per score, so 2,000 resamples cost about as much as a few hundred
scikit-learn calls. Definitions (one sentence each) are in :data:`DEFINITIONS`.

Undefined metrics (a class absent from ``y_true``, no predicted positives for a PPV) are nan,
and the plain estimate warns with :class:`UndefinedMetricWarning`, as scikit-learn does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from medauc.errors import EvaluationError, UndefinedMetricWarning
from medauc.evaluate.predictions import Predictions
from medauc.evaluate.prevalence import npv_at, ppv_at, prevalence_key

# Metrics where lower is better; every other metric is better when higher.
LOWER_IS_BETTER = ("log_loss", "brier", "ece", "screening_brier", "screening_ece")


# ----------------------------------------------------------------------------- ranking statistics


class RankIndex:
    """One sort of a score vector, reused for every weight matrix: tied scores form one group."""

    def __init__(self, score: np.ndarray, positive: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.thresholds = s[self.starts]  # (G,) ascending distinct scores
        self.pos = positive[self.order].astype(np.float64)

    def group_weights(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted positives and negatives per distinct score, ascending: two (B, G) arrays."""
        ws = W[:, self.order]
        pos = np.add.reduceat(ws * self.pos, self.starts, axis=1)
        tot = np.add.reduceat(ws, self.starts, axis=1)
        return pos, tot - pos


def auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC (Mann-Whitney, ties count 1/2) per row of (B, G) group weights; nan without both classes."""
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.einsum("bg,bg->b", pos, neg_below + 0.5 * neg)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def ap_from_groups(pos: np.ndarray, neg: np.ndarray, prevalence: float | None = None) -> np.ndarray:
    """Average precision (step-wise, as scikit-learn's) per row of (B, G) group weights.

    With ``prevalence`` None, precision is the sample's own, tp / (tp + fp). With a prevalence
    pi, precision at each threshold is TPR pi / (TPR pi + FPR (1 - pi)): the AUPRC expected
    in a population with that prevalence and the same ROC curve.
    """
    pos_d = pos[:, ::-1]
    neg_d = neg[:, ::-1]
    tp = np.cumsum(pos_d, axis=1)
    fp = np.cumsum(neg_d, axis=1)
    p_tot = tp[:, -1:]
    n_tot = fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        if prevalence is None:
            prec = tp / (tp + fp)
        else:
            tpr = tp / p_tot
            fpr = fp / n_tot
            prec = tpr * prevalence / (tpr * prevalence + fpr * (1.0 - prevalence))
        prec = np.where(tp > 0, prec, 0.0)  # no positive above the threshold: adds no recall
        ap = np.einsum("bg,bg->b", pos_d, prec) / p_tot[:, 0]
    ok = (p_tot[:, 0] > 0) & ((n_tot[:, 0] > 0) | (prevalence is None))
    return np.where(ok, ap, np.nan)


def weighted_auc(W: np.ndarray, score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUC for each row of weights W (B, n); score (n,), positive (n,) bool -> (B,)."""
    idx = RankIndex(np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool))
    return auc_from_groups(*idx.group_weights(np.atleast_2d(W)))


def quantile_bins(score: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass bin index (n,) of each score: edges at the score quantiles, as sklearn's calibration_curve(strategy="quantile")."""
    edges = np.percentile(score, np.linspace(0, 100, n_bins + 1))
    return np.searchsorted(edges[1:-1], score)


def screening_threshold(val: Predictions, target_sensitivity: float) -> tuple[float, float, float]:
    """Largest threshold t on the validation screening score with sensitivity >= target.

    Returns (t, sensitivity, specificity) on validation; positive means score >= t. nan if the
    validation file has no positives.
    """
    if not (0.0 < target_sensitivity <= 1.0):
        raise EvaluationError(f"evaluate.target_sensitivity must be in (0, 1], got {target_sensitivity}")
    s = val.screening_score
    pos = val.positive
    if not pos.any():
        warnings.warn(f"{val.source}: no positive cases, no operating point can be chosen", UndefinedMetricWarning, stacklevel=2)
        return float("nan"), float("nan"), float("nan")
    ps = np.sort(s[pos])[::-1]
    k = max(1, math.ceil(target_sensitivity * ps.size - 1e-9))
    t = float(ps[k - 1])
    sens = float((s[pos] >= t).mean())
    spec = float((s[~pos] < t).mean()) if (~pos).any() else float("nan")
    return t, sens, spec


# ----------------------------------------------------------------------------- definitions

DEFINITIONS: dict[str, str] = {
    "accuracy": "Fraction of test images whose arg-max class is the true class.",
    "balanced_accuracy": "Mean over classes present in the test set of the per-class sensitivity (recall).",
    "auc_macro": "Unweighted mean over classes of the one-vs-rest ROC AUC of p(class); nan if any class has no cases.",
    "f1_macro": "Unweighted mean over classes of the per-class F1 = 2 TP / (2 TP + FP + FN) at the arg-max decision.",
    "log_loss": "Mean of -ln p(true class) (natural log; probabilities clipped at machine epsilon).",
    "brier": "Mean over images of the sum over classes of (p(class) - 1[true class])^2 (0 best, 2 worst).",
    "ece": "Expected calibration error of the arg-max confidence: sum over equal-mass bins of (bin share) x |accuracy - mean confidence|.",
    "auc_<class>": "One-vs-rest ROC AUC of p(class) for that class against all others (ties count one half).",
    "sensitivity_<class>": "Of the images of that class, the fraction predicted as that class (arg-max).",
    "specificity_<class>": "Of the images not of that class, the fraction not predicted as that class (arg-max).",
    "ppv_<class>": "Of the images predicted as that class (arg-max), the fraction truly of that class.",
    "f1_<class>": "Harmonic mean of sensitivity_<class> and ppv_<class>.",
    "screening_auc": "ROC AUC of the screening score 1 - p(negative class) for any positive class against the negative class.",
    "screening_auprc": "Average precision (area under the precision-recall curve, step-wise) of the screening score on the test set.",
    "screening_sensitivity": "Fraction of positive (non-negative-class) images whose arg-max class is a positive class.",
    "screening_specificity": "Fraction of negative-class images whose arg-max class is the negative class.",
    "screening_ppv": "Of images with a positive arg-max class, the fraction truly positive, at the test set's prevalence.",
    "screening_npv": "Of images with the negative arg-max class, the fraction truly negative, at the test set's prevalence.",
    "screening_f1": "F1 of the screening decision at the arg-max class: 2 TP / (2 TP + FP + FN).",
    "screening_brier": "Mean of (screening score - 1[positive])^2.",
    "screening_ece": "Expected calibration error of the screening score over equal-mass bins.",
    "op_sensitivity": "Screening sensitivity on the test set at the operating point (threshold on the screening score) chosen on the validation file.",
    "op_specificity": "Screening specificity on the test set at the validation-chosen operating point.",
    "op_ppv": "Screening PPV on the test set at the validation-chosen operating point, at the test set's prevalence.",
    "op_npv": "Screening NPV on the test set at the validation-chosen operating point, at the test set's prevalence.",
    "op_f1": "Screening F1 on the test set at the validation-chosen operating point.",
    "ppv@<prevalence>": "PPV expected at that prevalence from the test sensitivity and specificity (arg-max decision): sens p / (sens p + (1 - spec)(1 - p)).",
    "npv@<prevalence>": "NPV expected at that prevalence: spec (1 - p) / (spec (1 - p) + (1 - sens) p).",
    "op_ppv@<prevalence>": "PPV expected at that prevalence at the validation-chosen operating point.",
    "op_npv@<prevalence>": "NPV expected at that prevalence at the validation-chosen operating point.",
    "auprc@<prevalence>": "Average precision expected at that prevalence from the test ROC curve: precision = TPR p / (TPR p + FPR (1 - p)) at each threshold.",
    "net_benefit": "Decision curve analysis (Vickers and Elkin 2006), screening view: acting when 1 - p(negative) >= pt, net benefit = TP/n - FP/n x pt/(1 - pt), net true positives per scan (a false positive weighs pt/(1 - pt) of a true positive); at a clinical prevalence p: sens(pt) p - (1 - spec(pt))(1 - p) pt/(1 - pt), the score used as the risk as it is.",
    "treat_all": "Net benefit of acting on every scan: prevalence - (1 - prevalence) pt/(1 - pt); treating none has net benefit 0.",
    "advantage": "Net benefit of the model minus that of the better default (treat all or treat none) at the same pt: positive when acting on the model beats both.",
    "interval": "Percentile interval of a stratified bootstrap (test images resampled within each true class; the same resamples for every model, so comparisons are paired).",
    "delong": "DeLong's test: z = (AUC_a - AUC_b) / sd from the paired placement-value covariance (Sun and Xu 2014); two-sided normal p.",
    "paired_bootstrap": "Two-sided p = 2 x min(share of bootstrap differences <= 0, share >= 0), with a +1 correction; CI = percentile interval of the differences.",
    "holm": "Holm's step-down correction over the assessable comparisons of one table (one seed); significant = p_holm < 1 - level.",
}


# ----------------------------------------------------------------------------- the engine


class MetricEngine:
    """All metrics of one predictions file for any weight matrix W (B, n) -> {name: (B,)}."""

    def __init__(
        self,
        pred: Predictions,
        threshold: float | None = None,
        prevalences: Sequence[float] = (),
        n_bins: int = 15,
    ) -> None:
        if n_bins < 1:
            raise EvaluationError(f"evaluate.calibration_bins must be >= 1, got {n_bins}")
        for p in prevalences:
            if not (0.0 < p < 1.0):
                raise EvaluationError(f"evaluate.prevalences must lie strictly between 0 and 1, got {p}")
        self.pred = pred
        self.threshold = threshold if threshold is not None and np.isfinite(threshold) else None
        self.prevalences = list(prevalences)
        self.n_bins = n_bins
        y, probs, k = pred.y, pred.probs, len(pred.classes)
        self.k = k
        onehot = np.eye(k)[y]
        pred_cls = probs.argmax(axis=1)
        pos = pred.positive
        score = pred.screening_score
        spred = pred_cls != pred.negative
        conf = probs.max(axis=1)
        correct = (pred_cls == y).astype(np.float64)
        p_true = probs[np.arange(pred.n), y]
        cols: dict[str, np.ndarray] = {
            "one": np.ones(pred.n),
            "correct": correct,
            "nll": -np.log(np.clip(p_true, np.finfo(np.float64).eps, 1.0)),
            "brier": ((probs - onehot) ** 2).sum(axis=1),
            "s_p": pos.astype(np.float64),
            "s_tp": (pos & spred).astype(np.float64),
            "s_fp": (~pos & spred).astype(np.float64),
            "s_brier": (score - pos) ** 2,
        }
        for c in range(k):
            cols[f"p_{c}"] = (y == c).astype(np.float64)
            cols[f"pp_{c}"] = (pred_cls == c).astype(np.float64)
            cols[f"tp_{c}"] = ((y == c) & (pred_cls == c)).astype(np.float64)
        if self.threshold is not None:
            opred = score >= self.threshold
            cols["o_tp"] = (pos & opred).astype(np.float64)
            cols["o_fp"] = (~pos & opred).astype(np.float64)
        self.top_bins = quantile_bins(conf, n_bins)
        self.scr_bins = quantile_bins(score, n_bins)
        for b in range(n_bins):
            cols[f"ece_{b}"] = np.where(self.top_bins == b, correct - conf, 0.0)
            cols[f"sece_{b}"] = np.where(self.scr_bins == b, pos - score, 0.0)
        self.col_names = list(cols)
        self.col = {name: i for i, name in enumerate(self.col_names)}
        self.M = np.stack([cols[n] for n in self.col_names], axis=1)  # (n, J)
        self.class_rank = [RankIndex(probs[:, c], y == c) for c in range(k)]
        self.screen_rank = RankIndex(score, pos)
        self.conf, self.correct, self.score = conf, correct, score

    def compute(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for each row of W (B, n) of non-negative weights -> {name: (B,) float64}."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        S = W @ self.M  # (B, J) weighted sums of every indicator column

        def s(name: str) -> np.ndarray:
            return S[:, self.col[name]]

        out: dict[str, np.ndarray] = {}
        classes = self.pred.classes
        with np.errstate(invalid="ignore", divide="ignore"):
            tot = s("one")
            out["accuracy"] = s("correct") / tot
            sens = np.stack([s(f"tp_{c}") / s(f"p_{c}") for c in range(self.k)], axis=1)
            present = np.stack([s(f"p_{c}") > 0 for c in range(self.k)], axis=1)
            out["balanced_accuracy"] = np.where(present.any(axis=1), np.nansum(np.where(present, sens, 0.0), axis=1) / present.sum(axis=1), np.nan)
            aucs = np.stack([auc_from_groups(*r.group_weights(W)) for r in self.class_rank], axis=1)
            out["auc_macro"] = aucs.mean(axis=1)
            f1 = np.stack([2 * s(f"tp_{c}") / (s(f"p_{c}") + s(f"pp_{c}")) for c in range(self.k)], axis=1)
            out["f1_macro"] = f1.mean(axis=1)
            out["log_loss"] = s("nll") / tot
            out["brier"] = s("brier") / tot
            out["ece"] = np.abs(S[:, [self.col[f"ece_{b}"] for b in range(self.n_bins)]]).sum(axis=1) / tot
            for c, name in enumerate(classes):
                out[f"auc_{name}"] = aucs[:, c]
                out[f"sensitivity_{name}"] = sens[:, c]
                out[f"specificity_{name}"] = (tot - s(f"p_{c}") - s(f"pp_{c}") + s(f"tp_{c}")) / (tot - s(f"p_{c}"))
                out[f"ppv_{name}"] = s(f"tp_{c}") / s(f"pp_{c}")
                out[f"f1_{name}"] = f1[:, c]
            # screening view
            sp, stp, sfp = s("s_p"), s("s_tp"), s("s_fp")
            sn = tot - sp
            stn, sfn = sn - sfp, sp - stp
            spos, sneg = self.screen_rank.group_weights(W)
            out["screening_auc"] = auc_from_groups(spos, sneg)
            out["screening_auprc"] = ap_from_groups(spos, sneg)
            out["screening_sensitivity"] = stp / sp
            out["screening_specificity"] = stn / sn
            out["screening_ppv"] = stp / (stp + sfp)
            out["screening_npv"] = stn / (stn + sfn)
            out["screening_f1"] = 2 * stp / (sp + stp + sfp)
            out["screening_brier"] = s("s_brier") / tot
            out["screening_ece"] = np.abs(S[:, [self.col[f"sece_{b}"] for b in range(self.n_bins)]]).sum(axis=1) / tot
            if self.threshold is not None:
                otp, ofp = s("o_tp"), s("o_fp")
                otn, ofn = sn - ofp, sp - otp
                out["op_sensitivity"] = otp / sp
                out["op_specificity"] = otn / sn
                out["op_ppv"] = otp / (otp + ofp)
                out["op_npv"] = otn / (otn + ofn)
                out["op_f1"] = 2 * otp / (sp + otp + ofp)
            # prevalence: from sensitivity, specificity and the ROC curve, never by resampling
            for p in self.prevalences:
                key = prevalence_key(p)
                se, spc = out["screening_sensitivity"], out["screening_specificity"]
                out[f"ppv@{key}"] = ppv_at(se, spc, p)
                out[f"npv@{key}"] = npv_at(se, spc, p)
                if self.threshold is not None:
                    out[f"op_ppv@{key}"] = ppv_at(out["op_sensitivity"], out["op_specificity"], p)
                    out[f"op_npv@{key}"] = npv_at(out["op_sensitivity"], out["op_specificity"], p)
                out[f"auprc@{key}"] = ap_from_groups(spos, sneg, prevalence=p)
        return out

    def confusion_matrix(self) -> np.ndarray:
        """(K, K) counts, rows = true class, columns = arg-max class."""
        k = self.k
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (self.pred.y, self.pred.probs.argmax(axis=1)), 1)
        return cm

    def reliability(self) -> list[dict[str, float | int | str]]:
        """Reliability-curve rows (curve, bin, count, mean_predicted, observed) for arg-max confidence and screening score."""
        rows: list[dict[str, float | int | str]] = []
        for curve, bins, predicted, observed in (
            ("top_label", self.top_bins, self.conf, self.correct),
            ("screening", self.scr_bins, self.score, self.pred.positive.astype(np.float64)),
        ):
            for b in range(self.n_bins):
                m = bins == b
                if m.any():
                    rows.append({
                        "curve": curve, "bin": b, "count": int(m.sum()),
                        "mean_predicted": float(predicted[m].mean()), "observed": float(observed[m].mean()),
                    })
        return rows


def point_metrics(engine: MetricEngine) -> dict[str, float]:
    """Plain estimates (weight 1 per image), warning once about every undefined (nan) metric."""
    values = {k: float(v[0]) for k, v in engine.compute(np.ones((1, engine.pred.n))).items()}
    undefined = [k for k, v in values.items() if not np.isfinite(v)]
    if undefined:
        counts = np.bincount(engine.pred.y, minlength=engine.k)
        absent = [c for c, n in zip(engine.pred.classes, counts) if n == 0]
        why = f" (classes absent from the labels: {absent})" if absent else ""
        warnings.warn(
            f"{engine.pred.source}: metrics undefined for these data are nan: {', '.join(undefined)}{why}",
            UndefinedMetricWarning, stacklevel=2,
        )
    return values
