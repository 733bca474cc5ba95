"""The HTML report's charts, as Plotly figures built from the release report's dict (release-report.json).

Pure functions of that dict, so each can be tested without a release: which traces and shapes a figure
has, and where each threshold is drawn. Units on the charts: latency in milliseconds, rates in percent.

Thresholds and confidence bounds are the numbers each check recorded (core.checks.CheckOutcome, schema 1.1):
`limits` (one limit, or a band's two ends; a relative threshold resolved to the number the verdict used),
`interval` (the bound on the measured value) and `arms` (a comparison's bound on each arm's quantiles). A
check without them (a report written before 1.1) is drawn without a tick or a whisker; nothing is read
back from the display text but the measured value and the expression's metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from releasegate.core.errors import ConfigError
from releasegate.plugins.load_histograms import MERGED_BUCKETS
from releasegate.verifiers.stats import BUCKET_GROWTH
from releasegate.verifiers.thresholds import Kind, Threshold, parse_threshold

OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#6a1b9a", "inconclusive": "#ef6c00",
                   "skipped": "#9e9e9e"}
VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "inconclusive": "#ef6c00", "no-data": "#757575"}
CANDIDATE_COLOUR, BASELINE_COLOUR, OTHER_COLOUR = "#e65100", "#1565c0", "#616161"
ALL_ENDPOINTS = "all endpoints"
LABEL_LIMIT = 72
"""Characters of a check's label on the checks chart."""
REPORT_BUCKET_WIDTH = BUCKET_GROWTH ** MERGED_BUCKETS
"""A histogram bucket's upper bound over its lower one (plugins/load_histograms.py)."""

_SCOPE = re.compile(r"\s+\[[^\]]*\]$")  # `p(95) < 300ms [/api/checkout]`: the check's scope in brackets
_QUANTITY = re.compile(r"(-?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|s|%|/s)?")
_SUBJECT = re.compile(r"^(?P<endpoint>.*?) \((?P<who>.*)\)$")
ERRORS_VS_BASELINE = "errors vs baseline"
"""The check verifiers/compare.py names its error-rate comparison: its limit is on the error-rate chart."""


# --- reading a check ----------------------------------------------------------------------------------------


def quantity(text: str) -> tuple[float, str | None] | None:
    """The first number in `text` in base units, with its unit: `43ms` -> (0.043, 'ms'), `0.5%` -> (0.005, '%')."""
    match = _QUANTITY.search(text.replace(",", ""))
    if match is None:
        return None
    number, unit = float(match[1]), match[2]
    return {"ms": number / 1000, "%": number / 100}.get(unit or "", number), unit


def kind_of_unit(unit: str | None) -> Kind | None:
    return {"ms": Kind.LATENCY, "s": Kind.LATENCY, "%": Kind.RATE, "/s": Kind.THROUGHPUT}.get(unit or "")


def expression_of(check: Mapping[str, Any]) -> Threshold | None:
    """The check's expression parsed (`p(95) < 300ms`), or None for a check named in words."""
    try:
        return parse_threshold(_SCOPE.sub("", check.get("check", "")))
    except ConfigError:
        return None


@dataclass(frozen=True)
class CheckMark:
    """One check as a chart shows it: the measured value, its limits and its bound, in base units."""

    label: str
    kind: Kind
    verdict: str
    value: float
    limits: tuple[float, ...]  # one limit, or the two ends of a band (`10% ± 2pp`)
    bound: tuple[float, float | None] | None  # the confidence interval on the value (None high: unbounded)
    hover: str


def interval_of(check: Mapping[str, Any]) -> tuple[float, float | None] | None:
    """The check's recorded `interval`, or None when it has none."""
    interval = check.get("interval")
    return (float(interval[0]), None if interval[1] is None else float(interval[1])) if interval else None


