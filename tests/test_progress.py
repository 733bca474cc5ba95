"""The live progress line and the end-of-run table (plugins/progress.py), with fakes at our own boundary.

The snapshots come from the real live judges (verifiers.load.LiveJudge, verifiers.compare.PairedJudges,
verifiers.watch.watch) over counts made here; the terminal is a fake Surface and time an injected clock.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from releasegate.core.progress import CheckProgress, CheckState, ProgressSnapshot
from releasegate.core.types import Endpoint, Role
from releasegate.plugins.ledger import ItemRecord, Ledger, Outcome, ReleaseContext
from releasegate.plugins.options import ReleaseOptions
from releasegate.plugins.progress import (
    CLEAR_TO_END,
    UP,
    LiveBoard,
    ProgressFile,
    ProgressTail,
    ReleaseProgress,
    format_line,
    item_label,
    summary_lines,
)
from releasegate.plugins.reporting import ReleaseReporter
from releasegate.plugins.stages import STAGE_PROPERTY
from releasegate.verifiers.compare import PairedJudges
from releasegate.verifiers.live_progress import comparison_snapshot, load_snapshot
from releasegate.verifiers.load import LiveCounts, LiveJudge, LoadProfile
from releasegate.verifiers.stats import LatencyRecorder, Stats
from releasegate.verifiers.watch import WatchCounts, parse_watch_slos, watch

SLOS = ("error_rate < 1%", "p(95) < 300ms")


def cell(requests: int, failed: int, latency_s: float, elapsed_s: float) -> Stats:
    recorder = LatencyRecorder(rng=random.Random(7))
    for number in range(requests):
        recorder.add(latency_s, failed=number < failed)
    return recorder.snapshot(duration_s=elapsed_s, keep_samples=False)


def profile(**changes: Any) -> LoadProfile:
    settings: dict[str, Any] = {"users": 5, "spawn_rate": 5, "duration_s": 15, "min_requests": 200,
                                "checks": (*SLOS, "rps > 20"), "max_duration_s": 120}
    return LoadProfile(Path("locustfile.py"), **{**settings, **changes})


def looked(load_profile: LoadProfile, live: LiveCounts) -> LiveJudge:
    judge = LiveJudge(load_profile)
    judge.look(live)
    return judge


SERVICE = Endpoint(Role.SERVICE, "http://127.0.0.1:9", None, None)


# --- the line --------------------------------------------------------------------------------------------


def test_a_load_through_the_service_shows_rate_p95_errors_the_candidates_share_and_each_check() -> None:
    live = LiveCounts(12.0, {("/api/items", "v1"): cell(900, 0, 0.02, 12.0),
                             ("/api/items", "v2"): cell(100, 0, 0.04, 12.0)})
    snapshot = load_snapshot(live, looked(profile(), live), SERVICE)
    assert format_line("[analysis[10%]] test_split", snapshot, candidate_version="v2") == (
        "[analysis[10%]] test_split: load 12/15s | 83.3 req/s | p95 40ms | 1,000 req | errors 0 (0%) | "
        "v2 10% of traffic | error_rate<1%: pass | p(95)<300ms: pass | rps>20: at end")


def test_checks_below_their_evidence_are_undecided_with_their_sample_and_a_breach_fails() -> None:
    early = LiveCounts(3.0, {("/api/items", "v2"): cell(150, 0, 0.02, 3.0)})
    snapshot = load_snapshot(early, looked(profile(), early), Endpoint(Role.CANDIDATE, "http://x", "green", "v2"))
    assert [(c.check, c.state, c.samples) for c in snapshot.checks] == [
        ("error_rate < 1%", CheckState.UNDECIDED, 150), ("p(95) < 300ms", CheckState.UNDECIDED, 150),
        ("rps > 20", CheckState.AT_END, 150)]
    line = format_line("[load] test_x", snapshot, candidate_version="v2")
    assert "error_rate<1%: 150 req, undecided | p(95)<300ms: 150 req, undecided" in line
    assert "of traffic" not in line  # the candidate alone: its share says nothing
    breached = LiveCounts(4.0, {("/api/items", "v2"): cell(400, 60, 0.02, 4.0)})
    states = {c.check: c.state for c in load_snapshot(breached, looked(profile(), breached), None).checks}
    assert states["error_rate < 1%"] is CheckState.FAIL


def test_a_pass_needs_the_minimum_sample_before_it_shows_as_a_pass() -> None:
    # 0 errors in 1,000 requests decide error_rate < 1%, but the profile asks for 2,000.
    live = LiveCounts(20.0, {("/api/items", "v2"): cell(1000, 0, 0.02, 20.0)})
    states = {c.check: c.state for c in load_snapshot(live, looked(profile(min_requests=2000), live), None).checks}
    assert states["error_rate < 1%"] is CheckState.UNDECIDED


def test_a_busy_endpoint_the_run_still_waits_for_follows_the_total_that_passed() -> None:
    live = LiveCounts(20.0, {("/api/items", "v2"): cell(1000, 0, 0.02, 20.0),
                             ("/api/checkout", "v2"): cell(100, 0, 0.02, 20.0)})
    judge = looked(profile(), live)
    rates = [(c.check, c.state, c.samples) for c in load_snapshot(live, judge, None).checks if "error_rate" in c.check]
    # 0 errors in 1,100 show < 1%, and so do 0 in 1,000 on /api/items; 0 in 100 on /api/checkout do not.
    assert rates == [("error_rate < 1%", CheckState.PASS, 1100),
                     ("error_rate < 1% [/api/checkout]", CheckState.UNDECIDED, 100)]
    assert "error_rate<1%: pass | error_rate<1% /api/checkout: 100 req, undecided" in \
        format_line("", load_snapshot(live, judge, None), candidate_version=None)
    whole = looked(profile(per_endpoint=False), live)  # only the total has to pass: nothing to wait for
    assert [c.check for c in load_snapshot(live, whole, None).checks if "error_rate" in c.check] == ["error_rate < 1%"]


def test_checks_per_version_in_a_canary_step_are_named_by_version() -> None:
    live = LiveCounts(5.0, {("/api/items", "v1"): cell(450, 0, 0.02, 5.0),
                            ("/api/items", "v2"): cell(50, 0, 0.02, 5.0)})
    judge = looked(profile(checks=SLOS, check_versions=("v1", "v2")), live)
    line = format_line("", load_snapshot(live, judge, SERVICE), candidate_version="v2")
    assert "error_rate<1% v2: 50 req, undecided" in line and "error_rate<1% v1: 450 req, undecided" in line


def test_a_side_by_side_comparison_shows_both_p95s_and_its_two_comparisons() -> None:
    candidate = LiveCounts(8.0, {("/api/items", "v2"): cell(400, 0, 0.05, 8.0)})
    baseline = LiveCounts(8.0, {("/api/items", "v1"): cell(400, 0, 0.01, 8.0)})
    judges = PairedJudges(min_samples=100)
    judged = judges.look(candidate.cells, baseline.cells, 8.0)
    snapshot = comparison_snapshot(profile(duration_s=10), candidate, baseline, judged, 8.0)
    line = format_line("[analysis] test_compare", snapshot, candidate_version="v2")
    assert line.startswith("[analysis] test_compare: comparison 8/10s | 50.0 req/s | p95 50ms (baseline 10ms) | "
                           "400 req | errors 0 (0%) | errors vs baseline: 400 req, undecided | ")
    # Five times slower at every quantile: the latency comparison has decided against it.
    assert line.endswith("latency vs baseline: fail")


def test_the_post_switch_watch_reports_every_look_and_its_slos_states() -> None:
    now = [0.0]
    reads = iter([WatchCounts(requests=100, failures=0), WatchCounts(requests=5000, failures=0)])

    class Source:
        def read(self) -> WatchCounts:
            return next(reads)

        def describe(self) -> str:
            return "fake"

    def sleep(seconds: float) -> None:
        now[0] += seconds

    seen: list[ProgressSnapshot] = []
    watch(Source(), parse_watch_slos(["error_rate < 1%"]), duration_s=5.0, interval_s=5.0, alpha=0.01,
          clock=lambda: now[0], sleep=sleep, on_progress=seen.append)
    assert [(s.elapsed_s, s.total_s, s.requests) for s in seen] == [(0.0, 5.0, 100), (5.0, 5.0, 5000)]
    assert [s.checks[0].state for s in seen] == [CheckState.UNDECIDED, CheckState.PASS]
    assert format_line("finalize", seen[0], candidate_version="v2") == (
        "finalize: watch 0.0/5s | 100 req since the switch | errors 0 (0%) | error_rate<1%: 100 req, "
        "undecided")


def test_a_canary_steps_wait_counts_only_its_seconds() -> None:
    assert format_line("shift[50%]", ProgressSnapshot("step window", 4.2, 12.0), candidate_version="v2") \
        == "shift[50%]: step window 4/12s"


def test_a_long_test_name_is_cut_so_the_checks_keep_their_room() -> None:
    assert item_label("load", "test_" + "x" * 60) == "[load] test_" + "x" * 24 + "..."
    assert item_label("smoke", "test_short") == "[smoke] test_short"
    assert item_label("shift[50%]", "shift[50%]") == "shift[50%]"  # an action item is its stage


# --- drawing ---------------------------------------------------------------------------------------------


class FakeSurface:
    def __init__(self, column: int = 0, width: int = 80) -> None:
        self.at_column = column
        self.columns = width
        self.raw: list[str] = []
        self.lines: list[str] = []

    def column(self) -> int:
        return self.at_column

    def width(self) -> int:
        return self.columns

    def write_raw(self, text: str) -> None:
        self.raw.append(text)

    def write_line(self, text: str) -> None:
        self.lines.append(text)


def snapshot_at(elapsed_s: float, requests: int = 100) -> ProgressSnapshot:
    return ProgressSnapshot(activity="load", elapsed_s=elapsed_s, total_s=30.0, requests=requests, failures=1,
                            rps=requests / max(elapsed_s, 1), p95_s=0.041,
                            checks=(CheckProgress("error_rate < 1%", CheckState.UNDECIDED, requests),))


def test_in_a_terminal_the_line_is_redrawn_in_place_below_pytests_line_and_gives_it_back() -> None:
    surface = FakeSurface(column=27, width=60)
    board = LiveBoard(surface, tty=True, candidate_version="v2", clock=lambda: 0.0)
    board.update("t::load", "t", "[load] test_x", snapshot_at(1))
    board.update("t::load", "t", "[load] test_x", snapshot_at(2))
    first, second = format_line("[load] test_x", snapshot_at(1), candidate_version="v2"), \
        format_line("[load] test_x", snapshot_at(2), candidate_version="v2")
    assert len(first) > 59  # so the width limit shows
    assert surface.raw == ["\n", "\r" + first[:56] + "..." + CLEAR_TO_END, "\r" + second[:56] + "..." + CLEAR_TO_END]
    surface.raw.clear()
    with board.paused():  # pytest writes a result letter: the line goes, the cursor is back after column 27
        assert surface.raw == ["\r" + CLEAR_TO_END + UP + "\x1b[27C"]
    board.finish("t")
    board.tick()
    assert surface.raw == ["\r" + CLEAR_TO_END + UP + "\x1b[27C"]  # finished: not drawn again
    board.update("t::load", "t", "[load] test_x", snapshot_at(3))  # a late snapshot of an ended test
    assert len(surface.raw) == 1 and surface.lines == []


def test_at_the_start_of_a_line_the_live_line_takes_it_and_clears_it() -> None:
    surface = FakeSurface(column=0, width=200)
    board = LiveBoard(surface, tty=True, candidate_version=None, clock=lambda: 0.0)
    board.update("a::load", "a", "", snapshot_at(1))
    board.close()
    assert surface.raw[0].startswith("\r") and surface.raw[-1] == "\r" + CLEAR_TO_END


def test_without_a_terminal_a_plain_line_every_ten_seconds() -> None:
    now = [0.0]
    surface = FakeSurface()
    board = LiveBoard(surface, tty=False, candidate_version="v2", clock=lambda: now[0])
    for second in range(26):
        now[0] = float(second)
        board.update("t::load", "t", "[load] test_x", snapshot_at(second))
    assert surface.raw == []
    assert surface.lines == [format_line("[load] test_x", snapshot_at(s), candidate_version="v2") for s in (10, 20)]
    board.finish("t")
    for second in range(30, 45):  # a new activity waits its own ten seconds
        now[0] = float(second)
        board.update("u::load", "u", "[load] test_y", snapshot_at(second - 30))
    assert surface.lines[2:] == [format_line("[load] test_y", snapshot_at(10), candidate_version="v2")]


def test_two_activities_show_the_first_started_and_one_nobody_renews_disappears() -> None:
    now = [0.0]
    surface = FakeSurface(width=400)
    board = LiveBoard(surface, tty=True, candidate_version=None, clock=lambda: now[0], stale_s=30.0)
    board.update("a::load", "a", "[load] a", snapshot_at(1))
    now[0] = 1.0
    board.update("b::load", "b", "[load] b", snapshot_at(1))
    now[0] = 2.0
    board.update("a::load", "a", "[load] a", snapshot_at(2))
    board.update("b::load", "b", "[load] b", snapshot_at(2))  # the newer snapshot: the line stays on a
    assert board.text() == format_line("[load] a", snapshot_at(2), candidate_version=None) + " | +1 more running"
    now[0] = 32.5  # a was renewed last at 2.0: stale now; b goes on
    board.update("b::load", "b", "[load] b", snapshot_at(31))
    assert board.text() == format_line("[load] b", snapshot_at(31), candidate_version=None)
    now[0] = 70.0
    board.tick()
    assert board.text() is None and surface.raw[-1] == "\r" + CLEAR_TO_END


# --- from an xdist worker to the controller -------------------------------------------------------------


def test_a_workers_snapshot_reaches_the_controllers_board_once(tmp_path: Path) -> None:
    surface = FakeSurface(width=400)
    board = LiveBoard(surface, tty=True, candidate_version="v2", clock=lambda: 0.0)
    tail = ProgressTail(tmp_path / "progress", board)
    ProgressFile(tmp_path / "progress", "gw1").write("t::load", "t", "[load] test_x", snapshot_at(4))
    tail.poll()
    expected = format_line("[load] test_x", snapshot_at(4), candidate_version="v2")
    assert board.text() == expected and surface.raw[-1] == "\r" + expected + CLEAR_TO_END
    drawn = len(surface.raw)
    board.finish("t")
    tail.poll()  # the same file, unchanged, and its test has ended: nothing comes back
    assert board.text() is None and len(surface.raw) == drawn + 1


# --- the end of the run ----------------------------------------------------------------------------------


def failed_report(nodeid: str, stage: str, message: str, properties: list[tuple[str, str]],
                  when: str = "call") -> pytest.TestReport:
    return pytest.TestReport(nodeid, ("x.py", 1, nodeid), {}, "failed", message, when,
                             user_properties=[(STAGE_PROPERTY, stage), *properties])


def test_the_summary_table_has_each_phase_and_each_check_that_did_not_pass(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "run")
    ledger.start(ReleaseContext(run_id="r1", version="v2", strategy="blue-green", target="local"))
    records = [(0, "release::preflight", "preflight", Outcome.PASSED, 0.0, 0.5),
               (1, "suites/smoke/test_smoke.py::test_up", "smoke", Outcome.PASSED, 1.0, 1.25),
               (2, "suites/smoke/test_smoke.py::test_down", "smoke", Outcome.SKIPPED, 1.0, 1.5),
               (3, "suites/load/test_load.py::test_slos", "load", Outcome.FAILED, 2.0, 14.0),
               (4, "suites/analysis/test_x.py::test_broken", "analysis", Outcome.ERROR, 14.0, 14.5),
               (5, "release::rollback", "rollback", Outcome.PASSED, 15.0, 15.75)]
    for index, nodeid, stage, outcome, started, finished in records:
        ledger.item_finished(ItemRecord(index, nodeid, stage, outcome, "", 1000 + started, 1000 + finished))
    options = ReleaseOptions(version="v2", strategy="blue-green", target="local", dry_run=False, run_id="r1")
    reporter = ReleaseReporter(options, ledger)
    check = "check.error_rate < 1%"
    reporter.add(pytest.TestReport("release::preflight", ("x", 0, "p"), {}, "passed", None, "call",
                                   user_properties=[(STAGE_PROPERTY, "preflight")]))
    reporter.add(pytest.TestReport("suites/smoke/test_smoke.py::test_up", ("x", 0, "u"), {}, "passed", None,
                                   "call", user_properties=[(STAGE_PROPERTY, "smoke")]))
    reporter.add(pytest.TestReport("suites/smoke/test_smoke.py::test_down", ("x", 0, "d"), {}, "skipped",
                                   ("x.py", 1, "Skipped: not today"), "setup",
                                   user_properties=[(STAGE_PROPERTY, "smoke")]))
    reporter.add(failed_report("suites/load/test_load.py::test_slos", "load", "error_rate 4.2% > 1% over 812 requests",
                               [(f"{check}.verdict", "fail"), (f"{check}.value", "4.2%"), (f"{check}.threshold", "1%"),
                                (f"{check}.subject", "all endpoints (candidate v2)"), (f"{check}.samples", "812"),
                                ("check.p(95) < 300ms.verdict", "pass"),
                                ("check.p(99) < 1s.verdict", "inconclusive"),
                                ("check.p(99) < 1s.message", "p(99) 0.8s, upper bound 1.2s > 1s over 812 requests")]))
    reporter.add(failed_report("suites/analysis/test_x.py::test_broken", "analysis",
                               "RuntimeError: no candidate endpoint", [], when="setup"))  # a fixture error
    reporter.add(pytest.TestReport("release::rollback", ("x", 0, "r"), {}, "passed", None, "call",
                                   user_properties=[(STAGE_PROPERTY, "rollback")]))
    lines = summary_lines(reporter.summary(1))
    assert lines == [
        "stage      outcome    time  tests",
        "preflight  passed    0.50s",
        "smoke      passed    0.50s  2 tests, 1 skipped",
        "load       failed   12.00s  1 test",
        "analysis   error     0.50s  1 test",
        "rollback   passed    0.75s",
        "",
        "checks that did not pass:",
        "stage     verdict       explanation",
        # Without a recorded one-line message: what it measured against what it allowed (the passing p95 is
        # not listed); a test that failed without a check: its own first line.
        "load      fail          test_slos: error_rate < 1%: 4.2% vs 1% over 812 requests on all endpoints "
        "(candidate v2)",
        # With one, the check's own line.
        "load      inconclusive  test_slos: p(99) 0.8s, upper bound 1.2s > 1s over 812 requests",
        "analysis  error         test_broken: RuntimeError: no candidate endpoint",
    ]


class FakeTerminal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str, **markup: Any) -> None:
        self.lines.append(f"{sep * 3} {title}")

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def progress_plugin(tmp_path: Path, verbosity: int) -> ReleaseProgress:
    config = SimpleNamespace(get_verbosity=lambda: verbosity, option=SimpleNamespace(collectonly=False),
                             pluginmanager=SimpleNamespace(get_plugin=lambda name: None, hasplugin=lambda name: False))
    run = SimpleNamespace(config=config, ledger=Ledger(tmp_path / "run"), is_worker=False,
                          options=SimpleNamespace(version="v2"))
    return ReleaseProgress(run)  # type: ignore[arg-type]


SUMMARY = {"phase_times_s": {"preflight": 0.5}, "tests": [
    {"nodeid": "release::preflight", "stage": "preflight", "outcome": "passed", "message": "", "checks": []}]}


def test_the_table_follows_the_run_and_q_keeps_only_the_decision_lines(tmp_path: Path) -> None:
    shown = progress_plugin(tmp_path, verbosity=0)
    shown.pytest_releasegate_decision(summary=SUMMARY)
    terminal = FakeTerminal()
    shown.pytest_terminal_summary(terminal)
    assert terminal.lines == ["--- release phases", "stage      outcome   time  tests", "preflight  passed   0.50s"]
    for verbosity in (-1, -2):  # -q, -qq: no table, no live line (the decision lines are plugins/finish.py's)
        quiet = progress_plugin(tmp_path, verbosity=verbosity)
        quiet.pytest_sessionstart(None)  # type: ignore[arg-type]
        quiet.pytest_releasegate_decision(summary=SUMMARY)
        terminal = FakeTerminal()
        quiet.pytest_terminal_summary(terminal)
        item = SimpleNamespace(stash={}, name="test_x", nodeid="t")
        assert terminal.lines == [] and quiet.callback_for(item) is None  # type: ignore[arg-type]


# --- in a pytest run -------------------------------------------------------------------------------------

PLUGIN_CONFTEST = """
from types import SimpleNamespace

