"""Canary analysis at each step: users' traffic through the public service, split as the step says.

Runs once per canary step (`[10%]` in its id); skipped in a blue-green release, which has no split.
Two views of the same step, in this order, in one test (so that parallel workers cannot pull them apart):
1. a synthetic load through the public service, which the split divides as it divides users (for services
   with little traffic of their own): the candidate's share of it, and how each version answered it;
2. Prometheus over the step's window [step start, now], from the pods' own counters by version: the
   candidate's real share of all requests, and its success rate against the stable version's in that same
   window. In the demo the load of view 1 is the users' traffic this window holds.

The pods' counters count every request a pod answered, direct requests to the candidate or baseline
endpoints included: no test of a canary step may send direct traffic (test_compare.py's side-by-side load
skips itself in a canary release for that reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from releasegate.core.checks import CheckFailed, CheckOutcome, require
from releasegate.core.types import Endpoint
from releasegate.plugins.fixtures import CanaryStep, LoadRunner, ReleaseInfo
from releasegate.verifiers.canary import check_share

SLOS = ("error_rate < 1%", "p(95) < 300ms")
"""What users are promised (`[vars] slos` replaces them, as in suites/load)."""

SCRAPE_WAIT_S = 60.0
"""How long to wait for Prometheus to read every pod once (`canary_scrape_wait_s`): clusters scrape every
15-60 s, the local target every second."""


def _scrape_wait_s(release: ReleaseInfo) -> float:
    return float(release.vars.get("canary_scrape_wait_s", SCRAPE_WAIT_S))


def test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up(
        load: LoadRunner, release: ReleaseInfo, canary_weight: int | None, candidate: Endpoint,
        baseline: Endpoint, metrics: Any, canary_step: CanaryStep | None) -> None:
    if release.dry_run:
        pytest.skip("dry run: traffic is not split, so users' share cannot be measured; the candidate's own "
                    "endpoint is analysed by the other tests")
    if canary_weight is None or canary_step is None:
        pytest.skip("canary only: a blue-green release has no traffic split to measure")
    settings = release.vars
    # Prometheus counts the step from each pod's first scrape after the split: wait for it, so that the
    # whole of this load is inside the window view 2 reads.
    metrics.wait_scraped_after(canary_step.started_at, timeout_s=_scrape_wait_s(release))
    minimum = int(settings.get("canary_min_requests", 200))
    promised = tuple(settings.get("slos", SLOS))
    assert candidate.version is not None
    duration_s = float(settings.get("canary_step_load_s", 10))
    # Per endpoint from the 50% step on: at 10% the candidate's share of one endpoint would take minutes to
    # show an SLO is met. A decisive failure on any endpoint stops every step; its total must pass at every step.
    per_endpoint = canary_weight >= 50
    # The candidate's SLOs are judged every second on its own share of the users' requests: a clear failure
    # ends the step at once; a pass needs the bounds inside the SLOs, so a small share extends the load.
    # The stable version is judged beside it in the same window (a problem of the environment shows on both).
    versions = (candidate.version,) if canary_weight >= 100 or baseline.version is None else (
        candidate.version, baseline.version)
    result = load.run("../load/locustfile.py", target="service", users=int(settings.get("canary_users", 10)),
                      duration_s=duration_s, min_requests=minimum, checks=promised,
                      check_versions=versions, per_endpoint=per_endpoint,
                      max_duration_s=float(settings.get("canary_step_max_load_s", max(90.0, duration_s))))
    # Every check runs and is recorded; one failing does not hide the others.
    outcomes: list[CheckOutcome] = []
    outcomes += _outcomes(lambda: [check_share(
        result, candidate.version or "", canary_weight, min_requests=minimum,
        tolerance_pp=float(settings.get("canary_share_tolerance_pp", 2)), record=load.record)])
    # Each arm in the same window; the candidate's errors decide, with at least a few requests of its own.
    candidate_minimum = max(20, minimum * canary_weight // 200)
    outcomes += _outcomes(lambda: list(result.check(*promised, version=candidate.version,
                                                    min_samples=candidate_minimum, per_endpoint=per_endpoint)))
    if canary_weight < 100 and baseline.version is not None:
        outcomes += _outcomes(lambda: list(result.check(*promised, version=baseline.version,
                                                        min_samples=20, per_endpoint=per_endpoint)))
    outcomes += _prometheus_view(metrics, release, canary_step, minimum)
    require(outcomes)


def _outcomes(check: Callable[[], list[CheckOutcome]]) -> list[CheckOutcome]:
    try:
        return check()
    except CheckFailed as failed:
        return list(failed.outcomes)


def _prometheus_view(metrics: Any, release: ReleaseInfo, canary_step: CanaryStep,
                     minimum: int) -> list[CheckOutcome]:
    """Over the step's window in Prometheus: the candidate's share of every request the app's pods answered
    is the step's effective weight to within `canary_prometheus_share_tolerance_pp` (default 2pp); its
    success rate is not worse than the stable version's by more than `canary_success_tolerance_pp` (default
    2pp, the sequential count test at alpha 0.01: at a 10% step the candidate serves a few hundred
    requests, and 0 errors in 600 show a difference under 2 points, not under 1); its p95 not above
    stable's x 1.25 + `canary_latency_tolerance_ms` (50), decided by confidence bounds on each arm's p95 from
    the histogram buckets (a pass needs about 120 candidate requests in the step: fewer cannot bound a p95
    from above, and the check is INCONCLUSIVE); each arm with enough requests (else NO DATA, never a pass).

    Why 2pp is enough: the counts are whole requests, read from each pod's own counter between its first
    scrape after the step began and a scrape after the load (no rate extrapolation), so the share is the
    split's own, which the local router makes exact to a request or two. On a cluster with steady users'
    traffic and no waits at the edges, each pod's window edges move by up to one scrape interval: the share
    then drifts by up to w(1-w) x 2 x scrape interval / window (1.25pp at 50%, 15 s scrapes, 300 s steps),
    and kube-proxy's random balancing adds sampling noise; widen the tolerance there.
    """
    settings = release.vars
    # Every request answered so far is in Prometheus once each pod has been scraped after now.
    until = metrics.wait_scraped_after(time.time(), timeout_s=_scrape_wait_s(release))
    weight = canary_step.weight
    outcomes = _outcomes(lambda: [metrics.share_of_requests(
        weight, since=canary_step.started_at, until=until, min_samples=minimum,
        tolerance_pp=float(settings.get("canary_prometheus_share_tolerance_pp", 2)))])
    if weight < 100 and release.previous_version is not None:
        # At 100% (or in a first deploy) no stable version serves in this step: nothing to compare with.
        per_arm = max(20, minimum * min(weight, 100 - weight) // 200)  # each arm: a few requests of its own
        outcomes += _outcomes(lambda: [metrics.success_rate_vs_baseline(
            since=canary_step.started_at, until=until, min_samples=per_arm,
            tolerance_pp=float(settings.get("canary_success_tolerance_pp", 2)))])
        # The demo's histogram starts at 10 ms: the tolerance must be wider than the buckets it falls in.
        outcomes += _outcomes(lambda: [metrics.latency_vs_baseline(
            0.95, since=canary_step.started_at, until=until, min_samples=per_arm, tolerance_ratio=0.25,
            tolerance_abs_s=float(settings.get("canary_latency_tolerance_ms", 50)) / 1000)])
    return outcomes
