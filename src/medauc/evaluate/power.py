"""The smallest difference a paired comparison could detect, on this test set or a planned one.

A two-sided test at level alpha of a difference d whose estimate is normal with standard error SE
rejects with probability about ``power`` when |d| >= (z_{1 - alpha/2} + z_{power}) SE (the other
tail adds less than alpha/2 and is ignored, as in the usual sample-size formula). SE is the one
the test measured: for DeLong, sqrt(var_a + var_b - 2 cov) from the two AUCs' variances and their
covariance (Obuchowski's clustered ones when patients are known); for the paired bootstrap, the
standard deviation of the bootstrap differences. A "not significant" beside a detectable
difference of 0.04 says the test set could not have shown a true gap of 0.01, not that there is
none. A comparison's verdict is Holm-corrected within its family of m tests, so the level to give
here is Bonferroni's 1 - alpha/m (:func:`medauc.evaluate.paired.holm_family` does): Holm rejects
whatever Bonferroni rejects, so a difference above that detectable difference is (about) always
significant.

For a planned study with N test images instead of the n of this one, SE is scaled by
sqrt(n / N). That assumes the planned test set is drawn like this one: the same class mix, the
same models (so the same per-image variance and correlation between the two models) and, when
patients are known, the same number of images per patient (patients then scale by N / n too).
"""

from __future__ import annotations

import math

from scipy.stats import norm

from medauc.errors import EvaluationError


def detectable_difference(se: float, level: float = 0.95, power: float = 0.8, n_now: int = 1, n_planned: int | None = None) -> float:
    """(z_{1 - alpha/2} + z_power) x SE, alpha = 1 - ``level``; nan when ``se`` is undefined.

    se: standard error of the paired difference (metric units); with ``n_planned`` the SE is
    scaled by sqrt(n_now / n_planned) (module docstring: the assumptions).
    """
    if not (0.0 < level < 1.0):
        raise EvaluationError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    if not (0.0 < power < 1.0):
        raise EvaluationError(f"power must be between 0 and 1 (e.g. 0.8), got {power!r}")
    if n_planned is not None and (n_planned < 1 or n_now < 1):
        raise EvaluationError(f"test-set sizes must be >= 1, got {n_now} now and {n_planned} planned")
    if se is None or not math.isfinite(se):
        return float("nan")
    scale = 1.0 if n_planned is None else math.sqrt(n_now / n_planned)
    return float((norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)) * se * scale)


def images_for(se: float, n_now: int, difference: float, level: float = 0.95, power: float = 0.8) -> float:
    """Test images needed (same assumptions) for ``difference`` to be detectable: n_now (z SE / d)^2; inf for d = 0."""
    if se is None or not math.isfinite(se) or not math.isfinite(difference):
        return float("nan")
    if difference == 0:
        return math.inf
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    return float(n_now * (z * se / abs(difference)) ** 2)
