"""Watch after the switch: the new version's SLOs, looked at every few seconds while the old one is still warm.

After a blue-green switch (or a canary's promotion) the previous version stays warm for `release.keep_warm_s`
so that a rollback is one traffic move. During `release.bake_s` of that delay the release controller looks
at the new version's counters in Prometheus, counted from the switch, and switches back at the first
*decisive* breach of one of `release.watch_slos`:

- `error_rate < X` (or `success_rate >= 1 - X`): failures are 5xx answers among all answers;
- `p(N) < L`: "slow" requests are those slower than L, read from the latency histogram at the smallest
  bucket bound `le` >= L (bucket granularity rounds the threshold up: with buckets 0.25 s and 0.5 s,
  `p(95) < 300ms` is watched as "at most 5% slower than 500ms"), among all requests in the histogram.

Decisive means evidence, not a blip: a breach is a look where the *lower* bound of the time-uniform
confidence sequence on the bad share (`verifiers.sequential.rate_interval`) is above the SLO's limit, so
looking every second does not inflate false alarms (Howard, Ramdas, McAuliffe, Sekhon, Ann. Statist. 2021;
Lindon, Sanden, Shirikian, KDD 2022). The watch's alpha is shared by its SLOs (a union bound): the chance
that a healthy version is switched back during the whole watch is at most alpha.

The outcome records what the watch saw, never more: `breach`; `healthy` (at the last look every SLO's
*upper* bound was inside its limit); `undecided` (requests seen, no decision either way); `no-data` (no
request since the switch, or Prometheus never answered): that is not a breach, and not evidence of health.

No pytest here, and time is injected (`clock`, `sleep`): the controller's process runs the watch and acts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from releasegate.core.checks import CheckFailed, CheckOutcome, Verdict
from releasegate.core.errors import ConfigError
from releasegate.core.progress import CheckProgress, CheckState, ProgressCallback, ProgressSnapshot
from releasegate.core.types import MetricsScope
from releasegate.core.waiting import poll_until
from releasegate.verifiers.metrics import DEFAULT_HANDLERS, Metrics
from releasegate.verifiers.prometheus_client import MetricsError
from releasegate.verifiers.sequential import Interval, rate_interval
from releasegate.verifiers.thresholds import (
    Kind,
    Threshold,
    format_count,
    format_fraction,
    format_seconds,
    parse_threshold,
)

ABORT_POLL_S = 0.2
"""How often the wait between two looks asks whether the release was aborted (as the keep-warm wait did)."""


# --- what to watch ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedSlo:
    """One SLO as a limit on the share of bad requests: failures, or requests slower than `slower_than_s`."""

    threshold: Threshold
    limit: float  # the largest bad share the SLO allows: 0.01 for `error_rate < 1%`, 0.05 for `p(95) < ...`
    slower_than_s: float | None = None  # None: bad = failed (5xx); else bad = slower than this latency

    @property
    def text(self) -> str:
        return self.threshold.text


def parse_watch_slos(texts: Sequence[str], *, source: str = "release.watch_slos") -> tuple[WatchedSlo, ...]:
    """The SLOs a watch can decide on, or a ConfigError (exit 4) naming the entry and what can be watched."""
    slos = []
    for text in texts:
        try:
            threshold = parse_threshold(text)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        upper = threshold.op in ("<", "<=")
        if threshold.metric == "error_rate" and upper:
            slos.append(WatchedSlo(threshold, limit=threshold.limit))
        elif threshold.metric == "success_rate" and not upper and threshold.op != "==":
            slos.append(WatchedSlo(threshold, limit=1.0 - threshold.limit))
        elif threshold.kind is Kind.LATENCY and threshold.quantile is not None and upper:
            if threshold.quantile >= 1:
                raise ConfigError(f"{source}: {text!r} cannot be watched: p(100) is the maximum, which one slow "
                                  "request breaches; use a quantile such as p(99.9)")
            slos.append(WatchedSlo(threshold, limit=1.0 - threshold.quantile, slower_than_s=threshold.limit))
        else:
            raise ConfigError(f"{source}: {text!r} cannot be watched: the watch bounds shares of requests, so it "
                              'takes "error_rate < 1%", "success_rate >= 99%" or "p(95) < 300ms" (a quantile or '
                              "med with < or <=)")
    names = [slo.text for slo in slos]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: an SLO is listed twice in {names}")
    return tuple(slos)


# --- what a look sees -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchCounts:
    """The new version's counters since the switch, as one look reads them."""

    requests: int  # answered requests
    failures: int  # of them 5xx
    timed: int = 0  # requests in the latency histogram
    slower_than: Mapping[float, int] = field(default_factory=dict)  # bucket bound le -> timed requests above it


