"""The study's four answers (``STUDY.md``, "Research questions"), and a fifth, computed as data from a run's files.

Question 1 is answered at evaluation time by :func:`question_one` (``metrics.json``'s ``question_1``);
:func:`study_answers` gathers all four, each as a sentence (the report prints it as it is) and the
numbers the sentence rests on. The report writes them to ``results.json``: the sentences under
``answers``, the numbers under ``answer_data``, both keyed by question (a question whose stage has
not run is absent):

- ``q1_accuracy_vs_auc``: ``question_1`` without its ``answer``: ``auc_metric``,
  ``ranked_by_accuracy`` and ``ranked_by_auc`` (model names, best first), ``accuracy`` and ``auc``
  (``{model: seed mean}``), ``n_seeds``, ``pairs`` (the discordant pairs: winners, differences,
  whether each is significant, the sentence);
- ``q2_restoration``: each present of ``predicted_healthy`` (check a: ``share`` of generated images
  called healthy, its ``ci``, the ``study_share`` reported, ``test_tumour_called_healthy``),
  ``artefact_detectability`` (check d: ``auc``, ``ci``, ``signature``: CI above 0.6),
  ``shortcut_flip`` (check e: ``difference`` of flip rates restoration − balanced, ``ci``), and
  ``auc_change`` (macro AUC restoration − balanced, first of the strategies' paired tests:
  ``difference``, ``p_value``, ``p_holm``, ``significant``, ``note``, ``detectable``); shares in [0, 1];
- ``q3_best_by_auc``: ``metric`` (``evaluate.primary_metric``), ``means`` (``{model: seed mean}``),
  ``best``; with two models or more and ``comparisons.csv``: ``seed`` (the best model's first seed),
  ``family`` (the Holm family the verdicts come from: the primary one, in words), ``n_compared``,
  ``significant_against`` (models, Holm-adjusted within that family), ``n_not_assessable``,
  ``not_significant`` (``{model, difference, detectable}``; detectable at Bonferroni's alpha/m), ``power``;
- ``q4_lesion``: ``verdicts`` (``{model: sanity verdict of its first CAM method}``) and ``better``
  (the models whose maps localise clearly better than their randomised twins');
- ``q5_external`` (with ``evaluate.external``): ``external.json``'s ``question_5`` (:func:`question_five`): ``metric``,
  ``winner``, ``holds_everywhere``, ``sites`` (per set: ``holds``, ``site_best``, ``winner_value``, ``change``, the test).

:func:`not_learnt` names the models that did not learn (the report's warnings under Tables 1 and 2).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from medauc.evaluate.metrics import LOWER_IS_BETTER
from medauc.formatting import ci_unit, fmt, fmt_detectable, fmt_est, fmt_p

# Differences this small are float rounding of equal values (e.g. means of the same counts).
TIE = 1e-12
LABELS = {"auc_macro": "macro AUC", "screening_auc": "screening AUC"}  # the primary metrics, in words


def p_words(p: float) -> str:
    """A p-value as the answers write it: ``"p = 0.37"``, ``"p = 0.0042"``, ``"p < 0.001"``."""
    if not np.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


def family_name(metric_label: str, family: Any, size: Any = None) -> str:
    """Which Holm family a verdict comes from, in words: "primary family: macro AUC, 6 pairs"."""
    kind = family if isinstance(family, str) and family else "secondary"
    pairs = f", {int(size)} pair{'s' if int(size) != 1 else ''}" if _number(size) is not None and np.isfinite(float(size)) else ""
    return f"{kind} family: {metric_label}{pairs}"


def _claim(metric_label: str, metric: str, winner: str, loser: str, rows: list[dict[str, Any]],
           means: dict[str, float], n_seeds: int, level: float) -> tuple[str, bool]:
    """One plain sentence about ``winner`` beating ``loser`` on ``metric``, and whether it is significant in every seed;
    the sentence names the Holm family (:mod:`medauc.evaluate.paired`) its verdict comes from."""
    diff = means[winner] - means[loser]
    verb = "lower" if metric in LOWER_IS_BETTER else "higher"
    mine = [r for r in rows if r["metric"] == metric and {r["model_a"], r["model_b"]} == {winner, loser}]
    sig = [r for r in mine if r["significant"]]
    if n_seeds == 1 and mine:
        r = mine[0]
        holm_note = f", Holm-adjusted {r['p_holm']:.2g}" if np.isfinite(r["p_holm"]) and r["p_holm"] != r["p_value"] else ""
        holm_note += f"; {family_name(metric_label, r['family'], r.get('family_size'))}" if r.get("family") else ""
        verdict = (r["note"] or "not assessable") if r["significant"] is None else "significant" if r["significant"] else (
            "not significant" + detectable_clause(r.get("detectable")))
        return (
            f"{winner}'s {metric_label} is {verb} than {loser}'s by {abs(diff):.4f} "
            f"({r['test'].replace('_', ' ')}, {p_words(r['p_value'])}{holm_note}): {verdict}",
            bool(r["significant"]),
        )
    family = f", {family_name(metric_label, mine[0]['family'])} of each seed" if mine and mine[0].get("family") else ""
    return (
        f"{winner}'s {metric_label} is {verb} than {loser}'s by {abs(diff):.4f} on average over {n_seeds} seeds; "
        f"the difference is significant (Holm-adjusted p < {1 - level:.2g}{family}) in {len(sig)} of {len(mine)} seeds",
        bool(mine) and len(sig) == len(mine),
    )


def detectable_clause(detectable: Any) -> str:
    """" (this test set could detect only differences of 0.031 or more)", or "" when undefined."""
    if detectable is None or not np.isfinite(detectable):
        return ""
    return f" (this test set could detect only differences of {detectable:.3g} or more)"


def _ranked(values: dict[str, float]) -> list[str]:
    """Names by value, highest first; undefined (nan) values last."""
    return sorted(values, key=lambda m: (0, -values[m]) if np.isfinite(values[m]) else (1, 0.0))


def _best(label: str, ranked: list[str], values: dict[str, float]) -> str:
    top = ranked[0]
    if not np.isfinite(values[top]):
        return f"{label[0].upper()}{label[1:]} is undefined for these data"
    return f"Best by {label}: {top} ({values[top]:.4f})"


def question_one(
    summaries: dict[str, dict[str, Any]], comparisons: list[dict[str, Any]], models: list[str],
    auc_metric: str, level: float,
) -> dict[str, Any]:
    """Do the models that win by accuracy also win by AUC? Rankings, discordant pairs, a plain answer.

    ``auc_metric``: the primary metric (``evaluate.primary_metric``); each pair's verdicts come from the
    accuracy family (secondary) and the primary family, and the sentences name them."""
    acc = {m: summaries[m]["accuracy"]["mean"] for m in models}
    auc = {m: summaries[m][auc_metric]["mean"] for m in models}
    n_seeds = min(summaries[m]["accuracy"]["n_seeds"] for m in models)
    by_acc = _ranked(acc)
    by_auc = _ranked(auc)
    auc_label = LABELS.get(auc_metric, auc_metric)
    if len(models) < 2:
        # Same keys as below, so that every reader (report, CLI) handles one model like several.
        return {
            "auc_metric": auc_metric, "ranked_by_accuracy": by_acc, "ranked_by_auc": by_auc,
            "accuracy": acc, "auc": auc, "n_seeds": n_seeds, "pairs": [],
            "answer": f"Only one model was evaluated ({models[0]}): there is nothing to rank or compare.",
        }
    pairs = []
    for ma, mb in itertools.combinations(models, 2):
        if not all(np.isfinite(v) for v in (acc[ma], acc[mb], auc[ma], auc[mb])):
            continue
        d_acc, d_auc = acc[ma] - acc[mb], auc[ma] - auc[mb]
        if abs(d_acc) > TIE and abs(d_auc) > TIE and d_acc * d_auc < 0:
            acc_win, acc_lose = (ma, mb) if acc[ma] > acc[mb] else (mb, ma)
            s_acc, sig_acc = _claim("accuracy", "accuracy", acc_win, acc_lose, comparisons, acc, n_seeds, level)
            s_auc, sig_auc = _claim(auc_label, auc_metric, acc_lose, acc_win, comparisons, auc, n_seeds, level)
            pairs.append({
                "accuracy_winner": acc_win, "auc_winner": acc_lose,
                "accuracy_difference": acc[acc_win] - acc[acc_lose], "auc_difference": auc[acc_lose] - auc[acc_win],
                "accuracy_significant": sig_acc, "auc_significant": sig_auc,
                "sentence": f"{s_acc}; but {s_auc}.",
            })
    second = _best(auc_label, by_auc, auc)
    leaders = f"{_best('accuracy', by_acc, acc)}; {second[0].lower()}{second[1:]}."
    undefined = [m for m in models if not (np.isfinite(acc[m]) and np.isfinite(auc[m]))]
    if not pairs and undefined:
        answer = (f"{leaders} Accuracy or {auc_label} is undefined for {', '.join(undefined)} on these data, "
                  "so the two rankings cannot be compared.")
    elif not pairs:
        answer = f"{leaders} Accuracy and {auc_label} rank the models the same way."
    else:
        n_sig = sum(p["accuracy_significant"] or p["auc_significant"] for p in pairs)
        if n_sig == 0:
            tail = ("none of these differences is significant, so these data do not show that the "
                    f"accuracy ranking and the {auc_label} ranking really differ.")
        else:
            tail = (f"in {n_sig} of them at least one of the two differences is significant, so for those pairs "
                    f"the accuracy winner is not the {auc_label} winner.")
        answer = f"{leaders} Accuracy and {auc_label} rank {len(pairs)} pair(s) of models differently; {tail}"
    return {
        "auc_metric": auc_metric, "ranked_by_accuracy": by_acc, "ranked_by_auc": by_auc,
        "accuracy": acc, "auc": auc, "n_seeds": n_seeds, "pairs": pairs, "answer": answer,
    }


# ----------------------------------------------------------------------------- the four answers

ONE_CLASS_SHARE = 0.95  # arg-max predictions in one class at or above this share: the model has collapsed


def first_seed(model: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The lowest seed of one model of ``metrics.json`` and its entry: ``("0", {"metrics": ..., ...})``."""
    seeds = model["seeds"]
    key = sorted(seeds, key=lambda k: int(k))[0]
    return key, seeds[key]


