"""Worker processes that end with the process that started them, even when it is killed with SIGKILL.

A worker left running after ``kill -9`` of its parent keeps writing into a run folder that a new
process may already hold (the lock is taken over from a dead process): every pool that medauc
starts (the phantom's, ``train.jobs`` trainings, DICOM/NIfTI conversion) ties its workers to the
parent with :func:`die_with_parent`, as its pool initialiser.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """End this worker when process ``parent_pid`` (the one that started it) ends, however it ends.

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG). Elsewhere, or if
    prctl fails: a daemon thread polls the parent id once a second.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="medauc-parent-watch", daemon=True).start()
