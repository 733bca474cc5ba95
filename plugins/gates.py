"""Stage barriers: an item starts only when every item of the stages before it has finished.

In one process this holds by construction (items run in order) and the wait returns at once. Under
pytest-xdist the scheduler hands every worker its items in global order, and each item waits here, in
its setup, for the records of earlier stages in the ledger. The same records tell whether the release
already stopped, in which case the item is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from releasegate.core.waiting import poll_until
from releasegate.plugins.ledger import ItemRecord, Ledger

POLL_S = 0.05


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


def wait_for_turn(ledger: Ledger, *, before: int, timeout_s: float) -> Turn:
    """Wait until items 0..before-1 have all finished (or the run was aborted)."""

    def turn() -> Turn | None:
        records = ledger.finished_items()
        aborted = ledger.aborted()
        if aborted or all(index in records for index in range(before)):
            failures = sorted((r for r in records.values() if r.outcome.is_failure), key=lambda r: r.index)
            return Turn(failures=failures, aborted=aborted)
        return None

    answer = poll_until(turn, timeout_s=timeout_s, interval_s=POLL_S)
    if answer is not None:
        return answer
    missing = [index for index in range(before) if index not in ledger.finished_items()]
    ledger.abort(f"items {missing[:5]} did not finish within {timeout_s:.0f}s")
    answer = turn()
    assert answer is not None  # aborted now
    return answer
