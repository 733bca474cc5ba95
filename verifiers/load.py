"""Load tests with locust in a subprocess, and their results per endpoint and per serving version.

locust is never imported here: importing it monkey-patches the whole process with gevent. `run_load`
starts `python -m locust --headless -f verifiers/locust_collector.py,<locustfile>`; the collector (loaded
inside that process) records every request per endpoint name and per serving version (the endpoint's
version header), publishes its counts every second, and writes JSON to a temporary file at the end.
That process is usually a warm spare (LocustSpares: locust imported before the load needed it), which
becomes exactly that command; with `processes` or `workers` it is a locust master, and the collector
merges what its workers counted (verifiers/locust_collector.py).

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

import atexit
import contextlib
import functools
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.core.files import write_atomically
from releasegate.core.processes import KILL_WAIT_S, stop_child
from releasegate.core.progress import ProgressCallback
from releasegate.core.types import DEFAULT_VERSION_HEADER, Endpoint, Role
from releasegate.verifiers.live_progress import load_snapshot
from releasegate.verifiers.master_address import parse_master
from releasegate.verifiers.sequential import Decision
from releasegate.verifiers.stats import RESERVOIR_SIZE, Stats
from releasegate.verifiers.thresholds import Kind, Threshold, format_count, parse_threshold

COLLECTOR = Path(__file__).resolve().with_name("locust_collector.py")

OUTPUT_ENV = "RELEASEGATE_LOAD_OUTPUT"
"""Where the collector writes its JSON; set by run_load for the subprocess only."""

SETTINGS_ENV = "RELEASEGATE_LOAD_SETTINGS"
"""The collector's settings as JSON: the longest duration, where to publish live counts and look for a stop."""

LIFELINE_ENV = "RELEASEGATE_LOAD_LIFELINE_FD"
"""The file descriptor of a locust process on which the process that started it holds a pipe open for the whole
run (its stdin). The collector watches it: end of file means that process died, even by SIGKILL, and nobody
will read or stop this run, so locust ends its process group rather than load the service on its own."""

UNKNOWN_VERSION = "unknown"
"""The serving version of a response without a version header (or no response at all)."""

STARTUP_GRACE_S = 30.0
"""Default slack on top of the duration for locust to start, stop its users and write the results."""

LOOK_INTERVAL_S = 1.0
"""How often the live counts are published and judged."""

