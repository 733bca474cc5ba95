"""`pytest --release VERSION`: options, and the plugin object that is registered only when they are given.

Without `--release` this module adds its options and the `stage` marker and does nothing else, so
`pytest tests/` is plain pytest.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, load_config
from core.errors import ConfigError, ReleasegateError
from core.versions import validate_version
from plugins.controller import ReleaseController, ReleaseOptions
from plugins.fixtures import SuiteFixtures
from plugins.gates import wait_for_turn
from plugins.items import INDEX_KEY, STAGE_KEY, ActionItem, order_items
from plugins.ledger import ItemRecord, Ledger
from plugins.reporting import ReleaseReporter, write_report
from plugins.stages import SUITES_DIR, Stage, blue_green_stages

PLUGIN_NAME = "releasegate"
STRATEGIES = ("blue-green", "canary")
TARGETS = ("local", "kubernetes", "kind")
RUNS_DIR = ".releasegate/runs"
JUNIT_PATH = "reports/junit.xml"
REPORT_PATH = "reports/release-report.md"
RECORD_KEY = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("releasegate", "release verification (releasegate)")
    group.addoption("--release", metavar="VERSION", default=None,
                    help="release VERSION: provision it, verify it stage by stage, then switch or roll back")
    group.addoption("--strategy", default=None, help="blue-green (default) or canary")
    group.addoption("--target", dest="release_target", default=None,
                    help="local, kubernetes or kind (default: release.target in the config, else local)")
    group.addoption("--release-config", default=None, metavar="PATH",
                    help="config file (default: releasegate.toml in the root directory, if present)")
    group.addoption("--dry-run", dest="release_dry_run", action="store_true",
                    help="verify the candidate, then remove it: never touch traffic")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from plugins import hookspecs

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
        from plugins.scheduler import XdistControllerHooks

        config.pluginmanager.register(XdistControllerHooks(plugin), f"{PLUGIN_NAME}-xdist")
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        # No paths given: a release runs the suites, never the framework's own tests (testpaths).
        config.args[:] = [str(config.rootpath / SUITES_DIR)]
    if not plugin.is_worker and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(config.rootpath / JUNIT_PATH)


def _options(config: pytest.Config, release_config: Config, version: str, run_id: str) -> ReleaseOptions:
    strategy = config.getoption("strategy") or release_config.release.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is not a strategy; use one of: {', '.join(STRATEGIES)}")
    if strategy == "canary":
        raise ConfigError("--strategy canary is not available yet; use --strategy blue-green")
    target = config.getoption("release_target") or release_config.release.target
    if target not in TARGETS:
        raise ConfigError(f"--target {target!r} is not a target; use one of: {', '.join(TARGETS)}")
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
        self.suites_root = config.rootpath / SUITES_DIR
        self.controller: ReleaseController | None = None
        self.reporter = ReleaseReporter(options, ledger)
        self.items: list[pytest.Item] = []

    @classmethod
    def from_config(cls, config: pytest.Config, version: str) -> ReleasePlugin:
        workerinput = getattr(config, "workerinput", None)
        path = config.getoption("release_config")
        release_config = load_config(path, search_dir=config.rootpath)
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
        # The framework's own tests are never part of a release.
        if collection_path == self.config.rootpath / "tests":
            return True
        return None

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection: the actions are added back afterwards
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        ordered, counts = order_items(session, items, self.stages, self.suites_root)
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
        if not self.is_controller:
            return
        code = self.reporter.exit_code(int(exitstatus))
        summary = self.reporter.summary(code)
        xml = self.config.stash.get(_junit_key(), None)
        if xml is not None:
            for name, value in self.reporter.suite_properties(summary):
                xml.add_global_property(name, value)
        write_report(summary, self.config.rootpath / REPORT_PATH)
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
        problem = self.ledger.read_context().get("cleanup_problem")
        if problem:
            line += f"\nreleasegate: WARNING: {problem}"
        line += f"\nreleasegate: report {self.config.rootpath / REPORT_PATH}"
        terminalreporter.write_sep("=", "release", bold=True,
                                   green=summary["decision"] == "promoted",
                                   red=summary["decision"] != "promoted")
        terminalreporter.write_line(line)


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
