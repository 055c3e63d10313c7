"""Progress bars that stay readable in logs.

On a terminal, :func:`progress_bar` is a plain tqdm bar. When stderr is not a terminal (CI, ``> log``),
tqdm would write one carriage-return line per refresh; there the bar is silent and plain log lines
say when the work started, how far it is at least every :data:`INTERVAL_S` seconds (with its rate
and the time left), and how long it took. Every stage's bars go through here.
:class:`Timer` measures a block's seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

log = logging.getLogger("medauc.progress")
INTERVAL_S = 30.0  # off a terminal: a progress line at least this often while work goes on


def _is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", None)) and sys.stderr.isatty()


class Progress(tqdm):
    """``tqdm`` that, off a terminal, logs ``<desc>: <total> <unit> ...`` and ``<desc>: done in <s> s``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        wanted = not kwargs.get("disable", False)
        self._plain = wanted and not _is_terminal()
        if self._plain:
            kwargs["disable"] = True
        # A disabled tqdm keeps neither desc nor unit: keep them for the log lines.
        self._label = kwargs.get("desc") or "progress"
        self._unit = kwargs.get("unit", "it")
        self._logged_end = False
        self._started = self._last_line = time.perf_counter()
        self._done = self._start_n = int(kwargs.get("initial", 0) or 0)
        super().__init__(*args, **kwargs)
        if self._plain:
            total = f" {self.total} {kwargs.get('unit', 'it')}" if self.total is not None else ""
            log.info("%s:%s ...", self._label, total)

    def __iter__(self) -> Iterator[Any]:
        if not self._plain:
            yield from super().__iter__()
            return
        for item in super().__iter__():  # disabled: tqdm yields without counting, so count here
            yield item
            self._advance(1)
        self.close()

    def update(self, n: float | None = 1) -> bool | None:
        if self._plain:
            self._advance(1 if n is None else n)
        return super().update(n)

    def _advance(self, n: float) -> None:
        self._done += n
        now = time.perf_counter()
        if now - self._last_line < INTERVAL_S:
            return
        self._last_line = now
        rate = (self._done - self._start_n) / max(now - self._started, 1e-9)
        if self.total:
            left = (self.total - self._done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %s (%.0f%%), %.3g %s/s, about %s left", self._label, self._done, self.total, self._unit,
                     100.0 * self._done / self.total, rate, self._unit, _duration(left))
        else:
            log.info("%s: %d %s, %.3g %s/s", self._label, self._done, self._unit, rate, self._unit)

    def close(self) -> None:
        if getattr(self, "_plain", False) and not self._logged_end:
            self._logged_end = True
            log.info("%s: done in %.1f s", self._label, time.perf_counter() - self._started)
        super().close()


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_bar(*args: Any, **kwargs: Any) -> Progress:
    """``tqdm(...)`` with the same arguments, plain log lines when stderr is not a terminal."""
    return Progress(*args, **kwargs)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