NEW_COUNTS_POLL_S = 0.02
"""How often a running load's live file is checked for a new publication (a stat call)."""

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
    # Load beyond one process: locust `--processes N` on this machine, or a master this process runs with
    # `workers` locust workers (other machines) connecting to it; the master merges their counts.
    processes: int = 1
    workers: int = 0
    master: str = ""  # "host:port" the master binds, for workers started elsewhere; "": local worker processes
    workers_timeout_s: float = 30.0  # how long the master waits for all its workers to connect

    def __post_init__(self) -> None:
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s <= 0 or self.min_requests < 0:
            raise ConfigError(
                f"load profile {self.describe()}: users must be >= 1, spawn_rate and duration_s > 0 and "
                "min_requests >= 0, e.g. LoadProfile(Path('suites/load/locustfile.py'), users=10, "
                "spawn_rate=10, duration_s=15)")
        self._check_distribution()
        if self.max_duration_s is not None and self.max_duration_s < self.duration_s:
            raise ConfigError(f"load profile {self.describe()}: max_duration_s {self.max_duration_s:g} is "
                              f"shorter than duration_s {self.duration_s:g}; the run extends from duration_s "
                              "up to max_duration_s until its checks decide")
        for expression in (*self.stop_on_breach, *self.checks):
            parse_threshold(expression)  # a typo is a usage error before anything runs

    def _check_distribution(self) -> None:
        fix = ("e.g. processes=2 for two locust processes on this machine, or workers=2 (and master='0.0.0.0:5557' "
               "for workers you start on other machines)")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise ConfigError(f"load profile: processes must be a whole number >= 1, got {self.processes!r}; {fix}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"load profile: workers must be a whole number >= 0, got {self.workers!r}; {fix}")
        if self.processes > 1 and self.workers:
            raise ConfigError(f"load profile: processes={self.processes} and workers={self.workers} cannot be "
                              "combined (a master with remote workers runs no users itself); choose one, " + fix)
        if self.workers_timeout_s <= 0:
            raise ConfigError(f"load profile: workers_timeout_s must be > 0, got {self.workers_timeout_s!r}")
        if self.master:
            if not self.workers:
                raise ConfigError(f"load profile: master {self.master!r} is set but workers is 0; set workers to "
                                  "the number of locust workers that will connect to it")
            parse_master(self.master)

    @property
    def longest_s(self) -> float:
        return self.duration_s if self.max_duration_s is None else self.max_duration_s

    @property
    def distributed(self) -> bool:
        """Run as a locust master (with --processes, or with workers): its workers make the requests."""
        return self.processes > 1 or self.workers > 0

    def describe(self) -> str:
        """`locust suites/load/locustfile.py, 10 users, spawn 10/s, 15s`: the source of every load check."""
        extends = "" if self.longest_s == self.duration_s else f" (up to {self.longest_s:g}s until decided)"
        spread = (f", {self.processes} processes" if self.processes > 1
                  else f", master with {self.workers} workers" if self.workers else "")
        return (f"locust {_display_path(Path(self.locustfile))}, {self.users} users{spread}, "
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
    # A distributed run: the requests each locust worker reported to the master in its final counts (the
    # cells are their merge, so these add up to `requests`); empty for a single process.
    worker_requests: Mapping[str, int] = field(default_factory=dict)

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
            # A decisive failure stopped the run, often before the minimum sample: when the checks say NO DATA
            # and none says FAIL, that stop is the reason the release stops ("why:"), so it comes first.
            verdicts = {outcome.verdict for outcome in outcomes}
            first = Verdict.NO_DATA in verdicts and Verdict.FAIL not in verdicts
            outcomes.insert(0 if first else len(outcomes), self._abort_outcome())
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
             record: RecordCheck = ignore_check, stall_s: float = LIVE_STALL_S,
             on_progress: ProgressCallback | None = None, start_workers: WorkerLauncher | None = None,
             ) -> LoadResult:
    """Run the profile against `host` (a base URL or an Endpoint) and return what was measured.

    The profile's `checks` and `stop_on_breach` are judged every second (module docstring). Raises
    LoadError when locust crashes, the locustfile is broken, the run exceeds `timeout_s` (default: the
    longest duration + 30s; the process group is killed), its live counts stop for `stall_s` (hung; killed
    too) or not a single request was made. `on_progress` gets a snapshot after every look (core.progress).
    A profile with `workers` runs a locust master here; `start_workers` starts its workers (by default local
    processes, or none when the profile names a `master` that workers started elsewhere connect to).
    """
    with LoadProcess(profile, host, timeout_s=timeout_s, record=record, stall_s=stall_s,
                     start_workers=start_workers) as process:
        judge = LiveJudge(profile)
        while not process.wait_for_counts(LOOK_INTERVAL_S):
            live = process.live()
            if live is None:
                continue
            verdict = judge.look(live)
            if on_progress is not None:
                on_progress(load_snapshot(live, judge, process.target))
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
                 record: RecordCheck = ignore_check, stall_s: float = LIVE_STALL_S,
                 spares: LocustSpares | None = None, start_workers: WorkerLauncher | None = None) -> None:
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
        # The master of a distributed run (None: one locust process); ConfigError when it cannot listen there.
        self.master = master_address(profile)
        # Waiting for workers to connect comes before the run, on top of the usual start-up slack.
        startup_s = STARTUP_GRACE_S + (profile.workers_timeout_s if profile.workers else 0.0)
        self.deadline_s = profile.longest_s + startup_s if timeout_s is None else timeout_s
        self._startup_limit_s = max(stall_s, startup_s)
        self.stall_s = stall_s
        self._workdir = tempfile.TemporaryDirectory(prefix="releasegate-load-")
        work = Path(self._workdir.name)
        self._output, self._stderr_path = work / "result.json", work / "locust.stderr"
        self._live_path, self._stop_path = work / "live.json", work / "stop.json"
        settings = {"max_duration_s": profile.longest_s, "min_duration_s": profile.duration_s,
                    "reservoir_size": RESERVOIR_SIZE,
                    "live_path": str(self._live_path), "stop_path": str(self._stop_path),
                    "version_header": self.target.version_header if self.target is not None
                    else DEFAULT_VERSION_HEADER,
                    **_distribution_settings(profile, self.master, locustfile)}
        self._stderr = self._stderr_path.open("ab")  # others append too (a Job launcher's pod reasons)
        self._started = time.monotonic()
        # When the live counts last moved on (monotonic), and to which elapsed_s: a hung locust stops them.
        self._progress_at: float | None = None
        self._progress_elapsed_s = -1.0
        self._read_signature: tuple[int, int] | None = None  # the live file as live() last read it
        self._spares = SPARES if spares is None else spares
        self._stop_workers: Callable[[], None] | None = None
        self._process = self._spares.start(_command(profile, locustfile, self.url, self.master),
                                           _environment(self._output, settings), self._stderr, self._stderr_path)
        if self._spares.import_beside_loads:  # the next load's spare imports now, on CPU this one leaves idle
            self._spares.replenish()
        # From here locust runs: an interrupt before the caller's `with` owns it must not leave it running.
        try:
            launcher = start_workers or (None if profile.master or not profile.workers else local_worker_processes)
            if launcher is not None and self.master is not None:
                self._stop_workers = launcher(WorkerRequest(
                    count=profile.workers, master_host=self.master.host, master_port=self.master.port,
                    locustfile=locustfile, command=tuple(worker_command(locustfile, self.master)),
                    env=_base_environment(), log_path=self._stderr_path))
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def __enter__(self) -> LoadProcess:
        return self

    @property
    def pid(self) -> int:
        """The locust process (its process group too): a spare that took the run, or a cold start."""
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        try:
            if self._process.poll() is None:  # an interrupt or an error: never leave locust running
                _kill_group(self._process)
            elif self.profile.processes > 1:  # the master is gone: no worker it forked may outlive it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._process.pid, signal.SIGKILL)
        finally:
            try:
                if self._stop_workers is not None:
                    self._stop_workers()
            finally:
                _close_pipes(self._process)
                self._stderr.close()
                self._workdir.cleanup()
                if exc[0] is None or issubclass(exc[0], Exception):  # type: ignore[arg-type]
                    # The next load's spare imports locust now, between two loads (never on an interrupt).
                    self._spares.replenish()

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

    def wait_for_counts(self, seconds: float) -> bool:
        """Wait up to `seconds` for locust to publish counts that live() has not read yet, or to exit; True once
        it has exited. A look follows each publication within NEW_COUNTS_POLL_S, not up to a second later."""
        deadline = time.monotonic() + seconds
        while True:
            if self.wait(max(0.0, min(NEW_COUNTS_POLL_S, deadline - time.monotonic()))):
                return True
            if self.has_new_counts() or time.monotonic() >= deadline:
                return False

    def has_new_counts(self) -> bool:
        """True when the collector published since live() last read (a stat: the file is replaced whole)."""
        signature = _file_signature(self._live_path)
        return signature is not None and signature != self._read_signature

    def live(self) -> LiveCounts | None:
        """The counts the collector published last, or None before its first second.

        LoadError (the process group killed) when a running locust published nothing new for `stall_s`, or
        nothing at all within STARTUP_GRACE_S of its start: it is hung, and waiting for the run's deadline
        would only delay the same outcome.
        """
        try:
            self._read_signature = _file_signature(self._live_path)
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
            silent_s, limit_s, since = now - self._started, self._startup_limit_s, "since it started"
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
        """Ask the collector to stop the run (it looks every 20 ms): aborted with a reason, or decided."""
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
        if data.get("error"):  # the collector's own verdict on the run: workers that never connected, ...
            raise LoadError(f"{data['error']} {described}" + stderr_tail)
        result = _result_from_json(data, self.profile, self.url, self.target, self.record,
                                   looks=looks, decisions=dict(decisions or {}))
        if result.requests == 0:
            errors = "; ".join(result.task_errors[:3])
            raise LoadError(f"locust made no requests to {self.url} in {result.window} "
                            f"({self.profile.describe()})" + (f"; task errors: {errors}" if errors else "")
                            + stderr_tail)
        return result


