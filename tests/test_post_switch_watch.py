"""Watch after the switch (verifiers/watch.py, finalize): units with fake counts and a fake clock, then one
release on the local target whose new version starts failing 20 s after the switch, during keep-warm."""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.core.config import parse_config
from releasegate.core.errors import ConfigError
from releasegate.core.types import MetricsScope
from releasegate.verifiers.metrics import Metrics
from releasegate.verifiers.prometheus_client import PrometheusUnreachable
from releasegate.verifiers.watch import (
    PrometheusCounts,
    WatchCounts,
    WatchOutcome,
    WatchStatus,
    evaluate,
    parse_watch_slos,
    watch,
)
from tests.release_project import BASE_CONFIG, ReleaseProject
from tests.waiting import wait_until

SLOS = parse_watch_slos(["error_rate < 1%", "p(95) < 300ms"])
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)  # the demo's histogram


# --- fakes at our own boundary: a clock whose sleep moves it, and counts as a function of that clock -------


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ScriptedCounts:
    """`rps` requests a second since the switch (time 0); from `fails_at` on, `failing` of them are 5xx and
    `slow` of them slower than 1 s. Reads fail (Prometheus unreachable) while `down(now)` holds."""

    clock: FakeClock
    rps: float = 50.0
    fails_at: float = math.inf
    failing: float = 0.5
    slow: float = 0.0
    down: Callable[[float], bool] = lambda now: False
    reads: list[float] = field(default_factory=list)

    def read(self) -> WatchCounts:
        now = self.clock.now
        self.reads.append(now)
        if self.down(now):
            raise PrometheusUnreachable("connection refused", url="http://prometheus", reason="connection refused")
        requests = int(self.rps * now)
        bad_s = max(0.0, now - self.fails_at)
        failures = int(self.rps * bad_s * self.failing)
        slow = int(self.rps * bad_s * self.slow)
        return WatchCounts(requests=requests, failures=failures, timed=requests,
                           slower_than={le: slow if le < 1.0 else 0 for le in BUCKETS})

    def describe(self) -> str:
        return "scripted counts"


def run(counts: ScriptedCounts, *, duration_s: float = 60.0, interval_s: float = 1.0,
        aborted: Callable[[], str | None] = lambda: None) -> tuple[WatchOutcome, FakeClock]:
    outcome = watch(counts, SLOS, duration_s=duration_s, interval_s=interval_s, alpha=0.01, aborted=aborted,
                    clock=counts.clock, sleep=counts.clock.sleep)
    return outcome, counts.clock


# --- which SLOs can be watched ----------------------------------------------------------------------------


def test_watchable_slos_become_limits_on_a_bad_share() -> None:
    error, success, p95, median = parse_watch_slos(
        ["error_rate < 1%", "success_rate >= 99.5%", "p(95) < 300ms", "med <= 50ms"])
    assert (error.limit, error.slower_than_s) == (0.01, None)
    assert math.isclose(success.limit, 0.005) and success.slower_than_s is None
    assert math.isclose(p95.limit, 0.05) and p95.slower_than_s == 0.3
    assert math.isclose(median.limit, 0.5) and median.slower_than_s == 0.05


@pytest.mark.parametrize(("texts", "says"), [
    (["rps > 20"], "'rps > 20' cannot be watched"),
    (["avg < 100ms"], "cannot be watched"),
    (["error_rate > 1%"], "cannot be watched"),
    (["p(100) < 1s"], "p(100) is the maximum"),
    (["p(95) < 300"], "invalid threshold 'p(95) < 300'"),
    (["error_rate < 1%", "error_rate < 1%"], "listed twice"),
])
def test_an_slo_the_watch_cannot_decide_on_is_a_config_error(texts: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=r"^release\.watch_slos: ") as raised:
        parse_watch_slos(texts)
    assert says in str(raised.value)


def test_bake_s_longer_than_keep_warm_is_a_config_error_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"release": {"keep_warm_s": 60, "bake_s": 120}}, source="releasegate.toml", base_dir=Path())
    message = str(raised.value)
    assert message.startswith("releasegate.toml: release.bake_s = 120 is longer than release.keep_warm_s = 60")
    assert "raise release.keep_warm_s to at least 120 or lower release.bake_s" in message
    defaults = parse_config({"release": {"keep_warm_s": 60}}, source="t", base_dir=Path()).release
    assert defaults.watch_s == 60 and defaults.watch_slos == ["error_rate < 1%", "p(95) < 300ms"]
    shorter = parse_config({"release": {"keep_warm_s": 60, "bake_s": 20}}, source="t", base_dir=Path()).release
    assert shorter.watch_s == 20


