"""Canary checks on a load sent through the public service: the candidate's share of it, per version.

The split divides synthetic requests as it divides users, so a load through the service measures what
users get at this step: how many of them the candidate served, and how each version answered them.
"""

from __future__ import annotations

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.verifiers.load import LoadResult
from releasegate.verifiers.thresholds import format_count


def check_share(result: LoadResult, version: str, expected_percent: int, *, tolerance_pp: float = 2.0,
                min_requests: int = 100, record: RecordCheck = ignore_check) -> CheckOutcome:
    """The share of the run's requests that `version` served is within `tolerance_pp` of the step's weight.

    Fewer than `min_requests` requests is NO DATA, never a pass. Raises CheckFailed when it does not hold.
    """
    served = result.versions.get(version, 0)
    total = result.requests
    check = f"share of {version} == {expected_percent}% ± {tolerance_pp:g}pp"
    subject = f"{version} via the service ({result.who()})"
    if total < min_requests:
        outcome = CheckOutcome(
            check=check, verdict=Verdict.NO_DATA, value=None, display_value="no data",
            threshold=f"{expected_percent}% ± {tolerance_pp:g}pp", subject=subject,
            source=result.profile.describe(), window=result.window, samples=total,
            message=f"NO DATA: share of {version}: only {format_count(total)} requests, fewer than the minimum "
                    f"{format_count(min_requests)}")
    else:
        share = 100.0 * served / total
        verdict = Verdict.PASS if abs(share - expected_percent) <= tolerance_pp else Verdict.FAIL
        relation = "within" if verdict is Verdict.PASS else "outside"
        outcome = CheckOutcome(
            check=check, verdict=verdict, value=share / 100, display_value=f"{share:.1f}%",
            threshold=f"{expected_percent}% ± {tolerance_pp:g}pp", subject=subject,
            source=result.profile.describe(), window=result.window, samples=total,
            message=f"share of {version}: {share:.1f}% of {format_count(total)} requests through the service, "
                    f"{relation} {tolerance_pp:g}pp of the step's {expected_percent}%")
    record(outcome)
    require([outcome])
    return outcome