# -- load beyond one process: a locust master and its workers ---------------------------------------------

@dataclass(frozen=True)
class MasterAddress:
    """Where the master of a distributed run listens (`bind_host`) and what its workers connect to (`host`)."""

    bind_host: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_WILDCARDS = frozenset({"0.0.0.0", "*", "::", ""})


def master_address(profile: LoadProfile) -> MasterAddress | None:
    """The master's address for a distributed profile (None for one process), checked by binding it now.

    `--processes` and local worker processes use a free loopback port; `master` names a fixed one that
    workers on other machines are pointed at. A host this machine does not have, or a port in use, is a
    ConfigError now, not a locust crash later.
    """
    if not profile.distributed:
        return None
    host, port = parse_master(profile.master) if profile.master else ("127.0.0.1", 0)
    bind_host = "*" if host in _WILDCARDS else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("" if bind_host == "*" else host, port))
            port = int(probe.getsockname()[1])  # port 0: a free one, bound by locust right after (small race)
    except OSError as exc:
        raise ConfigError(f"load profile: the locust master cannot listen on {host}:{port} ({exc.strerror}); set "
                          "master to an address of this machine and a free port, e.g. '0.0.0.0:5557'") from None
    return MasterAddress(bind_host=bind_host, host=socket.getfqdn() if bind_host == "*" else host, port=port)


