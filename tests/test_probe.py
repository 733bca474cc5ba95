"""The zero-downtime probe (verifiers/probe.py): units against a loopback server whose answers the test
scripts by request number, then two releases on the local target: a clean switch and rollback with their
probe figures in JUnit, and a switch whose probe sees failed requests, which fails it (fail closed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest

from releasegate.core.config import parse_config
from releasegate.core.target import Target
from releasegate.core.types import Endpoint, Promotion, Role, SwitchResult, TrafficSplit, WorkloadStatus
from releasegate.plugins.controller import ReleaseController
from releasegate.plugins.ledger import Ledger, ReleaseContext
from releasegate.plugins.options import ReleaseOptions
from releasegate.verifiers.probe import ProbeFailed, ProbeSettings, TrafficProbe, probed_change
from tests.release_project import ReleaseProject
from tests.waiting import wait_until

HEADER = "X-App-Version"
FAST = ProbeSettings(path="/healthz", version_header=HEADER, interval_s=0.005, request_timeout_s=2.0,
                     settle_answers=5, settle_timeout_s=5.0)


@dataclass(frozen=True)
class Answer:
    version: str = "v1"
    status: int = 200
    stall_s: float = 0.0  # the server holds the answer this long: a pod that hangs


class ScriptedService:
    """A loopback HTTP/1.1 server (keep-alive) that answers the probe's request number n with `script(n)`.

    Only the probe's requests are numbered (its User-Agent); any other client (the controller's check that
    the service answers as the new version) gets the answer of the probe's next number, without taking it,
    so what the probe sees does not depend on how other clients' requests interleave with its own.
    """

    def __init__(self, script: Callable[[int], Answer], port: int = 0) -> None:
        self.script = script
        self.requests = 0
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with service._lock:
                    number = service.requests
                    if self.headers.get("User-Agent") == "releasegate-probe":
                        service.requests += 1
                answer = service.script(number)
                if answer.stall_s:
                    time.sleep(answer.stall_s)  # the behaviour under test (a slow pod), not a wait in the test
                body = b"{}"
                self.send_response(answer.status)
                self.send_header(HEADER, answer.version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedService]]:
    started: list[ScriptedService] = []

    def start(script: Callable[[int], Answer], port: int = 0) -> ScriptedService:
        started.append(ScriptedService(script, port))
        return started[-1]

    yield start
    for service in started:
        service.close()


def switch_at(n: int, *, before: str = "v1", after: str = "v2") -> Callable[[int], Answer]:
    return lambda number: Answer(before if number < n else after)


def wait_for_requests(service: ScriptedService, count: int) -> None:
    wait_until(lambda: service.requests >= count, timeout_s=20, what=f"{count} probe requests at the server")


# --- the probe against a server we control ------------------------------------------------------------


def test_a_clean_switch_has_no_failed_request_and_both_versions(serve: Callable[..., ScriptedService]) -> None:
    service = serve(switch_at(10))
    probe = TrafficProbe(service.url, FAST).start()
    assert probe.requests_so_far >= 1  # start() returns with an answer in hand: the window covers "before"
    wait_for_requests(service, 12)  # the switch at the server happened while the probe ran
    report = probe.finish("v2")
    assert report.failed == 0 and report.failure_kinds == {}
    assert report.versions["v1"] == 10 and report.versions["v2"] >= FAST.settle_answers
    assert report.requests == sum(report.versions.values())
    assert report.settled
    assert 0 < report.longest_gap_s < 1.0
    properties = dict(report.properties("release.switch.probe"))
    assert properties["release.switch.probe.failed"] == "0"
    assert properties["release.switch.probe.requests"] == str(report.requests)
    assert properties["release.switch.probe.versions"].startswith("v1 10, v2 ")
    assert "release.switch.probe.failures" not in properties


def test_5xx_answers_are_failed_requests(serve: Callable[..., ScriptedService]) -> None:
    service = serve(lambda n: Answer("v2", 502) if 5 <= n < 8 else Answer("v1" if n < 5 else "v2"))
    probe = TrafficProbe(service.url, FAST).start()
    wait_for_requests(service, 10)
    report = probe.finish("v2")
    assert (report.failed, report.failure_kinds) == (3, {"502": 3})
    assert report.versions["v1"] == 5  # a failed answer is not counted as served by its version
    assert report.failure_examples[0].startswith("502 Bad Gateway")
    failures = dict(report.properties("release.shift.probe"))["release.shift.probe.failures"]
    assert failures.startswith("3 x 502; first: 502 Bad Gateway")


def test_a_stalled_answer_is_the_longest_gap(serve: Callable[..., ScriptedService]) -> None:
    service = serve(lambda n: Answer("v1", stall_s=0.4 if n == 5 else 0.0))
    probe = TrafficProbe(service.url, FAST).start()
    wait_for_requests(service, 10)
    report = probe.finish("v1")
    assert report.failed == 0
    assert 0.4 <= report.longest_gap_s < 2.0


def test_an_answer_slower_than_the_timeout_is_a_failed_request(serve: Callable[..., ScriptedService]) -> None:
    service = serve(lambda n: Answer("v1", stall_s=0.5 if n == 3 else 0.0))
    settings = ProbeSettings(path="/", version_header=HEADER, interval_s=0.005, request_timeout_s=0.2)
    probe = TrafficProbe(service.url, settings).start()
    wait_for_requests(service, 8)
    report = probe.finish("v1")
    assert report.failure_kinds == {"ReadTimeout": 1}
    assert report.longest_gap_s >= 0.2


def test_refused_connections_are_failed_requests_and_part_of_the_gap(
        serve: Callable[..., ScriptedService]) -> None:
    with socket.socket() as placeholder:  # a loopback port with no listener yet: connections are refused
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    probe = TrafficProbe(f"http://127.0.0.1:{port}", FAST).start()
    wait_until(lambda: probe.failed_so_far >= 3, timeout_s=20, what="three refused probe requests")
    refused_until = time.monotonic()
    service = serve(switch_at(0, after="v1"), port)  # the listener comes up on that port
    wait_for_requests(service, 3)
    report = probe.finish("v1")
    assert report.failed >= 3 and set(report.failure_kinds) == {"ConnectError"}
    assert report.requests == report.failed + report.versions["v1"]
    assert report.settled
    assert report.longest_gap_s >= refused_until - (time.monotonic() - report.duration_s)


def test_a_probe_that_never_gets_an_answer_has_a_gap_as_long_as_itself() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    settings = ProbeSettings(version_header=HEADER, interval_s=0.005, settle_timeout_s=0.3)
    report = TrafficProbe(f"http://127.0.0.1:{port}", settings).start().finish("v1")
    assert report.failed == report.requests > 0 and not report.settled
    assert report.longest_gap_s == pytest.approx(report.duration_s)


def test_settling_waits_for_the_expected_version_in_a_row(serve: Callable[..., ScriptedService]) -> None:
    # The change reaches users slowly: v2 only from the 30th request; until then the probe goes on.
    service = serve(switch_at(30))
    probe = TrafficProbe(service.url, FAST).start()
    report = probe.finish("v2")
    assert report.settled and report.versions["v1"] == 30 and report.versions["v2"] >= FAST.settle_answers


def test_probed_change_fails_closed_on_a_failed_request(serve: Callable[..., ScriptedService]) -> None:
    service = serve(lambda n: Answer("v2", 503) if n == 4 else Answer("v1" if n < 4 else "v2"))
    with pytest.raises(ProbeFailed) as failed, \
            probed_change(service.url, "switch", FAST, expected_version="v2", fail_closed=True):
        wait_for_requests(service, 8)
    assert str(failed.value).startswith("the probe through the public service saw 1 of ")
    assert "requests fail during the switch (1 x 503; first: 503 Service Unavailable" in str(failed.value)
    properties = dict(failed.value.properties)  # the runtime records them on the failed action's testcase
    assert properties["release.switch.probe.failed"] == "1"


def test_probed_change_only_reports_where_it_must_not_fail(serve: Callable[..., ScriptedService]) -> None:
    service = serve(lambda n: Answer("v1", 500) if n == 4 else Answer("v1"))
    with probed_change(service.url, "rollback", FAST, expected_version="v1", fail_closed=False) as found:
        wait_for_requests(service, 8)
    properties = dict(found)
    assert properties["release.rollback.probe.failed"] == "1"
    assert properties["release.rollback.probe.failures"].startswith("1 x 500")


def test_a_change_that_raises_stops_the_probe_and_keeps_its_figures(
        serve: Callable[..., ScriptedService]) -> None:
    service = serve(switch_at(1000))
    with pytest.raises(RuntimeError, match="router unreachable"), \
            probed_change(service.url, "switch", FAST, expected_version="v2", fail_closed=True) as found:
        wait_for_requests(service, 3)
        raise RuntimeError("router unreachable")
    properties = dict(found)
    assert properties["release.switch.probe.settled"] == "false"  # stopped at once, not after settling
    assert int(properties["release.switch.probe.requests"]) >= 3


# --- the controller wraps every traffic change (a target at our boundary, its service the scripted one) ----


class ScriptedTarget:
    """The parts of the Target protocol that traffic changes use. Its public service is a ScriptedService;
    set_traffic changes what that service answers, and `broken` makes the next three answers 502s."""

    def __init__(self, name: str, service: ScriptedService, *, broken: bool = False) -> None:
        self.name = name
        self.service = service
        self.broken = broken
        self.traffic = TrafficSplit.all_to("blue")
        self.versions = {"blue": "v1", "green": "v2"}

    def endpoints(self, candidate_slot: str | None) -> dict[Role, Endpoint]:
        live = self.traffic.single_slot
        found = {Role.SERVICE: Endpoint(Role.SERVICE, self.service.url, live, self.versions.get(live or ""))}
        if candidate_slot is not None:
            found[Role.CANDIDATE] = Endpoint(Role.CANDIDATE, self.service.url, candidate_slot, "v2")
        return found

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        previous, self.traffic = self.traffic, split
        green = split.weights.get("green", 0)
        healthy_from = self.service.requests + (3 if self.broken else 0)

        def answer(number: int) -> Answer:
            if number < healthy_from:
                return Answer("v2", 502)
            return Answer("v2" if number % 100 < green else "v1")

        self.service.script = answer
        return SwitchResult(traffic=split, previous=previous, converged_ms=1.0)

    def promote(self, slot: str, version: str) -> Promotion:
        return Promotion(switch=self.set_traffic(TrafficSplit.all_to(slot)), live_slot=slot, retired_slot="blue")

    def workload_status(self, slot: str) -> WorkloadStatus:
        return WorkloadStatus(slot=slot, version=self.versions[slot], replicas=1, ready_replicas=1)

    def record_release_state(self, state: object) -> None:
        pass

    def remove(self, slot: str) -> None:
        pass


def controller_on(target: ScriptedTarget, tmp_path: Path, *, strategy: str = "canary") -> ReleaseController:
    """A controller past preflight and provision: blue serves v1, v2 is ready in green."""
    config = parse_config({"release": {"keep_warm_s": 0, "confirm_responses": 3}}, source="test config",
                          base_dir=tmp_path, project_root=tmp_path)
    options = ReleaseOptions(version="v2", strategy=strategy, target=target.name, dry_run=False, run_id="run-a")
    ledger = Ledger(tmp_path / "ledger")
    ledger.start(ReleaseContext(run_id="run-a", version="v2", strategy=strategy, target=target.name))
    controller = ReleaseController(config, options, ledger)
    controller.target = cast(Target, target)
    controller.live_slot, controller.candidate_slot, controller.previous_version = "blue", "green", "v1"
    controller.provisioned = True
    return controller


def test_a_canary_shift_carries_its_probe_figures(serve: Callable[..., ScriptedService], tmp_path: Path) -> None:
    target = ScriptedTarget("local", serve(switch_at(10**9)))
    result = controller_on(target, tmp_path).shift(50)
    figures = {name: value for name, value in result.properties if name.startswith("release.shift.probe.")}
    assert figures["release.shift.probe.failed"] == "0"
    assert figures["release.shift.probe.settled"] == "true"
    assert figures["release.shift.probe.versions"].startswith("v1 ") and ", v2 " in figures[
        "release.shift.probe.versions"]  # the split answered from both versions


def test_a_failed_probe_request_fails_a_shift_on_the_local_target(serve: Callable[..., ScriptedService],
                                                                 tmp_path: Path) -> None:
    target = ScriptedTarget("local", serve(switch_at(10**9)), broken=True)
    with pytest.raises(ProbeFailed, match=r"saw 3 of \d+ requests fail during the shift \(3 x 502"):
        controller_on(target, tmp_path).shift(10)


def test_a_failed_probe_request_is_only_reported_on_kubernetes(serve: Callable[..., ScriptedService],
                                                              tmp_path: Path) -> None:
    target = ScriptedTarget("kubernetes", serve(switch_at(10**9)), broken=True)
    result = controller_on(target, tmp_path, strategy="blue-green").switch()
    figures = dict(result.properties)
    assert figures["release.switch.probe.failed"] == "3"
    assert figures["release.switch.probe.failures"].startswith("3 x 502; first: 502 Bad Gateway")


def test_a_rollback_reports_failed_probe_requests_and_still_rolls_back(serve: Callable[..., ScriptedService],
                                                                       tmp_path: Path) -> None:
    target = ScriptedTarget("local", serve(switch_at(10**9)))
    controller = controller_on(target, tmp_path, strategy="blue-green")
    controller.switch()
    target.broken = True  # moving traffic back costs users three failed requests
    result = controller.rollback([])
    figures = dict(result.properties)
    assert figures["release.rollback.probe.failed"] == "3" and figures["release.rollback.probe.settled"] == "true"
    assert target.traffic == TrafficSplit.all_to("blue") and not controller.switched


# --- releases on the local target ------------------------------------------------------------------------

# The candidate answers every /api/items with a 500 once its clock skips ahead (SIGUSR1, sent by the last
# analysis test, after the candidate was verified): the switch sends users to pods that fail them.
BREAKS_AT_SWITCH = """
[versions.v2-breaks]
errors_after_s = 3600.0
error_rate_after = 1.0
"""


def probe_figures(case: dict[str, object], action: str) -> dict[str, str]:
    prefix = f"release.{action}.probe."
    return {name.removeprefix(prefix): value for name, value in case["properties"]  # type: ignore[attr-defined]
            if name.startswith(prefix)}


@pytest.mark.slow
def test_a_release_records_the_probe_of_its_switch_and_of_its_rollback(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("post_switch/test_after.py", """
        def test_a_late_finding_rolls_the_release_back(service):
            assert False, "found after the switch"
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    switch = probe_figures(junit.case("switch"), "switch")
    assert junit.case("switch")["outcome"] == "passed"
    assert switch["failed"] == "0" and int(switch["requests"]) > 0 and switch["settled"] == "true"
    assert float(switch["longest_gap_ms"]) > 0
    assert switch["versions"].startswith("v1 ") and ", v2 " in switch["versions"]  # before and after the switch
    rollback = probe_figures(junit.case("rollback"), "rollback")
    assert junit.case("rollback")["outcome"] == "passed"
    assert rollback["failed"] == "0" and rollback["settled"] == "true"
    assert rollback["versions"].startswith("v2 ") and ", v1 " in rollback["versions"]
    assert project.cluster_state()["traffic"] == {"blue": 100}


