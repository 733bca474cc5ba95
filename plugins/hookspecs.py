"""Hooks that releasegate calls, for plugins and conftest files that want to react to a release."""

from __future__ import annotations

from typing import Any

import pytest


class ReleasegateHookspecs:
    @pytest.hookspec(firstresult=False)
    def pytest_releasegate_decision(self, config: pytest.Config, decision: str, summary: dict[str, Any]) -> None:
        """Called once per release, after the decision is known, on the reporting process (the only
        pytest process, or the xdist controller).

        `decision` is promoted, rolled-back or not-promoted; `summary` is the release report's data
        (version, previous, per-stage outcomes and times, failing checks). Use it to notify a chat, open
        a ticket or annotate a dashboard.
        """
