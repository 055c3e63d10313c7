"""Summaries of localisation scores, and the model randomisation test against the random twin.

The random twin (Adebayo et al. 2018) is the same architecture with random weights; the verdict
is "better" when the paired bootstrap CIs of both the pointing-game and the energy-ratio
differences (trained minus twin) lie above 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medauc.config import Config
from medauc.explain import scores as sc
from medauc.explain.passes import CamPass


def summarise(
    scores: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], lesion: list[int], cfg: Config, rng: np.random.Generator,
    clusters: np.ndarray | None = None,
) -> dict[str, Any]:
    """``{"by_class": {class: {score: {mean, ci_low, ci_high, n}}}, "all": {score: ...}}``.

    scores: per-image scores (N,) by name; labels (N,) class indices; lesion: the classes with masks
    (one block each in ``by_class``); "all" pools every image; clusters (N,) or None: each image's
    patient, when known, for intervals over patients.
    """
    n_boot, level = cfg.evaluate.n_bootstrap, cfg.evaluate.level
    by_class = {}
    for c in lesion:
        sel = labels == c
        cl = None if clusters is None else clusters[sel]
        by_class[classes[c]] = {k: sc.bootstrap_mean(scores[k][sel], n_boot, level, rng, cl) for k in sc.SCORES}
    pooled = {k: sc.bootstrap_mean(scores[k], n_boot, level, rng, clusters) for k in sc.SCORES}
    return {"by_class": by_class, "all": pooled}


def _verdict(name: str, method: str, trained: dict, twin: dict, pg: dict, ratio: dict) -> tuple[str, str]:
    if pg["n"] == 0:
        return "no_masks", f"{name} ({method}): no test image has a lesion mask, so localisation was not scored"
    t, r = trained["all"], twin["all"]
    better = pg["ci_low"] > 0 and ratio["ci_low"] > 0
    head = "localises clearly better than" if better else "does not localise clearly better than"
    text = (
        f"{name} ({method}) {head} its randomised twin: pointing game "
        f"{t['pointing_game']['mean']:.2f} vs {r['pointing_game']['mean']:.2f} "
        f"(difference {pg['mean']:+.2f}, CI {pg['ci_low']:+.2f} to {pg['ci_high']:+.2f}); energy ratio "
        f"{t['energy_ratio']['mean']:.2f} vs {r['energy_ratio']['mean']:.2f} "
        f"(difference {ratio['mean']:+.2f}, CI {ratio['ci_low']:+.2f} to {ratio['ci_high']:+.2f})"
    )
    return ("better" if better else "not_better"), text


def twin_comparison(
    name: str,
    method: str,
    trained_pass: CamPass,
    twin_pass: CamPass,
    trained: dict[str, Any],
    labels: np.ndarray,
    classes: list[str],
    lesion: list[int],
    cfg: Config,
    rng: np.random.Generator,
    clusters: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The twin's summary (as :func:`summarise`) and explain.json's ``sanity`` block for one model and method.

    ``trained`` is the trained model's summary; ``rng`` continues the generator that drew it, so the
    bootstrap draws follow on from the trained model's.
    """
    twin = summarise(twin_pass.scores, labels, classes, lesion, cfg, rng, clusters)
    n_boot, level = cfg.evaluate.n_bootstrap, cfg.evaluate.level
    pg = sc.paired_difference(trained_pass.scores["pointing_game"], twin_pass.scores["pointing_game"], n_boot, level, rng, clusters)
    ratio = sc.paired_difference(trained_pass.scores["energy_ratio"], twin_pass.scores["energy_ratio"], n_boot, level, rng, clusters)
    corr = sc.bootstrap_mean(sc.rank_correlation(trained_pass.true_maps, twin_pass.true_maps), n_boot, level, rng, clusters)
    verdict, text = _verdict(name, method, trained, twin, pg, ratio)
    sanity = {
        "pointing_game_difference": pg, "energy_ratio_difference": ratio,
        "map_rank_correlation": corr, "verdict": verdict, "text": text,
    }
    return twin, sanity