def worker_command(locustfile: Path, master: MasterAddress) -> list[str]:
    """One locust worker of `master` on a machine with this checkout: the collector beside the locustfile."""
    return [*_LOCUST, "--worker", "--master-host", master.host, "--master-port", str(master.port),
            "-f", f"{COLLECTOR},{locustfile}", "--loglevel", "WARNING"]


def _distribution_settings(profile: LoadProfile, master: MasterAddress | None, locustfile: Path,
                           ) -> dict[str, Any]:
    if master is None:
        return {"mode": "local"}
    return {"mode": "master", "workers": profile.workers or profile.processes, "master": str(master),
            "spread": "workers" if profile.workers else "processes",
            "workers_timeout_s": profile.workers_timeout_s,
            "worker_command": shlex.join(worker_command(locustfile, master))}


@dataclass(frozen=True)
class WorkerRequest:
    """What starting the workers of one distributed load needs. A WorkerLauncher gets it, starts `count`
    workers that connect to `master_host`:`master_port`, and returns a function that stops them."""

    count: int
    master_host: str
    master_port: int
    locustfile: Path
    command: tuple[str, ...]  # one worker's command line on a machine like this one (same paths)
    env: Mapping[str, str]
    log_path: Path  # where the workers' stderr may go: a failed run's message ends with its last lines


WorkerLauncher = Callable[[WorkerRequest], Callable[[], None]]
"""Starts the workers of one load run near the service (local processes, a Kubernetes Job, ...)."""


def local_worker_processes(request: WorkerRequest) -> Callable[[], None]:
    """Workers as processes of this machine, each in a session of its own (standing in for machines)."""
    started: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        for process in started:  # the master told them to quit already; this only catches stragglers
            _kill_group(process)
            _close_pipes(process)

    with request.log_path.open("ab") as log:
        try:
            for _ in range(request.count):  # warm spares when there are: a worker is `python -m locust` too
                started.append(SPARES.start(request.command, request.env, log, request.log_path))
        except BaseException:
            stop()
            raise
    return stop


# -- warm spares: locust imported before the run needs it -------------------------------------------------

SPARE_MODULE = "releasegate.verifiers.locust_spare"

SPARE_COUNT = 2
"""Spares kept per process: a side-by-side comparison starts two loads at once."""

# What acts when an interpreter starts (the import path, gevent's settings), so a spare started under other
# values would not be the process a cold start gives: it is not used then.
_STARTUP_VARIABLES = ("PYTHON", "GEVENT", "LD_")


