"""Candidate vs baseline: rank test on latency, Fisher's test on errors, with effect-size tolerance.

Synthetic samples use fixed seeds; the last test compares two real load runs (healthy vs slow checkout).
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
from releasegate.verifiers.compare import compare_error_rates, compare_latency, compare_loads
from releasegate.verifiers.load import LoadProfile, LoadResult, run_load
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
    assert outcome.message.startswith(
        "latency on /api/checkout (candidate v3 vs baseline v2): candidate median 4")
    assert "vs baseline 21ms (+1" in outcome.message and "Mann-Whitney p=" in outcome.message
    assert outcome.message.endswith("over 1,204/1,198 requests: worse beyond the max(10%, 5ms) tolerance")
    assert "\n" not in outcome.message and outcome.samples == 1204


def test_the_same_distribution_is_not_significantly_slower() -> None:
    outcome = compare_latency(latencies(0.02, 2000, seed=3), latencies(0.02, 2000, seed=4), subject="s")
    assert outcome.verdict is Verdict.PASS
    assert outcome.message.endswith("not significantly slower")


def test_a_faster_candidate_passes() -> None:
    outcome = compare_latency(latencies(0.01, 500, seed=5), latencies(0.02, 500, seed=6), subject="s")
    assert outcome.verdict is Verdict.PASS and "(-5" in outcome.message


def test_a_tiny_but_significant_slowdown_on_huge_samples_is_within_tolerance() -> None:
    # +3% on 20,000 requests each: Mann-Whitney calls it significant, the 10% tolerance lets it pass.
    outcome = compare_latency(latencies(0.0206, 20_000, seed=7), latencies(0.020, 20_000, seed=8),
                              subject="s", tolerance_abs_s=0.0)
    assert outcome.verdict is Verdict.PASS
    assert "slower, but within the max(10%, 0ms) tolerance" in outcome.message


def test_a_large_relative_slowdown_of_a_millisecond_is_within_the_absolute_tolerance() -> None:
    outcome = compare_latency(latencies(0.002, 2000, seed=9), latencies(0.001, 2000, seed=10), subject="s")
    assert outcome.verdict is Verdict.PASS and "within the max(10%, 5ms) tolerance" in outcome.message


def test_too_few_samples_on_either_side_is_no_data() -> None:
    outcome = compare_latency(latencies(0.5, 37, seed=11), latencies(0.02, 1000, seed=12), subject="s",
                              min_samples=50)
    assert outcome.verdict is Verdict.NO_DATA
    assert outcome.message == ("latency on s: only 37/1,000 requests (candidate/baseline), fewer than the "
                               "minimum 50 on each side")


# --- errors -------------------------------------------------------------------------------------------------


def test_no_errors_on_either_side_is_no_difference() -> None:
    outcome = compare_error_rates(0, 1204, 0, 1198, subject="all endpoints (candidate v3 vs baseline v2)")
    assert outcome.verdict is Verdict.PASS
    assert outcome.message == ("errors on all endpoints (candidate v3 vs baseline v2): candidate 0/1,204 vs "
                               "baseline 0/1,198: no difference")


def test_errors_against_a_clean_baseline_fail() -> None:
    outcome = compare_error_rates(61, 1204, 0, 1198, subject="s")
    assert outcome.verdict is Verdict.FAIL
    assert outcome.message.startswith("errors on s: candidate 5.07% (61/1,204) vs baseline 0% (0/1,198), "
                                      "Fisher p=")
    assert outcome.message.endswith("worse beyond the 0.5-point tolerance")
    assert outcome.value == pytest.approx(61 / 1204)


def test_a_significant_but_small_increase_is_within_tolerance() -> None:
    outcome = compare_error_rates(300, 100_000, 100, 100_000, subject="s")  # 0.3% vs 0.1%
    assert outcome.verdict is Verdict.PASS and "higher, but within the 0.5-point tolerance" in outcome.message


def test_a_few_errors_on_small_samples_are_not_significant() -> None:
    outcome = compare_error_rates(2, 200, 1, 200, subject="s")
    assert outcome.verdict is Verdict.PASS and outcome.message.endswith("not significantly higher")


def test_too_few_requests_for_an_error_comparison_is_no_data() -> None:
    outcome = compare_error_rates(0, 40, 0, 1000, subject="s", min_samples=100)
    assert outcome.verdict is Verdict.NO_DATA and "fewer than the minimum 100 on each side" in outcome.message


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
    profile = LoadProfile(LOCUSTFILE, users=8, spawn_rate=8, duration_s=4, min_requests=20)
    # Both runs at the same time: the comparison is over the same window.
    with ThreadPoolExecutor(2) as pool:
        candidate_run = pool.submit(run_load, profile, slow.endpoint(Role.CANDIDATE), record=recorded.append)
        baseline_run = pool.submit(run_load, profile, healthy.endpoint(Role.BASELINE))
        candidate, baseline = candidate_run.result(), baseline_run.result()
    assert isinstance(candidate, LoadResult) and isinstance(baseline, LoadResult)

    with pytest.raises(CheckFailed) as caught:
        compare_loads(candidate, baseline)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    # At least the injected 400 ms, however busy the machine (which only adds to it).
    median = re.match(r"latency on /api/checkout \(candidate v2-slow vs baseline v1\): candidate median (\d+)ms ",
                      lines[0])
    assert median is not None and int(median.group(1)) >= 400, lines[0]
    assert lines[0].endswith("worse beyond the max(10%, 5ms) tolerance")
    # Every outcome reached the candidate's recorder: latency and errors for both endpoints.
    assert [(o.check, o.verdict) for o in recorded] == [
        ("latency vs baseline", Verdict.FAIL), ("errors vs baseline", Verdict.PASS),
        ("latency vs baseline", Verdict.PASS), ("errors vs baseline", Verdict.PASS),
    ]
    assert recorded[0].subject == "/api/checkout (candidate v2-slow vs baseline v1)"
    assert "suites/load/locustfile.py, 8 users, spawn 8/s, 4s on http://" in recorded[0].source
    # The items endpoint alone compares fine.
    items = compare_loads(candidate, baseline, endpoint="/api/items", record=recorded.append)
    assert [o.verdict for o in items] == [Verdict.PASS, Verdict.PASS]