def significant(p: Any, level: float) -> bool:
    """Whether a (Holm-adjusted) p-value read back from a file is below ``1 - level``; None and nan are not."""
    return p is not None and np.isfinite(p) and p < 1 - level


def not_learnt(metrics: dict[str, Any], label: str = "model") -> list[str]:
    """Sentences naming the models (first seed) that did not learn: arg-max predictions (almost) all in one
    class, or a macro-AUC interval that reaches 0.5 (chance). Read from the confusion matrix and the CIs."""
    notes = []
    for name, m in metrics["models"].items():
        seed, s = first_seed(m)
        why = []
        cm = s.get("confusion_matrix") or {}
        counts = np.asarray(cm.get("counts") or [[0]], dtype=float)
        predicted = counts.sum(axis=0)
        if predicted.sum() > 0 and predicted.max() / predicted.sum() >= ONE_CLASS_SHARE:
            top = int(predicted.argmax())
            why.append(f"it predicts {cm['classes'][top]} for {int(predicted[top])} of {int(predicted.sum())} test images")
        auc = s["metrics"].get("auc_macro") or {}
        low, high = auc.get("low"), auc.get("high")
        if low is not None and high is not None and np.isfinite(low) and low <= 0.5:
            why.append(f"its macro AUC interval [{fmt(low)}, {fmt(high)}] reaches 0.5, chance")
        if why:
            notes.append(f"{label} {name} (seed {seed}) has not learnt to tell the classes apart: {'; '.join(why)}.")
    return notes