class CountSource(Protocol):
    def read(self) -> WatchCounts:
        """The counts since the switch, now. MetricsError when Prometheus cannot answer."""
        ...

    def describe(self) -> str:
        """What is counted and where (the queries), for the reports."""
        ...


@dataclass(frozen=True)
class SloLook:
    """One SLO at one look: bad events among trials, and the bound on the bad share."""

    slo: WatchedSlo
    events: int
    trials: int
    interval: Interval
    bucket_s: float | None = None  # the histogram bound the latency SLO was read at (>= its threshold)
    missing: str | None = None  # why this SLO could not be evaluated (no bucket at or above the threshold)

    @property
    def breached(self) -> bool:
        return self.missing is None and self.trials > 0 and self.interval.lower > self.slo.limit

    @property
    def healthy(self) -> bool:
        return self.missing is None and self.trials > 0 and self.interval.upper < self.slo.limit

    def describe(self) -> str:
        """`errors 52/1,043 (5%), bound [3.4%, 7.1%] vs limit 1%`."""
        if self.missing is not None:
            return f"{self.slo.text}: {self.missing}"
        if self.trials == 0:
            return f"{self.slo.text}: no requests"
        what = "errors" if self.slo.slower_than_s is None else f"slower than {_seconds(self.bucket_s)}"
        return (f"{self.slo.text}: {what} {format_count(self.events)}/{format_count(self.trials)} "
                f"({format_fraction(self.events / self.trials)}), bound [{format_fraction(self.interval.lower)}, "
                f"{format_fraction(self.interval.upper)}] vs limit {format_fraction(self.slo.limit)}")


def evaluate(slos: Sequence[WatchedSlo], counts: WatchCounts, *, alpha: float) -> list[SloLook]:
    """Every SLO's bound at one look. Each SLO gets alpha / len(slos): the watch's alpha holds for all of them."""
    share = alpha / max(len(slos), 1)
    looks = []
    for slo in slos:
        if slo.slower_than_s is None:
            events, trials, bucket, missing = counts.failures, counts.requests, None, None
        else:
            # Bucket granularity rounds the threshold up: the share slower than L is read at the smallest
            # bucket bound le >= L, which can only make the watch more lenient, never switch back early.
            bounds = sorted(le for le in counts.slower_than if le >= slo.slower_than_s - 1e-12 and math.isfinite(le))
            bucket = bounds[0] if bounds else None
            events = counts.slower_than[bucket] if bucket is not None else 0
            trials = counts.timed
            missing = None if bucket is not None or trials == 0 else (
                f"the latency histogram has no bucket at or above {_seconds(slo.slower_than_s)}")
        events = min(events, trials)  # two counters read a scrape apart may disagree by a request or two
        looks.append(SloLook(slo, events, trials, rate_interval(events, trials, alpha=share), bucket, missing))
    return looks


# --- the watch --------------------------------------------------------------------------------------------


class WatchStatus(StrEnum):
    BREACH = "breach"
    HEALTHY = "healthy"  # evidence: every SLO's upper bound inside its limit at the last look
    UNDECIDED = "undecided"  # requests seen, but no decision either way
    NO_DATA = "no-data"  # no request since the switch, or Prometheus never answered
    ABORTED = "aborted"


