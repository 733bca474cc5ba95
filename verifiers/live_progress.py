"""Snapshots of a running load or side-by-side comparison, for the `on_progress` callback (core.progress).

Built from what the live judges already hold after a look, so a snapshot costs one more combination of the
histograms and no extra statistics: a check's state is the judge's own first decision (the same one the
result reports as "decided after 12.0s, look 12"), never a second opinion.

The live counts, judges and profiles are described by the protocols below, not imported: verifiers.load
and verifiers.compare import this module, so it must not import them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from releasegate.core.checks import Verdict
from releasegate.core.progress import CheckProgress, CheckState, ProgressSnapshot
from releasegate.core.types import Endpoint, Role
from releasegate.verifiers.sequential import Decision, Judgement
from releasegate.verifiers.stats import Stats
from releasegate.verifiers.thresholds import parse_threshold


class LiveCounts(Protocol):
    """verifiers.load.LiveCounts: a running load's counts so far."""

    @property
    def elapsed_s(self) -> float: ...

    @property
    def cells(self) -> Mapping[tuple[str, str], Stats]: ...

    def stats(self, endpoint: str | None = None, version: str | None = None) -> Stats: ...

    def scopes(self, versions: Sequence[str]) -> list[tuple[str | None, str | None]]: ...


class LoadProfile(Protocol):
    """verifiers.load.LoadProfile: the thresholds it judges and its windows."""

    @property
    def stop_on_breach(self) -> Sequence[str]: ...

    @property
    def checks(self) -> Sequence[str]: ...

    @property
    def check_versions(self) -> Sequence[str]: ...

    @property
    def min_requests(self) -> int: ...

    @property
    def duration_s(self) -> float: ...

    @property
    def longest_s(self) -> float: ...

    @property
    def per_endpoint(self) -> bool: ...


class LiveDecision(Protocol):
    @property
    def verdict(self) -> Verdict: ...


class LiveJudge(Protocol):
    """verifiers.load.LiveJudge: its profile, and when each (threshold, endpoint, version) first decided."""

    @property
    def profile(self) -> LoadProfile: ...

    @property
    def decisions(self) -> Mapping[tuple[str, str | None, str | None], LiveDecision]: ...


P95 = 0.95


def load_snapshot(live: LiveCounts, judge: LiveJudge, target: Endpoint | None) -> ProgressSnapshot:
    """A load after one look: its counts, and each of its thresholds over all endpoints (per serving version
    when the profile judges versions apart, as in a canary step). A decisive failure on one busy endpoint
    shows as the threshold's failure: it is what stopped the run. A threshold that passed over all endpoints
    while a busy endpoint is still undecided on it is followed by that endpoint: the run waits for it."""
    profile = judge.profile
    total = live.stats()
    texts = dict.fromkeys((*profile.stop_on_breach, *profile.checks))
    scopes = live.scopes(profile.check_versions)
    checks = []
    for text in texts:
        bounded = parse_threshold(text).bounded
        for version in profile.check_versions or (None,):
            samples = live.stats(None, version).count
            state = _load_check_state(judge, profile, text, version, samples, bounded)
            checks.append(CheckProgress(_scoped(text, None, version), state, samples))
            if state is not CheckState.PASS or not profile.per_endpoint or text not in profile.checks:
                continue
            for endpoint, scope_version in scopes:
                decided = judge.decisions.get((text, endpoint, version))
                if endpoint is not None and scope_version == version and (
                        decided is None or decided.verdict is not Verdict.PASS):
                    checks.append(CheckProgress(_scoped(text, endpoint, version), CheckState.UNDECIDED,
                                                live.stats(endpoint, version).count))
    return ProgressSnapshot(
        activity="load", elapsed_s=live.elapsed_s, total_s=_total_s(profile, live.elapsed_s),
        requests=total.count, failures=total.failures, rps=total.rps, p95_s=total.quantile(P95),
        versions=_versions(live.cells),
        through_service=target is not None and target.role is Role.SERVICE, checks=tuple(checks))


def _scoped(text: str, endpoint: str | None, version: str | None) -> str:
    """`error_rate < 1%`, `error_rate < 1% [v2]`, `error_rate < 1% [/api/checkout v2]`."""
    scope = " ".join(part for part in (endpoint, version) if part)
    return f"{text} [{scope}]" if scope else text


def _load_check_state(judge: LiveJudge, profile: LoadProfile, text: str, version: str | None, samples: int,
                      bounded: bool) -> CheckState:
    if any(decision.verdict is Verdict.FAIL for (t, _, v), decision in judge.decisions.items()
           if t == text and v == version):
        return CheckState.FAIL
    if not bounded:
        return CheckState.AT_END  # rps, avg, ...: no bound decides them before the run ends
    passed = judge.decisions.get((text, None, version))
    # The judge may decide early; the run still needs its minimum sample before a pass counts.
    if passed is not None and passed.verdict is Verdict.PASS and samples >= profile.min_requests:
        return CheckState.PASS
    return CheckState.UNDECIDED


def comparison_snapshot(profile: LoadProfile, candidate: LiveCounts, baseline: LiveCounts,
                        judged: Mapping[tuple[str, str | None], Judgement], elapsed_s: float) -> ProgressSnapshot:
    """A side-by-side load after one look: the candidate's counts, the baseline's p95 beside its own, and the
    errors and latency comparisons over all endpoints (a decisive regression on one endpoint shows as FAIL)."""
    cand, base = candidate.stats(), baseline.stats()
    checks = []
    for kind in ("errors", "latency"):
        scopes = {scope: judgement.decision for (k, scope), judgement in judged.items() if k == kind}
        if Decision.FAIL in scopes.values():
            state = CheckState.FAIL
        elif scopes.get(None) is Decision.PASS:
            state = CheckState.PASS
        else:
            state = CheckState.UNDECIDED
        checks.append(CheckProgress(f"{kind} vs baseline", state, min(cand.count, base.count)))
    return ProgressSnapshot(
        activity="comparison", elapsed_s=elapsed_s, total_s=_total_s(profile, elapsed_s), requests=cand.count,
        failures=cand.failures, rps=cand.rps, p95_s=cand.quantile(P95), versions=_versions(candidate.cells),
        checks=tuple(checks), baseline_p95_s=base.quantile(P95))


def _total_s(profile: LoadProfile, elapsed_s: float) -> float:
    """The minimum window until it has passed, then the longest the run may extend to."""
    return profile.duration_s if elapsed_s < profile.duration_s else profile.longest_s


def _versions(cells: Mapping[tuple[str, str], Stats]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (_, version), stats in sorted(cells.items()):
        counts[version] = counts.get(version, 0) + stats.count
    return counts
