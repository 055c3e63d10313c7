"""The study's four answers (medauc.answers) from hand-made files: each sentence and the numbers it rests on.

Expected sentences are written out by hand from the inputs, so a changed format, sign, threshold or
filter shows as a failing string comparison.
"""

import numpy as np
import pandas as pd

from medauc.answers import best_by_auc, lesion, not_learnt, question_one, restoration, study_answers


def _summaries(acc, auc, n_seeds=1, auc_metric="auc_macro"):
    return {m: {"accuracy": {"mean": acc[m], "n_seeds": n_seeds}, auc_metric: {"mean": auc[m], "n_seeds": n_seeds}}
            for m in acc}


def _row(metric, a, b, significant, p, p_holm, test, seed=0, note="", detectable=float("nan")):
    return {"table": "t", "seed": seed, "metric": metric, "model_a": a, "model_b": b, "significant": significant,
            "p_value": p, "p_holm": p_holm, "test": test, "note": note, "detectable": detectable,
            "family": "primary" if metric == "auc_macro" else "secondary", "family_size": 6}


def test_question_one_names_a_discordant_pair_with_each_test():
    summaries = _summaries({"a": 0.80, "b": 0.70}, {"a": 0.85, "b": 0.90})
    rows = [_row("accuracy", "a", "b", True, 0.004, 0.012, "paired_bootstrap"),
            _row("auc_macro", "a", "b", False, 0.2, 0.4, "delong", detectable=0.0312)]
    q = question_one(summaries, rows, ["a", "b"], "auc_macro", 0.95)
    assert q["ranked_by_accuracy"] == ["a", "b"] and q["ranked_by_auc"] == ["b", "a"]
    (pair,) = q["pairs"]
    assert (pair["accuracy_winner"], pair["auc_winner"]) == ("a", "b")
    assert (pair["accuracy_significant"], pair["auc_significant"]) == (True, False)
    assert pair["sentence"] == (
        "a's accuracy is higher than b's by 0.1000 (paired bootstrap, p = 0.004, Holm-adjusted 0.012; secondary family: "
        "accuracy, 6 pairs): significant; but b's macro AUC is higher than a's by 0.0500 (delong, p = 0.20, Holm-adjusted "
        "0.4; primary family: macro AUC, 6 pairs): not significant "
        "(this test set could detect only differences of 0.0312 or more).")
    assert q["answer"] == (
        "Best by accuracy: a (0.8000); best by macro AUC: b (0.9000). Accuracy and macro AUC rank 1 pair(s) of models "
        "differently; in 1 of them at least one of the two differences is significant, so for those pairs the accuracy "
        "winner is not the macro AUC winner.")


def test_question_one_over_seeds_counts_the_seeds_where_a_difference_is_significant():
    summaries = _summaries({"a": 0.80, "b": 0.70}, {"a": 0.85, "b": 0.90}, n_seeds=2)
    rows = [_row("accuracy", "a", "b", True, 0.001, 0.01, "paired_bootstrap", seed=0),
            _row("accuracy", "a", "b", False, 0.2, 0.4, "paired_bootstrap", seed=1)]
    (pair,) = question_one(summaries, rows, ["a", "b"], "auc_macro", 0.95)["pairs"]
    assert pair["sentence"].startswith(
        "a's accuracy is higher than b's by 0.1000 on average over 2 seeds; the difference is significant "
        "(Holm-adjusted p < 0.05, secondary family: accuracy of each seed) in 1 of 2 seeds; but b's macro AUC")
    assert pair["accuracy_significant"] is False  # significant in one seed of two, not in every seed


def test_question_one_agreeing_undefined_and_single_model():
    same = question_one(_summaries({"a": 0.8, "b": 0.7}, {"a": 0.9, "b": 0.8}, auc_metric="screening_auc"), [], ["a", "b"],
                        "screening_auc", 0.95)
    assert same["pairs"] == [] and same["answer"] == (
        "Best by accuracy: a (0.8000); best by screening AUC: a (0.9000). Accuracy and screening AUC rank the models the same way.")
    undefined = question_one(_summaries({"a": 0.8, "b": 0.7}, {"a": float("nan"), "b": 0.8}), [], ["a", "b"], "auc_macro", 0.95)
    assert undefined["ranked_by_auc"] == ["b", "a"]  # nan last
    assert undefined["answer"].endswith("Accuracy or macro AUC is undefined for a on these data, so the two rankings cannot be compared.")
    one = question_one(_summaries({"a": 0.8}, {"a": 0.9}), [], ["a"], "auc_macro", 0.95)
    assert one["answer"] == "Only one model was evaluated (a): there is nothing to rank or compare." and one["pairs"] == []