def _pct(x: Any) -> Any:
    return x * 100 if x is not None else None


def _number(x: Any) -> float | None:
    """A value read back from a CSV as a float, None when it is not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def accuracy_vs_auc(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Question 1 from ``metrics.json``'s ``question_1`` (see :func:`question_one`); None without it."""
    q = (metrics or {}).get("question_1")
    if not q:
        return None
    return {"text": "1. Do the models that win by accuracy also win by AUC? " + q["answer"],
            **{k: v for k, v in q.items() if k != "answer"}}


def restoration(checks: dict[str, Any], strategies: dict[str, Any], level: float) -> dict[str, Any] | None:
    """Question 2 from the five image checks and the strategies' paired tests; None when none of them exists."""
    parts = []
    data: dict[str, Any] = {}
    ca = checks.get("a_predicted_healthy")
    if ca:
        ci = ca.get("ci") or [None, None]
        base = (ca.get("baseline") or {}).get("test_tumour_called_healthy")
        data["predicted_healthy"] = {"share": ca.get("share"), "ci": ci, "study_share": ca.get("study_share"),
                                     "test_tumour_called_healthy": base}
        text = (f"a classifier trained on the original data calls {fmt(ca.get('share') * 100, 1)}% "
                f"[{fmt(_pct(ci[0]), 1)}, {fmt(_pct(ci[1]), 1)}] of the generated images healthy")
        if ca.get("study_share") is not None:
            text += f" (the study reported {fmt(ca['study_share'] * 100, 2)}%)"
        if base is not None:
            text += (f", while it calls {fmt(base * 100, 1)}% of the real tumour test images healthy too, "
                     "so that share alone does not show the generated images are realistic")
        parts.append(text)
    cd = checks.get("d_artefact_detectability")
    if cd and cd.get("auc") is not None:
        auc = cd["auc"]
        ci = cd.get("ci") or [None, None]
        signature = ci[0] is not None and ci[0] > 0.6
        data["artefact_detectability"] = {"auc": auc, "ci": ci, "signature": signature}
        verdict = ("so the restorations carry a detectable signature that a classifier could learn as 'healthy'"
                   if signature else "so no clear restoration signature was found")
        parts.append(f"restored and original healthy images can be told apart from simple image statistics with AUC {fmt(auc, 3)} "
                     f"[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}], {verdict}")
    comp = (checks.get("e_shortcut_flip") or {}).get("comparison") or {}
    if comp.get("difference") is not None:
        ci = comp.get("ci") or [None, None]
        data["shortcut_flip"] = {"difference": comp["difference"], "ci": ci}
        d = comp["difference"] * 100
        parts.append(f"after restoration, tumour test images are called healthy {fmt(abs(d), 1)} percentage points "
                     f"{'more' if d >= 0 else 'less'} often by the augmented-data model than by the balanced-data model "
                     f"(difference [{fmt(_pct(ci[0]), 1)}, {fmt(_pct(ci[1]), 1)}]; "
                     "a positive difference means 'looks restored' has become 'healthy')")
    for t in strategies.get("paired_tests", []):
        if t.get("strategy") == "balanced" and t.get("metric") == "auc_macro":
            sig = significant(t.get("p_holm"), level)
            data["auc_change"] = {"difference": -t["difference"], "p_value": t.get("p_value"), "p_holm": t.get("p_holm"),
                                  "significant": sig, "note": t.get("note"), "detectable": t.get("detectable")}
            said = (t["note"] if t.get("note") else "significant" if sig else
                    f"not significant; this test set could detect only differences of {fmt_detectable(t.get('detectable'))} or more")
            fam = (f" in the {family_name('macro AUC of the strategies', t['family'], t.get('family_size'))}"
                   if t.get("family") else "")
            parts.append(f"against training on the balanced original data, restoration changes macro AUC by "
                         f"{fmt(-t['difference'])} (p = {fmt_p(t.get('p_value'))}, Holm {fmt_p(t.get('p_holm'))}{fam}: {said})")
            break
    if not parts:
        return None
    return {"text": "2. Does restoration-based augmentation simulate clinical imbalance? In this run, " + "; ".join(parts) + ".",
            **data}


