"""Running a release's items: stage barriers, stage deadlines, the actions, and each item's record."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from releasegate.core.checks import CheckFailed
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.plugins.gates import wait_for_turn
from releasegate.plugins.items import INDEX_KEY, STAGE_KEY, ActionItem
from releasegate.plugins.ledger import INCONCLUSIVE_PROPERTY, ItemRecord, Outcome
from releasegate.plugins.progress import progress_callback
from releasegate.plugins.prometheus_gate import (
    FIRST_SCRAPE_PROPERTY,
    UNGATED_STAGES,
    LivePrometheusGate,
    PrometheusGate,
    await_first_scrape,
)
from releasegate.plugins.run import ReleaseRun
from releasegate.plugins.signals import INTERRUPTED_PROPERTY, InterruptedBySignal, SignalGuard, running_phase
from releasegate.plugins.stages import STAGE_PROPERTY, Stage

if TYPE_CHECKING:  # imported by the process that runs the actions, at its first (run_action)
    from releasegate.plugins.controller import ReleaseController


class StageDeadlineExceeded(AssertionError):
    """A stage ran past its configured deadline: a failure, and the release stops."""


@dataclass
class ItemRun:
    """What one item's run gathers between its setup and its end, for its ledger record."""

    started: float
    failures: list[ItemRecord] = field(default_factory=list)  # of earlier items (a rollback reads them)
    outcome: Outcome | None = None
    message: str = ""
    usage_error: bool = False


ITEM_RUN_KEY = pytest.StashKey[ItemRun]()