@dataclass(frozen=True)
class WatchOutcome:
    status: WatchStatus
    looks: int  # looks that read counts (failed reads not included)
    failed_looks: int
    duration_s: float  # from the watch's start to its end (the breach's look, the abort, or the deadline)
    last: tuple[SloLook, ...]  # every SLO at the last look that read counts (at the breach: that look)
    requests: int  # requests seen since the switch at that look
    breach: SloLook | None = None
    breach_at: float | None = None  # the clock's time when the breaching look had read its counts
    aborted: str | None = None
    last_error: str | None = None  # the last failed read (Prometheus unreachable...)

    def summary(self) -> str:
        """One line: what the watch saw and what it concluded."""
        seen = (f"{self.looks} looks over {self.duration_s:.1f}s, {format_count(self.requests)} requests since "
                "the switch")
        failed = f", {self.failed_looks} looks failed ({self.last_error})" if self.failed_looks else ""
        if self.status is WatchStatus.BREACH and self.breach is not None:
            return f"breach of {self.breach.describe()} at look {self.looks} ({seen}{failed})"
        if self.status is WatchStatus.ABORTED:
            return f"aborted: {self.aborted} ({seen}{failed})"
        if self.status is WatchStatus.NO_DATA:
            why = "no request since the switch" if self.looks else "no look could read Prometheus"
            return f"no data: {why}; not evidence of health ({seen}{failed})"
        verdicts = "; ".join(look.describe() for look in self.last)
        if self.status is WatchStatus.HEALTHY:
            return f"healthy: every upper bound inside its limit ({seen}{failed}): {verdicts}"
        return f"no breach, undecided: not enough requests to show health ({seen}{failed}): {verdicts}"

    def properties(self, prefix: str = "release.finalize.watch") -> list[tuple[str, str]]:
        properties = [(f"{prefix}.outcome", self.status.value), (f"{prefix}.looks", str(self.looks)),
                      (f"{prefix}.requests", str(self.requests)), (f"{prefix}.watched_s", f"{self.duration_s:.1f}")]
        if self.failed_looks:
            properties += [(f"{prefix}.failed_looks", str(self.failed_looks)),
                           (f"{prefix}.last_error", str(self.last_error))]
        if self.breach is not None:
            properties.append((f"{prefix}.breach", self.breach.describe()))
        properties += [(f"{prefix}.slo.{look.slo.text}", look.describe()) for look in self.last]
        properties.append((f"{prefix}.summary", self.summary()))
        return properties

    def breach_outcome(self, *, subject: str, source: str, window: str) -> CheckOutcome:
        """The breach as a failed check, in one line; only with a breach."""
        assert self.breach is not None
        look = self.breach
        what = "errors" if look.slo.slower_than_s is None else f"requests slower than {_seconds(look.bucket_s)}"
        return CheckOutcome(
            check=look.slo.text, verdict=Verdict.FAIL, value=look.events / look.trials,
            display_value=format_fraction(look.events / look.trials), threshold=format_fraction(look.slo.limit),
            subject=subject, source=source, window=window, samples=look.trials,
            message=f"{look.slo.text} breached by {subject}: {what} {format_count(look.events)}/"
                    f"{format_count(look.trials)} ({format_fraction(look.events / look.trials)}), lower bound "
                    f"{format_fraction(look.interval.lower)} > {format_fraction(look.slo.limit)} at look {self.looks}, "
                    f"{self.duration_s:.1f}s into the watch",
            bound=f"lower bound {format_fraction(look.interval.lower)}", looks=self.looks,
            decided_after_s=self.duration_s, interval=(look.interval.lower, look.interval.upper),
            limits=(look.slo.limit,))


def watch(source: CountSource, slos: Sequence[WatchedSlo], *, duration_s: float, interval_s: float, alpha: float,
          aborted: Callable[[], str | None] = lambda: None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep, on_progress: ProgressCallback | None = None) -> WatchOutcome:
    """Look every `interval_s` for `duration_s` (once more at the end); stop at the first decisive breach or
    when `aborted()` gives a reason. A look whose read fails (MetricsError) is counted, never a breach.
    `on_progress` gets a snapshot after every look that read counts (core.progress)."""
    started = clock()
    deadline = started + duration_s
    looks = failed = 0
    last: list[SloLook] = []
    requests = 0
    last_error: str | None = None

    def outcome(status: WatchStatus, *, breach: SloLook | None = None, reason: str | None = None) -> WatchOutcome:
        now = clock()
        return WatchOutcome(status=status, looks=looks, failed_looks=failed, duration_s=now - started,
                            last=tuple(last), requests=requests, breach=breach,
                            breach_at=now if breach is not None else None, aborted=reason, last_error=last_error)

    while True:
        try:
            counts = source.read()
        except MetricsError as exc:
            failed, last_error = failed + 1, str(getattr(exc, "reason", exc))
        else:
            looks += 1
            requests = counts.requests
            last = evaluate(slos, counts, alpha=alpha)
            breached = next((look for look in last if look.breached), None)
            if on_progress is not None:
                on_progress(watch_snapshot(last, counts, elapsed_s=clock() - started, duration_s=duration_s))
            if breached is not None:
                return outcome(WatchStatus.BREACH, breach=breached)
        left = deadline - clock()
        if left <= 0:
            break
        reason = poll_until(aborted, timeout_s=min(interval_s, left), interval_s=ABORT_POLL_S, clock=clock,
                            sleep=sleep)
        if reason is not None:
            return outcome(WatchStatus.ABORTED, reason=reason)
    if not looks or requests == 0:
        return outcome(WatchStatus.NO_DATA)
    if all(look.healthy for look in last):
        return outcome(WatchStatus.HEALTHY)
    return outcome(WatchStatus.UNDECIDED)


