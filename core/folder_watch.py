"""Waking up when a file lands in a folder, instead of at the next tick of a poll.

Processes of one release share files (plugins/ledger.py) and wait on each other by reading them again and
again: a stage barrier under xdist waits until every item before it has written its record. With a 50 ms
poll, each of a release's barriers opens on average 25 ms late for each waiting worker, and the slowest
worker decides when the stage ends. On Linux, inotify tells a waiter at once that a file was renamed into
place (core.files.write_atomically) or created; the waiter then reads the files again. The poll stays as
the fallback, and as a floor: a wait never sleeps past its interval, so a missed or unavailable event costs
at most what the poll cost before (other systems, or a machine out of inotify instances).
"""

from __future__ import annotations

import functools
import os
import select
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

# <sys/inotify.h>: a file renamed into the folder, one created in it.
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
_EVENTS = IN_MOVED_TO | IN_CREATE
_READ_SIZE = 64 * 1024


@functools.cache
def _inotify_calls() -> tuple[Any, Any] | None:
    """libc's inotify_init1 and inotify_add_watch, or None (not Linux). ctypes is imported here: only a process
    that waits (an xdist worker) needs it, not every process of a release."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None


def _open_inotify(folders: Iterable[Path]) -> int | None:
    """An inotify descriptor watching `folders`, or None where inotify is unavailable (not Linux, the
    per-user instance or watch limit reached)."""
    calls = _inotify_calls()
    if calls is None:
        return None
    init, add_watch = calls
    fd = int(init(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        return None
    for folder in folders:
        if add_watch(fd, os.fsencode(folder), _EVENTS) < 0:
            os.close(fd)
            return None
    return fd


class FolderWatch:
    """`wait(seconds)`: returns early when a file is created in, or renamed into, one of the folders.

    Events that came since the last wait (or since the watch was opened) end the next wait at once, so a
    caller that opens the watch, then checks its condition, then waits, never misses a change that came in
    between. A context manager: the descriptor is closed at the end."""

    def __init__(self, *folders: Path) -> None:
        self._fd = _open_inotify(folders)

    @property
    def event_driven(self) -> bool:
        return self._fd is not None

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a change in the folders ended the sleep early."""
        if self._fd is None:
            time.sleep(seconds)
            return False
        readable, _, _ = select.select([self._fd], [], [], max(0.0, seconds))
        if not readable:
            return False
        try:  # drain: the next wait sleeps until the next change
            while os.read(self._fd, _READ_SIZE):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
