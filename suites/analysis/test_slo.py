"""Analysis: the candidate's own metrics in Prometheus, over the window that covers the load stage."""

from __future__ import annotations

from typing import Any

import pytest

from releasegate.core.types import Endpoint
from releasegate.plugins.fixtures import ReleaseInfo

CANARY_SKIP = ("canary: at each step test_canary.py judges the candidate's SLOs on its own share of the users' "
               "requests, for as long as that takes; a fixed window here would hold a 10% step's few hundred")


def _window_s(release: ReleaseInfo) -> float:
    return float(release.vars.get("analysis_window_s", 60))


def _skip_in_a_canary_step(release: ReleaseInfo, canary_weight: int | None) -> None:
    # A step with a traffic split: test_canary.py judges it. A dry run or a first deploy has no split, and
    # these checks are then what judges the candidate at each step.
    if canary_weight is not None and not release.dry_run:
        pytest.skip(CANARY_SKIP)


def test_candidate_success_rate(metrics: Any, candidate: Endpoint, release: ReleaseInfo,
                                canary_weight: int | None) -> None:
    _skip_in_a_canary_step(release, canary_weight)
    measured = metrics.success_rate(version=candidate.version, window_s=_window_s(release))
    measured.check("success_rate >= 99%", min_samples=int(release.vars.get("analysis_min_requests", 100)))


def test_candidate_latency(metrics: Any, candidate: Endpoint, release: ReleaseInfo,
                           canary_weight: int | None) -> None:
    _skip_in_a_canary_step(release, canary_weight)
    measured = metrics.latency_quantile(0.95, version=candidate.version, window_s=_window_s(release))
    measured.check("p(95) < 300ms", min_samples=int(release.vars.get("analysis_min_requests", 100)))
