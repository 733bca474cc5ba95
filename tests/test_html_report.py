"""The HTML release report: its data (plugins/report_data.py, plugins/load_histograms.py), its charts
(plugins/html_figures.py), its page (plugins/html_report.py), and the page of a real rolled-back release
opened in headless Chromium.

The Chromium test reads tests/fixtures/release-report-rolled-back.json, the release-report.json of a real
release, generated once so that this test runs no release of its own: a canary of `v2` over `v1` on the local
target with the shipped suites and releasegate.toml (strategy canary), where the demo profile of v2 has
`errors_after_s = 29.0, error_rate_after = 0.10`, so v2 starts failing during its 10% step and is rolled back
(17 items skipped). Regenerate it the same way (`pytest --release v2` in such a project, with `profiles =
"profiles.toml"` under [local]) when the report's keys change; last done for schema 1.1, whose checks carry
`interval`, `limits` and `arms`.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.types import Endpoint, Role
from releasegate.plugins.html_figures import checks_figure, load_figure, timeline_figure, traffic_figure
from releasegate.plugins.html_report import (
    FigureCache,
    decision_html,
    problems_html,
    prerender_html_report,
    render_html,
    warm_up_html_report,
    write_html_report,
)
from releasegate.plugins.ledger import ItemRecord, Ledger, Outcome
from releasegate.plugins.load_histograms import MERGED_BUCKETS, coarse_buckets, keep_histograms
from releasegate.plugins.load_slot import LoadSlot
from releasegate.plugins.report_data import chart_data, traffic_timeline
from releasegate.verifiers.load import LoadProfile, LoadResult
from releasegate.verifiers.stats import BUCKET_FLOOR_S, BUCKET_GROWTH, Stats, bucket_index

FIXTURE = Path(__file__).parent / "fixtures" / "release-report-rolled-back.json"


# --- the data the charts read ----------------------------------------------------------------------------


def latency_stats(latencies_s: list[float], failures: int = 0) -> Stats:
    buckets: dict[int, int] = {}
    for latency in latencies_s:
        buckets[bucket_index(latency)] = buckets.get(bucket_index(latency), 0) + 1
    return Stats(count=len(latencies_s), failures=failures, duration_s=10.0, latency_sum_s=sum(latencies_s),
                 fastest_s=min(latencies_s), slowest_s=max(latencies_s), buckets=buckets)


def test_report_buckets_nest_in_the_loads_own_and_keep_every_request() -> None:
    latencies = [0.0123, 0.0125, 0.017, 0.03, 0.031, 0.2, 0.9, 0.000001]
    stats = latency_stats(latencies)
    merged = coarse_buckets(stats)
    assert sum(count for _, count in merged) == len(latencies)
    uppers = [upper for upper, _ in merged]
    assert uppers == sorted(uppers) and len(merged) < len(stats.buckets)
    for latency in latencies:  # each request lies in (previous upper bound, its bucket's upper bound]
        holder = next(upper for upper in uppers if latency <= upper)
        lower = holder / BUCKET_GROWTH ** MERGED_BUCKETS if holder > BUCKET_FLOOR_S else 0.0
        assert lower < latency <= holder, (latency, holder)
    # upper bounds are the load's own fine bucket bounds (to 6 significant digits)
    assert all(math.isclose(math.log(u / BUCKET_FLOOR_S, BUCKET_GROWTH) / MERGED_BUCKETS,
                            round(math.log(u / BUCKET_FLOOR_S, BUCKET_GROWTH) / MERGED_BUCKETS), abs_tol=1e-3)
               for u in uppers if u > BUCKET_FLOOR_S)


def test_a_loads_histograms_reach_the_report_through_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    slot = LoadSlot(ledger, nodeid="suites/analysis/test_compare.py::test_x", stage="analysis", deadline_at=0.0,
                    deadline="test")
    profile = LoadProfile(locustfile=Path("suites/load/locustfile.py"), users=5, spawn_rate=5, duration_s=10)
    candidate = LoadResult(profile=profile, host="http://127.0.0.1:1",
                           target=Endpoint(Role.CANDIDATE, "http://127.0.0.1:1", None, "v2"),
                           cells={("/api/items", "v2"): latency_stats([0.02, 0.03], failures=1)},
                           started_at=1000.0, duration_s=10.2)
    baseline = LoadResult(profile=profile, host="http://127.0.0.1:2",
                          target=Endpoint(Role.BASELINE, "http://127.0.0.1:2", None, "v1"),
                          cells={("/api/items", "v1"): latency_stats([0.02])}, started_at=1000.1, duration_s=10.0)
    keep_histograms(slot, candidate, baseline)
    keep_histograms(None, candidate)  # outside a release: nowhere to keep them, and no error
    ledger.item_finished(ItemRecord(index=0, nodeid=slot.nodeid, stage="analysis", outcome=Outcome.FAILED,
                                    message="", started=995.0, finished=1011.0))
    data = chart_data(ledger, {slot.nodeid: []}, {slot.nodeid: "failed"})
    [load] = data["load_histograms"]
    assert (load["nodeid"], load["stage"], load["start_s"], load["duration_s"]) == (slot.nodeid, "analysis", 5.0, 10.2)
    assert load["source"] == profile.describe()
    assert [(c["target"], c["version"], c["requests"], c["failures"]) for c in load["cells"]] == [
        ("candidate", "v2", 2, 1), ("baseline", "v1", 1, 0)]
    assert data["timeline"] == [{"nodeid": slot.nodeid, "stage": "analysis", "outcome": "failed",
                                 "start_s": 0.0, "end_s": 16.0}]
    json.dumps(data)  # it goes into release-report.json as it is


def record(index: int, nodeid: str, outcome: Outcome, started: float, finished: float) -> ItemRecord:
    stage = nodeid.removeprefix("release::") if nodeid.startswith("release::") else "analysis"
    return ItemRecord(index=index, nodeid=nodeid, stage=stage, outcome=outcome, message="", started=started,
                      finished=finished)


def test_a_canary_that_fails_at_its_second_step_goes_0_10_50_then_back_to_0() -> None:
    records = [record(0, "release::provision", Outcome.PASSED, 100, 104),
               record(1, "release::shift[10%]", Outcome.PASSED, 120, 120.5),
               record(2, "release::shift[50%]", Outcome.PASSED, 131, 131.5),
               record(3, "suites/analysis/test_canary.py::test_split[50%]", Outcome.FAILED, 131.5, 140),
               record(4, "release::rollback", Outcome.PASSED, 140, 141)]
    properties = {"release::shift[10%]": {"release.shift.effective_weight": "10"},
                  "release::shift[50%]": {"release.shift.effective_weight": "50"},
                  "release::rollback": {"release.rollback.reason": "analysis[50%] failed: ..."}}
    outcomes = {r.nodeid: r.outcome.value for r in records}
    points = traffic_timeline(records, properties, outcomes, started_at=100)
    assert [(p["at_s"], p["candidate_percent"], p["by"]) for p in points] == [
        (0.0, 0, "start"), (20.5, 10, "release::shift[10%]"), (31.5, 50, "release::shift[50%]"),
        (41.0, 0, "release::rollback")]


def test_a_blue_green_switch_is_one_step_and_a_skipped_rollback_moves_nothing() -> None:
    records = [record(0, "release::switch", Outcome.PASSED, 10, 11),
               record(1, "release::rollback", Outcome.SKIPPED, 20, 20.01)]
    outcomes = {r.nodeid: r.outcome.value for r in records}
    points = traffic_timeline(records, {}, outcomes, started_at=10)
    assert [(p["at_s"], p["candidate_percent"]) for p in points] == [(0.0, 0), (1.0, 100)]
    # finalize's watch switching back is a step back to 0, though finalize itself failed
    records.append(record(2, "release::finalize", Outcome.FAILED, 12, 15))
    points = traffic_timeline(records, {"release::finalize": {"release.finalize.watch.time_to_switch_back_s": "0.2"}},
                              {**outcomes, "release::finalize": "failed"}, started_at=10)
    assert [(p["at_s"], p["candidate_percent"]) for p in points] == [(0.0, 0), (1.0, 100), (5.0, 0)]


# --- the charts --------------------------------------------------------------------------------------------

CHECKS: list[dict[str, Any]] = [
    {"check": "p(95) < 300ms", "verdict": "pass", "value": "43ms", "threshold": "300ms",
     "subject": "all endpoints (candidate v2)", "source": "locust x", "window": "15s", "samples": "2000",
     "limits": [0.3]},
    {"check": "error_rate < 1% [/api/items]", "verdict": "fail", "value": "4.9%", "threshold": "1%",
     "subject": "/api/items (candidate v2)", "source": "locust x", "window": "15s", "samples": "1000",
     "bound": "49/1000, interval [3.2%, 7.1%]", "interval": [0.032, 0.071], "limits": [0.01],
     "message": "error_rate 4.9% > 1% over 1,000 requests on /api/items (candidate v2): <decided>"},
    {"check": "share of v2 == 10% ± 2pp", "verdict": "pass", "value": "10.5%", "threshold": "10% ± 2pp",
     "subject": "v2 via the service (service)", "source": "locust x", "window": "8s", "samples": "1500",
     "limits": [0.08, 0.12]},
    {"check": "latency vs baseline", "verdict": "inconclusive", "value": "median 31ms",
     "threshold": "baseline x (1 + 10% at p50)", "subject": "all endpoints (candidate v2 vs baseline v1)",
     "source": "locust y", "window": "60s", "samples": "4457",
     "bound": "p99 candidate [69.7 ms, 310 ms], baseline [59.3 ms, 299 ms]",
     "arms": [{"arm": "candidate", "quantile": 0.99, "low": 0.0697, "high": 0.31},
              {"arm": "baseline", "quantile": 0.99, "low": 0.0593, "high": 0.299},
              {"arm": "candidate", "quantile": 0.5, "low": 0.0225, "high": None}]},
]


def report_with(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "run_id": "r1", "version": "v2", "previous": "v1", "strategy": "blue-green", "target": "local",
        "dry_run": False, "decision": "rolled-back", "exit_code": 1, "reason": "load failed: error_rate 4.9% > 1%",
        "phase_times_s": {"load": 15.0, "analysis": 60.0}, "started_at": 1_764_000_000.0,
        "tests": [{"nodeid": "suites/load/test_load.py::test_load", "stage": "load", "outcome": "failed",
                   "duration_s": 15.0, "message": "error_rate 4.9% > 1%", "checks": CHECKS[:2]},
                  {"nodeid": "suites/analysis/test_compare.py::test_compare", "stage": "analysis",
                   "outcome": "inconclusive", "duration_s": 60.0, "message": "INCONCLUSIVE: ...",
                   "checks": CHECKS[2:]},
                  {"nodeid": "release::switch", "stage": "switch", "outcome": "error", "duration_s": 0.1,
                   "message": "TargetError: candidate v2 restarted", "checks": []}],
        "timeline": [{"nodeid": "release::provision", "stage": "provision", "outcome": "passed",
                      "start_s": 0.0, "end_s": 4.0},
                     {"nodeid": "suites/load/test_load.py::test_load", "stage": "load", "outcome": "failed",
                      "start_s": 4.0, "end_s": 19.0},
                     {"nodeid": "release::switch", "stage": "switch", "outcome": "skipped",
                      "start_s": 19.0, "end_s": 19.0}],
        "traffic_timeline": [{"at_s": 0.0, "candidate_percent": 0, "by": "start"},
                             {"at_s": 19.5, "candidate_percent": 100, "by": "release::switch"}],
        "load_histograms": [
            {"nodeid": "suites/load/test_load.py::test_load", "stage": "load", "start_s": 4.0, "duration_s": 15.0,
             "source": "locust x",
             "cells": [{"target": "candidate", "endpoint": "/api/items", "version": "v2", "requests": 1000,
                        "failures": 49, "latency_buckets": [[0.02, 600], [0.03, 390], [0.4, 10]]},
                       {"target": "candidate", "endpoint": "/api/checkout", "version": "v2", "requests": 1000,
                        "failures": 0, "latency_buckets": [[0.02, 1000]]}]},
            {"nodeid": "suites/analysis/test_compare.py::test_compare", "stage": "analysis", "start_s": 20.0,
             "duration_s": 60.0, "source": "locust y",
             "cells": [{"target": "candidate", "endpoint": "/api/items", "version": "v2", "requests": 10,
                        "failures": 0, "latency_buckets": [[0.03, 10]]},
                       {"target": "baseline", "endpoint": "/api/items", "version": "v1", "requests": 20,
                        "failures": 1, "latency_buckets": [[0.02, 20]]}]}],
    }
    report.update(changes)
    return report


def test_the_timeline_has_one_bar_per_item_that_ran_and_one_row_for_every_skipped_one() -> None:
    skipped = [{"nodeid": f"suites/analysis/test_{name}.py::test_x[{step}%]", "stage": f"analysis[{step}%]",
                "outcome": "skipped", "start_s": 19.0, "end_s": 19.01} for step in (50, 100) for name in "abc"]
    report = report_with()
    figure = timeline_figure(report_with(timeline=report["timeline"] + skipped))
    assert figure is not None
    bars = {trace.name: trace for trace in figure.data}
    assert set(bars) == {"passed", "failed", "skipped"}
    assert list(bars["failed"].base) == [4.0] and list(bars["failed"].x) == [15.0]
    # 7 skipped items in 3 stages: one row, a bar per stage, an instant still a sliver
    rows = list(figure.layout.yaxis.categoryarray)
    assert rows == ["provision · provision", "load · test_load", "skipped · 7 items"]
    assert set(bars["skipped"].y) == {"skipped · 7 items"} and list(bars["skipped"].x) == [0.05] * 3
    assert [data[:2] for data in bars["skipped"].customdata] == [["switch", 1], ["analysis[50%]", 3],
                                                                  ["analysis[100%]", 3]]
    assert "7 skipped in one row" in figure.layout.title.text
    assert timeline_figure(report_with(timeline=[])) is None


def test_a_blue_green_switch_is_drawn_as_a_step_from_0_to_100() -> None:
    figure = traffic_figure(report_with())
    assert figure is not None
    [line] = figure.data
    assert line.line.shape == "hv"
    assert list(line.x) == [0.0, 19.5, 19.5] and list(line.y) == [0, 100, 100]  # held to the end of the run


def test_each_load_chart_draws_its_thresholds_and_bounds_where_they_are() -> None:
    figure = load_figure(report_with()["load_histograms"][0], report_with())
    assert figure is not None
    [vline] = [shape for shape in figure.layout.shapes if shape.type == "line"]
    assert vline.x0 == pytest.approx(300)  # ms: a shape takes the data value on a log axis
    [label] = [a for a in figure.layout.annotations if a.text == "p(95) < 300ms"]
    assert label.x == pytest.approx(math.log10(300))  # an annotation takes its log10
    errors = next(t for t in figure.data if t.name == "candidate v2 errors")
    assert list(errors.x) == ["all endpoints", "/api/checkout", "/api/items"]
    assert list(errors.y) == pytest.approx([2.45, 0.0, 4.9])
    # the failed check's bound [3.2%, 7.1%] around /api/items' 4.9%, nothing elsewhere
    assert list(errors.error_y.array) == pytest.approx([0, 0, 2.2])
    assert list(errors.error_y.arrayminus) == pytest.approx([0, 0, 1.7])
    limit = next(t for t in figure.data if t.name == "error-rate threshold")
    assert list(limit.x) == ["/api/items"] and list(limit.y) == pytest.approx([1.0])
    # per endpoint in the legend, all endpoints shown
    latency = {t.name: t.visible for t in figure.data if getattr(t, "mode", None) == "lines"}
    assert latency == {"candidate v2": True, "candidate v2 /api/checkout": "legendonly",
                       "candidate v2 /api/items": "legendonly"}


def test_a_comparison_chart_shows_both_arms_and_each_arms_quantile_bound() -> None:
    report = report_with()
    report["tests"][1]["checks"][1]["subject"] = "/api/items (candidate v2 vs baseline v1)"
    figure = load_figure(report["load_histograms"][1], report)
    assert figure is not None
    bounds = {t.name: t for t in figure.data if t.name and "bound" in t.name}
    candidate = bounds["candidate v2 p99 bound (/api/items)"]
    centre = candidate.x[0]
    assert centre + candidate.error_x.array[0] == pytest.approx(310)
    assert centre - candidate.error_x.arrayminus[0] == pytest.approx(69.7)
    assert "baseline v1 p99 bound (/api/items)" in bounds
    # p50's upper end is unbounded: the whisker reaches the arm's slowest bucket (30 ms), not infinity
    median = bounds["candidate v2 p50 bound (/api/items)"]
    assert median.x[0] + median.error_x.array[0] == pytest.approx(30)
    names = [t.name for t in figure.data if getattr(t, "mode", None) == "lines"]
    assert names.index("candidate v2") < names.index("baseline v1")


def test_the_checks_chart_ticks_each_threshold_at_its_value() -> None:
    report = report_with()
    figure = checks_figure("load", report["tests"][:2])
    assert figure is not None
    ticks = [t for t in figure.data if t.name == "threshold"]
    values = sorted(x for t in ticks for x in t.x)
    assert values == pytest.approx([1.0, 8.0, 12.0, 300.0])  # 1%, the 10% ± 2pp band, 300 ms
    failed = next(t for t in figure.data if t.name == "fail")
    assert list(failed.x) == pytest.approx([4.9])
    assert list(failed.error_x.array) == pytest.approx([2.2])
    # a check judged against the baseline has no absolute scale: it is in the table, not on this chart
    assert not any("latency vs baseline" in str(label) for t in figure.data for label in t.y)
    assert checks_figure("smoke", [{"checks": []}]) is None
    # success_rate's interval is on the successes (the verifier turned the failures' bound over)
    success = {"check": "success_rate >= 99%", "verdict": "pass", "value": "100%", "threshold": "99%",
               "subject": "/api/.* (candidate v2)", "bound": "0/2961, interval [0%, 0.2%]",
               "interval": [0.998, 1.0], "limits": [0.99]}
    figure = checks_figure("analysis", [{"checks": [success]}])
    assert figure is not None
    bar = next(t for t in figure.data if t.name == "pass")
    assert list(bar.error_x.arrayminus) == pytest.approx([0.2]) and list(bar.error_x.array) == pytest.approx([0])
    assert [x for t in figure.data if t.name == "threshold" for x in t.x] == pytest.approx([99.0])


def test_a_check_without_recorded_numbers_gets_no_tick_and_no_whisker() -> None:
    """A report from before schema 1.1 has the text alone: nothing is read back from it."""
    old = [{key: value for key, value in check.items() if key not in ("interval", "limits", "arms")}
           for check in CHECKS]
    report = report_with()
    report["tests"][0]["checks"], report["tests"][1]["checks"] = old[:2], old[2:]
    assert checks_figure("load", report["tests"][:1]) is None
    figure = load_figure(report["load_histograms"][0], report)
    assert figure is not None
    errors = next(t for t in figure.data if t.name == "candidate v2 errors")
    assert list(errors.error_y.array) == [0, 0, 0]
    assert not any(t.name == "error-rate threshold" for t in figure.data)


def test_the_page_puts_the_decision_first_and_lists_every_check_that_did_not_pass(tmp_path: Path) -> None:
    report = report_with()
    banner = decision_html(report)
    assert "Release v2: ROLLED-BACK" in banner and "#c62828" in banner and "load failed: error_rate" in banner
    problems = problems_html(report)
    assert "error_rate 4.9% &gt; 1% over 1,000 requests" in problems and "&lt;decided&gt;" in problems  # escaped
    assert "latency vs baseline" in problems and "inconclusive" in problems
    assert "TargetError: candidate v2 restarted" in problems  # a failed test without checks has its row too
    assert "p(95) &lt; 300ms" not in problems  # it passed
    assert "Every check passed" in problems_html(report_with(tests=[]))
    page = tmp_path / "run" / "release-report.html"
    write_html_report(report, page)
    text = page.read_text(encoding="utf-8")
    order = [text.index(marker) for marker in ('id="decision"', 'id="timeline"', 'id="checks-0"', 'id="load-0-0"',
                                               'id="traffic"', 'id="problems"')]
    assert order == sorted(order)
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text)  # self-contained: opens offline
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js itself is inlined
    assert page.stat().st_mode & 0o777 == 0o644


def test_a_report_without_chart_data_still_renders() -> None:
    """A run that stopped before any item (or a report from before these keys) still gets a page."""
    page = render_html({"version": "v2", "decision": "not-promoted", "reason": "usage error", "tests": []})
    assert "Release v2: NOT-PROMOTED" in page and "No item ran." in page


def test_the_warm_up_renders_in_its_own_thread_writes_nothing_and_changes_no_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reporting process renders a throwaway page at the run's start (plugins/finish.py), so that the real
    one, after the decision, does not pay Plotly's imports: it must leave no file and no trace in later pages."""
    report = report_with()
    page = render_html(report)
    monkeypatch.chdir(tmp_path)
    thread = warm_up_html_report()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon  # a daemon: it never holds up the interpreter's exit
    assert list(tmp_path.iterdir()) == []
    assert render_html(report) == page


