"""`release-report.html`: the release report as one self-contained page a person would rather look at.

Written on the reporting process (the only process, or the xdist controller) from the same dict as
release-report.json, after it. Plotly's JavaScript is inlined once, so the file opens offline. In order:
the decision and why (coloured by decision); the phase timeline; per stage its checks and each load's
latency distributions and error rates, with thresholds and confidence bounds; the traffic split over time;
every check that did not pass with its one-line explanation and its query or load profile.
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from releasegate.core.files import write_atomically

HTML_REPORT_NAME = "release-report.html"

DECISION_COLOURS = {"promoted": "#2e7d32", "rolled-back": "#c62828", "not-promoted": "#546e7a",
                    "inconclusive": "#ef6c00"}
NOT_PASSED = ("fail", "inconclusive", "no-data")
FAILED_OUTCOMES = ("failed", "error", "inconclusive")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 16px 24px; color: #212121; }
.decision { color: #fff; padding: 18px 24px; border-radius: 8px; }
.decision h1 { margin: 0; font-size: 2.2em; }
.decision p { margin: 8px 0 0; font-size: 1.15em; }
.meta { color: #424242; margin: 10px 0 0; }
h2 { margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td code { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.9em; }
td.test { min-width: 12em; } td.window { overflow-wrap: anywhere; min-width: 7em; }
tr.source td { background: #fafafa; border-top: none; }
.verdict-fail, .outcome-failed { color: #c62828; font-weight: bold; }
.verdict-inconclusive, .outcome-inconclusive { color: #ef6c00; font-weight: bold; }
.verdict-no-data, .outcome-error { color: #6a1b9a; font-weight: bold; }
.none { color: #616161; font-style: italic; }
"""


def _text(value: object) -> str:
    return html.escape("" if value is None else str(value))


def decision_html(report: Mapping[str, Any]) -> str:
    """The decision in big letters, coloured by it, and why; then what was released where."""
    decision = str(report.get("decision", ""))
    colour = DECISION_COLOURS.get(decision, "#546e7a")
    started = report.get("started_at")
    when = (datetime.fromtimestamp(float(started), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if started is not None else "-")
    reason = report.get("reason") or ("all checks passed" if decision == "promoted" else "-")
    dry_run = " (dry run)" if report.get("dry_run") else ""
    return (f'<div class="decision" id="decision" style="background:{colour}">'
            f"<h1>Release {_text(report.get('version'))}: {_text(decision.upper())}</h1>"
            f'<p id="reason">why: {_text(reason)}</p></div>'
            f'<p class="meta">previous version {_text(report.get("previous") or "-")} · '
            f"{_text(report.get('strategy'))} on {_text(report.get('target'))}{dry_run} · "
            f"exit code {_text(report.get('exit_code'))} · run "
            f"{_text(report.get('run_id'))} · started {_text(when)}"
            + (f"<br>target: {_text(report['target_detail'])}" if report.get("target_detail") else "") + "</p>")


def problems_html(report: Mapping[str, Any]) -> str:
    """Every check that did not pass (and every failed test without one), with why and its query or profile."""
    rows: list[str] = []
    for test in report.get("tests", []):
        failing = [check for check in test.get("checks", []) if check.get("verdict") in NOT_PASSED]
        for check in failing:
            explanation = check.get("message") or test.get("message") or ""
            rows.append(_row(test, check.get("check", ""), f"verdict-{check.get('verdict')}", check.get("verdict", ""),
                             check, explanation, check.get("source", "")))
        if not failing and test.get("outcome") in FAILED_OUTCOMES:
            rows.append(_row(test, "(the test itself)", f"outcome-{test['outcome']}", test["outcome"], {},
                             test.get("message", ""), ""))
    if not rows:
        return '<p class="none">Every check passed.</p>'
    header = ("<tr><th>stage</th><th>test</th><th>check</th><th>verdict</th><th>measured</th><th>threshold</th>"
              "<th>subject</th><th>samples</th><th>window</th><th>why</th></tr>")
    return f'<table id="problems">{header}{"".join(rows)}</table>'


def _row(test: Mapping[str, Any], check: str, css: str, verdict: str, fields: Mapping[str, str],
         explanation: str, source: str) -> str:
    cells = [_text(test.get("stage")), f"<code>{_text(test.get('nodeid'))}</code>", _text(check),
             f'<span class="{_text(css)}">{_text(verdict)}</span>',
             *(_text(fields.get(name, "")) for name in ("value", "threshold", "subject", "samples", "window")),
             _text(explanation)]
    classes = {1: " class=test", 8: " class=window"}  # long unbroken words: a node id, a timestamp
    row = "<tr>" + "".join(f"<td{classes.get(i, '')}>{cell}</td>" for i, cell in enumerate(cells))
    # A PromQL query is long: it gets a row of its own under its check, the table's whole width.
    return (row + f'</tr><tr class="source"><td colspan="{len(cells)}">query or load profile: '
            f"<code>{_text(source or '-')}</code></td></tr>")


def analysis_stages(report: Mapping[str, Any]) -> list[str]:
    """Stages with checks or loads to chart, in the order they ran."""
    order = list(report.get("phase_times_s") or {})
    found = {test["stage"] for test in report.get("tests", []) if test.get("checks")}
    found |= {load["stage"] for load in report.get("load_histograms") or []}
    return sorted(found, key=lambda stage: (order.index(stage) if stage in order else len(order), stage))


def figure_html(figure: Any, element_id: str) -> str:
    import plotly.io as pio

    return str(pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=element_id,
                           config={"displaylogo": False, "responsive": True}))


