"""Load tests with locust in a subprocess, and their results per endpoint and per serving version.

locust is never imported here: importing it monkey-patches the whole process with gevent. `run_load`
starts `python -m locust --headless -f verifiers/locust_collector.py,<locustfile>`; the collector (loaded
inside that process) records every request per endpoint name and per serving version (the endpoint's
version header), publishes its counts every second, and writes JSON to a temporary file at the end.

Sequential windows: every second this process judges the profile's `checks` and `stop_on_breach`
thresholds on the live counts with anytime-valid bounds (verifiers.thresholds), over all endpoints and over
each endpoint with enough traffic. A decisive failure stops the run at once; once `duration_s` (the minimum
window) has passed, the run stops as soon as every check has decided to pass; otherwise it goes on until
`max_duration_s`. Looking every second costs nothing in false alarms: the bounds hold at every look.

A failed request is one locust reports as failed (connection error, timeout, HTTP >= 400 unless the
locustfile accepted it with `catch_response`, or `response.failure()`), or any HTTP >= 500 answer even if
the locustfile accepted it: a server error never counts as a success.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.core.files import write_atomically
from releasegate.core.processes import stop_child
from releasegate.core.types import DEFAULT_VERSION_HEADER, Endpoint, Role
from releasegate.verifiers.sequential import Decision
from releasegate.verifiers.stats import RESERVOIR_SIZE, Stats
from releasegate.verifiers.thresholds import Kind, Threshold, format_count, parse_threshold

COLLECTOR = Path(__file__).resolve().with_name("locust_collector.py")

OUTPUT_ENV = "RELEASEGATE_LOAD_OUTPUT"
"""Where the collector writes its JSON; set by run_load for the subprocess only."""

SETTINGS_ENV = "RELEASEGATE_LOAD_SETTINGS"
"""The collector's settings as JSON: the longest duration, where to publish live counts and look for a stop."""

UNKNOWN_VERSION = "unknown"
"""The serving version of a response without a version header (or no response at all)."""

STARTUP_GRACE_S = 30.0
"""Default slack on top of the duration for locust to start, stop its users and write the results."""

LOOK_INTERVAL_S = 1.0
"""How often the live counts are published and judged."""

LIVE_STALL_S = 10.0
"""A running locust that publishes no new live counts for this long is hung (stopped, deadlocked, its event
loop blocked): its process group is killed and the run is a LoadError, long before the run's deadline.
Ten looks in a row missed: a machine busy enough to delay one publication by seconds is still not hung."""

ENDPOINT_MIN_SHARE = 0.05
"""An endpoint carrying at least this share of a run's requests is judged on its own, beside the total:
a regression on a quarter of the traffic must not hide in the average. Quieter endpoints are reported as
too little traffic to decide alone, and count in the total."""

_KILL_GRACE_S = 5.0
_STDERR_TAIL_LINES = 12


class LoadError(ReleasegateError):
    """The load test itself did not work (locust crashed, a broken locustfile, no requests, a timeout).

    Not a CheckFailed: nothing was measured, so the release neither passes nor "fails verification";
    pytest reports it as an error and the release does not go ahead. The message ends with locust's stderr.
    """


@dataclass(frozen=True)
class LoadProfile:
    """What to run: a locustfile, the user count and spawn rate, the duration and the minimum sample."""

    locustfile: Path
    users: int
    spawn_rate: float
    duration_s: float
    min_requests: int = 100
    stop_on_breach: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()  # judged every second; all passing ends the run after duration_s
    max_duration_s: float | None = None  # None: duration_s (a fixed window)
    check_versions: tuple[str, ...] = ()  # judge the checks per serving version (a canary's split), not overall
    # Each busy endpoint must pass on its own too before the run ends early (a decisive failure of one
    # always stops it); False: only the totals must, e.g. for a small canary share of a busy endpoint.
    per_endpoint: bool = True

    def __post_init__(self) -> None:
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s <= 0 or self.min_requests < 0:
            raise ConfigError(
                f"load profile {self.describe()}: users must be >= 1, spawn_rate and duration_s > 0 and "
                "min_requests >= 0, e.g. LoadProfile(Path('suites/load/locustfile.py'), users=10, "
                "spawn_rate=10, duration_s=15)")
        if self.max_duration_s is not None and self.max_duration_s < self.duration_s:
            raise ConfigError(f"load profile {self.describe()}: max_duration_s {self.max_duration_s:g} is "
                              f"shorter than duration_s {self.duration_s:g}; the run extends from duration_s "
                              "up to max_duration_s until its checks decide")
        for expression in (*self.stop_on_breach, *self.checks):
            parse_threshold(expression)  # a typo is a usage error before anything runs

    @property
    def longest_s(self) -> float:
        return self.duration_s if self.max_duration_s is None else self.max_duration_s

    def describe(self) -> str:
        """`locust suites/load/locustfile.py, 10 users, spawn 10/s, 15s`: the source of every load check."""
        extends = "" if self.longest_s == self.duration_s else f" (up to {self.longest_s:g}s until decided)"
        return (f"locust {_display_path(Path(self.locustfile))}, {self.users} users, "
                f"spawn {self.spawn_rate:g}/s, {self.duration_s:g}s{extends}")