class LocustSpares:
    """Warm locust processes of this process (verifiers.locust_spare): the next loads start without paying
    for locust's import. `start` uses a spare when one is idle and starts locust cold otherwise; `replenish`
    starts spares up to `size`. A load calls it when it ends, so spares import between loads, not beside one
    that measures; where spares import at idle priority (`import_beside_loads`), also when it starts, so the
    next load finds them warm even when it follows at once. Idle spares are killed at exit, and die by
    themselves when this process dies."""

    def __init__(self, size: int = SPARE_COUNT) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[tuple[subprocess.Popen[bytes], dict[str, str]]] = []
        self._ready: set[int] = set()
        self._owner = os.getpid()
        self._at_exit = False

    @functools.cached_property
    def import_beside_loads(self) -> bool:
        """True when spares import at SCHED_IDLE (locust_spare), taking no CPU a running load would use."""
        from releasegate.core.processes import can_leave_idle_scheduling

        return can_leave_idle_scheduling()

    def start(self, command: Sequence[str], env: Mapping[str, str], stderr: IO[bytes],
              stderr_path: Path) -> subprocess.Popen[bytes]:
        """The locust process for `command` (`python -m locust ...`), in a session of its own. Its stdin is a
        pipe that the caller keeps open while it runs and closes after (`_close_pipes`): closed early, locust
        ends, as it does when this process dies."""
        spare = self._take(env)
        # The pipe on the run's stdin stays open until the run has ended (LoadProcess closes it): its lifeline.
        env = {**env, LIFELINE_ENV: "0"}
        request = {"argv": list(command[len(_LOCUST):]), "env": env, "cwd": os.getcwd(),
                   "stderr": str(stderr_path), "title": " ".join(command)}
        if spare is not None and spare.stdin is not None:
            try:
                spare.stdin.write(json.dumps(request).encode() + b"\n")
                spare.stdin.flush()
                return spare
            except OSError:  # it died since (a broken pipe): start cold
                _close_pipes(spare)
            except BaseException:  # an interrupt while it takes the run: it may run already, and no one owns it
                _kill_now(spare)
                raise
        # A session of its own: on timeout the whole process group goes, including anything locust forked.
        return subprocess.Popen(list(command), env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)

    def replenish(self, up_to: int | None = None) -> None:
        """Start spares until `size` (or `up_to`) are idle; each imports locust in the background."""
        with self._lock:
            self._adopt()
            self._idle = [(spare, env) for spare, env in self._idle if spare.poll() is None or _close_pipes(spare)]
            while len(self._idle) < min(self.size, self.size if up_to is None else up_to):
                env = _base_environment()
                self._idle.append((subprocess.Popen(
                    [sys.executable, "-m", SPARE_MODULE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, start_new_session=True), env))
            if not self._at_exit:
                atexit.register(self.close)
                self._at_exit = True

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every idle spare has imported locust, False at the deadline (benchmarks and tests)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = {spare.stdout.fileno(): spare for spare, _ in self._idle
                           if spare.pid not in self._ready and spare.stdout is not None}
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                return not pending
            readable, _, _ = select.select(list(pending), [], [], left)
            for fd in readable:
                said = os.read(fd, 64)
                if said.startswith(b"ready"):
                    self._ready.add(pending[fd].pid)
                elif not said:  # EOF: it died while importing
                    return False

    def _has_imported(self, spare: subprocess.Popen[bytes]) -> bool:
        """Whether `spare` said it imported locust (without waiting: a look at its stdout)."""
        if spare.pid not in self._ready and spare.stdout is not None:
            readable, _, _ = select.select([spare.stdout], [], [], 0)
            if readable and os.read(spare.stdout.fileno(), 64).startswith(b"ready"):
                self._ready.add(spare.pid)
        return spare.pid in self._ready

    def idle_pids(self) -> list[int]:
        with self._lock:
            return [spare.pid for spare, _ in self._idle if spare.poll() is None]

    def close(self) -> None:
        """Kill the idle spares (they measure nothing, so no grace period) and reap them."""
        with self._lock:
            self._adopt()
            idle, self._idle = self._idle, []
        for spare, _ in idle:
            _kill_now(spare)

    def _take(self, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        with self._lock:
            self._adopt()
            # A spare importing at idle priority would take its time under a running load: only a warm one
            # is handed a run then, and the others stay for a later load.
            if self.import_beside_loads:
                self._idle.sort(key=lambda idle: not self._has_imported(idle[0]))
            while self._idle:
                spare, spare_env = self._idle.pop(0)
                if self.import_beside_loads and spare.poll() is None and not self._has_imported(spare):
                    self._idle.insert(0, (spare, spare_env))
                    return None
                if spare.poll() is None and _startup_variables(spare_env) == _startup_variables(env):
                    return spare
                if spare.poll() is None:  # started under other settings: of no use any more
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(spare.pid, signal.SIGKILL)
                    spare.wait()
                _close_pipes(spare)
            return None

    def _adopt(self) -> None:
        if os.getpid() != self._owner:  # a forked child: the idle spares are its parent's, not its own
            self._idle, self._ready, self._owner, self._at_exit = [], set(), os.getpid(), False


def _startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.upper().startswith(_STARTUP_VARIABLES)}


def _close_pipes(process: subprocess.Popen[bytes]) -> bool:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    return False


SPARES = LocustSpares()
"""This process's warm spares; every LoadProcess starts locust through it."""


def warm_up_locust() -> None:
    """Start a spare now (a release does at its start, beside provisioning), so even its first load skips
    locust's import. One at normal priority, which competes with the pods' start: the first load is one run,
    and the spares for a pair come when it ends. All of them at idle priority, which competes with nothing."""
    SPARES.replenish(up_to=None if SPARES.import_beside_loads else 1)


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


def publication_times(min_duration_s: float, interval_s: float) -> Iterator[float]:
    """Seconds from the run's start at which live counts are published: every `interval_s`, with one exactly at
    `min_duration_s` (the earliest a passing run may stop); the grid goes on from there."""
    due = interval_s
    while min_duration_s > 0 and due < min_duration_s:
        yield due
        due += interval_s
    if min_duration_s > 0:
        due = min_duration_s
    while True:
        yield due
        due += interval_s


def _file_signature(path: Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of `path`, None when it does not exist: each publication replaces the file whole
    (write_atomically), a second or so after the last one."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _endpoint_counts(cells: Mapping[tuple[str, str], Stats]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (name, _), stats in cells.items():
        counts[name] = counts.get(name, 0) + stats.count
    return counts


def _command(profile: LoadProfile, locustfile: Path, url: str, master: MasterAddress | None) -> list[str]:
    # Several locustfiles separated by commas (locust 2.x's -f): the collector's listeners register
    # themselves on import, the user's file brings the User classes. No -t: the collector stops the
    # run after duration_s, which may be fractional.
    return [
        *_LOCUST, "--headless", "-f", f"{COLLECTOR},{locustfile}", "--host", url,
        "--users", str(profile.users), "--spawn-rate", f"{profile.spawn_rate:g}", "--only-summary",
        "--loglevel", "WARNING",
        # Failed requests are our verdict to give, not locust's exit code: non-zero then means a crash.
        "--exit-code-on-error", "0",
        *_master_args(profile, master),
        *profile.extra_args,
    ]


_LOCUST = (sys.executable, "-m", "locust")


def _master_args(profile: LoadProfile, master: MasterAddress | None) -> list[str]:
    if master is None:
        return []
    listen = ["--master-bind-host", master.bind_host, "--master-bind-port", str(master.port)]
    if profile.processes > 1:  # locust forks its workers, which connect to --master-port on 127.0.0.1
        return ["--processes", str(profile.processes), *listen, "--master-port", str(master.port)]
    # No --expect-workers-max-wait: the collector keeps that deadline and says what went wrong.
    return ["--master", "--expect-workers", str(profile.workers), *listen]


def _base_environment() -> dict[str, str]:
    """This process's environment for a locust process, less what must not reach it."""
    return {k: v for k, v in os.environ.items()
            # LOCUST_* settings from the caller's environment would change the run behind the profile's
            # back, and proxy variables would route loopback traffic through a proxy (as trust_env=False
            # prevents for httpx in verifiers.http).
            if not k.upper().startswith("LOCUST_") and k.lower() not in _PROXY_VARIABLES}


def _environment(output: Path, settings: Mapping[str, Any]) -> dict[str, str]:
    env = _base_environment()
    env[OUTPUT_ENV] = str(output)
    env[SETTINGS_ENV] = json.dumps(settings)
    return env


_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


def _kill_now(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap it: for a process that has measured nothing worth a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(KILL_WAIT_S)
    _close_pipes(process)


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
        worker_requests={str(k): int(v) for k, v in data.get("worker_requests", {}).items()},
    )
