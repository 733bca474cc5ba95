"""Load statistics: histogram accuracy, reservoir sampling, combining cells, the JSON round trip."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from releasegate.verifiers.stats import BUCKET_GROWTH, LatencyRecorder, Stats, bucket_index, bucket_midpoint_s


def lognormal_latencies(count: int, seed: int) -> list[float]:
    """Request latencies shaped like real ones: a bulk around 20 ms and a long tail."""
    rng = random.Random(seed)
    return [rng.lognormvariate(-4.0, 0.6) for _ in range(count)]


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank; round() first because 0.95 * 500 is 475.00000000000006 in floating point."""
    return sorted(values)[math.ceil(round(q * len(values), 6)) - 1]


def record(latencies: list[float], *, reservoir_size: int, failed_every: int = 0,
           seed: int = 1) -> LatencyRecorder:
    recorder = LatencyRecorder(reservoir_size=reservoir_size, rng=random.Random(seed))
    for i, latency in enumerate(latencies):
        recorder.add(latency, failed=bool(failed_every) and i % failed_every == 0)
    return recorder


def test_every_latency_falls_in_a_bucket_whose_midpoint_is_within_one_percent() -> None:
    for latency in (2e-5, 0.00123, 0.0421, 0.3, 1.7, 42.0, 599.0):
        midpoint = bucket_midpoint_s(bucket_index(latency))
        assert abs(midpoint - latency) / latency <= BUCKET_GROWTH ** 0.5 - 1 + 1e-9


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_histogram_quantiles_are_within_two_percent_once_samples_are_dropped(q: float) -> None:
    latencies = lognormal_latencies(50_000, seed=3)
    snapshot = record(latencies, reservoir_size=1_000).snapshot(duration_s=10)
    assert not snapshot.samples_complete and len(snapshot.samples) == 1_000
    estimate = snapshot.quantile(q)
    assert estimate is not None
    assert estimate == pytest.approx(exact_quantile(latencies, q), rel=0.02)


def test_quantiles_are_exact_while_the_sample_holds_every_request() -> None:
    latencies = lognormal_latencies(500, seed=4)
    snapshot = record(latencies, reservoir_size=1_000).snapshot(duration_s=5)
    assert snapshot.samples_complete
    assert snapshot.quantile(0.95) == exact_quantile(latencies, 0.95)
    assert (snapshot.min, snapshot.max) == (min(latencies), max(latencies))
    assert snapshot.avg == pytest.approx(statistics.fmean(latencies))
    assert snapshot.rps == pytest.approx(100.0)


def test_the_reservoir_is_bounded_and_a_uniform_sample() -> None:
    # First half fast, second half slow: a biased reservoir would hold mostly one of them.
    latencies = [0.01] * 20_000 + [0.1] * 20_000
    snapshot = record(latencies, reservoir_size=2_000).snapshot(duration_s=1)
    assert len(snapshot.samples) == 2_000
    slow_share = sum(1 for s in snapshot.samples if s == 0.1) / 2_000
    assert slow_share == pytest.approx(0.5, abs=0.05)


def test_counts_failures_and_rates() -> None:
    snapshot = record([0.01] * 1_000, reservoir_size=100, failed_every=20).snapshot(duration_s=4)
    assert (snapshot.count, snapshot.failures) == (1_000, 50)
    assert snapshot.error_rate == pytest.approx(0.05)
    assert snapshot.rps == pytest.approx(250)


def test_empty_stats_have_no_values() -> None:
    empty = Stats()
    assert [empty.quantile(0.95), empty.avg, empty.min, empty.error_rate, empty.rps] == [None] * 5
    assert Stats.combine([], duration_s=3) == Stats(duration_s=3)


def test_combining_complete_cells_keeps_every_sample() -> None:
    fast = record([0.01] * 300, reservoir_size=1_000).snapshot(duration_s=3)
    slow = record([0.2] * 100, reservoir_size=1_000, failed_every=10).snapshot(duration_s=3)
    both = Stats.combine([fast, slow], duration_s=3)
    assert (both.count, both.failures, both.samples_complete, len(both.samples)) == (400, 10, True, 400)
    assert both.quantile(0.75) == 0.01 and both.quantile(0.76) == 0.2
    assert (both.min, both.max) == (0.01, 0.2)
    assert both.rps == pytest.approx(400 / 3)


def test_combining_sampled_cells_weights_each_by_its_request_count() -> None:
    busy = record([0.01] * 9_000, reservoir_size=1_000).snapshot(duration_s=1)
    quiet = record([0.2] * 1_000, reservoir_size=1_000).snapshot(duration_s=1)
    both = Stats.combine([busy, quiet], duration_s=1)
    assert not both.samples_complete
    assert len(both.samples) == 1_000
    # The quiet cell's reservoir holds all of it; it must still be only 10% of the combined sample.
    assert sum(1 for s in both.samples if s == 0.2) == 100
    assert both.quantile(0.95) == pytest.approx(0.2, rel=0.02)


def test_json_round_trip() -> None:
    original = record(lognormal_latencies(3_000, seed=5), reservoir_size=500, failed_every=7).snapshot(
        duration_s=6.5)
    assert Stats.from_json(original.to_json(), duration_s=6.5) == original
