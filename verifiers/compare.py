"""Candidate vs baseline on the same window: latency by a rank test, errors by a test on proportions.

A comparison fails only when the difference is both statistically significant and larger than a
tolerance (the effect size): on huge samples a 1% slowdown is significant but harmless, and on tiny
samples a large difference may be noise. Fewer samples than the minimum on either side is NO DATA.

Latency effect size is measured on the median, the location the Mann-Whitney U test is sensitive to;
tail latency is what the absolute `p(95) < ...` thresholds are for.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from scipy.stats import fisher_exact, mannwhitneyu

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, require
from releasegate.verifiers.load import LoadResult
from releasegate.verifiers.thresholds import format_count, format_fraction, format_seconds


def _format_p(p: float) -> str:
    return f"{p:.2g}"


def _signed_percent(candidate: float, baseline: float) -> str:
    if baseline <= 0:
        return "n/a" if candidate <= 0 else "+inf%"
    return f"{(candidate - baseline) / baseline * 100:+.0f}%"


def _judge(p: float, alpha: float, beyond_tolerance: bool, tolerance_text: str,
           worse: str) -> tuple[Verdict, str]:
    """Fail only on a difference that is both significant and larger than the tolerance."""
    if p < alpha and beyond_tolerance:
        return Verdict.FAIL, f"worse beyond the {tolerance_text} tolerance"
    if p < alpha:
        return Verdict.PASS, f"{worse}, but within the {tolerance_text} tolerance"
    return Verdict.PASS, f"not significantly {worse}"


def compare_latency(candidate_samples: Sequence[float], baseline_samples: Sequence[float], *, subject: str,
                    alpha: float = 0.01, tolerance_ratio: float = 0.10, tolerance_abs_s: float = 0.005,
                    min_samples: int = 50, source: str = "", window: str = "") -> CheckOutcome:
    """Is the candidate slower? One-sided Mann-Whitney U ("candidate greater") on latencies in seconds.

    FAIL when p < alpha AND the candidate median exceeds the baseline median by more than
    max(tolerance_ratio x baseline median, tolerance_abs_s).
    """
    n_cand, n_base = len(candidate_samples), len(baseline_samples)
    counts = f"{format_count(n_cand)}/{format_count(n_base)} requests"
    tolerance_text = f"max({tolerance_ratio:.0%}, {format_seconds(tolerance_abs_s)})"

    def outcome(verdict: Verdict, value: float | None, message: str) -> CheckOutcome:
        return CheckOutcome(
            check="latency vs baseline", verdict=verdict, value=value,
            display_value="no data" if value is None else f"median {format_seconds(value)}",
            threshold=f"baseline median + {tolerance_text} (alpha {alpha:g})", subject=subject, source=source,
            window=window, samples=n_cand, message=message)

    if min(n_cand, n_base) < max(min_samples, 1):
        return outcome(Verdict.NO_DATA, None,
                       f"latency on {subject}: only {counts} (candidate/baseline), fewer than the minimum "
                       f"{format_count(min_samples)} on each side")
    cand_median, base_median = statistics.median(candidate_samples), statistics.median(baseline_samples)
    p = float(mannwhitneyu(candidate_samples, baseline_samples, alternative="greater").pvalue)
    allowed = max(tolerance_ratio * base_median, tolerance_abs_s)
    verdict, conclusion = _judge(p, alpha, cand_median - base_median > allowed, tolerance_text, "slower")
    return outcome(verdict, cand_median, (
        f"latency on {subject}: candidate median {format_seconds(cand_median)} vs baseline "
        f"{format_seconds(base_median)} ({_signed_percent(cand_median, base_median)}), Mann-Whitney "
        f"p={_format_p(p)} over {counts}: {conclusion}"))


def compare_error_rates(cand_errors: int, cand_total: int, base_errors: int, base_total: int, *, subject: str,
                        alpha: float = 0.01, tolerance_abs: float = 0.005, min_samples: int = 100,
                        source: str = "", window: str = "") -> CheckOutcome:
    """Does the candidate fail more often? One-sided Fisher's exact test on the 2x2 table.

    Fisher's test is exact at any count, including zero baseline errors (where a normal approximation
    breaks down). FAIL when p < alpha AND the candidate rate exceeds the baseline rate by more than
    `tolerance_abs` (0.005 = half a percentage point).
    """
    cand = f"{format_count(cand_errors)}/{format_count(cand_total)}"
    base = f"{format_count(base_errors)}/{format_count(base_total)}"
    tolerance_text = f"{tolerance_abs * 100:g}-point"

    def outcome(verdict: Verdict, value: float | None, message: str) -> CheckOutcome:
        return CheckOutcome(
            check="errors vs baseline", verdict=verdict, value=value,
            display_value="no data" if value is None else format_fraction(value),
            threshold=f"baseline rate + {format_fraction(tolerance_abs)} (alpha {alpha:g})", subject=subject,
            source=source, window=window, samples=cand_total, message=message)

    if min(cand_total, base_total) < max(min_samples, 1):
        return outcome(Verdict.NO_DATA, None, f"errors on {subject}: only {cand} vs {base} requests "
                                              f"(candidate/baseline), fewer than the minimum "
                                              f"{format_count(min_samples)} on each side")
    cand_rate, base_rate = cand_errors / cand_total, base_errors / base_total
    if cand_errors == 0 and base_errors == 0:
        return outcome(Verdict.PASS, 0.0,
                       f"errors on {subject}: candidate {cand} vs baseline {base}: no difference")
    table = [[cand_errors, cand_total - cand_errors], [base_errors, base_total - base_errors]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    verdict, conclusion = _judge(p, alpha, cand_rate - base_rate > tolerance_abs, tolerance_text, "higher")
    return outcome(verdict, cand_rate, (
        f"errors on {subject}: candidate {format_fraction(cand_rate)} ({cand}) vs baseline "
        f"{format_fraction(base_rate)} ({base}), Fisher p={_format_p(p)}: {conclusion}"))


def compare_loads(candidate: LoadResult, baseline: LoadResult, *, endpoint: str | None = None,
                  record: RecordCheck | None = None, alpha: float = 0.01, tolerance_ratio: float = 0.10,
                  tolerance_abs_s: float = 0.005, error_tolerance_abs: float = 0.005,
                  min_samples: int | None = None) -> tuple[CheckOutcome, ...]:
    """Latency and errors of two load runs, per endpoint (all endpoints of either run when None).

    Comparing endpoint by endpoint keeps a different request mix from looking like a regression.
    Outcomes go to `record` (default: the candidate run's recorder); raises CheckFailed on any FAIL or
    NO DATA. Run both loads at the same time (two run_load calls in threads) for the same window.
    """
    recorder = candidate.record if record is None else record
    names = [endpoint] if endpoint is not None else sorted(set(candidate.endpoints) | set(baseline.endpoints))
    minimum = min(candidate.profile.min_requests, baseline.profile.min_requests) if min_samples is None \
        else min_samples
    source = (f"{candidate.profile.describe()} on {candidate.host} vs "
              f"{baseline.profile.describe()} on {baseline.host}")
    window = f"candidate {candidate.window}, baseline {baseline.window}"
    outcomes: list[CheckOutcome] = []
    for name in names:
        cand, base = candidate.stats(name), baseline.stats(name)
        subject = f"{name} ({candidate.who()} vs {baseline.who()})"
        outcomes.append(compare_latency(cand.samples, base.samples, subject=subject, alpha=alpha,
                                        tolerance_ratio=tolerance_ratio, tolerance_abs_s=tolerance_abs_s,
                                        min_samples=minimum, source=source, window=window))
        outcomes.append(compare_error_rates(cand.failures, cand.count, base.failures, base.count,
                                            subject=subject, alpha=alpha, tolerance_abs=error_tolerance_abs,
                                            min_samples=minimum, source=source, window=window))
    for outcome in outcomes:
        recorder(outcome)
    return require(outcomes)
