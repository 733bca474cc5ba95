"""Collecting a release: the suites only, each test in its stage, the action items between them."""

from __future__ import annotations

from pathlib import Path

import pytest

from releasegate.plugins.items import ActionItem, order_items
from releasegate.plugins.run import ReleaseRun
from releasegate.plugins.runtime import ReleaseRuntime


class ReleaseCollection:
    def __init__(self, run: ReleaseRun, runtime: ReleaseRuntime) -> None:
        self.run = run
        self.runtime = runtime

    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        # The project's own tests are never part of a release.
        if collection_path == self.run.config.rootpath / "tests":
            return True
        return None

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection: the actions are added back afterwards
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        ledger = self.run.ledger
        try:
            ordered, counts = order_items(session, items, self.run.stages, self.run.suites_root,
                                          self.runtime.run_action)
        except pytest.UsageError as exc:
            # The run started a release (it has a run id and a report): the report must say why it stopped.
            ledger.update_context(usage_error=str(exc))
            raise
        required = self.run.release_config.release.required_stages
        empty = [stage for stage in required if counts.get(stage, 0) == 0]
        if empty:
            suites = self.run.suites_root.name
            reason = (f"required stage(s) {', '.join(empty)} have no test; add tests under "
                      + ", ".join(f"{suites}/{stage}/" for stage in empty)
                      + " (or change release.required_stages): nothing was provisioned")
            ledger.update_context(not_promoted_reason=reason)
            config.hook.pytest_deselected(items=list(items))
            items[:] = []
            return
        items[:] = ordered
        self.runtime.items = ordered
        _count_action_items(session, [item for item in ordered if isinstance(item, ActionItem)])


def _count_action_items(session: pytest.Session, actions: list[pytest.Item | pytest.Collector]) -> None:
    """Report the action items as collected, so that "collected N items" counts what the run runs."""
    if actions:
        parent = actions[0].parent
        assert parent is not None
        report = pytest.CollectReport(parent.nodeid, "passed", None, actions)
        session.config.hook.pytest_collectreport(report=report)
