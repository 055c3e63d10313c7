"""The run folder's lock: one process at a time works in a run folder.

The lock is an exclusive ``flock`` on ``.medauc/lock``, which also notes who holds it, so that a
second process is refused at once with the holder's pid and command, and a lock left by a killed
process is taken over (the kernel drops a ``flock`` when its process ends).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medauc.errors import RunFolderError

log = logging.getLogger(__name__)

LOCK_FILE = Path(".medauc") / "lock"
_held: dict[Path, int] = {}  # resolved run folder -> the open file that holds its lock


def lock_run(run_dir: str | os.PathLike[str]) -> None:
    """Hold ``run_dir``'s lock for this process (until :func:`release_run` or the process ends).

    The lock is an exclusive ``flock`` on ``.medauc/lock``, which also notes who holds it (pid, host,
    start time, command). The kernel drops a ``flock`` when its process ends, however it ends, so a
    killed run leaves only its note behind: the next process takes the lock over and logs whose it
    was. Taking a lock this process already holds does nothing. Raises :class:`RunFolderError` at
    once, naming the holder, when another running process holds it.
    """
    folder = Path(run_dir).resolve()
    if folder in _held:
        return
    path = folder / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_note(fd)
        os.close(fd)
        raise RunFolderError(
            f"{run_dir} is in use by {_holder_text(holder)}; wait for it to finish, or choose another --out"
        ) from None
    except OSError:
        os.close(fd)
        raise
    previous = _lock_note(fd)
    if previous and (previous.get("pid"), previous.get("host")) != (os.getpid(), socket.gethostname()):
        log.warning("%s: taking over the lock left by %s, which no longer holds it (it ended, or the folder was copied)",
                    run_dir, _holder_text(previous))
    note = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["medauc", *sys.argv[1:]])[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(note).encode(), 0)
    _held[folder] = fd


def release_run(run_dir: str | os.PathLike[str]) -> None:
    """Give up ``run_dir``'s lock if this process holds it (its note is cleared: nothing to take over)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@atexit.register
def release_all() -> None:
    """Give up every run-folder lock this process holds."""
    for folder in list(_held):
        release_run(folder)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``run_dir``'s lock inside the block; a lock held before the block stays held after it."""
    held = Path(run_dir).resolve() in _held
    lock_run(run_dir)
    try:
        yield
    finally:
        if not held:
            release_run(run_dir)


def _lock_note(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 4096, 0)
    try:
        note = json.loads(raw) if raw.strip() else None
    except ValueError:
        return {"pid": "?", "note": raw[:80].decode(errors="replace")}
    return note if isinstance(note, dict) else None


def _holder_text(note: dict[str, Any] | None) -> str:
    if not note:
        return "another process (it has not written its pid to .medauc/lock yet)"
    return (f"process {note.get('pid')} on {note.get('host', '?')} (started {note.get('started', '?')}: "
            f"{note.get('command', '?')})")
