"""What the release controller asks of Prometheus before it verifies anything: is it there, and does it
scrape the candidate yet. A protocol, so that the controller can be unit-tested with a fake."""

from __future__ import annotations

from typing import Protocol

from releasegate.core.config import PrometheusConfig
from releasegate.core.errors import ConfigError, NotReadyError
from releasegate.core.redact import redact_url
from releasegate.core.types import MetricsScope
from releasegate.core.waiting import poll_until


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
