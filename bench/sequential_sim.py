"""Simulations of the anytime-valid judges in `verifiers/sequential.py`: false alarms, power, time to decide.

Two arms (candidate and baseline) receive requests side by side, Poisson at `--rps` per arm per second, 75%
/api/items and 25% /api/checkout, latency like the demo service: 10 ms + |gauss(0, 10 ms)| (median ~17 ms,
p95 ~30 ms). Every judge looks after every second, up to `--seconds`. Prints a table; asserts nothing.

    .venv/bin/python bench/sequential_sim.py            # 1,000 seeded runs per scenario
    .venv/bin/python bench/sequential_sim.py --runs 200 --jobs 2

A false alarm is a FAIL at any look over the whole duration (even after a PASS the real check would have
stopped on): the strictest count. Fixed-n tests re-run at each look (Mann-Whitney U, Fisher's exact) are
shown for contrast; their false alarms grow with the number of looks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr
from scipy.stats import fisher_exact, hypergeom, mannwhitneyu, norm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.figures import Figure, emit
from releasegate.verifiers.sequential import (
    CountTest,
    Decision,
    ErrorComparison,
    LatencyComparison,
    judge_quantile_limit,
    judge_rate_limit,
)

ALPHA = 0.01
CHECKOUT_SHARE = 0.25
"""Share of requests to /api/checkout; the rest go to /api/items."""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Arm:
    """How one arm behaves: error rate per endpoint, latency transform."""

    items_error: float = 0.001
    checkout_error: float = 0.001
    latency_scale: float = 1.0
    tail_share: float = 0.0              # share of requests with a heavier tail (p99-only regression)
    tail_range_s: tuple[float, float] = (0.045, 0.070)


@dataclass
class Stream:
    """One arm's requests of one run, in arrival order, and the cumulative request count per second."""

    checkout: npt.NDArray[np.bool_]
    error: npt.NDArray[np.bool_]
    latency: Floats
    per_second: npt.NDArray[np.int64]    # requests arrived by the end of each second


def simulate(rng: np.random.Generator, arm: Arm, seconds: int, rps: float) -> Stream:
    counts = rng.poisson(rps, seconds)
    total = int(counts.sum())
    checkout = rng.random(total) < CHECKOUT_SHARE
    error = rng.random(total) < np.where(checkout, arm.checkout_error, arm.items_error)
    latency = (0.010 + np.abs(rng.normal(0.0, 0.010, total))) * arm.latency_scale
    if arm.tail_share:
        heavy = rng.random(total) < arm.tail_share
        latency[heavy] = rng.uniform(*arm.tail_range_s, int(heavy.sum()))
    return Stream(checkout, error, latency, np.cumsum(counts))


@dataclass
class Outcome:
    """Per judge: the first second with FAIL and with PASS, and the candidate's requests by then."""

    first: dict[str, dict[Decision, tuple[int, int]]] = field(default_factory=dict)

    def record(self, judge: str, decision: Decision, second: int, requests: int) -> None:
        seen = self.first.setdefault(judge, {})
        if decision is not Decision.CONTINUE and decision not in seen:
            seen[decision] = (second, requests)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str                            # "errors", "latency" or "slo"
    candidate: Arm
    baseline: Arm = Arm()
    seconds: int = 180                   # the maximum duration of a run: one look a second
    cell: str = "all"                    # "all", "checkout" or "items": which requests the error judges see
    error_limit: float = 0.01            # slo: error_rate < limit
    quantile_limit: tuple[float, float] = (0.95, 0.050)   # slo: p(q) < limit_s


def cell_mask(stream: Stream, cell: str) -> npt.NDArray[np.bool_]:
    if cell == "all":
        return np.ones_like(stream.checkout)
    return stream.checkout if cell == "checkout" else ~stream.checkout


