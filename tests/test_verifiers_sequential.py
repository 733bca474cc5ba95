"""Anytime-valid statistics: rate and quantile confidence sequences, the Lindon-Malek count test, the judges.

Every random draw is seeded; the assertions hold for these seeds by construction, not by luck.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.special import betaincinv, betaln

from releasegate.verifiers.sequential import (
    CountTest,
    Decision,
    ErrorComparison,
    Interval,
    LatencyComparison,
    judge_quantile_limit,
    judge_rate_limit,
    quantile_interval,
    quantile_ranks,
    rate_interval,
)
from releasegate.verifiers.stats import nearest_rank


def clopper_pearson(events: int, trials: int, alpha: float) -> Interval:
    lower = 0.0 if events == 0 else float(betaincinv(events, trials - events + 1, alpha / 2))
    upper = 1.0 if events == trials else float(betaincinv(events + 1, trials - events, 1 - alpha / 2))
    return Interval(lower, upper)


def demo_latencies(rng: np.random.Generator, count: int, scale: float = 1.0) -> np.ndarray:
    """Like the demo service: 10 ms + |gauss(0, 10 ms)|."""
    return np.sort((0.010 + np.abs(rng.normal(0.0, 0.010, count))) * scale)


def at_rank(values: np.ndarray):  # type: ignore[no-untyped-def]
    return lambda rank: float(values[rank - 1])


# --- rate_interval ---------------------------------------------------------------------------------------------

def test_rate_interval_edge_cases() -> None:
    assert rate_interval(0, 0, alpha=0.01) == Interval(0.0, 1.0)
    nothing = rate_interval(0, 100, alpha=0.01)
    assert nothing.lower == 0.0 and 0.0 < nothing.upper < 0.1
    everything = rate_interval(100, 100, alpha=0.01)
    assert everything.upper == 1.0 and 0.85 < everything.lower < 1.0
    one = rate_interval(0, 1, alpha=0.01)
    assert one.lower == 0.0 and one.upper > 0.99


@pytest.mark.parametrize(("events", "trials"), [(-1, 10), (11, 10), (0, -1)])
def test_rate_interval_rejects_impossible_counts(events: int, trials: int) -> None:
    with pytest.raises(ValueError):
        rate_interval(events, trials, alpha=0.01)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_rate_interval_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError):
        rate_interval(1, 10, alpha=alpha)


def test_rate_interval_target_zero_events_in_700_trials_is_below_one_percent() -> None:
    # The release case: no errors yet. A fixed-n exact interval needs ~460 trials for this; anytime validity
    # costs some, and a mixture tuned to small rates keeps the cost under 700.
    assert rate_interval(0, 700, alpha=0.01).upper < 0.01
    assert rate_interval(0, 460, alpha=0.01).upper > 0.01


def test_rate_interval_is_monotone() -> None:
    for trials in (10, 100, 1000):
        intervals = [rate_interval(events, trials, alpha=0.01) for events in range(trials + 1)]
        assert all(a.lower <= b.lower and a.upper <= b.upper for a, b in pairwise(intervals))
    uppers = [rate_interval(0, trials, alpha=0.01).upper for trials in range(1, 3000, 7)]
    assert all(a > b for a, b in pairwise(uppers))
    # A smaller alpha claims less.
    assert rate_interval(3, 300, alpha=0.001).upper > rate_interval(3, 300, alpha=0.01).upper


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_rate_interval_contains_clopper_pearson(alpha: float) -> None:
    # Valid at every look must cost something against an exact interval valid at one fixed n.
    for trials in (1, 2, 5, 20, 100, 700, 5000, 100_000):
        for events in sorted({0, 1, 2, 5, trials // 100, trials // 10, trials // 2, trials - 1, trials}):
            if not 0 <= events <= trials:
                continue
            ours, exact = rate_interval(events, trials, alpha=alpha), clopper_pearson(events, trials, alpha)
            assert ours.lower <= exact.lower + 1e-12 and ours.upper >= exact.upper - 1e-12, (events, trials)


def test_rate_interval_bounds_have_the_mixture_likelihood_at_the_threshold() -> None:
    # The ends solve S log p + F log(1 - p) = log(alpha) + log m(S, n): checked at one case by hand.
    events, trials, alpha = 7, 700, 0.01
    scales = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    log_m = math.log(sum(math.exp(betaln(events + 1, trials - events + b) + math.log(b)) for b in scales) / 5)
    interval = rate_interval(events, trials, alpha=alpha)
    for rate in (interval.lower, interval.upper):
        log_likelihood = events * math.log(rate) + (trials - events) * math.log1p(-rate)
        assert log_likelihood == pytest.approx(math.log(alpha) + log_m, abs=1e-8)


def test_rate_interval_holds_at_every_look_on_seeded_sequences() -> None:
    # 200 Bernoulli(1%) sequences of 3,000 trials, looked at every 10 trials: the sequence must hold at every
    # look on at least 1 - alpha of them (it holds on far more: the union bound over looks is not needed).
    rng, alpha, rate = np.random.default_rng(11), 0.1, 0.01
    misses = 0
    for _ in range(200):
        events = np.cumsum(rng.random(3000) < rate)
        misses += any(rate not in rate_interval(int(events[n - 1]), n, alpha=alpha) for n in range(10, 3001, 10))
    assert misses <= 200 * alpha


# --- quantile_interval -----------------------------------------------------------------------------------------

def test_quantile_interval_without_enough_values_is_unbounded() -> None:
    assert quantile_interval(0, at_rank(np.empty(0)), 0.5, alpha=0.01) == Interval(0.0, math.inf)
    values = np.arange(1.0, 11.0)
    few = quantile_interval(10, at_rank(values), 0.99, alpha=0.01)
    assert few.upper == math.inf and 0.0 < few.lower <= 10.0
    assert quantile_interval(5, at_rank(values), 0.5, alpha=0.01) == Interval(0.0, math.inf)
    # All ten values above the median would take 2^-10 of luck: the smallest value bounds it already.
    assert quantile_interval(10, at_rank(values), 0.5, alpha=0.01) == Interval(1.0, math.inf)


def test_quantile_interval_brackets_the_sample_and_the_true_quantile() -> None:
    rng = np.random.default_rng(5)
    values = np.sort(rng.random(20_000))
    for q in (0.5, 0.95, 0.99):
        interval = quantile_interval(len(values), at_rank(values), q, alpha=0.01)
        sample = values[nearest_rank(q, len(values)) - 1]
        assert interval.lower <= sample <= interval.upper
        assert interval.lower <= q <= interval.upper          # uniform: the q-quantile is q
        assert interval.upper - interval.lower < 0.05


def test_quantile_ranks_come_from_the_rate_sequence() -> None:
    # The lower rank is the fewest values at or below the quantile the rate sequence allows, the upper rank
    # one more than the most.
    count, q, alpha = 1000, 0.95, 0.01
    low, high = quantile_ranks(count, q, alpha)
    assert (count - low) / count > 1 - q and (count - (high - 1)) / count < 1 - q
    # "count - low slower than the quantile" is still possible, one more is not; likewise at the top.
    assert rate_interval(count - low, count, alpha=alpha).lower <= 1 - q
    assert rate_interval(count - low + 1, count, alpha=alpha).lower > 1 - q
    assert rate_interval(count - (high - 1), count, alpha=alpha).upper >= 1 - q
    assert rate_interval(count - high, count, alpha=alpha).upper < 1 - q


def test_quantile_interval_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        quantile_interval(10, at_rank(np.arange(10.0)), 1.0, alpha=0.01)
    with pytest.raises(ValueError):
        quantile_interval(-1, at_rank(np.arange(10.0)), 0.5, alpha=0.01)


# --- CountTest -------------------------------------------------------------------------------------------------

def events_to_reject(candidate_share: float, concentration: float, alpha: float = 0.05) -> int:
    """Candidate events needed for p < alpha with zero baseline events at a constant traffic split."""
    test = CountTest(alpha=alpha, concentration=concentration)
    for events in range(1, 200):
        trials = 1000 * events
        candidate_trials = round(candidate_share * trials)
        if test.look(events, candidate_trials, 0, trials - candidate_trials) < alpha:
            return events
    raise AssertionError("never rejected")


@pytest.mark.parametrize(("candidate_share", "expected"), [(0.5, (29, 12, 8)), (0.1, (10, 5, 3))])
def test_count_test_reproduces_the_lindon_malek_table(candidate_share: float, expected: tuple[int, ...]) -> None:
    # The research notes' table (alpha 0.05, zero baseline errors) for k = 100, 10, 2: the oracle that this is
    # Lindon & Malek's Dirichlet-multinomial test.
    assert tuple(events_to_reject(candidate_share, k) for k in (100, 10, 2)) == expected


def dirichlet_bayes_factor(candidate: int, baseline: int, share: float, concentration: float) -> float:
    a, b = concentration * share, concentration * (1 - share)
    log_bf = (betaln(a + candidate, b + baseline) - betaln(a, b) - candidate * math.log(share)
              - baseline * math.log1p(-share))
    return math.exp(log_bf)


@pytest.mark.parametrize(("candidate", "baseline", "share"), [(9, 0, 0.5), (20, 3, 0.5), (6, 1, 0.1), (40, 25, 0.3)])
def test_count_test_matches_the_closed_form_at_a_constant_split(candidate: int, baseline: int, share: float) -> None:
    # Exact with zero baseline events: the grid mixture is the paper's Bayes factor to well within 1%.
    test = CountTest(alpha=0.01, concentration=10)
    trials = 10_000
    p = test.look(candidate, round(share * trials), baseline, trials - round(share * trials))
    expected = min(1.0, 1 / dirichlet_bayes_factor(candidate, baseline, share, 10))
    assert p == pytest.approx(expected, rel=2e-3)


def test_count_test_p_value_never_increases_and_counts_never_decrease() -> None:
    rng = np.random.default_rng(3)
    test = CountTest()
    counts = np.zeros(4, dtype=int)
    previous = 1.0
    for _ in range(300):
        new_c, new_b = rng.poisson(40), rng.poisson(40)
        counts += (rng.binomial(new_c, 0.02), new_c, rng.binomial(new_b, 0.01), new_b)
        p = test.look(*(int(c) for c in counts))
        assert p <= previous
        previous = p
    assert previous < 0.01                    # 2% against 1% over 12,000 requests per arm is found
    with pytest.raises(ValueError, match="must not decrease"):
        test.look(int(counts[0]) - 1, int(counts[1]), int(counts[2]), int(counts[3]))


def test_count_test_is_one_sided() -> None:
    # A candidate with fewer errors is never "worse", however many.
    test = CountTest()
    assert test.look(0, 10_000, 100, 10_000) == 1.0


def test_count_test_attributes_events_with_each_intervals_exposure() -> None:
    # The same five candidate events are strong evidence when the candidate had 10% of the traffic in that
    # interval, and weak when it had 90%.
    small_share, large_share = CountTest(alpha=0.05), CountTest(alpha=0.05)
    small_share.look(0, 500, 0, 500)
    large_share.look(0, 500, 0, 500)
    assert small_share.look(5, 510, 0, 590) < large_share.look(5, 590, 0, 510)


# --- judges ----------------------------------------------------------------------------------------------------

def test_judge_rate_limit_each_way() -> None:
    passed = judge_rate_limit(0, 700, limit=0.01, alpha=0.01)
    assert passed.decision is Decision.PASS and passed.reason.startswith("upper bound 0.81")
    failed = judge_rate_limit(30, 1000, limit=0.01, alpha=0.01)
    assert failed.decision is Decision.FAIL and failed.reason.startswith("lower bound")
    assert judge_rate_limit(5, 1000, limit=0.01, alpha=0.01).decision is Decision.CONTINUE
    assert judge_rate_limit(0, 0, limit=0.01, alpha=0.01).decision is Decision.CONTINUE
    # below=False: the rate must exceed the limit.
    assert judge_rate_limit(1000, 1000, limit=0.9, alpha=0.01, below=False).decision is Decision.PASS
    assert judge_rate_limit(0, 1000, limit=0.5, alpha=0.01, below=False).decision is Decision.FAIL


def test_judge_quantile_limit_each_way() -> None:
    rng = np.random.default_rng(8)
    values = 0.010 + np.abs(rng.normal(0.0, 0.010, 3000))    # in arrival order; p95 ~30 ms

    def judge(limit_s: float, count: int = 3000):  # type: ignore[no-untyped-def]
        head = np.sort(values[:count])
        slow = int((head > limit_s).sum())
        return judge_quantile_limit(count, at_rank(head), slow, q=0.95, limit_s=limit_s, alpha=0.01)

    passed, failed = judge(0.050), judge(0.020)
    assert passed.decision is Decision.PASS and failed.decision is Decision.FAIL
    assert passed.interval is not None and passed.interval.lower < 0.031 < passed.interval.upper < 0.050
    assert judge(0.030, count=200).decision is Decision.CONTINUE


def test_error_comparison_three_errors_in_500_against_none_is_undecided() -> None:
    # The example: 3 of 500 against 0 of 500. Not a regression yet (p ~0.6: three events prove little
    # about the split), and not evidence of no regression either (the candidate's rate may still be ~3%).
    judgement = ErrorComparison().look(3, 500, 0, 500)
    assert judgement.decision is Decision.CONTINUE
    assert judgement.statistic.startswith("sequential p=0.6")
    assert judgement.estimate == pytest.approx(0.006)
    assert judgement.interval is not None and judgement.interval.upper > 0.005


def test_error_comparison_each_way() -> None:
    assert ErrorComparison().look(40, 1000, 0, 1000).decision is Decision.FAIL
    assert ErrorComparison().look(0, 5000, 0, 5000).decision is Decision.PASS
    # Significant but within tolerance: never a FAIL.
    small = ErrorComparison(tolerance_abs=0.05)
    assert small.look(40, 1000, 0, 1000).decision is not Decision.FAIL


def test_latency_comparison_each_way() -> None:
    rng = np.random.default_rng(21)
    baseline = demo_latencies(rng, 5000)
    same, slower = demo_latencies(rng, 5000), demo_latencies(rng, 5000, scale=1.3)
    passed = LatencyComparison().look(5000, at_rank(same), 5000, at_rank(baseline))
    assert passed.decision is Decision.PASS
    failed = LatencyComparison().look(5000, at_rank(slower), 5000, at_rank(baseline))
    assert failed.decision is Decision.FAIL and failed.reason.startswith(("p50", "p95", "p99"))
    few = LatencyComparison().look(50, at_rank(np.sort(same[::100])), 50, at_rank(np.sort(baseline[::100])))
    assert few.decision is Decision.CONTINUE


def test_latency_comparison_needs_a_tolerance_per_quantile() -> None:
    with pytest.raises(ValueError, match="no tolerance"):
        LatencyComparison(quantiles=(0.5, 0.9), tolerance_ratio={0.5: 0.1})


def test_a_a_smoke_no_false_alarm_on_seeded_runs() -> None:
    # 50 seeded A/A runs, a look every second for 60 s at 40 requests/s per arm: no FAIL (the rate of false
    # alarms over 1,000 runs is in bench/sequential_sim.py).
    rng = np.random.default_rng(2024)
    for _ in range(50):
        errors, latency = ErrorComparison(), LatencyComparison()
        cand, base = np.zeros(2, dtype=int), np.zeros(2, dtype=int)
        cand_latencies, base_latencies = np.empty(0), np.empty(0)
        for second in range(60):
            new_c, new_b = rng.poisson(40), rng.poisson(40)
            cand += (rng.binomial(new_c, 0.002), new_c)
            base += (rng.binomial(new_b, 0.002), new_b)
            assert errors.look(int(cand[0]), int(cand[1]), int(base[0]), int(base[1])).decision is not Decision.FAIL
            cand_latencies = np.sort(np.concatenate((cand_latencies, demo_latencies(rng, new_c))))
            base_latencies = np.sort(np.concatenate((base_latencies, demo_latencies(rng, new_b))))
            if second % 10 == 9:
                judgement = latency.look(len(cand_latencies), at_rank(cand_latencies), len(base_latencies),
                                         at_rank(base_latencies))
                assert judgement.decision is not Decision.FAIL