import pytest
from _pytest.compat import CallableBool

from releasegate.core.progress import ProgressSnapshot
from releasegate.plugins.ledger import Ledger
from releasegate.plugins.progress import PLUGIN_NAME, ReleaseProgress, progress_callback


def pytest_configure(config):
    run = SimpleNamespace(config=config, ledger=Ledger(config.rootpath / "ledger"), is_worker=False,
                          options=SimpleNamespace(version="v2"))
    config.pluginmanager.register(ReleaseProgress(run), PLUGIN_NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    session.config.pluginmanager.get_plugin("terminalreporter").isatty = CallableBool(True)


@pytest.fixture
def looks(request):
    on_progress = progress_callback(request.node)

    def look(second):
        print("a print of the test itself")
        if on_progress is not None:
            on_progress(ProgressSnapshot("load", float(second), 15.0, requests=100 * second, rps=100.0))
    return look
"""


UNUSED_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:locust", "-p", "no:hypothesispytest")
"""Plugins this run has no use for (each costs start-up time)."""


def test_the_plugin_draws_its_line_around_pytests_own_output_and_q_turns_it_off(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(test_a="def test_one(looks):\n    looks(1)\n    looks(2)\n\ndef test_two():\n    pass\n")
    result = pytester.runpytest_inprocess(*UNUSED_PLUGINS)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    # Below pytest's "test_a.py " on a line of its own (stdout is captured in the test: drawn around it),
    # then removed, and the cursor is back after "test_a.py " (10 columns) for pytest's own letters.
    expected = ("test_a.py \n\rtest_one: load 1/15s | 100.0 req/s | 100 req | errors 0 (0%)" + CLEAR_TO_END
                + "\rtest_one: load 2/15s | 100.0 req/s | 200 req | errors 0 (0%)" + CLEAR_TO_END
                + "\r" + CLEAR_TO_END + UP + "\x1b[10C..")
    assert expected.replace("\r", "\n") in out, out  # the captured output comes split at "\r" too
    assert "a print of the test itself" not in out
    quiet = pytester.runpytest_inprocess("-q", *UNUSED_PLUGINS)
    quiet.assert_outcomes(passed=2)
    assert "load 1/15s" not in quiet.stdout.str() and CLEAR_TO_END not in quiet.stdout.str()
