"""Fault injection and the request log.

A fault rule answers the next ``times`` matching requests with an error (500, 503, 429 with Retry-After,
409 Conflict, 504) and/or delays them. Every request, faulted or not, lands in the request log with its
method, path (query included), headers, body and response status, so a test can prove that *no* write was
sent in some scenario.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class Headers(dict[str, str]):
    """Request headers as sent, looked up case-insensitively (the client sends ``authorization``)."""

    def _key(self, key: object) -> object:
        if isinstance(key, str):
            for existing in self.keys():
                if existing.lower() == key.lower():
                    return existing
        return key

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(str(self._key(key)))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(str(self._key(key)), default)


@dataclass
class RecordedRequest:
    method: str
    path: str  # with the query string, exactly as received
    headers: Headers
    body: bytes
    status: int = 0
    user: str = ""
    fault: bool = False
    watch: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type") or ""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS


class RequestLog:
    def __init__(self) -> None:
        self._items: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def add(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class FaultRule:
    method: str | None
    path_regex: str | None
    status: int | None
    times: int
    latency_s: float = 0.0
    retry_after: int | None = None
    message: str = "injected fault"
    hits: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path_regex) if self.path_regex else None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self._pattern and not self._pattern.search(path))

    @property
    def exhausted(self) -> bool:
        return self.hits >= self.times


class FaultInjector:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first live rule matching this request, with one use consumed."""
        with self._lock:
            for rule in self._rules:
                if not rule.exhausted and rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None
