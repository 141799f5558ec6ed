"""One writer per run folder: an advisory lock file naming its holder.

Two trainings writing into one folder overwrite each other's stage 0 and
checkpoints mid-write, and each then dies on the other's half-written files.
:func:`run_folder_lock` holds ``FOLDER/.lock`` for the whole run: the file
records the holder's PID, host and start time, so a refused second writer can
say who holds the folder.

The lock itself is an ``fcntl.flock`` on that file, which the kernel drops when
the holder exits however it exits (``kill -9`` included): a lock file left by a
dead process is stale by construction and the next writer takes it over. The
file is removed on a clean exit. ``flock`` is advisory and local: it does not
keep out a process that does not ask for it, nor, on some network file systems,
a process on another host.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class RunFolderLockedError(RuntimeError):
    """Another process holds a run folder: the message names its PID and host."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on host {info['host']} (since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file is being written)"


def acquire(folder: Path, what: str = "training") -> int:
    """Take the lock of ``folder`` (which must exist); returns the open descriptor that holds it.

    Raises :class:`RunFolderLockedError` naming the holder when another process has it.
    """
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderLockedError(
                f"{folder} is in use by {_holder(path)}: two writers would corrupt each other's files; wait for "
                f"it to finish or choose another --out (the lock {path} is released when that process exits)"
            ) from None
        # The previous holder may have removed the file between our open and our flock: then we locked an
        # orphan inode that no later writer will see. Only a lock on the file now at ``path`` counts.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())
    return fd


def release(folder: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order, so no one locks a file about to vanish
    without noticing: :func:`acquire` checks it holds the file at the path)."""
    try:
        (folder / LOCK_FILE).unlink()
    except FileNotFoundError:
        pass
    os.close(fd)


@contextmanager
def run_folder_lock(folder: str | Path, what: str = "training", enabled: bool = True) -> Iterator[None]:
    """Hold the lock of run folder ``folder`` for the ``with`` block (``enabled=False``: a no-op, for the
    processes of a distributed run other than the one that writes)."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    fd = acquire(folder, what)
    try:
        yield
    finally:
        release(folder, fd)
