"""Candidate vs baseline, sequentially: the count test on errors, quantile confidence sequences on latency,
each with an effect-size tolerance. A comparison passes on evidence (its bounds inside the tolerance), fails
on a decisive regression, and is otherwise INCONCLUSIVE.

Synthetic samples use fixed seeds; the last tests compare two real load runs (healthy vs slow checkout).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from releasegate.core.checks import CheckFailed, CheckOutcome, Verdict
from releasegate.core.types import Role
from releasegate.verifiers.compare import (
    Tolerances,
    compare_error_rates,
    compare_latency,
    compare_loads,
    run_side_by_side,
)
from releasegate.verifiers.load import LoadProfile, LoadResult, run_load
from releasegate.verifiers.sequential import ErrorComparison, LatencyComparison
from tests.verifiers_services import DemoService, demo_service, write_profiles

LOCUSTFILE = Path(__file__).resolve().parents[1] / "suites" / "load" / "locustfile.py"


def latencies(median_s: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median_s * rng.lognormvariate(0, 0.3) for _ in range(count)]


# --- latency ------------------------------------------------------------------------------------------------


def test_a_much_slower_candidate_fails_with_a_one_line_explanation() -> None:
    outcome = compare_latency(latencies(0.048, 1204, seed=1), latencies(0.021, 1198, seed=2),
                              subject="/api/checkout (candidate v3 vs baseline v2)")
    assert outcome.verdict is Verdict.FAIL
    assert outcome.message == (
        "latency on /api/checkout (candidate v3 vs baseline v2): median 48ms vs 21ms, 1,204/1,198 requests "
        "(candidate/baseline), p95: candidate lower bound 72.4 ms > baseline upper bound 35.9 ms x 1.25 + 5 ms: "
        "FAIL")
    assert outcome.bound == "p95 candidate [72.4 ms, 83.5 ms], baseline [31.6 ms, 35.9 ms]"
    assert outcome.samples == 1204


def test_a_latency_comparison_records_each_arms_interval_on_each_quantile_as_the_judgement_has_them() -> None:
    candidate, baseline = latencies(0.048, 1204, seed=1), latencies(0.021, 1198, seed=2)
    outcome = compare_latency(candidate, baseline, subject="s")
    tolerances = Tolerances()
    judge = LatencyComparison(quantiles=sorted(tolerances.latency_ratio), tolerance_ratio=tolerances.latency_ratio,
                              tolerance_abs_s=tolerances.latency_abs_s, alpha=tolerances.alpha)
    cand, base = sorted(candidate), sorted(baseline)
    judgement = judge.look(len(cand), lambda r: cand[r - 1], len(base), lambda r: base[r - 1])
    assert [(a.arm, a.quantile, a.low, a.high) for a in outcome.arms] == [
        (one.arm, one.quantile, one.interval.lower, one.interval.upper) for one in judgement.arms]
    assert [(a.arm, a.quantile) for a in outcome.arms] == [(arm, q) for q in (0.5, 0.95, 0.99)
                                                           for arm in ("candidate", "baseline")]
    # p95's numbers are the ones its bound shows: candidate [72.4 ms, 83.5 ms]
    p95 = next(a for a in outcome.arms if (a.arm, a.quantile) == ("candidate", 0.95))
    assert (round(p95.low * 1000, 1), round(p95.high * 1000, 1)) == (72.4, 83.5)
    assert outcome.interval == (outcome.arms[0].low, outcome.arms[0].high)  # the median, the value shown
    assert outcome.value is not None and outcome.interval[0] <= outcome.value <= outcome.interval[1]
    assert outcome.limits == ()  # one limit per quantile and side: the arms carry them, not one number
    assert dict(outcome.properties())["check.latency vs baseline.arms"].startswith(
        f"candidate 0.5 {outcome.arms[0].low!r} {outcome.arms[0].high!r}; baseline 0.5 ")


def test_the_same_distribution_passes_once_the_bounds_are_inside_the_tolerance() -> None:
    outcome = compare_latency(latencies(0.02, 5000, seed=3), latencies(0.02, 5000, seed=4), subject="s")
    assert outcome.verdict is Verdict.PASS
    assert outcome.message.endswith("x 1.1 + 5 ms: PASS")


def test_the_same_distribution_on_few_requests_is_inconclusive_never_a_pass() -> None:
    # 300 requests cannot bound a p99 at all: the upper bound is still infinite.
    outcome = compare_latency(latencies(0.02, 300, seed=3), latencies(0.02, 300, seed=4), subject="s")
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert "p99: candidate upper bound inf >" in outcome.message


def test_a_faster_candidate_passes() -> None:
    outcome = compare_latency(latencies(0.01, 2000, seed=5), latencies(0.02, 2000, seed=6), subject="s")
    assert outcome.verdict is Verdict.PASS and outcome.message.startswith("latency on s: median 10ms vs 20ms")


def test_a_large_relative_slowdown_of_a_millisecond_is_within_the_absolute_tolerance() -> None:
    outcome = compare_latency(latencies(0.002, 2000, seed=9), latencies(0.001, 2000, seed=10), subject="s")
    assert outcome.verdict is Verdict.PASS and "+ 5 ms: PASS" in outcome.message


def test_too_few_samples_on_either_side_is_no_data() -> None:
    outcome = compare_latency(latencies(0.5, 37, seed=11), latencies(0.02, 1000, seed=12), subject="s",
                              min_samples=50)
    assert outcome.verdict is Verdict.NO_DATA
    assert outcome.message == ("latency on s: only 37/1,000 requests (candidate/baseline), fewer than the "
                               "minimum 50 on each side")


# --- errors -------------------------------------------------------------------------------------------------


def test_no_errors_on_enough_requests_is_evidence_of_no_regression() -> None:
    outcome = compare_error_rates(0, 5000, 0, 5000, subject="all endpoints (candidate v3 vs baseline v2)")
    assert outcome.verdict is Verdict.PASS
    assert outcome.message == ("errors on all endpoints (candidate v3 vs baseline v2): 0/5,000 vs 0/5,000 "
                               "(candidate/baseline), difference at most +0.141 points <= 0.5 points tolerance: "
                               "PASS")


def test_no_errors_on_too_few_requests_is_inconclusive() -> None:
    outcome = compare_error_rates(0, 1204, 0, 1198, subject="s")
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert outcome.message.endswith("difference up to +0.542 points > 0.5 points tolerance: INCONCLUSIVE")


def test_errors_against_a_clean_baseline_fail() -> None:
    outcome = compare_error_rates(61, 1204, 0, 1198, subject="s")
    assert outcome.verdict is Verdict.FAIL
    assert outcome.message == ("errors on s: 61/1,204 vs 0/1,198 (candidate/baseline), p=3.3e-16 < 0.01 and "
                               "+5.07 points > 0.5 points tolerance: FAIL")
    assert outcome.bound == "sequential p=3.3e-16"
    assert outcome.value == pytest.approx(61 / 1204)
    # the candidate's own interval from the judgement (alpha / 2 a side), and the limit the verdict used:
    # the baseline's rate plus the tolerance
    judgement = ErrorComparison(alpha=0.01, tolerance_abs=0.005).look(61, 1204, 0, 1198)
    candidate = next(arm.interval for arm in judgement.arms if arm.arm == "candidate")
    assert outcome.interval == (candidate.lower, candidate.upper)
    assert outcome.interval[0] < outcome.value < outcome.interval[1]
    assert outcome.limits == (judgement.candidate_limit,) == (0 / 1198 + 0.005,)


def test_a_significant_but_small_increase_is_within_tolerance() -> None:
    outcome = compare_error_rates(300, 100_000, 100, 100_000, subject="s")  # 0.3% vs 0.1%
    assert outcome.verdict is Verdict.PASS and "difference at most +0.32 points" in outcome.message


def test_three_errors_in_500_against_none_in_500_is_undecided() -> None:
    # 0.6% against 0%: not enough for the count test (p=0.62), and the bound on the difference still reaches
    # +3 points, so it cannot pass either: more requests are needed, and the verdict says so.
    outcome = compare_error_rates(3, 500, 0, 500, subject="s")
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert outcome.message == ("errors on s: 3/500 vs 0/500 (candidate/baseline), p=0.62 >= 0.01, difference "
                               "up to +3.01 points > 0.5 points tolerance: INCONCLUSIVE")


def test_too_few_requests_for_an_error_comparison_is_no_data() -> None:
    outcome = compare_error_rates(0, 40, 0, 1000, subject="s", min_samples=100)
    assert outcome.verdict is Verdict.NO_DATA and "fewer than the minimum 100 on each side" in outcome.message


def test_tolerances_are_configurable() -> None:
    loose = Tolerances(errors_abs=0.05)
    assert compare_error_rates(3, 500, 0, 500, subject="s", tolerances=loose).verdict is Verdict.PASS


# --- two real load runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoService, DemoService]]:
    profiles = write_profiles(tmp_path_factory.mktemp("profiles"))
    with demo_service("v1", profiles, slot="blue") as healthy, demo_service("v2-slow", profiles,
                                                                           slot="green") as slow:
        yield healthy, slow


def test_a_slow_checkout_fails_the_comparison_of_two_real_runs(
        services: tuple[DemoService, DemoService]) -> None:
    healthy, slow = services
    recorded: list[CheckOutcome] = []
    profile = LoadProfile(LOCUSTFILE, users=8, spawn_rate=8, duration_s=4, max_duration_s=60, min_requests=20)
    # Both runs at the same time, judged every second: the slow checkout is decided long before 60 s.
    candidate, baseline = run_side_by_side(profile, slow.endpoint(Role.CANDIDATE),
                                           healthy.endpoint(Role.BASELINE), record=recorded.append)
    assert isinstance(candidate, LoadResult) and isinstance(baseline, LoadResult)
    assert candidate.stop_note is not None and " decided FAIL after " in candidate.stop_note
    assert candidate.duration_s < 50 and baseline.duration_s < 50

    with pytest.raises(CheckFailed) as caught:
        compare_loads(candidate, baseline)
    verdicts = {(o.check, o.subject.split(" (")[0]): o for o in recorded}
    checkout = verdicts[("latency vs baseline", "/api/checkout")]
    assert checkout.verdict is Verdict.FAIL and checkout.subject == "/api/checkout (candidate v2-slow vs baseline v1)"
    # At least the injected 400 ms, however busy the machine (which only adds to it).
    median = re.match(r"latency on /api/checkout \(candidate v2-slow vs baseline v1\): median (\d+)ms vs ",
                      checkout.message)
    assert median is not None and int(median.group(1)) >= 400, checkout.message
    assert re.search(r" after \d+\.\ds \(look \d+\): FAIL$", checkout.message), checkout.message
    assert checkout.looks is not None and checkout.decided_after_s is not None
    assert "suites/load/locustfile.py, 8 users, spawn 8/s, 4s (up to 60s until decided) on http://" in checkout.source
    # Latency and errors, over all endpoints and each busy one, every outcome in the candidate's recorder.
    assert sorted(verdicts) == [(check, scope) for check in ("errors vs baseline", "latency vs baseline")
                                for scope in ("/api/checkout", "/api/items", "all endpoints")]
    assert verdicts[("latency vs baseline", "/api/items")].verdict is not Verdict.FAIL
    assert checkout.message in str(caught.value).splitlines()


def test_two_runs_from_elsewhere_get_one_look(services: tuple[DemoService, DemoService]) -> None:
    healthy, slow = services
    profile = LoadProfile(LOCUSTFILE, users=8, spawn_rate=8, duration_s=3, min_requests=20)
    with ThreadPoolExecutor(2) as pool:
        candidate_run = pool.submit(run_load, profile, slow.endpoint(Role.CANDIDATE))
        baseline_run = pool.submit(run_load, profile, healthy.endpoint(Role.BASELINE))
        candidate, baseline = candidate_run.result(), baseline_run.result()
    recorded: list[CheckOutcome] = []
    with pytest.raises(CheckFailed):
        compare_loads(candidate, baseline, endpoint="/api/checkout", record=recorded.append)
    assert (recorded[0].check, recorded[0].verdict) == ("latency vs baseline", Verdict.FAIL)
    assert recorded[0].looks == 1 and recorded[0].decided_after_s is not None
