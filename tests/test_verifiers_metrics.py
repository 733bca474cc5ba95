"""Prometheus SLOs against a real Prometheus scraping real demo services every second.

The traffic is known (counted by the test), so the measured values are checked against what was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from core.checks import CheckFailed, CheckOutcome, Verdict
from core.errors import ConfigError
from core.types import MetricsScope, Role
from tests.verifiers_services import DemoService, demo_service, free_port, prometheus, write_profiles
from tests.waiting import wait_until
from verifiers.metrics import Metrics, MetricsError

WINDOW_S = 120  # covers the whole life of the fixture's Prometheus


@dataclass(frozen=True)
class Traffic:
    """What the test sent after Prometheus had seen every series once, and when it was all scraped."""

    url: str
    healthy: DemoService
    errors: DemoService
    slow: DemoService
    sent: dict[str, int]
    warmup: dict[str, int]  # requests after the first scrape that Prometheus may or may not have counted
    server_errors: int
    at: dict[str, float]  # per version: its last scrape, so increase() has nothing to extrapolate at the end

    def expect_count(self, version: str, counted: float | None) -> None:
        assert counted is not None
        assert self.sent[version] * 0.97 <= counted <= (self.sent[version] + self.warmup[version]) * 1.03


def send(client: httpx.Client, method: str, url: str) -> int:
    return client.request(method, url, json={"item_id": 1, "quantity": 1}).status_code


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    workdir = tmp_path_factory.mktemp("prometheus")
    profiles = write_profiles(workdir)
    with demo_service("v1", profiles, slot="blue") as healthy, \
            demo_service("v2-errors", profiles, slot="green") as errors, \
            demo_service("v2-slow", profiles, slot="canary") as slow, \
            prometheus(workdir, [healthy, errors, slow]) as url, \
            httpx.Client(timeout=5.0, trust_env=False) as client, \
            Metrics(MetricsScope(url, "demo"), timeout_s=5) as metrics:
        # Warm-up: every series (including v2-errors' 5xx) must exist in Prometheus before the counted
        # traffic, or increase() would miss what happened before a series' first scrape.
        for service in (healthy, errors, slow):
            send(client, "GET", f"{service.url}/api/items")
            send(client, "POST", f"{service.url}/api/checkout")
        warmup = {"v1": 0, "v2-errors": 0, "v2-slow": 0}

        def first_error() -> bool:
            warmup["v2-errors"] += 1
            return send(client, "GET", f"{errors.url}/api/items") == 500

        wait_until(first_error, timeout_s=10, interval_s=0, what="a first injected 500 from v2-errors")
        series = 'count(http_requests_total{app="demo",handler=~"/api/.*"})'
        wait_until(lambda: (r := metrics.instant(series, time.time())) and float(r[0]["value"][1]) >= 7,
                   timeout_s=20, what="Prometheus scraping the warm-up series of all three services")

        with ThreadPoolExecutor(8) as pool:
            healthy_codes = pool.map(lambda _: send(client, "GET", f"{healthy.url}/api/items"), range(300))
            error_codes = pool.map(lambda _: send(client, "GET", f"{errors.url}/api/items"), range(600))
            slow_codes = pool.map(lambda _: send(client, "POST", f"{slow.url}/api/checkout"), range(40))
            codes = {"v1": list(healthy_codes), "v2-errors": list(error_codes), "v2-slow": list(slow_codes)}
        sent = {version: len(c) for version, c in codes.items()}

        def all_scraped() -> bool:
            counts = {v: metrics.request_count(version=v, window_s=WINDOW_S).samples or 0 for v in sent}
            return all(counts[v] >= 0.97 * sent[v] for v in sent)

        wait_until(all_scraped, timeout_s=20, interval_s=0.25, what="Prometheus scraping the counted traffic")
        scrapes = {v: metrics.instant(f'timestamp(up{{app="demo",version="{v}"}})', time.time())
                   for v in sent}
        yield Traffic(url=url, healthy=healthy, errors=errors, slow=slow, sent=sent, warmup=warmup,
                      server_errors=codes["v2-errors"].count(500),
                      at={v: float(scrape[0]["value"][1]) for v, scrape in scrapes.items()})


def metrics_for(traffic: Traffic, **kwargs: object) -> Metrics:
    return Metrics(MetricsScope(traffic.url, "demo"), timeout_s=5, **kwargs)  # type: ignore[arg-type]


def test_success_rate_matches_the_injected_errors(traffic: Traffic) -> None:
    with metrics_for(traffic) as metrics:
        errors = metrics.success_rate(version="v2-errors", window_s=WINDOW_S, at=traffic.at["v2-errors"])
        healthy = metrics.success_rate(slot="blue", window_s=WINDOW_S, at=traffic.at["v1"])
    expected = 1 - traffic.server_errors / traffic.sent["v2-errors"]
    assert 0.9 < expected < 0.99
    assert errors.value == pytest.approx(expected, abs=0.01)
    traffic.expect_count("v2-errors", errors.samples)
    assert healthy.value == 1.0


def test_success_rate_checks_fail_and_pass_with_the_count_behind_them(traffic: Traffic) -> None:
    recorded: list[CheckOutcome] = []
    candidate = traffic.errors.endpoint(Role.CANDIDATE)
    with metrics_for(traffic, record=recorded.append, candidate=candidate,
                     baseline=traffic.healthy.endpoint(Role.BASELINE)) as metrics:
        measured = metrics.success_rate(version="v2-errors", window_s=WINDOW_S, at=traffic.at["v2-errors"])
        with pytest.raises(CheckFailed) as caught:
            measured.check("success_rate >= 99%")
        with pytest.raises(CheckFailed):
            measured.check("error_rate < 1%")
        healthy = metrics.success_rate(version="v1", window_s=WINDOW_S, at=traffic.at["v1"])
        healthy.check("success_rate >= 99%")

    stamp = datetime.fromtimestamp(traffic.at["v2-errors"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(caught.value) == (f"success_rate {recorded[0].display_value} < 99% over {measured.samples:,} "
                                 "requests on /api/.* (candidate v2-errors)")
    assert [o.verdict for o in recorded] == [Verdict.FAIL, Verdict.FAIL, Verdict.PASS]
    assert recorded[1].value == pytest.approx(1 - (measured.value or 0))
    assert recorded[2].subject == "/api/.* (baseline v1)"
    assert recorded[0].window == f"{WINDOW_S}s ending {stamp}"
    assert recorded[0].source.startswith('(sum(increase(http_requests_total{app="demo",version="v2-errors",')
    assert recorded[0].samples == measured.samples


def test_latency_quantile_of_a_slow_checkout(traffic: Traffic) -> None:
    with metrics_for(traffic) as metrics:
        slow = metrics.latency_quantile(0.95, version="v2-slow", window_s=WINDOW_S,
                                        handler_regex="/api/checkout", at=traffic.at["v2-slow"])
        fast = metrics.latency_quantile(0.95, version="v1", window_s=WINDOW_S, at=traffic.at["v1"])
        assert slow.value is not None and 0.4 < slow.value <= 0.5  # 400 ms + spread, in the 0.4-0.5 bucket
        assert fast.value is not None and fast.value < 0.05
        with pytest.raises(CheckFailed, match=r"^p\(95\) 4\d\dms > 300ms over \d+ requests on /api/checkout "
                                              r"\(version v2-slow\)$"):
            slow.check("p(95) < 300ms")
        assert fast.check("p(95) < 300ms").passed
        with pytest.raises(ConfigError, match="does not apply to a p\\(95\\) measurement"):
            slow.check("p(99) < 1s")


def test_request_count_and_raw_queries_match_what_was_sent(traffic: Traffic) -> None:
    candidate, baseline = traffic.errors.endpoint(Role.CANDIDATE), traffic.healthy.endpoint(Role.BASELINE)
    with metrics_for(traffic, candidate=candidate, baseline=baseline) as metrics:
        count = metrics.request_count(version="v1", window_s=WINDOW_S, at=traffic.at["v1"])
        traffic.expect_count("v1", count.value)
        assert count.check("requests >= 250").passed

        template = 'sum(increase(http_requests_total{{{ selector }},status="{{ status }}"}[{{ window }}]))'
        errors = metrics.query(template, version="v2-errors", window_s=WINDOW_S, at=traffic.at["v2-errors"],
                               status="5xx")
        assert errors.value == pytest.approx(traffic.server_errors, abs=0.05 * traffic.server_errors + 1)
        assert errors.query == ('sum(increase(http_requests_total{app="demo",version="v2-errors",'
                                f'status="5xx"}}[{WINDOW_S}s]))')

        ratio = metrics.query("sum(increase(http_requests_total{{{ candidate }}}[{{ window }}])) / "
                              "sum(increase(http_requests_total{{{ baseline }}}[{{ window }}]))",
                              window_s=WINDOW_S, at=max(traffic.at.values()))
        # Two series scraped at different moments: one of them is extrapolated by up to one interval.
        assert ratio.value == pytest.approx(traffic.sent["v2-errors"] / traffic.sent["v1"], rel=0.25)
        assert ratio.check("value > 1.5").passed


def test_no_traffic_is_no_data_never_a_pass(traffic: Traffic) -> None:
    recorded: list[CheckOutcome] = []
    with metrics_for(traffic, record=recorded.append) as metrics:
        unseen = metrics.success_rate(version="v9", window_s=WINDOW_S)
        assert (unseen.value, unseen.samples) == (None, 0)
        with pytest.raises(CheckFailed) as caught:
            unseen.check("success_rate >= 99%")
        assert recorded[0].verdict is Verdict.NO_DATA
        assert str(caught.value).startswith(
            f"NO DATA: success_rate >= 99%: Prometheus at {traffic.url} returned no series (or NaN) for "
            f"/api/.* (version v9) over {WINDOW_S}s ending ")
        assert str(caught.value).endswith("Z (now)")  # no evaluation time given: the window says "now"
        with pytest.raises(CheckFailed, match="NO DATA: p\\(95\\) < 300ms"):
            metrics.latency_quantile(0.95, version="v9", window_s=WINDOW_S).check("p(95) < 300ms")


def test_min_samples_turns_too_few_requests_into_no_data(traffic: Traffic) -> None:
    with metrics_for(traffic, min_samples=10_000) as metrics:
        measured = metrics.success_rate(version="v1", window_s=WINDOW_S, at=traffic.at["v1"])
        with pytest.raises(CheckFailed, match=r"^NO DATA: success_rate >= 99%: only \d+ requests on "
                                              r"/api/\.\* \(version v1\), fewer than the minimum 10,000$"):
            measured.check("success_rate >= 99%")
        assert measured.check("success_rate >= 99%", min_samples=100).passed


def test_an_unreachable_prometheus_is_a_metrics_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Metrics(MetricsScope(url, "demo"), timeout_s=2) as metrics, pytest.raises(MetricsError) as caught:
        metrics.success_rate(window_s=60)
    assert str(caught.value) == (f"Prometheus at {url} is unreachable (connection refused or host unknown); "
                                 "check that it runs and that the configured Prometheus URL is right")
    assert time.monotonic() - started < 5


def test_a_promql_syntax_error_is_a_metrics_error_with_prometheus_message(traffic: Traffic) -> None:
    with metrics_for(traffic) as metrics, pytest.raises(MetricsError) as caught:
        metrics.query("sum(rate(http_requests_total{{{ selector }}}[{{ window }}])", window_s=60)
    message = str(caught.value)
    assert message.startswith(f"Prometheus at {traffic.url} rejected the query (")
    assert "parse error" in message
    assert message.endswith('; fix the PromQL: sum(rate(http_requests_total{app="demo"}[60s])')


def test_template_and_query_usage_errors(traffic: Traffic) -> None:
    with metrics_for(traffic) as metrics:
        with pytest.raises(ConfigError, match=r"unknown placeholder \{\{ slot \}\}; known: baseline, "
                                              "candidate, selector, window"):
            metrics.query("up{ {{ slot }} }", window_s=60)
        with pytest.raises(ConfigError, match=r"has no \{\{ handlr \}\} placeholder"):
            metrics.query("up{ {{ selector }} }", window_s=60, handlr="/api/items")
        with pytest.raises(ConfigError, match=r"uses \{\{ candidate \}\} but Metrics was created without"):
            metrics.query("up{ {{ candidate }} }", window_s=60)
        with pytest.raises(ConfigError, match="returned 3 series"):
            metrics.query("up{ {{ selector }} }", window_s=60)
    with pytest.raises(ConfigError, match="timeout must be positive"):
        Metrics(MetricsScope(traffic.url, "demo"), timeout_s=0)