def check_mark(check: Mapping[str, Any]) -> CheckMark | None:
    """How to draw a check, or None when it has no value or no limit on a scale (a latency comparison)."""
    measured = quantity(check.get("value", ""))
    limits = tuple(float(limit) for limit in check.get("limits") or ())
    if measured is None or not limits:
        return None
    value, unit = measured
    threshold = expression_of(check)
    kind = threshold.kind if threshold is not None and threshold.kind is not Kind.VALUE else kind_of_unit(unit)
    if kind is None or kind is Kind.COUNT:
        return None
    label = f"{_SCOPE.sub('', check.get('check', ''))} · {check.get('subject', '')}"
    if len(label) > LABEL_LIMIT:  # a long Prometheus subject would squeeze the chart; the hover has it whole
        label = label[:LABEL_LIMIT - 1] + "…"
    hover = (f"{check.get('check', '')}<br>{check.get('subject', '')}<br>measured {check.get('value', '')}, "
             f"threshold {check.get('threshold', '')}<br>{check.get('verdict', '')}"
             + (f"<br>bound: {check['bound']}" if check.get("bound") else ""))
    return CheckMark(label, kind, check.get("verdict", ""), value, limits, interval_of(check), hover)


def split_subject(subject: str) -> tuple[str, str]:
    """`/api/checkout (candidate v3)` -> ('/api/checkout', 'candidate v3')."""
    match = _SUBJECT.match(subject)
    return (match["endpoint"], match["who"]) if match else (subject, "")


# --- the phase timeline and the traffic split --------------------------------------------------------------


def short_name(nodeid: str) -> str:
    """`release::shift[10%]` -> `shift[10%]`; `suites/load/test_load.py::test_x[a]` -> `test_x[a]`."""
    return nodeid.rsplit("::", 1)[-1]


SKIPPED_ROW = "skipped"


def timeline_figure(report: Mapping[str, Any]) -> go.Figure | None:
    """A Gantt-like chart: one bar per item that ran, from its start to its end, coloured by outcome, in run
    order; skipped items share one last row, a bar per stage, so a release stopped early stays short."""
    items = report.get("timeline") or []
    if not items:
        return None
    ran = [item for item in items if item["outcome"] != "skipped"]
    skipped = [item for item in items if item["outcome"] == "skipped"]
    rows = [f"{item['stage']} · {short_name(item['nodeid'])}" for item in ran]
    figure = go.Figure()
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [(row, item) for row, item in zip(rows, ran, strict=True) if item["outcome"] == outcome]
        if not chosen:
            continue
        figure.add_trace(go.Bar(
            name=outcome, orientation="h", marker_color=colour,
            y=[row for row, _ in chosen], base=[item["start_s"] for _, item in chosen],
            x=[max(item["end_s"] - item["start_s"], 0.05) for _, item in chosen],
            customdata=[[item["nodeid"], item["start_s"], item["end_s"] - item["start_s"]] for _, item in chosen],
            hovertemplate=("%{customdata[0]}<br>from %{customdata[1]:.2f}s for %{customdata[2]:.2f}s<extra>"
                           + outcome + "</extra>")))
    title = "Phases: every stage and action, start to end"
    if skipped:
        row = f"{SKIPPED_ROW} · {len(skipped)} item{'s' if len(skipped) > 1 else ''}"
        rows.append(row)
        stages: dict[str, list[Mapping[str, Any]]] = {}
        for item in skipped:
            stages.setdefault(item["stage"], []).append(item)
        starts = [min(i["start_s"] for i in group) for group in stages.values()]
        ends = [max(i["end_s"] for i in group) for group in stages.values()]
        figure.add_trace(go.Bar(
            name="skipped", orientation="h", marker_color=OUTCOME_COLOURS["skipped"], y=[row] * len(stages),
            # a skipped item lasts milliseconds: a sliver of width keeps it visible
            base=starts, x=[max(end - start, 0.05) for start, end in zip(starts, ends, strict=True)],
            customdata=[[stage, len(group), ", ".join(short_name(i["nodeid"]) for i in group)]
                        for stage, group in stages.items()],
            hovertemplate="%{customdata[0]}: %{customdata[1]} skipped<br>%{customdata[2]}<extra>skipped</extra>"))
        title += f" ({len(skipped)} skipped in one row, by stage)"
    figure.update_layout(
        title=title, barmode="overlay",
        xaxis_title="seconds from the start of the release", height=120 + 22 * len(rows),
        yaxis={"categoryorder": "array", "categoryarray": rows, "autorange": "reversed", "automargin": True},
        legend_title_text="outcome", margin={"l": 10, "r": 10, "t": 50, "b": 40})
    return figure


