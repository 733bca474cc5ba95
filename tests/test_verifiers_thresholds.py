"""Threshold expressions: parsing, usage errors, verdict messages, NO DATA and clear-breach rules."""

from __future__ import annotations

import pytest

from releasegate.core.checks import CheckFailed, Verdict, require
from releasegate.core.errors import ConfigError
from releasegate.verifiers.stats import LatencyRecorder, Stats
from releasegate.verifiers.thresholds import (
    Kind,
    format_count,
    format_fraction,
    format_rps,
    format_seconds,
    parse_threshold,
)


def stats(latencies_s: list[float], *, failures: int = 0, duration_s: float = 10.0) -> Stats:
    return Stats(count=len(latencies_s), failures=failures, duration_s=duration_s,
                 latency_sum_s=sum(latencies_s), fastest_s=min(latencies_s, default=None),
                 slowest_s=max(latencies_s, default=None), samples=tuple(latencies_s))


@pytest.mark.parametrize(("text", "metric", "kind", "quantile", "op", "limit"), [
    ("p(95) < 300ms", "p(95)", Kind.LATENCY, 0.95, "<", 0.3),
    ("p(99.9)<1s", "p(99.9)", Kind.LATENCY, 0.999, "<", 1.0),
    ("  p( 90 )   <=   0.25s ", "p(90)", Kind.LATENCY, 0.90, "<=", 0.25),
    ("avg < 50ms", "avg", Kind.LATENCY, None, "<", 0.05),
    ("med<=20ms", "med", Kind.LATENCY, 0.5, "<=", 0.02),
    ("min >= 1ms", "min", Kind.LATENCY, None, ">=", 0.001),
    ("max < 2s", "max", Kind.LATENCY, None, "<", 2.0),
    ("error_rate < 1%", "error_rate", Kind.RATE, None, "<", 0.01),
    ("error_rate<0.01", "error_rate", Kind.RATE, None, "<", 0.01),
    ("success_rate >= 99.5%", "success_rate", Kind.RATE, None, ">=", 0.995),
    ("rps > 20", "rps", Kind.THROUGHPUT, None, ">", 20.0),
    ("rps >= 20/s", "rps", Kind.THROUGHPUT, None, ">=", 20.0),
    ("requests >= 500", "requests", Kind.COUNT, None, ">=", 500.0),
    ("requests == 3", "requests", Kind.COUNT, None, "==", 3.0),
    ("value < 5%", "value", Kind.VALUE, None, "<", 0.05),
])
def test_valid_expressions(text: str, metric: str, kind: Kind, quantile: float | None, op: str,
                           limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.kind, threshold.op) == (metric, kind, op)
    assert threshold.limit == pytest.approx(limit)
    assert threshold.quantile == (None if quantile is None else pytest.approx(quantile))
    assert threshold.text == text.strip()


