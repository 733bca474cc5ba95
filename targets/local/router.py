"""The local Service: a reverse proxy that sends each request to a ready pod of a slot chosen by weight.

Traffic changes swap one immutable routing table, so a switch is atomic: every request is routed by the
table that was current when it arrived, and requests already in flight finish on the pod they reached.
Weights are exact, not random (smooth weighted round-robin, as nginx does it), so a 90/10 split is 90/10
over any hundred requests.

HTTP/1.1 is h11's, on both sides. What a pod does wrong becomes an answer, never a dropped connection:
no answer within `upstream_timeout_s` is a 504, an answer that is not HTTP/1.1 (a malformed chunk size or
Content-Length) or a connection closed before the answer is a 502, each counted by kind in
`releasegate_router_upstream_errors_total`. Answers up to BUFFER_BYTES are read whole before the client
sees a byte, so a failure anywhere in them is a clean 502/504; longer ones are streamed, and a failure in
their middle ends the client's connection before the end of the message, which every client detects
(chunked or Content-Length framing) instead of taking half a body for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from releasegate.core.waiting import apoll_until
from releasegate.targets.local.httpwire import Headers, HTTPConnection, end_to_end

# uvicorn closes keep-alive connections idle for 5 s; dropping ours earlier avoids sending a request into a
# connection the pod is closing at that moment (a POST there could not be retried safely).
IDLE_CONNECTION_MAX_S = 4.0
MAX_IDLE_CONNECTIONS_PER_POD = 64
DEFAULT_UPSTREAM_TIMEOUT_S = 30.0
# Answers up to this size are buffered whole (the services behind the router answer small JSON documents);
# longer ones are streamed to the client as they arrive.
BUFFER_BYTES = 256 * 1024
MAX_REQUEST_BODY_BYTES = 16 * 1024 * 1024
# RFC 9110 9.2.2: a request with one of these methods may be sent again when a connection fails before its
# answer. POST and PATCH never are once their bytes were written: the pod may have acted on them.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DRAIN_POLL_S = 0.02
# h11 checks every header of an event it is given against its grammar. The router's own events carry what
# h11 parsed (and checked) from the client or the pod, plus values the router makes: digits, a peer
# address, and the Host and slot headers of an Upstream, which h11 checks when the Upstream is made. So
# they pass `_parsed` and skip the second check (about 4% of the router's CPU per request). `_parsed` is
# a keyword of h11's event classes, typed but private: tests/test_router.py covers the events built with it.
_PARSED = True

_REASONS = {400: b"Bad Request", 413: b"Content Too Large", 431: b"Request Header Fields Too Large",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}


class UpstreamError(Exception):
    """A request the router could not deliver to a pod, or whose answer it could not read.

    `kind` is the metric label: connect, closed, malformed or timeout.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _ClosedWithoutAnswer(Exception):
    """The pod closed the connection (or reset it) before sending a byte of an answer."""


class _Watchdog:
    """The upstream timeout of one client connection's task: asyncio.timeout at the cost of a float.

    asyncio.timeout schedules a timer and cancels it again on every use, and cancelled timers stay in the
    event loop's heap until they come due: about 5% of the router's CPU per request. The watchdog keeps
    at most one timer per client connection: `arm` only moves a deadline, and the timer, when it fires
    before that deadline, sets itself again for it. When it fires after it, it cancels the task, which
    always waits inside the armed stretch then (the deadline is None outside it, and the timer runs only
    while the task waits); `expired` tells that cancellation from any other one, as asyncio.timeout does.
    """

    __slots__ = ("_deadline", "_fired", "_loop", "_task", "_timer", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._task = task
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False

    def arm(self) -> None:
        """Start the countdown of `timeout_s` for the awaits until `disarm`."""
        self._deadline = deadline = self._loop.time() + self.timeout_s
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check)

    def disarm(self) -> None:
        self._deadline = None

    def expired(self) -> bool:
        """Whether the CancelledError in hand came from this watchdog (then the cancellation is taken back
        and the caller answers 504), rather than from someone stopping the task."""
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # nothing is waiting: the next arm sets a timer again
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        self._deadline = None
        self._fired = True
        self._task.cancel()