def traffic_figure(report: Mapping[str, Any]) -> go.Figure | None:
    """The candidate's share of the public service's traffic over time, as steps."""
    points = report.get("traffic_timeline") or []
    if not points:
        return None
    items = report.get("timeline") or []
    end = max([point["at_s"] for point in points] + [item["end_s"] for item in items])
    x = [point["at_s"] for point in points] + [end]
    y = [point["candidate_percent"] for point in points] + [points[-1]["candidate_percent"]]
    labels = [short_name(point["by"]) for point in points] + ["end"]
    figure = go.Figure(go.Scatter(
        x=x, y=y, mode="lines+markers+text", line_shape="hv", fill="tozeroy", name="candidate",
        line_color=CANDIDATE_COLOUR, text=[f"{w}% ({label})" if i < len(points) else "" for i, (w, label)
                                           in enumerate(zip(y, labels, strict=True))],
        textposition=["top right"] * (len(x) - 2) + ["top left", "top left"],
        hovertemplate="%{y}% from %{x:.1f}s<extra></extra>"))
    figure.update_layout(
        title=f"Traffic split: {report.get('version')}'s share of the service over time",
        xaxis_title="seconds from the start of the release", yaxis_title="candidate's share (%)",
        # a little room on the right: a rollback at the very end is a step down, not the chart's edge
        xaxis_range=[0, max(end, 1.0) * 1.04], yaxis_range=[0, 110], height=320, showlegend=False,
        margin={"l": 10, "r": 10, "t": 50, "b": 40})
    return figure


# --- the checks of one stage ---------------------------------------------------------------------------------

_PANELS = ((Kind.LATENCY, "latency (ms)", 1000.0), (Kind.RATE, "rate (%)", 100.0),
           (Kind.THROUGHPUT, "requests per second", 1.0))


def checks_figure(stage: str, tests: Iterable[Mapping[str, Any]]) -> go.Figure | None:
    """Each numeric check of a stage: its measured value as a bar (coloured by verdict), its threshold as a
    black tick, and its confidence interval as error bars; one panel per unit."""
    marks = [mark for test in tests for check in test.get("checks", []) if (mark := check_mark(check)) is not None]
    panels = [(kind, title, scale) for kind, title, scale in _PANELS if any(m.kind is kind for m in marks)]
    if not panels:
        return None
    counts = [sum(1 for m in marks if m.kind is kind) for kind, _, _ in panels]
    figure = make_subplots(rows=len(panels), cols=1, subplot_titles=[title for _, title, _ in panels],
                           row_heights=[float(n) for n in counts], vertical_spacing=0.25 / len(panels) + 0.05)
    for row, (kind, _, scale) in enumerate(panels, start=1):
        chosen = [m for m in marks if m.kind is kind]
        labels = [f"{i + 1}. {m.label}" for i, m in enumerate(chosen)]  # numbered: equal labels stay apart
        for verdict, colour in VERDICT_COLOURS.items():
            picked = [(label, m) for label, m in zip(labels, chosen, strict=True) if m.verdict == verdict]
            if not picked:
                continue
            error = {"type": "data", "symmetric": False, "color": "#212121",
                     "array": [_above(m.bound, m.value) * scale for _, m in picked],
                     "arrayminus": [max(0.0, m.value - m.bound[0]) * scale if m.bound else 0 for _, m in picked]}
            figure.add_trace(go.Bar(
                name=verdict, legendgroup=verdict, showlegend=row == 1 or verdict not in _shown(figure),
                orientation="h", marker_color=colour, y=[label for label, _ in picked],
                x=[m.value * scale for _, m in picked], error_x=error,
                hovertext=[m.hover for _, m in picked], hoverinfo="text"), row=row, col=1)
        ticks = [(label, limit) for label, m in zip(labels, chosen, strict=True) for limit in m.limits]
        figure.add_trace(go.Scatter(
            name="threshold", legendgroup="threshold", showlegend=row == 1, mode="markers",
            marker={"symbol": "line-ns-open", "size": 22, "color": "#000000", "line": {"width": 3}},
            y=[label for label, _ in ticks], x=[limit * scale for _, limit in ticks],
            hovertemplate="threshold %{x}<extra></extra>"), row=row, col=1)
        figure.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed", automargin=True,
                            row=row, col=1)
    figure.update_layout(title=f"{stage}: checks (bar: measured; black tick: threshold; whisker: confidence bound)",
                         height=140 + 34 * sum(counts) + 40 * len(panels), barmode="overlay",
                         margin={"l": 10, "r": 10, "t": 70, "b": 30})
    return figure


