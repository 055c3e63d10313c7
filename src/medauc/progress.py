"""Progress bars that stay readable in logs.

On a terminal, :func:`progress_bar` is a plain tqdm bar. When stderr is not a terminal (CI, ``> log``),
tqdm would write one carriage-return line per refresh; there the bar is silent and two plain log
lines say when the work started and how long it took instead. Every stage's bars go through here.
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
        self._logged_end = False
        self._started = time.perf_counter()
        super().__init__(*args, **kwargs)
        if self._plain:
            total = f" {self.total} {kwargs.get('unit', 'it')}" if self.total is not None else ""
            log.info("%s:%s ...", self._label, total)

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()
        if self._plain:
            self.close()

    def close(self) -> None:
        if getattr(self, "_plain", False) and not self._logged_end:
            self._logged_end = True
            log.info("%s: done in %.1f s", self._label, time.perf_counter() - self._started)
        super().close()


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
