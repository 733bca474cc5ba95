"""k6-style threshold expressions (`p(95) < 300ms`, `error_rate < 1%`, `rps > 20`) and their verdicts.

An expression is `<metric> <op> <value>`:
- latency: `p(N)` (N in (0, 100], e.g. 95, 99.9), `med`, `avg`, `min`, `max`; the value needs `ms` or `s`
- `error_rate`, `success_rate`: a percentage (`1%`) or a fraction (`0.01`)
- `rps`: requests per second (`20` or `20/s`); `requests`: a request count
- `value`: a plain number for raw PromQL results (`%`, `ms` and `s` are converted to base units)
Operators: `<`, `<=`, `>`, `>=`, `==`. Whitespace is free.

Values are in base units everywhere: seconds, fractions, requests per second.
Fail closed: fewer samples than the minimum, or no value at all, is NO_DATA, never a pass.

Pass on evidence: a rate (`error_rate`, `success_rate`) or a latency quantile (`p(N)`, `med`) under an
upper limit is decided by a time-uniform confidence bound (verifiers.sequential), not by the measured value
alone: PASS when the whole bound is inside the limit, FAIL when it is wholly outside, and INCONCLUSIVE
(more requests needed) otherwise. Being anytime-valid, the same rule may be applied every second while a
load runs. `avg`, `min`, `max`, `rps`, `requests` and raw `value`s have no such bound and are compared
as measured: `rps` and `requests` describe the load, and `min`/`max` are what the sample showed.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from releasegate.core.checks import CheckOutcome, Verdict
from releasegate.core.errors import ConfigError
from releasegate.core.versions import quoted
from releasegate.verifiers.sequential import Decision, Judgement, judge_quantile_limit, judge_rate_limit
from releasegate.verifiers.stats import Stats

EXAMPLES = ('"p(95) < 300ms", "avg <= 0.2s", "error_rate < 1%", "success_rate >= 99.5%", "rps > 20", '
            '"requests >= 500"')

DEFAULT_ALPHA = 0.01
"""Each bounded check is wrong with probability at most 1%, however often it is looked at."""

_VERDICTS = {Decision.PASS: Verdict.PASS, Decision.FAIL: Verdict.FAIL, Decision.CONTINUE: Verdict.INCONCLUSIVE}

_EXPRESSION = re.compile(
    r"""^\s*(?P<metric>p\s*\(\s*(?P<q>[0-9]*\.?[0-9]+)\s*\)|[A-Za-z_][A-Za-z0-9_]*)
    \s*(?P<op><=|>=|==|<|>)
    \s*(?P<number>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)
    \s*(?P<unit>ms|s|%|/s)?\s*$""",
    re.VERBOSE,
)

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
}


class Kind(StrEnum):
    LATENCY = "latency"
    RATE = "rate"
    THROUGHPUT = "throughput"
    COUNT = "count"
    VALUE = "value"


_KINDS = {
    "med": Kind.LATENCY, "avg": Kind.LATENCY, "min": Kind.LATENCY, "max": Kind.LATENCY,
    "error_rate": Kind.RATE, "success_rate": Kind.RATE,
    "rps": Kind.THROUGHPUT, "requests": Kind.COUNT, "value": Kind.VALUE,
}


# --- display ---------------------------------------------------------------------------------------------


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def format_seconds(seconds: float, *, precise: bool = False) -> str:
    """`412ms`, `4.2ms`, `0.42ms`, `1.25s`: milliseconds below a second."""
    extra = 2 if precise else 0
    if abs(seconds) >= 1:
        return _trim(f"{seconds:.{2 + extra}f}") + "s"
    ms = seconds * 1000
    digits = 0 if abs(ms) >= 10 else 1 if abs(ms) >= 1 else 2
    return _trim(f"{ms:.{digits + extra}f}") + "ms"


def format_fraction(fraction: float, *, precise: bool = False) -> str:
    """`4.9%`, `1%`, `99.95%`, `0.05%`."""
    percent = fraction * 100
    if percent and abs(percent) < 0.01:
        return f"{percent:.2g}%"
    return _trim(f"{percent:.{4 if precise else 2}f}") + "%"


def format_rps(rps: float, *, precise: bool = False) -> str:
    return _trim(f"{rps:.{3 if precise else 1}f}") + "/s"


def format_count(count: float) -> str:
    """Thousands separators: `1,843`."""
    return f"{round(count):,}"


def format_number(number: float, *, precise: bool = False) -> str:
    return f"{number:.{6 if precise else 4}g}"


_FORMATTERS: dict[Kind, Callable[..., str]] = {
    Kind.LATENCY: format_seconds, Kind.RATE: format_fraction, Kind.THROUGHPUT: format_rps,
    Kind.COUNT: lambda n, precise=False: format_count(n), Kind.VALUE: format_number,
}

# A `value` threshold is shown in the unit it was written in: `value < 1%` reads `0.63% < 1%`, not `0.0063`.
_VALUE_FORMATTERS: dict[str, Callable[..., str]] = {
    "%": format_fraction, "ms": format_seconds, "s": format_seconds, "/s": format_rps,
}


# --- parsing ---------------------------------------------------------------------------------------------


def _invalid(text: str, problem: str) -> ConfigError:
    # quoted: the expression as written, cut in the middle when long, so the message stays one readable line.
    return ConfigError(f"invalid threshold {quoted(text)}: {problem}; valid examples: {EXAMPLES}")


def _limit_in_base_units(text: str, kind: Kind, number: float, unit: str | None) -> float:
    if kind is Kind.LATENCY:
        if unit not in ("ms", "s"):
            raise _invalid(text, "a latency needs a unit, ms or s (300ms, 0.3s)")
        return number / 1000 if unit == "ms" else number
    if kind is Kind.RATE:
        if unit not in (None, "%"):
            raise _invalid(text, f"a rate is a percentage (1%) or a fraction (0.01), not {unit!r}")
        fraction = number / 100 if unit == "%" else number
        if unit is None and 1 < number <= 100:
            raise _invalid(text, f"a rate without % is a fraction from 0 to 1; did you mean "
                                 f"{_trim(str(number))}%?")
        if not 0 <= fraction <= 1:
            raise _invalid(text, "a rate must be between 0% and 100% (as a fraction: 0 to 1)")
        return fraction
    if kind is Kind.THROUGHPUT:
        if unit not in (None, "/s"):
            raise _invalid(text, f"rps is a number of requests per second (20 or 20/s), not {unit!r}")
        return number
    if kind is Kind.COUNT:
        if unit is not None or number != int(number):
            raise _invalid(text, "requests is a whole number of requests (500)")
        return number
    return {None: number, "%": number / 100, "ms": number / 1000, "s": number, "/s": number}[unit]


def parse_threshold(text: str) -> Threshold:
    """Parse one expression; a ConfigError (exit 4) names the expression and shows valid ones."""
    match = _EXPRESSION.match(text)
    if match is None:
        raise _invalid(text, "expected <metric> <operator> <value>")
    metric = match["metric"]
    quantile: float | None = None
    if match["q"] is not None:
        percent = float(match["q"])
        if not 0 < percent <= 100:
            raise _invalid(text, "a percentile must be above 0 and at most 100")
        quantile, metric, kind = percent / 100, f"p({_trim(match['q'])})", Kind.LATENCY
    elif metric in _KINDS:
        kind = _KINDS[metric]
        quantile = 0.5 if metric == "med" else None
    else:
        raise _invalid(text, f"unknown metric {quoted(metric)} (p(N), med, avg, min, max, error_rate, "
                             "success_rate, rps, requests, value)")
    number = float(match["number"])
    if not math.isfinite(number):
        raise _invalid(text, "the limit must be a finite number")
    limit = _limit_in_base_units(text, kind, number, match["unit"])
    return Threshold(text=text.strip(), metric=metric, kind=kind, quantile=quantile, op=match["op"],
                     limit=limit, unit=match["unit"])


# --- evaluation ------------------------------------------------------------------------------------------


def _failed_relation(op: str, value: float, limit: float) -> str:
    """How the measure relates to the limit when `value op limit` is false: `412ms > 300ms`."""
    if op == "==":
        return "!="
    if op in ("<", "<="):
        return ">" if value > limit else ">="
    return "<" if value < limit else "<="


@dataclass(frozen=True)
class Threshold:
    """One parsed expression. `limit` is in base units (seconds, fraction, requests/s, requests)."""

    text: str
    metric: str  # p(95), med, avg, min, max, error_rate, success_rate, rps, requests, value
    kind: Kind
    quantile: float | None
    op: str
    limit: float
    unit: str | None = None  # as written (`%`, `ms`, `s`, `/s`); a `value` threshold is displayed in it

    def display(self, value: float, *, precise: bool = False) -> str:
        formatter = _FORMATTERS[self.kind]
        if self.kind is Kind.VALUE and self.unit is not None:
            formatter = _VALUE_FORMATTERS[self.unit]
        return str(formatter(value, precise=precise))

    @property
    def limit_display(self) -> str:
        return self.display(self.limit)

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.limit)

    def value_of(self, stats: Stats) -> float | None:
        """The measure this threshold is about, from load statistics; None when there is none."""
        if self.quantile is not None:
            return stats.quantile(self.quantile)
        measures: dict[str, Callable[[], float | None]] = {
            "avg": lambda: stats.avg, "min": lambda: stats.min, "max": lambda: stats.max,
            "error_rate": lambda: stats.error_rate,
            "success_rate": lambda: None if stats.error_rate is None else 1 - stats.error_rate,
            "rps": lambda: stats.rps, "requests": lambda: float(stats.count),
        }
        if self.metric not in measures:
            raise ConfigError(f"threshold {self.text!r}: 'value' applies to raw Prometheus queries only; "
                              f"for load results use one of {EXAMPLES}")
        return measures[self.metric]()

    @property
    def bounded(self) -> bool:
        """Whether a confidence bound decides this threshold (a rate, or a quantile under a limit)."""
        if self.kind is Kind.RATE:
            return self.op != "=="
        return self.quantile is not None and self.op in ("<", "<=")

    def judge(self, stats: Stats, *, alpha: float = DEFAULT_ALPHA) -> Judgement | None:
        """The anytime-valid judgement of a bounded threshold on these counts; None when it is not bounded.

        A quantile under a limit is the share of requests slower than the limit under 1 - q. From a
        histogram that share is known only to the bucket holding the limit: the failing side counts that
        bucket as fast, the passing side as slow, so neither verdict is claimed on the histogram's account.
        """
        if not self.bounded:
            return None
        if self.kind is Kind.RATE:
            # success_rate >= 99% is a failure rate below 1%; error_rate > x (rare) a failure rate above x.
            if self.metric == "success_rate":
                return judge_rate_limit(stats.failures, stats.count, limit=1 - self.limit, alpha=alpha,
                                        below=self.op in (">", ">="))
            return judge_rate_limit(stats.failures, stats.count, limit=self.limit, alpha=alpha,
                                    below=self.op in ("<", "<="))
        return self.judge_slow_share(stats.count, stats.slow_counts(self.limit), stats.value_at_rank,
                                     alpha=alpha)

    def judge_slow_share(self, count: int, slow: tuple[int, int], value_at_rank: Callable[[int], float], *,
                         alpha: float = DEFAULT_ALPHA) -> Judgement:
        """A quantile under a limit, judged on the requests slower than the limit: (surely, at most) of
        `count`, apart when a histogram bucket holds the limit; `value_at_rank` shows the quantile's bound."""
        assert self.quantile is not None and self.bounded
        surely_slow, maybe_slow = slow
        failing = judge_quantile_limit(count, value_at_rank, surely_slow, q=self.quantile, limit_s=self.limit,
                                       alpha=alpha)
        if failing.decision is Decision.FAIL or surely_slow == maybe_slow:
            return failing
        passing = judge_quantile_limit(count, value_at_rank, maybe_slow, q=self.quantile, limit_s=self.limit,
                                       alpha=alpha)
        if passing.decision is Decision.PASS:
            return passing
        return replace(passing, decision=Decision.CONTINUE, reason=(
            f"undecided: {format_count(surely_slow)} to {format_count(maybe_slow)} of "
            f"{format_count(count)} requests are slower than {self.limit_display} (the histogram bucket "
            "holding the limit is on both sides of it)"))

    def evaluate(self, stats: Stats, *, subject: str, source: str, window: str,
                 min_samples: int, alpha: float = DEFAULT_ALPHA) -> CheckOutcome:
        """The verdict of this threshold on load statistics; NO_DATA below `min_samples` requests."""
        value = self.value_of(stats) if stats.count else None
        judgement = self.judge(stats, alpha=alpha) if stats.count else None
        return self.evaluate_value(value, samples=stats.count, subject=subject, source=source, window=window,
                                   min_samples=min_samples, judgement=judgement)

    def evaluate_value(self, value: float | None, *, samples: int | None, subject: str, source: str,
                       window: str, min_samples: int, no_data_reason: str | None = None,
                       judgement: Judgement | None = None, alpha: float = DEFAULT_ALPHA) -> CheckOutcome:
        """The verdict on an already measured value (a Prometheus result, say).

        `value` None or NaN is NO_DATA (`no_data_reason` says why); so is a sample count below
        `min_samples`, or an unknown sample count when a minimum is asked for. A rate with a known sample
        count is decided by its confidence bound (events = rate x samples) unless `judgement` is given.
        """
        reason = self._no_data_reason(value, samples, subject, min_samples, no_data_reason)
        if reason is not None or value is None:
            return self._outcome(Verdict.NO_DATA, value, samples, subject, source, window,
                                 f"{self.text}: {reason}")
        if judgement is None and self.kind is Kind.RATE and self.bounded and samples:
            judgement = self._judge_rate_value(value, samples, alpha)
        passed = self.holds(value)
        relation = self.op if passed else _failed_relation(self.op, value, self.limit)
        shown = self.display(value)
        if shown == self.limit_display and value != self.limit:
            shown = self.display(value, precise=True)  # "300ms > 300ms" would read as a lie
        over = "" if self.kind is Kind.COUNT or samples is None else f" over {format_count(samples)} requests"
        message = f"{self.metric} {shown} {relation} {self.limit_display}{over} on {subject}"
        verdict = Verdict.PASS if passed else Verdict.FAIL
        if judgement is not None:
            verdict = _VERDICTS[judgement.decision]
            message += f": {judgement.reason}"
        return self._outcome(verdict, value, samples, subject, source, window, message, shown,
                             bound=judgement.statistic if judgement is not None else "",
                             interval=self.interval_of(judgement))

    def interval_of(self, judgement: Judgement | None) -> tuple[float, float] | None:
        """The judgement's interval on this threshold's own measure: `success_rate` is judged on the failures
        (verifiers.sequential is tightest at small rates), so its interval is turned back into successes."""
        if judgement is None or judgement.interval is None:
            return None
        low, high = judgement.interval.lower, judgement.interval.upper
        return (1 - high, 1 - low) if self.metric == "success_rate" else (low, high)

    def _judge_rate_value(self, value: float, samples: int, alpha: float) -> Judgement:
        """A measured rate over `samples` requests (Prometheus): its events are the rate's share of them."""
        failure_rate = 1 - value if self.metric == "success_rate" else value
        failures = min(samples, max(0, round(failure_rate * samples)))
        judgement = self.judge(Stats(count=samples, failures=failures), alpha=alpha)
        assert judgement is not None  # every rate threshold but `==` is bounded
        return judgement

    def _no_data_reason(self, value: float | None, samples: int | None, subject: str, min_samples: int,
                        no_data_reason: str | None) -> str | None:
        if samples is not None and samples < min_samples:
            if samples == 0:
                return f"no requests on {subject}"
            return (f"only {format_count(samples)} requests on {subject}, fewer than the minimum "
                    f"{format_count(min_samples)}")
        if samples is None and min_samples > 0:
            return f"the request count behind the value on {subject} is unknown (minimum {min_samples})"
        if value is None or math.isnan(value):
            if no_data_reason:
                return no_data_reason
            return f"no requests on {subject}" if samples == 0 else f"no data on {subject}"
        return None

    def _outcome(self, verdict: Verdict, value: float | None, samples: int | None, subject: str, source: str,
                 window: str, message: str, shown: str | None = None, bound: str = "",
                 interval: tuple[float, float] | None = None) -> CheckOutcome:
        usable = value is not None and not math.isnan(value)
        return CheckOutcome(
            check=self.text, verdict=verdict, value=value if usable else None,
            display_value=shown or (self.display(value) if usable and value is not None else "no data"),
            threshold=self.limit_display, subject=subject, source=source, window=window,
            samples=samples, message=message, bound=bound, interval=interval, limits=(self.limit,),
        )

