"""SLOs from Prometheus: success rate, latency quantile, request count and raw PromQL, scoped to a workload.

Every query is an instant query at an explicit evaluation time over an explicit `[window]`, with an
explicit timeout; when the caller gives no time, "now" is taken once and the CheckOutcome's window says
so (`60s ending 2026-11-27T16:41:05Z (now)`). An empty result or NaN is NO DATA, never a pass; an
unreachable Prometheus or a rejected query is a MetricsError, never a silent NO DATA. The requests go
through `verifiers/prometheus_client.py`, whose typed errors (PrometheusUnreachable, PrometheusTimeout,
PrometheusRejected, PrometheusMalformed) are MetricsErrors.

Two arms over one window (a canary step): `requests_between`, `share_of_requests`,
`success_rate_vs_baseline` and `latency_vs_baseline` read the window [since, until] that starts at a given
moment (the step's start), not "the last N seconds" before an arbitrary moment. They count from the pods'
own counters (so direct requests to a pod count too, not only the service's): each pod's
requests between its first scrape at or after `since` and its last scrape at or before `until`, without
increase()'s extrapolation, so the counts are whole requests. `wait_scraped_after` makes the edges exact
for a known load: Prometheus has read every pod after a moment, so a load that starts after that wait and
ends before the next one is counted in full, and nothing sent before the window leaks into it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from releasegate.core.checks import ArmBound, CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.errors import ConfigError
from releasegate.core.types import Endpoint, MetricsScope, Slot, promql_string
from releasegate.core.waiting import poll_until
from releasegate.verifiers.canary import share_outcome
from releasegate.verifiers.prometheus_client import MetricsError as MetricsError  # defined there, public here
from releasegate.verifiers.prometheus_client import PrometheusClient
from releasegate.verifiers.stats import nearest_rank
from releasegate.verifiers.thresholds import (
    Kind,
    Threshold,
    format_count,
    format_fraction,
    format_seconds,
    parse_threshold,
)

DEFAULT_HANDLERS = "/api/.*"

When = datetime | float | None
"""An evaluation time: a datetime, epoch seconds, or None for "now" (which the window then says)."""
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Measurement:
    """One value read from Prometheus, with the request count behind it, ready for `.check(...)`.

    `measure` says what the value is: `success_rate`, `p(95)`, `requests` or `query` (raw PromQL).
    """

    measure: str
    value: float | None
    samples: int | None
    subject: str
    query: str
    window: str
    min_samples: int = 0
    no_data_reason: str | None = None
    record: RecordCheck = field(default=ignore_check, repr=False, compare=False)
    # A latency quantile's histogram over the window: (le, requests at or under it), ascending, +Inf last.
    # With it, `p(95) < 300ms` is decided by a bound on the share of requests slower than 300ms.
    buckets: tuple[tuple[float, int], ...] = ()

    def check(self, expression: str, *, min_samples: int | None = None) -> CheckOutcome:
        """Evaluate `success_rate >= 99%`, `error_rate < 1%`, `p(95) < 300ms`... on this measurement.

        The outcome is recorded; raises CheckFailed when it fails or has NO DATA (no series, NaN, or
        fewer requests than `min_samples`).
        """
        threshold = parse_threshold(expression)
        value = self._value_for(threshold)
        judgement = None
        if threshold.kind is Kind.LATENCY and threshold.bounded and self.buckets and self.buckets[-1][1]:
            judgement = threshold.judge_slow_share(self.buckets[-1][1], _slow_counts(self.buckets, threshold.limit),
                                                   lambda rank: _bucket_at_rank(self.buckets, rank))
        outcome = threshold.evaluate_value(
            value, samples=self.samples, subject=self.subject, source=self.query, window=self.window,
            min_samples=self.min_samples if min_samples is None else min_samples,
            no_data_reason=self.no_data_reason, judgement=judgement)
        self.record(outcome)
        require([outcome])
        return outcome

    def _value_for(self, threshold: Threshold) -> float | None:
        if self.measure == "query":
            return self.value
        if self.measure == "success_rate" and threshold.metric in ("success_rate", "error_rate"):
            if self.value is None or threshold.metric == "success_rate":
                return self.value
            return 1 - self.value
        same_quantile = (threshold.quantile is not None and self.measure.startswith("p(")
                         and math.isclose(threshold.quantile, _quantile_of(self.measure)))
        if threshold.kind is Kind.LATENCY and same_quantile:
            return self.value
        if self.measure == "requests" and threshold.metric == "requests":
            return self.value
        raise ConfigError(f"threshold {threshold.text!r} does not apply to a {self.measure} measurement; "
                          f"use {_EXAMPLE_FOR.get(self.measure, 'a threshold on the same measure')}")


_EXAMPLE_FOR = {"success_rate": '"success_rate >= 99%" or "error_rate < 1%"', "requests": '"requests >= 500"'}


def _slow_counts(buckets: tuple[tuple[float, int], ...], limit_s: float) -> tuple[int, int]:
    """Requests slower than the limit: (surely, at most), from cumulative buckets. Between the largest `le`
    at or under the limit and the smallest at or over it, the histogram cannot say which side they are on."""
    total = buckets[-1][1]
    at_or_under = max((n for le, n in buckets if le <= limit_s), default=0)
    at_or_over = min((n for le, n in buckets if le >= limit_s), default=total)
    return total - at_or_over, total - at_or_under


def _bucket_at_rank(buckets: tuple[tuple[float, int], ...], rank: int) -> float:
    """The upper edge of the bucket holding the rank-th fastest request (infinity for the last one)."""
    return next((le for le, n in buckets if n >= rank), math.inf)


def _bucket_floor_at_rank(buckets: tuple[tuple[float, int], ...], rank: int) -> float:
    """The lower edge of the bucket holding the rank-th fastest request (0 for the first bucket)."""
    floor = 0.0
    for le, n in buckets:
        if n >= rank:
            return floor
        floor = le
    return floor


def _cumulative_buckets(series: list[dict[str, Any]]) -> tuple[tuple[float, int], ...]:
    """(le, requests at or under it), ascending with +Inf last, from a `sum by (le)` instant vector."""
    return tuple(sorted((float(one["metric"]["le"]), round(float(one["value"][1])))
                        for one in series if "le" in one.get("metric", {})))


_COMPARISON_VERDICTS = {"pass": Verdict.PASS, "fail": Verdict.FAIL, "continue": Verdict.INCONCLUSIVE}
"""A sequential judgement's decision (verifiers.sequential.Decision, a StrEnum) as a check's verdict."""


def _quantile_of(measure: str) -> float:
    return float(measure[2:-1]) / 100


def promql_duration(seconds: float) -> str:
    """`60s`, or `1500ms` for a fractional window (PromQL durations are integers with a unit)."""
    if seconds <= 0:
        raise ConfigError(f"a query window must be positive, got {seconds}s")
    return f"{seconds:g}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


class Metrics:
    """Queries one app's Prometheus. Close it, or use it in a `with` block."""

    def __init__(self, scope: MetricsScope, *, timeout_s: float, record: RecordCheck = ignore_check,
                 candidate: Endpoint | None = None, baseline: Endpoint | None = None, min_samples: int = 0,
                 requests_metric: str = "http_requests_total",
                 latency_metric: str = "http_request_duration_seconds",
                 handler_label: str = "handler", status_label: str = "status") -> None:
        self.scope = scope
        self.timeout_s = timeout_s
        self.record = record
        self.candidate = candidate
        self.baseline = baseline
        self.min_samples = min_samples
        self.requests_metric = requests_metric
        self.latency_metric = latency_metric
        self.handler_label = handler_label
        self.status_label = status_label
        self._prometheus = PrometheusClient(scope.prometheus_url, timeout_s=timeout_s)  # checks timeout_s

    def close(self) -> None:
        self._prometheus.close()

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- built-in SLOs -----------------------------------------------------------------------------------

    def success_rate(self, *, slot: Slot | None = None, version: str | None = None, window_s: float,
                     handler_regex: str = DEFAULT_HANDLERS, at: When = None) -> Measurement:
        """Non-5xx answers / all answers of `handlers` in the window, from the requests counter."""
        requests_ = self._series(self.requests_metric, slot, version, handler_regex)
        ok = self._series(self.requests_metric, slot, version, handler_regex,
                          f'{self.status_label}!~"5.."')
        window = promql_duration(window_s)
        # `or vector(0)`: a candidate that answers only 5xx has no non-5xx series, and its rate is 0%,
        # not "no data". Without any request the denominator is empty and the result is NO DATA.
        promql = f"(sum(increase({ok}[{window}])) or vector(0)) / sum(increase({requests_}[{window}]))"
        return self._measure("success_rate", promql, slot, version, window_s, handler_regex, at)

    def latency_quantile(self, q: float, *, slot: Slot | None = None, version: str | None = None,
                         window_s: float, handler_regex: str = DEFAULT_HANDLERS,
                         at: When = None) -> Measurement:
        """Latency quantile q (0.95 for p95) by histogram_quantile over the handler histogram's buckets.

        Precision is that of the app's buckets: Prometheus interpolates linearly inside a bucket.
        """
        if not 0 < q < 1:
            raise ConfigError(f"latency quantile must be a fraction between 0 and 1 (0.95 for p95), got {q}")
        buckets = self._series(f"{self.latency_metric}_bucket", slot, version, handler_regex)
        promql = (f"histogram_quantile({q:g}, sum by (le) "
                  f"(rate({buckets}[{promql_duration(window_s)}])))")
        evaluated_at, window = self._window(window_s, at)  # "now" taken once, for both queries
        measured = replace(self._measure(f"p({q * 100:g})", promql, slot, version, window_s, handler_regex,
                                         evaluated_at), window=window)
        counts = self.instant(f"sum by (le) (increase({buckets}[{promql_duration(window_s)}]))", evaluated_at)
        return replace(measured, buckets=_cumulative_buckets(counts))

    def request_count(self, *, slot: Slot | None = None, version: str | None = None, window_s: float,
                      handler_regex: str = DEFAULT_HANDLERS, at: When = None) -> Measurement:
        """Requests answered in the window (increase of the requests counter, rounded)."""
        evaluated_at, window = self._window(window_s, at)
        promql = self._count_query(slot, version, window_s, handler_regex)
        count = self._value(promql, evaluated_at)
        samples = None if count is None or math.isnan(count) else round(count)
        return Measurement(
            measure="requests", value=None if samples is None else float(samples), samples=samples,
            subject=self._subject(slot, version, handler_regex), query=promql, window=window,
            min_samples=self.min_samples, record=self.record,
            no_data_reason=self._no_data(slot, version, handler_regex, window))

    # --- two arms over one window (a canary step) ----------------------------------------------------------

    def wait_scraped_after(self, moment: float, *, timeout_s: float, interval_s: float = 0.2) -> float:
        """Wait until Prometheus has scraped every pod of the app after `moment` (epoch seconds); returns the
        time it saw that. A MetricsError at the deadline.

        Before a load: the window's first readings are then taken before the load, so it is counted in full.
        After it: every request it sent is in the last readings. Costs up to one scrape interval.
        The pods' targets are the app's targets with a version label, one per pod; or, when one target
        scrapes every pod at once (the local cluster's, whose scope.pod_up_metric is not `up`), every target
        of the app, as that one carries only the app's label (the router's is one too, scraped as often).
        The targets API says which targets exist now; the `up` series would also hold, for five minutes,
        the pods of a previous run of a restarted Prometheus, never scraped again (see `active_targets`).
        Only a server without that API is asked through scope.pod_up_metric.
        """
        selector = f'{self.scope.selector()},{self.scope.version_label}!=""'
        promql = f"min(timestamp({self.scope.pod_up_metric}{{{selector}}}))"
        one_target_per_pod = self.scope.pod_up_metric == "up"
        targets_api = True

        def oldest_scrape() -> float | None:
            nonlocal targets_api
            targets = self._prometheus.active_targets() if targets_api else None
            if targets is None:
                targets_api = False
                return self._value(promql, time.time())
            ours = [t.last_scrape for t in targets
                    if t.labels.get(self.scope.app_label) == self.scope.app
                    and (t.labels.get(self.scope.version_label) or not one_target_per_pod)]
            return min(ours) if ours else None

        def scraped() -> float | None:
            now = time.time()
            oldest = oldest_scrape()
            return now if oldest is not None and oldest >= moment else None

        seen = poll_until(scraped, timeout_s=timeout_s, interval_s=interval_s)
        if seen is None:
            pods_label = f" and a {self.scope.version_label} label" if one_target_per_pod else ""
            how = promql if not targets_api else (f"the last scrape of every active target with "
                                                  f"{self.scope.app_label}={self.scope.app}{pods_label}")
            raise MetricsError(f"Prometheus at {self._prometheus.url} did not scrape every pod of "
                               f"{self.scope.app} within {timeout_s:g}s after {_stamp(moment)} ({how}); "
                               "is a target down, or the scrape interval longer than the wait?")
        return seen

    def requests_between(self, *, since: When, until: When = None, slot: Slot | None = None,
                         version: str | None = None, handler_regex: str = DEFAULT_HANDLERS) -> Measurement:
        """Requests answered in the window [since, until] (until None: now), from the pods' own counters.

        Each pod counts from its first scrape at or after `since` to its last scrape at or before `until`;
        a series that appears in the window counts in full. So requests in a pod's scrape interval around
        either edge fall out of (never into) the window, and a counter reset loses the requests before it.
        """
        start, end, window = self._between(since, until)
        promql = self._window_count_query(self.scope.selector(slot=slot, version=version), handler_regex,
                                          end - start)
        samples = self._count(promql, end)
        return Measurement(
            measure="requests", value=float(samples), samples=samples,
            subject=self._subject(slot, version, handler_regex), query=promql, window=window,
            min_samples=self.min_samples, record=self.record,
            no_data_reason=self._no_data(slot, version, handler_regex, window))

    def share_of_requests(self, expected_percent: float, *, since: When, until: When = None,
                          tolerance_pp: float = 2.0, min_samples: int = 100,
                          handler_regex: str = DEFAULT_HANDLERS) -> CheckOutcome:
        """The candidate's share of all the app's requests (every version's pods) in [since, until] is
        within `tolerance_pp` percentage points of `expected_percent` (the step's effective weight).

        The pods' series count every request a pod answered, including direct requests to the candidate or
        baseline endpoints (a smoke test, a side-by-side load): a window that holds such traffic measures it
        too, so a step's analysis must not send direct traffic before this check. Fewer than `min_samples`
        requests in all is NO DATA, never a pass. Recorded; raises CheckFailed unless it passes.
        """
        candidate = self._arm("candidate", self.candidate)
        start, end, window = self._between(since, until)
        duration = end - start
        candidate_query = self._window_count_query(self._arm_selector(candidate), handler_regex, duration)
        total_query = self._window_count_query(self.scope.selector(), handler_regex, duration)
        served, total = self._count(candidate_query, end), self._count(total_query, end)
        name = str(candidate.version or candidate.slot)
        check = f"prometheus share of {name} == {expected_percent:g}% ± {tolerance_pp:g}pp"
        subject = f"{handler_regex} (candidate {name} of app {self.scope.app}, all versions' pods)"
        source = f"{candidate_query} / {total_query}"
        outcome = share_outcome(name, served, total, expected_percent, tolerance_pp=tolerance_pp,
                                min_samples=min_samples, counted=f"requests of {self.scope.app} in Prometheus "
                                                                 f"over {window}",
                                check=check, subject=subject, source=source, window=window)
        self.record(outcome)
        require([outcome])
        return outcome

    def success_rate_vs_baseline(self, *, since: When, until: When = None, tolerance_pp: float = 0.5,
                                 alpha: float = 0.01, min_samples: int = 20,
                                 handler_regex: str = DEFAULT_HANDLERS) -> CheckOutcome:
        """The candidate's success rate (non-5xx answers) is not worse than the baseline's beyond
        `tolerance_pp` in the same window [since, until], from both arms' pods.

        The error counts are compared by the sequential count test (verifiers.compare.compare_error_rates,
        exact with zero baseline errors): FAIL on a decisive regression beyond the tolerance, PASS when the
        bounds show any regression is within it, else INCONCLUSIVE. Fewer than `min_samples` requests on
        either arm is NO DATA, never a pass. The pods' series count
        direct requests too (see share_of_requests). Recorded; raises CheckFailed unless it passes.
        """
        from releasegate.verifiers.compare import Tolerances, compare_error_rates  # scipy: only when comparing

        candidate = self._arm("candidate", self.candidate)
        baseline = self._arm("baseline", self.baseline)
        start, end, window = self._between(since, until)
        duration = end - start
        counts: list[int] = []
        queries: list[str] = []
        for arm in (candidate, baseline):
            selector = self._arm_selector(arm)
            for extra in ("", f',{self.status_label}=~"5.."'):
                queries.append(self._window_count_query(selector + extra, handler_regex, duration))
                counts.append(self._count(queries[-1], end))
        cand_total, cand_errors, base_total, base_errors = counts
        subject = (f"{handler_regex} (candidate {candidate.version or candidate.slot} vs baseline "
                   f"{baseline.version or baseline.slot}, Prometheus)")
        compared = compare_error_rates(cand_errors, cand_total, base_errors, base_total, subject=subject,
                                       tolerances=Tolerances(errors_abs=tolerance_pp / 100, alpha=alpha),
                                       min_samples=min_samples,
                                       source=f"errors {queries[1]} of {queries[0]}; errors {queries[3]} of "
                                              f"{queries[2]}", window=window)
        success = None if compared.value is None else 1 - compared.value
        # The comparison judged error rates; this check shows success rates, so its numbers turn over too.
        interval = None if compared.interval is None else (1 - compared.interval[1], 1 - compared.interval[0])
        outcome = CheckOutcome(
            check=f"success_rate vs baseline ± {tolerance_pp:g}pp", verdict=compared.verdict, value=success,
            display_value="no data" if success is None else format_fraction(success),
            threshold=f"baseline success rate - {tolerance_pp:g}pp (sequential count test, alpha {alpha:g})",
            subject=subject, source=compared.source, window=window, samples=cand_total, bound=compared.bound,
            interval=interval, limits=tuple(1 - limit for limit in compared.limits), message=compared.message)
        self.record(outcome)
        require([outcome])
        return outcome

    def latency_vs_baseline(self, q: float = 0.95, *, since: When, until: When = None,
                            tolerance_ratio: float = 0.25, tolerance_abs_s: float = 0.05, min_samples: int = 20,
                            alpha: float = 0.01, handler_regex: str = DEFAULT_HANDLERS) -> CheckOutcome:
        """The candidate's latency quantile q (p95 by default) in [since, until] is not above the baseline's
        in the same window by more than tolerance_ratio x baseline + tolerance_abs_s, decided on evidence.

        Each arm's requests come from its pods' histogram buckets counted over the window, and each arm's
        quantile is bounded by a time-uniform confidence sequence on its order statistics
        (verifiers.sequential.LatencyComparison: Howard & Ramdas, Bernoulli 2022). A request is known only to
        within its bucket, so a lower bound takes its bucket's lower edge and an upper bound the upper edge:
        the bounds stay valid, and coarse buckets only cost evidence. FAIL when the candidate's lower bound is
        above the baseline's upper bound x (1 + ratio) + abs; PASS when the candidate's upper bound is within
        the baseline's lower bound (at p96 for p95, p99.5 for p99) x (1 + ratio) + abs; else INCONCLUSIVE,
        never a pass. Fewer than `min_samples` requests on either arm is NO DATA. Recorded; raises
        CheckFailed unless it passes.
        """
        from releasegate.verifiers.compare import arm_interval, quantile_arms  # scipy: only when comparing
        from releasegate.verifiers.sequential import LatencyComparison

        if not 0 < q < 1:
            raise ConfigError(f"latency quantile must be a fraction between 0 and 1 (0.95 for p95), got {q}")
        candidate = self._arm("candidate", self.candidate)
        baseline = self._arm("baseline", self.baseline)
        start, end, window = self._between(since, until)
        duration = end - start
        histograms: list[tuple[tuple[float, int], ...]] = []
        queries: list[str] = []
        for arm in (candidate, baseline):
            queries.append(self._window_count_query(self._arm_selector(arm), handler_regex, duration,
                                                    metric=f"{self.latency_metric}_bucket", by=" by (le)"))
            histograms.append(_cumulative_buckets(self.instant(queries[-1], end)))
        cand_buckets, base_buckets = histograms
        cand_count, base_count = (buckets[-1][1] if buckets else 0 for buckets in histograms)
        measure = f"p({q * 100:g})"
        names = (candidate.version or candidate.slot, baseline.version or baseline.slot)
        subject = f"{handler_regex} (candidate {names[0]} vs baseline {names[1]}, Prometheus)"
        tolerance = f"x {1 + tolerance_ratio:g} + {format_seconds(tolerance_abs_s)}"
        counts = f"{format_count(cand_count)}/{format_count(base_count)} requests (candidate/baseline)"
        bound = ""
        interval: tuple[float, float] | None = None
        arms: tuple[ArmBound, ...] = ()
        if min(cand_count, base_count) < max(min_samples, 1):
            verdict, value, shown = Verdict.NO_DATA, None, "no data"
            message = (f"{measure} on {subject}: only {counts} over {window}, fewer than the minimum "
                       f"{format_count(min_samples)} on each side")
        else:
            judge = LatencyComparison(quantiles=(q,), tolerance_ratio=tolerance_ratio,
                                      tolerance_abs_s=tolerance_abs_s, alpha=alpha)
            judgement = judge.look(
                cand_count, lambda rank: _bucket_floor_at_rank(cand_buckets, rank),
                base_count, lambda rank: _bucket_floor_at_rank(base_buckets, rank),
                cand_upper_at_rank=lambda rank: _bucket_at_rank(cand_buckets, rank),
                base_upper_at_rank=lambda rank: _bucket_at_rank(base_buckets, rank))
            verdict = _COMPARISON_VERDICTS[judgement.decision]
            value = _bucket_at_rank(cand_buckets, nearest_rank(q, cand_count))
            shown = f"{measure} <= {format_seconds(value)}" if math.isfinite(value) else "above the last bucket"
            bound = judgement.statistic
            interval, arms = arm_interval(judgement, "candidate", q), quantile_arms(judgement)
            message = (f"{measure} on {subject}: {counts} over {window}, {judgement.reason} "
                       f"(buckets' edges, alpha {alpha:g}): {verdict.value.upper()}")
        outcome = CheckOutcome(
            check=f"{measure} vs baseline", verdict=verdict, value=value, display_value=shown,
            threshold=f"baseline {measure} {tolerance}", subject=subject, source=" vs ".join(queries),
            window=window, samples=cand_count, bound=bound, interval=interval, arms=arms, message=message)
        self.record(outcome)
        require([outcome])
        return outcome

    # --- raw PromQL --------------------------------------------------------------------------------------

    def query(self, promql_template: str, *, window_s: float, slot: Slot | None = None,
              version: str | None = None, samples_query: str | None = None, handler_regex: str | None = None,
              at: When = None, **values: str) -> Measurement:
        """A raw PromQL query returning one value, with `{{ selector }}` (app + slot/version given here),
        `{{ candidate }}`, `{{ baseline }}`, `{{ window }}` and your own `{{ name }}` from `values` filled in.

        The subject is what the template is scoped to (`candidate v3`, `version v9`, or `custom query`).
        The sample count is only known when you say what it is: `samples_query`, a template of the same
        kind giving the request count behind the value, or `handler_regex`, the requests of the query's
        scope on those handlers; else it is unknown (and a `min_samples` above 0 makes the check NO DATA).
        A query returning several series is a ConfigError: aggregate it.
        """
        promql = self.render(promql_template, window_s=window_s, slot=slot, version=version, **values)
        scopes = self._scopes_of(promql_template, slot, version)
        subject = " and ".join(self._scope_name(s, v) for s, v in scopes) or "custom query"
        evaluated_at, window = self._window(window_s, at)
        value = self._value(promql, evaluated_at)
        count_query: str | None = None
        if samples_query is not None:
            used = set(_PLACEHOLDER.findall(samples_query))
            count_query = self.render(samples_query, window_s=window_s, slot=slot, version=version,
                                      **{name: v for name, v in values.items() if name in used})
        elif handler_regex is not None:
            if len(scopes) > 1:
                raise ConfigError(f"PromQL template {promql_template!r} covers {subject}: handler_regex cannot "
                                  "say whose requests are behind the value; pass samples_query=... instead")
            # One scope, or none (the whole app).
            count_query = self._count_query(*(scopes[0] if scopes else (None, None)), window_s, handler_regex)
        samples: int | None = None
        if count_query is not None:
            count = self._value(count_query, evaluated_at)
            samples = 0 if count is None or math.isnan(count) else round(count)
        return Measurement(
            measure="query", value=value, samples=samples, subject=subject, query=promql, window=window,
            min_samples=self.min_samples, record=self.record,
            no_data_reason=self._query_no_data(promql, value, samples, subject, window))

    def render(self, promql_template: str, *, window_s: float, slot: Slot | None = None,
               version: str | None = None, **values: str) -> str:
        """The template with its placeholders filled; an unknown or unused name is a ConfigError."""
        known: dict[str, Callable[[], str]] = {
            "selector": lambda: self.scope.selector(slot=slot, version=version),
            "candidate": lambda: self._role_selector("candidate", self.candidate),
            "baseline": lambda: self._role_selector("baseline", self.baseline),
            "window": lambda: promql_duration(window_s),
        }
        for name, value in values.items():
            known[name] = _constant(value)
        used = set(_PLACEHOLDER.findall(promql_template))
        unknown = sorted(used - set(known))
        if unknown:
            raise ConfigError(f"PromQL template {promql_template!r}: unknown placeholder "
                              f"{{{{ {unknown[0]} }}}}; known: {', '.join(sorted(known))} "
                              "(pass your own as keyword arguments)")
        unused = sorted(set(values) - used)
        if unused:
            raise ConfigError(f"PromQL template {promql_template!r} has no {{{{ {unused[0]} }}}} placeholder "
                              "for the value given; check its spelling")
        return _PLACEHOLDER.sub(lambda m: known[m.group(1)](), promql_template)

    def targets_up(self, *, slot: Slot | None = None, version: str | None = None) -> int:
        """How many pods of this scope Prometheus scraped successfully at its last scrape (scope.pod_up_metric)."""
        return self._prometheus.targets_up(self.scope.selector(slot=slot, version=version),
                                           up_metric=self.scope.pod_up_metric)

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        """The raw result vector of an instant query evaluated at `at` (epoch seconds).

        Each series is `{"metric": {labels}, "value": (time, "value")}`; a scalar result is one series.
        """
        return cast(list[dict[str, Any]], self._prometheus.query(promql, at=at))

    # --- internals ---------------------------------------------------------------------------------------

    def _series(self, metric: str, slot: Slot | None, version: str | None, handler_regex: str,
                *extra: str) -> str:
        matchers = [self.scope.selector(slot=slot, version=version),
                    f'{self.handler_label}=~"{_escape(handler_regex)}"', *extra]
        return f"{metric}{{{','.join(matchers)}}}"

    def _count_query(self, slot: Slot | None, version: str | None, window_s: float,
                     handler_regex: str) -> str:
        series = self._series(self.requests_metric, slot, version, handler_regex)
        return f"sum(increase({series}[{promql_duration(window_s)}]))"

    def _measure(self, measure: str, promql: str, slot: Slot | None, version: str | None, window_s: float,
                 handler_regex: str, at: When) -> Measurement:
        evaluated_at, window = self._window(window_s, at)
        value = self._value(promql, evaluated_at)
        count = self._value(self._count_query(slot, version, window_s, handler_regex), evaluated_at)
        samples = 0 if count is None or math.isnan(count) else round(count)
        return Measurement(
            measure=measure, value=value, samples=samples,
            subject=self._subject(slot, version, handler_regex), query=promql, window=window,
            min_samples=self.min_samples,
            no_data_reason=self._no_data(slot, version, handler_regex, window), record=self.record)

    def _value(self, promql: str, at: float) -> float | None:
        result = self.instant(promql, at)
        if not result:
            return None
        if len(result) > 1:
            labels = ", ".join(json.dumps(r.get("metric", {})) for r in result[:3])
            raise ConfigError(f"PromQL {promql!r} returned {len(result)} series ({labels}...); a check needs "
                              "one value: aggregate it, e.g. sum(...) or sum by () (...)")
        return float(result[0]["value"][1])

    def _window_count_query(self, matchers: str, handler_regex: str, duration_s: float,
                            metric: str | None = None, by: str = "") -> str:
        """Requests of `matchers` in the window of `duration_s` ending at the evaluation time, per series:
        the counter now minus its first reading in the window (min_over_time of a counter without reset);
        a series that had no reading before the window (it appeared in it) counts in full.

        "Counts in full" takes the series' last reading in the window (max_over_time), not its instant
        value: a series with no reading in the window, such as a pod that a restarted Prometheus remembers
        from its previous run (no staleness marker was written for it), stays visible to instant queries for
        five minutes, and would otherwise count its whole past as requests of this window."""
        series = (f'{metric or self.requests_metric}'
                  f'{{{matchers},{self.handler_label}=~"{_escape(handler_regex)}"}}')
        window = promql_duration(duration_s)
        return (f"sum{by}((({series} - min_over_time({series}[{window}])) and {series} offset {window}) "
                f"or max_over_time({series}[{window}]))")

    def _count(self, promql: str, at: float) -> int:
        value = self._value(promql, at)
        return 0 if value is None or math.isnan(value) else round(value)

    def _between(self, since: When, until: When) -> tuple[float, float, str]:
        """The window's start and end as epoch seconds, and the window as a reader sees it."""
        if since is None:
            raise ConfigError("a window between two moments needs its start (since=...), e.g. the step's start")
        start = _epoch(since)
        end, now = (time.time(), True) if until is None else (_epoch(until), False)
        if end <= start:
            raise ConfigError(f"the window ends ({_stamp(end)}) before it starts ({_stamp(start)})")
        return start, end, (f"{end - start:.1f}s from {_stamp(start)} to {_stamp(end)}"
                            + (" (now)" if now else ""))

    @staticmethod
    def _arm(role: str, endpoint: Endpoint | None) -> Endpoint:
        if endpoint is None or (endpoint.slot is None and endpoint.version is None):
            raise ConfigError(f"comparing arms needs the {role}: create Metrics(..., {role}=endpoint) with an "
                              "endpoint that has a version or slot")
        return endpoint

    def _arm_selector(self, endpoint: Endpoint) -> str:
        """By version when known: the share is by version, whatever the slot is called on a target."""
        if endpoint.version is not None:
            return self.scope.selector(version=endpoint.version)
        return self.scope.selector(slot=endpoint.slot)

    def _window(self, window_s: float, at: When) -> tuple[float, str]:
        """The evaluation time as epoch seconds, and the window as a reader sees it."""
        now = at is None
        evaluated_at = time.time() if at is None else at.timestamp() if isinstance(at, datetime) else float(at)
        stamp = datetime.fromtimestamp(evaluated_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return evaluated_at, f"{promql_duration(window_s)} ending {stamp}" + (" (now)" if now else "")

    def _subject(self, slot: Slot | None, version: str | None, handler_regex: str) -> str:
        return f"{handler_regex} ({self._scope_name(slot, version)})"

    def _scope_name(self, slot: Slot | None, version: str | None) -> str:
        """`candidate v3`, `baseline v2`, `version v9`, `slot green` or `app demo`."""
        if slot is not None or version is not None:
            for role, endpoint in (("candidate", self.candidate), ("baseline", self.baseline)):
                if endpoint is not None and (slot, version) in ((endpoint.slot, endpoint.version),
                                                                (None, endpoint.version), (endpoint.slot, None)):
                    return f"{role} {endpoint.version or endpoint.slot}"
        parts = (f"version {version}" if version else "", f"slot {slot}" if slot else "")
        return ", ".join(p for p in parts if p) or f"app {self.scope.app}"

    def _scopes_of(self, template: str, slot: Slot | None,
                   version: str | None) -> list[tuple[Slot | None, str | None]]:
        """The (slot, version) scopes a template's selectors stand for, in the order they appear."""
        scopes: list[tuple[Slot | None, str | None]] = []
        for name in _PLACEHOLDER.findall(template):
            endpoint = {"candidate": self.candidate, "baseline": self.baseline}.get(name)
            scope = (slot, version) if name == "selector" else \
                (endpoint.slot, endpoint.version) if endpoint is not None else None
            if scope is not None and scope not in scopes:
                scopes.append(scope)
        return scopes

    def _query_no_data(self, promql: str, value: float | None, samples: int | None, subject: str,
                       window: str) -> str:
        """Why a raw query has no value, and the likely fix, in one line."""
        where = f"on {subject} over {window}"
        if value is not None:  # NaN
            return (f"the query returned NaN {where} (a division 0/0 or a quantile of nothing: no requests "
                    "in the window?)")
        if samples == 0:
            return f"no requests {where}; the query returned no series"
        if re.search(r"\bor\s+vector\s*\(", promql):
            return (f"Prometheus at {self._prometheus.url} returned no series {where} although the query "
                    "has `or vector(...)`: the other side (the denominator) has no series, so nothing was "
                    "counted in the window")
        return (f"Prometheus at {self._prometheus.url} returned no series {where}: a rate over errors "
                "that never happened has no series; append `or vector(0)` to the numerator, "
                "`(sum(rate(errors[1m])) or vector(0)) / sum(rate(requests[1m]))`, so that no errors count as 0")

    def _role_selector(self, role: str, endpoint: Endpoint | None) -> str:
        if endpoint is None or (endpoint.slot is None and endpoint.version is None):
            raise ConfigError(f"the PromQL template uses {{{{ {role} }}}} but Metrics was created without a "
                              f"{role} endpoint with a slot or version; pass Metrics(..., {role}=endpoint)")
        return self.scope.selector(slot=endpoint.slot, version=endpoint.version)

    def _no_data(self, slot: Slot | None, version: str | None, handler_regex: str, window: str) -> str:
        return (f"Prometheus at {self._prometheus.url} returned no series (or NaN) for "
                f"{self._subject(slot, version, handler_regex)} over {window}")


def _epoch(moment: datetime | float) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"


def _constant(value: str) -> Callable[[], str]:
    return lambda: value


def _escape(regex: str) -> str:
    """A handler regex as the body of a PromQL double-quoted string; one that is no regex is a ConfigError."""
    try:
        re.compile(regex)  # Python's syntax is not RE2's, but what neither accepts fails here, with its reason
    except re.error as exc:
        raise ConfigError(f"handler_regex {regex!r} is not a regular expression ({exc}); fix it, "
                          "e.g. /api/.*") from None
    return promql_string(regex)