def _who(target: Endpoint | None, host: str, version: str | None) -> str:
    if target is None:
        return f"version {version} at {host}" if version else host
    if version is not None and target.role is Role.SERVICE:
        return f"{version} via service"
    shown = version or target.version
    return f"{target.role.value} {shown}" if shown else target.role.value


def _subject(target: Endpoint | None, host: str, endpoint: str | None, version: str | None) -> str:
    return f"{endpoint or 'all endpoints'} ({_who(target, host, version)})"


def _display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


DecisionKey = tuple[str, str | None, str | None]
"""(threshold expression, endpoint or None for all, serving version or None for all)."""


@dataclass(frozen=True)
class LoadResult:
    """What a load run measured, per (endpoint name, serving version) cell."""

    profile: LoadProfile
    host: str
    target: Endpoint | None
    cells: Mapping[tuple[str, str], Stats]
    started_at: float  # epoch seconds
    duration_s: float
    aborted_early: bool = False
    abort_reason: str | None = None
    task_errors: tuple[str, ...] = ()
    record: RecordCheck = field(default=ignore_check, repr=False, compare=False)
    stop_note: str | None = None  # why the run ended before max_duration_s without a failure
    looks: int = 0  # how often the live checks were judged
    decisions: Mapping[DecisionKey, LiveDecision] = field(default_factory=dict)
    # The sequential comparison that judged this run live beside its twin (verifiers.compare.PairedJudges);
    # typed loosely because compare imports this module.
    paired: object = field(default=None, repr=False, compare=False)

    @property
    def requests(self) -> int:
        return sum(s.count for s in self.cells.values())

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.cells.values())

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def rps(self) -> float | None:
        return self.requests / self.duration_s if self.duration_s > 0 else None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(sorted({endpoint for endpoint, _ in self.cells}))

    @property
    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (_, version), stats in sorted(self.cells.items()):
            counts[version] = counts.get(version, 0) + stats.count
        return counts

    @property
    def window(self) -> str:
        if self.aborted_early:
            return f"{self.duration_s:.1f}s of {self.profile.longest_s:g}s (stopped early)"
        if self.stop_note:
            return f"{self.duration_s:.1f}s of up to {self.profile.longest_s:g}s (decided)"
        return f"{self.duration_s:.1f}s"

    def busy_endpoints(self) -> tuple[str, ...]:
        """Endpoints with enough of the traffic to be judged on their own (ENDPOINT_MIN_SHARE)."""
        return busy_endpoints(self.cells)

    def stats(self, endpoint: str | None = None, version: str | None = None) -> Stats:
        """Statistics of one endpoint and/or one serving version; None means all of them."""
        parts = [stats for (e, v), stats in sorted(self.cells.items())
                 if endpoint in (None, e) and version in (None, v)]
        if len(parts) == 1:
            return parts[0]
        return Stats.combine(parts, duration_s=self.duration_s)

    def subject(self, endpoint: str | None = None, version: str | None = None) -> str:
        """`/api/checkout (candidate v3)`, `all endpoints (v2 via service)`."""
        return _subject(self.target, self.host, endpoint, version)

    def who(self, version: str | None = None) -> str:
        """Who served the requests: `candidate v3`, `v2 via service`, or the host URL."""
        return _who(self.target, self.host, version)

    def check(self, *expressions: str, endpoint: str | None = None, version: str | None = None,
              min_samples: int | None = None, per_endpoint: bool = True) -> tuple[CheckOutcome, ...]:
        """Evaluate thresholds on this run; every outcome goes to the recorder given to run_load.

        Without `endpoint`, each latency and rate threshold is judged over all endpoints and, with
        `per_endpoint`, also over every endpoint with enough traffic (ENDPOINT_MIN_SHARE; the total's line
        names the quieter ones). Raises CheckFailed (one line per check that did not pass) when any fails,
        has NO DATA or is INCONCLUSIVE. A run stopped early on a breach adds a failing outcome of its own:
        an aborted run never passes.
        """
        thresholds = [parse_threshold(e) for e in expressions]  # all usage errors before any verdict
        minimum = self.profile.min_requests if min_samples is None else min_samples
        outcomes = [self._evaluate(t, endpoint, version, minimum) for t in thresholds]
        if endpoint is None and per_endpoint:
            cells = {key: stats for key, stats in self.cells.items() if version in (None, key[1])}
            for name in busy_endpoints(cells):
                # Each busy endpoint on its own: its share of the minimum sample, and its own bounds.
                share = self.stats(name, version).count / max(1, self.stats(None, version).count)
                outcomes += [self._evaluate(t, name, version, int(minimum * share))
                             for t in thresholds if t.kind in _PER_ENDPOINT_KINDS]
            quiet = quiet_endpoints(cells)
            if quiet and outcomes:
                outcomes[0] = replace(outcomes[0], message=outcomes[0].message + "; too little traffic to "
                                      "judge on their own: " + quiet)
        if self.aborted_early:
            outcomes.append(self._abort_outcome())
        for outcome in outcomes:
            self.record(outcome)
        return require(outcomes)

    def _evaluate(self, threshold: Threshold, endpoint: str | None, version: str | None,
                  minimum: int) -> CheckOutcome:
        outcome = threshold.evaluate(self.stats(endpoint, version), subject=self.subject(endpoint, version),
                                     source=self.profile.describe(), window=self.window, min_samples=minimum)
        outcome = replace(outcome, scope=" ".join(part for part in (endpoint, version) if part))
        decided = self.decisions.get((threshold.text, endpoint, version))
        if decided is None:
            return replace(outcome, looks=self.looks or None)
        return replace(outcome, looks=decided.looks, decided_after_s=decided.after_s,
                       message=f"{outcome.message} (decided after {decided.after_s:.1f}s, look {decided.looks})")

    def _abort_outcome(self) -> CheckOutcome:
        return CheckOutcome(
            check="stop_on_breach", verdict=Verdict.FAIL, value=self.duration_s,
            display_value=f"stopped after {self.duration_s:.1f}s",
            threshold=", ".join(self.profile.stop_on_breach),
            subject=self.subject(), source=self.profile.describe(), window=self.window, samples=self.requests,
            message=self.abort_reason or "the load run stopped early on a breach")

    def summary(self) -> str:
        """One line for logs: requests, failures, rate and versions seen."""
        versions = ", ".join(f"{v} {format_count(n)}" for v, n in self.versions.items())
        rps = f"{self.rps:.1f}/s" if self.rps is not None else "n/a"
        return (f"{format_count(self.requests)} requests, {format_count(self.failures)} failed, {rps} over "
                f"{self.window} on {self.host} (versions: {versions or 'none'})")


