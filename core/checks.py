"""The outcome of one verification check, as every verifier reports it and every report shows it.

A check has four outcomes, not two: NO_DATA (nothing measured, or fewer samples than the minimum) and
INCONCLUSIVE (measured, but the evidence decided neither way before the window ran out) are never a pass
(fail closed); each has its own label so a reader knows whether to fix, feed or extend the check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class ArmBound:
    """A comparison's confidence interval on one arm's quantile, in seconds: `high` may be math.inf (the
    sequence has no upper bound yet)."""

    arm: str  # "candidate" or "baseline"
    quantile: float  # 0.95 for p95
    low: float
    high: float


@dataclass(frozen=True)
class CheckOutcome:
    """One measured value against one threshold, with everything a reader needs to trust it."""

    check: str  # the expression as written: "p(95) < 300ms", "success_rate >= 99%"
    verdict: Verdict
    value: float | None  # in base units: seconds, fractions, requests per second
    display_value: str  # "412ms", "4.9%", "no data"
    threshold: str  # "300ms"
    subject: str  # what was measured: "/api/checkout (candidate v3)"
    source: str  # the PromQL query or the load profile
    window: str  # "60s", or the load duration
    samples: int | None  # requests behind the value; None: unknown (shown as "-")
    message: str  # one line: "p(95) 412ms > 300ms over 1,843 requests on /api/checkout (candidate v3)"
    bound: str = ""  # the confidence bound the verdict rests on: "upper bound 0.92%", "sequential p=0.003"
    looks: int | None = None  # how often a sequential check looked at its data before it decided
    decided_after_s: float | None = None  # from the first request to the decision
    scope: str = ""  # which part of the traffic, when one check runs on several: "/api/checkout", "v2"
    # The numbers behind `bound` and `threshold`, for charts and tools (the text is for people): the confidence
    # interval on `value` (same quantity and base units; `high` may be math.inf), the limits the verdict
    # compared with (one, or the two ends of a band; a relative threshold resolved to the number it was), and
    # a comparison's interval on each arm's judged quantiles.
    interval: tuple[float, float] | None = None
    limits: tuple[float, ...] = ()
    arms: tuple[ArmBound, ...] = ()

    @property
    def key(self) -> str:
        """The check's name in properties and reports, unique within one test: the expression, and its
        scope in brackets when one expression is judged on several parts of the traffic (per endpoint)."""
        return f"{self.check} [{self.scope}]" if self.scope else self.check

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def properties(self, prefix: str = "check") -> list[tuple[str, str]]:
        """Name/value pairs for a JUnit testcase's <properties>: `<prefix>.<key>.<field>`."""
        key = f"{prefix}.{self.key}"
        return [
            (f"{key}.verdict", self.verdict.value),
            (f"{key}.value", self.display_value),
            (f"{key}.threshold", self.threshold),
            (f"{key}.subject", self.subject),
            (f"{key}.source", self.source),
            (f"{key}.window", self.window),
            (f"{key}.samples", "-" if self.samples is None else str(self.samples)),  # "-": unknown
            *([(f"{key}.bound", self.bound)] if self.bound else []),
            *([(f"{key}.interval", format_numbers(self.interval))] if self.interval is not None else []),
            *([(f"{key}.limits", format_numbers(self.limits))] if self.limits else []),
            *([(f"{key}.arms", format_arms(self.arms))] if self.arms else []),
            *([(f"{key}.looks", str(self.looks))] if self.looks is not None else []),
            *([(f"{key}.decided_after_s", f"{self.decided_after_s:.1f}")] if self.decided_after_s is not None
              else []),
            *([(f"{key}.message", self.message)] if not self.passed else []),  # why, for the reports
        ]


# --- the numbers as JUnit property values: space-separated, so a shell script splits them with `read` -------


def format_numbers(numbers: Iterable[float]) -> str:
    """`0 0.00317`: each number as Python's shortest exact repr (`1e-05`, `inf`), so it reads back unchanged."""
    return " ".join(repr(float(number)) for number in numbers)


def parse_numbers(text: str) -> tuple[float, ...]:
    """The numbers of `format_numbers`; ValueError when one is not a number."""
    return tuple(float(part) for part in text.split())


def format_arms(arms: Iterable[ArmBound]) -> str:
    """`candidate 0.95 0.0724 0.0835; baseline 0.95 0.0316 0.0359`: one `arm quantile low high` per arm and
    quantile, `; ` between them."""
    return "; ".join(f"{arm.arm} {format_numbers((arm.quantile, arm.low, arm.high))}" for arm in arms)


def parse_arms(text: str) -> tuple[ArmBound, ...]:
    """The arms of `format_arms`; ValueError when one is malformed."""
    found = []
    for part in text.split(";"):
        if not part.strip():
            continue
        arm, *numbers = part.split()
        quantile, low, high = parse_numbers(" ".join(numbers))
        found.append(ArmBound(arm, quantile, low, high))
    return tuple(found)


def finite_or_none(number: float) -> float | None:
    """JSON has no infinity: an unbounded end is null there."""
    return number if math.isfinite(number) else None


RecordCheck = Callable[[CheckOutcome], None]
"""Where a verifier sends each outcome; the pytest plugin turns them into JUnit properties."""


def ignore_check(outcome: CheckOutcome) -> None:
    """The recorder used outside a test run."""


class CheckFailed(AssertionError):
    """One or more checks failed, had no data or were inconclusive. One line per check that did not pass.

    An AssertionError so that pytest reports it as a test failure (verdict: rolled back), not an error.
    """

    def __init__(self, outcomes: Sequence[CheckOutcome]) -> None:
        self.outcomes = tuple(outcomes)
        # Failures and missing data first: the first line is what a release's "why" quotes, and a decisive
        # failure explains a stop better than a check that was still undecided beside it.
        failing = sorted((o for o in self.outcomes if not o.passed),
                         key=lambda o: o.verdict is Verdict.INCONCLUSIVE)
        super().__init__("\n".join(_label(o) + o.message for o in failing))

    @property
    def inconclusive_only(self) -> bool:
        """Nothing failed and nothing lacked data: only undecided checks stopped it (a person may extend)."""
        return all(o.verdict in (Verdict.PASS, Verdict.INCONCLUSIVE) for o in self.outcomes)


_LABELS = {Verdict.NO_DATA: "NO DATA: ", Verdict.INCONCLUSIVE: "INCONCLUSIVE: "}


def _label(outcome: CheckOutcome) -> str:
    return _LABELS.get(outcome.verdict, "")


def require(outcomes: Iterable[CheckOutcome]) -> tuple[CheckOutcome, ...]:
    """Return the outcomes when all passed; raise CheckFailed naming every one that did not."""
    result = tuple(outcomes)
    if not result:
        raise CheckFailed([CheckOutcome(
            check="(no checks)", verdict=Verdict.NO_DATA, value=None, display_value="no data", threshold="",
            subject="", source="", window="", samples=None, message="no check was evaluated")])
    if not all(o.passed for o in result):
        raise CheckFailed(result)
    return result