def watch_snapshot(looks: Sequence[SloLook], counts: WatchCounts, *, elapsed_s: float,
                   duration_s: float) -> ProgressSnapshot:
    """One look of the watch for the live line: requests since the switch, and each SLO's state (a breach
    fails, every upper bound inside passes; no latency histogram or no request is undecided)."""
    checks = tuple(CheckProgress(look.slo.text, CheckState.FAIL if look.breached else CheckState.PASS
                                 if look.healthy else CheckState.UNDECIDED, look.trials) for look in looks)
    return ProgressSnapshot(activity="watch", elapsed_s=elapsed_s, total_s=duration_s, requests=counts.requests,
                            failures=counts.failures, checks=checks)


class WatchBreach(CheckFailed):
    """A decisive breach after the switch: a failed check (exit 1, rolled back), raised by the controller once
    traffic is back on the old version. An AssertionError like every failed check, so the JUnit message and
    the release's reason are its own sentence, without an exception type in front. `properties` are the
    watch's JUnit properties (looks, requests, breach, time_to_switch_back_s) for the finalize testcase."""

    def __init__(self, outcomes: Sequence[CheckOutcome], properties: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(outcomes)
        self.properties = list(properties)


# --- the counts, from Prometheus ---------------------------------------------------------------------------


class PrometheusCounts:
    """The new version's requests, 5xx answers and latency buckets since `since` (epoch seconds), from its
    pods' own counters (the window counting of `verifiers.metrics`: each pod from its first scrape at or
    after `since`, so nothing sent before the switch, such as the verification's direct requests to the
    candidate, leaks in)."""

    def __init__(self, metrics: Metrics, *, version: str, since: float, handler_regex: str = DEFAULT_HANDLERS,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.version = version
        self.since = since
        self.handler_regex = handler_regex
        self._wall_clock = wall_clock

    def _query(self, matchers: str, duration_s: float, *, metric: str | None = None, by: str = "") -> str:
        # One window-counting query for all three counts: the same one the canary comparisons use.
        return self.metrics._window_count_query(matchers, self.handler_regex, duration_s, metric=metric, by=by)

    def _queries(self, duration_s: float) -> tuple[str, str, str]:
        selector = self.metrics.scope.selector(version=self.version)
        failed = f'{selector},{self.metrics.status_label}=~"5.."'
        buckets = f"{self.metrics.latency_metric}_bucket"
        return (self._query(selector, duration_s), self._query(failed, duration_s),
                self._query(selector, duration_s, metric=buckets, by=" by (le)"))

    def read(self) -> WatchCounts:
        now = self._wall_clock()
        duration = max(now - self.since, 0.001)
        requests_query, failures_query, buckets_query = self._queries(duration)
        requests = self.metrics._count(requests_query, now)
        failures = self.metrics._count(failures_query, now)
        by_le: dict[float, int] = {}
        for series in self.metrics.instant(buckets_query, now):
            value = float(series["value"][1])
            if not math.isnan(value):
                by_le[float(series["metric"].get("le", "nan"))] = round(value)
        timed = by_le.pop(math.inf, 0)
        slower = {le: max(timed - count, 0) for le, count in by_le.items() if not math.isnan(le)}
        return WatchCounts(requests=requests, failures=failures, timed=timed, slower_than=slower)

    def describe(self) -> str:
        requests_query, failures_query, buckets_query = self._queries(60.0)
        return (f"since {datetime.fromtimestamp(self.since, UTC):%Y-%m-%dT%H:%M:%SZ}: requests {requests_query}; "
                f"5xx {failures_query}; latency buckets {buckets_query} (window [60s] shown: it grows with "
                "each look)")


def prometheus_counts(scope: MetricsScope, *, timeout_s: float, version: str, since: float) -> PrometheusCounts:
    """A CountSource on the app's Prometheus (close it with `.metrics.close()`)."""
    return PrometheusCounts(Metrics(scope, timeout_s=timeout_s), version=version, since=since)


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_seconds(value)
