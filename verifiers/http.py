"""HTTP clients bound to an endpoint, and a smoke check of status codes and the serving version.

Timeouts are always set, and proxies from the environment are never used (`trust_env=False`): a
HTTP_PROXY meant for the internet must not reroute requests to a loopback candidate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.types import Endpoint
from releasegate.verifiers.thresholds import format_seconds


def client_for(endpoint: Endpoint, *, timeout_s: float = 5.0) -> httpx.Client:
    """A client whose relative URLs go to `endpoint`; close it (or use it in a `with` block)."""
    return httpx.Client(base_url=endpoint.url, timeout=httpx.Timeout(timeout_s), trust_env=False,
                        headers={"User-Agent": "releasegate"})


@dataclass(frozen=True)
class Probe:
    """One smoke request: method, path, the status it must answer, and an optional JSON body."""

    method: str
    path: str
    status: int = 200
    json: Any = None

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path} -> {self.status}"


DEFAULT_PROBES: tuple[Probe, ...] = (
    Probe("GET", "/healthz"), Probe("GET", "/readyz"), Probe("GET", "/version"), Probe("GET", "/api/items"),
)

ProbeSpec = Probe | tuple[str, str, int]


def smoke(endpoint: Endpoint, paths: Sequence[ProbeSpec] = DEFAULT_PROBES, *, timeout_s: float = 5.0,
          record: RecordCheck = ignore_check) -> list[CheckOutcome]:
    """Send each probe once; each must answer its status and, when the endpoint's version is known,
    carry its version header (`endpoint.version_header`) equal to it (an answer from another version is a
    FAIL naming both). With no version header configured, only the status is checked.

    Every outcome goes to `record`; raises CheckFailed when any probe failed, else returns the outcomes.
    """
    probes = [p if isinstance(p, Probe) else Probe(*p) for p in paths]
    with client_for(endpoint, timeout_s=timeout_s) as client:
        outcomes = [_probe(client, endpoint, probe, timeout_s) for probe in probes]
    for outcome in outcomes:
        record(outcome)
    require(outcomes)
    return outcomes


def _probe(client: httpx.Client, endpoint: Endpoint, probe: Probe, timeout_s: float) -> CheckOutcome:
    subject = f"{probe.method.upper()} {probe.path} on {endpoint.describe()}"
    header = endpoint.version_header
    checks_version = bool(header) and endpoint.version is not None
    expected = f"{probe.status}" + (f", {header} {endpoint.version}" if checks_version else "")

    def outcome(verdict: Verdict, value: float | None, shown: str, message: str) -> CheckOutcome:
        return CheckOutcome(check=probe.name, verdict=verdict, value=value, display_value=shown,
                            threshold=expected, subject=subject, source=f"httpx, timeout {timeout_s:g}s",
                            window="one request", samples=1, message=message)

    started = time.perf_counter()
    try:
        response = client.request(probe.method, probe.path, json=probe.json)
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return outcome(Verdict.FAIL, None, "no answer", f"{subject}: no answer ({problem})")
    elapsed = time.perf_counter() - started
    served_by = response.headers.get(header) if header else None
    shown = f"{response.status_code} from {served_by or 'no version header'} in {format_seconds(elapsed)}"
    if response.status_code != probe.status:
        return outcome(Verdict.FAIL, elapsed, shown,
                       f"{subject}: answered {response.status_code}, expected {probe.status}")
    if checks_version and served_by != endpoint.version:
        who = f"version {served_by}" if served_by else f"a response without {header}"
        return outcome(Verdict.FAIL, elapsed, shown,
                       f"{subject}: answered by {who}, expected version {endpoint.version}")
    return outcome(Verdict.PASS, elapsed, shown,
                   f"{subject}: {response.status_code} from {served_by or 'unknown version'} in "
                   f"{format_seconds(elapsed)}")
