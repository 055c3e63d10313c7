"""Question 5, "Does the winner hold at another hospital?", from the external sets' evaluation.

:func:`question_five` reads what :mod:`medauc.external.results` computes per site (the ranking by
``evaluate.primary_metric``, the winner's change from the internal test set, the paired tests against
the internal winner) and says, per site, whether the internal winner stays best, and by how much
it leads or trails with its interval and Holm-adjusted test. :mod:`medauc.answers` asks the other four.
"""

from __future__ import annotations

from typing import Any

from medauc.answers import LABELS, p_words
from medauc.formatting import fmt, fmt_est


def verdict(t: dict[str, Any]) -> str:
    """A paired test in words: significant or not, with its test and Holm-adjusted p (or why it is not assessable)."""
    if isinstance(t.get("note"), str) and t["note"]:
        return t["note"] if t["note"].startswith("not assessable") else f"not assessable ({t['note']})"
    return f"{'significant' if str(t.get('significant')) == 'True' else 'not significant'} ({t['test']}, {p_words(t['p_holm'])} Holm)"


def _site(name: str, s: dict[str, Any], label: str) -> tuple[str, dict[str, Any]]:
    r = s["ranking"]
    w, seed = r["winner"], r["seed"]
    cell, change = (s["models"][w]["seeds"][seed][k].get(r["metric"], {}) for k in ("metrics", "change"))
    # Held: the lead over the runner-up at the site; lost: the site's best model's lead over the winner.
    ranked = list(r.get("site") or [])
    other = r["site_best"] if not r["holds"] else (ranked[1] if len(ranked) > 1 else None)
    vs = next((t for t in r["tests"] if t["other"] == other), None)
    lead = ""
    if vs:  # the tests give winner minus other: a lost site's lead is its negative
        d, lo, hi = ((1 if r["holds"] else -1) * vs[k] for k in ("difference", "ci_low", "ci_high"))
        lead = f" by {fmt(d, 3)} [{fmt(min(lo, hi), 3)}, {fmt(max(lo, hi), 3)}], {verdict(vs)}"
    where = f"{name} ({s['n_images']} images{', ' + str(s['n_patients']) + ' patients' if s.get('n_patients') else ''})"
    text = (f"at {where} {w} has {label} {fmt_est(cell, 3)}, a change of {fmt_est(change, 3)} from the internal test set, and "
            + (f"stays best{f', ahead of {other}' + lead if vs else ''}" if r["holds"] else f"is not best: {other} leads{lead}"))
    audit = s.get("audit") or {}
    if audit.get("overlaps_training"):
        text += f" (WARNING: this set {audit.get('text')}: no independent test)"
    return text, {"site": name, "source": s["source"], "holds": r["holds"], "site_best": r["site_best"], "winner_value": cell,
                  "change": change, "against_site_best": vs, "overlaps_training": bool(audit.get("overlaps_training"))}


def question_five(external: dict[str, Any]) -> dict[str, Any]:
    """Does the internal winner by ``evaluate.primary_metric`` stay best on each external set? (``external.json``)."""
    sites = external["sites"]
    label = LABELS.get(external["primary_metric"], external["primary_metric"])
    parts = [_site(name, s, label) for name, s in sites.items()]
    winner = next(iter(sites.values()))["ranking"]["winner"] if sites else None
    lost = [d["site"] for _, d in parts if not d["holds"]]
    if not sites:
        answer = "No external test set is configured (evaluate.external), so this run cannot say."
    elif not lost:
        answer = (f"Yes: {winner}, best by {label} on the internal test set, is also best at {', '.join(sites)}: "
                  + "; ".join(t for t, _ in parts) + ".")
    else:
        answer = (f"No: {winner}, best by {label} on the internal test set, is not best at {', '.join(lost)}: "
                  + "; ".join(t for t, _ in parts) + ".")
    return {"metric": external["primary_metric"], "winner": winner, "holds_everywhere": bool(sites) and not lost,
            "sites": [d for _, d in parts], "answer": answer}
