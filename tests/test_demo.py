"""Tests of the demo service: profiles, fault injection, headers, metrics, and the real CLI process."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from releasegate.demo.__main__ import FAST_FORWARD_S, FastForwardClock, main, seed_from_environment
from releasegate.demo.app import Faults, create_app
from releasegate.demo.profiles import (
    API_ENDPOINTS,
    SHIPPED_PROFILES,
    EndpointProfile,
    Profile,
    ProfileError,
    VersionError,
    load_profiles,
    resolve_profiles_path,
    validate_version,
)
from tests.local_cluster import DEMO_SEED, TEST_PROFILES
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
CHECKOUT = {"item_id": 1, "quantity": 2}


# --- helpers ----------------------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """Monotonic seconds that only move when a test says so: no sleeping for startup delays."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_profiles(tmp_path: Path, text: str, name: str = "profiles.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def make_app(profile: Profile, *, version: str = "v2", pod: str = "pod-a", **kwargs: Any) -> FastAPI:
    return create_app(version, profile, pod, seed=kwargs.pop("seed", 7), **kwargs)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


def request_all(app: FastAPI, requests: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    """Send (method, path, json) requests concurrently through the ASGI app; responses in order."""

    async def go() -> list[httpx.Response]:
        async with client(app) as http:
            return list(await asyncio.gather(*(http.request(m, p, json=body) for m, p, body in requests)))

    return asyncio.run(go())


def get(app: FastAPI, path: str, times: int = 1) -> list[httpx.Response]:
    return request_all(app, [("GET", path, None)] * times)


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


def scrape(app: FastAPI) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Metric samples by sample name: {name: [(labels, value), ...]}."""
    text = get(app, "/metrics")[0].text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def sample(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {samples.get(name)}"
    return matching[0]


# --- identity headers ---------------------------------------------------------------------------------------


def test_every_kind_of_response_carries_version_and_pod() -> None:
    profile = Profile(never_ready=True, endpoints={"/api/checkout": EndpointProfile(error_rate=1.0)})
    app = make_app(profile, version="v2-test", pod="pod-7")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    cases = [
        ("GET", "/healthz", None, 200),
        ("GET", "/readyz", None, 503),
        ("GET", "/version", None, 200),
        ("GET", "/api/items", None, 200),
        ("POST", "/api/checkout", CHECKOUT, 500),  # injected
        ("POST", "/api/checkout", {"item_id": 1, "quantity": 0}, 422),
        ("GET", "/no/such/page", None, 404),
        ("DELETE", "/api/items", None, 405),
        ("GET", "/boom", None, 500),  # unhandled exception
        ("GET", "/metrics", None, 200),
    ]
    responses = request_all(app, [(m, p, b) for m, p, b, _ in cases])

    for (method, path, _, expected), response in zip(cases, responses, strict=True):
        assert response.status_code == expected, (method, path, response.text)
        assert response.headers["x-app-version"] == "v2-test", (method, path)
        assert response.headers["x-pod"] == "pod-7", (method, path)
    assert responses[4].json() == {"error": "injected failure", "version": "v2-test"}
    assert responses[8].json() == {"error": "internal error", "version": "v2-test"}


def test_unhandled_error_is_counted_as_5xx() -> None:
    app = make_app(Profile())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    get(app, "/boom", times=2)
    assert sample(scrape(app), "http_requests_total", handler="/boom", status="5xx") == 2


# --- endpoints ----------------------------------------------------------------------------------------------


def test_items_checkout_and_version() -> None:
    app = make_app(Profile(name="v2"), version="v2", pod="pod-a")
    items, order, unknown, version = request_all(
        app,
        [
            ("GET", "/api/items", None),
            ("POST", "/api/checkout", {"item_id": 3, "quantity": 2}),
            ("POST", "/api/checkout", {"item_id": 99, "quantity": 1}),
            ("GET", "/version", None),
        ],
    )
    assert len(items.json()) >= 3 and {"id", "name", "price"} <= set(items.json()[0])
    assert order.status_code == 200
    assert order.json()["order_id"].startswith("pod-a-")
    assert order.json()["total"] == 378.0
    assert unknown.status_code == 404
    body = version.json()
    assert {k: body[k] for k in ("version", "pod", "profile")} == {
        "version": "v2",
        "pod": "pod-a",
        "profile": "v2",
    }
    assert datetime.fromisoformat(body["started_at"]).tzinfo is not None


def test_healthz_and_readyz_of_a_healthy_version() -> None:
    app = make_app(Profile())
    health, ready = request_all(app, [("GET", "/healthz", None), ("GET", "/readyz", None)])
    assert (health.status_code, ready.status_code) == (200, 200)
    assert ready.json() == {"ready": True}


# --- metrics ------------------------------------------------------------------------------------------------


def test_metrics_use_the_instrumentator_default_names_and_labels() -> None:
    profile = Profile(endpoints={"/api/checkout": EndpointProfile(error_rate=1.0)})
    app = make_app(profile)
    request_all(
        app,
        [("GET", "/api/items", None)] * 3
        + [("POST", "/api/checkout", CHECKOUT)] * 2
        + [("GET", "/nope", None), ("GET", "/metrics", None)],
    )
    samples = scrape(app)

    assert sample(samples, "http_requests_total", handler="/api/items", method="GET", status="2xx") == 3
    assert sample(samples, "http_requests_total", handler="/api/checkout", method="POST", status="5xx") == 2
    # Unmatched paths are grouped under handler "none" (library default), /metrics is not counted.
    assert sample(samples, "http_requests_total", handler="none", status="4xx") == 1
    handlers = {labels["handler"] for labels, _ in samples["http_requests_total"]}
    assert "/metrics" not in handlers
    assert {tuple(sorted(lbl)) for lbl, _ in samples["http_requests_total"]} == {
        ("handler", "method", "status")
    }

    assert {tuple(sorted(lbl)) for lbl, _ in samples["http_request_duration_seconds_bucket"]} == {
        ("handler", "le", "method")
    }
    assert sample(samples, "http_request_duration_seconds_count", handler="/api/items", method="GET") == 3
    for name in (
        "http_request_duration_highr_seconds_count",
        "http_request_size_bytes_count",
        "http_response_size_bytes_count",
        "process_start_time_seconds",
    ):
        assert name in samples, name
    assert sample(samples, "demo_app_info", version="v2", pod="pod-a", profile="defaults") == 1


def test_two_apps_in_one_process_keep_separate_metrics() -> None:
    first, second = make_app(Profile(), version="v1"), make_app(Profile(), version="v2")
    get(first, "/api/items", times=2)
    get(second, "/api/items", times=5)
    assert sample(scrape(first), "http_requests_total", handler="/api/items") == 2
    assert sample(scrape(second), "http_requests_total", handler="/api/items") == 5


# --- fault injection ----------------------------------------------------------------------------------------


def test_shipped_v2_errors_fails_about_5_percent_of_2000_requests() -> None:
    profile = load_profiles(SHIPPED_PROFILES).for_version("v2-errors")
    app = make_app(profile, version="v2-errors", seed=12345)
    responses = get(app, "/api/items", times=2000)

    failures = statuses(responses).count(500)
    # Binomial(2000, 0.05): mean 100, sd ~9.7; the band is about 4 sd wide on each side.
    assert 60 <= failures <= 140, failures
    assert set(statuses(responses)) == {200, 500}
    assert sample(scrape(app), "http_requests_total", handler="/api/items", status="5xx") == failures


def test_seed_makes_draws_reproducible() -> None:
    profile = Profile(error_rate=0.3)
    runs = [statuses(get(make_app(profile, seed=99), "/api/items", times=50)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert 0 < runs[0].count(500) < 50


IN_FLIGHT = 5  # the most users of a load in the tests: requests a pod drew that the load never counted


def counted_failures(failures_before: list[int], start: int, counted: int) -> tuple[int, int]:
    """The fewest and the most injected failures among `counted` requests of a load that began at draw `start`.

    The pod drew `counted` + f times, f <= IN_FLIGHT requests being in flight when the load stopped; those f
    are among its last 2 * IN_FLIGHT draws. `failures_before[n]` counts the failures among the first n draws.
    """
    fewest, most = counted, 0
    for in_flight in range(IN_FLIGHT + 1):
        end = start + counted + in_flight
        drawn = failures_before[end] - failures_before[start]
        recent = failures_before[end] - failures_before[max(start, end - 2 * IN_FLIGHT)]
        fewest = min(fewest, drawn - min(in_flight, recent))
        most = max(most, drawn)
    return fewest, most


def test_the_demo_seed_of_the_tests_keeps_v2_errors_out_of_smoke_and_within_2_to_9_percent(tmp_path: Path) -> None:
    """What the release and verifier tests rely on when they run v2-errors with DEMO_SEED (tests/local_cluster.py).

    A pod draws once per /api request, in the order the requests arrive, so which of its requests fail depends
    on the seed and the request count only. Smoke sends a pod at most 2 /api requests; a load then counts 25
    to 10,000 per pod. A change to the demo's draws that breaks these bounds fails here, with the numbers,
    instead of making those tests fail by chance.
    """
    profile = load_profiles(write_profiles(tmp_path, TEST_PROFILES)).for_version("v2-errors")
    assert profile.error_rate == 0.05
    # Latency 0 skips the sleep only: the latency draw (gauss) takes the same random numbers at any spread.
    instant = dataclasses.replace(profile, latency_ms=0.0, latency_spread_ms=0.0)
    faults = Faults("v2-errors", instant, rng=random.Random(DEMO_SEED), clock=FakeClock())

    async def draw(count: int) -> list[bool]:
        return [await faults.inject(path) is not None for path in itertools.islice(itertools.cycle(
            ("/api/items", "/api/items", "/api/items", "/api/checkout")), count)]

    failed = asyncio.run(draw(10_000 + 2 + IN_FLIGHT))
    assert True not in failed[:13], f"request {failed.index(True) + 1} of a pod fails: smoke could meet it"
    failures_before = list(itertools.accumulate(map(int, failed), initial=0))
    for start in (0, 1, 2):  # /api requests before the load: none (verifier tests), or smoke's 1 or 2
        for counted in range(25, 10_001):
            fewest, most = counted_failures(failures_before, start, counted)
            # Above 2%: error_rate < 1% fails, and a stop_on_breach sees its clear breach (2x the limit).
            assert fewest / counted > 0.02, (start, counted, fewest)
            if counted >= 50:  # what the tests that print the measured rate count at least
                assert most / counted < 0.09, (start, counted, most)


def test_endpoint_overrides_apply_to_their_endpoint_only(tmp_path: Path) -> None:
    path = write_profiles(
        tmp_path,
        """
        [versions.v2]
        error_rate = 0.0
        [versions.v2.endpoints."/api/checkout"]
        error_rate = 1.0
        """,
    )
    app = make_app(load_profiles(path).for_version("v2"))
    responses = request_all(app, [("GET", "/api/items", None), ("POST", "/api/checkout", CHECKOUT)] * 20)
    assert statuses(responses[0::2]) == [200] * 20
    assert statuses(responses[1::2]) == [500] * 20


def test_endpoint_precedence_between_defaults_and_version(tmp_path: Path) -> None:
    path = write_profiles(
        tmp_path,
        """
        [defaults]
        latency_ms = 10
        [defaults.endpoints."/api/checkout"]
        latency_ms = 50
        error_rate = 0.1

        [versions.slow]
        latency_ms = 400

        [versions.flaky]
        error_rate = 0.3

        [versions.own]
        latency_ms = 400
        [versions.own.endpoints."/api/checkout"]
        latency_ms = 5
        """,
    )
    profiles = load_profiles(path)
    # A version's own value beats a defaults endpoint override; a key the version leaves alone keeps it.
    slow = profiles.for_version("slow").endpoint("/api/checkout")
    assert (slow.latency_ms, slow.error_rate) == (400, 0.1)
    flaky = profiles.for_version("flaky").endpoint("/api/checkout")
    assert (flaky.latency_ms, flaky.error_rate) == (50, 0.3)
    assert profiles.for_version("own").endpoint("/api/checkout").latency_ms == 5
    assert profiles.for_version("own").endpoint("/api/items").latency_ms == 400
    assert profiles.for_version("unknown").endpoint("/api/checkout").latency_ms == 50


def test_injected_latency_is_visible_to_clients_and_in_the_histogram() -> None:
    profile = Profile(
        latency_ms=0,
        endpoints={"/api/checkout": EndpointProfile(latency_ms=200, latency_spread_ms=20)},
    )
    app = make_app(profile)

    async def timed_checkouts() -> list[float]:
        async with client(app) as http:

            async def one() -> float:
                start = time.perf_counter()
                response = await http.post("/api/checkout", json=CHECKOUT)
                assert response.status_code == 200
                return time.perf_counter() - start

            return list(await asyncio.gather(*(one() for _ in range(5))))

    elapsed = asyncio.run(timed_checkouts())
    get(app, "/api/items")

    assert min(elapsed) >= 0.2  # base + |gauss|: never below the base
    samples = scrape(app)
    assert sample(samples, "http_request_duration_seconds_sum", handler="/api/checkout") >= 5 * 0.2
    # Every checkout landed above the 0.1 s bucket; the un-delayed /api/items below it.
    assert sample(samples, "http_request_duration_seconds_bucket", handler="/api/checkout", le="0.1") == 0
    assert sample(samples, "http_request_duration_seconds_bucket", handler="/api/items", le="0.1") == 1


def test_startup_delay_keeps_readyz_503_until_it_has_passed() -> None:
    clock = FakeClock()
    app = make_app(Profile(name="v2-slow-start", startup_delay_s=3.0), clock=clock)

    starting, alive = request_all(app, [("GET", "/readyz", None), ("GET", "/healthz", None)])
    assert (starting.status_code, alive.status_code) == (503, 200)
    assert starting.json() == {
        "ready": False,
        "reason": "starting: ready in 3.0s (profile 'v2-slow-start' sets startup_delay_s = 3.0)",
    }
    clock.advance(2.9)
    assert statuses(get(app, "/readyz")) == [503]
    clock.advance(0.1)
    assert statuses(get(app, "/readyz")) == [200]


def test_never_ready_answers_503_forever_while_alive() -> None:
    clock = FakeClock()
    app = make_app(Profile(name="v2-never-ready", never_ready=True), clock=clock)
    clock.advance(10_000)
    ready, alive = request_all(app, [("GET", "/readyz", None), ("GET", "/healthz", None)])
    assert (ready.status_code, alive.status_code) == (503, 200)
    assert ready.json()["reason"] == "never ready (profile 'v2-never-ready' sets never_ready = true)"


def test_errors_start_only_after_errors_after_s() -> None:
    clock = FakeClock()
    app = make_app(Profile(errors_after_s=5.0), clock=clock)  # error_rate_after defaults to 1.0
    assert set(statuses(get(app, "/api/items", times=50))) == {200}
    clock.advance(4.99)
    assert set(statuses(get(app, "/api/items", times=50))) == {200}
    clock.advance(0.01)
    assert set(statuses(get(app, "/api/items", times=50))) == {500}


def test_late_error_rate_applies_per_endpoint(tmp_path: Path) -> None:
    path = write_profiles(
        tmp_path,
        """
        [versions.late]
        errors_after_s = 1.0
        error_rate_after = 0.5
        [versions.late.endpoints."/api/items"]
        error_rate_after = 0.0
        """,
    )
    clock = FakeClock()
    app = make_app(load_profiles(path).for_version("late"), clock=clock)
    clock.advance(1.0)
    responses = request_all(app, [("POST", "/api/checkout", CHECKOUT), ("GET", "/api/items", None)] * 400)
    assert set(statuses(responses[1::2])) == {200}
    assert 150 <= statuses(responses[0::2]).count(500) <= 250  # Binomial(400, 0.5): sd 10


def test_unknown_version_behaves_as_the_defaults(tmp_path: Path) -> None:
    shipped = load_profiles(SHIPPED_PROFILES)
    profile = shipped.for_version("v9-never-heard-of")
    assert profile is shipped.defaults and profile.name == "defaults"
    assert (profile.error_rate, profile.never_ready, profile.crash_after_s) == (0.0, False, None)
    app = make_app(profile, version="v9-never-heard-of")
    assert set(statuses(get(app, "/api/items", times=20))) == {200}
    assert get(app, "/version")[0].json()["profile"] == "defaults"

    # ...unless the file's [defaults] say otherwise.
    failing = load_profiles(write_profiles(tmp_path, "[defaults]\nerror_rate = 1.0\n[versions.v1]\n"))
    assert failing.for_version("v9").error_rate == 1.0


def test_shipped_profiles() -> None:
    profiles = load_profiles(SHIPPED_PROFILES)
    expected = {
        "v1",
        "v2",
        "v3",
        "v2-errors",
        "v2-slow",
        "v2-crashloop",
        "v2-never-ready",
        "v2-slow-start",
        "v2-late-failure",
    }
    assert expected <= set(profiles.versions)
    for healthy in ("v1", "v2", "v3"):
        p = profiles.for_version(healthy)
        assert (p.error_rate, p.never_ready, p.crash_after_s, p.errors_after_s) == (0, False, None, None)
        # median base + 0.67 spread, p95 base + 1.96 spread: inside ~10-30 ms
        assert p.latency_ms >= 10 and p.latency_ms + 1.96 * p.latency_spread_ms <= 31
    assert profiles.for_version("v2-errors").error_rate == 0.05
    slow = profiles.for_version("v2-slow").endpoint("/api/checkout")
    assert slow.latency_ms > 300  # even the fastest checkout is above 300 ms
    assert profiles.for_version("v2-crashloop").crash_after_s == 2.0
    assert profiles.for_version("v2-never-ready").never_ready is True
    assert profiles.for_version("v2-slow-start").startup_delay_s == 3.0
    late = profiles.for_version("v2-late-failure")
    assert (late.errors_after_s, late.error_rate_after) == (20.0, 0.5)


def test_shipped_scenario_profiles_of_the_decisions_bench() -> None:
    profiles = load_profiles(SHIPPED_PROFILES)
    for percent, rate in (("0p5", 0.005), ("1", 0.01), ("2", 0.02), ("5", 0.05)):
        overall = profiles.for_version(f"v2-errors-{percent}pct")
        assert {overall.endpoint(path).error_rate for path in API_ENDPOINTS} == {rate}
    for percent, rate in (("0p5", 0.005), ("1", 0.01), ("2", 0.02), ("3", 0.03), ("5", 0.05)):
        checkout_only = profiles.for_version(f"v2-checkout-errors-{percent}pct")
        assert checkout_only.endpoint("/api/checkout").error_rate == rate
        assert checkout_only.endpoint("/api/items").error_rate == 0.0
    healthy = profiles.for_version("v2")
    for name, factor in (("v2-slow-median-20pct", 1.2), ("v2-slow-median-30pct", 1.3), ("v2-slow-median-100pct", 2)):
        slow = profiles.for_version(name)  # base and spread scaled together: every quantile scales
        assert (slow.latency_ms, slow.latency_spread_ms) == pytest.approx(
            (healthy.latency_ms * factor, healthy.latency_spread_ms * factor))
    for name in ("v2-slow-tail-20pct", "v2-slow-tail-60pct", "v2-slow-tail-100pct"):
        tail = profiles.for_version(name)
        assert (tail.latency_ms, tail.latency_spread_ms) == (healthy.latency_ms, healthy.latency_spread_ms)
        assert tail.tail_fraction == 0.02 and tail.tail_latency_ms > 0
    on_signal = profiles.for_version("v2-fails-on-signal")
    assert on_signal.errors_after_s is not None and on_signal.errors_after_s < FAST_FORWARD_S
    assert on_signal.error_rate_after == 0.1
    noisy = [profiles.for_version(name) for name in ("v1-noisy", "v2-noisy")]
    assert noisy[0].endpoint("/api/items") == noisy[1].endpoint("/api/items")
    assert noisy[0].latency_spread_ms > healthy.latency_spread_ms


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * len(values))]


def test_the_tail_profiles_move_p99_by_their_figure_and_leave_the_median() -> None:
    """The demo's own draws (seeded, no sleeping): the quantiles the profiles' descriptions promise."""
    profiles = load_profiles(SHIPPED_PROFILES)

    def latencies(name: str) -> list[float]:
        profile = profiles.for_version(name)
        faults = Faults(name, profile, rng=random.Random(3), clock=FakeClock(), tail_rng=random.Random(4))
        return [faults.draw("/api/items").latency_ms for _ in range(40_000)]

    healthy = latencies("v2")
    for name, p99_ratio in (("v2-slow-tail-20pct", 1.21), ("v2-slow-tail-60pct", 1.62), ("v2-slow-tail-100pct", 2.0)):
        slow = latencies(name)
        assert quantile(slow, 0.5) / quantile(healthy, 0.5) == pytest.approx(1.0, abs=0.03), name
        assert quantile(slow, 0.99) / quantile(healthy, 0.99) == pytest.approx(p99_ratio, abs=0.08), name
    doubled = latencies("v2-slow-median-100pct")
    assert quantile(doubled, 0.5) / quantile(healthy, 0.5) == pytest.approx(2.0, abs=0.06)


def test_tail_requests_are_slower_in_the_histogram_and_the_other_draws_do_not_change() -> None:
    tail = Profile(error_rate=0.3, endpoints={"/api/items": EndpointProfile(tail_fraction=0.25, tail_latency_ms=300)})
    # The seed fixes which requests are in the tail: the app's tail stream is its own Random(f"{seed}/tail").
    tail_stream = random.Random("21/tail")
    drawn_in_tail = sum(tail_stream.random() < 0.25 for _ in range(400))
    assert 70 <= drawn_in_tail <= 130  # Binomial(400, 0.25): mean 100, sd ~8.7
    app = make_app(tail, seed=21)
    responses = get(app, "/api/items", times=400)  # concurrent: the test sleeps 0.3 s once, not 100 times
    # Every tail request slept 0.3 s, so it is above the 0.2 s bucket for certain. A busy machine can
    # also push an untailed request over it, so only this direction is certain.
    above = 400 - sample(scrape(app), "http_request_duration_seconds_bucket", handler="/api/items", le="0.2")
    assert above >= drawn_in_tail
    # The tail has a random stream of its own: the same seed fails the same requests with or without it.
    without_tail = statuses(get(make_app(Profile(error_rate=0.3), seed=21), "/api/items", times=400))
    assert statuses(responses) == without_tail


# --- profile errors -----------------------------------------------------------------------------------------

ENDPOINT_KEYS = "error_rate, error_rate_after, latency_ms, latency_spread_ms, tail_fraction, tail_latency_ms"
VERSION_KEYS = (
    "crash_after_s, description, endpoints, error_rate, error_rate_after, errors_after_s, "
    "latency_ms, latency_spread_ms, never_ready, startup_delay_s, tail_fraction, tail_latency_ms"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[versions."v2-errors"]\nerror_rate = 1.5\n',
            "versions.v2-errors.error_rate = 1.5 is outside 0..1; set a fraction such as 0.05",
            id="rate-out-of-range",
        ),
        pytest.param(
            "[versions.v2]\nlatency_ms = -5\n",
            "versions.v2.latency_ms = -5 is negative; set a number of milliseconds, 0 or more, such as 20",
            id="negative-ms",
        ),
        pytest.param(
            "[defaults]\nstartup_delay_s = -1.5\n",
            "defaults.startup_delay_s = -1.5 is negative; set a number of seconds, 0 or more, such as 2.5",
            id="negative-seconds-in-defaults",
        ),
        pytest.param(
            '[versions.v2]\nlatency_ms = "20"\n',
            'versions.v2.latency_ms = "20" is a string, expected a number; '
            "set a number of milliseconds, 0 or more, such as 20",
            id="string-for-number",
        ),
        pytest.param(
            "[versions.v2]\nerror_rate = true\n",
            "versions.v2.error_rate = true is a boolean, expected a number; set a fraction such as 0.05",
            id="bool-for-number",
        ),
        pytest.param(
            "[versions.v2]\nnever_ready = 1\n",
            "versions.v2.never_ready = 1 is an integer, expected true or false; set true or false",
            id="int-for-bool",
        ),
        pytest.param(
            "[versions.v2]\ncrash_after_s = nan\n",
            "versions.v2.crash_after_s = nan is not a finite number; "
            "set a number of seconds, 0 or more, such as 2.5",
            id="nan",
        ),
        pytest.param(
            "[versions.v2]\nlatency_ms = [1, 2]\n",
            "versions.v2.latency_ms = [1, 2] is an array, expected a number; "
            "set a number of milliseconds, 0 or more, such as 20",
            id="array",
        ),
        pytest.param(
            "[versions.v2]\ndescription = 3\n",
            'versions.v2.description = 3 is an integer, expected a string; set a quoted string such as "what '
            'this version does"',
            id="description-type",
        ),
        pytest.param(
            "[versions.v2]\nerror_rat = 0.1\n",
            "versions.v2.error_rat is an unknown key (did you mean error_rate?); "
            f"known keys are {VERSION_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            "[version.v2]\nerror_rate = 0.1\n",
            "version is an unknown top-level key (did you mean versions?); "
            "the file holds a [defaults] table and [versions.<version>] tables only",
            id="unknown-top-level",
        ),
        pytest.param(
            "[versions]\nv2 = 0.5\n",
            "versions.v2 = 0.5 is a float, expected a table; "
            "write it as [versions.v2] with its keys on the lines below",
            id="version-not-a-table",
        ),
        pytest.param(
            '[versions.v2]\nendpoints = "checkout"\n',
            'versions.v2.endpoints = "checkout" is a string, expected a table; '
            'write it as [versions.v2.endpoints."/api/checkout"] with its keys on the lines below',
            id="endpoints-not-a-table",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/chekout"]\nerror_rate = 0.1\n',
            'versions.v2.endpoints."/api/chekout" is not an endpoint the demo injects faults into '
            '(did you mean "/api/checkout"?); use "/api/checkout" or "/api/items"',
            id="unknown-endpoint",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/items"]\nstartup_delay_s = 1\n',
            'versions.v2.endpoints."/api/items".startup_delay_s is an unknown key; '
            f"known keys are {ENDPOINT_KEYS}",
            id="unknown-endpoint-key",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/items"]\nerror_rate = -0.1\n',
            'versions.v2.endpoints."/api/items".error_rate = -0.1 is outside 0..1; '
            "set a fraction such as 0.05",
            id="endpoint-rate",
        ),
        pytest.param(
            "[versions.v2]\nerror_rate_after = 0.5\n",
            "versions.v2.error_rate_after has no effect without errors_after_s; "
            "add errors_after_s = <seconds> to [versions.v2] or remove error_rate_after",
            id="rate-after-without-errors-after",
        ),
        pytest.param(
            '[versions."v2 beta"]\nerror_rate = 0.1\n',
            'versions."v2 beta" is not a valid version name: a Kubernetes label value has letters, digits '
            "and '-', '_' or '.' inside, starts and ends with a letter or digit and is at most 63 "
            "characters; rename the table (e.g. [versions.v2])",
            id="invalid-version-name",
        ),
        pytest.param(
            "[versions.v2]\nerror_rate = \n",
            ":2: invalid TOML at line 2, column 14: Invalid value; fix the syntax there",
            id="toml-syntax",
        ),
        pytest.param(
            "[versions.v2]\nerror_rate = 0.1\n[versions.v3",
            ":3: invalid TOML at the end of the file (line 3): "
            "Expected ']' at the end of a table declaration; fix the syntax there",
            id="toml-syntax-at-end",
        ),
    ],
)
def test_profile_errors_name_file_key_problem_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = write_profiles(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profiles(path)
    separator = "" if message.startswith(":") else ": "
    assert str(caught.value) == f"{path}{separator}{message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "[versions.v2]\nlatency_ms = inf\n",
            "versions.v2.latency_ms = inf is not a finite number; "
            "set a number of milliseconds, 0 or more, such as 20",
            id="infinite",
        ),
        pytest.param(
            "defaults = 3\n",
            "defaults = 3 is an integer, expected a table; write it as [defaults] with its keys on the lines below",
            id="defaults-not-a-table",
        ),
        pytest.param(
            "versions = 3\n",
            "versions = 3 is an integer, expected a table; "
            "write it as [versions.v2] with its keys on the lines below",
            id="versions-not-a-table",
        ),
        pytest.param(
            "[versions.v2]\ndescription = 1979-05-27\n",
            'versions.v2.description = 1979-05-27 is a date, expected a string; set a quoted string such as "what '
            'this version does"',
            id="date-for-string",
        ),
        pytest.param(
            '[defaults.endpoints."/api/items"]\nlatency_spread_ms = true\n',
            'defaults.endpoints."/api/items".latency_spread_ms = true is a boolean, expected a number; '
            "set a number of milliseconds, 0 or more, such as 20",
            id="bool-in-a-defaults-endpoint",
        ),
        pytest.param(
            "[versions.endpoints]\nerror_rat = 0.1\n",
            "versions.endpoints.error_rat is an unknown key (did you mean error_rate?); "
            f"known keys are {VERSION_KEYS}",
            id="a-version-named-endpoints-is-a-version",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/items"]\nerror_rate_after = 0.5\n',
            "versions.v2.error_rate_after has no effect without errors_after_s; "
            "add errors_after_s = <seconds> to [versions.v2] or remove error_rate_after",
            id="endpoint-rate-after-without-errors-after",
        ),
        pytest.param(
            "[versions.v2]\ntail_fraction = 1.5\ntail_latency_ms = 40\n",
            "versions.v2.tail_fraction = 1.5 is outside 0..1; set a fraction such as 0.05",
            id="tail-fraction-out-of-range",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/checkout"]\ntail_latency_ms = -1\n',
            'versions.v2.endpoints."/api/checkout".tail_latency_ms = -1 is negative; '
            "set a number of milliseconds, 0 or more, such as 20",
            id="negative-tail-latency",
        ),
        pytest.param(
            "[versions.v2]\ntail_fraction = 0.02\n",
            "versions.v2.tail_fraction has no effect without tail_latency_ms; add tail_latency_ms = "
            "<milliseconds> to [versions.v2] (or one of its endpoint tables) or remove tail_fraction",
            id="tail-fraction-without-tail-latency",
        ),
        pytest.param(
            '[versions.v2.endpoints."/api/items"]\ntail_latency_ms = 40\n',
            "versions.v2.tail_latency_ms has no effect without tail_fraction; add tail_fraction = "
            "<fraction such as 0.02> to [versions.v2] (or one of its endpoint tables) or remove tail_latency_ms",
            id="endpoint-tail-latency-without-tail-fraction",
        ),
        pytest.param(
            "[versions.v2]\nerror_rate = 1.5\nlatency_ms = -1\n",
            "versions.v2.error_rate = 1.5 is outside 0..1; set a fraction such as 0.05 (and 1 more problem(s))",
            id="the-first-of-several-problems-and-their-count",
        ),
    ],
)
def test_more_profile_errors_name_file_key_problem_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = write_profiles(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profiles(path)
    assert str(caught.value) == f"{path}: {message}"


def test_error_rate_after_from_an_endpoint_table_may_rely_on_errors_after_s_in_defaults(tmp_path: Path) -> None:
    path = write_profiles(
        tmp_path, '[defaults]\nerrors_after_s = 5\n[versions.v2.endpoints."/api/items"]\nerror_rate_after = 0.5\n'
    )
    profile = load_profiles(path).for_version("v2")
    assert profile.errors_after_s == 5.0
    assert profile.endpoint("/api/items").error_rate_after == 0.5
    assert profile.endpoint("/api/checkout").error_rate_after == 1.0


def test_a_tail_may_take_its_other_half_from_the_defaults_or_an_endpoint(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, """
        [defaults]
        tail_latency_ms = 40
        [versions.v2]
        tail_fraction = 0.02
        [versions.v3]
        tail_fraction = 0.1
        [versions.v3.endpoints."/api/checkout"]
        tail_latency_ms = 100
        """)
    profiles = load_profiles(path)
    v2 = profiles.for_version("v2").endpoint("/api/items")
    assert (v2.tail_fraction, v2.tail_latency_ms) == (0.02, 40.0)
    v3 = profiles.for_version("v3")
    assert (v3.endpoint("/api/checkout").tail_fraction, v3.endpoint("/api/checkout").tail_latency_ms) == (0.1, 100)
    assert v3.endpoint("/api/items").tail_latency_ms == 40.0
    assert profiles.for_version("v1").endpoint("/api/items").tail_fraction == 0.0


def test_integers_in_the_file_are_floats_in_the_profile(tmp_path: Path) -> None:
    profile = load_profiles(write_profiles(tmp_path, "[versions.v2]\nlatency_ms = 20\ncrash_after_s = 3\n"))
    v2 = profile.for_version("v2")
    assert (v2.latency_ms, v2.crash_after_s) == (20.0, 3.0)
    assert isinstance(v2.latency_ms, float) and isinstance(v2.crash_after_s, float)


def test_profile_error_shows_the_path_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo").mkdir()
    path = write_profiles(tmp_path / "demo", "[versions.v2-errors]\nerror_rate = 1.5\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError, match=r"^demo/profiles\.toml: versions\.v2-errors\.error_rate = 1\.5 "):
        load_profiles(path)


def test_missing_profile_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProfileError) as caught:
        load_profiles(missing)
    assert str(caught.value) == (
        f"{missing}: profile file not found; pass --profiles PATH or set RELEASEGATE_PROFILES "
        "to an existing file"
    )
    with pytest.raises(ProfileError, match="is a directory"):
        load_profiles(tmp_path)


def test_profile_path_comes_from_cli_then_env_then_shipped_file() -> None:
    env = {"RELEASEGATE_PROFILES": "/env.toml"}
    assert resolve_profiles_path("/cli.toml", env) == Path("/cli.toml")
    assert resolve_profiles_path(None, env) == Path("/env.toml")
    assert resolve_profiles_path(None, {}) == SHIPPED_PROFILES


@pytest.mark.parametrize("version", ["v2", "1.4.0-rc1", "a", "V_2.x", "x" * 63])
def test_valid_versions(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize("version", ["", "v2\n", "-v2", "v2.", "v 2", "v2/x", "é", "x" * 64])
def test_invalid_versions(version: str) -> None:
    with pytest.raises(VersionError, match=r"^--version: "):
        validate_version(version)


# --- CLI in-process -----------------------------------------------------------------------------------------


def test_cli_bad_profile_exits_4_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_profiles(tmp_path, "[versions.v2]\nerror_rate = 1.5\n")
    assert main(["--port", "1", "--version", "v2", "--profiles", str(path)]) == 4
    assert capsys.readouterr().err == (
        f"{path}: versions.v2.error_rate = 1.5 is outside 0..1; set a fraction such as 0.05\n"
    )


def test_cli_invalid_version_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "1", "--version", "v2 beta"]) == 4
    assert capsys.readouterr().err.startswith("--version: version 'v2 beta' is not a valid Kubernetes label")


def test_cli_pod_name_that_cannot_be_a_header_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "1", "--version", "v2", "--pod", "pod a"]) == 4
    assert capsys.readouterr().err.startswith("--pod: pod name 'pod a' must be")


@pytest.mark.parametrize(
    "argv", [["--port", "80"], ["--version", "v2", "--port", "http"], ["--version", "v2", "--port", "0"]]
)
def test_cli_usage_errors_exit_4(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 4
    assert "python -m releasegate.demo: error:" in capsys.readouterr().err


def test_the_seed_comes_from_the_option_else_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELEASEGATE_DEMO_SEED", " 42 ")
    assert (seed_from_environment(7), seed_from_environment(None)) == (7, 42)
    monkeypatch.setenv("RELEASEGATE_DEMO_SEED", "")
    assert seed_from_environment(None) is None
    monkeypatch.setenv("RELEASEGATE_DEMO_SEED", "seven")
    assert main(["--port", "1", "--version", "v2"]) == 4
    assert capsys.readouterr().err == (
        "$RELEASEGATE_DEMO_SEED = 'seven' is not an integer; set a whole number such as 7, or unset it\n")


def test_a_fast_forward_makes_a_late_failure_begin_now() -> None:
    clock = FastForwardClock()
    app = make_app(Profile(errors_after_s=3600.0), clock=clock)
    assert set(statuses(get(app, "/api/items", times=20))) == {200}
    clock.skip_ahead()  # what SIGUSR1 does in the real process
    assert clock.skipped_s == FAST_FORWARD_S
    assert set(statuses(get(app, "/api/items", times=20))) == {500}


# --- the real process ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RELEASEGATE_PROFILES"}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


@contextmanager
def demo_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`python -m demo ARGS`, killed in any case when the block ends."""
    with subprocess.Popen(
        [sys.executable, "-m", "releasegate.demo", *args],
        cwd=REPO,
        env=env or demo_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def wait_ready(base: str, proc: subprocess.Popen[str], deadline_s: float = 60.0) -> None:
    """Poll /readyz until 200; fail early if the process dies, and at the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"demo exited with {proc.returncode} before ready: {stderr}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # poll interval, not synchronisation: the loop is bounded by the deadline
    pytest.fail(f"demo at {base} not ready within {deadline_s}s")


def test_real_process_serves_http_and_stops_on_sigterm() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with demo_process(
        "--host", "127.0.0.1", "--port", str(port), "--version", "v2", "--pod", "p-1", "--seed", "1"
    ) as proc:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=5.0) as http:
            version = http.get("/version")
            order = http.post("/api/checkout", json=CHECKOUT)
            bad = http.post("/api/checkout", json={"item_id": "x"})
            metrics = http.get("/metrics")
        assert version.json()["version"] == "v2" and version.json()["profile"] == "v2"
        for response in (version, order, bad, metrics):
            assert (response.headers["x-app-version"], response.headers["x-pod"]) == ("v2", "p-1")
        assert (order.status_code, bad.status_code) == (200, 422)
        assert 'http_requests_total{handler="/api/checkout",method="POST",status="2xx"} 1.0' in metrics.text

        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM: killed by the signal, or 0.
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)


def test_real_process_crashes_with_exit_1_while_serving(tmp_path: Path) -> None:
    path = write_profiles(
        tmp_path,
        """
        [versions.v2-crashloop]
        crash_after_s = 4.0
        [versions.v2-crashloop.endpoints."/api/items"]
        latency_ms = 20000
        """,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with demo_process("--port", str(port), "--version", "v2-crashloop", "--profiles", str(path)) as proc:
        # The crash timer starts before uvicorn binds: 4 s leaves a loaded machine time to get ready first.
        wait_ready(base, proc)
        # A request in flight when the crash comes: the process must die anyway, not wait for it.
        with pytest.raises(httpx.TransportError) as dropped:
            httpx.get(f"{base}/api/items", timeout=15.0)
        assert not isinstance(dropped.value, httpx.ConnectError), "the request was not in flight at the crash"
        assert proc.wait(timeout=10) == 1
        _, stderr = proc.communicate(timeout=5)
    assert "demo v2-crashloop: simulated crash after 4.0s (profile crash_after_s)\n" in stderr


def test_real_process_starts_its_late_failure_on_sigusr1(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, "[versions.v2-late-failure]\nerrors_after_s = 3600.0\nerror_rate_after = 1.0\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with demo_process("--port", str(port), "--version", "v2-late-failure", "--profiles", str(path)) as proc:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=5.0) as http:
            assert http.get("/api/items").status_code == 200
            proc.send_signal(signal.SIGUSR1)
            # Python runs the handler when the main thread next runs: wait for it, with a deadline.
            wait_until(lambda: http.get("/api/items").status_code == 500, timeout_s=30,
                       what="the late failure to begin after SIGUSR1")
            assert set(statuses([http.get("/api/items") for _ in range(5)])) == {500}
        assert proc.poll() is None, "SIGUSR1 ended the process"


def test_real_cli_exits_4_on_bad_profile_from_env_and_on_invalid_version(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, "[versions.v2]\nlatency_ms = -1\n")
    port = free_port()
    bad_profile = subprocess.run(
        [sys.executable, "-m", "releasegate.demo", "--port", str(port), "--version", "v2"],
        cwd=REPO,
        env=demo_env(RELEASEGATE_PROFILES=str(path)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_profile.returncode == 4
    assert bad_profile.stderr == (
        f"{path}: versions.v2.latency_ms = -1 is negative; "
        "set a number of milliseconds, 0 or more, such as 20\n"
    )

    bad_version = subprocess.run(
        [sys.executable, "-m", "releasegate.demo", "--port", str(port), "--version=-v2"],
        cwd=REPO,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad_version.returncode == 4
    assert bad_version.stderr.startswith("--version: version '-v2' is not a valid Kubernetes label value")
    assert bad_version.stderr.count("\n") == 1