# --- one look ---------------------------------------------------------------------------------------------


def test_latency_is_read_at_the_smallest_bucket_at_or_above_the_threshold() -> None:
    (p95,) = parse_watch_slos(["p(95) < 280ms"])
    counts = WatchCounts(requests=1000, failures=0, timed=1000, slower_than={0.25: 400, 0.3: 10, 0.5: 0})
    (look,) = evaluate([p95], counts, alpha=0.01)
    assert look.bucket_s == 0.3 and look.events == 10  # 280 ms rounds up to the 300 ms bucket, never down
    assert not look.breached and look.healthy
    (beyond,) = evaluate(parse_watch_slos(["p(95) < 6s"]), counts, alpha=0.01)
    assert beyond.missing == "the latency histogram has no bucket at or above 6s" and not beyond.breached


def test_a_breach_needs_the_lower_bound_above_the_limit_not_one_bad_request() -> None:
    (error,) = parse_watch_slos(["error_rate < 1%"])
    blip = evaluate([error], WatchCounts(requests=20, failures=1), alpha=0.01)[0]
    assert not blip.breached  # 5% observed, but 1 of 20 is no evidence
    decisive = evaluate([error], WatchCounts(requests=1000, failures=60), alpha=0.01)[0]
    assert decisive.breached and decisive.interval.lower > 0.01
    assert decisive.describe().startswith("error_rate < 1%: errors 60/1,000 (6%), bound [")


class CannedPrometheus(Metrics):
    """Metrics whose instant queries answer from a table: our boundary, not the HTTP client's."""

    def __init__(self) -> None:
        super().__init__(MetricsScope(prometheus_url="http://prometheus.invalid", app="demo"), timeout_s=1)
        self.queries: list[tuple[str, float]] = []

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        self.queries.append((promql, at))
        if "_bucket" in promql:
            return [{"metric": {"le": le}, "value": [at, count]}
                    for le, count in (("0.1", "90"), ("0.3", "97"), ("+Inf", "100"))]
        return [{"metric": {}, "value": [at, "4" if '5.."' in promql else "100"]}]


def test_the_counts_come_from_the_new_versions_pods_since_the_switch() -> None:
    metrics = CannedPrometheus()
    counts = PrometheusCounts(metrics, version="v2", since=1000.0, wall_clock=lambda: 1030.0).read()
    assert counts == WatchCounts(requests=100, failures=4, timed=100, slower_than={0.1: 10, 0.3: 3})
    (requests, _), (failures, _), (buckets, at) = metrics.queries
    assert at == 1030.0 and "[30s]" in requests and 'version="v2"' in requests
    assert 'status=~"5.."' in failures and buckets.startswith("sum by (le)(")
    assert "http_request_duration_seconds_bucket" in buckets


# --- the watch over time ----------------------------------------------------------------------------------


def test_a_failure_20s_after_the_switch_is_a_breach_within_a_few_looks() -> None:
    counts = ScriptedCounts(FakeClock(), fails_at=20.0)
    outcome, clock = run(counts)
    assert outcome.status is WatchStatus.BREACH
    assert outcome.breach is not None and outcome.breach.slo.text == "error_rate < 1%"
    assert outcome.breach_at == clock.now
    assert 20.0 < outcome.breach_at <= 24.0, outcome.summary()  # 50% errors: a few seconds of evidence
    assert outcome.looks == len(counts.reads) == int(outcome.breach_at) + 1  # one look a second, from 0
    properties = dict(outcome.properties())
    assert properties["release.finalize.watch.outcome"] == "breach"
    assert properties["release.finalize.watch.breach"].startswith("error_rate < 1%: errors ")
    check = outcome.breach_outcome(subject="v2", source="q", window="22s")
    assert check.verdict.value == "fail" and check.looks == outcome.looks and check.bound.startswith("lower bound")
    breach = outcome.breach
    assert check.interval == (breach.interval.lower, breach.interval.upper) and check.limits == (0.01,)
    assert check.value == breach.events / breach.trials and check.interval[0] > check.limits[0]
    assert check.message.startswith("error_rate < 1% breached by v2: errors ")


def test_a_latency_failure_is_a_breach_of_the_latency_slo() -> None:
    counts = ScriptedCounts(FakeClock(), fails_at=10.0, failing=0.0, slow=0.5)
    outcome, _ = run(counts)
    assert outcome.status is WatchStatus.BREACH and outcome.breach is not None
    assert outcome.breach.slo.text == "p(95) < 300ms" and outcome.breach.bucket_s == 0.3


