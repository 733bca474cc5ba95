"""Candidate vs baseline on the same window, sequentially: errors by a test on two counts, latency by
confidence sequences on quantiles, each with an effect-size tolerance (verifiers.sequential).

A comparison FAILS on a decisive regression beyond its tolerance, PASSES when its bounds show that any
regression is within the tolerance, and is otherwise INCONCLUSIVE: never a pass for want of a detected
failure. The tests are anytime-valid, so a side-by-side load is judged every second and stops at the first
decisive look (`run_side_by_side`); a single look at the end of a window (`compare_error_rates`,
`compare_latency`, or `compare_loads` on two finished runs) is just as valid.

Comparisons go endpoint by endpoint (each with enough traffic) and over all endpoints: a different request
mix is not a regression, and a regression on a quarter of the traffic does not hide in the average.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from releasegate.core.checks import ArmBound, CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.progress import ProgressCallback
from releasegate.core.types import Endpoint
from releasegate.verifiers.live_progress import comparison_snapshot
from releasegate.verifiers.load import (
    LOOK_INTERVAL_S,
    NEW_COUNTS_POLL_S,
    LoadProcess,
    LoadProfile,
    LoadResult,
    busy_endpoints,
    quiet_endpoints,
)
from releasegate.verifiers.sequential import Decision, ErrorComparison, Judgement, LatencyComparison
from releasegate.verifiers.stats import Stats
from releasegate.verifiers.thresholds import DEFAULT_ALPHA, format_count, format_fraction, format_seconds

DEFAULT_LATENCY_TOLERANCE: Mapping[float, float] = {0.5: 0.10, 0.95: 0.25, 0.99: 0.50}
"""How much slower (relative) a candidate may be at each compared quantile before it counts as worse. Wider
in the tail: a p99 bound needs many requests to narrow, and tails are noisy on shared machines."""

DEFAULT_LATENCY_TOLERANCE_ABS_S = 0.005
"""...or this much (absolute): a millisecond on a 2 ms endpoint is noise, not a regression."""

DEFAULT_ERROR_TOLERANCE_ABS = 0.005
"""A candidate may fail this much more often (half a percentage point) before it counts as worse."""

TAIL_REQUESTS = 20
"""A quantile q is compared on one endpoint alone only when each side has this many requests above it
(n x (1 - q)): p99 needs 2,000 requests per side. Below that its bound cannot narrow within a release, and
the quantile is judged over all endpoints only; the endpoint's line says so."""

_VERDICTS = {Decision.PASS: Verdict.PASS, Decision.FAIL: Verdict.FAIL, Decision.CONTINUE: Verdict.INCONCLUSIVE}


@dataclass(frozen=True)
class Tolerances:
    """How much worse a candidate may be before a comparison fails, and the error probability of each test."""

    latency_ratio: Mapping[float, float] = field(default_factory=lambda: dict(DEFAULT_LATENCY_TOLERANCE))
    latency_abs_s: float = DEFAULT_LATENCY_TOLERANCE_ABS_S
    errors_abs: float = DEFAULT_ERROR_TOLERANCE_ABS
    alpha: float = DEFAULT_ALPHA


def _counts(events: int, trials: int) -> str:
    return f"{format_count(events)}/{format_count(trials)}"


def _when(looks: int | None, after_s: float | None) -> str:
    if after_s is None:
        return ""
    return f" after {after_s:.1f}s" + (f" (look {looks})" if looks else "")


def _errors_outcome(judgement: Judgement, cand: Stats, base: Stats, *, subject: str, tolerances: Tolerances,
                    source: str, window: str, looks: int | None = None,
                    after_s: float | None = None) -> CheckOutcome:
    verdict = _VERDICTS[judgement.decision]
    rate = cand.failures / cand.count if cand.count else None
    # The look that decided (a decisive failure stays the one recorded): the baseline's rate then + the tolerance.
    limits = () if judgement.candidate_limit is None else (judgement.candidate_limit,)
    return CheckOutcome(
        check="errors vs baseline", verdict=verdict, value=rate,
        display_value="no data" if rate is None else format_fraction(rate),
        threshold=f"baseline rate + {format_fraction(tolerances.errors_abs)} (alpha {tolerances.alpha:g})",
        subject=subject, source=source, window=window, samples=cand.count, bound=judgement.statistic,
        interval=arm_interval(judgement, "candidate", None), limits=limits,
        looks=looks, decided_after_s=after_s if verdict is not Verdict.INCONCLUSIVE else None,
        message=(f"errors on {subject}: {_counts(cand.failures, cand.count)} vs "
                 f"{_counts(base.failures, base.count)} (candidate/baseline), {judgement.reason}"
                 f"{_when(looks, after_s)}: {verdict.value.upper()}"))


