"""Zero downtime, measured: a probe that sends requests through the public service around a traffic change.

The probe is one thread with one keep-alive httpx client (timeouts always set, no proxies from the
environment). It starts just before the change (its first answer is in hand before the change begins) and
sends a request every `interval_s`, as a user who keeps clicking would. When the change is done the probe
goes on until `settle_answers` answers in a row came from the expected version (the change reached users)
or `settle_timeout_s` passed, then stops: it runs only around the change, so it costs a release almost
nothing.

What it counts: requests sent, failed requests (a connection error, a timeout, or a 5xx answer), the
longest gap between two successful answers (counted from the probe's start and up to its end, so a probe
that never got an answer has a gap as long as itself), and the versions that answered (the version
header). `probed_change` turns that into JUnit properties, and into a failed action where a failed
request is ours to prevent (`fail_closed`: the local target's router), not only to report.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from releasegate.core.errors import TargetError

DEFAULT_INTERVAL_S = 0.01
DEFAULT_REQUEST_TIMEOUT_S = 2.0
DEFAULT_SETTLE_ANSWERS = 5
DEFAULT_SETTLE_TIMEOUT_S = 5.0
# How long start() waits for the first answer before the change may begin: one request's timeout and a bit.
FIRST_ANSWER_GRACE_S = 0.5
KEPT_FAILURE_EXAMPLES = 3


@dataclass(frozen=True)
class ProbeSettings:
    path: str = "/healthz"
    version_header: str = ""  # empty: versions are not told apart, and settling counts any answer
    interval_s: float = DEFAULT_INTERVAL_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    settle_answers: int = DEFAULT_SETTLE_ANSWERS
    settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S


@dataclass(frozen=True)
class ProbeReport:
    """What one probe saw, from its first request to its last."""

    url: str
    requests: int
    failed: int
    longest_gap_s: float
    duration_s: float
    versions: dict[str, int]  # version header value ("none" when absent) -> successful answers
    failure_kinds: dict[str, int]  # "502", "ConnectError", "ReadTimeout" ... -> count
    failure_examples: tuple[str, ...]  # the first few failures, one line each
    settled: bool  # the expected version answered settle_answers times in a row after the change

    def describe_versions(self) -> str:
        return ", ".join(f"{version} {count}" for version, count in self.versions.items()) or "none"

    def describe_failures(self) -> str:
        return ", ".join(f"{count} x {kind}" for kind, count in self.failure_kinds.items()) or "none"

    def summary(self) -> str:
        return (f"{self.requests} requests through {self.url} in {self.duration_s * 1000:.0f} ms, {self.failed} failed"
                + (f" ({self.describe_failures()})" if self.failed else "")
                + f", longest gap {self.longest_gap_s * 1000:.1f} ms, answered by {self.describe_versions()}")

    def properties(self, prefix: str) -> list[tuple[str, str]]:
        """JUnit properties under `prefix` (`release.switch.probe`)."""
        found = [(f"{prefix}.requests", str(self.requests)), (f"{prefix}.failed", str(self.failed)),
                 (f"{prefix}.longest_gap_ms", f"{self.longest_gap_s * 1000:.1f}"),
                 (f"{prefix}.versions", self.describe_versions()),
                 (f"{prefix}.window_ms", f"{self.duration_s * 1000:.0f}"),
                 (f"{prefix}.settled", str(self.settled).lower())]
        if self.failed:
            found.append((f"{prefix}.failures", f"{self.describe_failures()}; first: "
                                                + " | ".join(self.failure_examples)))
        return found


@dataclass
class _Tally:
    """Written by the probe thread only; read by others once it stopped (or as a rough live view)."""

    requests: int = 0
    failed: int = 0
    longest_gap_s: float = 0.0
    last_success_at: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)
    failure_kinds: Counter[str] = field(default_factory=Counter)
    failure_examples: list[str] = field(default_factory=list)
    in_a_row: int = 0  # answers in a row from the expected version, counted after the change only
    settled: bool = False


class TrafficProbe:
    """Requests through `url` at a steady pace from start() until finish() saw the change reach users."""

    def __init__(self, url: str, settings: ProbeSettings = ProbeSettings(), *,
                 transport: httpx.BaseTransport | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.settings = settings
        self._clock = clock
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(settings.request_timeout_s),
                                    trust_env=False, transport=transport,
                                    headers={"User-Agent": "releasegate-probe"})
        self._tally = _Tally()
        self._thread = threading.Thread(target=self._run, name="releasegate-probe", daemon=True)
        self._first_answer = threading.Event()
        self._stop = threading.Event()  # stop now, settled or not
        self._settling = threading.Event()  # the change is done: stop once it reached users
        self._expected: str | None = None
        self._settle_deadline = 0.0
        self._settle_sent_after = 0.0
        self._started_at = 0.0
        self._stopped_at = 0.0

    @property
    def requests_so_far(self) -> int:
        return self._tally.requests

    @property
    def failed_so_far(self) -> int:
        return self._tally.failed

    def start(self) -> TrafficProbe:
        """Start probing; returns once the first request has its outcome (or after its timeout and a grace),
        so the probe's window covers the moment before the change."""
        self._started_at = self._clock()
        self._tally.last_success_at = self._started_at
        self._thread.start()
        self._first_answer.wait(self.settings.request_timeout_s + FIRST_ANSWER_GRACE_S)
        return self

    def finish(self, expected_version: str | None = None) -> ProbeReport:
        """The change is done: go on until `settle_answers` answers in a row from `expected_version` (any
        successful answer when None, or without a version header), at most settle_timeout_s; the report."""
        self._expected = expected_version if self.settings.version_header else None
        self._settle_sent_after = self._clock()
        self._settle_deadline = self._settle_sent_after + self.settings.settle_timeout_s
        self._settling.set()
        self._thread.join(self.settings.settle_timeout_s + self.settings.request_timeout_s + 1.0)
        return self._close()

    def abandon(self) -> ProbeReport:
        """The change failed: stop at once (after the request in flight, bounded by its timeout)."""
        self._stop.set()
        self._thread.join(self.settings.request_timeout_s + 1.0)
        return self._close()

    def _close(self) -> ProbeReport:
        self._stop.set()
        self._thread.join(self.settings.request_timeout_s + 1.0)  # never close the client under its request
        self._client.close()
        tally = self._tally
        end = self._stopped_at or self._clock()
        longest = max(tally.longest_gap_s, end - tally.last_success_at)
        return ProbeReport(url=self.url, requests=tally.requests, failed=tally.failed, longest_gap_s=longest,
                           duration_s=end - self._started_at, versions=dict(tally.versions),
                           failure_kinds=dict(tally.failure_kinds),
                           failure_examples=tuple(tally.failure_examples), settled=tally.settled)

    # -- the probe thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_send = self._clock()
        try:
            while not self._stop.is_set():
                sent_at = self._clock()
                self._one_request(sent_at)
                self._first_answer.set()
                if self._done():
                    break
                next_send = max(next_send + self.settings.interval_s, self._clock())
                self._stop.wait(max(0.0, next_send - self._clock()))  # the pace; stop() cuts it short
        finally:
            self._first_answer.set()
            self._stopped_at = self._clock()

    def _one_request(self, sent_at: float) -> None:
        tally, settings = self._tally, self.settings
        tally.requests += 1
        try:
            response = self._client.get(settings.path)
        except httpx.HTTPError as exc:
            self._failure(type(exc).__name__, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if response.status_code >= 500:
            body = response.text.strip().splitlines()[:1]
            self._failure(str(response.status_code),
                          f"{response.status_code} {response.reason_phrase}" + (f": {body[0][:120]}" if body else ""))
            return
        now = self._clock()
        tally.longest_gap_s = max(tally.longest_gap_s, now - tally.last_success_at)
        tally.last_success_at = now
        served = response.headers.get(settings.version_header, "none") if settings.version_header else "none"
        tally.versions[served] += 1
        if self._settling.is_set() and sent_at >= self._settle_sent_after:
            expected = self._expected
            tally.in_a_row = tally.in_a_row + 1 if expected is None or served == expected else 0
            tally.settled = tally.in_a_row >= settings.settle_answers

    def _failure(self, kind: str, line: str) -> None:
        tally = self._tally
        tally.failed += 1
        tally.in_a_row = 0
        tally.failure_kinds[kind] += 1
        if len(tally.failure_examples) < KEPT_FAILURE_EXAMPLES:
            tally.failure_examples.append(line)

    def _done(self) -> bool:
        return self._settling.is_set() and (self._tally.settled or self._clock() >= self._settle_deadline)


class ProbeFailed(TargetError):
    """A traffic change during which the probe saw a request fail, where failing it is ours to prevent.

    `properties` are the probe's JUnit properties: the action item records them although it failed."""

    def __init__(self, message: str, properties: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.properties = properties


@contextlib.contextmanager
def probed_change(url: str, action: str, settings: ProbeSettings, *, expected_version: str | None,
                  fail_closed: bool, transport: httpx.BaseTransport | None = None,
                  ) -> Iterator[list[tuple[str, str]]]:
    """Probe the service at `url` around the traffic change in the `with` block.

    Yields a list that holds the probe's JUnit properties (`release.<action>.probe.*`) once the block is
    done. When the block raises, the probe stops at once and the block's exception goes on. When a request
    failed and `fail_closed` is set, raises ProbeFailed (the action fails, so the release rolls back);
    without it the failure is reported only (properties, and `.failures` naming them).
    """
    found: list[tuple[str, str]] = []
    probe = TrafficProbe(url, settings, transport=transport).start()
    try:
        yield found
    except BaseException:
        found += probe.abandon().properties(f"release.{action}.probe")
        raise
    # Once a request failed where that fails the action, waiting for the change to settle adds nothing.
    report = probe.abandon() if fail_closed and probe.failed_so_far else probe.finish(expected_version)
    found += report.properties(f"release.{action}.probe")
    if report.failed and fail_closed:
        raise ProbeFailed(f"the probe through the public service saw {report.failed} of {report.requests} "
                          f"requests fail during the {action} ({report.describe_failures()}; first: "
                          f"{report.failure_examples[0]}), longest gap {report.longest_gap_s * 1000:.0f} ms: "
                          "users saw errors while traffic moved", list(found))