class FigureCache:
    """Charts already rendered, by everything they are drawn from: a page rendered while the release still
    runs (`prerender_html_report`) leaves the charts of the tests that had finished, and the final page
    reuses each one whose inputs have not changed since. Only the charts of one stage's checks and of one
    load are kept; the timeline and the traffic split change to the end."""

    def __init__(self) -> None:
        self._html: dict[str, str] = {}
        self._lock = threading.Lock()  # filled by the pre-render's thread, read by the final page's
        self.rendered = 0  # charts rendered through this cache (not reused): what a test can count

    def fragment(self, inputs: Any, element_id: str, figure: Callable[[], Any]) -> str | None:
        """The chart's HTML, from the cache when these exact inputs drew it before; None without a chart."""
        key = json.dumps([element_id, inputs], sort_keys=True, default=str)
        with self._lock:
            found = self._html.get(key)
        if found is not None:
            return found
        drawn = figure()
        if drawn is None:
            return None
        made = figure_html(drawn, element_id)
        with self._lock:
            self._html[key] = made
            self.rendered += 1
        return made


def render_html(report: Mapping[str, Any], cache: FigureCache | None = None) -> str:
    """The whole page as a string (Plotly inlined)."""
    from plotly.offline import get_plotlyjs

    parts = _body(report, cache or FigureCache())
    title = f"Release {report.get('version')}: {report.get('decision')}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style>'
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body>{''.join(parts)}</body></html>\n")


def _body(report: Mapping[str, Any], cache: FigureCache) -> list[str]:
    from releasegate.plugins.html_figures import checks_figure, load_figure, timeline_figure, traffic_figure

    parts = [decision_html(report), "<h2>Phases</h2>"]
    timeline = timeline_figure(report)
    parts.append(figure_html(timeline, "timeline") if timeline is not None else '<p class="none">No item ran.</p>')
    parts.append("<h2>Analysis: checks, latency and errors per stage</h2>")
    stages = analysis_stages(report)
    if not stages:
        parts.append('<p class="none">No check recorded a value.</p>')
    for number, stage in enumerate(stages):
        parts.append(f"<h3>{_text(stage)}</h3>")
        tests = [test for test in report.get("tests", []) if test["stage"] == stage]
        checks = cache.fragment(["checks", stage, tests], f"checks-{number}",
                                partial(checks_figure, stage, tests))
        if checks is not None:
            parts.append(checks)
        loads = [load for load in report.get("load_histograms") or [] if load["stage"] == stage]
        for index, load in enumerate(loads):
            # A load's chart is drawn from the load, its test's checks, and which versions are the candidate
            # and the baseline (its colours): nothing else of the report.
            inputs = ["load", load, report.get("version"), report.get("previous"),
                      [test.get("checks") for test in report.get("tests", []) if test["nodeid"] == load["nodeid"]]]
            figure = cache.fragment(inputs, f"load-{number}-{index}",
                                    partial(load_figure, load, report))
            if figure is not None:
                parts.append(figure)
    parts.append("<h2>Traffic split over time</h2>")
    traffic = traffic_figure(report)
    parts.append(figure_html(traffic, "traffic") if traffic is not None else '<p class="none">No traffic data.</p>')
    parts.append("<h2>Checks that did not pass</h2>")
    parts.append(problems_html(report))
    return parts


# A page with one bar and one step line: rendering it imports Plotly and builds the classes and validators that
# every real page needs (about 0.1 s of CPU), so the real page, written after the decision, costs only its own.
_WARM_UP_REPORT: Mapping[str, Any] = {
    "version": "warm-up", "decision": "promoted",
    "timeline": [{"stage": "preflight", "nodeid": "warm-up", "outcome": "passed", "start_s": 0.0, "end_s": 0.1}],
    "traffic_timeline": [{"at_s": 0.1, "candidate_percent": 100, "by": "warm-up"}]}


def warm_up_html_report(then: Callable[[], None] = lambda: None) -> threading.Thread:
    """Render a throwaway page in a thread now, while the release waits on its target, so the report's own
    rendering does not add that time to the end of the run (where a CI job waits for the exit), then call
    `then` in that thread. A failure here means nothing: the real page reports its own."""

    def render() -> None:
        with contextlib.suppress(Exception):
            render_html(_WARM_UP_REPORT)
        then()

    thread = threading.Thread(target=render, name="releasegate html warm-up", daemon=True)
    thread.start()
    return thread


def prerender_html_report(report: Mapping[str, Any], cache: FigureCache,
                          after: threading.Thread | None = None) -> threading.Thread:
    """Render the charts of a report taken while the release still runs into `cache`, in a thread (after
    `after`, the warm-up: Plotly's caches are filled by one thread at a time). The final page then renders
    only what changed since. A failure here means nothing: the final page renders everything it must."""

    def render() -> None:
        if after is not None:
            after.join()
        with contextlib.suppress(Exception):
            _body(report, cache)

    thread = threading.Thread(target=render, name="releasegate html pre-render", daemon=True)
    thread.start()
    return thread


def write_html_report(report: Mapping[str, Any], path: Path, *, mode: int = 0o644,
                      cache: FigureCache | None = None) -> None:
    """Write the page whole or not at all (core.files), readable by others like the other reports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, render_html(report, cache), mode=mode)

