"""pytest-xdist support: one release controller, stage barriers, verification spread over workers.

The scheduler gives every worker its items at once, in global stage order, and then tells it to shut
down after them. (An xdist worker keeps its last item until it receives another one or the shutdown, so
handing out items stage by stage would stall at every barrier.) The barriers themselves are in the items:
each waits in its setup for the stages before it (plugins/gates.py). All action items go to the first
worker, which is therefore the only process that changes the target.

Loads are not dealt out specially: a stage's load tests go to the workers like any other item, and each
load waits for the run's load slot (plugins/load_slot.py), so loads take turns on the machine while items
that only read keep running in parallel beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from releasegate.plugins.items import ACTION_PREFIX
from releasegate.plugins.ledger import Ledger
from releasegate.plugins.run import LEDGER_INPUT, RUN_ID_INPUT


class StageScheduling:
    """The xdist scheduler protocol (see xdist.scheduler.EachScheduling) for a release run."""

    def __init__(self, config: pytest.Config, ledger: Ledger, log: Any = None) -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.config = config
        self.ledger = ledger  # a dead worker or a disagreement between workers aborts the release here
        self.numnodes = len(parse_tx_spec_config(config))
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self.collection_is_completed = False
        self._scheduled = False

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

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        self.node2collection[node] = list(collection)
        if len(self.node2collection) >= self.numnodes:
            self.collection_is_completed = True

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)

    def mark_test_pending(self, item: str) -> None:
        raise NotImplementedError("a release run does not reschedule items")

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        raise NotImplementedError("a release run does not reschedule items")

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node, [])
        if not pending:
            return None
        crashed = self.node2collection[node][pending[0]]
        # The items of a dead worker will never finish: stop the release rather than wait for them.
        self.ledger.abort(f"worker {node.gateway.id} died while running {crashed}")
        return crashed

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self._scheduled:
            return
        collections = list(self.node2collection.values())
        if any(c != collections[0] for c in collections[1:]):
            # Workers must agree on the items, or the indices in the ledger mean different things.
            self.ledger.abort("xdist workers collected different items")
        nodes = self.nodes
        collection = collections[0]
        action_node = nodes[0]
        plan: dict[Any, list[int]] = {node: [] for node in nodes}
        verifiers = iter(nodes * (len(collection) + 1))
        for index, nodeid in enumerate(collection):
            node = action_node if nodeid.startswith(ACTION_PREFIX) else next(verifiers)
            plan[node].append(index)
        for node, indices in plan.items():
            self.node2pending[node] = list(indices)
            if indices:
                node.send_runtest_some(indices)
            node.shutdown()
        self._scheduled = True


class XdistControllerHooks:
    """Registered on the xdist controller only."""

    def __init__(self, run_id: str, ledger: Ledger) -> None:
        self.run_id = run_id
        self.ledger = ledger

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_INPUT] = self.run_id
        node.workerinput[LEDGER_INPUT] = str(self.ledger.root)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> StageScheduling:
        return StageScheduling(config, self.ledger, log)