@pytest.mark.slow
def test_a_failed_probe_request_fails_the_switch_on_the_local_target(project: ReleaseProject) -> None:
    (project.path / "profiles.toml").write_text((project.path / "profiles.toml").read_text() + BREAKS_AT_SWITCH)
    config = (project.path / "releasegate.toml").read_text().replace(
        "[release]\n", '[release]\nversion_path = "/api/items"\n', 1)
    (project.path / "releasegate.toml").write_text(config)
    project.minimal_suites()
    project.start_background_cluster()
    cluster_pid = int(project.cluster_state()["pid"])
    project.write_suite("analysis/test_zz_candidate_breaks.py", f"""
        import os
        import signal


        def candidate_pods():
            found = []
            for entry in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{{entry}}/cmdline", "rb") as cmdline:
                        argv = cmdline.read().decode(errors="replace").split("\\0")
                    with open(f"/proc/{{entry}}/stat") as stat:
                        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if parent == {cluster_pid} and "releasegate.demo" in argv and "v2-breaks" in argv:
                    found.append(int(entry))
            return found


        def test_the_candidate_breaks_after_its_verification(candidate):
            pods = candidate_pods()
            assert pods, "no demo process of v2-breaks"
            for pid in pods:
                os.kill(pid, signal.SIGUSR1)
    """)
    result = project.release("--release", "v2-breaks")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    switch = junit.case("switch")
    assert switch["outcome"] == "failure"
    assert switch["message"].startswith("ProbeFailed: the probe through the public service saw ")
    assert "requests fail during the switch (" in switch["message"]
    figures = probe_figures(switch, "switch")
    assert int(figures["failed"]) >= 1 and figures["failures"].startswith(f"{figures['failed']} x 500")
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert junit.suite_properties["release.reason"].startswith("switch failed: ProbeFailed: the probe")
    # The rollback's probe starts on the failing pods, so it may see a failure too; it reports it and still
    # passes: traffic is back on v1, the only version that answers (a 500 counts for no version).
    rollback = probe_figures(junit.case("rollback"), "rollback")
    assert junit.case("rollback")["outcome"] == "passed"
    answered = int(rollback["requests"]) - int(rollback["failed"])
    assert rollback["settled"] == "true" and rollback["versions"] == f"v1 {answered}"
    assert project.cluster_state()["traffic"] == {"blue": 100}
