"""The local Service: a reverse proxy that sends each request to a ready pod of a slot chosen by weight.

Traffic changes swap one immutable routing table, so a switch is atomic: every request is routed by the
table that was current when it arrived, and requests already in flight finish on the pod they reached.
Weights are exact, not random (smooth weighted round-robin, as nginx does it), so a 90/10 split is 90/10
over any hundred requests.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from releasegate.targets.local import httpwire
from releasegate.targets.local.httpwire import ProtocolError, Request, Response

# uvicorn closes keep-alive connections idle for 5 s; dropping ours earlier avoids sending a request into a
# connection the pod is closing at that moment (a POST there could not be retried safely).
IDLE_CONNECTION_MAX_S = 4.0


@dataclass(eq=False)
class Upstream:
    """One ready pod as the router sees it, with its pool of idle keep-alive connections."""

    pod: str
    slot: str
    version: str
    host: str
    port: int
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(default_factory=list)
    in_flight: int = 0

    async def exchange(self, request: Request, extra_headers: httpwire.Headers) -> Response:
        """Send one request and read the answer, retrying once when a pooled connection went stale."""
        payload = httpwire.serialize_request(request, extra_headers=extra_headers)
        while self.idle:
            reader, writer, idle_since = self.idle.pop()
            if time.monotonic() - idle_since > IDLE_CONNECTION_MAX_S:
                writer.close()
                continue
            try:
                return await self._send(reader, writer, payload, request.method)
            except (ConnectionError, asyncio.IncompleteReadError, ProtocolError):
                # The pod closed an idle connection (keep-alive timeout): nothing reached it, try another.
                writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._send(reader, writer, payload, request.method)

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes,
                    method: str) -> Response:
        try:
            writer.write(payload)
            await writer.drain()
            response = await httpwire.read_response(reader, request_method=method)
        except BaseException:
            writer.close()
            raise
        if response.keep_alive and len(self.idle) < 64:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return response

    def close_idle(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class SmoothWeightedPicker:
    """nginx's smooth weighted round-robin: exact proportions, evenly interleaved."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = {slot: w for slot, w in weights.items() if w > 0}
        self.total = sum(self.weights.values())
        self._current = dict.fromkeys(self.weights, 0)

    def pick(self) -> str | None:
        if not self.total:
            return None
        for slot, weight in self.weights.items():
            self._current[slot] += weight
        chosen = max(self._current, key=self._current.__getitem__)
        self._current[chosen] -= self.total
        return chosen


@dataclass(frozen=True)
class RoutingTable:
    """Immutable: the router replaces the whole table on every change."""

    weights: Mapping[str, int]
    pods: Mapping[str, tuple[Upstream, ...]]  # slot -> ready upstreams
    versions: Mapping[str, str]  # slot -> version


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class RouterMetrics:
    """Counters in Prometheus text format, labelled by listener, slot, version and status code."""

    app: str
    requests: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    upstream_errors: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    switches: int = 0

    def observe(self, listener: str, slot: str, version: str, status: int, seconds: float) -> None:
        self.requests[(listener, slot, version, str(status))] += 1
        key = (listener, slot, version)
        buckets = self.latency.get(key)
        if buckets is None:
            buckets = self.latency[key] = [0.0] * (len(_LATENCY_BUCKETS) + 2)  # buckets, +Inf, sum
        buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        buckets[-1] += seconds

    def render(self) -> str:
        lines = [
            "# HELP releasegate_router_requests_total Requests answered by the router.",
            "# TYPE releasegate_router_requests_total counter",
        ]
        for (listener, slot, version, code), n in sorted(self.requests.items()):
            lines.append(
                f'releasegate_router_requests_total{{listener="{listener}",slot="{slot}",'
                f'version="{version}",code="{code}"}} {n}'
            )
        lines += [
            "# HELP releasegate_router_upstream_errors_total Requests the router could not deliver to a pod.",
            "# TYPE releasegate_router_upstream_errors_total counter",
        ]
        for (listener, slot, version, kind), n in sorted(self.upstream_errors.items()):
            lines.append(
                f'releasegate_router_upstream_errors_total{{listener="{listener}",slot="{slot}",'
                f'version="{version}",kind="{kind}"}} {n}'
            )
        lines += [
            "# HELP releasegate_router_request_duration_seconds Time from request to response at the router.",
            "# TYPE releasegate_router_request_duration_seconds histogram",
        ]
        for (listener, slot, version), buckets in sorted(self.latency.items()):
            labels = f'listener="{listener}",slot="{slot}",version="{version}"'
            running = 0.0
            for bound, count in zip((*_LATENCY_BUCKETS, "+Inf"), buckets[:-1], strict=True):
                running += count
                lines.append(f'releasegate_router_request_duration_seconds_bucket{{{labels},le="{bound}"}} '
                             f"{int(running)}")
            lines.append(f"releasegate_router_request_duration_seconds_sum{{{labels}}} {buckets[-1]:.6f}")
            lines.append(f"releasegate_router_request_duration_seconds_count{{{labels}}} {int(running)}")
        lines += [
            "# HELP releasegate_router_traffic_switches_total Routing table changes.",
            "# TYPE releasegate_router_traffic_switches_total counter",
            f"releasegate_router_traffic_switches_total {self.switches}",
        ]
        return "\n".join(lines) + "\n"


