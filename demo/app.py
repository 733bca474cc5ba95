"""The demo service: a small shop API whose faults (latency, errors, readiness) come from a profile.

Shaped like the platform team's app: FastAPI, liveness and readiness probes, a version endpoint and
Prometheus metrics under the prometheus-fastapi-instrumentator default names, so SLO queries written
against the demo work against the real thing.

Middleware order, outermost first: identity headers (so every response, even an unhandled 500, says
which version and pod answered), then the Prometheus instrumentation, then the routes. Faults are
injected inside the route handlers, i.e. inside the instrumented request, so they show in the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .profiles import API_ENDPOINTS, EndpointBehaviour, Profile, validate_version

logger = logging.getLogger("demo")

JSON: Final = "application/json"

# The catalogue is fixed: the demo is about release behaviour, not business logic.
_CATALOGUE: Final[tuple[tuple[int, str, float], ...]] = (
    (1, "keyboard", 49.0),
    (2, "mouse", 19.5),
    (3, "monitor", 189.0),
    (4, "usb-cable", 4.25),
)
ITEMS: Final = tuple({"id": id_, "name": name, "price": price} for id_, name, price in _CATALOGUE)
_PRICES: Final = {id_: price for id_, _, price in _CATALOGUE}


LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)

class CheckoutRequest(BaseModel):
    item_id: int
    quantity: int = Field(ge=1)


def _json(payload: object, status_code: int = 200) -> Response:
    # Starlette's JSONResponse would do the same; building the bytes here lets callers precompute them.
    return Response(json.dumps(payload, separators=(",", ":")).encode(), status_code, media_type=JSON)


class IdentityHeadersMiddleware:
    """Adds X-App-Version and X-Pod to every HTTP response and turns unhandled errors into a JSON 500.

    Pure ASGI (no BaseHTTPMiddleware) because it sits in front of every request and the router in front
    of the demo is benchmarked against direct access. It catches exceptions itself because Starlette's
    own 500 handler runs outside user middleware and would answer without the identity headers.
    """

    def __init__(self, app: ASGIApp, *, version: str, pod: str) -> None:
        self.app = app
        self.identity = [(b"x-app-version", version.encode("ascii")), (b"x-pod", pod.encode("ascii"))]
        self.internal_error = json.dumps({"error": "internal error", "version": version}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_with_identity(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", ()), *self.identity]
            await send(message)

        try:
            await self.app(scope, receive, send_with_identity)
        except Exception:
            if response_started:
                raise  # too late for a clean 500; let the server drop the connection
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            await send_with_identity(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", JSON.encode()),
                        (b"content-length", str(len(self.internal_error)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self.internal_error})


@dataclass(frozen=True)
class Draw:
    """What the profile decided for one request."""

    latency_ms: float
    fails: bool


class Faults:
    """Draws the injected latency and errors of one app instance and answers readiness."""

    def __init__(
        self,
        version: str,
        profile: Profile,
        *,
        rng: random.Random,
        clock: Callable[[], float],
        tail_rng: random.Random | None = None,
    ) -> None:
        self.profile = profile
        self._rng = rng
        # The tail draw has a stream of its own, so that the error and latency draws of `rng` stay the
        # sequence they were before tails existed (tests rely on which request of a seeded pod fails).
        self._tail_rng = random.Random() if tail_rng is None else tail_rng
        self._clock = clock
        self._started = clock()
        # Resolved once: the per-request path is a dict lookup, three draws and maybe a sleep.
        self._endpoints: dict[str, EndpointBehaviour] = {p: profile.endpoint(p) for p in API_ENDPOINTS}
        self._failure = json.dumps({"error": "injected failure", "version": version}).encode()

    def uptime(self) -> float:
        return self._clock() - self._started

    def not_ready_reason(self) -> str | None:
        """Why /readyz must answer 503, or None when the instance is ready."""
        if self.profile.never_ready:
            return f"never ready (profile {self.profile.name!r} sets never_ready = true)"
        remaining = self.profile.startup_delay_s - self.uptime()
        if remaining > 0:
            return (
                f"starting: ready in {remaining:.1f}s "
                f"(profile {self.profile.name!r} sets startup_delay_s = {self.profile.startup_delay_s})"
            )
        return None

    def draw(self, endpoint: str) -> Draw:
        """The next request's fate on `endpoint`: its injected latency and whether it fails."""
        behaviour = self._endpoints[endpoint]
        # Every number is drawn on every request, whatever the rates, so a seeded run draws the same
        # sequence however the profile is tuned.
        error_draw = self._rng.random()
        spread = abs(self._rng.gauss(0.0, behaviour.latency_spread_ms))
        in_tail = self._tail_rng.random() < behaviour.tail_fraction
        rate = behaviour.error_rate
        if self.profile.errors_after_s is not None and self.uptime() >= self.profile.errors_after_s:
            rate = behaviour.error_rate_after
        delay_ms = behaviour.latency_ms + spread + (behaviour.tail_latency_ms if in_tail else 0.0)
        return Draw(latency_ms=delay_ms, fails=error_draw < rate)

    async def inject(self, endpoint: str) -> Response | None:
        """Sleep the drawn latency; return the injected 500 response, or None to serve normally."""
        draw = self.draw(endpoint)
        if draw.latency_ms > 0:
            await asyncio.sleep(draw.latency_ms / 1000.0)
        if draw.fails:
            return Response(self._failure, 500, media_type=JSON)
        return None


