"""A phantom cache of a test's own: MEDAUC_CACHE set for a block and put back after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cache_at(path: Path) -> Iterator[Path]:
    old = os.environ.get("MEDAUC_CACHE")
    os.environ["MEDAUC_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("MEDAUC_CACHE", None)
        else:
            os.environ["MEDAUC_CACHE"] = old
