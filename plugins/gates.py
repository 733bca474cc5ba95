"""Stage barriers: an item starts only when every item of the stages before it has finished.

In one process this holds by construction (items run in order) and the wait returns at once. Under
pytest-xdist the scheduler hands every worker its items in global order, and each item waits here, in
its setup, for the records of earlier stages in the ledger. The same records tell whether the release
already stopped, in which case the item is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from releasegate.core.folder_watch import FolderWatch
from releasegate.core.waiting import poll_until
from releasegate.plugins.ledger import ItemRecord, Ledger

POLL_S = 0.05
"""The longest a waiting item sleeps between two looks; it wakes earlier when a record lands (FolderWatch)."""


@dataclass(frozen=True)
class Turn:
    """What an item learns when its turn comes: the failures so far, or why the release stopped."""

    failures: list[ItemRecord]
    aborted: str | None

    @property
    def stop_reason(self) -> str | None:
        if self.aborted:
            return f"release stopped: {self.aborted}"
        if self.failures:
            first = self.failures[0]
            return f"release stopped: {first.stage} failed ({first.nodeid}): {first.message}"
        return None


class _LedgerWatch:
    """The FolderWatch of the ledger this process waits on, opened at its first real wait and kept: closing an
    inotify descriptor waits for the kernel (an RCU grace period, up to 20 ms here), which every item's
    setup would pay. A single process never waits (its items run in order), so it never opens one."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._watch: FolderWatch | None = None

    def of(self, ledger: Ledger) -> FolderWatch:
        if self._watch is None or self._root != ledger.root:
            if self._watch is not None:  # another run's ledger (tests run several in one process)
                self._watch.close()
            self._watch, self._root = FolderWatch(ledger.items_dir, ledger.root), ledger.root
        return self._watch


_LEDGER_WATCH = _LedgerWatch()


def wait_for_turn(ledger: Ledger, *, before: int, timeout_s: float) -> Turn:
    """Wait until items 0..before-1 have all finished (or the run was aborted)."""

    def turn() -> Turn | None:
        records = ledger.finished_items()
        aborted = ledger.aborted()
        if aborted or all(index in records for index in range(before)):
            failures = sorted((r for r in records.values() if r.outcome.is_failure), key=lambda r: r.index)
            return Turn(failures=failures, aborted=aborted)
        return None

    answer = turn()
    if answer is None:
        # Watching before the next look: a record that lands between a look and the sleep still ends the sleep.
        watch = _LEDGER_WATCH.of(ledger)
        answer = poll_until(turn, timeout_s=timeout_s, interval_s=POLL_S, sleep=watch.wait)
    if answer is not None:
        return answer
    missing = [index for index in range(before) if index not in ledger.finished_items()]
    ledger.abort(f"items {missing[:5]} did not finish within {timeout_s:.0f}s")
    answer = turn()
    assert answer is not None  # aborted now
    return answer