def run_load(profile: LoadProfile, host: str | Endpoint, *, timeout_s: float | None = None,
             record: RecordCheck = ignore_check, stall_s: float = LIVE_STALL_S) -> LoadResult:
    """Run the profile against `host` (a base URL or an Endpoint) and return what was measured.

    The profile's `checks` and `stop_on_breach` are judged every second (module docstring). Raises
    LoadError when locust crashes, the locustfile is broken, the run exceeds `timeout_s` (default: the
    longest duration + 30s; the process group is killed), its live counts stop for `stall_s` (hung; killed
    too) or not a single request was made.
    """
    with LoadProcess(profile, host, timeout_s=timeout_s, record=record, stall_s=stall_s) as process:
        judge = LiveJudge(profile)
        while not process.wait(LOOK_INTERVAL_S):
            live = process.live()
            if live is None:
                continue
            verdict = judge.look(live)
            if verdict.stop:
                process.stop(abort_reason=verdict.abort_reason, note=verdict.note)
        return process.result(looks=judge.looks, decisions=judge.decisions)


@dataclass(frozen=True)
class LiveDecision:
    """When a live check first decided (pass or fail): the look and the seconds since the run started."""

    looks: int
    after_s: float
    verdict: Verdict


@dataclass(frozen=True)
class LiveCounts:
    """A running load's counts so far (histograms only), as its collector published them."""

    elapsed_s: float
    cells: Mapping[tuple[str, str], Stats]

    def stats(self, endpoint: str | None = None, version: str | None = None) -> Stats:
        parts = [stats for (e, v), stats in sorted(self.cells.items())
                 if endpoint in (None, e) and version in (None, v)]
        return Stats.combine(parts, duration_s=self.elapsed_s, keep_samples=False)

    def scopes(self, versions: Sequence[str]) -> list[tuple[str | None, str | None]]:
        """(endpoint, version) pairs to judge: all endpoints and each busy one, overall or per version."""
        scopes: list[tuple[str | None, str | None]] = []
        for version in versions or (None,):
            cells = {key: stats for key, stats in self.cells.items() if version in (None, key[1])}
            scopes += [(endpoint, version) for endpoint in (None, *busy_endpoints(cells))]
        return scopes