def _latency_outcome(judgement: Judgement, cand: Stats, base: Stats, *, subject: str, tolerances: Tolerances,
                     source: str, window: str, looks: int | None = None, after_s: float | None = None,
                     all_endpoints: bool = True) -> CheckOutcome:
    verdict = _VERDICTS[judgement.decision]
    median = cand.quantile(0.5)
    base_median = base.quantile(0.5)
    medians = "" if median is None or base_median is None else (
        f"median {format_seconds(median)} vs {format_seconds(base_median)}, ")
    skipped = [q for q in tolerances.latency_ratio if q not in _tail_quantiles(tolerances, cand, base)]
    alone = "" if not skipped or all_endpoints or verdict is Verdict.FAIL else (
        f"; {', '.join(f'p{q * 100:g}' for q in skipped)} over all endpoints only (too few requests here)")
    return CheckOutcome(
        check="latency vs baseline", verdict=verdict, value=median,
        display_value="no data" if median is None else f"median {format_seconds(median)}",
        threshold=(f"baseline x (1 + {_ratios(tolerances)}) + {format_seconds(tolerances.latency_abs_s)}, "
                   f"a pass against the baseline's p99.5 for p99, p96 for p95 (alpha {tolerances.alpha:g})"),
        subject=subject, source=source, window=window, samples=cand.count, bound=judgement.statistic,
        interval=arm_interval(judgement, "candidate", 0.5), arms=quantile_arms(judgement),
        looks=looks, decided_after_s=after_s if verdict is not Verdict.INCONCLUSIVE else None,
        message=(f"latency on {subject}: {medians}{format_count(cand.count)}/{format_count(base.count)} requests "
                 f"(candidate/baseline), {judgement.reason}{_when(looks, after_s)}: {verdict.value.upper()}"
                 f"{alone}"))


def arm_interval(judgement: Judgement, arm: str, quantile: float | None) -> tuple[float, float] | None:
    """One arm's interval on its rate (quantile None) or on one quantile, when the judgement has it."""
    found = next((one.interval for one in judgement.arms if one.arm == arm and one.quantile == quantile), None)
    return None if found is None else (found.lower, found.upper)


def quantile_arms(judgement: Judgement) -> tuple[ArmBound, ...]:
    """Each arm's interval on each quantile the judgement compared, for the reports."""
    return tuple(ArmBound(one.arm, one.quantile, one.interval.lower, one.interval.upper)
                 for one in judgement.arms if one.quantile is not None)


def _tail_quantiles(tolerances: Tolerances, cand: Stats, base: Stats) -> tuple[float, ...]:
    """The quantiles one endpoint has enough requests to compare on its own (TAIL_REQUESTS)."""
    fewest = min(cand.count, base.count)
    return tuple(q for q in sorted(tolerances.latency_ratio) if q <= 0.5 or fewest * (1 - q) >= TAIL_REQUESTS)


def _ratios(tolerances: Tolerances) -> str:
    return ", ".join(f"{ratio:.0%} at p{q * 100:g}" for q, ratio in sorted(tolerances.latency_ratio.items()))


def _no_data(check: str, cand: Stats, base: Stats, *, subject: str, minimum: int, source: str,
             window: str) -> CheckOutcome:
    what = "errors" if check.startswith("errors") else "latency"
    return CheckOutcome(
        check=check, verdict=Verdict.NO_DATA, value=None, display_value="no data", threshold="",
        subject=subject, source=source, window=window, samples=cand.count,
        message=(f"{what} on {subject}: only {format_count(cand.count)}/{format_count(base.count)} requests "
                 f"(candidate/baseline), fewer than the minimum {format_count(minimum)} on each side"))


