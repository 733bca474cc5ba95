"""The HTML report's charts, as Plotly figures built from the release report's dict (release-report.json).

Pure functions of that dict, so each can be tested without a release: which traces and shapes a figure
has, and where each threshold is drawn. Units on the charts: latency in milliseconds, rates in percent.

Thresholds come from the check's own expression (`p(95) < 300ms` parsed by verifiers.thresholds), or from
its threshold column when that is a plain value (`300ms`, `10% ± 2pp`); a check judged against the
baseline (`baseline rate + 1%`) is drawn against the baseline's measured value. Confidence bounds come
from the check's `bound` (`0/1890, interval [0%, 0.317%]`, `p99 candidate [69.7 ms, 310 ms], baseline
[59.3 ms, 299 ms]`).
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
_PLAIN_VALUE = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+)\s*(ms|s|%|/s)?\s*$")
_BAND = re.compile(r"^\s*([0-9]*\.?[0-9]+)%\s*±\s*([0-9]*\.?[0-9]+)\s*pp\s*$")
_INTERVAL = re.compile(r"(?:(?P<label>[A-Za-z][\w ]*?)\s+)?\[(?P<low>[^\],]+),\s*(?P<high>[^\]]+)\]")
_QUANTILE_ARMS = re.compile(r"p(?P<q>[0-9.]+)\s+candidate\s+\[(?P<cl>[^\],]+),\s*(?P<ch>[^\]]+)\],\s*"
                            r"baseline\s+\[(?P<bl>[^\],]+),\s*(?P<bh>[^\]]+)\]")
_BASELINE_RATE = re.compile(r"^baseline rate \+ ([0-9]*\.?[0-9]+)%")
_SUBJECT = re.compile(r"^(?P<endpoint>.*?) \((?P<who>.*)\)$")


# --- reading the report's display strings ----------------------------------------------------------------


def quantity(text: str) -> tuple[float, str | None] | None:
    """The first number in `text` in base units, with its unit: `43ms` -> (0.043, 'ms'), `0.5%` -> (0.005, '%')."""
    match = _QUANTITY.search(text.replace(",", ""))
    if match is None:
        return None
    number, unit = float(match[1]), match[2]
    return {"ms": number / 1000, "%": number / 100}.get(unit or "", number), unit


def kind_of_unit(unit: str | None) -> Kind | None:
    return {"ms": Kind.LATENCY, "s": Kind.LATENCY, "%": Kind.RATE, "/s": Kind.THROUGHPUT}.get(unit or "")


def expression_of(check: Mapping[str, str]) -> Threshold | None:
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
    bound: tuple[float, float] | None  # the confidence interval on the measured value, when the check has one
    hover: str


def check_mark(check: Mapping[str, str]) -> CheckMark | None:
    """How to draw a check, or None when its value or limit is not a number on a scale (a comparison)."""
    measured = quantity(check.get("value", ""))
    if measured is None:
        return None
    value, unit = measured
    threshold = expression_of(check)
    kind: Kind | None
    limits: tuple[float, ...]
    if threshold is not None and threshold.kind is not Kind.VALUE:
        kind, limits = threshold.kind, (threshold.limit,)
    else:
        kind, limits = kind_of_unit(unit), _plain_limits(check.get("threshold", ""))
    if kind is None or kind is Kind.COUNT or not limits:
        return None
    bound = rate_interval(check.get("bound", "")) if kind is Kind.RATE else None
    if bound is not None and threshold is not None and threshold.metric == "success_rate":
        bound = (1 - bound[1], 1 - bound[0])  # the bound is on the failures (verifiers/thresholds.py)
    label = f"{_SCOPE.sub('', check.get('check', ''))} · {check.get('subject', '')}"
    if len(label) > LABEL_LIMIT:  # a long Prometheus subject would squeeze the chart; the hover has it whole
        label = label[:LABEL_LIMIT - 1] + "…"
    hover = (f"{check.get('check', '')}<br>{check.get('subject', '')}<br>measured {check.get('value', '')}, "
             f"threshold {check.get('threshold', '')}<br>{check.get('verdict', '')}"
             + (f"<br>bound: {check['bound']}" if check.get("bound") else ""))
    return CheckMark(label, kind, check.get("verdict", ""), value, limits, bound, hover)


def _plain_limits(text: str) -> tuple[float, ...]:
    band = _BAND.match(text)
    if band is not None:
        centre, spread = float(band[1]) / 100, float(band[2]) / 100
        return (centre - spread, centre + spread)
    plain = _PLAIN_VALUE.match(text)
    if plain is None:
        return ()
    found = quantity(text)
    return (found[0],) if found is not None else ()


def rate_interval(bound: str) -> tuple[float, float] | None:
    """`0/1890, interval [0%, 0.317%]` -> (0.0, 0.00317); None for any other kind of bound."""
    match = _INTERVAL.search(bound)
    if match is None or not match["low"].strip().endswith("%"):
        return None
    low, high = quantity(match["low"]), quantity(match["high"])
    return (low[0], high[0]) if low is not None and high is not None else None


def quantile_intervals(bound: str) -> dict[str, tuple[float, float, float]]:
    """`p99 candidate [69.7 ms, 310 ms], baseline [59.3 ms, 299 ms]` -> {'candidate': (0.99, lo, hi), ...}."""
    match = _QUANTILE_ARMS.search(bound)
    if match is None:
        return {}
    q = float(match["q"]) / 100
    found: dict[str, tuple[float, float, float]] = {}
    for arm, low_key, high_key in (("candidate", "cl", "ch"), ("baseline", "bl", "bh")):
        low, high = quantity(match[low_key]), quantity(match[high_key])
        if low is not None and high is not None:
            found[arm] = (q, low[0], high[0])
    return found


def split_subject(subject: str) -> tuple[str, str]:
    """`/api/checkout (candidate v3)` -> ('/api/checkout', 'candidate v3')."""
    match = _SUBJECT.match(subject)
    return (match["endpoint"], match["who"]) if match else (subject, "")


# --- the phase timeline and the traffic split --------------------------------------------------------------


def short_name(nodeid: str) -> str:
    """`release::shift[10%]` -> `shift[10%]`; `suites/load/test_load.py::test_x[a]` -> `test_x[a]`."""
    return nodeid.rsplit("::", 1)[-1]


def timeline_figure(report: Mapping[str, Any]) -> go.Figure | None:
    """A Gantt-like chart: one bar per item from its start to its end, coloured by outcome, in run order."""
    items = report.get("timeline") or []
    if not items:
        return None
    rows = [f"{item['stage']} · {short_name(item['nodeid'])}" for item in items]
    figure = go.Figure()
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [(row, item) for row, item in zip(rows, items, strict=True) if item["outcome"] == outcome]
        if not chosen:
            continue
        figure.add_trace(go.Bar(
            name=outcome, orientation="h", marker_color=colour,
            y=[row for row, _ in chosen], base=[item["start_s"] for _, item in chosen],
            # a skipped item lasts milliseconds: a sliver of width keeps it visible
            x=[max(item["end_s"] - item["start_s"], 0.05) for _, item in chosen],
            customdata=[[item["nodeid"], item["start_s"], item["end_s"] - item["start_s"]] for _, item in chosen],
            hovertemplate=("%{customdata[0]}<br>from %{customdata[1]:.2f}s for %{customdata[2]:.2f}s<extra>"
                           + outcome + "</extra>")))
    figure.update_layout(
        title="Phases: every stage and action, start to end", barmode="overlay",
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
                     "array": [(m.bound[1] - m.value) * scale if m.bound else 0 for _, m in picked],
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


def _checks_of(load: Mapping[str, Any], report: Mapping[str, Any]) -> list[Mapping[str, str]]:
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


def _latency_thresholds(figure: go.Figure, checks: Sequence[Mapping[str, str]]) -> None:
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


def _quantile_bounds(figure: go.Figure, checks: Sequence[Mapping[str, str]], series: Sequence[Series]) -> None:
    """A comparison's confidence interval on a quantile of each arm, at the height of the arm's peak."""
    for check in checks:
        endpoint, _ = split_subject(check.get("subject", ""))
        for arm, (q, low, high) in quantile_intervals(check.get("bound", "")).items():
            one = next((s for s in series if s.name.startswith(arm)), None)
            if one is None or endpoint not in one.buckets:
                continue
            centre = histogram_quantile(one.buckets[endpoint], q) or (low + high) / 2
            centre = min(max(centre, low), high)
            peak = max(histogram_steps(one.buckets[endpoint])[1] or [1.0])
            figure.add_trace(go.Scatter(
                x=[centre * 1000], y=[peak * (0.55 if arm == "candidate" else 0.45)], mode="markers",
                marker={"color": one.colour, "symbol": "diamond", "size": 9},
                error_x={"type": "data", "symmetric": False, "array": [(high - centre) * 1000],
                         "arrayminus": [(centre - low) * 1000], "color": one.colour, "thickness": 2},
                name=f"{one.name} p{q * 100:g} bound ({endpoint})", legendgroup=f"{one.name} {endpoint}",
                visible=True if endpoint == ALL_ENDPOINTS else "legendonly",
                hovertemplate=(f"{one.name} {endpoint}: p{q * 100:g} in [{low * 1000:.1f} ms, {high * 1000:.1f} ms]"
                               f"<br>{check.get('verdict', '')}: {check.get('check', '')}<extra></extra>")),
                row=1, col=1)


def _error_rates(figure: go.Figure, checks: Sequence[Mapping[str, str]], series: Sequence[Series]) -> None:
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
                     "array": [100 * (b[1] - r) if b else 0 for b, r in zip(bounds, rates, strict=True)],
                     "arrayminus": [100 * max(0.0, r - b[0]) if b else 0 for b, r in zip(bounds, rates, strict=True)]},
            hovertemplate=f"{one.name} %{{x}}: %{{y:.2f}}% (%{{customdata[0]}} of %{{customdata[1]}})<extra></extra>"),
            row=1, col=2)
    limits = _rate_limits(checks, series, endpoints)
    if limits:
        figure.add_trace(go.Scatter(
            x=[e for e, _, _ in limits], y=[100 * limit for _, limit, _ in limits], mode="markers",
            name="error-rate threshold", text=[text for _, _, text in limits],
            marker={"symbol": "line-ew-open", "size": 46, "color": "#000000", "line": {"width": 3}},
            hovertemplate="%{text}: %{y:.2f}%<extra></extra>"), row=1, col=2)


def _rate_bound(checks: Sequence[Mapping[str, str]], endpoint: str, who: str) -> tuple[float, float] | None:
    for check in checks:
        threshold = expression_of(check)
        if threshold is None or threshold.metric != "error_rate":
            continue
        if split_subject(check.get("subject", "")) == (endpoint, who):
            return rate_interval(check.get("bound", ""))
    return None


def _rate_limits(checks: Sequence[Mapping[str, str]], series: Sequence[Series], endpoints: Sequence[str],
                 ) -> list[tuple[str, float, str]]:
    """(endpoint, highest error rate allowed, the check) for each endpoint a rate check judged."""
    limits: dict[tuple[str, float], str] = {}
    baseline = next((s for s in series if s.colour == BASELINE_COLOUR), None)
    for check in checks:
        endpoint, _ = split_subject(check.get("subject", ""))
        if endpoint not in endpoints:
            continue
        threshold = expression_of(check)
        if threshold is not None and threshold.metric in ("error_rate", "success_rate"):
            limit = threshold.limit if threshold.metric == "error_rate" else 1 - threshold.limit
            limits[(endpoint, round(limit, 9))] = threshold.text
            continue
        relative = _BASELINE_RATE.match(check.get("threshold", ""))
        if relative is not None and baseline is not None and baseline.requests.get(endpoint):
            base_rate = baseline.failures[endpoint] / baseline.requests[endpoint]
            limits[(endpoint, round(base_rate + float(relative[1]) / 100, 9))] = check.get("threshold", "")
    return [(endpoint, limit, text) for (endpoint, limit), text in limits.items()]
