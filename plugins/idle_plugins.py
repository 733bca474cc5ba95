"""A release run does not pay at its end for a plugin that has nothing to do.

hypothesis's pytest plugin (installed with releasegate's dev extras, as scripts/setup.sh does) imports
hypothesis in its terminal summary, only to list the observability files a hypothesis test may have written:
about a second after the decision of every release on this machine. When no test of the run imported
hypothesis, no such file exists and the summary would say nothing, so the plugin is unregistered at the end
of the session, which pytest runs before the terminal summary. A run whose suites use hypothesis keeps it.
"""

from __future__ import annotations

import sys

import pytest

HYPOTHESIS_PLUGIN = "hypothesispytest"  # its pytest11 entry point name


class IdlePlugins:
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        manager = session.config.pluginmanager
        if "hypothesis" not in sys.modules and manager.has_plugin(HYPOTHESIS_PLUGIN):
            manager.unregister(name=HYPOTHESIS_PLUGIN)