def test_a_healthy_version_is_watched_to_the_end_and_shown_healthy_only_on_evidence() -> None:
    outcome, clock = run(ScriptedCounts(FakeClock()), duration_s=30.0)
    assert outcome.status is WatchStatus.HEALTHY
    assert clock.now == 30.0 and outcome.looks == 31  # once more at the deadline
    assert outcome.requests == 1500
    few, _ = run(ScriptedCounts(FakeClock(), rps=2.0), duration_s=30.0)
    assert few.status is WatchStatus.UNDECIDED  # 60 clean requests cannot show errors under 1%
    assert few.summary().startswith("no breach, undecided")


def test_no_traffic_is_no_data_not_a_breach_and_not_health() -> None:
    outcome, _ = run(ScriptedCounts(FakeClock(), rps=0.0), duration_s=10.0)
    assert outcome.status is WatchStatus.NO_DATA and outcome.looks == 11 and outcome.requests == 0
    assert outcome.summary().startswith("no data: no request since the switch; not evidence of health")


def test_looks_that_cannot_read_prometheus_are_counted_never_a_breach() -> None:
    counts = ScriptedCounts(FakeClock(), rps=100.0, down=lambda now: now < 5.0)
    outcome, _ = run(counts, duration_s=10.0)
    assert outcome.failed_looks == 5 and outcome.looks == 6 and outcome.last_error == "connection refused"
    assert outcome.status is WatchStatus.HEALTHY
    dark, _ = run(ScriptedCounts(FakeClock(), down=lambda now: True), duration_s=5.0)
    assert dark.status is WatchStatus.NO_DATA and dark.looks == 0
    assert "no look could read Prometheus" in dark.summary()


def test_an_abort_stops_the_watch_between_looks() -> None:
    clock = FakeClock()
    outcome, _ = run(ScriptedCounts(clock), aborted=lambda: "interrupted (Ctrl-C)" if clock.now >= 7.5 else None)
    assert outcome.status is WatchStatus.ABORTED and outcome.aborted == "interrupted (Ctrl-C)"
    assert 7.5 <= clock.now < 8.0 and outcome.looks == 8


@dataclass
class AtTheLimits:
    """20 requests a second, each failing with probability 1% and slower than 300 ms with 5%: exactly the
    SLOs' limits, the hardest healthy version there is. Drawn from a seeded generator."""

    clock: FakeClock
    rng: random.Random
    requests: int = 0
    failures: int = 0
    slow: int = 0

    def read(self) -> WatchCounts:
        while self.requests < int(self.clock.now * 20):
            self.requests += 1
            self.failures += self.rng.random() < 0.01
            self.slow += self.rng.random() < 0.05
        return WatchCounts(self.requests, self.failures, self.requests, {0.3: self.slow})

    def describe(self) -> str:
        return "simulated"


def test_a_version_at_its_limits_is_not_switched_back_over_200_seeded_watches() -> None:
    """Anytime-valid: looking every second for a minute does not inflate false alarms (alpha 1%)."""
    rng = random.Random(10)
    alarms = 0
    for _ in range(200):
        clock = FakeClock()
        outcome = watch(AtTheLimits(clock, rng), SLOS, duration_s=60, interval_s=1, alpha=0.01, clock=clock,
                        sleep=clock.sleep)
        alarms += outcome.status is WatchStatus.BREACH
    assert alarms <= 2  # alpha 1% of 200


# --- end to end: a release whose new version fails 20 s after the switch, keep_warm_s = 60 -----------------


@pytest.mark.slow
def test_bake_s_beyond_keep_warm_is_exit_4_before_anything_starts(project: ReleaseProject) -> None:
    project.minimal_suites()
    (project.path / "releasegate.toml").write_text("[release]\nkeep_warm_s = 10\nbake_s = 30\n")
    result = project.release("--release", "v2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: *releasegate.toml: release.bake_s = 30 is longer than release.keep_warm_s = "
                                 "10: the watch after the switch can only switch back while the old version is still "
                                 "warm; raise release.keep_warm_s to at least 30 or lower release.bake_s"])
    assert not (project.path / "run").exists()


