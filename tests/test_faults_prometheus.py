"""Prometheus down, slow or answering garbage: one typed MetricsError in one line, never a value, never a hang.

"Down" is a real Prometheus that was stopped. "Slow" and "garbage" come from a stand-in HTTP server on
loopback (a boundary we own: what is on the other side of the configured URL), because a real Prometheus
cannot be made to answer garbage.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from releasegate.core.types import MetricsScope
from releasegate.verifiers.metrics import Metrics, MetricsError
from releasegate.verifiers.prometheus_client import (
    PrometheusClient,
    PrometheusMalformed,
    PrometheusTimeout,
    PrometheusUnreachable,
)
from tests.verifiers_services import prometheus

Answer = Callable[[socket.socket], None]


def http_answer(status: str, content_type: str, body: bytes) -> Answer:
    def answer(connection: socket.socket) -> None:
        connection.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n".encode() + body)
    return answer


def silent_for(seconds: float, released: threading.Event) -> Answer:
    def answer(connection: socket.socket) -> None:
        released.wait(seconds)  # a Prometheus busy with an expensive query: accepts, answers nothing yet
    return answer


def not_http(connection: socket.socket) -> None:
    connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


@contextmanager
def stand_in(answer: Answer) -> Iterator[str]:
    """A loopback server that reads each request and answers it with `answer`; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    connection.recv(65536)
                    answer(connection)
                except OSError:
                    pass  # the client gave up (its timeout): as a real server would see it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(5)
        listener.close()


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


GARBAGE = [
    ("html", http_answer("200 OK", "text/html", b"<html><body>Sign in to the proxy</body></html>"),
     r"answered something that is not the Prometheus API \(HTTP 200, text/html: '<html><body>Sign in"),
    ("truncated-json", http_answer("200 OK", "application/json", b'{"status":"success","data":{"resultTy'),
     r"not the Prometheus API \(HTTP 200, application/json: '\{\"status\":\"success\""),
    ("wrong-shape", http_answer("200 OK", "application/json", b'{"status":"success","data":{"rows":[]}}'),
     r"not the Prometheus API \(data.resultType: Field required\)"),
    ("value-not-a-number", http_answer(
        "200 OK", "application/json",
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"n/a"]}]}}'),
     r"not the Prometheus API \(data.result.0.value: 'n/a' is not a number\)"),
    ("gateway-error", http_answer("502 Bad Gateway", "text/plain", b"upstream connect error"),
     r"not the Prometheus API \(HTTP 502, text/plain: 'upstream connect error'\)"),
    ("not-http", not_http, r"not the Prometheus API \(not an HTTP answer: "),
]


@pytest.mark.parametrize(("answer", "expected"), [(a, e) for _, a, e in GARBAGE], ids=[i for i, _, _ in GARBAGE])
def test_garbage_is_malformed_in_one_line_naming_the_url(answer: Answer, expected: str) -> None:
    with stand_in(answer) as url, PrometheusClient(url, timeout_s=2) as client, \
            pytest.raises(PrometheusMalformed, match=expected) as error:
        client.query("up")
    line = one_line(error.value)
    assert line.startswith(f"Prometheus at {url} answered something that is not the Prometheus API")
    assert line.endswith("; check the configured Prometheus URL")


def test_garbage_reaches_a_check_as_a_metrics_error_never_a_value() -> None:
    # Through the Metrics a suite uses: a number it cannot read must not become a ValueError (an internal
    # error) nor a measurement.
    answer = GARBAGE[3][1]
    with stand_in(answer) as url, Metrics(MetricsScope(url, "demo"), timeout_s=2) as metrics, \
            pytest.raises(MetricsError, match="is not a number"):
        metrics.success_rate(version="v2", window_s=30)


def test_a_slow_prometheus_times_out_at_the_configured_timeout() -> None:
    released = threading.Event()
    with stand_in(silent_for(30, released)) as url, PrometheusClient(url, timeout_s=0.5) as client:
        started = time.monotonic()
        try:
            with pytest.raises(PrometheusTimeout) as error:
                client.query("up")
        finally:
            released.set()
        elapsed = time.monotonic() - started
    assert one_line(error.value) == (
        f"Prometheus at {url} timed out (no answer within 0.5s, waiting for the answer); check that it runs and "
        "is not overloaded, or allow it a longer timeout")
    assert 0.5 <= elapsed < 5, elapsed


def test_a_stopped_prometheus_is_unreachable(tmp_path: Path) -> None:
    with prometheus(tmp_path, []) as url, PrometheusClient(url, timeout_s=2) as client:
        assert client.query("1")[0]["value"][1] == "1"  # it was there
    # The context stopped the real server: the same client, the same URL, nothing listening any more.
    with PrometheusClient(url, timeout_s=2) as client, pytest.raises(PrometheusUnreachable) as error:
        client.query("1")
    assert one_line(error.value) == (
        f"Prometheus at {url} is unreachable (connection refused or host unknown); check that it runs and that "
        "the configured Prometheus URL is right")
