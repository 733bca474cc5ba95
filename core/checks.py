"""The outcome of one verification check, as every verifier reports it and every report shows it.

A check has four outcomes, not two: NO_DATA (nothing measured, or fewer samples than the minimum) and
INCONCLUSIVE (measured, but the evidence decided neither way before the window ran out) are never a pass
(fail closed); each has its own label so a reader knows whether to fix, feed or extend the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    INCONCLUSIVE = "inconclusive"


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
            *([(f"{key}.looks", str(self.looks))] if self.looks is not None else []),
            *([(f"{key}.decided_after_s", f"{self.decided_after_s:.1f}")] if self.decided_after_s is not None
              else []),
            *([(f"{key}.message", self.message)] if not self.passed else []),  # why, for the reports
        ]


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
