"""Just enough HTTP/1.1 for the router and the cluster's admin API, on asyncio streams.

The router is a hot path benchmarked against direct access, so it parses heads by hand instead of going
through a framework. Bodies are read whole: the services behind it answer small JSON documents, and a
whole body is what lets the router retry a request on a stale keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024

Headers = list[tuple[str, str]]


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 we can handle."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: Headers
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        return keeps_alive(self.version, self.header("connection"))

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int
    reason: str
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        return keeps_alive(self.version, self.header("connection"))


def keeps_alive(version: str, connection: str | None) -> bool:
    """HTTP/1.1 keeps a connection unless told to close; HTTP/1.0 closes it unless told to keep it."""
    if version == "HTTP/1.0":
        return (connection or "").lower() == "keep-alive"
    return (connection or "").lower() != "close"


def find_header(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # the peer closed an idle connection: not an error
        raise ProtocolError("connection closed in the middle of a message head") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None
    return raw[:-4].decode("latin-1").split("\r\n")


def _parse_headers(lines: list[str]) -> Headers:
    headers: Headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: Headers, *, until_close: bool) -> bytes:
    if (find_header(headers, "transfer-encoding") or "").lower().endswith("chunked"):
        return await _read_chunked(reader)
    length = find_header(headers, "content-length")
    if length is not None:
        size = int(length)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(f"body of {size} bytes is larger than {MAX_BODY_BYTES}")
        return await reader.readexactly(size) if size else b""
    return await reader.read(MAX_BODY_BYTES) if until_close else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers are dropped
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request, or None when the client closed the connection between requests."""
    lines = await _read_head(reader)
    if lines is None:
        return None
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise ProtocolError(f"malformed request line {lines[0]!r}") from None
    headers = _parse_headers(lines[1:])
    body = await _read_body(reader, headers, until_close=False)
    return Request(method, target, version, headers, body)


async def read_response(reader: asyncio.StreamReader, *, request_method: str) -> Response:
    lines = await _read_head(reader)
    if lines is None:
        raise ConnectionResetError("upstream closed the connection before answering")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"malformed status line {lines[0]!r}")
    status = int(parts[1])
    response = Response(status, parts[2] if len(parts) > 2 else "", parts[0], _parse_headers(lines[1:]))
    if request_method != "HEAD" and status >= 200 and status not in (204, 304):
        response.body = await _read_body(reader, response.headers, until_close=not response.keep_alive)
    return response


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te",
               "trailer", "upgrade"}


def serialize_request(request: Request, *, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
    lines += [f"{k}: {v}" for k, v in extra_headers]
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def serialize_response(response: Response, *, keep_alive: bool, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in _HOP_BY_HOP]
    lines += [f"{k}: {v}" for k, v in extra_headers]
    lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def json_response(status: int, payload: Any, reason: str = "") -> Response:
    body = json.dumps(payload, sort_keys=True).encode()
    return Response(status, reason or _REASONS.get(status, ""), headers=[("Content-Type", "application/json")],
                    body=body)


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, _REASONS.get(status, ""), headers=[("Content-Type", content_type)],
                    body=text.encode())


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