def test_charts_rendered_during_finalize_make_the_same_page_and_only_what_changed_is_rendered_again() -> None:
    """The reporting process renders the report so far while finalize keeps the old slot warm
    (plugins/finish.py). The page after the decision reuses a chart only when everything it is drawn from is
    unchanged: it is the page a cold render gives, whatever changed in between."""
    provisional = report_with(decision="not-promoted", exit_code=5, phase_times_s={"load": 15.0})
    cache = FigureCache()
    thread = prerender_html_report(provisional, cache)
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    charts = cache.rendered
    assert charts == 4  # the checks of the load and analysis stages, and their two loads

    final = report_with()  # the decision, the phase times, the timeline: none of them is in a cached chart
    assert render_html(final, cache) == render_html(final)
    assert cache.rendered == charts  # every chart reused

    changed = report_with()  # the analysis test's checks changed after the pre-render: its charts are redrawn
    changed["tests"][1] = {**changed["tests"][1], "checks": CHECKS[2:3]}
    assert render_html(changed, cache) == render_html(changed)
    assert cache.rendered == charts + 2  # the analysis stage's checks chart and its load's chart


# --- a real rolled-back release, in a real browser ---------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("headless Chromium is not installed: apt-get install chromium (scripts/setup.sh does)")
    return found