@dataclass(frozen=True)
class LiveVerdict:
    stop: bool
    abort_reason: str | None = None
    note: str | None = None


class LiveJudge:
    """Judges a running load's bounded thresholds every second, over the total and each busy endpoint.

    A decisive failure of any of them stops the run (an abort: it fails); once the minimum window has
    passed, every one of `checks` having passed ends it (decided). Thresholds that no bound decides
    (`rps`, `avg`, ...) wait for the end of the run.
    """

    def __init__(self, profile: LoadProfile) -> None:
        self.profile = profile
        self.required = [t for t in map(parse_threshold, profile.checks) if t.bounded]
        texts = dict.fromkeys((*profile.stop_on_breach, *profile.checks))
        self.watched = [t for t in map(parse_threshold, texts) if t.bounded]
        self.looks = 0
        self.decisions: dict[DecisionKey, LiveDecision] = {}

    def look(self, live: LiveCounts) -> LiveVerdict:
        self.looks += 1
        if not live.stats().count:
            return LiveVerdict(stop=False)
        required = {t.text for t in self.required}
        all_passed = bool(required)
        versions = self.profile.check_versions
        for threshold in self.watched:
            for endpoint, version in live.scopes(versions):
                if endpoint is not None and threshold.kind not in _PER_ENDPOINT_KINDS:
                    continue
                stats = live.stats(endpoint, version)
                judgement = threshold.judge(stats)
                assert judgement is not None  # only bounded thresholds are watched
                key = (threshold.text, endpoint, version)
                if judgement.decision is Decision.CONTINUE:
                    needed = threshold.text in required and (endpoint is None or self.profile.per_endpoint)
                    all_passed = all_passed and not needed
                    continue
                verdict = Verdict.FAIL if judgement.decision is Decision.FAIL else Verdict.PASS
                self.decisions.setdefault(key, LiveDecision(self.looks, round(live.elapsed_s, 1), verdict))
                if verdict is Verdict.FAIL:
                    scope = (endpoint or "all endpoints") + (f" of {version}" if version else "")
                    return LiveVerdict(stop=True, abort_reason=(
                        f"stopped early after {live.elapsed_s:.1f}s of {self.profile.longest_s:g}s: decisive "
                        f"failure of {threshold.text} on {scope} at look {self.looks}: {judgement.reason}"))
                if endpoint is None and version is None and stats.count < self.profile.min_requests:
                    all_passed = False  # a pass needs the minimum sample too
        if all_passed and live.elapsed_s >= self.profile.duration_s:
            return LiveVerdict(stop=True, note=f"every check decided to pass after {live.elapsed_s:.1f}s "
                                               f"(look {self.looks})")
        return LiveVerdict(stop=False)


