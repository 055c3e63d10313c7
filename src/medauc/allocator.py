"""The memory allocator settings medauc runs best with, set by the program itself.

glibc returns freed memory to the kernel eagerly; a training step that allocates and frees large
tensors then spends most of its time in the kernel mapping and unmapping pages (measured on a 2-core
machine: an efficientnet_b0 run at 224 px spent 48 s of 70 s there; evaluate on 6,327 test images
took 4 min 28 s instead of 66 s). glibc reads its tunables only when a process starts, so the
``medauc`` command re-executes itself once with them set, unless ``GLIBC_TUNABLES`` is already set
(a user's own choice is kept) or ``MEDAUC_NO_REEXEC=1``. Peak memory rises a little (3.8 -> 4.4 GB
in that run): freed memory stays in the process for the next step.

The price of keeping freed memory: a process's resident size becomes the largest heap any step
ever needed plus what fragmentation strands, not what it holds now. Measured on the strategies stage
at 7,023 images: 0.2-0.6 GB in use and 1.2-1.7 GB freed but kept. :func:`release` gives that back
(glibc's ``malloc_trim``, about 20 ms for a 2.7 GB heap); the stages call it between their phases
(each model's training, each predicted set, each stage of a run), so a peak is one phase's, not
the sum of every phase before it. Inside a long loop the kept memory also creeps up batch by batch
(the predictions of 18,900 generated images went from 1.6 to 8 GB resident at 21k images), so the
loops call :func:`release_every`: at most one ``malloc_trim`` every 10 s (60 s in training).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import time
from collections.abc import Sequence

TUNABLES = ("glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296:"
            "glibc.malloc.top_pad=268435456")


def wanted() -> bool:
    """True when this process runs on glibc without the tunables and may re-execute itself."""
    if os.environ.get("GLIBC_TUNABLES") is not None or os.environ.get("MEDAUC_NO_REEXEC") == "1":
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@functools.cache
def _malloc_trim() -> object | None:
    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> bool:
    """Return the heap memory this process has freed to the kernel (glibc's ``malloc_trim(0)``:
    the free top of every arena, and whole free pages inside them). Call between phases of work;
    True when it ran, False where there is no glibc (nothing to do there)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)  # type: ignore[operator]
    return True


_last_release = [0.0]


def release_every(seconds: float = 10.0) -> bool:
    """:func:`release` at most once every ``seconds``: for a long loop, called once a batch. Without
    it the freed memory kept under the tunables crept up batch by batch in long loops (the
    predictions of 18,900 generated images: 1.6 -> 8 GB resident at 21k images; generation 1.9 -> 3.6
    GB), and went back only when the loop ended. Every ``seconds`` the kernel maps a batch's pages
    again: about a second per minute of work at most, usually far less."""
    now = time.monotonic()
    if now - _last_release[0] < seconds:
        return False
    _last_release[0] = now
    return release()


def reexec_with_tunables(command: Sequence[str]) -> None:
    """Replace this process by ``command`` with :data:`TUNABLES` in its environment (same pid, so a
    parent such as torchrun or a shell still waits on it); returns only when :func:`wanted` is False."""
    if not wanted():
        return
    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], list(command), env)


def ensure_tunables(argv: Sequence[str]) -> None:
    """For the ``medauc`` command: re-execute as ``python -m medauc ARGV`` with the tunables set."""
    reexec_with_tunables([sys.executable, "-m", "medauc", *argv])


__all__ = ["TUNABLES", "ensure_tunables", "reexec_with_tunables", "release", "release_every", "wanted"]