def _above(bound: tuple[float, float | None] | None, value: float) -> float:
    """The whisker above a value: none without a bound, or when the bound has no upper end yet."""
    return max(0.0, bound[1] - value) if bound is not None and bound[1] is not None else 0.0


def _shown(figure: go.Figure) -> set[str]:
    return {trace.name for trace in figure.data if trace.showlegend}


# --- one load: latency distributions and error rates per serving version -----------------------------------


def series_name(cell: Mapping[str, Any]) -> str:
    """Who served a cell, as the load's checks name it (verifiers/load.py): `candidate v3`, `v2 via service`."""
    if cell["target"] == "service":
        return f"{cell['version']} via service"
    return f"{cell['target']} {cell['version']}"


def series_colour(cell: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    if cell["version"] == report.get("version"):
        return CANDIDATE_COLOUR
    if cell["version"] == report.get("previous"):
        return BASELINE_COLOUR
    return OTHER_COLOUR


@dataclass
class Series:
    """The cells of one serving version in one load, per endpoint and summed over endpoints."""

    name: str
    colour: str
    buckets: dict[str, dict[float, int]]  # endpoint -> upper bound (s) -> requests; ALL_ENDPOINTS summed
    requests: dict[str, int]
    failures: dict[str, int]


def load_series(load: Mapping[str, Any], report: Mapping[str, Any]) -> list[Series]:
    found: dict[str, Series] = {}
    for cell in load.get("cells", []):
        name = series_name(cell)
        series = found.setdefault(name, Series(name, series_colour(cell, report), {}, {}, {}))
        for endpoint in (cell["endpoint"], ALL_ENDPOINTS):
            counts = series.buckets.setdefault(endpoint, {})
            for upper, count in cell["latency_buckets"]:
                counts[float(upper)] = counts.get(float(upper), 0) + int(count)
            series.requests[endpoint] = series.requests.get(endpoint, 0) + int(cell["requests"])
            series.failures[endpoint] = series.failures.get(endpoint, 0) + int(cell["failures"])
    # the candidate first, then the baseline: the legend reads like the comparison
    order = {CANDIDATE_COLOUR: 0, BASELINE_COLOUR: 1, OTHER_COLOUR: 2}
    return sorted(found.values(), key=lambda s: (order[s.colour], s.name))


def histogram_steps(counts: Mapping[float, int]) -> tuple[list[float], list[float]]:
    """A step line of the share of requests per bucket: x in ms from each bucket's lower to upper bound."""
    total = sum(counts.values())
    x: list[float] = []
    y: list[float] = []
    for upper, count in sorted(counts.items()):
        lower = upper / REPORT_BUCKET_WIDTH
        x += [lower * 1000, upper * 1000]
        y += [100 * count / total, 100 * count / total]
    return x, y


def histogram_quantile(counts: Mapping[float, int], q: float) -> float | None:
    """The upper bound (s) of the bucket holding quantile q: where a marker on the distribution goes."""
    total = sum(counts.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total - 1e-9)), 0
    for upper, count in sorted(counts.items()):
        seen += count
        if seen >= rank:
            return upper
    return None