def _checks(d_low=0.6, flip=-0.03):
    return {
        "a_predicted_healthy": {"share": 0.8, "ci": [0.7, 0.9], "study_share": 0.9766,
                                "baseline": {"test_tumour_called_healthy": 0.45}},
        "d_artefact_detectability": {"auc": 0.65, "ci": [d_low, 0.75]},
        "e_shortcut_flip": {"comparison": {"difference": flip, "ci": [-0.06, 0.01]}},
    }


def _strategies(p_holm=0.6, note=""):
    other = {"difference": 0.5, "p_value": 0.001, "p_holm": 0.001, "note": "", "detectable": 0.1}
    return {"paired_tests": [
        {"strategy": "duplicate", "metric": "auc_macro", **other},  # mutation caught: another strategy's test used
        {"strategy": "balanced", "metric": "accuracy", **other},
        {"strategy": "balanced", "metric": "auc_macro", "difference": 0.02, "p_value": 0.3, "p_holm": p_holm,
         "note": note, "detectable": 0.08},
    ]}


def test_restoration_answer_from_the_checks_and_the_paired_test():
    q = restoration(_checks(), _strategies(), 0.95)
    assert q["text"] == (
        "2. Does restoration-based augmentation simulate clinical imbalance? In this run, a classifier trained on the "
        "original data calls 80.0% [70.0, 90.0] of the generated images healthy (the study reported 97.66%), while it "
        "calls 45.0% of the real tumour test images healthy too, so that share alone does not show the generated images "
        "are realistic; restored and original healthy images can be told apart from simple image statistics with AUC "
        "0.650 [0.600, 0.750], so no clear restoration signature was found; after restoration, tumour test images are "
        "called healthy 3.0 percentage points less often by the augmented-data model than by the balanced-data model "
        "(difference [-6.0, 1.0]; a positive difference means 'looks restored' has become 'healthy'); against training "
        "on the balanced original data, restoration changes macro AUC by -0.0200 (p = 0.3000, Holm 0.6000: not "
        "significant; this test set could detect only differences of 0.080 or more).")
    assert q["predicted_healthy"] == {"share": 0.8, "ci": [0.7, 0.9], "study_share": 0.9766, "test_tumour_called_healthy": 0.45}
    assert q["artefact_detectability"]["signature"] is False  # mutation caught: a lower bound of 0.6 read as a signature
    assert q["shortcut_flip"] == {"difference": -0.03, "ci": [-0.06, 0.01]}
    # the file's difference is balanced − restoration; the answer reports restoration − balanced
    assert q["auc_change"]["difference"] == -0.02 and q["auc_change"]["significant"] is False


def test_restoration_signature_significance_and_note():
    q = restoration(_checks(d_low=0.61, flip=0.05), _strategies(p_holm=0.01), 0.95)
    assert "[0.610, 0.750], so the restorations carry a detectable signature" in q["text"]
    assert "called healthy 5.0 percentage points more often" in q["text"]
    assert q["text"].endswith("(p = 0.3000, Holm 0.0100: significant).") and q["auc_change"]["significant"] is True
    noted = restoration({}, _strategies(note="not assessable: too few"), 0.95)
    assert noted["text"].endswith("Holm 0.6000: not assessable: too few).") and list(noted) == ["text", "auc_change"]
    assert restoration({}, {}, 0.95) is None


def _metrics(means, seeds=("1", "0")):
    return {"models": {m: {"summary": {"auc_macro": {"mean": v}} if v is not None else {}, "seeds": {s: {} for s in seeds}}
                       for m, v in means.items()},
            "power": 0.9, "unit": "patients", "n_patients": 12}


def test_best_by_auc_counts_the_first_seeds_tests_of_the_best_model():
    metrics = _metrics({"a": 0.9, "b": 0.8, "c": 0.85, "d": None})
    nan = float("nan")
    comparisons = pd.DataFrame([
        _row("auc_macro", "a", "b", True, 0.001, 0.01, "delong", note=None, detectable=0.05) | {"difference": 0.1},
        _row("auc_macro", "c", "a", False, 0.2, 0.3, "delong", note=None, detectable=0.07) | {"difference": -0.05},
        _row("auc_macro", "a", "d", None, nan, nan, "delong", note="not assessable: too few") | {"difference": nan},
        # left out: another seed, another metric, a pair without the best model
        _row("auc_macro", "a", "b", True, 0.001, 0.01, "delong", seed=1, note=None) | {"difference": 0.1},
        _row("accuracy", "a", "c", True, 0.001, 0.01, "paired_bootstrap", note=None) | {"difference": 0.1},
        _row("auc_macro", "b", "c", True, 0.001, 0.01, "delong", note=None) | {"difference": 0.1},
    ])
    q = best_by_auc(metrics, comparisons, "auc_macro", 0.95)
    assert q["text"] == (
        "3. Which model is best by AUC? a has the highest macro AUC (0.9000); its lead is significant (paired, "
        "Holm-corrected within the primary family: macro AUC, 6 pairs of seed 0) against 1 of 3 other models (b); 1 of "
        "these comparisons are not assessable on these data (see Table 1), "
        "so the ranking at the top is not established by these data; not significant against c (difference 0.050, "
        "smallest detectable 0.070) at 90% power and the family's Bonferroni level, over patients (n=12).")
    assert {k: q[k] for k in ("best", "seed", "n_compared", "significant_against", "n_not_assessable", "power")} == {
        "best": "a", "seed": "0", "n_compared": 3, "significant_against": ["b"], "n_not_assessable": 1, "power": 0.9}
    assert q["means"] == {"a": 0.9, "b": 0.8, "c": 0.85}
    assert q["not_significant"] == [{"model": "c", "difference": 0.05, "detectable": 0.07}]