def best_by_auc(metrics: dict[str, Any] | None, comparisons: pd.DataFrame | None, key: str, level: float) -> dict[str, Any] | None:
    """Question 3 from ``metrics.json`` (seed means of ``key``) and ``comparisons.csv`` (the first seed's
    paired tests of the best model); None without a model that has ``key``."""
    if not (metrics and metrics.get("models")):
        return None
    means = {m: v.get("summary", {}).get(key, {}).get("mean") for m, v in metrics["models"].items()}
    means = {m: v for m, v in means.items() if v is not None}
    if not means:
        return None
    best = max(means, key=lambda m: means[m])
    data: dict[str, Any] = {"metric": key, "means": means, "best": best}
    text = f"3. Which model is best by AUC? {best} has the highest {LABELS.get(key, key)} ({fmt(means[best])})"
    if len(means) < 2:
        text = (f"3. Which model is best by AUC? Only one model was evaluated ({best}, {LABELS.get(key, key)} "
                f"{fmt(means[best])}): there is nothing to compare it with.")
    elif comparisons is not None:
        c = comparisons
        seed = first_seed(metrics["models"][best])[0]
        c = c[(c["metric"] == key) & (c["seed"].astype(str) == str(seed)) & ((c["model_a"] == best) | (c["model_b"] == best))]
        sig = [r for r in c.itertuples() if significant(r.p_holm, level)]
        unassessed = int(c["note"].notna().sum()) if "note" in c.columns else 0  # an empty note reads as NaN
        others = len(c)

        def other(r: Any) -> str:
            return r.model_b if r.model_a == best else r.model_a

        # "not significant" beside the difference this test set could have detected (empty notes read as NaN)
        quiet = [r for r in c.itertuples() if not significant(r.p_holm, level) and not isinstance(getattr(r, "note", None), str)
                 and "detectable" in c.columns]
        label = LABELS.get(key, key)
        size = c["family_size"].iloc[0] if "family_size" in c.columns and len(c) else None
        # a comparisons.csv written before the Holm families (no family column): Holm ran within a table
        family = family_name(label, c["family"].iloc[0], size) if "family" in c.columns and len(c) else "comparison table"
        data.update({
            "seed": seed, "family": family, "n_compared": others, "significant_against": [other(r) for r in sig], "n_not_assessable": unassessed,
            "not_significant": [{"model": other(r), "difference": float(abs(r.difference)), "detectable": _number(r.detectable)}
                                for r in quiet],
            "power": metrics.get("power", 0.8),
        })
        if others:
            text += (f"; its lead is significant (paired, Holm-corrected within the {family} of seed {seed}) against "
                     f"{len(sig)} of {others} other models"
                     + (f" ({', '.join(other(r) for r in sig)})" if sig else "")
                     + (f"; {unassessed} of these comparisons are not assessable on these data (see Table 1)" if unassessed else "")
                     + (", so the ranking at the top is not established by these data" if len(sig) < others else ""))
            if quiet:
                text += ("; not significant against " + ", ".join(
                    f"{other(r)} (difference {fmt(abs(r.difference), 3)}, "
                    f"smallest detectable {fmt_detectable(r.detectable)})" for r in quiet)
                    + f" at {metrics.get('power', 0.8):.0%} power and the family's Bonferroni level, {ci_unit(metrics)}")
            text += "."
    return {"text": text, **data}