class LoadProcess:
    """One locust run in progress: its live counts each second, a stop request, its result at the end.

    A context manager: leaving it kills a run that is still going (an interrupt, an error) and removes its
    temporary files.
    """

    def __init__(self, profile: LoadProfile, host: str | Endpoint, *, timeout_s: float | None = None,
                 record: RecordCheck = ignore_check, stall_s: float = LIVE_STALL_S) -> None:
        locustfile = Path(profile.locustfile).resolve()
        if not locustfile.is_file() or locustfile.suffix != ".py":
            raise ConfigError(f"locustfile {profile.locustfile} is not a .py file; point LoadProfile.locustfile "
                              "at one, such as suites/load/locustfile.py")
        if "," in str(locustfile):  # locust splits -f on commas
            raise ConfigError(f"locustfile path {locustfile} contains a comma, which locust cannot load; "
                              "rename it")
        self.profile = profile
        self.record = record
        self.target = host if isinstance(host, Endpoint) else None
        self.url = host.url if isinstance(host, Endpoint) else host
        self.deadline_s = profile.longest_s + STARTUP_GRACE_S if timeout_s is None else timeout_s
        self.stall_s = stall_s
        self._workdir = tempfile.TemporaryDirectory(prefix="releasegate-load-")
        work = Path(self._workdir.name)
        self._output, self._stderr_path = work / "result.json", work / "locust.stderr"
        self._live_path, self._stop_path = work / "live.json", work / "stop.json"
        settings = {"max_duration_s": profile.longest_s, "reservoir_size": RESERVOIR_SIZE,
                    "live_path": str(self._live_path), "stop_path": str(self._stop_path),
                    "version_header": self.target.version_header if self.target is not None
                    else DEFAULT_VERSION_HEADER}
        self._stderr = self._stderr_path.open("wb")
        self._started = time.monotonic()
        # When the live counts last moved on (monotonic), and to which elapsed_s: a hung locust stops them.
        self._progress_at: float | None = None
        self._progress_elapsed_s = -1.0
        # A session of its own: on timeout the whole process group goes, including anything locust forked.
        self._process = subprocess.Popen(
            _command(profile, locustfile, self.url), env=_environment(self._output, settings),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True)

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._process.poll() is None:  # an interrupt or an error: never leave locust running
                _kill_group(self._process)
        finally:
            self._stderr.close()
            self._workdir.cleanup()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for locust to exit; True once it has. LoadError past the run's deadline."""
        left = self.deadline_s - (time.monotonic() - self._started)
        try:
            self._process.wait(timeout=max(0.0, min(seconds, left)))
            return True
        except subprocess.TimeoutExpired:
            if time.monotonic() - self._started < self.deadline_s:
                return False
        _kill_group(self._process)
        raise LoadError(f"locust did not finish within {self.deadline_s:g}s ({self.profile.describe()}); its "
                        "process group was killed" + _tail(self._stderr_path))

    def live(self) -> LiveCounts | None:
        """The counts the collector published last, or None before its first second.

        LoadError (the process group killed) when a running locust published nothing new for `stall_s`, or
        nothing at all within STARTUP_GRACE_S of its start: it is hung, and waiting for the run's deadline
        would only delay the same outcome.
        """
        try:
            data = json.loads(self._live_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._check_progress(None)
            return None
        elapsed = float(data["elapsed_s"])
        self._check_progress(elapsed)
        return LiveCounts(elapsed, {(str(c["endpoint"]), str(c["version"])): Stats.from_json(c, duration_s=elapsed)
                                    for c in data["cells"]})

    def _check_progress(self, elapsed_s: float | None) -> None:
        now = time.monotonic()
        if elapsed_s is not None and elapsed_s != self._progress_elapsed_s:
            self._progress_at, self._progress_elapsed_s = now, elapsed_s
            return
        if self._process.poll() is not None:
            return  # it exited: result() says how
        if self._progress_at is None:
            silent_s, limit_s, since = now - self._started, max(self.stall_s, STARTUP_GRACE_S), "since it started"
        else:
            silent_s, limit_s = now - self._progress_at, self.stall_s
            since = f"from {self._progress_elapsed_s:.1f}s into the run"
        if silent_s < limit_s:
            return
        state = _process_state(self._process.pid)
        _kill_group(self._process)
        raise LoadError(f"locust hung: no new live counts for {silent_s:.1f}s, {since} (process {state}; "
                        f"{self.profile.describe()}); its process group was killed and nothing was measured, "
                        "so the release does not go ahead; rerun it, and check the machine's load and the "
                        "locustfile for blocking calls" + _tail(self._stderr_path))

    def stop(self, *, abort_reason: str | None = None, note: str | None = None) -> None:
        """Ask the collector to stop the run (it looks every second): aborted with a reason, or decided."""
        if not self._stop_path.exists():
            write_atomically(self._stop_path, json.dumps({"abort_reason": abort_reason, "note": note}))

    def result(self, *, looks: int = 0, decisions: Mapping[DecisionKey, LiveDecision] | None = None) -> LoadResult:
        """What the finished run measured; LoadError when it crashed or made no request."""
        self.wait(self.deadline_s)
        stderr_tail = _tail(self._stderr_path)
        described = f"({self.profile.describe()} against {self.url})"
        code = self._process.returncode
        if code is not None and code < 0:
            raise LoadError(f"locust was killed by {_signal_name(-code)} mid-run {described}; nothing was "
                            "measured, so the release does not go ahead; rerun it, and look for what killed it "
                            "(the kernel's OOM killer: dmesg)" + stderr_tail)
        if code != 0:
            raise LoadError(f"locust exited with code {code} {described}" + stderr_tail)
        if not self._output.is_file():
            raise LoadError(f"locust finished without writing results {described}; was the collector "
                            "loaded?" + stderr_tail)
        data = json.loads(self._output.read_text(encoding="utf-8"))
        result = _result_from_json(data, self.profile, self.url, self.target, self.record,
                                   looks=looks, decisions=dict(decisions or {}))
        if result.requests == 0:
            errors = "; ".join(result.task_errors[:3])
            raise LoadError(f"locust made no requests to {self.url} in {result.window} "
                            f"({self.profile.describe()})" + (f"; task errors: {errors}" if errors else "")
                            + stderr_tail)
        return result


_PER_ENDPOINT_KINDS = frozenset({Kind.LATENCY, Kind.RATE})


def busy_endpoints(cells: Mapping[tuple[str, str], Stats]) -> tuple[str, ...]:
    counts = _endpoint_counts(cells)
    total = sum(counts.values())
    return tuple(name for name, n in sorted(counts.items()) if total and n / total >= ENDPOINT_MIN_SHARE)


def quiet_endpoints(cells: Mapping[tuple[str, str], Stats]) -> str:
    counts = _endpoint_counts(cells)
    total = sum(counts.values())
    return ", ".join(f"{name} ({format_count(n)} requests)" for name, n in sorted(counts.items())
                     if total and n / total < ENDPOINT_MIN_SHARE)


def _endpoint_counts(cells: Mapping[tuple[str, str], Stats]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (name, _), stats in cells.items():
        counts[name] = counts.get(name, 0) + stats.count
    return counts


def _command(profile: LoadProfile, locustfile: Path, url: str) -> list[str]:
    # Several locustfiles separated by commas (locust 2.x's -f): the collector's listeners register
    # themselves on import, the user's file brings the User classes. No -t: the collector stops the
    # run after duration_s, which may be fractional.
    return [
        sys.executable, "-m", "locust", "--headless", "-f", f"{COLLECTOR},{locustfile}", "--host", url,
        "--users", str(profile.users), "--spawn-rate", f"{profile.spawn_rate:g}", "--only-summary",
        "--loglevel", "WARNING",
        # Failed requests are our verdict to give, not locust's exit code: non-zero then means a crash.
        "--exit-code-on-error", "0",
        *profile.extra_args,
    ]


def _environment(output: Path, settings: Mapping[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           # LOCUST_* settings from the caller's environment would change the run behind the profile's
           # back, and proxy variables would route loopback traffic through a proxy (as trust_env=False
           # prevents for httpx in verifiers.http).
           if not k.upper().startswith("LOCUST_") and k.lower() not in _PROXY_VARIABLES}
    env[OUTPUT_ENV] = str(output)
    env[SETTINGS_ENV] = json.dumps(settings)
    return env


_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # A stopped (SIGSTOP, SIGTSTP) locust would act on SIGTERM only once continued: continue it first, so
    # it quits within the grace period rather than waiting for SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGCONT)
    stop_child(process, grace_s=_KILL_GRACE_S, group=True)


def _process_state(pid: int) -> str:
    """`stopped (T)`, `running (R)`, `sleeping (S)`: from /proc, for the message of a hung run."""
    names = {"R": "running", "S": "sleeping", "D": "in uninterruptible I/O", "T": "stopped", "t": "stopped",
             "Z": "a zombie"}
    try:
        code = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "state unknown"
    return f"{names.get(code, 'state')} ({code})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            return "\nlocust stderr (last lines):\n" + "\n".join(lines[-_STDERR_TAIL_LINES:])
    return "\nlocust stderr was empty"


def _result_from_json(data: Mapping[str, Any], profile: LoadProfile, url: str, target: Endpoint | None,
                      record: RecordCheck, *, looks: int,
                      decisions: Mapping[DecisionKey, LiveDecision]) -> LoadResult:
    duration_s = max(0.0, float(data["stopped_at"]) - float(data["started_at"]))
    cells = {(str(c["endpoint"]), str(c["version"])): Stats.from_json(c, duration_s=duration_s)
             for c in data["cells"]}
    return LoadResult(
        profile=profile, host=url, target=target, cells=cells, started_at=float(data["started_at"]),
        duration_s=duration_s, aborted_early=bool(data["abort_reason"]), abort_reason=data["abort_reason"],
        task_errors=tuple(str(e) for e in data["task_errors"]), record=record,
        stop_note=data.get("stop_note"), looks=looks, decisions=decisions,
    )
