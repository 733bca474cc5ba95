"""SIGINT and SIGTERM while a release runs: stop the release, but never its cleanup.

A CI runner that cancels a job sends SIGTERM (to the whole process group, as a rule); a person presses Ctrl-C.
Either way the release must end like a failed one: the item that was running is an error with the reason
("interrupted by SIGTERM during load"), the later stages are skipped, `release::rollback` puts traffic back and
removes the candidate, and the exit code is 2. Python turns SIGINT into KeyboardInterrupt, which pytest lets
end the whole session (no rollback item, reports that look green), and SIGTERM kills the process outright
(no cleanup at all). So while a release runs, both are handled here, by where the process is:

- inside an item (its setup after its turn came, its call, its teardown): the signal raises in the main
  thread, and the item's hook wrappers turn it into an error of that item (`SignalGuard.converting`);
- between two items: the next item to run is the interrupted one (single process), or, in an xdist
  worker waiting for its turn, the wait ends and the item is skipped;
- during the cleanup (the rollback item, the end of the run), and after the first signal anywhere: the
  signal is noted, never raised, so a second Ctrl-C cannot abandon the cleanup half-way. The cleanup has
  deadlines of its own (the rollback stage's, the emergency stop's), so it cannot hang forever either;
- the xdist controller runs no item: it records the stop in the ledger and passes the signal on to its
  workers (a `kill` aimed at it alone must still reach the worker that drives the release).

Every process of the run writes the stop into the ledger (`Ledger.abort`), which is what stops the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

from releasegate.core.errors import ExitCode, ReleasegateError
from releasegate.plugins.ledger import Ledger

HANDLED = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_PROPERTY = "release.item.interrupted"
"""The user property (JUnit) of an item a signal interrupted: how the reporting process tells it from a failure."""

DUPLICATE_WITHIN_S = 2.0
"""The same signal again this soon is the same request: a process-group kill reaches the xdist workers both
directly and through the controller, and that is one interrupt, not a second one during the cleanup."""


class SignalInterrupt(KeyboardInterrupt):
    """Raised in the main thread by the handler; a KeyboardInterrupt, so no `except Exception` swallows it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InterruptedBySignal(ReleasegateError):
    """An item's error: the release was interrupted while it ran (what SignalInterrupt becomes in an item)."""

    exit_code = ExitCode.INTERRUPTED


class Region(Enum):
    OUTSIDE = "outside"  # before the items run (collection): an interrupt ends the session, nothing was touched
    BETWEEN = "between"  # between items: the next item to run is the interrupted one
    WAITING = "waiting"  # an xdist worker waiting for its item's turn: the wait ends, the item is skipped
    RUNNING = "running"  # inside an item: raise now, the item's wrappers make it the item's error
    CLEANUP = "cleanup"  # the rollback item, the end of the run: note it, go on
    FORWARD = "forward"  # the xdist controller: record, pass the signal on to the workers, go on