def _checks_of(load: Mapping[str, Any], report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [check for test in report.get("tests", []) if test["nodeid"] == load["nodeid"]
            for check in test.get("checks", [])]


def load_figure(load: Mapping[str, Any], report: Mapping[str, Any]) -> go.Figure | None:
    """Left: each serving version's latency distribution (all endpoints; each endpoint in the legend), the
    test's latency thresholds as vertical lines and the comparison's quantile bounds as whiskers. Right:
    error rate per endpoint and version, with the rate thresholds and their confidence bounds."""
    series = load_series(load, report)
    if not series:
        return None
    checks = _checks_of(load, report)
    figure = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.08,
                           subplot_titles=["latency distribution (share of requests per bucket)",
                                           "error rate by endpoint"])
    for one in series:
        for endpoint, counts in sorted(one.buckets.items(), key=lambda kv: kv[0] != ALL_ENDPOINTS):
            x, y = histogram_steps(counts)
            everything = endpoint == ALL_ENDPOINTS
            figure.add_trace(go.Scatter(
                x=x, y=y, mode="lines", name=f"{one.name}" + ("" if everything else f" {endpoint}"),
                legendgroup=f"{one.name} {endpoint}", visible=True if everything else "legendonly",
                line={"color": one.colour, "width": 2 if everything else 1, "dash": None if everything else "dot"},
                fill="tozeroy" if everything else None, opacity=0.85,
                hovertemplate=f"{one.name} {endpoint}<br>%{{x:.1f}} ms: %{{y:.2f}}% of requests<extra></extra>"),
                row=1, col=1)
    _latency_thresholds(figure, checks)
    _quantile_bounds(figure, checks, series)
    _error_rates(figure, checks, series)
    figure.update_xaxes(type="log", title_text="latency (ms, log scale)", row=1, col=1)
    figure.update_yaxes(title_text="% of requests", row=1, col=1)
    figure.update_yaxes(title_text="error rate (%)", rangemode="tozero", row=1, col=2)
    figure.update_layout(title=f"Load of {short_name(load['nodeid'])}: {load['source']}", height=430,
                         barmode="group", margin={"l": 10, "r": 10, "t": 70, "b": 40})
    return figure


def _latency_thresholds(figure: go.Figure, checks: Sequence[Mapping[str, Any]]) -> None:
    drawn: set[str] = set()
    for check in checks:
        threshold = expression_of(check)
        if threshold is None or threshold.kind is not Kind.LATENCY or threshold.text in drawn:
            continue
        drawn.add(threshold.text)
        # A shape on a log axis takes the data value, an annotation its log10 (plotly.js, for history's sake).
        figure.add_vline(x=threshold.limit * 1000, line_dash="dash", line_color="#000000", row=1, col=1)
        figure.add_annotation(x=math.log10(threshold.limit * 1000), xref="x", y=1.0, yref="y domain",
                              text=threshold.text, showarrow=False, xanchor="right", yanchor="top")


def _quantile_bounds(figure: go.Figure, checks: Sequence[Mapping[str, Any]], series: Sequence[Series]) -> None:
    """A comparison's confidence interval on each judged quantile of each arm, at the height of the arm's peak;
    an unbounded upper end reaches to the arm's slowest bucket."""
    for check in checks:
        endpoint, _ = split_subject(check.get("subject", ""))
        for bound in check.get("arms") or ():
            arm, q, low = bound["arm"], float(bound["quantile"]), float(bound["low"] or 0.0)
            one = next((s for s in series if s.name.startswith(arm)), None)
            if one is None or endpoint not in one.buckets:
                continue
            high = float(bound["high"]) if bound["high"] is not None else max(one.buckets[endpoint])
            centre = histogram_quantile(one.buckets[endpoint], q) or (low + high) / 2
            centre = min(max(centre, low), high)
            peak = max(histogram_steps(one.buckets[endpoint])[1] or [1.0])
            upper = f"{high * 1000:.1f} ms" if bound["high"] is not None else "unbounded"
            figure.add_trace(go.Scatter(
                x=[centre * 1000], y=[peak * (0.55 if arm == "candidate" else 0.45)], mode="markers",
                marker={"color": one.colour, "symbol": "diamond", "size": 9},
                error_x={"type": "data", "symmetric": False, "array": [(high - centre) * 1000],
                         "arrayminus": [(centre - low) * 1000], "color": one.colour, "thickness": 2},
                name=f"{one.name} p{q * 100:g} bound ({endpoint})", legendgroup=f"{one.name} {endpoint}",
                visible=True if endpoint == ALL_ENDPOINTS else "legendonly",
                hovertemplate=(f"{one.name} {endpoint}: p{q * 100:g} in [{low * 1000:.1f} ms, {upper}]"
                               f"<br>{check.get('verdict', '')}: {check.get('check', '')}<extra></extra>")),
                row=1, col=1)


