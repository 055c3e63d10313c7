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
loops call :func:`release_every`: every 10 s (60 s in training) it gives the kept memory back when
more than 1 GB of it is resident.
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
KEPT_LIMIT = 1 << 30  # bytes freed but resident that a long loop tolerates before it gives them back


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2() -> object | None:
    if _malloc_trim() is None:
        return None
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except AttributeError:
        return None
    fn.restype = _MallInfo2
    return fn


def kept_bytes() -> int | None:
    """Memory this process has freed but still holds resident: its anonymous resident pages less what
    malloc has handed out (None where that cannot be read: no glibc 2.33, no /proc)."""
    info = _mallinfo2()
    if info is None:
        return None
    try:
        with open("/proc/self/statm") as fh:
            fields = fh.read().split()
    except OSError:
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    anon = (int(fields[1]) - int(fields[2])) * page  # resident less file-backed
    m = info()  # type: ignore[operator]
    return anon - int(m.uordblks) - int(m.hblkhd)


def release_every(seconds: float = 10.0, limit: int = KEPT_LIMIT) -> bool:
    """For a long loop, called once a batch: at most every ``seconds``, look at how much freed memory
    the process keeps (:func:`kept_bytes`) and :func:`release` it when that is over ``limit``.

    Without it the freed memory kept under the tunables crept up batch by batch in long loops (the
    predictions of 18,900 generated images: 1.6 -> 8 GB resident at 21k images; generation 1.9 -> 3.6
    GB) and went back only when the loop ended. Releasing on a clock alone cost 5-20% more CPU in
    prediction (the kernel maps a batch's pages again after every release); releasing only past the
    limit costs nothing where nothing creeps. Where the kept memory cannot be read, it releases on
    the clock."""
    now = time.monotonic()
    if now - _last_release[0] < seconds:
        return False
    _last_release[0] = now
    kept = kept_bytes()
    if kept is not None and kept < limit:
        return False
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


__all__ = ["TUNABLES", "ensure_tunables", "reexec_with_tunables", "kept_bytes", "release", "release_every", "wanted"]