def create_app(
    version: str,
    profile: Profile,
    pod: str,
    *,
    seed: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build one instance of the demo service.

    `seed` makes the latency and error draws reproducible; `clock` (monotonic seconds) lets tests move
    time forward for startup_delay_s and errors_after_s instead of sleeping. Each app has its own
    Prometheus registry, so several apps can live in one process.
    """
    validate_version(version)
    if not pod or not pod.isascii() or not pod.isprintable() or " " in pod:
        raise ValueError(f"pod name {pod!r} must be non-empty printable ASCII without spaces")

    tail_rng = random.Random(None if seed is None else f"{seed}/tail")
    faults = Faults(version, profile, rng=random.Random(seed), clock=clock, tail_rng=tail_rng)
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    version_body = _json(
        {"version": version, "pod": pod, "started_at": started_at, "profile": profile.name}
    ).body
    items_body = _json(list(ITEMS)).body
    order_numbers = itertools.count(1)

    app = FastAPI(title="releasegate demo", version=version)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        reason = faults.not_ready_reason()
        if reason is None:
            return Response(b'{"ready":true}', media_type=JSON)
        return _json({"ready": False, "reason": reason}, 503)

    @app.get("/version")
    async def version_info() -> Response:
        return Response(version_body, media_type=JSON)

    @app.get("/api/items")
    async def list_items() -> Response:
        failure = await faults.inject("/api/items")
        if failure is not None:
            return failure
        return Response(items_body, media_type=JSON)

    @app.post("/api/checkout")
    async def checkout(order: CheckoutRequest) -> Response:
        failure = await faults.inject("/api/checkout")
        if failure is not None:
            return failure
        price = _PRICES.get(order.item_id)
        if price is None:
            return _json({"detail": f"item {order.item_id} not found"}, 404)
        return _json(
            {
                "order_id": f"{pod}-{next(order_numbers)}",
                "item_id": order.item_id,
                "quantity": order.quantity,
                "total": round(price * order.quantity, 2),
                "version": version,
            }
        )

    registry = CollectorRegistry()
    # What the default registry of a real app would show as well; process_start_time_seconds makes
    # restarts (crash loops) visible in Prometheus.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info("demo_app", "Version, pod and behaviour profile of this instance.", registry=registry).info(
        {"version": version, "pod": pod, "profile": profile.name}
    )
    # Library defaults otherwise (status grouped as 2xx/5xx, unmatched paths as handler "none"): the
    # SLO queries must match what the platform team's app exposes. /metrics itself is not counted.
    # The per-handler histogram gets finer buckets than the library's (0.1, 0.5, 1): with those, a
    # "p95 < 300ms" SLO would be an interpolation across a 400 ms wide bucket. README tells teams to do
    # the same in their app; metric names and labels stay the library's.
    Instrumentator(registry=registry, excluded_handlers=["^/metrics$"]).instrument(
        app, latency_lowr_buckets=LATENCY_BUCKETS_S
    ).expose(app, include_in_schema=False)
    # Added last = outermost: it must also see the instrumentation's and the router's responses.
    app.add_middleware(IdentityHeadersMiddleware, version=version, pod=pod)
    return app