class ReleaseRuntime:
    def __init__(self, run: ReleaseRun) -> None:
        self.run = run
        self.items: list[pytest.Item] = []
        self.controller: ReleaseController | None = None
        self.current_stage: str | None = None  # the stage of the item this process runs now
        self.first_scrape_seen = False  # this process has seen Prometheus scrape the candidate (await_first_scrape)
        self.collecting = True
        # SIGINT/SIGTERM stop the release through its own items (plugins/signals.py). The cleanup is bounded
        # by the rollback's deadline; the xdist controller, which waits for its workers, gets some more.
        self.guard = SignalGuard(run.ledger, phase=self._phase,
                                 cleanup_deadline_s=float(run.release_config.stages.rollback) + 30.0)

    def _phase(self) -> str:
        """Where the release stands, for the reason of a stop: "load", "analysis[10%]", "collection", ..."""
        if self.current_stage is not None:
            return self.current_stage
        if self.collecting:
            return "collection"
        finished = self.run.ledger.finished_items()
        upcoming = [item for item in self.items if item.stash[INDEX_KEY] not in finished]
        if upcoming and not self.run.is_worker:  # between two items of a single process: the next one's stage
            return upcoming[0].stash[STAGE_KEY].label
        return running_phase(self.run.ledger)

    # -- signals: handled from the session's start to the end of the run (pytest_unconfigure) ---------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.run.is_worker and self.run.config.pluginmanager.hasplugin("dsession"):
            self.guard = SignalGuard(self.run.ledger, phase=self._phase, forward=True,
                                     cleanup_deadline_s=self.guard.cleanup_deadline_s)
        self.guard.install()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        self.collecting = False
        self.guard.items_start()
        loads_here = self.run.is_worker or not self.run.config.pluginmanager.hasplugin("dsession")
        if loads_here and not session.config.option.collectonly and any(
                "load" in getattr(item, "fixturenames", ()) for item in session.items):
            from releasegate.verifiers.load import warm_up_locust

            warm_up_locust()  # locust's import runs beside preflight and provision, not in the first load

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.guard.restore()

    def _first_index_of_stage(self, stage: Stage) -> int:
        return next(item.stash[INDEX_KEY] for item in self.items if item.stash[STAGE_KEY] == stage)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        if STAGE_KEY not in item.stash:
            return (yield)
        # The item's fixtures may be interrupted too: the same error, in its setup (and so in teardown).
        with self.guard.converting():
            self._take_turn(item)  # before every other setup (the fixtures): skip without setting them up
            return (yield)

    def _take_turn(self, item: pytest.Item) -> None:
        stage, index = item.stash[STAGE_KEY], item.stash[INDEX_KEY]
        item.user_properties.append((STAGE_PROPERTY, stage.label))
        before = index if stage.name == "rollback" else self._first_index_of_stage(stage)
        # A single process runs its items in order: this one is next, a signal now interrupts it. An xdist
        # worker may wait here while other stages run: a signal now is theirs, and this item skips.
        if not self.run.is_worker:
            self.current_stage = stage.label
        self.guard.waiting(in_worker=self.run.is_worker)
        turn = wait_for_turn(self.run.ledger, before=before, timeout_s=self.run.total_deadline_s())
        self.current_stage = stage.label
        item.stash[ITEM_RUN_KEY] = ItemRun(started=time.time(), failures=turn.failures)
        self.run.ledger.item_started(index, stage.label)
        # A signal that came between items interrupts this one (an error), unless it is the cleanup itself.
        self.guard.start_item(cleanup=stage.name == "rollback")
        if stage.name != "rollback" and turn.stop_reason:
            pytest.skip(turn.stop_reason)
        if stage.name == "post_switch" and self.run.options.dry_run:
            pytest.skip("dry run: traffic never moved to the candidate, so there is no switch to check after")
        if stage.name not in UNGATED_STAGES and not self.first_scrape_seen:
            waited = await_first_scrape(self.run.ledger, self._prometheus_gate())
            self.first_scrape_seen = True
            if waited is not None:
                item.user_properties.append((FIRST_SCRAPE_PROPERTY, f"{waited:.2f}"))

    def _prometheus_gate(self) -> PrometheusGate:
        """The controller's, in the process that runs the actions (a test may give it a fake); else a live one."""
        if self.controller is not None:
            return self.controller.prometheus
        return LivePrometheusGate(self.run.release_config.prometheus)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        if STAGE_KEY not in item.stash:
            return (yield)
        stage = item.stash[STAGE_KEY]
        limit = float(getattr(self.run.release_config.stages, stage.name))
        started = self.run.ledger.stage_started_at(stage.label) or time.time()
        with self.guard.converting(), _deadline(limit - (time.time() - started),
                                                f"stage {stage.label} overran its deadline of {limit:g}s "
                                                f"(stages.{stage.name})"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        if STAGE_KEY not in item.stash:
            return (yield)
        with self.guard.converting(may_start=False):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None],
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.excinfo is not None and isinstance(call.excinfo.value, (ReleasegateError, AssertionError)):
            # JUnit's failure message is the crash line: make it the check's own sentence, without the
            # exception's type in front, so a reader sees "p(95) 412ms > 300ms over ..." and nothing else.
            crash = getattr(report.longrepr, "reprcrash", None)
            if crash is not None:
                text = str(call.excinfo.value).split("\nassert ", 1)[0].strip()
                crash.message = text or crash.message
        item_run = item.stash.get(ITEM_RUN_KEY, None)
        error = call.excinfo.value if call.excinfo is not None else None
        interrupted = isinstance(error, InterruptedBySignal)
        if interrupted:  # the reporting process sees reports only: an error, not a failure (see finish.py)
            report.user_properties.append((INTERRUPTED_PROPERTY, str(error)))
        if item_run is not None and item_run.outcome is None:
            if report.failed and interrupted:
                item_run.outcome, item_run.message = Outcome.ERROR, _exception_line(call)
            elif report.failed:
                inconclusive = report.when == "call" and _inconclusive_only(call)
                if inconclusive:  # the reporting process sees reports only: tell it through a property
                    report.user_properties.append((INCONCLUSIVE_PROPERTY, "true"))
                item_run.outcome = Outcome.of_failed_call(inconclusive) if report.when == "call" else Outcome.ERROR
                item_run.message = _exception_line(call) or report.when
                item_run.usage_error = call.excinfo is not None and isinstance(call.excinfo.value, ConfigError)
            elif report.skipped:
                item_run.outcome = Outcome.SKIPPED
                item_run.message = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            self.current_stage = None
            self.guard.end_item()
            item_run = item.stash.get(ITEM_RUN_KEY, None)
            if item_run is not None:
                self.run.ledger.item_finished(ItemRecord(
                    index=item.stash[INDEX_KEY], nodeid=item.nodeid, stage=item.stash[STAGE_KEY].label,
                    outcome=item_run.outcome or Outcome.PASSED, message=item_run.message,
                    started=item_run.started, finished=time.time(), usage_error=item_run.usage_error))

    def run_action(self, item: ActionItem) -> None:
        """Run one action item; the first one creates the controller (in the process that runs actions)."""
        if self.controller is None:
            from releasegate.plugins.controller import ReleaseController

            self.controller = ReleaseController(self.run.release_config, self.run.options, self.run.ledger)
        self.controller.on_progress = progress_callback(item)  # finalize's watch draws the live line
        try:
            if item.stage.name == "rollback":
                with self.guard.shielded():  # the cleanup: a signal now is noted, never abandons it half-way
                    result = self.controller.rollback(item.stash[ITEM_RUN_KEY].failures)
            else:
                result = self.controller.run(item.stage)
        except Exception as exc:  # a failed action may still say what it saw (finalize's watch: WatchBreach)
            item.user_properties.extend(getattr(exc, "properties", ()))
            raise
        item.user_properties.extend(result.properties)
        if result.skipped:
            pytest.skip(result.skipped)

    def pytest_keyboard_interrupt(self) -> None:
        self.run.ledger.abort(self.guard.reason or "interrupted (Ctrl-C)")

    def stop_controller(self) -> None:
        """At the end of the run: whatever did not finish is undone, best effort, and the target closed.

        Shielded from signals and bounded by the rollback's deadline: it neither stops half-way nor hangs."""
        if self.controller is None:
            return
        limit = float(self.run.release_config.stages.rollback)
        with self.guard.shielded():
            try:
                with _deadline(limit, f"the emergency stop overran its deadline of {limit:g}s (stages.rollback)"):
                    problem = self.controller.emergency_stop(self.run.ledger.aborted() or "the run ended early")
            except StageDeadlineExceeded as exc:  # raised between emergency_stop's own try and its return
                problem = str(exc)
            self.controller.close()
        if problem:
            self.run.ledger.update_context(cleanup_problem=problem)


def _exception_line(call: pytest.CallInfo[None]) -> str:
    if call.excinfo is None:
        return ""
    value = call.excinfo.value
    text = str(value) if isinstance(value, (ReleasegateError, AssertionError)) else f"{call.excinfo.typename}: {value}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else call.excinfo.typename


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Generator[None, None, None]:
    """Fail the running test when `seconds` pass (SIGALRM; only the main thread can be interrupted)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if seconds <= 0:
        raise StageDeadlineExceeded(message)

    def on_alarm(signum: int, frame: object) -> None:
        raise StageDeadlineExceeded(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _inconclusive_only(call: pytest.CallInfo[None]) -> bool:
    """The test stopped on checks that decided neither way, and on nothing else."""
    return call.excinfo is not None and isinstance(call.excinfo.value, CheckFailed) \
        and call.excinfo.value.inconclusive_only
