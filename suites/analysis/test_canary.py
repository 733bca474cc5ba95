"""Canary analysis at each step: users' traffic through the public service, split as the step says.

Runs once per canary step (`[10%]` in its id); skipped in a blue-green release, which has no split.
"""

from __future__ import annotations

import pytest

from releasegate.core.types import Endpoint
from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo
from releasegate.verifiers.canary import check_share


def test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up(
        load: LoadRunner, release: ReleaseInfo, canary_weight: int | None, candidate: Endpoint,
        baseline: Endpoint) -> None:
    if release.dry_run:
        pytest.skip("dry run: traffic is not split, so users' share cannot be measured; the candidate's own "
                    "endpoint is analysed by the other tests")
    if canary_weight is None:
        pytest.skip("canary only: a blue-green release has no traffic split to measure")
    settings = release.vars
    minimum = int(settings.get("canary_min_requests", 200))
    result = load.run("../load/locustfile.py", target="service", users=int(settings.get("canary_users", 10)),
                      duration_s=float(settings.get("canary_step_load_s", 10)), min_requests=minimum,
                      stop_on_breach=("error_rate < 1%",))
    assert candidate.version is not None
    check_share(result, candidate.version, canary_weight, min_requests=minimum,
                tolerance_pp=float(settings.get("canary_share_tolerance_pp", 2)), record=load.record)
    # Each arm in the same window; the candidate's errors decide, with at least a few requests of its own.
    candidate_minimum = max(20, minimum * canary_weight // 200)
    result.check("error_rate < 1%", "p(95) < 300ms", version=candidate.version, min_samples=candidate_minimum)
    if canary_weight < 100 and baseline.version is not None:
        result.check("error_rate < 1%", version=baseline.version, min_samples=20)