def compare_error_rates(cand_errors: int, cand_total: int, base_errors: int, base_total: int, *, subject: str,
                        tolerances: Tolerances = Tolerances(), min_samples: int = 100, source: str = "",
                        window: str = "") -> CheckOutcome:
    """Does the candidate fail more often? One look of the sequential count test (module docstring)."""
    cand, base = Stats(count=cand_total, failures=cand_errors), Stats(count=base_total, failures=base_errors)
    if min(cand_total, base_total) < max(min_samples, 1):
        return _no_data("errors vs baseline", cand, base, subject=subject, minimum=min_samples, source=source,
                        window=window)
    judge = ErrorComparison(alpha=tolerances.alpha, tolerance_abs=tolerances.errors_abs)
    return _errors_outcome(judge.look(cand_errors, cand_total, base_errors, base_total), cand, base,
                           subject=subject, tolerances=tolerances, source=source, window=window)


def compare_latency(candidate_samples: Sequence[float], baseline_samples: Sequence[float], *, subject: str,
                    tolerances: Tolerances = Tolerances(), min_samples: int = 50, source: str = "",
                    window: str = "") -> CheckOutcome:
    """Is the candidate slower at p50, p95 or p99? One look of the quantile confidence sequences."""
    cand = Stats(count=len(candidate_samples), samples=tuple(candidate_samples))
    base = Stats(count=len(baseline_samples), samples=tuple(baseline_samples))
    if min(cand.count, base.count) < max(min_samples, 1):
        return _no_data("latency vs baseline", cand, base, subject=subject, minimum=min_samples, source=source,
                        window=window)
    judge = _latency_judge(tolerances, tuple(sorted(tolerances.latency_ratio)))
    return _latency_outcome(_look_latency(judge, cand, base), cand, base, subject=subject,
                            tolerances=tolerances, source=source, window=window)


def _latency_judge(tolerances: Tolerances, quantiles: tuple[float, ...]) -> LatencyComparison:
    # Its alpha is split over all configured quantiles, whichever are judged: the same sequences either way.
    return LatencyComparison(quantiles=quantiles, tolerance_ratio=tolerances.latency_ratio,
                             tolerance_abs_s=tolerances.latency_abs_s,
                             alpha=tolerances.alpha * len(quantiles) / len(tolerances.latency_ratio))


def _look_latency(judge: LatencyComparison, cand: Stats, base: Stats) -> Judgement:
    return judge.look(cand.count, cand.value_at_rank, base.count, base.value_at_rank)


CellStats = Mapping[tuple[str, str], Stats]


def _scope_stats(cells: CellStats, endpoint: str | None, duration_s: float) -> Stats:
    parts = [stats for (name, _), stats in sorted(cells.items()) if endpoint in (None, name)]
    if len(parts) == 1:
        return parts[0]
    return Stats.combine(parts, duration_s=duration_s)


@dataclass
class _Decided:
    looks: int
    after_s: float
    failure: Judgement | None  # the decisive regression, kept: it does not become undecided later


