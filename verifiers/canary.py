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
    outcome = share_outcome(
        version, result.versions.get(version, 0), result.requests, expected_percent,
        tolerance_pp=tolerance_pp, min_samples=min_requests, counted="requests through the service",
        check=f"share of {version} == {expected_percent}% ± {tolerance_pp:g}pp",
        subject=f"{version} via the service ({result.who()})", source=result.profile.describe(),
        window=result.window)
    record(outcome)
    require([outcome])
    return outcome


def share_outcome(name: str, served: int, total: int, expected_percent: float, *, tolerance_pp: float,
                  min_samples: int, counted: str, check: str, subject: str, source: str,
                  window: str) -> CheckOutcome:
    """The verdict on "`name` served `served` of `total` requests, `expected_percent` ± `tolerance_pp` was
    wanted"; `counted` says what the requests are ("requests through the service"). Fewer than
    `min_samples` (at least one) is NO DATA, never a pass."""
    threshold = f"{expected_percent:g}% ± {tolerance_pp:g}pp"
    band = ((expected_percent - tolerance_pp) / 100, (expected_percent + tolerance_pp) / 100)
    if total < max(min_samples, 1):
        return CheckOutcome(
            check=check, verdict=Verdict.NO_DATA, value=None, display_value="no data", threshold=threshold,
            subject=subject, source=source, window=window, samples=total, limits=band,
            message=f"share of {name}: only {format_count(total)} {counted}, fewer than the minimum "
                    f"{format_count(min_samples)}")
    share = 100.0 * served / total
    verdict = Verdict.PASS if abs(share - expected_percent) <= tolerance_pp else Verdict.FAIL
    relation = "within" if verdict is Verdict.PASS else "outside"
    return CheckOutcome(
        check=check, verdict=verdict, value=share / 100, display_value=f"{share:.1f}%", threshold=threshold,
        subject=subject, source=source, window=window, samples=total, limits=band,
        message=f"share of {name}: {share:.1f}% ({format_count(served)} of {format_count(total)} {counted}), "
                f"{relation} {tolerance_pp:g}pp of {expected_percent:g}%")