# Sent as is on every exchange: h11 never changes an event it frames.
_END = h11.EndOfMessage()


@dataclass(eq=False)
class Upstream:
    """One ready pod as the router sees it, with its pool of idle keep-alive connections."""

    pod: str
    slot: str
    version: str
    host: str
    port: int
    idle: list[tuple[HTTPConnection, float]] = field(default_factory=list)
    in_flight: int = 0
    # Made once here rather than on every request:
    slot_header: tuple[bytes, bytes] = field(init=False, repr=False)
    host_header: tuple[bytes, bytes] = field(init=False, repr=False)
    described: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slot_header = (b"X-Releasegate-Slot", self.slot.encode())
        self.host_header = (b"Host", f"{self.host}:{self.port}".encode())
        self.described = f"upstream pod {self.pod} ({self.host}:{self.port})"
        # The events the router builds skip h11's validation of header values it parsed itself (_PARSED);
        # these two come from the config instead, so h11 checks them here, once: LocalProtocolError if bad.
        h11.Request(method=b"GET", target=b"/", headers=[self.host_header, self.slot_header])

    async def exchange(self, method: bytes, target: bytes, headers: Headers, body: bytes,
                       watchdog: _Watchdog) -> UpstreamAnswer:
        """Send the request and read the answer's head and up to BUFFER_BYTES of its body within the
        watchdog's timeout.

        A pooled connection found closed before use is dropped unused. One that fails after the request was
        written, with no byte of an answer, is retried once on a fresh connection for idempotent methods
        only: the pod may have closed it as a keep-alive timeout, or it may have acted on the request.
        """
        conn = self._take_idle()
        may_retry = conn is not None and method in IDEMPOTENT_METHODS
        watchdog.arm()
        try:
            while True:
                if conn is None:
                    conn = await self._connect()
                try:
                    return await self._round_trip(conn, method, target, headers, body, watchdog)
                except _ClosedWithoutAnswer:
                    conn.close()
                    conn = None
                    if not may_retry:
                        raise UpstreamError("closed", "closed the connection without answering") from None
                    may_retry = False
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, asyncio.CancelledError) and watchdog.expired():
                raise UpstreamError("timeout", f"did not answer within {watchdog.timeout_s:g}s") from None
            raise
        finally:
            watchdog.disarm()

    def _take_idle(self) -> HTTPConnection | None:
        idle = self.idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn, idle_since = idle.pop()
            if now - idle_since > IDLE_CONNECTION_MAX_S or conn.stale:
                conn.close()  # nothing was sent on it: dropping it needs no retry rule
                continue
            return conn
        return None

    async def _connect(self) -> HTTPConnection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise UpstreamError("connect", f"refused the connection ({exc.strerror or exc!r})") from None
        return HTTPConnection(h11.CLIENT, reader, writer)

    async def _round_trip(self, conn: HTTPConnection, method: bytes, target: bytes, headers: Headers,
                          body: bytes, watchdog: _Watchdog) -> UpstreamAnswer:
        received_before = conn.bytes_received
        try:
            head = h11.Request(method=method, target=target, headers=headers, _parsed=_PARSED)
            if body:
                conn.send(head, h11.Data(data=body), _END)
            else:
                conn.send(head, _END)
            await conn.drain()
            while type(event := await conn.next_event()) is not h11.Response:
                pass  # 1xx answers (100 Continue) come before the real one
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            if conn.bytes_received == received_before and (conn.peer_closed or isinstance(exc, ConnectionError)):
                raise _ClosedWithoutAnswer from None
            raise _failure(conn, exc) from None
        answer = UpstreamAnswer(self, conn, event, watchdog)
        await answer.buffer(BUFFER_BYTES)
        return answer

    def pool(self, conn: HTTPConnection) -> None:
        if conn.reusable and len(self.idle) < MAX_IDLE_CONNECTIONS_PER_POD:
            conn.start_next_cycle()
            self.idle.append((conn, time.monotonic()))
        else:
            conn.close()

    def close_idle(self) -> None:
        for conn, _ in self.idle:
            conn.close()
        self.idle.clear()


