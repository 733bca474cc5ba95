"""The local router against pods the test scripts: hung, malformed, closing, large and HEAD answers.

Each fake pod is an asyncio server on 127.0.0.1 that parses requests with h11 and answers with bytes the
test chooses, so it can misbehave exactly as a broken service does. Router and pods run in one event loop
on a thread of their own (as tests/kube_cluster.py runs its proxy); the test talks to the router with an
httpx client and waits on conditions with a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import h11
import httpx
import pytest

from releasegate.targets.local.router import (
    BUFFER_BYTES,
    Router,
    RouterMetrics,
    SmoothWeightedPicker,
    Upstream,
)
from tests.waiting import wait_until

T = TypeVar("T")
# What a fake pod does with one request: write an answer (or not) and say whether to keep the connection.
Answer = Callable[["FakePod", h11.Request, asyncio.StreamWriter], Awaitable[bool]]

UPSTREAM_TIMEOUT_S = 0.5
HEAD_LIMIT_BYTES = 64 * 1024


class Loop:
    """An event loop on a thread; `run` executes a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="router-test-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class FakePod:
    """A pod whose answers the test writes. `requests` lists (connection number, method, target, body)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[int, str, str, bytes]] = []
        self.connections = 0
        self.release = asyncio.Event()  # what a hung answer waits for; set when the test ends
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FakePod:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    def methods(self) -> list[str]:
        return [method for _, method, _, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        leftover = b""
        try:
            while True:
                conn = h11.Connection(h11.SERVER)  # a fresh one per request: answers are raw bytes
                if leftover:
                    conn.receive_data(leftover)
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return  # the router closed the connection
                assert request is not None
                leftover = conn.trailing_data[0]
                self.requests.append((number, request.method.decode(), request.target.decode(), body))
                if not await self.answer(self, request, writer):
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


def ok(body: bytes = b"hello", *, close: bool = False) -> Answer:
    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App-Version: v1\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return not close

    return answer


def raw(data: bytes) -> Answer:
    """Write `data` as the answer, then keep the connection open until the router closes it."""
    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return True

    return answer


async def _started(answer: Answer) -> FakePod:
    return await FakePod(answer).start()


class Harness:
    """A router on a loopback port in front of fake pods of slot blue, version v1."""

    def __init__(self, loop: Loop, *pods: FakePod, upstream_timeout_s: float = 5.0) -> None:
        self.loop = loop
        self.pods = pods
        self.metrics = RouterMetrics(app="test")
        self.router = Router(self.metrics, upstream_timeout_s=upstream_timeout_s)
        self.upstreams = tuple(Upstream(f"demo-blue-1-{index}", "blue", "v1", "127.0.0.1", pod.port)
                               for index, pod in enumerate(pods))
        self.router.update(weights={"blue": 100}, pods={"blue": self.upstreams}, versions={"blue": "v1"})
        self._server: asyncio.Server = loop.run(self._listen())
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self.client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    async def _listen(self) -> asyncio.Server:
        serve = functools.partial(self.router.serve, listener="service", slot=None)
        return await asyncio.start_server(serve, "127.0.0.1", 0)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the router's /metrics text, 0 when the series does not exist."""
        text = self.loop.run(_render(self.metrics))
        for line in text.splitlines():
            match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
            if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
                return float(match.group(2))
        return 0.0

    def close(self) -> None:
        self.client.close()

        async def stop() -> None:
            self._server.close()
            self.router.close_connections()
            for pod in self.pods:
                await pod.stop()
            for upstream in self.upstreams:
                upstream.close_idle()

        self.loop.run(stop())


async def _render(metrics: RouterMetrics) -> str:
    return metrics.render()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


@pytest.fixture
def harness(loop: Loop) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(*answers: Answer, upstream_timeout_s: float = 5.0) -> Harness:
        pods = [loop.run(_started(answer)) for answer in answers]
        made.append(Harness(loop, *pods, upstream_timeout_s=upstream_timeout_s))
        return made[-1]

    yield make
    for each in made:
        each.close()


# -- a pod that does not answer ------------------------------------------------------------------------

