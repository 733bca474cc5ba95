"""`pytest --release VERSION`: options, and the plugin object that is registered only when they are given.

Without `--release` this module adds its options and the `stage` marker and does nothing else, so
`pytest tests/` is plain pytest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.config import Config, load_config
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.core.versions import validate_version
from releasegate.plugins.controller import ReleaseController, ReleaseOptions
from releasegate.plugins.fixtures import SuiteFixtures
from releasegate.plugins.gates import wait_for_turn
from releasegate.plugins.items import INDEX_KEY, STAGE_KEY, ActionItem, order_items
from releasegate.plugins.ledger import ItemRecord, Ledger
from releasegate.plugins.reporting import ReleaseReporter, point_latest_at, write_report
from releasegate.plugins.stages import Stage, blue_green_stages

# The entry point registers this module as "releasegate"; the release object gets a name of its own.
PLUGIN_NAME = "releasegate-release"
STRATEGIES = ("blue-green",)  # canary: not built yet; the config refuses it with the same message
TARGETS = ("local", "kubernetes", "kind")
RUNS_DIR = ".releasegate/runs"
JUNIT_NAME = "junit.xml"
REPORT_NAME = "release-report.md"
RECORD_KEY = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # Every option but --release starts with --release-: generic names (--target, --dry-run) clash with
    # other plugins'.
    group = parser.getgroup("releasegate", "release verification (releasegate)")
    group.addoption("--release", metavar="VERSION", default=None,
                    help="release VERSION: provision it, verify it stage by stage, then switch or roll back")
    group.addoption("--release-strategy", dest="release_strategy", default=None, metavar="STRATEGY",
                    help="blue-green (default: release.strategy in the config)")
    group.addoption("--release-target", dest="release_target", default=None, metavar="TARGET",
                    help="local, kubernetes or kind (default: release.target in the config, else local)")
    group.addoption("--release-config", dest="release_config", default=None, metavar="PATH",
                    help="config file (default: the releasegate_config ini setting, releasegate.toml)")
    group.addoption("--release-dry-run", dest="release_dry_run", action="store_true",
                    help="verify the candidate, then remove it: never touch traffic")
    parser.addini("releasegate_config", "release config file, relative to the root directory (used when "
                  "present)", default="releasegate.toml")
    parser.addini("releasegate_suites", "folder of the verification suites, one subfolder per stage, relative "
                  "to the root directory", default="suites")
    parser.addini("releasegate_reports", "folder of the release reports (one subfolder per run, and a "
                  "`latest` link), relative to the root directory", default="reports")


def project_path(config: pytest.Config, ini_name: str) -> Path:
    """An ini path setting, resolved from the root directory (the project)."""
    value = Path(str(config.getini(ini_name))).expanduser()
    return value if value.is_absolute() else config.rootpath / value


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Make `--release-config PATH` (with a space) mean what `--release-config=PATH` means.

    pytest chooses the root directory before it loads plugins from their entry points, so at that moment
    `--release-config` is an unknown option and PATH looks like a test path: a config file outside the
    project would move the root directory (and with it the ini file, the suites and the reports) to a
    common ancestor. This is the first hook a plugin gets; the process runs again with the `=` form.
    """
    args = list(early_config.invocation_params.args)
    if "--release-config" not in args or hasattr(early_config, "workerinput"):
        return
    at = args.index("--release-config")
    if at + 1 >= len(args) or not os.path.exists(args[at + 1]):
        return  # a missing file is reported as such later, with the file's name
    rewritten = [*args[:at], f"--release-config={args[at + 1]}", *args[at + 2:]]
    original = list(sys.orig_argv)
    if args and original[-len(args):] == args:
        capture = early_config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # it holds file descriptors 1 and 2 by now: give them back first
            capture.stop_global_capturing()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *original[1:-len(args)], *rewritten])
    raise pytest.UsageError(f"--release-config {args[at + 1]}: pytest took the path for a test path when it "
                            f"chose the root directory; write --release-config={args[at + 1]}")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from releasegate.plugins import hookspecs

    pluginmanager.add_hookspecs(hookspecs.ReleasegateHookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stage(name): run this test in a release stage (smoke, load, analysis, "
                                       "post_switch)")
    version = config.getoption("release")
    if version is None:
        return
    try:
        plugin = ReleasePlugin.from_config(config, version)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    config.pluginmanager.register(SuiteFixtures(plugin.ledger, plugin.release_config),
                                  f"{PLUGIN_NAME}-fixtures")
    if config.pluginmanager.hasplugin("xdist") and not plugin.is_worker:
        from releasegate.plugins.scheduler import XdistControllerHooks

        config.pluginmanager.register(XdistControllerHooks(plugin), f"{PLUGIN_NAME}-xdist")
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        # No paths given: a release runs the suites, never the project's own tests (testpaths).
        config.args[:] = [str(plugin.suites_root)]
    if plugin.writes_reports and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(plugin.report_dir / JUNIT_NAME)


def _options(config: pytest.Config, release_config: Config, version: str, run_id: str) -> ReleaseOptions:
    strategy = config.getoption("release_strategy") or release_config.release.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"--release-strategy {strategy!r} is not a strategy; use blue-green")
    target = config.getoption("release_target") or release_config.release.target
    if target not in TARGETS:
        raise ConfigError(f"--release-target {target!r} is not a target; use one of: {', '.join(TARGETS)}")
    return ReleaseOptions(version=validate_version(version, source="--release"), strategy=strategy,
                          target=target, dry_run=bool(config.getoption("release_dry_run")), run_id=run_id)