def test_best_by_auc_with_one_model_or_none():
    q = best_by_auc(_metrics({"a": 0.9}), None, "auc_macro", 0.95)
    assert q["text"] == ("3. Which model is best by AUC? Only one model was evaluated (a, macro AUC 0.9000): "
                         "there is nothing to compare it with.")
    assert best_by_auc(_metrics({"a": None}), None, "auc_macro", 0.95) is None
    assert best_by_auc(None, None, "auc_macro", 0.95) is None


def test_lesion_reads_each_models_first_method():
    explain = {"models": {
        "r": {"methods": {"gradcam": {"sanity": {"verdict": "not_better"}}, "gradcampp": {"sanity": {"verdict": "better"}}}},
        "v": {"methods": {"gradcam": {"sanity": {"verdict": "better"}}}},
        "e": {"methods": {}},
    }}
    q = lesion(explain)
    assert q["text"] == ("4. Do the models look at the lesion? 1 of 3 models localise the lesion clearly better than their "
                         "randomised twins (pointing game and energy ratio against the true masks): v.")
    assert q["verdicts"] == {"r": "not_better", "v": "better", "e": None} and q["better"] == ["v"]
    assert lesion({"models": {}}) is None


def test_study_answers_in_order_and_only_where_the_files_exist():
    q1 = question_one(_summaries({"a": 0.8, "b": 0.7}, {"a": 0.9, "b": 0.8}), [], ["a", "b"], "auc_macro", 0.95)
    metrics = {**_metrics({"a": 0.9, "b": 0.8}), "question_1": q1}
    explain = {"models": {"a": {"methods": {"gradcam": {"sanity": {"verdict": "better"}}}}}}
    found = study_answers(metrics, None, _strategies(), _checks(), explain)
    assert list(found) == ["q1_accuracy_vs_auc", "q2_restoration", "q3_best_by_auc", "q4_lesion"]
    assert found["q1_accuracy_vs_auc"]["text"] == "1. Do the models that win by accuracy also win by AUC? " + q1["answer"]
    assert "answer" not in found["q1_accuracy_vs_auc"] and found["q1_accuracy_vs_auc"]["ranked_by_auc"] == ["a", "b"]
    assert study_answers(None, None, None, None, None) == {}
    assert list(study_answers(None, None, _strategies(), None, None)) == ["q2_restoration"]


def _model(counts, auc_low, auc_high, classes=("healthy", "glioma")):
    return {"seeds": {"3": {"confusion_matrix": {"classes": list(classes), "counts": counts},
                            "metrics": {"auc_macro": {"value": 0.5, "low": auc_low, "high": auc_high}}}}}


def test_not_learnt_names_collapsed_and_chance_models():
    metrics = {"models": {
        "flat": _model([[10, 0], [10, 0]], 0.4, 0.6),
        "good": _model([[9, 1], [2, 8]], 0.7, 0.9),
        # at the thresholds: 19 of 20 predictions in one class (= ONE_CLASS_SHARE), an interval reaching exactly 0.5
        "edge": _model([[10, 0], [9, 1]], 0.5, 0.8),
        "undefined": _model([[0, 0], [0, 0]], np.nan, np.nan),
    }}
    assert not_learnt(metrics, label="strategy") == [
        "strategy flat (seed 3) has not learnt to tell the classes apart: it predicts healthy for 20 of 20 test images; "
        "its macro AUC interval [0.4000, 0.6000] reaches 0.5, chance.",
        "strategy edge (seed 3) has not learnt to tell the classes apart: it predicts healthy for 19 of 20 test images; "
        "its macro AUC interval [0.5000, 0.8000] reaches 0.5, chance.",
    ]


def test_docstring_example_runs():
    import doctest

    (test,) = doctest.DocTestFinder(recurse=False).find(study_answers, "study_answers", globs={"study_answers": study_answers})
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and len(test.examples) >= 3
