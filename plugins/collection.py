"""Collecting a release: the suites only, each test in its stage, the action items between them."""

from __future__ import annotations

from pathlib import Path

import pytest

from releasegate.plugins.items import CANARY_PARAM, ActionItem, order_items
from releasegate.plugins.run import ReleaseRun
from releasegate.plugins.runtime import ReleaseRuntime
from releasegate.plugins.stages import stage_of_path


class ReleaseCollection:
    def __init__(self, run: ReleaseRun, runtime: ReleaseRuntime) -> None:
        self.run = run
        self.runtime = runtime

    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        # The project's own tests are never part of a release.
        if collection_path == self.run.config.rootpath / "tests":
            return True
        return None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Canary: every analysis test runs once per step, after that step's shift (`[10%]` in its id)."""
        if self.run.options.strategy != "canary":
            return
        marker = metafunc.definition.get_closest_marker("stage")
        stage = marker.args[0] if marker is not None and marker.args else stage_of_path(
            metafunc.definition.path, self.run.suites_root)
        if stage != "analysis":
            return
        if CANARY_PARAM not in metafunc.fixturenames:
            metafunc.fixturenames.append(CANARY_PARAM)
        steps = self.run.release_config.canary.steps
        metafunc.parametrize(CANARY_PARAM, steps, ids=[f"{weight}%" for weight in steps])

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
