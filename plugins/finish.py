"""The end of a release run: the decision, the exit code, the reports and the terminal's last lines.

Everything here runs where every test report arrives (the only pytest process, or the xdist controller),
so the outcome is the same with or without `-n`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from releasegate.plugins.ledger import Decision
from releasegate.plugins.reporting import ReleaseReporter, point_latest_at, write_report
from releasegate.plugins.run import REPORT_NAME, ReleaseRun
from releasegate.plugins.runtime import ReleaseRuntime

_DECISION_VERBS = {Decision.PROMOTED: "now serves all traffic", Decision.ROLLED_BACK: "was rolled back",
                   Decision.NOT_PROMOTED: "was not promoted",
                   Decision.INCONCLUSIVE: "was not promoted: the analysis was inconclusive (extend it, or accept "
                                          "by hand)"}


class ReleaseFinish:
    def __init__(self, run: ReleaseRun, runtime: ReleaseRuntime) -> None:
        self.run = run
        self.runtime = runtime
        self.reporter = ReleaseReporter(run.options, run.ledger)
        self.summary: dict[str, Any] | None = None
        self.report_problem: str | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.run.is_worker:
            self.reporter.add(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.runtime.stop_controller()
        if not self.run.writes_reports:
            return
        code = self.reporter.exit_code(int(exitstatus))
        summary = self.reporter.summary(code)
        xml = self.run.config.stash.get(_junit_key(), None)
        if xml is not None:
            for name, value in self.reporter.suite_properties(summary):
                xml.add_global_property(name, value)
        try:
            write_report(summary, self.run.report_dir / REPORT_NAME)
        except OSError as exc:  # the decision must still reach the terminal and the exit code
            self.report_problem = f"could not write the release report to {self.run.report_dir}: {exc}"
        self.summary = summary
        self.run.config.hook.pytest_releasegate_decision(config=self.run.config, decision=summary["decision"],
                                                         summary=summary)
        session.exitstatus = code

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        summary = self.summary
        if summary is None:
            return
        decision = Decision(summary["decision"])
        previous = f" (previous: {summary['previous']})" if summary["previous"] else ""
        lines = [f"releasegate: {summary['version']} {_DECISION_VERBS[decision]}{previous}; "
                 f"exit code {summary['exit_code']}"]
        if summary["reason"]:
            lines.append(f"releasegate: why: {summary['reason']}")
        if summary.get("target_detail"):
            lines.append(f"releasegate: target: {summary['target_detail']}")
        for step in summary.get("traffic") or []:
            lines.append(f"releasegate: {step['step']}: requested {step['requested']}%, effective "
                         f"{step['effective']}% ({step['traffic']})")
        problem = self.run.ledger.read_context().cleanup_problem
        if problem:
            lines.append(f"releasegate: WARNING: {problem}")
        if self.report_problem:
            lines.append(f"releasegate: WARNING: {self.report_problem}")
        else:
            lines.append(f"releasegate: report {self.run.report_dir / REPORT_NAME}")
        promoted = decision is Decision.PROMOTED
        terminalreporter.write_sep("=", "release", bold=True, green=promoted, red=not promoted)
        terminalreporter.write_line("\n".join(lines))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # After junitxml wrote its file (in sessionfinish): `latest` only ever names a complete run.
        if self.run.writes_reports and self.run.report_dir.is_dir():
            with contextlib.suppress(OSError):
                point_latest_at(self.run.report_dir)


def _junit_key() -> Any:
    from _pytest.junitxml import xml_key

    return xml_key