async def _hang(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
    await pod.release.wait()
    return False


async def _head_then_hang(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe first ten")
    await writer.drain()
    await pod.release.wait()
    return False


@pytest.mark.parametrize("answer", [_hang, _head_then_hang], ids=["no-answer", "head-then-nothing"])
def test_a_hung_pod_gets_a_504_within_the_upstream_timeout_and_does_not_pin_the_drain(
        harness: Callable[..., Harness], answer: Answer) -> None:
    routed = harness(answer, upstream_timeout_s=UPSTREAM_TIMEOUT_S)
    started = time.monotonic()
    response = routed.client.get("/api/items")
    waited = time.monotonic() - started
    print(f"504 after {waited:.3f}s (upstream timeout {UPSTREAM_TIMEOUT_S}s)")
    assert response.status_code == 504
    assert response.text == f"upstream pod demo-blue-1-0 (127.0.0.1:{routed.pods[0].port}) did not answer within 0.5s\n"
    assert response.headers["X-Releasegate-Slot"] == "blue"
    assert UPSTREAM_TIMEOUT_S * 0.9 <= waited < 10  # not before the timeout; the upper bound only stops a hang
    assert routed.metric("releasegate_router_upstream_errors_total", kind="timeout", slot="blue", version="v1") == 1
    assert routed.metric("releasegate_router_requests_total", code="504", listener="service") == 1
    # Nothing is left in flight: a pod removed now drains at once instead of pinning drain_timeout_s.
    assert routed.upstreams[0].in_flight == 0
    assert routed.loop.run(routed.router.drain(list(routed.upstreams), timeout_s=5))


def test_a_streamed_answer_that_stops_ends_the_clients_connection_after_the_upstream_timeout(
        harness: Callable[..., Harness]) -> None:
    # Past BUFFER_BYTES the head has gone out, so the timeout can only end the connection mid-message.
    first = b"x" * (BUFFER_BYTES + 1)

    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {2 * len(first)}\r\n\r\n".encode() + first)
        await writer.drain()
        await pod.release.wait()
        return False

    routed = harness(answer, upstream_timeout_s=UPSTREAM_TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        routed.client.get("/download")
    assert UPSTREAM_TIMEOUT_S * 0.9 <= time.monotonic() - started < 10
    assert routed.metric("releasegate_router_upstream_errors_total", kind="timeout") == 1
    assert routed.upstreams[0].in_flight == 0


def test_answers_slower_than_half_the_timeout_on_one_connection_are_never_cut_by_an_earlier_deadline(
        harness: Callable[..., Harness]) -> None:
    # The router keeps one timer per client connection and moves its deadline per request: a timer set for
    # the first request must not end the second, which started later and is still within its own timeout.
    async def slow(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(UPSTREAM_TIMEOUT_S * 0.6)  # the pod's behaviour under test, not a synchronisation
        return await ok()(pod, request, writer)

    routed = harness(slow, upstream_timeout_s=UPSTREAM_TIMEOUT_S)
    assert [routed.client.get("/api/items").status_code for _ in range(4)] == [200] * 4
    assert routed.metric("releasegate_router_upstream_errors_total", kind="timeout") == 0
    assert routed.pods[0].connections == 1


# -- answers that are not HTTP/1.1 ---------------------------------------------------------------------

MALFORMED = {
    "chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello",
    "head-too-large": b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * (4 * HEAD_LIMIT_BYTES) + b"\r\n\r\n",
    "status-line": b"HTTP/1.1 OK\r\n\r\n",
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_answer_is_a_502_counted_as_malformed(harness: Callable[..., Harness], answer: bytes) -> None:
    routed = harness(raw(answer))
    response = routed.client.get("/api/items")
    assert response.status_code == 502
    assert response.text.startswith(f"upstream pod demo-blue-1-0 (127.0.0.1:{routed.pods[0].port}) sent a malformed "
                                    "answer (")
    assert routed.metric("releasegate_router_upstream_errors_total", kind="malformed", slot="blue") == 1
    assert routed.metric("releasegate_router_requests_total", code="502", version="v1") == 1
    # The client's connection is in step: the next request on it is answered (and fails the same way).
    assert routed.client.get("/api/items").status_code == 502
    assert routed.metric("releasegate_router_upstream_errors_total", kind="malformed") == 2


def test_a_malformed_chunk_in_a_streamed_answer_breaks_the_clients_connection_not_the_body(
        harness: Callable[..., Harness]) -> None:
    # Past BUFFER_BYTES the head has gone out: the client must see an incomplete message, never a short body.
    first = b"x" * (BUFFER_BYTES + 1)
    routed = harness(raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{len(first):x}\r\n".encode() + first + b"\r\nzz\r\n"))
    with pytest.raises(httpx.RemoteProtocolError):
        routed.client.get("/api/items")
    assert routed.metric("releasegate_router_upstream_errors_total", kind="malformed") == 1


def test_a_pod_that_refuses_connections_is_a_502_counted_as_connect(harness: Callable[..., Harness]) -> None:
    routed = harness(ok())
    routed.loop.run(routed.pods[0].stop())
    response = routed.client.get("/api/items")
    assert response.status_code == 502
    assert "refused the connection" in response.text
    assert routed.metric("releasegate_router_upstream_errors_total", kind="connect") == 1


# -- a pooled connection that went stale: the retry rule ---------------------------------------------

def _answer_once_then(then: Answer) -> Answer:
    """Answer a connection's first request; its second gets `then` (the pod's behaviour on reuse)."""
    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        number = pod.requests[-1][0]
        if sum(1 for conn, *_ in pod.requests if conn == number) == 1:
            return await ok()(pod, request, writer)
        return await then(pod, request, writer)

    return answer


async def _close_without_answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
    return False  # read the whole request, then close: what a pod that dies mid-request looks like


def test_a_post_is_never_sent_twice(harness: Callable[..., Harness]) -> None:
    # The pod read the POST on a reused keep-alive connection and closed it without answering. The old
    # router took that for a stale connection and sent the POST again on a new one.
    routed = harness(_answer_once_then(_close_without_answer))
    assert routed.client.get("/api/items").status_code == 200  # the connection the POST will reuse
    response = routed.client.post("/api/checkout", json={"item_id": 1})
    assert response.status_code == 502
    assert "closed the connection without answering" in response.text
    assert routed.pods[0].methods() == ["GET", "POST"]
    assert routed.metric("releasegate_router_upstream_errors_total", kind="closed") == 1


def test_a_get_on_a_connection_closed_without_answer_is_sent_again_once(harness: Callable[..., Harness]) -> None:
    routed = harness(_answer_once_then(_close_without_answer))
    assert routed.client.get("/api/items").status_code == 200
    response = routed.client.get("/api/items")
    assert response.status_code == 200  # idempotent: sent again, on a fresh connection
    assert [(conn, method) for conn, method, *_ in routed.pods[0].requests] == [(1, "GET"), (1, "GET"), (2, "GET")]


def test_a_pooled_connection_the_pod_closed_is_not_used_and_the_post_goes_once(
        harness: Callable[..., Harness]) -> None:
    # A keep-alive timeout at the pod: it closed the idle connection before the POST came.
    routed = harness(ok(close=True))
    assert routed.client.get("/api/items").status_code == 200
    upstream = routed.upstreams[0]
    wait_until(lambda: upstream.idle and upstream.idle[0][0].stale, timeout_s=10,
               what="the router to see the pod close its pooled connection")
    response = routed.client.post("/api/checkout", json={"item_id": 1})
    assert response.status_code == 200
    assert [(conn, method) for conn, method, *_ in routed.pods[0].requests] == [(1, "GET"), (2, "POST")]
    assert json.loads(routed.pods[0].requests[1][3]) == {"item_id": 1}


# -- bodies and framing --------------------------------------------------------------------------------

def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _close_delimited(status_line: bytes, body: bytes) -> Answer:
    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(status_line + b"\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        for start in range(0, len(body), 8192):  # many writes, so the router reads many pieces
            writer.write(body[start:start + 8192])
            await writer.drain()
        return False

    return answer


@pytest.mark.parametrize("size", [1024 * 1024, 100 * 1024], ids=["1MiB-streamed", "100KiB-buffered"])
@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"])
def test_a_close_delimited_body_arrives_whole(harness: Callable[..., Harness], size: int,
                                              status_line: bytes) -> None:
    body = _pattern(size)
    routed = harness(_close_delimited(status_line, body))
    response = routed.client.get("/download")
    assert response.status_code == 200
    assert len(response.content) == size
    assert response.content == body
    if size > BUFFER_BYTES:
        assert response.headers["Transfer-Encoding"] == "chunked"  # streamed: the end is marked, not implied
    else:
        assert response.headers["Content-Length"] == str(size)
    # The pod closed its connection; the client's keeps going.
    again = routed.client.get("/download")
    assert again.content == body


def test_head_keeps_the_content_length_and_the_connection_stays_in_step(harness: Callable[..., Harness]) -> None:
    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n"
        writer.write(head if request.method == b"HEAD" else head.replace(b"1234", b"2") + b"{}")
        await writer.drain()
        return True

    routed = harness(answer)
    response = routed.client.head("/api/items")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "1234"
    assert response.content == b""
    after = routed.client.get("/api/items")  # the same connection: no body was expected after the HEAD
    assert (after.status_code, after.content) == (200, b"{}")
    assert routed.pods[0].methods() == ["HEAD", "GET"]
    assert routed.pods[0].connections == 1


def test_an_error_answer_to_head_has_no_body_and_the_connection_stays_in_step(
        harness: Callable[..., Harness]) -> None:
    routed = harness(raw(MALFORMED["status-line"]))
    response = routed.client.head("/api/items")
    assert response.status_code == 502
    assert response.content == b""
    assert int(response.headers["Content-Length"]) > 0  # the length of the text a GET gets
    assert routed.client.get("/api/items").text.startswith("upstream pod demo-blue-1-0")


def test_a_request_that_is_not_http_gets_a_400_and_a_slot_without_pods_a_503(harness: Callable[..., Harness],
                                                                               loop: Loop) -> None:
    routed = harness()
    assert routed.client.get("/api/items").status_code == 503
    assert routed.metric("releasegate_router_upstream_errors_total", kind="no_ready_pod", slot="blue") == 1

    async def garbage() -> bytes:
        host, port = routed.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        answer = await reader.read()  # the router answers and closes
        writer.close()
        return answer

    assert loop.run(garbage()).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_requests_reach_the_pod_with_their_body_and_forwarding_headers(harness: Callable[..., Harness]) -> None:
    seen: list[h11.Request] = []

    async def answer(pod: FakePod, request: h11.Request, writer: asyncio.StreamWriter) -> bool:
        seen.append(request)
        return await ok(b'{"ok":true}')(pod, request, writer)

    routed = harness(answer)
    response = routed.client.post("/api/checkout?x=1", content=b"a" * 100_000,
                                  headers={"X-Forwarded-For": "10.0.0.1", "Connection": "keep-alive, X-Drop",
                                           "X-Drop": "hop"})
    assert response.json() == {"ok": True}
    assert response.headers["X-App-Version"] == "v1"
    assert routed.pods[0].requests[0][1:] == ("POST", "/api/checkout?x=1", b"a" * 100_000)
    headers = dict(seen[0].headers)
    assert headers[b"x-forwarded-for"] == b"10.0.0.1, 127.0.0.1"
    assert headers[b"content-length"] == b"100000"
    assert b"x-drop" not in headers and b"connection" not in headers


# -- routing and metrics -------------------------------------------------------------------------------

def test_smooth_weighted_round_robin_is_exact_and_interleaved() -> None:
    picker = SmoothWeightedPicker({"blue": 90, "green": 10})
    picks = [picker.pick() for _ in range(100)]
    assert picks.count("green") == 10
    green_at = [index for index, slot in enumerate(picks) if slot == "green"]
    assert all(later - earlier == 10 for earlier, later in itertools.pairwise(green_at))
    assert SmoothWeightedPicker({"blue": 0}).pick() is None


def test_requests_are_spread_over_the_pods_and_counted_by_slot_version_and_code(
        harness: Callable[..., Harness]) -> None:
    routed = harness(ok(), ok())
    for _ in range(10):
        assert routed.client.get("/api/items").status_code == 200
    assert [len(pod.requests) for pod in routed.pods] == [5, 5]
    assert routed.metric("releasegate_router_requests_total", listener="service", slot="blue", version="v1",
                         code="200") == 10
    assert routed.metric("releasegate_router_request_duration_seconds_count", slot="blue", version="v1") == 10
    assert routed.metric("releasegate_router_traffic_switches_total") == 1
    text = routed.loop.run(_render(routed.metrics))
    assert "# TYPE releasegate_router_request_duration_seconds histogram" in text
