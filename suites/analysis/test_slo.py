"""Analysis: the candidate's own metrics in Prometheus, over the window that covers the load stage."""

from __future__ import annotations

from typing import Any

from releasegate.core.types import Endpoint
from releasegate.plugins.fixtures import ReleaseInfo


def _window_s(release: ReleaseInfo) -> float:
    return float(release.vars.get("analysis_window_s", 60))


def test_candidate_success_rate(metrics: Any, candidate: Endpoint, release: ReleaseInfo) -> None:
    measured = metrics.success_rate(version=candidate.version, window_s=_window_s(release))
    measured.check("success_rate >= 99%", min_samples=int(release.vars.get("analysis_min_requests", 100)))


def test_candidate_latency(metrics: Any, candidate: Endpoint, release: ReleaseInfo) -> None:
    measured = metrics.latency_quantile(0.95, version=candidate.version, window_s=_window_s(release))
    measured.check("p(95) < 300ms", min_samples=int(release.vars.get("analysis_min_requests", 100)))
