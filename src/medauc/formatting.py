"""How numbers read back from a run's files are written in the report's tables and sentences.

Plain functions of values (no document, no run folder), shared by the report and by
:mod:`medauc.answers`: an undefined value (None, nan) always reads "n/a".
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fmt(x: Any, digits: int = 4) -> str:
    """``0.71234`` -> ``"0.7123"``; integers as they are; None or nan -> ``"n/a"``."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def fmt_ci(est: Any, low: Any, high: Any, digits: int = 4) -> str:
    """``"0.7123 [0.6500, 0.7800]"``, or the estimate alone when a bound is missing."""
    if low is None or high is None:
        return fmt(est, digits)
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_est(d: dict[str, Any] | None, digits: int = 4) -> str:
    """An estimate with its CI from a file: ``{value, low, high}`` (evaluation) or ``{mean, ci_low, ci_high}`` (explain)."""
    if not d:
        return "n/a"
    if "value" in d:
        return fmt_ci(d.get("value"), d.get("low"), d.get("high"), digits)
    return fmt_ci(d.get("mean"), d.get("ci_low"), d.get("ci_high"), digits)


def fmt_pct(x: Any) -> str:
    """A share in [0, 1] as a whole percentage (``0.75`` -> ``"75%"``)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.0%}"


def fmt_p(p: Any) -> str:
    """A p-value to four decimals, ``"< 0.0001"`` below that."""
    if p is None or (isinstance(p, float) and not np.isfinite(p)):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def verdict(significant: Any, note: Any = None) -> str:
    """A comparison's verdict as read back from a file: yes, no, or not assessable (no verdict, a note why)."""
    if isinstance(note, str) and note:
        return "not assessable"
    text = str(significant)
    return "yes" if text == "True" else "no" if text == "False" else "not assessable"


def ci_unit(metrics: dict[str, Any] | None) -> str:
    """What the intervals of a metrics file are over: "over patients (n=60)" or "over images (no patient ids known)"."""
    if metrics and metrics.get("unit") == "patients":
        return f"over patients (n={metrics.get('n_patients')})"
    return "over images (no patient ids known)"


def ci_label(metrics: dict[str, Any] | None, level: float | None = None) -> str:
    """An interval's caption: "90% CI over patients (n=60)"; ``level`` (evaluate.level) defaults to the file's own
    ``level`` (a file without one: 0.95, the only level before it was recorded)."""
    lv = level if level is not None else (metrics or {}).get("level") or 0.95
    return f"{100 * float(lv):g}% CI {ci_unit(metrics)}"


def fmt_detectable(x: Any) -> str:
    """A smallest detectable difference as read back from a file ("n/a" when undefined or absent)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return fmt(v, 3) if np.isfinite(v) else "n/a"
