"""The end of a release run: the decision, the exit code, the reports and the terminal's last lines.

Everything here runs where every test report arrives (the only pytest process, or the xdist controller),
so the outcome is the same with or without `-n`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from releasegate.plugins.frozen_heap import freeze_long_lived
from releasegate.plugins.html_report import (
    HTML_REPORT_NAME,
    FigureCache,
    prerender_html_report,
    warm_up_html_report,
    write_html_report,
)
from releasegate.plugins.items import ACTION_PREFIX
from releasegate.plugins.junit_format import move_case_properties_to_output
from releasegate.plugins.ledger import Decision
from releasegate.plugins.reporting import REPORT_MODE, ReleaseReporter, describe_overlaps, point_latest_at, write_report
from releasegate.plugins.run import JUNIT_NAME, REPORT_NAME, ReleaseRun
from releasegate.plugins.runtime import ReleaseRuntime
from releasegate.plugins.signals import interrupted_reason, junit_error_instead_of_failure

FINALIZE_NODEID = f"{ACTION_PREFIX}finalize"  # the action item of the finalize stage

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
        self._failed_reports: list[str] = []
        self._disk_problem = False  # a report failed on an OSError (a full disk), not on a charting bug
        self._html_warm_up: threading.Thread | None = None
        self._figures = FigureCache()  # the HTML report's charts, rendered ahead during finalize
        self._html_prerender: threading.Thread | None = None

    @pytest.hookimpl(tryfirst=True)  # before the loop that runs the items (firstresult: it ends the hook)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if self.run.writes_reports:  # beside preflight and provision, which wait on the target
            # Plotly's modules, now imported, live until the end: out of the collector's passes (frozen_heap.py).
            self._html_warm_up = warm_up_html_report(then=freeze_long_lived)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.run.is_worker:
            self.reporter.add(report)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        # Finalize keeps the old slot warm (release.keep_warm_s) and computes nothing: every test has ended,
        # so their charts are rendered meanwhile, and the page written after the decision renders the rest.
        if (self.run.is_worker or not self.run.writes_reports or nodeid != FINALIZE_NODEID
                or self._html_prerender is not None):
            return
        try:  # the report so far, as JSON: the thread shares no object with this one
            report = json.loads(json.dumps(self.reporter.summary(self.reporter.exit_code(0)), default=str))
        except Exception:  # a pre-render is only a head start: the final page renders everything it must
            return
        self._html_prerender = prerender_html_report(report, self._figures, after=self._html_warm_up)

    # An item a signal interrupted is an error everywhere: the terminal's counts, JUnit, the report.
    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, str] | None:
        if report.when == "call" and report.failed and interrupted_reason(report) is not None:
            return "error", "E", "ERROR"
        return None

    @pytest.hookimpl(trylast=True, specname="pytest_runtest_logreport")
    def pytest_runtest_logreport_interrupted_is_a_junit_error(self, report: pytest.TestReport) -> None:
        # (named pytest_*: pytest registers no other method as a hook implementation, specname or not)
        reason = interrupted_reason(report)
        if self.run.is_worker or report.when != "call" or not report.failed or reason is None:
            return
        xml = self.run.config.stash.get(_junit_key(), None)
        if xml is not None:  # after junitxml recorded the call as a <failure> (trylast)
            junit_error_instead_of_failure(xml, report, reason)

    @pytest.hookimpl(wrapper=True, trylast=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_keeps_the_decision(self) -> Any:  # pytest registers only pytest_* names
        """The innermost wrapper, around junitxml writing reports/<run>/junit.xml: a disk full there would
        escape as a traceback with exit code 1 after the decision was made (a promoted release reported as
        rolled back) and hide the decision line. It becomes a report problem; the exit code stays the
        decision's (set by the tryfirst implementation below, which runs before junitxml)."""
        try:
            result = yield
            xml = self.run.config.stash.get(_junit_key(), None)
            if xml is not None and self.run.writes_reports:  # the schema CI servers check (plugins/junit_format.py)
                move_case_properties_to_output(Path(xml.logfile), mode=REPORT_MODE)
            return result
        except OSError as exc:
            if not self.run.writes_reports:
                raise
            self._report_failed(JUNIT_NAME, exc)
            return None

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
            self._report_failed(REPORT_NAME, exc)
        for thread in (self._html_warm_up, self._html_prerender):  # Plotly's caches: one thread at a time
            if thread is not None:
                thread.join()
        try:
            write_html_report(summary, self.run.report_dir / HTML_REPORT_NAME, mode=REPORT_MODE,
                              cache=self._figures)
        except Exception as exc:  # a full disk or a charting bug: the HTML is a view, the decision stands
            self._report_failed(HTML_REPORT_NAME, exc)
        self.summary = summary
        self.run.config.hook.pytest_releasegate_decision(config=self.run.config, decision=summary["decision"],
                                                         summary=summary)
        session.exitstatus = code

    def _report_failed(self, name: str, exc: Exception) -> None:
        """One line for every report that could not be written: which ones, why, and that the decision stands."""
        why = (exc.strerror or exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        self._failed_reports.append(f"{name} ({why})")
        self._disk_problem = self._disk_problem or isinstance(exc, OSError)
        fix = "free space there and keep this output" if self._disk_problem else "keep this output"
        self.report_problem = (f"could not write {', '.join(self._failed_reports)} in {self.run.report_dir}; the "
                               f"decision and exit code above stand: {fix}")

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
        if summary.get("recovered"):
            lines.append(f"releasegate: recovered: {summary['recovered']}")
        if summary.get("target_detail"):
            lines.append(f"releasegate: target: {summary['target_detail']}")
        loads = summary.get("loads") or {}
        if loads.get("overlaps") or loads.get("unfinished"):  # a load measured another: its figures may be off
            lines.append(f"releasegate: loads: {describe_overlaps(loads)}")
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
        # After junitxml wrote its file (in sessionfinish): `latest` only ever names a complete run, so not
        # one whose reports could not be written (a full disk): it keeps naming the last complete one.
        if self.run.writes_reports and self.report_problem is None and self.run.report_dir.is_dir():
            with contextlib.suppress(OSError):
                point_latest_at(self.run.report_dir)


def _junit_key() -> Any:
    from _pytest.junitxml import xml_key

    return xml_key