def _error_rates(figure: go.Figure, checks: Sequence[Mapping[str, Any]], series: Sequence[Series]) -> None:
    endpoints = sorted({e for s in series for e in s.requests}, key=lambda e: (e != ALL_ENDPOINTS, e))
    for one in series:
        shown = [e for e in endpoints if one.requests.get(e)]
        rates = [one.failures[e] / one.requests[e] for e in shown]
        bounds = [_rate_bound(checks, e, one.name) for e in shown]
        figure.add_trace(go.Bar(
            x=shown, y=[100 * r for r in rates], name=f"{one.name} errors", marker_color=one.colour,
            legendgroup=f"{one.name} {ALL_ENDPOINTS}",
            customdata=[[one.failures[e], one.requests[e]] for e in shown],
            error_y={"type": "data", "symmetric": False, "color": "#212121",
                     "array": [100 * _above(b, r) for b, r in zip(bounds, rates, strict=True)],
                     "arrayminus": [100 * max(0.0, r - b[0]) if b else 0 for b, r in zip(bounds, rates, strict=True)]},
            hovertemplate=f"{one.name} %{{x}}: %{{y:.2f}}% (%{{customdata[0]}} of %{{customdata[1]}})<extra></extra>"),
            row=1, col=2)
    limits = _rate_limits(checks, endpoints)
    if limits:
        figure.add_trace(go.Scatter(
            x=[e for e, _, _ in limits], y=[100 * limit for _, limit, _ in limits], mode="markers",
            name="error-rate threshold", text=[text for _, _, text in limits],
            marker={"symbol": "line-ew-open", "size": 46, "color": "#000000", "line": {"width": 3}},
            hovertemplate="%{text}: %{y:.2f}%<extra></extra>"), row=1, col=2)


def _rate_bound(checks: Sequence[Mapping[str, Any]], endpoint: str, who: str) -> tuple[float, float | None] | None:
    """The error-rate bound of this endpoint and version: an `error_rate` check's interval, or a
    `success_rate` check's turned over."""
    for check in checks:
        threshold = expression_of(check)
        if threshold is None or threshold.metric not in ("error_rate", "success_rate"):
            continue
        interval = interval_of(check)
        if interval is None or split_subject(check.get("subject", "")) != (endpoint, who):
            continue
        if threshold.metric == "error_rate":
            return interval
        return (0.0 if interval[1] is None else 1 - interval[1], 1 - interval[0])
    return None


def _rate_limits(checks: Sequence[Mapping[str, Any]], endpoints: Sequence[str]) -> list[tuple[str, float, str]]:
    """(endpoint, highest error rate allowed, the check) for each endpoint a rate check judged: an
    `error_rate` limit, a `success_rate` limit turned over, a comparison's resolved `baseline rate + x`."""
    limits: dict[tuple[str, float], str] = {}
    for check in checks:
        endpoint, _ = split_subject(check.get("subject", ""))
        recorded: list[float] = list(check.get("limits") or [])
        if endpoint not in endpoints or len(recorded) != 1:
            continue
        threshold = expression_of(check)
        if threshold is not None and threshold.metric in ("error_rate", "success_rate"):
            limit = recorded[0] if threshold.metric == "error_rate" else 1 - recorded[0]
            limits[(endpoint, round(limit, 9))] = threshold.text
        elif _SCOPE.sub("", check.get("check", "")) == ERRORS_VS_BASELINE:
            limits[(endpoint, round(recorded[0], 9))] = check.get("threshold", "")
    return [(endpoint, limit, text) for (endpoint, limit), text in limits.items()]
