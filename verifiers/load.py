"""Load tests with locust in a subprocess, and their results per endpoint and per serving version.

locust is never imported here: importing it monkey-patches the whole process with gevent. `run_load`
starts `python -m locust --headless -f verifiers/locust_collector.py,<locustfile>`; the collector (loaded
inside that process) records every request per endpoint name and per serving version (the endpoint's
version header), stops the run after `duration_s` (or earlier on a clear breach of a `stop_on_breach`
threshold) and writes JSON to a temporary file whose path it gets from an environment variable.

A failed request is one locust reports as failed (connection error, timeout, HTTP >= 400 unless the
locustfile accepted it with `catch_response`, or `response.failure()`), or any HTTP >= 500 answer even if
the locustfile accepted it: a server error never counts as a success.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releasegate.core.checks import CheckOutcome, RecordCheck, Verdict, ignore_check, require
from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.core.processes import stop_child
from releasegate.core.types import DEFAULT_VERSION_HEADER, Endpoint, Role
from releasegate.verifiers.stats import RESERVOIR_SIZE, Stats
from releasegate.verifiers.thresholds import format_count, parse_threshold

COLLECTOR = Path(__file__).resolve().with_name("locust_collector.py")

OUTPUT_ENV = "RELEASEGATE_LOAD_OUTPUT"
"""Where the collector writes its JSON; set by run_load for the subprocess only."""

SETTINGS_ENV = "RELEASEGATE_LOAD_SETTINGS"
"""The collector's settings as JSON: duration, minimum requests, stop_on_breach, subject."""

UNKNOWN_VERSION = "unknown"
"""The serving version of a response without a version header (or no response at all)."""

STARTUP_GRACE_S = 30.0
"""Default slack on top of the duration for locust to start, stop its users and write the results."""

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

    def __post_init__(self) -> None:
        if self.users < 1 or self.spawn_rate <= 0 or self.duration_s <= 0 or self.min_requests < 0:
            raise ConfigError(
                f"load profile {self.describe()}: users must be >= 1, spawn_rate and duration_s > 0 and "
                "min_requests >= 0, e.g. LoadProfile(Path('suites/load/locustfile.py'), users=10, "
                "spawn_rate=10, duration_s=15)")
        for expression in self.stop_on_breach:
            parse_threshold(expression)  # a typo is a usage error before anything runs

    def describe(self) -> str:
        """`locust suites/load/locustfile.py, 10 users, spawn 10/s, 15s`: the source of every load check."""
        return (f"locust {_display_path(Path(self.locustfile))}, {self.users} users, "
                f"spawn {self.spawn_rate:g}/s, {self.duration_s:g}s")


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
            return f"{self.duration_s:.1f}s of {self.profile.duration_s:g}s (stopped early)"
        return f"{self.duration_s:.1f}s"

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
              min_samples: int | None = None) -> tuple[CheckOutcome, ...]:
        """Evaluate thresholds on this run; every outcome goes to the recorder given to run_load.

        Raises CheckFailed (one line per failing check) when any fails or has NO DATA. A run stopped early
        on a breach adds a failing outcome of its own: an aborted run never passes.
        """
        thresholds = [parse_threshold(e) for e in expressions]  # all usage errors before any verdict
        stats = self.stats(endpoint, version)
        subject = self.subject(endpoint, version)
        minimum = self.profile.min_requests if min_samples is None else min_samples
        outcomes = [t.evaluate(stats, subject=subject, source=self.profile.describe(), window=self.window,
                               min_samples=minimum) for t in thresholds]
        if self.aborted_early:
            outcomes.append(self._abort_outcome())
        for outcome in outcomes:
            self.record(outcome)
        return require(outcomes)

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
             record: RecordCheck = ignore_check) -> LoadResult:
    """Run the profile against `host` (a base URL or an Endpoint) and return what was measured.

    Raises LoadError when locust crashes, the locustfile is broken, the run exceeds `timeout_s`
    (default: duration + 30s; the process group is killed) or not a single request was made.
    """
    locustfile = Path(profile.locustfile).resolve()
    if not locustfile.is_file() or locustfile.suffix != ".py":
        raise ConfigError(f"locustfile {profile.locustfile} is not a .py file; point LoadProfile.locustfile "
                          "at one, such as suites/load/locustfile.py")
    if "," in str(locustfile):  # locust splits -f on commas
        raise ConfigError(f"locustfile path {locustfile} contains a comma, which locust cannot load; "
                          "rename it")
    target = host if isinstance(host, Endpoint) else None
    url = host.url if isinstance(host, Endpoint) else host
    deadline_s = profile.duration_s + STARTUP_GRACE_S if timeout_s is None else timeout_s
    with tempfile.TemporaryDirectory(prefix="releasegate-load-") as workdir:
        output = Path(workdir) / "result.json"
        stderr_path = Path(workdir) / "locust.stderr"
        settings = {"duration_s": profile.duration_s, "min_requests": profile.min_requests,
                    "stop_on_breach": list(profile.stop_on_breach), "reservoir_size": RESERVOIR_SIZE,
                    "subject": _subject(target, url, None, None),
                    "version_header": target.version_header if target is not None else DEFAULT_VERSION_HEADER}
        returncode = _run_locust(_command(profile, locustfile, url), _environment(output, settings),
                                 stderr_path, deadline_s, profile)
        stderr_tail = _tail(stderr_path)
        if returncode != 0:
            raise LoadError(f"locust exited with code {returncode} ({profile.describe()} against {url})"
                            + stderr_tail)
        if not output.is_file():
            raise LoadError(f"locust finished without writing results ({profile.describe()} against {url}); "
                            "was the collector loaded?" + stderr_tail)
        data = json.loads(output.read_text(encoding="utf-8"))
    result = _result_from_json(data, profile, url, target, record)
    if result.requests == 0:
        errors = "; ".join(result.task_errors[:3])
        raise LoadError(f"locust made no requests to {url} in {result.window} ({profile.describe()})"
                        + (f"; task errors: {errors}" if errors else "") + stderr_tail)
    return result


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


def _run_locust(command: Sequence[str], env: Mapping[str, str], stderr_path: Path, deadline_s: float,
                profile: LoadProfile) -> int:
    with stderr_path.open("wb") as stderr:
        # A session of its own: on timeout the whole process group goes, including anything locust forked.
        process = subprocess.Popen(command, env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            return process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise LoadError(f"locust did not finish within {deadline_s:g}s ({profile.describe()}); its "
                            "process group was killed" + _tail(stderr_path)) from None
        finally:
            if process.poll() is None:  # an interrupt while waiting: never leave locust running
                _kill_group(process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    stop_child(process, grace_s=_KILL_GRACE_S, group=True)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            return "\nlocust stderr (last lines):\n" + "\n".join(lines[-_STDERR_TAIL_LINES:])
    return "\nlocust stderr was empty"


def _result_from_json(data: Mapping[str, Any], profile: LoadProfile, url: str, target: Endpoint | None,
                      record: RecordCheck) -> LoadResult:
    duration_s = max(0.0, float(data["stopped_at"]) - float(data["started_at"]))
    cells = {(str(c["endpoint"]), str(c["version"])): Stats.from_json(c, duration_s=duration_s)
             for c in data["cells"]}
    return LoadResult(
        profile=profile, host=url, target=target, cells=cells, started_at=float(data["started_at"]),
        duration_s=duration_s, aborted_early=bool(data["abort_reason"]), abort_reason=data["abort_reason"],
        task_errors=tuple(str(e) for e in data["task_errors"]), record=record,
    )