@pytest.mark.parametrize(("text", "problem"), [
    ("p95 < 300ms", "unknown metric 'p95'"),
    ("p(95) < 300", "a latency needs a unit"),
    ("p(95) < 300%", "a latency needs a unit"),
    ("p(0) < 1s", "a percentile must be above 0"),
    ("p(101) < 1s", "a percentile must be above 0"),
    ("error_rate < 5", "did you mean 5%?"),
    ("error_rate < 120%", "between 0% and 100%"),
    ("error_rate < 1ms", "a rate is a percentage"),
    ("rps > 2ms", "rps is a number of requests per second"),
    ("requests > 1.5", "whole number"),
    ("latency < 3ms", "unknown metric 'latency'"),
    ("p(95) ~ 300ms", "expected <metric> <operator> <value>"),
    ("p(95) <", "expected <metric> <operator> <value>"),
    ("", "expected <metric> <operator> <value>"),
])
def test_invalid_expressions_are_one_line_usage_errors_with_examples(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_threshold(text)
    message = str(caught.value)
    assert message.startswith(f"invalid threshold {text!r}: ")
    assert problem in message
    assert '"p(95) < 300ms"' in message and '"error_rate < 1%"' in message
    assert "\n" not in message
    assert caught.value.exit_code == 4


def test_latency_failure_message_reads_like_a_sentence() -> None:
    outcome = parse_threshold("p(95) < 300ms").evaluate(
        stats([0.2] * 1700 + [0.412] * 143), subject="/api/checkout (candidate v3)",
        source="locust suites/load/locustfile.py, 10 users, spawn 10/s, 15s", window="15.0s", min_samples=100)
    assert outcome.verdict is Verdict.FAIL
    # The measure, then the evidence: 143 of 1,843 requests over 300ms is surely more than the 5% p(95) allows.
    assert outcome.message.startswith("p(95) 412ms > 300ms over 1,843 requests on /api/checkout (candidate v3): ")
    assert "at least 5.44% of requests slower, > 5%" in outcome.message
    assert outcome.bound == "143/1843 slower than 300 ms, share [5.44%, 10.6%]"
    assert (outcome.value, outcome.display_value, outcome.threshold) == (0.412, "412ms", "300ms")
    assert outcome.samples == 1843
    assert outcome.source.startswith("locust suites/load/locustfile.py")
    assert outcome.window == "15.0s"


def test_error_rate_failure_shows_the_rate_and_the_count() -> None:
    outcome = parse_threshold("error_rate < 1%").evaluate(
        stats([0.01] * 2000, failures=98), subject="all endpoints (candidate v2-errors)", source="s",
        window="w", min_samples=100)
    assert outcome.message == ("error_rate 4.9% > 1% over 2,000 requests on all endpoints "
                               "(candidate v2-errors): lower bound 3.16% >= 1%")
    assert outcome.value == pytest.approx(0.049)
    assert dict(outcome.properties())["check.error_rate < 1%.bound"] == "98/2000, interval [3.16%, 7.15%]"


@pytest.mark.parametrize(("text", "failures", "flip"), [
    ("error_rate < 1%", 98, False),
    ("success_rate >= 99%", 98, True),  # judged on the failures: the interval turns over onto successes
    ("p(95) < 300ms", 0, False),
])
def test_a_bounded_checks_interval_and_limit_are_the_judgements_numbers(text: str, failures: int,
                                                                          flip: bool) -> None:
    threshold = parse_threshold(text)
    measured = stats([0.2] * 1857 + [0.412] * 143, failures=failures)
    outcome = threshold.evaluate(measured, subject="s", source="", window="", min_samples=100)
    judgement = threshold.judge(measured)
    assert judgement is not None and judgement.interval is not None
    low, high = judgement.interval.lower, judgement.interval.upper
    assert outcome.interval == ((1 - high, 1 - low) if flip else (low, high))
    assert outcome.limits == (threshold.limit,)
    assert outcome.interval[0] <= (outcome.value or 0.0) <= outcome.interval[1]  # on the value's own scale
    properties = dict(outcome.properties())
    assert [float(n) for n in properties[f"check.{text}.interval"].split()] == list(outcome.interval)
    assert float(properties[f"check.{text}.limits"]) == threshold.limit
    # an unbounded check has its limit and no interval
    rps = parse_threshold("rps > 20").evaluate(measured, subject="s", source="", window="", min_samples=100)
    assert (rps.interval, rps.limits) == (None, (20.0,)) and "check.rps > 20.interval" not in dict(rps.properties())


def test_passing_checks_say_so_with_the_operator_as_written() -> None:
    measured = stats([0.01] * 1000, duration_s=10)
    expressions = ("p(95) < 300ms", "error_rate < 1%", "rps > 20", "requests >= 300", "success_rate >= 99%")
    outcomes = [parse_threshold(t).evaluate(measured, subject="s", source="", window="", min_samples=100)
                for t in expressions]
    assert [o.verdict for o in outcomes] == [Verdict.PASS] * 5
    assert [o.message.split(": ")[0] for o in outcomes] == [
        "p(95) 10ms < 300ms over 1,000 requests on s",
        "error_rate 0% < 1% over 1,000 requests on s",
        "rps 100/s > 20/s over 1,000 requests on s",
        "requests 1,000 >= 300 on s",
        "success_rate 100% >= 99% over 1,000 requests on s",
    ]
    # Rates and quantiles pass on their confidence bound, not on the measure; rps and requests as measured.
    assert [bool(o.bound) for o in outcomes] == [True, True, False, False, True]
    assert outcomes[1].message.endswith(": upper bound 0.579% < 1%"), outcomes[1].message
    assert require(outcomes) == tuple(outcomes)


@pytest.mark.parametrize(("text", "requests", "failures", "verdict"), [
    ("error_rate < 1%", 300, 0, Verdict.INCONCLUSIVE),    # 0% measured, but 300 requests cannot show < 1%
    ("error_rate < 1%", 1000, 0, Verdict.PASS),
    ("error_rate < 1%", 2700, 17, Verdict.INCONCLUSIVE),  # 0.63%: its bound still reaches past 1%
    ("error_rate < 1%", 20_000, 126, Verdict.PASS),       # 0.63% again, now with the evidence
    ("error_rate < 1%", 400, 12, Verdict.INCONCLUSIVE),   # 3%, yet its lower bound 0.78% is not past 1%
    ("error_rate < 1%", 400, 20, Verdict.FAIL),           # 5%: its lower bound 1.8% is past 1%
    ("success_rate >= 99%", 3000, 3, Verdict.PASS),
    ("success_rate >= 99%", 400, 20, Verdict.FAIL),
])
def test_rates_are_decided_by_their_bound_not_by_the_measure(text: str, requests: int, failures: int,
                                                             verdict: Verdict) -> None:
    outcome = parse_threshold(text).evaluate(stats([0.01] * requests, failures=failures), subject="s",
                                             source="", window="", min_samples=100)
    assert outcome.verdict is verdict, outcome.message


def test_an_undecided_check_is_inconclusive_never_a_pass() -> None:
    outcome = parse_threshold("p(99) < 300ms").evaluate(stats([0.01] * 290 + [0.5] * 10), subject="s",
                                                        source="", window="", min_samples=100)
    # 3.3% of requests over 300ms: the p(99) measures 500ms, yet the bound holds both sides of the 1% allowed.
    assert outcome.verdict is Verdict.INCONCLUSIVE
    with pytest.raises(CheckFailed) as caught:
        require([outcome])
    assert str(caught.value).startswith("INCONCLUSIVE: p(99) 500ms > 300ms over 300 requests on s: ")
    assert caught.value.inconclusive_only


def test_from_a_histogram_the_bucket_holding_the_limit_counts_against_the_verdict() -> None:
    # 2% buckets: 299.5ms shares the 300ms limit's bucket; without raw samples it might be over the limit.
    recorder = LatencyRecorder()
    for latency in [0.01] * 980 + [0.2995] * 20:
        recorder.add(latency, failed=False)
    exact = recorder.snapshot(duration_s=1)
    histogram = recorder.snapshot(duration_s=1, keep_samples=False)
    assert histogram.slow_counts(0.3) == (0, 20) and exact.slow_counts(0.3) == (0, 0)
    threshold = parse_threshold("p(99) < 300ms")
    assert threshold.evaluate(exact, subject="s", source="", window="", min_samples=0).verdict is Verdict.PASS
    assert threshold.evaluate(histogram, subject="s", source="", window="", min_samples=0).verdict \
        is Verdict.INCONCLUSIVE


def test_too_few_requests_is_no_data_never_a_pass() -> None:
    outcome = parse_threshold("p(95) < 300ms").evaluate(
        stats([0.01] * 37), subject="/api/checkout (candidate v3)", source="", window="", min_samples=100)
    assert outcome.verdict is Verdict.NO_DATA
    assert outcome.message == ("p(95) < 300ms: only 37 requests on /api/checkout (candidate v3), fewer than "
                               "the minimum 100")
    with pytest.raises(CheckFailed) as caught:
        require([outcome])
    assert str(caught.value).startswith("NO DATA: p(95) < 300ms: only 37 requests")


def test_no_requests_at_all_is_no_data() -> None:
    outcome = parse_threshold("error_rate < 1%").evaluate(Stats(), subject="/api/x (candidate v3)", source="",
                                                          window="", min_samples=0)
    assert (outcome.verdict, outcome.display_value, outcome.value) == (Verdict.NO_DATA, "no data", None)
    assert outcome.message == "error_rate < 1%: no requests on /api/x (candidate v3)"


def test_values_without_data_or_with_nan_are_no_data() -> None:
    threshold = parse_threshold("success_rate >= 99%")
    for value in (None, float("nan")):
        outcome = threshold.evaluate_value(value, samples=500, subject="s", source="q", window="60s",
                                           min_samples=0, no_data_reason="empty result")
        assert (outcome.verdict, outcome.message) == (Verdict.NO_DATA, "success_rate >= 99%: empty result")
    unknown = threshold.evaluate_value(1.0, samples=None, subject="s", source="q", window="60s",
                                       min_samples=10)
    assert unknown.verdict is Verdict.NO_DATA


def test_a_value_equal_to_an_exclusive_limit_fails_and_close_values_get_more_digits() -> None:
    at_limit = parse_threshold("p(95) < 300ms").evaluate_value(0.3, samples=200, subject="s", source="",
                                                                window="", min_samples=0)
    # A Prometheus quantile has no request counts behind it here: it is compared as measured.
    assert at_limit.message == "p(95) 300ms >= 300ms over 200 requests on s"
    close = parse_threshold("p(95) < 300ms").evaluate_value(0.30041, samples=200, subject="s", source="",
                                                             window="", min_samples=0)
    assert close.display_value == "300.41ms"
    equal = parse_threshold("requests == 500").evaluate_value(499, samples=499, subject="s", source="",
                                                             window="", min_samples=0)
    assert equal.message == "requests 499 != 500 on s"


def test_quantiles_use_the_nearest_rank() -> None:
    thousand = stats([i / 1000 for i in range(1, 1001)])
    assert thousand.quantile(0.999) == 0.999
    assert parse_threshold("p(99.9) < 1s").value_of(thousand) == 0.999
    assert parse_threshold("med < 1s").value_of(thousand) == 0.5


@pytest.mark.parametrize(("text", "value", "shown", "limit", "message"), [
    ("value < 1%", 0.0, "0%", "1%", "value 0% < 1% on candidate v1"),
    ("value < 1%", 0.0063, "0.63%", "1%", "value 0.63% < 1% on candidate v1"),
    ("value < 1%", 0.049, "4.9%", "1%", "value 4.9% > 1% on candidate v1"),
    ("value >= 99.5%", 0.9995, "99.95%", "99.5%", "value 99.95% >= 99.5% on candidate v1"),
    ("value < 300ms", 0.412, "412ms", "300ms", "value 412ms > 300ms on candidate v1"),
    ("value < 2s", 1.25, "1.25s", "2s", "value 1.25s < 2s on candidate v1"),
    ("value > 20/s", 23.44, "23.4/s", "20/s", "value 23.4/s > 20/s on candidate v1"),
    ("value < 0.5", 0.25, "0.25", "0.5", "value 0.25 < 0.5 on candidate v1"),
])
def test_a_value_threshold_is_shown_in_the_unit_it_was_written_in(text: str, value: float, shown: str,
                                                                  limit: str, message: str) -> None:
    outcome = parse_threshold(text).evaluate_value(value, samples=None, subject="candidate v1", source="q",
                                                   window="60s", min_samples=0)
    assert (outcome.display_value, outcome.threshold, outcome.message) == (shown, limit, message)
    assert outcome.value == pytest.approx(value)  # still in base units
    properties = dict(outcome.properties())
    assert (properties[f"check.{text}.value"], properties[f"check.{text}.threshold"]) == (shown, limit)
    assert properties[f"check.{text}.samples"] == "-"  # unknown, never a made-up number


def test_a_percent_value_threshold_keeps_its_unit_with_a_sample_count_and_at_the_limit() -> None:
    threshold = parse_threshold("value<1%")
    assert (threshold.unit, parse_threshold("value < 0.01").unit) == ("%", None)
    over = threshold.evaluate_value(0.010041, samples=1843, subject="s", source="", window="", min_samples=0)
    assert over.message == "value 1.0041% > 1% over 1,843 requests on s"  # more digits, same unit
    assert dict(over.properties())["check.value<1%.samples"] == "1843"
    at_limit = threshold.evaluate_value(0.01, samples=1843, subject="s", source="", window="", min_samples=0)
    assert at_limit.message == "value 1% >= 1% over 1,843 requests on s"


def test_value_thresholds_are_for_raw_queries_only() -> None:
    with pytest.raises(ConfigError, match="raw Prometheus queries only"):
        parse_threshold("value < 1").evaluate(stats([0.1] * 10), subject="s", source="", window="",
                                              min_samples=0)


def test_formatting() -> None:
    assert [format_seconds(s) for s in (0.412, 0.0421, 0.00423, 0.000423, 1.25, 2.0)] == [
        "412ms", "42ms", "4.2ms", "0.42ms", "1.25s", "2s"]
    assert [format_fraction(f) for f in (0.049, 0.01, 0.9995, 0.0005, 0.0, 1 / 3)] == [
        "4.9%", "1%", "99.95%", "0.05%", "0%", "33.33%"]
    assert (format_rps(23.44), format_count(1843), format_count(1_204_000)) == ("23.4/s", "1,843",
                                                                                  "1,204,000")


def test_a_failure_is_named_before_an_undecided_check_beside_it() -> None:
    # The release's "why" quotes the first line: the decisive failure must be it, not the undecided total.
    undecided = parse_threshold("error_rate < 1%").evaluate(stats([0.01] * 300), subject="all endpoints",
                                                            source="", window="", min_samples=0)
    failed = parse_threshold("error_rate < 1%").evaluate(stats([0.01] * 400, failures=20), subject="/api/checkout",
                                                         source="", window="", min_samples=0)
    assert (undecided.verdict, failed.verdict) == (Verdict.INCONCLUSIVE, Verdict.FAIL)
    with pytest.raises(CheckFailed) as caught:
        require([undecided, failed])
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("error_rate 5% > 1% over 400 requests on /api/checkout: ")
    assert lines[1].startswith("INCONCLUSIVE: error_rate 0% < 1% over 300 requests on all endpoints: ")
    assert not caught.value.inconclusive_only