def lesion(explain: dict[str, Any] | None) -> dict[str, Any] | None:
    """Question 4 from ``explain.json``: the models whose (first) CAM method localises clearly better than
    their randomised twin; None without explained models."""
    if not (explain and explain.get("models")):
        return None
    verdicts = {m: next(iter(v.get("methods", {}).values()), {}).get("sanity", {}) or {} for m, v in explain["models"].items()}
    better = [m for m, s in verdicts.items() if s.get("verdict") == "better"]
    return {
        "text": (f"4. Do the models look at the lesion? {len(better)} of {len(verdicts)} models localise the lesion "
                 "clearly better than their randomised twins (pointing game and energy ratio against the true masks)"
                 + (f": {', '.join(better)}." if better else ".")),
        "verdicts": {m: s.get("verdict") for m, s in verdicts.items()}, "better": better,
    }


def study_answers(metrics: dict[str, Any] | None, comparisons: pd.DataFrame | None, strategies: dict[str, Any] | None,
                  checks: dict[str, Any] | None, explain: dict[str, Any] | None,
                  primary_metric: str = "auc_macro", level: float = 0.95,
                  external: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The study's five answers, each a sentence and the numbers it rests on; a question whose files are
    missing is left out (question 5 is written by the evaluate stage: :mod:`medauc.external.answer`).

    ``metrics``: ``metrics.json``; ``comparisons``: ``comparisons.csv`` as read by :func:`pandas.read_csv`;
    ``strategies``: ``strategies.json``; ``checks``: the five image checks (``augment_checks.json`` with
    ``strategies.json``'s ``checks``); ``explain``: ``explain.json``; None where a file is missing.
    ``primary_metric``, ``level``: ``evaluate.primary_metric`` and ``evaluate.level``; ``external``: ``external.json``.

    >>> explain = {"models": {"resnet18": {"methods": {"gradcam": {"sanity": {"verdict": "better"}}}},
    ...                       "vit": {"methods": {"gradcam": {"sanity": {"verdict": "same"}}}}}}
    >>> a = study_answers(None, None, None, None, explain)
    >>> list(a), a["q4_lesion"]["better"]
    (['q4_lesion'], ['resnet18'])
    >>> a["q4_lesion"]["text"][:60]
    '4. Do the models look at the lesion? 1 of 2 models localise '
    """
    found = {
        "q1_accuracy_vs_auc": accuracy_vs_auc(metrics),
        "q2_restoration": restoration(checks or {}, strategies or {}, level),
        "q3_best_by_auc": best_by_auc(metrics, comparisons, primary_metric, level),
        "q4_lesion": lesion(explain),
        "q5_external": {"text": f"5. Does the winner hold at another hospital? {external['question_5']['answer']}",
                        **{k: v for k, v in external["question_5"].items() if k != "answer"}} if external else None,
    }
    return {k: v for k, v in found.items() if v is not None}