def cumulative(stream: Stream, mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(requests, errors) of the masked requests by the end of each second."""
    requests = np.concatenate(([0], np.cumsum(mask)))[stream.per_second]
    errors = np.concatenate(([0], np.cumsum(mask & stream.error)))[stream.per_second]
    return requests, errors


def run_errors(scenario: Scenario, cand: Stream, base: Stream, outcome: Outcome) -> None:
    cand_n, cand_e = cumulative(cand, cell_mask(cand, scenario.cell))
    base_n, base_e = cumulative(base, cell_mask(base, scenario.cell))
    comparison = ErrorComparison(alpha=ALPHA)
    tests = {k: CountTest(alpha=ALPHA, concentration=k) for k in (100.0, 10.0, 4.0, 2.0)}
    fisher = fisher_greater(cand_e, cand_n, base_e, base_n)
    for second in range(len(cand_n)):
        counts = (int(cand_e[second]), int(cand_n[second]), int(base_e[second]), int(base_n[second]))
        outcome.record("ErrorComparison", comparison.look(*counts).decision, second + 1, counts[1])
        for k, test in tests.items():
            outcome.record(f"CountTest k={k:g} p<alpha", fail_if(test.look(*counts) < ALPHA), second + 1, counts[1])
        outcome.record("Fisher exact, re-run each look", fail_if(bool(fisher[second] < ALPHA)), second + 1, counts[1])


def fisher_greater(cand_e: Ints, cand_n: Ints, base_e: Ints, base_n: Ints) -> Floats:
    """One-sided p of Fisher's exact test (candidate errors more frequent) at every look at once: the
    hypergeometric tail, what scipy.stats.fisher_exact(alternative="greater") computes one table at a time."""
    return np.asarray(hypergeom.sf(cand_e - 1, cand_n + base_n, cand_e + base_e, cand_n), dtype=np.float64)


def fail_if(rejected: bool) -> Decision:
    """A fixed-n test at one look: FAIL when it rejects, else nothing decided."""
    return Decision.FAIL if rejected else Decision.CONTINUE


def mann_whitney_greater(candidate_sorted: Floats, baseline_sorted: Floats) -> float:
    """One-sided p (candidate slower) of the Mann-Whitney U test, normal approximation with continuity
    correction: scipy.stats.mannwhitneyu(method="asymptotic") for continuous data (no ties), computed from the
    sorted samples we keep anyway (checked against scipy in `check_mann_whitney`)."""
    n1, n2 = len(candidate_sorted), len(baseline_sorted)
    u = float(np.searchsorted(baseline_sorted, candidate_sorted).sum())
    mean, sd = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return float(ndtr(-(u - mean - 0.5) / sd))


def merged(sorted_before: Floats, new: Floats) -> Floats:
    """A sorted array of both: timsort (numpy's stable sort of floats) merges the new run in linear time."""
    return np.sort(np.concatenate((sorted_before, new)), kind="stable")


def ranked(values: Floats) -> Callable[[int], float]:
    return lambda rank: float(values[rank - 1])


SLOW_S = 0.040
"""A fixed "slow request" line for the slow-count comparison (a p99 < 40 ms SLO): ~0.3% of healthy requests."""


def slow_counts(stream: Stream) -> npt.NDArray[np.int64]:
    return np.concatenate(([0], np.cumsum(stream.latency > SLOW_S)))[stream.per_second]


def run_latency(scenario: Scenario, cand: Stream, base: Stream, outcome: Outcome) -> None:
    comparison = LatencyComparison(alpha=ALPHA)
    slow = ErrorComparison(alpha=ALPHA)
    cand_slow, base_slow = slow_counts(cand), slow_counts(base)
    cand_sorted, base_sorted = np.empty(0), np.empty(0)
    for second in range(len(cand.per_second)):
        n_c, n_b = int(cand.per_second[second]), int(base.per_second[second])
        judgement = slow.look(int(cand_slow[second]), n_c, int(base_slow[second]), n_b)
        outcome.record(f"ErrorComparison on requests > {SLOW_S * 1000:g} ms", judgement.decision, second + 1, n_c)
        cand_sorted = merged(cand_sorted, cand.latency[len(cand_sorted):n_c])
        base_sorted = merged(base_sorted, base.latency[len(base_sorted):n_b])
        judgement = comparison.look(n_c, ranked(cand_sorted), n_b, ranked(base_sorted))
        outcome.record("LatencyComparison", judgement.decision, second + 1, n_c)
        rank_test = n_c > 0 and n_b > 0 and mann_whitney_greater(cand_sorted, base_sorted) < ALPHA
        outcome.record("Mann-Whitney U, re-run each look", fail_if(rank_test), second + 1, n_c)


def run_slo(scenario: Scenario, cand: Stream, base: Stream, outcome: Outcome) -> None:
    q, limit_s = scenario.quantile_limit
    requests, errors = cumulative(cand, cell_mask(cand, "all"))
    slow = np.concatenate(([0], np.cumsum(cand.latency > limit_s)))[cand.per_second]
    latencies = np.empty(0)
    for second in range(len(requests)):
        n = int(requests[second])
        judgement = judge_rate_limit(int(errors[second]), n, limit=scenario.error_limit, alpha=ALPHA)
        outcome.record(f"judge_rate_limit < {scenario.error_limit:.2%}", judgement.decision, second + 1, n)
        latencies = merged(latencies, cand.latency[len(latencies):n])
        judgement = judge_quantile_limit(n, ranked(latencies), int(slow[second]), q=q, limit_s=limit_s, alpha=ALPHA)
        outcome.record(f"judge_quantile_limit p{q * 100:g} < {limit_s * 1000:.4g} ms", judgement.decision,
                       second + 1, n)


RUNNERS = {"errors": run_errors, "latency": run_latency, "slo": run_slo}


def run_chunk(scenario: Scenario, seeds: Sequence[int], rps: float) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        rng = np.random.default_rng([hash_name(scenario.name), seed])
        seconds = scenario.seconds
        cand, base = simulate(rng, scenario.candidate, seconds, rps), simulate(rng, scenario.baseline, seconds, rps)
        outcome = Outcome()
        RUNNERS[scenario.kind](scenario, cand, base, outcome)
        outcomes.append(outcome)
    return outcomes


def hash_name(name: str) -> int:
    """A stable seed from a scenario's name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def true_p99_s(arm: Arm, rng: np.random.Generator) -> float:
    return float(np.quantile(simulate(rng, arm, 1, 2_000_000).latency, 0.99))


HEALTHY = Arm()
ERRORS_S = 360
"""Error regressions on one endpoint need minutes at 10 requests/s: see the power rows."""
SCENARIOS = (
    Scenario("A/A errors 0.1%, all traffic", "errors", HEALTHY, seconds=ERRORS_S),
    Scenario("A/A errors 0%, all traffic", "errors", Arm(0.0, 0.0), Arm(0.0, 0.0), seconds=ERRORS_S),
    Scenario("A/A latency", "latency", HEALTHY),
    Scenario("SLO at the limit: errors 1%, p95 = limit", "slo", Arm(0.01, 0.01),
             quantile_limit=(0.95, 0.010 + 0.010 * float(norm.ppf(0.975)))),
    Scenario("SLO healthy: errors 0.1% (limit 1%), p95 < 50 ms", "slo", HEALTHY),
    Scenario("+1 point errors on /api/checkout, judged on checkout", "errors", Arm(checkout_error=0.011),
             seconds=ERRORS_S, cell="checkout"),
    Scenario("+1 point errors on /api/checkout, judged on /api/items", "errors", Arm(checkout_error=0.011),
             seconds=ERRORS_S, cell="items"),
    Scenario("+1 point errors on /api/checkout, judged on all traffic", "errors", Arm(checkout_error=0.011),
             seconds=ERRORS_S),
    Scenario("+30% latency (median +30%)", "latency", Arm(latency_scale=1.3)),
    Scenario("p99 +60% (2% of requests 45-70 ms)", "latency", Arm(tail_share=0.02)),
)


def run_scenario(scenario: Scenario, runs: int, rps: float, pool: ProcessPoolExecutor) -> list[Outcome]:
    chunks = [list(range(start, runs, 8)) for start in range(8)]
    outcomes: list[Outcome] = []
    for part in pool.map(run_chunk, [scenario] * len(chunks), chunks, [rps] * len(chunks)):
        outcomes.extend(part)
    return outcomes


FIXED_N_OR_TEST_ONLY = ("CountTest", "Fisher", "Mann-Whitney")
"""Rows that can only reject: they have no PASS line."""


def summarise(outcomes: Sequence[Outcome], decision: Decision) -> Iterator[tuple[str, str, str]]:
    """Per judge: share of runs reaching `decision`, median (and 95th percentile) seconds, median candidate
    requests to reach it."""
    judges = sorted({judge for o in outcomes for judge in o.first})
    for judge in judges:
        if decision is Decision.PASS and judge.startswith(FIXED_N_OR_TEST_ONLY):
            continue
        hits = [o.first[judge][decision] for o in outcomes if decision in o.first.get(judge, {})]
        share = f"{len(hits)}/{len(outcomes)} = {len(hits) / len(outcomes):.1%}"
        if hits:
            seconds = np.percentile([h[0] for h in hits], [50, 95])
            requests = float(np.median([h[1] for h in hits]))
            yield judge, share, f"median {seconds[0]:.0f} s (p95 {seconds[1]:.0f} s), {requests:.0f} candidate requests"
        else:
            yield judge, share, "-"


def check_mann_whitney() -> None:
    """Our Mann-Whitney p is scipy's (printed, not asserted)."""
    rng = np.random.default_rng(3)
    candidate, baseline = rng.normal(0.1, 1, 300), rng.normal(0, 1, 400)
    ours = mann_whitney_greater(np.sort(candidate), np.sort(baseline))
    theirs = mannwhitneyu(candidate, baseline, alternative="greater", method="asymptotic").pvalue
    print(f"Mann-Whitney check: ours {ours:.6f} scipy {theirs:.6f}")


def check_fisher() -> None:
    """The vectorised Fisher p-values are scipy's (a guard on the formula, printed, not asserted)."""
    table = (np.array([3, 7]), np.array([500, 900]), np.array([0, 2]), np.array([500, 1000]))
    ours = fisher_greater(*table)
    theirs = [fisher_exact([[c, n - c], [b, m - b]], alternative="greater")[1]
              for c, n, b, m in zip(*table, strict=True)]
    print(f"Fisher check: vectorised {np.round(ours, 6).tolist()} scipy {np.round(theirs, 6).tolist()}")


def three_in_five_hundred() -> str:
    judgement = ErrorComparison(alpha=ALPHA).look(3, 500, 0, 500)
    return f"{judgement.decision.value.upper()}: {judgement.reason} ({judgement.statistic})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=40.0, help="requests per second per arm")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line last")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    started = time.monotonic()
    print(f"{args.runs} runs per scenario, {args.rps:g} requests/s per arm, one look a second, alpha {ALPHA}")
    print(f"true p99: healthy {true_p99_s(HEALTHY, np.random.default_rng(1)) * 1000:.1f} ms, "
          f"tail regression {true_p99_s(Arm(tail_share=0.02), np.random.default_rng(1)) * 1000:.1f} ms")
    with ProcessPoolExecutor(args.jobs) as pool:
        for scenario in SCENARIOS:
            if args.only not in scenario.name:
                continue
            scenario_started = time.monotonic()
            outcomes = run_scenario(scenario, args.runs, args.rps, pool)
            print(f"\n## {scenario.name}, up to {scenario.seconds} s  ({time.monotonic() - scenario_started:.0f} s)")
            for decision in (Decision.FAIL, Decision.PASS):
                for judge, share, when in summarise(outcomes, decision):
                    print(f"  {decision.value.upper():4}  {judge:48} {share:>20}   {when}")
            figures += headline(scenario, outcomes)
    check_fisher()
    check_mann_whitney()
    print(f"\n3 errors in 500 vs 0 in 500: {three_in_five_hundred()}")
    print(f"\ntotal {time.monotonic() - started:.0f} s wall clock")
    if args.json:
        emit("sequential_sim", figures, note=f"{args.runs} runs per scenario, alpha {ALPHA}")


def headline(scenario: Scenario, outcomes: Sequence[Outcome]) -> list[Figure]:
    """One figure per scenario, over the anytime-valid judges: false alarms (FAIL) of a healthy candidate and
    false passes (PASS) at an SLO's limit, the worst judge; power (FAIL) of the scenario's judge otherwise."""
    def share(judge: str, decision: Decision) -> float:
        return sum(decision in o.first.get(judge, {}) for o in outcomes) / len(outcomes)

    judges = sorted({judge for o in outcomes for judge in o.first if not judge.startswith(FIXED_N_OR_TEST_ONLY)})
    wrong = {"A/A": ("false alarms", Decision.FAIL), "SLO healthy": ("false alarms", Decision.FAIL),
             "SLO at the limit": ("false passes", Decision.PASS)}
    for prefix, (what, decision) in wrong.items():
        if scenario.name.startswith(prefix):
            worst = max(judges, key=lambda judge: share(judge, decision))
            return [Figure(f"{what}, {scenario.name}", round(share(worst, decision), 4), "share of runs",
                           note=f"worst judge: {worst}")]
    judge = {"errors": "ErrorComparison", "latency": "LatencyComparison"}[scenario.kind]
    return [Figure(f"power, {scenario.name}", round(share(judge, Decision.FAIL), 4), "share of runs", note=judge)]


if __name__ == "__main__":
    main()