@dataclass
class PairedJudges:
    """The sequential comparisons of two runs side by side, per scope (all endpoints, each busy one).

    Each scope keeps its tests across looks (the count test's p-value is a running minimum), so the final
    verdict is the one the live looks built up. A scope must have `min_samples` requests on each side (its
    share of it, for one endpoint) before it may pass.
    """

    tolerances: Tolerances = field(default_factory=Tolerances)
    min_samples: int = 100
    looks: int = 0
    _errors: dict[str | None, ErrorComparison] = field(default_factory=dict)
    _decided: dict[tuple[str, str | None], _Decided] = field(default_factory=dict)

    def scopes(self, cand: CellStats, base: CellStats) -> list[str | None]:
        return [None, *sorted(set(busy_endpoints(cand)) | set(busy_endpoints(base)))]

    def look(self, cand: CellStats, base: CellStats, elapsed_s: float) -> dict[tuple[str, str | None], Judgement]:
        """Judge every scope on the counts so far; record when each first decided."""
        self.looks += 1
        judged: dict[tuple[str, str | None], Judgement] = {}
        for scope in self.scopes(cand, base):
            cand_stats, base_stats = _scope_stats(cand, scope, elapsed_s), _scope_stats(base, scope, elapsed_s)
            if not cand_stats.count or not base_stats.count:
                continue
            errors = self._errors.setdefault(scope, ErrorComparison(
                alpha=self.tolerances.alpha, tolerance_abs=self.tolerances.errors_abs))
            # Stateless across looks (its sequences hold at every n); on one endpoint, only the quantiles it
            # has the traffic for (TAIL_REQUESTS), which can only grow.
            quantiles = tuple(sorted(self.tolerances.latency_ratio)) if scope is None else \
                _tail_quantiles(self.tolerances, cand_stats, base_stats)
            latency = _latency_judge(self.tolerances, quantiles)
            judged[("errors", scope)] = errors.look(cand_stats.failures, cand_stats.count, base_stats.failures,
                                                    base_stats.count)
            judged[("latency", scope)] = _look_latency(latency, cand_stats, base_stats)
            minimum = self.minimum_for(scope, cand, cand_stats)
            for key in (("errors", scope), ("latency", scope)):
                decision = judged[key].decision
                if decision is Decision.PASS and min(cand_stats.count, base_stats.count) < minimum:
                    decision = Decision.CONTINUE
                    judged[key] = replace(judged[key], decision=decision,
                                          reason=judged[key].reason + f", below the minimum {minimum} requests")
                self._note(key, judged[key], elapsed_s)
                failed = self._decided.get(key)
                if failed is not None and failed.failure is not None:
                    judged[key] = failed.failure  # a decisive regression stays decided at later looks
        return judged

    def _note(self, key: tuple[str, str | None], judgement: Judgement, elapsed_s: float) -> None:
        """A fail is final; a pass counts from the look that began the current run of passes (a pass on
        an endpoint's first quantiles may not hold once its traffic lets p95 and p99 in)."""
        found = self._decided.get(key)
        if found is not None and found.failure is not None:
            return
        if judgement.decision is Decision.CONTINUE:
            self._decided.pop(key, None)
        elif found is None or judgement.decision is Decision.FAIL:
            failure = judgement if judgement.decision is Decision.FAIL else None
            self._decided[key] = _Decided(self.looks, round(elapsed_s, 1), failure)

    def minimum_for(self, scope: str | None, cand: CellStats, scope_stats: Stats) -> int:
        """The minimum requests per side: `min_samples` for the total, an endpoint's share of it alone."""
        if scope is None:
            return self.min_samples
        total = sum(s.count for s in cand.values())
        return int(self.min_samples * scope_stats.count / max(1, total))

    def decided(self, key: tuple[str, str | None]) -> tuple[int | None, float | None]:
        found = self._decided.get(key)
        return (found.looks, found.after_s) if found else (None, None)


def run_side_by_side(profile: LoadProfile, candidate: Endpoint, baseline: Endpoint, *,
                     judges: PairedJudges | None = None, record: RecordCheck | None = None,
                     on_progress: ProgressCallback | None = None) -> tuple[LoadResult, LoadResult]:
    """The same load on the candidate and on the baseline at the same time, judged every second.

    A decisive regression in any scope stops both runs at once; once `duration_s` has passed, every scope
    having passed stops them; otherwise both go on to `max_duration_s`. Returns (candidate, baseline)
    results that carry the judges, ready for `compare_loads`. `on_progress` gets a snapshot after every look.
    """
    judges = judges or PairedJudges(min_samples=profile.min_requests)
    recorder = ignore_check if record is None else record
    with LoadProcess(profile, candidate, record=recorder) as cand, \
            LoadProcess(profile, baseline, record=recorder) as base:
        finished = [False, False]
        while not all(finished):
            finished = _wait_for_both(cand, base, LOOK_INTERVAL_S)
            if any(finished):  # one arm ended (its maximum, or a crash): the other stops too
                for process in (cand, base):
                    process.stop(note="the other arm of the side-by-side load ended")
                continue
            cand_live, base_live = cand.live(), base.live()
            if cand_live is None or base_live is None:
                continue
            elapsed = min(cand_live.elapsed_s, base_live.elapsed_s)
            judged = judges.look(cand_live.cells, base_live.cells, elapsed)
            if on_progress is not None:
                on_progress(comparison_snapshot(profile, cand_live, base_live, judged, elapsed))
            stop = _stop_reason(judged, elapsed, profile)
            if stop is not None:
                abort, note = stop
                for process in (cand, base):
                    process.stop(abort_reason=abort, note=note)
        cand_result, base_result = cand.result(looks=judges.looks), base.result(looks=judges.looks)
    return replace(cand_result, paired=judges), replace(base_result, paired=judges)


