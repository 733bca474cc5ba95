"""Calls to the Kubernetes API with the failure handling a release needs.

- 429 and 5xx: bounded retries with exponential back-off, honouring Retry-After.
- 401/403: one ConfigError naming the verb and resource that the credentials or RBAC lack.
- 404: NotFoundError, so callers can say which object is missing.
- 409: ConflictError; read-modify-write callers re-read and try again (see `retry_on_conflict`).
Bodies are plain dicts, read with `_preload_content=False`, so what is sent and received is exactly
the API's JSON (the generated models would, for example, drop the microseconds of a MicroTime).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from releasegate.core.errors import ConfigError, TargetError

T = TypeVar("T")

RETRYABLE = {429, 500, 502, 503, 504}
CONTENT_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


class NotFoundError(TargetError):
    pass


class ConflictError(TargetError):
    pass


def status_message(exc: ApiException) -> str:
    """The `message` of the Status body the API server sent, or the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


class KubeApi:
    """One place for every request: timeouts, retries, error translation, and a request count."""

    def __init__(self, client: ApiClient, *, namespace: str, timeout_s: float, max_retries: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._sleep = sleep
        self.requests = 0
        _no_transport_retries(client)

    def call(self, verb: str, resource: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call one API method; returns the decoded JSON body (or None for an empty one).

        Every verb is retried, writes included: the target's writes are idempotent (a patch or replace sets
        values; a create that did land before a timeout comes back as 409 AlreadyExists, which the caller's
        `retry_on_conflict` turns into a read and a replace).
        """
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self.requests += 1
            try:
                response = function(*args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
                data = response.data
                return json.loads(data) if data else None
            except ApiException as exc:
                if exc.status in RETRYABLE and attempt <= self.max_retries:
                    self._sleep(self._backoff(attempt, exc))
                    continue
                raise self._translate(exc, verb, resource, self._tries(attempt, started)) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt <= self.max_retries:
                    self._sleep(self._backoff(attempt, None))
                    continue
                host = self.client.configuration.host
                tries = self._tries(attempt, started)
                if _is_timeout(exc):
                    raise TargetError(f"the Kubernetes API server at {host} did not answer within "
                                      f"{self.timeout_s:g}s to {verb} {resource} ({tries}); check the API "
                                      "server's health, or raise kubernetes.request_timeout_s") from None
                raise TargetError(f"cannot reach the Kubernetes API server at {host} to {verb} {resource} "
                                  f"({tries}): {type(exc).__name__}: {exc}; check the kubeconfig's server "
                                  "address and the network to it") from None

    @staticmethod
    def _tries(attempt: int, started: float) -> str:
        """`3 attempts over 1.4s`: how hard releasegate tried before giving up, for the one-line message."""
        if attempt == 1:
            return "1 attempt, retries disabled (kubernetes.max_retries = 0)"
        return f"{attempt} attempts over {time.monotonic() - started:.1f}s"

    def _backoff(self, attempt: int, exc: ApiException | None) -> float:
        retry_after = (exc.headers or {}).get("Retry-After") if exc is not None else None
        if retry_after and str(retry_after).isdigit():
            return min(float(retry_after), 30.0)
        return float(min(0.1 * 2 ** (attempt - 1), 5.0) * (0.5 + random.random() / 2))

    def _translate(self, exc: ApiException, verb: str, resource: str, tries: str) -> Exception:
        message = status_message(exc)
        where = f"in namespace {self.namespace}"
        if exc.status == 401:
            return ConfigError(f"the Kubernetes API server rejected the credentials (401 Unauthorized) when trying "
                               f"to {verb} {resource}; refresh the kubeconfig's token or pick another context")
        if exc.status == 403:
            return ConfigError(f"RBAC forbids {verb} on {resource} {where} ({message}); grant the verb "
                               f"{verb!r} on {resource!r} to the runner's Role "
                               "(charts/bluegreen-app/files/runner-rules.yaml)")
        if exc.status == 404:
            return NotFoundError(f"{resource} not found {where}: {message}")
        if exc.status == 409:
            return ConflictError(f"conflict on {resource} {where}: {message}")
        if exc.status == 429:
            return TargetError(f"the Kubernetes API server kept throttling (HTTP 429 Too Many Requests) the request "
                               f"to {verb} {resource} {where} ({tries}, honouring Retry-After): {message}; the "
                               "cluster is overloaded or the runner's priority level too small: rerun later")
        if exc.status in RETRYABLE:
            return TargetError(f"the Kubernetes API server failed to {verb} {resource} {where} with HTTP "
                               f"{exc.status} ({tries}): {message}; check the API server's health "
                               "(kubectl get --raw /readyz) and rerun the release")
        return TargetError(f"the Kubernetes API refused to {verb} {resource} {where}: HTTP {exc.status} {message}")


def retry_on_conflict(action: Callable[[], T], *, attempts: int = 5) -> T:
    """Run a read-modify-write `action` again when someone else changed the object in between.

    Each attempt reads the object afresh (the action does), so a retry never overwrites the other writer's
    change. When every attempt conflicts, something keeps writing the object: the ConflictError says so.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ConflictError as exc:
            if attempt == attempts:
                raise ConflictError(f"{exc}; it changed under releasegate {attempts} times in a row, each time "
                                    "re-read and retried: another writer (a second release, Argo CD self-heal, "
                                    "an operator) keeps updating it; stop that writer and rerun") from None
    raise AssertionError("unreachable")


def _is_timeout(exc: BaseException) -> bool:
    """A read or connect timeout, however urllib3 wrapped it (MaxRetryError's reason, a bare socket timeout)."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # refused or unresolvable: a TimeoutError by
        return False                                             # urllib3's class tree, not by its meaning
    reason = getattr(exc, "reason", None)
    return isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or (
        reason is not None and reason is not exc and _is_timeout(reason))


def _no_transport_retries(client: ApiClient) -> None:
    """Make KubeApi.call the one retry policy: urllib3 under the client retries on its own by default (three
    times per request, timeouts and 429/503 with Retry-After included), which multiplied with ours turned a
    hung API server into 4 x (1 + max_retries) timeouts, minutes instead of seconds, and hid the attempts
    from the request count and the messages. The client passes its pool settings to urllib3's PoolManager,
    which builds every connection pool from them; pools made before this (none, normally) are dropped."""
    pool_manager = getattr(getattr(client, "rest_client", None), "pool_manager", None)
    if isinstance(pool_manager, urllib3.PoolManager):
        pool_manager.connection_pool_kw["retries"] = False
        pool_manager.clear()
