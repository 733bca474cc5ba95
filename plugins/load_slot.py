"""The load slot: the loads of a release run take turns on the machine, unless they may overlap.

Two locust runs side by side on one machine measure each other: under `-n 2` two load tests of one stage
ran at once, p(95) went from ~45 ms to 182 ms, and a healthy version was rolled back. So every load
(`load.run`, or the pair of `load.side_by_side`, which is one load on purpose) holds the run's load slot
while it runs: an `fcntl.flock` on a file in the ledger directory, which every process of the run (the
controller and each xdist worker) sees. A load asks for the slot exclusively: it runs alone. A test marked
`load_may_overlap` asks for it shared: it may run beside other such loads, never beside a load that asked
to run alone (that one's figures would be disturbed exactly as before). Verification items that only read
never take the slot and run in parallel as before.

Waiting for the slot fails closed: when the release stops (the ledger's abort flag) or the stage's deadline
comes, the load does not start and the test fails with the reason. It cannot deadlock: the kernel releases
a flock when its holder's file is closed, so a holder that dies (even by SIGKILL) frees the slot; the
locust subprocess does not inherit the lock (the file is opened close-on-exec). Each load's [start, end],
test and whether it may overlap go to the ledger (LoadRecord), and the report says which loads overlapped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace

import pytest

from releasegate.core.config import Config
from releasegate.core.errors import ExitCode, ReleasegateError
from releasegate.core.waiting import poll_until
from releasegate.plugins.items import STAGE_KEY
from releasegate.plugins.ledger import Ledger, LoadRecord

MAY_OVERLAP_MARKER = "load_may_overlap"  # registered with the plugin's markers (plugins/release.py)
SLOT_FILE = "load-slot.lock"
POLL_S = 0.05


class LoadSlotUnavailable(ReleasegateError):
    """A load did not start: the release stopped, or the stage's deadline came, while it waited its turn."""

    exit_code = ExitCode.VERIFICATION_FAILED


class LoadSlot:
    """One test's hold on the run's load slot. `with slot.hold():` around each load it runs.

    Re-entrant across threads: while the test holds the slot, another load of the same test (the second
    locust run of `side_by_side`, started in a thread) shares the hold instead of waiting for itself. The
    record spans from the first load's start to the last one's end.
    """

    def __init__(self, ledger: Ledger, *, nodeid: str, stage: str, deadline_at: float, deadline: str,
                 may_overlap: bool = False, poll_s: float = POLL_S, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ledger = ledger
        self.nodeid = nodeid
        self.stage = stage
        self.deadline_at = deadline_at  # epoch s (the ledger's stage start + the stage's deadline)
        self.deadline = deadline  # how a message names it: "stage load's deadline of 600s (stages.load)"
        self.may_overlap = may_overlap
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep
        self._mutex = threading.Lock()
        self._depth = 0
        self._fd: int | None = None
        self._record: LoadRecord | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._mutex:  # a second thread of this test waits here while the first one waits for the slot
            if self._depth == 0:
                self._acquire()
            self._depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        path = self.ledger.root / SLOT_FILE
        # Close-on-exec: the locust subprocess must not keep the slot after this process dies.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        mode = fcntl.LOCK_SH if self.may_overlap else fcntl.LOCK_EX
        asked = self._clock()

        def take() -> bool | None:
            reason = self.ledger.aborted()
            if reason is not None:
                raise LoadSlotUnavailable(f"load not started: the release stopped while it waited for the load "
                                          f"slot ({reason})")
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return True

        try:
            taken = poll_until(take, timeout_s=max(0.0, self.deadline_at - asked), interval_s=self._poll_s,
                               clock=self._clock, sleep=self._sleep)
        except BaseException:  # the abort above, or the stage's own deadline alarm: never keep the file open
            os.close(fd)
            raise
        if taken is None:
            os.close(fd)
            running = [r.nodeid for r in self.ledger.loads() if r.finished is None]
            raise LoadSlotUnavailable(
                f"load not started: waited {self._clock() - asked:.1f}s for the load slot until the "
                f"{self.deadline}; held by {', '.join(running) or 'a load that did not record itself'}. "
                f"Loads run one at a time; mark tests @pytest.mark.{MAY_OVERLAP_MARKER} to let them overlap")
        started = self._clock()
        self._fd = fd
        self._record = LoadRecord(key=f"{int(started * 1000)}-{secrets.token_hex(4)}", nodeid=self.nodeid,
                                  stage=self.stage, started=started, finished=None, may_overlap=self.may_overlap,
                                  waited_s=round(started - asked, 3))
        try:
            self.ledger.record_load(self._record)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        fd, record = self._fd, self._record
        self._fd = self._record = None
        try:
            if record is not None:
                # Written before the slot is free: the next load's start is never before this end.
                self.ledger.record_load(replace(record, finished=self._clock()))
        finally:
            if fd is not None:
                os.close(fd)  # releases the flock


def held(slot: LoadSlot | None) -> AbstractContextManager[None]:
    """`slot.hold()`, or nothing for a load runner outside a release (no slot)."""
    return slot.hold() if slot is not None else contextlib.nullcontext()


def load_slot_for(item: pytest.Item, ledger: Ledger, config: Config) -> LoadSlot:
    """The slot of one test: its stage's deadline bounds the wait, its marker says whether it may overlap."""
    stage = item.stash.get(STAGE_KEY, None)
    name = stage.name if stage is not None else "load"
    label = stage.label if stage is not None else name
    limit = float(getattr(config.stages, name))
    started = ledger.stage_started_at(label) or time.time()
    return LoadSlot(ledger, nodeid=item.nodeid, stage=label, deadline_at=started + limit,
                    deadline=f"deadline of stage {label}, {limit:g}s (stages.{name})",
                    may_overlap=item.get_closest_marker(MAY_OVERLAP_MARKER) is not None)
