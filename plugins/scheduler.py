"""pytest-xdist support: one release controller, stage barriers, verification spread over workers.

The scheduler gives every worker its items at once, in global stage order, and then tells it to shut
down after them. (An xdist worker keeps its last item until it receives another one or the shutdown, so
handing out items stage by stage would stall at every barrier.) The barriers themselves are in the items:
each waits in its setup for the stages before it (plugins/gates.py). All action items go to the first
worker that finished collecting, which is therefore the only process that changes the target.

Scheduling starts with that first worker: it runs preflight and provision while the other workers still
start and collect (on two cores, four workers take seconds to import and collect), and each of them gets
its share of the verification items as its collection arrives. The plan is fixed by positions (the order in
which workers collected), so it does not depend on which worker is first.

On two cores, four workers importing and collecting at once delay the first of them, and with it the whole
release, by half a second. So every worker but the first starts at SCHED_IDLE, where the user may return a
thread to normal priority (core.processes.can_leave_idle_scheduling), and takes normal priority back as soon
as it has collected, before it runs anything (XdistWorkerHooks): the first worker collects alone and starts
preflight and provision, and the others import on the CPU time these leave (provision mostly waits).

A worker that has finished its items exits at once (XdistControllerHooks), so its interpreter's shutdown
overlaps the rest of the release or the controller's reports instead of adding to the run's end.

Loads are not dealt out specially: a stage's load tests go to the workers like any other item, and each
load waits for the run's load slot (plugins/load_slot.py), so loads take turns on the machine while items
that only read keep running in parallel beside them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from releasegate.core.processes import can_leave_idle_scheduling
from releasegate.plugins.items import ACTION_PREFIX
from releasegate.plugins.ledger import Ledger
from releasegate.plugins.run import LEDGER_INPUT, RUN_ID_INPUT

# What the controller tells a worker it started at SCHED_IDLE, so that the worker, and only such a worker
# (not one the user started at SCHED_IDLE on purpose), returns to normal priority once it has collected.
IDLE_START_INPUT = "releasegate_idle_start"
# How long the end of the run waits for a worker it told to exit (execnet's worker side gives up at 15 s).
WORKER_EXIT_TIMEOUT_S = 20.0
# Run in a new worker's main thread (xdist's execmodel: main_thread_only), before xdist's own code there.
_START_IDLE = "import os; os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))"


class StageScheduling:
    """The xdist scheduler protocol (see xdist.scheduler.EachScheduling) for a release run."""

    def __init__(self, config: pytest.Config, ledger: Ledger, log: Any = None) -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.config = config
        self.ledger = ledger  # a dead worker or a disagreement between workers aborts the release here
        self.numnodes = len(parse_tx_spec_config(config))
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self._positions: dict[Any, int] = {}  # worker -> its share of the plan, in the order they collected
        self._scheduled = False  # every position has its share

    @property
    def nodes(self) -> list[Any]:
        return list(self.node2pending)

    @property
    def tests_finished(self) -> bool:
        return self._scheduled and not any(self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return any(self.node2pending.values())

    def add_node(self, node: Any) -> None:
        self.node2pending[node] = []

    @property
    def collection_is_completed(self) -> bool:
        """xdist schedules once this is true and again at each later collection: from the first worker on."""
        return bool(self.node2collection)

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        first = next(iter(self.node2collection.values()), None)
        self.node2collection[node] = list(collection)
        if first is not None and list(collection) != first:
            # Workers must agree on the items, or the indices in the ledger mean different things.
            self.ledger.abort("xdist workers collected different items")

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)

    def mark_test_pending(self, item: str) -> None:
        raise NotImplementedError("a release run does not reschedule items")

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        raise NotImplementedError("a release run does not reschedule items")

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node, [])
        if node not in self._positions and not self._scheduled:
            # It died before it collected: its share of the checks will never run, so the release stops.
            self.numnodes -= 1
            self.ledger.abort(f"worker {node.gateway.id} died before it collected the items")
            self._scheduled = len(self._positions) >= self.numnodes
            return None
        if not pending:
            return None
        crashed = self.node2collection[node][pending[0]]
        # The items of a dead worker will never finish: stop the release rather than wait for them.
        self.ledger.abort(f"worker {node.gateway.id} died while running {crashed}")
        return crashed

    def schedule(self) -> None:
        """Send each worker that has collected, and has no share yet, its share; then its shutdown."""
        assert self.collection_is_completed
        for node, collection in self.node2collection.items():
            if node in self._positions or node not in self.node2pending:  # scheduled already, or gone
                continue
            position = self._positions[node] = len(self._positions)
            indices = share(collection, position, self.numnodes)
            self.node2pending[node] = list(indices)
            if indices:
                node.send_runtest_some(indices)
            node.shutdown()
        self._scheduled = len(self._positions) >= self.numnodes


def share(collection: Sequence[str], position: int, workers: int) -> list[int]:
    """The item indices of the worker at `position` (0: the first to collect) of `workers`: every action
    at position 0, the verification items dealt round-robin from position 0 on, in collection order."""
    indices: list[int] = []
    verifier = 0
    for index, nodeid in enumerate(collection):
        if nodeid.startswith(ACTION_PREFIX):
            if position == 0:
                indices.append(index)
            continue
        if verifier % workers == position:
            indices.append(index)
        verifier += 1
    return indices


class XdistControllerHooks:
    """Registered on the xdist controller only."""

    def __init__(self, run_id: str, ledger: Ledger) -> None:
        self.run_id = run_id
        self.ledger = ledger
        self._told_to_exit: list[Any] = []  # gateways of workers that finished and were told to exit
        self._gateways_started = 0
        self._started_idle: set[str] = set()
        self._idle_possible: bool | None = None  # can_leave_idle_scheduling(), tried once, when first needed

    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        self._gateways_started += 1
        # Local processes only (-n): a worker on another machine (--tx ssh=...) competes for no CPU of ours.
        if self._gateways_started > 1 and getattr(gateway.spec, "popen", False) and self._may_start_idle():
            gateway.remote_exec(_START_IDLE)
            self._started_idle.add(gateway.id)

    def _may_start_idle(self) -> bool:
        if self._idle_possible is None:
            self._idle_possible = can_leave_idle_scheduling()
        return self._idle_possible

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_INPUT] = self.run_id
        node.workerinput[LEDGER_INPUT] = str(self.ledger.root)
        node.workerinput[IDLE_START_INPUT] = node.gateway.id in self._started_idle

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> StageScheduling:
        return StageScheduling(config, self.ledger, log)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker that has finished its items exits now, not with every other one at the session's end.

        xdist tells every worker to exit only once the last one has finished and the controller's reports are
        written, then waits for them all: four interpreters shutting down at once on the critical path, on two
        cores. Now most workers' exit overlaps finalize (they finish while the action worker still runs it),
        and the last one's overlaps the reports. The message is the one xdist's teardown sends (execnet's
        gateway exit: the worker ends its session first); pytest_sessionfinish below waits for them."""
        if error is None:
            node.gateway.exit()
            self._told_to_exit.append(node.gateway)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        """The run ends only once every worker told to exit has left: execnet's terminate, in xdist's teardown,
        waits only while a gateway it has not told is left. A worker still executing after 5 s interrupts
        itself and after 10 more ends its process (execnet's own shutdown), so the wait is bounded."""
        for gateway in self._told_to_exit:
            gateway.join(timeout=WORKER_EXIT_TIMEOUT_S)


class XdistWorkerHooks:
    """Registered on xdist workers only."""

    def __init__(self, workerinput: dict[str, Any]) -> None:
        self.started_idle = bool(workerinput.get(IDLE_START_INPUT))

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Normal priority again before this worker tells the controller its collection (and so before any item:
        a check measures nothing at SCHED_IDLE, and an action changes nothing there)."""
        if self.started_idle and os.sched_getscheduler(0) == os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        self.started_idle = False