def _failure(conn: HTTPConnection, exc: Exception) -> UpstreamError:
    if conn.peer_closed or isinstance(exc, ConnectionError):
        return UpstreamError("closed", "closed the connection in the middle of its answer")
    return UpstreamError("malformed", f"sent a malformed answer ({exc})")


class UpstreamAnswer:
    """A pod's answer: the head, the body read so far, and the connection until the body's end."""

    __slots__ = ("_conn", "_watchdog", "body", "complete", "response", "upstream")

    def __init__(self, upstream: Upstream, conn: HTTPConnection, response: h11.Response,
                 watchdog: _Watchdog) -> None:
        self.upstream = upstream
        self.response = response
        self.body: list[bytes] = []
        self.complete = False
        self._conn: HTTPConnection | None = conn
        self._watchdog = watchdog

    async def buffer(self, limit: int) -> None:
        """Read the body until its end or until more than `limit` bytes are in hand."""
        size = 0
        while size <= limit and (chunk := await self._next_chunk()) is not None:
            self.body.append(chunk)
            size += len(chunk)

    def body_bytes(self) -> bytes:
        """The body read so far, in one piece."""
        body = self.body
        return body[0] if len(body) == 1 else b"".join(body)

    async def read_more(self) -> bytes | None:
        """The next piece of a streamed body, None at its end; each must come within the timeout."""
        watchdog = self._watchdog
        watchdog.arm()
        try:
            return await self._next_chunk()
        except asyncio.CancelledError:
            if not watchdog.expired():
                raise
            self.discard()
            raise UpstreamError("timeout", f"sent nothing more of its answer for {watchdog.timeout_s:g}s") from None
        finally:
            watchdog.disarm()

    async def _next_chunk(self) -> bytes | None:
        conn = self._conn
        assert conn is not None
        try:
            event = await conn.next_event()
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            self.discard()
            raise _failure(conn, exc) from None
        if type(event) is h11.Data:
            return event.data  # h11 hands out a fresh piece of its buffer: kept without a copy
        # EndOfMessage (trailers are dropped); a close-delimited body ends here at the pod's EOF.
        self.complete = True
        self._conn = None
        self.upstream.pool(conn)
        return None

    def discard(self) -> None:
        """Close the connection of an answer that will not be read to its end."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SmoothWeightedPicker:
    """nginx's smooth weighted round-robin: exact proportions, evenly interleaved."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = {slot: w for slot, w in weights.items() if w > 0}
        self.total = sum(self.weights.values())
        self._current = dict.fromkeys(self.weights, 0)
        # All traffic on one slot (blue-green, most of the time): the sequence is that slot, every time.
        self._only = next(iter(self.weights)) if len(self.weights) == 1 else None

    def pick(self) -> str | None:
        if self._only is not None:
            return self._only
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