@pytest.mark.slow
def test_an_slo_the_watch_cannot_decide_on_is_exit_4_in_preflight_before_anything_changes(
        project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_config('[vars]\n')
    config = (project.path / "releasegate.toml").read_text()
    (project.path / "releasegate.toml").write_text(config.replace("keep_warm_s = 0.5",
                                                                  'keep_warm_s = 0.5\nwatch_slos = ["rps > 20"]'))
    result = project.release("--release", "v2")
    assert result.ret == 4, result.stdout.str()
    junit = project.junit()
    assert junit.case("preflight")["message"].startswith("ConfigError: release.watch_slos: 'rps > 20' cannot be "
                                                         "watched")
    assert junit.case("provision")["outcome"] == "skipped"
    assert not (project.path / "run").exists()  # no local cluster was even started


class Traffic:
    """Users: GET /api/items through the service, about 40 a second, noting which version answered when."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[float, str, int]] = []  # (time, X-App-Version, status)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as client:
            while not self.stop.wait(0.025):  # a user's pace, not a synchronisation
                try:
                    response = client.get("/api/items")
                except httpx.HTTPError:
                    continue
                self.answers.append((time.time(), response.headers.get("X-App-Version", ""), response.status_code))

    def first_answer_from(self, version: str, after: float) -> float | None:
        return next((at for at, served, _ in self.answers if at > after and served == version), None)


@pytest.mark.slow
def test_a_version_failing_20s_after_the_switch_is_switched_back_during_keep_warm(project: ReleaseProject) -> None:
    project.minimal_suites()
    (project.path / "releasegate.toml").write_text(BASE_CONFIG.replace(
        "keep_warm_s = 0.5", 'keep_warm_s = 60\nwatch_slos = ["error_rate < 1%", "p(95) < 300ms"]'))
    project.start_background_cluster()
    service_url = project.cluster_state()["service_url"]
    with ThreadPoolExecutor(1) as pool:
        release = pool.submit(project.release, "--release", "v2-late-failure")

        def phase() -> str:
            state = project.cluster_state()["release_state"]
            assert not release.done(), "the release ended early"
            return str(state["phase"]) if state and state["version"] == "v2-late-failure" else ""

        wait_until(lambda: phase() in ("switched", "finalizing"), timeout_s=240, what="the switch to v2-late-failure")
        switched_at = time.time()
        traffic = Traffic(service_url)
        traffic.thread.start()
        try:
            wait_until(lambda: phase() == "finalizing", timeout_s=60, what="finalize's watch to begin")
            # The scenario: the new version fails 20 s after the switch. Its profile never fails by its own
            # clock (errors_after_s = 3600); SIGUSR1 skips the pods' clock past it at the chosen moment.
            wait_until(lambda: time.time() >= switched_at + 20, timeout_s=30, what="20 s after the switch",
                       interval_s=0.1)
            assert phase() == "finalizing", "the watch must still run when the failure begins"
            state = project.cluster_state()
            pods = [int(pod["pid"]) for slot in state["slots"].values() if slot["version"] == "v2-late-failure"
                    for pod in slot["pods"]]
            assert pods
            failing_from = time.time()
            for pid in pods:
                os.kill(pid, signal.SIGUSR1)
            result = release.result(timeout=120)
        finally:
            traffic.stop.set()
            traffic.thread.join(timeout=10)
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    finalize = junit.case("finalize")
    assert finalize["outcome"] == "failure"
    assert finalize["message"].startswith("watch after the switch: error_rate < 1% breached by v2-late-failure: "
                                          "errors ")
    assert ", lower bound " in finalize["message"]
    assert "switched back to v1 (slot blue)" in finalize["message"]
    assert junit.suite_properties["release.reason"].startswith("finalize failed: watch after the switch")
    assert junit.case("rollback")["outcome"] == "passed"
    assert dict(junit.case("rollback")["properties"])["release.rollback.reason"].startswith("finalize failed: ")
    rollback = dict(finalize["properties"])  # the watch's figures are on the finalize testcase
    to_old_s = float(rollback["release.finalize.watch.time_to_switch_back_s"])
    watched_s = float(rollback["release.finalize.watch.watched_s"])
    assert rollback["release.finalize.watch.outcome"] == "breach"
    assert watched_s < 60, "switched back during keep-warm"
    assert 0 <= to_old_s < 60
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100} and state["slots"]["blue"]["version"] == "v1"
    assert state["slots"]["green"]["pods"] == [] and state["release_state"]["phase"] == "rolled-back"
    assert state["lease"] is None
    served = httpx.get(service_url + "/version", timeout=5, trust_env=False).headers["X-App-Version"]
    assert served == "v1"
    back_on_v1 = traffic.first_answer_from("v1", after=failing_from)
    assert back_on_v1 is not None
    errors = sum(1 for at, served_by, status in traffic.answers if at >= failing_from and status >= 500)
    print(f"\nwatch after the switch (keep_warm_s = 60, failure {failing_from - switched_at:.1f}s after the switch): "
          f"{rollback['release.finalize.watch.breach']} at look {rollback['release.finalize.watch.looks']}, "
          f"{watched_s:.1f}s into the watch; breach look -> all traffic on v1: {to_old_s:.2f}s; failure start -> "
          f"users answered by v1 again: {back_on_v1 - failing_from:.2f}s ({errors} users got a 5xx meanwhile)")
