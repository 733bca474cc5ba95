"""Analysis: candidate against baseline, the same load on both at the same time."""

from __future__ import annotations

import pytest

from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo
from releasegate.verifiers.compare import compare_loads

CANARY_SKIP = ("canary: the step's split already gives both versions the same window, and test_canary.py "
               "compares them there from Prometheus; a side-by-side load would send direct requests that the "
               "pods' counters add to the users' traffic of the step")


def test_candidate_is_no_worse_than_baseline(load: LoadRunner, release: ReleaseInfo) -> None:
    if release.strategy == "canary" and not release.dry_run:
        pytest.skip(CANARY_SKIP)
    settings = release.vars
    candidate, baseline = load.side_by_side(
        "../load/locustfile.py",
        users=int(settings.get("compare_users", 5)),
        duration_s=float(settings.get("compare_duration_s", 10)),
        min_requests=int(settings.get("compare_min_requests", 100)),
    )
    # Latency by a rank test, errors by Fisher's exact test; each with an effect-size tolerance.
    compare_loads(candidate, baseline, tolerance_ratio=float(settings.get("compare_latency_tolerance", 0.25)))