class RouterMetrics:
    """The router's Prometheus series, in a registry of their own (one per router process or test)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "releasegate_router_requests", "Requests answered by the router.",
            ("listener", "slot", "version", "code"), registry=self.registry)
        self._upstream_errors = Counter(
            "releasegate_router_upstream_errors",
            "Requests the router could not deliver to a pod, by kind: no_ready_pod, connect (refused), closed "
            "(the pod closed the connection before the end of its answer), malformed (an answer that is not "
            "HTTP/1.1), timeout (no answer within local.upstream_timeout_s).",
            ("listener", "slot", "version", "kind"), registry=self.registry)
        self._latency = Histogram(
            "releasegate_router_request_duration_seconds", "Time from request to response at the router.",
            ("listener", "slot", "version"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._switches = Counter("releasegate_router_traffic_switches", "Routing table changes.",
                                 registry=self.registry)
        # labels() validates and locks on every call; the data path looks its children up here instead.
        self._children: dict[tuple[str, str, str, int], Any] = {}

    def observe(self, listener: str, slot: str, version: str, status: int, seconds: float) -> None:
        key = (listener, slot, version, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self._requests.labels(listener, slot, version, str(status)),
                                               self._latency.labels(listener, slot, version))
        children[0].inc()
        children[1].observe(seconds)

    def upstream_error(self, listener: str, slot: str, version: str, kind: str) -> None:
        self._upstream_errors.labels(listener, slot, version, kind).inc()

    def switched(self) -> None:
        self._switches.inc()

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class Router:
    """Routes the service listener by weight and each preview listener to one slot."""

    def __init__(self, metrics: RouterMetrics, *, upstream_timeout_s: float = DEFAULT_UPSTREAM_TIMEOUT_S) -> None:
        self.metrics = metrics
        self.upstream_timeout_s = upstream_timeout_s
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
            self.metrics.switched()
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
        client = HTTPConnection(h11.SERVER, reader, writer)
        peer = writer.get_extra_info("peername")
        peer_address = str(peer[0]).encode() if peer else b""
        watchdog = _Watchdog(self.upstream_timeout_s)
        try:
            while True:
                try:
                    request = await self._read_request(client)
                except h11.RemoteProtocolError as exc:
                    await _answer(client, b"", exc.error_status_hint, f"bad request: {exc}\n")
                    return
                if request is None:
                    return
                await self._forward(client, *request, listener, slot, peer_address, watchdog)
                if not client.reusable:
                    return
                client.start_next_cycle()
        except (ConnectionError, _ClientAborted):
            return  # the client went away, or must be told that its answer broke off
        finally:
            watchdog.close()
            self._connections.discard(writer)
            writer.close()

    async def _read_request(self, client: HTTPConnection) -> tuple[h11.Request, bytes] | None:
        """The next request and its whole body, or None when the client closed between requests."""
        event = await client.next_event()
        if type(event) is not h11.Request:
            assert isinstance(event, h11.ConnectionClosed)
            return None
        if client.h11.they_are_waiting_for_100_continue:
            client.send(h11.InformationalResponse(status_code=100, headers=[]))
        part = await client.next_event()
        if type(part) is not h11.Data:
            return event, b""  # EndOfMessage: no body, the usual GET
        chunks: list[bytes] = []
        size = 0
        while type(part) is h11.Data:
            size += len(part.data)
            if size > MAX_REQUEST_BODY_BYTES:
                raise h11.RemoteProtocolError(f"request body larger than {MAX_REQUEST_BODY_BYTES} bytes", 413)
            chunks.append(part.data)
            part = await client.next_event()
        return event, b"".join(chunks)

    async def _forward(self, client: HTTPConnection, request: h11.Request, body: bytes, listener: str,
                       fixed_slot: str | None, peer_address: bytes, watchdog: _Watchdog) -> None:
        started = time.perf_counter()
        table = self.table
        slot, upstream = self._choose(table, fixed_slot)
        if upstream is None:
            version = table.versions.get(slot or "", "none")
            self.metrics.upstream_error(listener, slot or "none", version, "no_ready_pod")
            await _answer(client, request.method, 503, f"no ready pod in slot {slot or '-'}\n")
            self.metrics.observe(listener, slot or "none", version, 503, time.perf_counter() - started)
            return
        upstream.in_flight += 1
        try:
            status = await self._relay(client, upstream, request, body, listener, peer_address, watchdog)
        finally:
            upstream.in_flight -= 1
        self.metrics.observe(listener, upstream.slot, upstream.version, status, time.perf_counter() - started)

    async def _relay(self, client: HTTPConnection, upstream: Upstream, request: h11.Request, body: bytes,
                     listener: str, peer_address: bytes, watchdog: _Watchdog) -> int:
        """Send the request to `upstream` and its answer to the client; the status the client got."""
        method = request.method
        try:
            answer = await upstream.exchange(method, request.target,
                                             _headers_to_pod(request, body, upstream, peer_address), body,
                                             watchdog)
        except UpstreamError as exc:
            self.metrics.upstream_error(listener, upstream.slot, upstream.version, exc.kind)
            status = 504 if exc.kind == "timeout" else 502
            await _answer(client, method, status, f"{upstream.described} {exc}\n", upstream.slot_header)
            return status
        response = answer.response
        status = response.status_code
        headers, length = end_to_end(response)
        answer_body = answer.body_bytes() if answer.body else b""
        if method == b"HEAD" or status == 304:
            if length is not None:  # the length of the body a GET would have had
                headers.append((b"Content-Length", length))
        elif status == 204:
            pass  # no body, and no Content-Length either (RFC 9110 8.6)
        elif answer.complete:
            headers.append((b"Content-Length", str(len(answer_body)).encode()))
        elif length is not None:
            headers.append((b"Content-Length", length))  # streamed with the pod's own framing
        headers.append(upstream.slot_header)
        head = h11.Response(status_code=status, headers=headers, reason=response.reason, _parsed=_PARSED)
        try:
            if answer.complete:
                if answer_body:
                    client.send(head, h11.Data(data=answer_body), _END)
                else:
                    client.send(head, _END)
                await client.drain()
                return status
            client.send(head, h11.Data(data=answer_body))
            await client.drain()
            try:
                while (chunk := await answer.read_more()) is not None:
                    client.send(h11.Data(data=chunk))
                    await client.drain()
            except UpstreamError as exc:
                # The head went out already: ending the connection mid-message is all a proxy can say.
                self.metrics.upstream_error(listener, upstream.slot, upstream.version, exc.kind)
                raise _ClientAborted from None
            client.send(_END)
            await client.drain()
        finally:
            answer.discard()  # a no-op once the body was read to its end
        return status

    async def drain(self, upstreams: list[Upstream], timeout_s: float) -> bool:
        """Wait until no request is in flight on `upstreams` (they must already be out of the table).

        A pod that does not answer holds its requests for upstream_timeout_s at most, so a drain_timeout_s
        above that always sees them end.
        """
        async def idle() -> bool | None:
            return None if any(u.in_flight for u in upstreams) else True

        if await apoll_until(idle, timeout_s=timeout_s, interval_s=DRAIN_POLL_S) is None:
            return False
        for upstream in upstreams:
            upstream.close_idle()
        return True

    def close_connections(self) -> None:
        for writer in list(self._connections):
            with contextlib.suppress(Exception):
                writer.close()


class _ClientAborted(Exception):
    """The client's connection must end without finishing the message it was being sent."""


