"""Analysis: candidate against baseline, the same load on both at the same time, judged sequentially."""

from __future__ import annotations

import pytest

from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo
from releasegate.verifiers.compare import Tolerances, compare_loads

CANARY_SKIP = ("canary: the step's split already gives both versions the same window, and test_canary.py "
               "compares them there from Prometheus; a side-by-side load would send direct requests that the "
               "pods' counters add to the users' traffic of the step")


def test_candidate_is_no_worse_than_baseline(load: LoadRunner, release: ReleaseInfo) -> None:
    if release.strategy == "canary" and not release.dry_run:
        pytest.skip(CANARY_SKIP)
    settings = release.vars
    duration_s = float(settings.get("compare_duration_s", 10))
    # How much worse the candidate may be: relative at each latency quantile, in points for errors.
    ratios = {0.5: float(settings.get("compare_latency_tolerance", 0.10)),
              0.95: float(settings.get("compare_p95_tolerance", 0.25)),
              0.99: float(settings.get("compare_p99_tolerance", 0.50))}
    quantiles = [float(q) for q in settings.get("compare_quantiles", list(ratios))]  # a subset of these three
    tolerances = Tolerances(latency_ratio={q: ratios[q] for q in quantiles},
                            errors_abs=float(settings.get("compare_error_tolerance_pp", 1)) / 100)
    # Errors by the sequential count test, latency by confidence sequences at p50/p95/p99, all endpoints and
    # each busy one: judged every second, stopped at the first decisive look (after duration_s for a pass).
    candidate, baseline = load.side_by_side(
        "../load/locustfile.py",
        users=int(settings.get("compare_users", 5)),
        duration_s=duration_s,
        max_duration_s=float(settings.get("compare_max_duration_s", max(60.0, duration_s))),
        min_requests=int(settings.get("compare_min_requests", 100)),
        tolerances=tolerances,
    )
    compare_loads(candidate, baseline, tolerances=tolerances)