class Router:
    """Routes the service listener by weight and each preview listener to one slot."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self.table = RoutingTable(weights={}, pods={}, versions={})
        self._picker = SmoothWeightedPicker({})
        self._round_robin: dict[str, itertools.count[int]] = defaultdict(itertools.count)
        self._connections: set[asyncio.StreamWriter] = set()

    # -- control (called by the cluster supervisor, in the same event loop) -------------------------
    def update(self, *, weights: Mapping[str, int] | None = None,
               pods: Mapping[str, tuple[Upstream, ...]] | None = None,
               versions: Mapping[str, str] | None = None) -> RoutingTable:
        """Swap in a new table; one assignment, so no request ever sees half of a change."""
        old = self.table
        self.table = RoutingTable(
            weights=dict(weights) if weights is not None else old.weights,
            pods=dict(pods) if pods is not None else old.pods,
            versions=dict(versions) if versions is not None else old.versions,
        )
        if weights is not None:
            self._picker = SmoothWeightedPicker(self.table.weights)
            self.metrics.switches += 1
        return old

    # -- data path ----------------------------------------------------------------------------------
    def _choose(self, table: RoutingTable, slot: str | None) -> tuple[str | None, Upstream | None]:
        if slot is None:
            slot = self._picker.pick()
        if slot is None:
            return None, None
        pods = table.pods.get(slot, ())
        if not pods:
            return slot, None
        return slot, pods[next(self._round_robin[slot]) % len(pods)]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, listener: str,
                    slot: str | None) -> None:
        """Serve one client connection; `slot` None means route by weight (the service listener)."""
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        forwarded = [("X-Forwarded-For", str(peer[0]))] if peer else []
        try:
            while True:
                try:
                    request = await httpwire.read_request(reader)
                except (ProtocolError, ValueError):
                    writer.write(httpwire.serialize_response(
                        httpwire.text_response(400, "bad request\n"), keep_alive=False))
                    return
                if request is None:
                    return
                response = await self._forward(request, listener, slot, forwarded)
                keep_alive = request.keep_alive
                writer.write(httpwire.serialize_response(response, keep_alive=keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _forward(self, request: Request, listener: str, fixed_slot: str | None,
                       forwarded: httpwire.Headers) -> Response:
        started = time.perf_counter()
        table = self.table
        slot, upstream = self._choose(table, fixed_slot)
        version = table.versions.get(slot or "", "none")
        if upstream is None:
            self.metrics.upstream_errors[(listener, slot or "none", version, "no_ready_pod")] += 1
            response = httpwire.text_response(503, f"no ready pod in slot {slot or '-'}\n")
            self.metrics.observe(listener, slot or "none", version, 503, time.perf_counter() - started)
            return response
        upstream.in_flight += 1
        try:
            response = await upstream.exchange(request, forwarded)
        except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            kind = "connect" if isinstance(exc, ConnectionRefusedError) else "exchange"
            self.metrics.upstream_errors[(listener, slot or "none", version, kind)] += 1
            response = httpwire.text_response(502, f"upstream {upstream.pod} failed: {exc!r}\n")
        finally:
            upstream.in_flight -= 1
        response.headers.append(("X-Releasegate-Slot", upstream.slot))
        self.metrics.observe(listener, upstream.slot, upstream.version, response.status,
                             time.perf_counter() - started)
        return response

    async def drain(self, upstreams: list[Upstream], timeout_s: float) -> bool:
        """Wait until no request is in flight on `upstreams` (they must already be out of the table)."""
        deadline = time.monotonic() + timeout_s
        while any(u.in_flight for u in upstreams):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        for upstream in upstreams:
            upstream.close_idle()
        return True

    def close_connections(self) -> None:
        for writer in list(self._connections):
            with contextlib.suppress(Exception):
                writer.close()