def _headers_to_pod(request: h11.Request, body: bytes, upstream: Upstream, peer_address: bytes) -> Headers:
    headers: Headers = []
    forwarded_for = peer_address
    has_host = False
    for name, value in end_to_end(request)[0]:
        lowered = name.lower()
        if lowered == b"x-forwarded-for":  # a proxy appends its client to the chain
            forwarded_for = value + b", " + peer_address if peer_address else value
            continue
        has_host = has_host or lowered == b"host"
        headers.append((name, value))
    if not has_host:  # an HTTP/1.0 client may send none; HTTP/1.1 requires it
        headers.append(upstream.host_header)
    if forwarded_for:
        headers.append((b"X-Forwarded-For", forwarded_for))
    if body or request.method in (b"POST", b"PUT", b"PATCH"):
        headers.append((b"Content-Length", str(len(body)).encode()))
    return headers


async def _answer(client: HTTPConnection, method: bytes, status: int, text: str,
                  *extra_headers: tuple[bytes, bytes]) -> None:
    """The router's own answer (an error) to a `method` request: plain text, and the connection closes
    after it unless it is still in step with the client (then the next request may follow)."""
    if client.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = text.encode()
    headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", str(len(body)).encode()),
               *extra_headers]
    if client.h11.their_state is not h11.DONE:  # we refused it before reading all of it
        headers.append((b"Connection", b"close"))
    head = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
    try:
        if method == b"HEAD":  # the head says what a GET would have got; no body follows it
            client.send(head, h11.EndOfMessage())
        else:
            client.send(head, h11.Data(data=body), h11.EndOfMessage())
        await client.drain()
    except (h11.LocalProtocolError, ConnectionError):
        pass