def test_a_rolled_back_release_shows_its_decision_failed_check_and_charts_in_chromium(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert report["decision"] == "rolled-back"
    page = tmp_path / "release-report.html"
    write_html_report(report, page)
    # The DOM is dumped after the load event, so after the page's inline scripts ran (Plotly draws at once)
    done = subprocess.run([chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", "--dump-dom",
                           page.as_uri()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert f"Release {report['version']}: ROLLED-BACK" in dom
    assert "background:#c62828" in dom.replace(" ", "")  # the decision's colour
    failed = next(check for test in report["tests"] for check in test["checks"] if check["verdict"] == "fail")
    problems = dom[dom.index('id="problems"'):]
    assert html.escape(failed["message"], quote=False) in problems  # its one-line explanation
    assert html.escape(failed["source"], quote=False) in problems  # its query or load profile
    # Plotly drew every chart (it marks each div js-plotly-plot): SVG in each, the titles as SVG text
    figures = len(re.findall(r'class="plotly-graph-div js-plotly-plot"', dom))
    assert figures == len(re.findall(r'class="plotly-graph-div', dom)) >= 4
    assert len(re.findall(r'class="main-svg"', dom)) >= figures
    for title in ("Phases: every stage and action", "Traffic split", "error rate by endpoint"):
        assert re.search(r"<text[^>]*>[^<]*" + re.escape(title), dom), title
    # The failed check (error_rate < 1% [v2]) has its recorded interval as the whisker on its bar: v2's errors
    # through the service, all endpoints; Plotly drew it (a y error path)
    low, high = failed["interval"]
    load = next(load for load in report["load_histograms"] if load["stage"] == "analysis[10%]")
    figure = load_figure(load, report)
    assert figure is not None
    errors = next(t for t in figure.data if t.name == "v2 via service errors")
    at = list(errors.x).index("all endpoints")
    assert errors.error_y.array[at] > 0 and errors.y[at] + errors.error_y.array[at] == pytest.approx(100 * high)
    assert errors.y[at] - errors.error_y.arrayminus[at] == pytest.approx(100 * low)
    assert 'class="yerror"' in dom
    # The timeline: a row per item that ran, the 17 skipped ones in one
    skipped = sum(1 for item in report["timeline"] if item["outcome"] == "skipped")
    assert skipped == 17
    assert f"skipped · {skipped} items" in dom and f"{skipped} skipped in one row" in dom
    timeline = timeline_figure(report)
    assert timeline is not None
    assert len(timeline.layout.yaxis.categoryarray) == len(report["timeline"]) - skipped + 1