class SignalGuard:
    """One process's handling of SIGINT and SIGTERM while a release runs (see the module's docstring)."""

    def __init__(self, ledger: Ledger, *, phase: Callable[[], str], forward: bool = False,
                 cleanup_deadline_s: float = 150.0, stderr: Any = None) -> None:
        self.ledger = ledger
        self.phase = phase  # where the release stands now, for the reason: "load", "analysis[10%]", ...
        self.region = Region.FORWARD if forward else Region.OUTSIDE
        self.cleanup_deadline_s = cleanup_deadline_s  # the xdist controller's wait for its workers' cleanup
        self.reason: str | None = None  # set by the first signal
        self.first_at = 0.0
        self.first_name = ""
        self.pending = False  # the first signal came between items: the next item is the interrupted one
        self.unconverted = False  # SignalInterrupt was raised into the running item and not yet made its error
        self.item_active = False  # between an item's start (its turn came) and its end
        self.notes: list[str] = []  # later signals, noted during the cleanup
        self._stderr = stderr
        self._previous: dict[int, Any] = {}
        self._deadline_armed = False

    # -- installing ----------------------------------------------------------------------------------
    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for number in HANDLED:
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Give the signals back their handlers from before the release (pytest's KeyboardInterrupt, or death)."""
        if self._deadline_armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._deadline_armed = False
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    # -- the handler ---------------------------------------------------------------------------------
    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.reason is not None:
            self._note_again(name)
            return
        self.reason = f"interrupted by {name} during {self._phase()}"
        self.first_at, self.first_name = time.monotonic(), name
        self.ledger.abort(self.reason)  # what stops every other item, in every process of the run
        self._say(f"{name}: stopping the release ({self.reason}); traffic goes back to the last verified "
                  "version and the candidate is removed. A second signal does not stop that cleanup.")
        region = self.region
        if region is Region.FORWARD:
            self._forward(number)
            self._arm_cleanup_deadline()
            return
        self.region = Region.CLEANUP  # from now on everything this process does is the cleanup
        if region is Region.BETWEEN:
            self.pending = True
        elif region is Region.RUNNING:
            self.unconverted = True
            raise SignalInterrupt(self.reason)
        elif region is Region.OUTSIDE:
            raise SignalInterrupt(self.reason)  # collection: pytest ends the session; nothing was touched
        # WAITING and CLEANUP: the abort in the ledger is all it takes.

    def _phase(self) -> str:
        try:
            return self.phase()
        except Exception:  # the handler must act whatever the ledger says (a half-written file, a full disk)
            return "an unknown phase"

    def _note_again(self, name: str) -> None:
        if name == self.first_name and time.monotonic() - self.first_at < DUPLICATE_WITHIN_S:
            return
        note = f"{name} during the cleanup ({self._phase()}): noted; the cleanup went on"
        self.notes.append(note)
        self.ledger.note_signal(note)
        self._say(f"{name} again: the cleanup goes on, it has its own deadline; the release stops when it is done")

    def _say(self, line: str) -> None:
        with contextlib.suppress(Exception):  # a closed or full stderr must not stop the handling
            stream = self._stderr or sys.stderr
            stream.write(f"\nreleasegate: {line}\n")
            stream.flush()

    def _forward(self, number: int) -> None:
        """Pass the signal on to this process's children (the xdist workers): one of them drives the release."""
        for pid in child_pids(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, number)

    def _arm_cleanup_deadline(self) -> None:
        """The controller waits for its workers' cleanup this long at most, then ends the session anyway."""
        def expired(number: int, frame: FrameType | None) -> None:
            problem = (f"the cleanup after {self.reason} did not finish within {self.cleanup_deadline_s:g}s; "
                       "check the target: traffic and the candidate may be where the interrupt left them")
            with contextlib.suppress(Exception):
                self.ledger.update_context(cleanup_problem=problem)
            raise SignalInterrupt(problem)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, expired)
            signal.setitimer(signal.ITIMER_REAL, self.cleanup_deadline_s)
            self._deadline_armed = True

    # -- where the process is ------------------------------------------------------------------------
    def _go(self, region: Region) -> None:
        """Move to `region`, unless the release is already stopping (then everything is the cleanup)."""
        if self.region is Region.FORWARD:
            return
        self.region = Region.CLEANUP if self.reason is not None else region

    def items_start(self) -> None:
        """Collection is over: from here on a signal stops the release instead of ending the session."""
        self._go(Region.BETWEEN)

    def waiting(self, *, in_worker: bool) -> None:
        """An item waits for its turn. A single process never really waits (its items run in order), so a
        signal now interrupts the item about to run; an xdist worker's item skips instead (it did not start)."""
        self._go(Region.WAITING if in_worker else Region.BETWEEN)

    def start_item(self, *, cleanup: bool) -> None:
        """The item's turn came: it runs (the rollback item as cleanup). A signal that came between items
        makes this item the interrupted one."""
        if cleanup:
            self.pending = False
            self._go(Region.CLEANUP)
            return
        self.item_active = True
        self._raise_if_pending()
        self._go(Region.BETWEEN)

    def end_item(self) -> None:
        self.item_active = False
        if self.region is not Region.CLEANUP or self.reason is None:
            self._go(Region.BETWEEN)

    def _raise_if_pending(self) -> None:
        if self.pending:
            self.pending = False
            assert self.reason is not None
            raise InterruptedBySignal(self.reason)

    @contextlib.contextmanager
    def shielded(self) -> Generator[None, None, None]:
        """A section that must finish once started (the cleanup): a signal in it is noted, not raised."""
        before = self.region
        if before is not Region.FORWARD:
            self.region = Region.CLEANUP
        try:
            yield
        finally:
            if self.reason is None:
                self.region = before

    @contextlib.contextmanager
    def converting(self, *, may_start: bool = True) -> Generator[None, None, None]:
        """Around one phase of an item: the signal's KeyboardInterrupt becomes the item's error.

        `may_start`: a signal that came just before this phase interrupts the item here (not at teardown,
        which must still tear the fixtures down)."""
        if self.item_active and self.region is Region.BETWEEN:
            if may_start:
                self._raise_if_pending()
            self.region = Region.RUNNING
        try:
            yield
        except SignalInterrupt as interrupt:
            self.unconverted = False
            raise InterruptedBySignal(interrupt.reason) from interrupt
        finally:
            if self.region is Region.RUNNING:
                self.region = Region.BETWEEN
        if self.unconverted:  # the test swallowed the KeyboardInterrupt: the item was interrupted all the same
            self.unconverted = False
            raise InterruptedBySignal(self.reason or "interrupted")


def child_pids(parent: int) -> list[int]:
    """Live processes whose parent is `parent` (from /proc; the xdist workers of the controller)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def running_phase(ledger: Ledger) -> str:
    """The stage of the items that started and have not finished (from the ledger: any process's items)."""
    finished = set(ledger.finished_items())
    started = []
    for path in ledger.items_dir.glob("*.start"):
        with contextlib.suppress(ValueError):
            if int(path.stem) not in finished:
                started.append(int(path.stem))
    if started:
        with contextlib.suppress(OSError, KeyError, ValueError):
            import json

            return str(json.loads((ledger.items_dir / f"{min(started)}.start").read_text())["stage"])
    if finished:
        last = max(finished)
        return f"the step after {ledger.finished_items()[last].stage}"
    return "the start of the release"


def interrupted_reason(report: Any) -> str | None:
    """The reason of an item a signal interrupted (INTERRUPTED_PROPERTY), from its report; None otherwise."""
    return next((str(value) for name, value in getattr(report, "user_properties", ()) if name == INTERRUPTED_PROPERTY),
                None)


def junit_error_instead_of_failure(xml: Any, report: Any, reason: str) -> None:
    """JUnit writes a failed call as <failure>: an interrupted item did not fail its checks, it was stopped,
    so its testcase says <error message="interrupted by SIGTERM during load"> and counts as an error.

    `xml` is pytest's junitxml LogXML, after it recorded the call report (its element is still open)."""
    reporter = xml.node_reporter(report)
    for element in reversed(reporter.nodes):
        if element.tag == "failure":
            element.tag = "error"
            element.set("message", reason)
            xml.stats["failure"] -= 1
            xml.stats["error"] += 1
            return
