"""Keeping the release lock while a release runs: renew it every ttl/3, fail closed when that stops working.

A release takes longer than any sensible lock TTL (the stage deadlines add up to nearly an hour), and a
lock that is never renewed expires in the middle of a live release: a second release then takes it over
and both move traffic. The release controller starts a LockKeeper right after preflight acquires the lock
and stops it before the lock is released (or when the controller closes).

The keeper renews through `Target.renew_lock` (a compare-and-swap on the target: it never takes a lock it
does not hold). A failed renewal is retried until the lock would expire; a lock that is lost (another
release holds it, or it expired before a renewal went through) aborts the release through `on_lost` (the
controller writes the abort to the ledger: later stages are skipped, the candidate is rolled back) and
`lost` tells the controller never to move traffic again.

Time is injected (`clock`, `wait`), so the keeper's logic runs in unit tests without a thread or a sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from releasegate.core.errors import LockLostError
from releasegate.core.target import Target
from releasegate.core.types import LockHolder


class LockKeeper:
    def __init__(self, target: Target, holder: LockHolder, ttl_s: float, *, on_lost: Callable[[str], None],
                 interval_s: float | None = None, retry_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, wait: Callable[[float], bool] | None = None,
                 acquired_at: float | None = None) -> None:
        """`interval_s` defaults to ttl/3; `retry_s` (after a failed renewal) to a tenth of that, at most 1 s.

        `clock` is a monotonic clock; `wait(seconds)` waits and returns True when the keeper must stop
        (default: the stop Event). `acquired_at` is the clock reading taken before the lock was asked for.
        """
        self.target = target
        self.holder = holder
        self.ttl_s = ttl_s
        self.interval_s = interval_s if interval_s is not None else ttl_s / 3
        self.retry_s = retry_s if retry_s is not None else min(1.0, self.interval_s / 10)
        self._on_lost = on_lost
        self._clock = clock
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._renewed_at = acquired_at if acquired_at is not None else clock()
        self._lost: str | None = None
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.last_error: str | None = None

    @property
    def lost(self) -> str | None:
        """Why the lock is no longer this release's, or None while it is held."""
        return self._lost

    @property
    def expires_at(self) -> float:
        """When the lock expires unless renewed, on `clock` (counted from before the last request)."""
        return self._renewed_at + self.ttl_s

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------------
    def start(self) -> LockKeeper:
        self._thread = threading.Thread(target=self.run, name="releasegate-lock-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop renewing; returns once no renewal is in flight (so a release cannot race one)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def run(self) -> None:
        """Renew until stopped or until the lock is lost (the thread's body; tests call it directly)."""
        delay: float | None = self.interval_s
        while delay is not None and not self._stopping.is_set() and not self._wait(delay):
            delay = self.tick()

    # -- one step -----------------------------------------------------------------------------------
    def tick(self) -> float | None:
        """One renewal attempt: the delay until the next one, or None when the lock is lost."""
        now = self._clock()
        if now >= self.expires_at:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            self._lose(f"run {self.holder.run_id} could not renew its release lock within the lock's TTL of "
                       f"{self.ttl_s:g}s{why}; another release may hold it now")
            return None
        try:
            self.target.renew_lock(self.holder, self.ttl_s)
        except LockLostError as exc:
            self._lose(str(exc))
            return None
        except Exception as exc:  # could not ask the target: retry until the lock would expire
            self.last_error = f"{type(exc).__name__}: {exc}"
            return max(0.0, min(self.retry_s, self.expires_at - self._clock()))
        self._renewed_at = now
        self.renewals += 1
        self.last_error = None
        return self.interval_s

    def _lose(self, reason: str) -> None:
        if self._stopping.is_set():
            return  # the lock is being released anyway: nothing left to protect
        self._on_lost(reason)  # first: whoever sees `lost` may rely on the abort being written
        self._lost = reason