def _wait_for_both(cand: LoadProcess, base: LoadProcess, seconds: float) -> list[bool]:
    """[candidate exited, baseline exited] once both published new counts (each on its own clock, every second),
    either exited, or `seconds` passed: the look follows the later publication within NEW_COUNTS_POLL_S."""
    deadline = time.monotonic() + seconds
    while True:
        finished = [cand.wait(NEW_COUNTS_POLL_S), base.wait(0)]
        if any(finished) or (cand.has_new_counts() and base.has_new_counts()) or time.monotonic() >= deadline:
            return finished


def _stop_reason(judged: Mapping[tuple[str, str | None], Judgement], elapsed_s: float,
                 profile: LoadProfile) -> tuple[str | None, str | None] | None:
    """(abort reason, note) when the side-by-side load should stop now, else None."""
    for (kind, scope), judgement in judged.items():
        if judgement.decision is Decision.FAIL:
            # Not an abort of the load: the comparison itself records the failure with its numbers.
            return None, f"{kind} on {scope or 'all endpoints'} decided FAIL after {elapsed_s:.1f}s: {judgement.reason}"
    if judged and elapsed_s >= profile.duration_s and all(j.decision is Decision.PASS for j in judged.values()):
        return None, f"every comparison decided to pass after {elapsed_s:.1f}s"
    return None


def compare_loads(candidate: LoadResult, baseline: LoadResult, *, endpoint: str | None = None,
                  record: RecordCheck | None = None, tolerances: Tolerances | None = None,
                  min_samples: int | None = None) -> tuple[CheckOutcome, ...]:
    """Latency and errors of two load runs, over all endpoints and per busy endpoint (or one `endpoint`).

    Runs from `run_side_by_side` keep the judgement their live looks built up; two runs from elsewhere get
    one look now. Outcomes go to `record` (default: the candidate run's recorder); raises CheckFailed on any
    FAIL, NO DATA or INCONCLUSIVE.
    """
    recorder = candidate.record if record is None else record
    chosen = tolerances or Tolerances()
    minimum = min(candidate.profile.min_requests, baseline.profile.min_requests) if min_samples is None \
        else min_samples
    live = candidate.paired if isinstance(candidate.paired, PairedJudges) and candidate.paired is baseline.paired \
        else None
    judges = live if live is not None and live.tolerances == chosen else PairedJudges(chosen, minimum)
    duration = max(candidate.duration_s, baseline.duration_s)
    judged = judges.look(candidate.cells, baseline.cells, duration)
    source = (f"{candidate.profile.describe()} on {candidate.host} vs "
              f"{baseline.profile.describe()} on {baseline.host}")
    window = f"candidate {candidate.window}, baseline {baseline.window}"
    scopes = [endpoint] if endpoint is not None else judges.scopes(candidate.cells, baseline.cells)
    outcomes: list[CheckOutcome] = []
    for scope in scopes:
        cand, base = candidate.stats(scope), baseline.stats(scope)
        subject = f"{scope or 'all endpoints'} ({candidate.who()} vs {baseline.who()})"
        scope_minimum = judges.minimum_for(scope, candidate.cells, cand) if scope is not None else minimum
        builders: tuple[tuple[str, Callable[..., CheckOutcome]], ...] = (
            ("latency", _latency_outcome), ("errors", _errors_outcome))
        for kind, build in builders:
            judgement = judged.get((kind, scope))
            if judgement is None or min(cand.count, base.count) < max(scope_minimum, 1):
                outcomes.append(replace(_no_data(f"{kind} vs baseline", cand, base, subject=subject,
                                                 minimum=max(scope_minimum, 1), source=source, window=window),
                                        scope=scope or ""))
                continue
            looks, after = judges.decided((kind, scope))
            extra = {"all_endpoints": scope is None} if kind == "latency" else {}
            outcomes.append(replace(build(judgement, cand, base, subject=subject, tolerances=chosen,
                                          source=source, window=window, looks=looks or judges.looks,
                                          after_s=after, **extra), scope=scope or ""))
    quiet = quiet_endpoints(candidate.cells)
    if endpoint is None and quiet and outcomes:
        outcomes[0] = replace(outcomes[0], message=outcomes[0].message + "; too little traffic to judge on "
                                                                         "their own: " + quiet)
    for outcome in outcomes:
        recorder(outcome)
    return require(outcomes)