def run_action(item: ActionItem) -> None:
    plugin = item.config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(plugin, ReleasePlugin)
    plugin.run_action(item)


class StageDeadlineExceeded(AssertionError):
    """A stage ran past its configured deadline: a failure, and the release stops."""


class ReleasePlugin:
    def __init__(self, config: pytest.Config, release_config: Config, options: ReleaseOptions,
                 ledger: Ledger, *, is_worker: bool) -> None:
        self.config = config
        self.release_config = release_config
        self.options = options
        self.ledger = ledger
        self.is_worker = is_worker
        self.stages: list[Stage] = blue_green_stages()
        self.suites_root = project_path(config, "releasegate_suites")
        # Each run reports into a folder of its own (concurrent runs never overwrite each other); the
        # controller points `latest` at it when the run ends. --collect-only runs no release: no report.
        self.reports_root = project_path(config, "releasegate_reports")
        self.report_dir = self.reports_root / options.run_id
        self.writes_reports = not is_worker and not config.option.collectonly
        self.controller: ReleaseController | None = None
        self.reporter = ReleaseReporter(options, ledger)
        self.items: list[pytest.Item] = []

    @classmethod
    def from_config(cls, config: pytest.Config, version: str) -> ReleasePlugin:
        workerinput = getattr(config, "workerinput", None)
        path = config.getoption("release_config")
        release_config = load_config(path, search_dir=config.rootpath,
                                     default_name=str(config.getini("releasegate_config")))
        if workerinput is not None and "releasegate_run_id" in workerinput:
            run_id, root = workerinput["releasegate_run_id"], Path(workerinput["releasegate_ledger"])
        else:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            root = config.rootpath / RUNS_DIR / run_id
        options = _options(config, release_config, version, run_id)
        ledger = Ledger(root)
        if workerinput is None:
            ledger.update_context(run_id=run_id, version=options.version, strategy=options.strategy,
                                  target=options.target, dry_run=options.dry_run)
        return cls(config, release_config, options, ledger, is_worker=workerinput is not None)

    @property
    def is_controller(self) -> bool:
        """The process that sees every report: the only pytest process, or the xdist controller."""
        return not self.is_worker

    # -- collection ---------------------------------------------------------------------------------
    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        # The project's own tests are never part of a release.
        if collection_path == self.config.rootpath / "tests":
            return True
        return None

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection: the actions are added back afterwards
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        try:
            ordered, counts = order_items(session, items, self.stages, self.suites_root)
        except pytest.UsageError as exc:
            # The run started a release (it has a run id and a report): the report must say why it stopped.
            self.ledger.update_context(usage_error=str(exc))
            raise
        required = self.release_config.release.required_stages
        empty = [stage for stage in required if counts.get(stage, 0) == 0]
        if empty:
            reason = (f"required stage(s) {', '.join(empty)} have no test; add tests under "
                      + ", ".join(f"suites/{stage}/" for stage in empty)
                      + " (or change release.required_stages): nothing was provisioned")
            self.ledger.update_context(not_promoted_reason=reason)
            config.hook.pytest_deselected(items=list(items))
            items[:] = []
            return
        items[:] = ordered
        self.items = ordered
        self._count_action_items(session, [item for item in ordered if isinstance(item, ActionItem)])

    def _count_action_items(self, session: pytest.Session, actions: list[pytest.Item | pytest.Collector]) -> None:
        """Report the action items as collected, so that "collected N items" counts what the run runs."""
        if actions:
            parent = actions[0].parent
            assert parent is not None
            report = pytest.CollectReport(parent.nodeid, "passed", None, actions)
            session.config.hook.pytest_collectreport(report=report)

    # -- running ------------------------------------------------------------------------------------
    def _stage(self, item: pytest.Item) -> Stage:
        return item.stash[STAGE_KEY]

    def _first_index_of_stage(self, stage: Stage) -> int:
        return next(item.stash[INDEX_KEY] for item in self.items if item.stash[STAGE_KEY] == stage)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if STAGE_KEY not in item.stash:
            return
        stage = self._stage(item)
        index = item.stash[INDEX_KEY]
        item.user_properties.append(("stage", stage.label))
        before = index if stage.name == "rollback" else self._first_index_of_stage(stage)
        turn = wait_for_turn(self.ledger, before=before, timeout_s=self._total_deadline_s())
        item.stash[RECORD_KEY] = {"started": time.time(), "failures": turn.failures}
        self.ledger.item_started(index, stage.name)
        if stage.name != "rollback" and turn.stop_reason:
            pytest.skip(turn.stop_reason)

    def _total_deadline_s(self) -> float:
        deadlines = self.release_config.stages
        return float(sum(getattr(deadlines, s.name) for s in self.stages)) + 60.0

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        if STAGE_KEY not in item.stash:
            return (yield)
        stage = self._stage(item)
        limit = float(getattr(self.release_config.stages, stage.name))
        started = self.ledger.stage_started_at(stage.name) or time.time()
        with _deadline(limit - (time.time() - started), f"stage {stage.label} overran its deadline of "
                                                        f"{limit:g}s (stages.{stage.name})"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.excinfo is not None and isinstance(call.excinfo.value, (ReleasegateError, AssertionError)):
            # JUnit's failure message is the crash line: make it the check's own sentence, without the
            # exception's type in front, so a reader sees "p(95) 412ms > 300ms over ..." and nothing else.
            crash = getattr(report.longrepr, "reprcrash", None)
            if crash is not None:
                text = str(call.excinfo.value).split("\nassert ", 1)[0].strip()
                crash.message = text or crash.message
        record = item.stash.get(RECORD_KEY, None)
        if record is not None:
            if report.failed and "outcome" not in record:
                record["outcome"] = "failed"
                record["message"] = _exception_line(call) or report.when
                record["usage_error"] = call.excinfo is not None and isinstance(call.excinfo.value, ConfigError)
            elif report.skipped and "outcome" not in record:
                record["outcome"] = "skipped"
                record["message"] = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            record = item.stash.get(RECORD_KEY, None)
            if record is not None:
                self.ledger.item_finished(ItemRecord(
                    index=item.stash[INDEX_KEY], nodeid=item.nodeid, stage=self._stage(item).name,
                    outcome=record.get("outcome", "passed"), message=record.get("message", ""),
                    started=record["started"], finished=time.time(),
                    usage_error=bool(record.get("usage_error"))))

    def run_action(self, item: ActionItem) -> None:
        if self.controller is None:
            self.controller = ReleaseController(self.release_config, self.options, self.ledger)
        stage = item.stage.name
        if stage == "rollback":
            failures = item.stash[RECORD_KEY]["failures"]
            result = self.controller.rollback(failures)
        else:
            result = self.controller.run(stage)
        item.user_properties.extend(result.properties)
        if result.skipped:
            pytest.skip(result.skipped)

    # -- the end ------------------------------------------------------------------------------------
    def pytest_keyboard_interrupt(self) -> None:
        self.ledger.abort("interrupted (Ctrl-C)")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_controller:
            self.reporter.add(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.controller is not None:
            problem = self.controller.emergency_stop(self.ledger.aborted() or "the run ended early")
            self.controller.close()
            if problem:
                self.ledger.update_context(cleanup_problem=problem)
        if not self.writes_reports:
            return
        code = self.reporter.exit_code(int(exitstatus))
        summary = self.reporter.summary(code)
        xml = self.config.stash.get(_junit_key(), None)
        if xml is not None:
            for name, value in self.reporter.suite_properties(summary):
                xml.add_global_property(name, value)
        try:
            write_report(summary, self.report_dir / REPORT_NAME)
        except OSError as exc:  # the decision must still reach the terminal and the exit code
            self.report_problem = f"could not write the release report to {self.report_dir}: {exc}"
        self.summary = summary
        self.config.hook.pytest_releasegate_decision(config=self.config, decision=summary["decision"],
                                                     summary=summary)
        session.exitstatus = code

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        summary = getattr(self, "summary", None)
        if summary is None:
            return
        verb = {"promoted": "now serves all traffic", "rolled-back": "was rolled back",
                "not-promoted": "was not promoted"}.get(summary["decision"], summary["decision"])
        previous = f" (previous: {summary['previous']})" if summary["previous"] else ""
        line = f"releasegate: {summary['version']} {verb}{previous}; exit code {summary['exit_code']}"
        if summary["reason"]:
            line += f"\nreleasegate: why: {summary['reason']}"
        if summary.get("target_detail"):
            line += f"\nreleasegate: target: {summary['target_detail']}"
        problem = self.ledger.read_context().get("cleanup_problem")
        if problem:
            line += f"\nreleasegate: WARNING: {problem}"
        report_problem = getattr(self, "report_problem", None)
        if report_problem:
            line += f"\nreleasegate: WARNING: {report_problem}"
        else:
            line += f"\nreleasegate: report {self.report_dir / REPORT_NAME}"
        terminalreporter.write_sep("=", "release", bold=True,
                                   green=summary["decision"] == "promoted",
                                   red=summary["decision"] != "promoted")
        terminalreporter.write_line(line)


    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # After junitxml wrote its file (in sessionfinish): `latest` only ever names a complete run.
        if self.writes_reports and self.report_dir.is_dir():
            with contextlib.suppress(OSError):
                point_latest_at(self.report_dir)


def _junit_key() -> Any:
    from _pytest.junitxml import xml_key

    return xml_key


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
