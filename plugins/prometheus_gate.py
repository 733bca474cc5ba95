"""What a release asks of Prometheus before it verifies anything: is it there, and does it scrape the
candidate yet. A protocol, so that the controller can be unit-tested with a fake.

The wait for the candidate's first scrape guards every window that counts the candidate's requests from
Prometheus: with a reading of each pod taken before the first load, `increase()` over a window that covers
the load counts all of it. So it comes before the first load, analysis or traffic change
(`await_first_scrape`, at each stage's turn), or in provision itself when users reach the candidate from
provision on. Only the smoke stage runs before it: its few direct requests need no metrics, and it overlaps
the wait, which on a fresh local cluster lasts until its Prometheus's first scrape, about 5 s after it
started."""

from __future__ import annotations

import time
from typing import Protocol

from releasegate.core.config import PrometheusConfig
from releasegate.core.errors import ConfigError, NotReadyError
from releasegate.core.redact import redact_url
from releasegate.core.types import MetricsScope
from releasegate.core.waiting import poll_until
from releasegate.plugins.ledger import Ledger


class PrometheusGate(Protocol):
    def check_reachable(self, url: str) -> None:
        """ConfigError (nothing changed yet) when Prometheus does not answer its API."""
        ...

    def wait_until_scraped(self, scope: MetricsScope, version: str, replicas: int) -> None:
        """Until Prometheus scrapes `replicas` pods of `version`; NotReadyError at the discovery deadline."""
        ...


class LivePrometheusGate:
    def __init__(self, settings: PrometheusConfig) -> None:
        self.settings = settings

    def check_reachable(self, url: str) -> None:
        from releasegate.verifiers.prometheus_client import PrometheusClient, PrometheusError

        try:
            with PrometheusClient(url, timeout_s=self.settings.timeout_s) as prometheus:
                prometheus.check_reachable()
        except PrometheusError as exc:
            raise ConfigError(f"Prometheus at {redact_url(url)} is unreachable ({exc.reason}); start it or "
                              "set prometheus.url to a reachable server") from None

    def wait_until_scraped(self, scope: MetricsScope, version: str, replicas: int) -> None:
        """Analysis needs the candidate's metrics: wait until Prometheus scrapes every candidate pod.

        Service discovery (file_sd, a ServiceMonitor) applies new targets in batches, seconds after the
        pods are ready; an analysis started before that would find no data and fail a healthy release.
        """
        from releasegate.verifiers.metrics import Metrics

        timeout = self.settings.discovery_timeout_s
        up = 0
        with Metrics(scope, timeout_s=self.settings.timeout_s) as metrics:
            def all_scraped() -> bool | None:
                nonlocal up
                up = metrics.targets_up(version=version)
                return True if up >= replicas else None

            # One cheap instant query per look: a short interval starts the analysis within 50 ms of the scrape.
            if poll_until(all_scraped, timeout_s=timeout, interval_s=0.05) is None:
                raise NotReadyError(
                    f"Prometheus at {redact_url(scope.prometheus_url)} scrapes {up}/{replicas} candidate pods "
                    f"({scope.pod_up_metric}{{{scope.selector(version=version)}}}) after {timeout:g}s; the analysis "
                    "would have no data: check the scrape config or ServiceMonitor and the label settings "
                    "prometheus.app_label/version_label")


FIRST_SCRAPE_PROPERTY = "release.first_scrape.waited_s"
"""On the item that waited for the candidate's first scrape: how long, a part of its stage in the report."""

UNGATED_STAGES = frozenset({"preflight", "provision", "smoke", "rollback"})
"""Stages that may run before Prometheus has scraped the candidate: a rollback must never wait for it."""


def await_first_scrape(ledger: Ledger, gate: PrometheusGate) -> float | None:
    """Until Prometheus scrapes every candidate pod, when provision left that wait to the items after it
    (ReleaseContext.first_scrape_of); the seconds it waited, or None when there was nothing to wait for.

    Every process asks on its first item after the smoke stage: the first one waits, the others find the
    pods scraped at their first query. NotReadyError at the discovery deadline, as provision would raise.
    """
    context = ledger.read_context()
    if context.first_scrape_of is None or context.metrics_scope is None:
        return None
    started = time.monotonic()
    gate.wait_until_scraped(context.metrics_scope, context.version, context.first_scrape_of)
    return time.monotonic() - started
