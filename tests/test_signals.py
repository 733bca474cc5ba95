"""SIGINT and SIGTERM during a release (plugins/signals.py): real `pytest --release` processes, a real target.

Each test starts a release in a session of its own (as a CI job runs), waits until it reaches a phase, sends
the signal (to the process group, as a CI runner cancelling a job does, or to the main process alone), and
then checks: exit code 2, traffic on the previous version, no candidate left, no process of the run left,
and reports that say what happened (the interrupted item an error, later stages skipped, a rollback row).

Reaching a phase: a conftest in the release project holds the chosen stage's item at its start (a verifying
test) or right after its action (an action: its change is made, the cleanup must undo it) until this process
has handled a signal. The hold is a wait on the release's own signal guard, so the signal always arrives
inside the phase, however fast or slow the machine is. The load stage needs no hold: the signal goes when a
locust process runs. The whole phase x signal x target table is bench/signals.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.core.errors import ExitCode
from releasegate.plugins.ledger import Decision, Ledger, ReleaseContext
from releasegate.plugins.signals import InterruptedBySignal, Region, SignalGuard, SignalInterrupt
from tests.kube_cluster import ProcessCluster, process_cluster
from tests.local_cluster import TEST_PROFILES
from tests.release_project import JUnit, ReleaseProject, copy_shipped_suites
from tests.waiting import wait_until

HOLD_CONFTEST = '''
"""Hold the items of the stages in RELEASEGATE_TEST_HOLD until the run handled a signal (tests/test_signals.py)."""

import json
import os
import pathlib
import time

import pytest

HOLD = [s for s in os.environ.get("RELEASEGATE_TEST_HOLD", "").split(",") if s]
HELD_DIR = pathlib.Path(os.environ.get("RELEASEGATE_TEST_HELD_DIR", "."))
ACTIONS_HELD_BEFORE = ("finalize", "rollback")  # finalize: its keep-warm; rollback: before its cleanup


def _hold(item):
    guard = item.config.pluginmanager.get_plugin("releasegate-release-runtime").guard
    seen = (guard.reason, len(guard.notes))
    stage = dict(item.user_properties)["release.stage"]
    (HELD_DIR / f"held-{stage}").write_text(json.dumps({"nodeid": item.nodeid, "pid": os.getpid()}))
    deadline = time.monotonic() + 120
    # Until this process handled a signal (a first one raises right here; during the cleanup it is noted).
    while (guard.reason, len(guard.notes)) == seen:
        assert time.monotonic() < deadline, f"no signal came while {item.nodeid} was held"
        time.sleep(0.02)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    stage = dict(item.user_properties).get("release.stage")
    if stage not in HOLD:
        return (yield)
    HOLD.remove(stage)  # once per stage: a canary's analysis runs once per step
    if item.nodeid.startswith("release::") and stage.split("[")[0] not in ACTIONS_HELD_BEFORE:
        result = yield
        _hold(item)
        return result
    _hold(item)
    return (yield)
'''

FAST = """
[vars]
load_users = 5
load_duration_s = 20
load_max_duration_s = 30
load_min_requests = 50
slos = ["p(95) < 5000ms", "error_rate < 2%"]
"""
"""A load that lasts (20 s, so the signal meets it running) and SLOs a busy machine passes: the test is about
the interrupt, not about the candidate's latency."""


@dataclass
class Interrupted:
    """What a release that got signals ended with."""

    code: int
    output: str
    session: int  # the session (and process group) the release ran in

    def leftover_processes(self) -> list[str]:
        """Command lines of processes still in the release's session: locust, an ephemeral cluster, workers."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.session and fields[0] != "Z":
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        return found


def start_release(path: Path, *args: str, hold: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """`pytest --release ...` in `path`, in a session of its own (as a CI job runs), output to a file."""
    env = {**os.environ, "RELEASEGATE_TEST_HOLD": ",".join(hold), "RELEASEGATE_TEST_HELD_DIR": str(path)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    log = (path / "release-output.txt").open("w")
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=path, stdout=log,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def send(process: subprocess.Popen[str], sig: signal.Signals, *, group: bool) -> None:
    if group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)


def finish(process: subprocess.Popen[str], path: Path, timeout_s: float = 180) -> Interrupted:
    try:
        code = process.wait(timeout_s)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return Interrupted(code, (path / "release-output.txt").read_text(), process.pid)


def held(path: Path, stage: str) -> Path:
    return path / f"held-{stage}"


def locust_running(path: Path) -> bool:
    """A locust of this project's load suite runs (in a session of its own: a group signal misses it)."""
    return any(" -m locust " in line for line in _cmdlines_mentioning(str(path / "suites")))


def _cmdlines_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in cmdline:
                    found.append(cmdline)
    return found


def check_reports(path: Path, run: Interrupted, *, reason: str, interrupted: str | None, skipped: list[str],
                  decision: str = "rolled-back", rollback: str = "passed") -> JUnit:
    """The reports say what happened: `interrupted` (a testcase name) an error with `reason`, `skipped` skipped
    with it, a rollback row of its own, the decision, exit code 2; nothing looks green."""
    assert run.code == 2, run.output
    latest = path / "reports" / "latest"
    junit = JUnit.read(latest / "junit.xml")
    assert all(case["name"] for case in junit.cases), junit.cases  # no nameless testcase
    assert junit.suite_properties["release.decision"] == decision, junit.suite_properties
    assert junit.suite_properties["release.reason"].startswith(reason), junit.suite_properties
    suite = ElementTree.parse(latest / "junit.xml").getroot()[0]
    if interrupted is not None:
        case = junit.case(interrupted)
        assert case["outcome"] == "error" and case["message"] == reason, case
        assert int(suite.get("errors", "0")) >= 1, suite.attrib
    for name in skipped:
        case = junit.case(name)
        assert case["outcome"] == "skipped" and case["message"] == f"release stopped: {reason}", case
    assert junit.case("rollback")["outcome"] == ("skipped" if rollback == "skipped" else rollback), \
        junit.case("rollback")
    report = json.loads((latest / "release-report.json").read_text())
    assert report["exit_code"] == 2 and report["decision"] == decision, report
    outcomes = {test["nodeid"].rsplit("::", 1)[-1]: test["outcome"] for test in report["tests"]}
    if interrupted is not None:
        assert outcomes[interrupted] == "error", outcomes
    assert all(outcomes[name] == "skipped" for name in skipped), outcomes
    assert "rollback" in outcomes, outcomes
    markdown = (latest / "release-report.md").read_text()
    assert f"# Release v2: {decision}" in markdown and "exit code 2" in markdown
    assert "`release::rollback`" in markdown
    last = run.output.rstrip().splitlines()[-1]
    if interrupted is not None:
        assert " error" in last, last  # pytest's own summary line counts the interrupted item as an error
    return junit


# -- the local target ---------------------------------------------------------------------------------
@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseProject]:
    project = ReleaseProject(pytester, monkeypatch)
    (project.path / "conftest.py").write_text(HOLD_CONFTEST)
    try:
        yield project
    finally:
        project.stop_background_cluster()


def local_state_is_clean(project: ReleaseProject, previous: str = "v1") -> dict[str, Any]:
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}, state["traffic"]
    assert state["slots"]["green"]["pods"] == [], state["slots"]["green"]
    assert state["lease"] is None
    served = httpx.get(state["service_url"] + "/version", timeout=5, trust_env=False).headers["X-App-Version"]
    assert served == previous
    return state


@pytest.mark.slow
def test_sigint_during_load_stops_locust_rolls_back_and_reports_an_error(project: ReleaseProject) -> None:
    project.minimal_suites()
    copy_shipped_suites(project.path / "suites")
    for shipped in ("analysis/test_slo.py", "analysis/test_compare.py", "analysis/test_canary.py",
                    "post_switch/test_service.py"):
        (project.path / "suites" / shipped).unlink()
    project.write_config(FAST)
    project.start_background_cluster()
    process = start_release(project.path, "--release", "v2")
    run = None
    try:
        wait_until(lambda: locust_running(project.path), timeout_s=180, what="locust to run the load stage")
        send(process, signal.SIGINT, group=True)  # Ctrl-C in a terminal: the whole foreground group
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason="interrupted by SIGINT during load",
                  interrupted="test_candidate_meets_its_slos_under_load",
                  skipped=["test_analysis_sees_the_right_versions", "switch",
                           "test_post_switch_sees_the_right_versions", "finalize"])
    state = local_state_is_clean(project)
    assert state["release_state"]["phase"] == "rolled-back"
    assert run.leftover_processes() == []  # locust too: it was the load test's child
    assert not locust_running(project.path)


@pytest.mark.slow
def test_sigterm_during_analysis_to_the_main_process_alone(project: ReleaseProject) -> None:
    """A `kill <pid>` (no group): SIGTERM is handled like Ctrl-C, never the default death without cleanup."""
    project.minimal_suites()
    project.start_background_cluster()
    process = start_release(project.path, "--release", "v2", hold=("analysis",))
    try:
        wait_until(held(project.path, "analysis").exists, timeout_s=180, what="the analysis stage")
        send(process, signal.SIGTERM, group=False)
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason="interrupted by SIGTERM during analysis",
                  interrupted="test_analysis_sees_the_right_versions",
                  skipped=["switch", "test_post_switch_sees_the_right_versions", "finalize"])
    local_state_is_clean(project)
    assert run.leftover_processes() == []


@pytest.mark.slow
def test_sigterm_to_the_group_of_a_release_on_an_ephemeral_cluster_cleans_up_and_stops_it(
        project: ReleaseProject) -> None:
    """No `up` before: the release starts its own cluster. A CI runner's SIGTERM to the job's process group
    must not kill that cluster under the release (it runs in a session of its own); the release rolls back
    through it, writes its reports, and then stops it."""
    project.minimal_suites()
    process = start_release(project.path, "--release", "v2", hold=("analysis",))
    try:
        wait_until(held(project.path, "analysis").exists, timeout_s=180, what="the analysis stage")
        send(process, signal.SIGTERM, group=True)
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason="interrupted by SIGTERM during analysis",
                  interrupted="test_analysis_sees_the_right_versions",
                  skipped=["switch", "test_post_switch_sees_the_right_versions", "finalize"])
    assert "WARNING" not in run.output, run.output  # the cleanup went through: nothing left undone
    assert run.leftover_processes() == []
    assert _cmdlines_mentioning(str(project.path / "run")) == []  # the ephemeral cluster and its pods stopped


@pytest.mark.slow
def test_a_second_signal_during_the_cleanup_is_noted_and_the_cleanup_finishes(project: ReleaseProject) -> None:
    """SIGINT after the switch, then SIGTERM while the rollback is about to move traffic back: the rollback
    runs to its end, the report notes the second signal, exit 2."""
    project.minimal_suites()
    project.start_background_cluster()
    process = start_release(project.path, "--release", "v2", hold=("switch", "rollback"))
    try:
        wait_until(held(project.path, "switch").exists, timeout_s=180, what="the switch")
        assert project.cluster_state()["traffic"] == {"green": 100}  # users are on the candidate now
        send(process, signal.SIGINT, group=True)
        wait_until(held(project.path, "rollback").exists, timeout_s=60, what="the rollback")
        send(process, signal.SIGTERM, group=True)
    finally:
        run = finish(process, project.path)
    junit = check_reports(project.path, run, reason="interrupted by SIGINT during switch", interrupted="switch",
                          skipped=["test_post_switch_sees_the_right_versions", "finalize"])
    assert "SIGTERM during the cleanup (rollback): noted; the cleanup went on" in \
        junit.suite_properties["release.reason"]
    assert "SIGTERM again: the cleanup goes on" in run.output
    local_state_is_clean(project)
    assert run.leftover_processes() == []


@pytest.mark.slow
def test_sigterm_during_a_canary_step_puts_every_user_back_on_stable(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_config("[canary]\nsteps = [10, 50]\nstep_window_s = 0.5\n")
    project.start_background_cluster()
    process = start_release(project.path, "--release", "v2", "--release-strategy", "canary", hold=("shift[50%]",))
    try:
        wait_until(held(project.path, "shift[50%]").exists, timeout_s=180, what="the shift to 50%")
        assert project.cluster_state()["traffic"] == {"blue": 50, "green": 50}
        send(process, signal.SIGTERM, group=True)
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason="interrupted by SIGTERM during shift[50%]", interrupted="shift[50%]",
                  skipped=["test_analysis_sees_the_right_versions[50%]", "promote", "finalize"])
    local_state_is_clean(project)
    assert run.leftover_processes() == []


@pytest.mark.slow
def test_under_xdist_a_signal_to_the_controller_alone_reaches_the_worker_that_drives_the_release(
        project: ReleaseProject) -> None:
    project.minimal_suites()
    project.start_background_cluster()
    process = start_release(project.path, "--release", "v2", "-n", "2", hold=("provision",))
    try:
        wait_until(held(project.path, "provision").exists, timeout_s=180, what="the provision")
        assert project.cluster_state()["slots"]["green"]["pods"]  # the candidate runs
        send(process, signal.SIGTERM, group=False)  # the xdist controller only: it passes it on
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason="interrupted by SIGTERM during provision", interrupted="provision",
                  skipped=["test_smoke_sees_the_right_versions", "switch", "finalize"])
    local_state_is_clean(project)
    assert run.leftover_processes() == []


# -- the fake API server (the kubernetes target through the official client) ---------------------------
@pytest.fixture
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    with process_cluster(workdir, profiles=profiles, namespace="shop", app="demo") as cluster:
        yield cluster


def kube_state_is_clean(cluster: ProcessCluster) -> None:
    service = cluster.fake.get_object("services", "shop", "demo")
    assert service is not None and service["spec"]["selector"] == {"app": "demo", "slot": "blue"}
    assert cluster.fake.get_object("deployments", "shop", "demo-green") is None  # the candidate was removed
    lease = cluster.fake.get_object("leases", "shop", "demo-release")
    assert lease is None or "holderIdentity" not in lease["spec"]
    wait_until(lambda: not [p for p in cluster.runtime.pods() if p["alive"] and p["version"] != "v1"],
               timeout_s=30, what="the candidate's pods to stop")
    served = httpx.get(cluster.proxy.urls["demo"] + "/version", timeout=5, trust_env=False)
    assert served.headers["X-App-Version"] == "v1"


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "sig", "skipped"), [
    ("provision", signal.SIGINT, ["test_smoke_sees_the_right_versions", "switch", "finalize"]),
    ("switch", signal.SIGTERM, ["test_post_switch_sees_the_right_versions", "finalize"]),
], ids=["sigint-provision", "sigterm-switch"])
def test_kubernetes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kube: ProcessCluster, stage: str,
                    sig: signal.Signals, skipped: list[str]) -> None:
    project = ReleaseProject(pytester, monkeypatch)
    (project.path / "conftest.py").write_text(HOLD_CONFTEST)
    project.minimal_suites()
    (project.path / "releasegate.toml").write_text(kube.config_toml())
    process = start_release(project.path, "--release", "v2", hold=(stage,))
    try:
        wait_until(held(project.path, stage).exists, timeout_s=180, what=f"the {stage}")
        send(process, sig, group=True)
    finally:
        run = finish(process, project.path)
    check_reports(project.path, run, reason=f"interrupted by {sig.name} during {stage}", interrupted=stage,
                  skipped=skipped)
    kube_state_is_clean(kube)
    assert run.leftover_processes() == []


# -- the guard on its own: fast, in this process, with real signals to itself ----------------------------
@pytest.fixture
def guard(tmp_path: Path) -> Iterator[SignalGuard]:
    ledger = Ledger(tmp_path / "ledger")
    ledger.start(ReleaseContext(run_id="r", version="v2", strategy="blue-green", target="local"))
    guard = SignalGuard(ledger, phase=lambda: "load", stderr=open(os.devnull, "w"))  # noqa: SIM115
    guard.install()
    try:
        yield guard
    finally:
        guard.restore()


def test_a_signal_inside_an_item_becomes_that_items_error_and_stops_the_release(guard: SignalGuard) -> None:
    guard.items_start()
    guard.start_item(cleanup=False)
    with pytest.raises(InterruptedBySignal, match=r"^interrupted by SIGTERM during load$") as raised, \
            guard.converting():
        signal.raise_signal(signal.SIGTERM)
    assert isinstance(raised.value.__cause__, SignalInterrupt)  # where the test was: in the chained traceback
    assert guard.ledger.aborted() == "interrupted by SIGTERM during load"  # every process's next item skips
    assert guard.region is Region.CLEANUP


def test_a_test_that_swallows_the_interrupt_is_interrupted_all_the_same(guard: SignalGuard) -> None:
    guard.items_start()
    guard.start_item(cleanup=False)
    with pytest.raises(InterruptedBySignal), guard.converting(), contextlib.suppress(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_a_signal_between_items_interrupts_the_next_one(guard: SignalGuard) -> None:
    guard.items_start()
    signal.raise_signal(signal.SIGINT)  # nothing raised here: pytest's own code between two items
    assert guard.pending and guard.ledger.aborted() == "interrupted by SIGINT during load"
    with pytest.raises(InterruptedBySignal, match="SIGINT during load"):
        guard.start_item(cleanup=False)


def test_an_xdist_worker_waiting_for_its_turn_skips_instead(guard: SignalGuard) -> None:
    guard.items_start()
    guard.waiting(in_worker=True)
    signal.raise_signal(signal.SIGTERM)
    assert not guard.pending and guard.ledger.aborted() == "interrupted by SIGTERM during load"


def test_signals_during_the_cleanup_are_noted_never_raised(guard: SignalGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    guard.items_start()
    with guard.shielded():  # the rollback
        signal.raise_signal(signal.SIGTERM)  # a first one: the release is interrupted, the rollback goes on
        signal.raise_signal(signal.SIGTERM)  # the same one again at once: one request (a group kill, forwarded)
        assert guard.notes == []
        clock = [1000.0]
        monkeypatch.setattr("releasegate.plugins.signals.time.monotonic", lambda: clock[0])
        guard.first_at = clock[0] - 5
        signal.raise_signal(signal.SIGINT)  # a person presses Ctrl-C again: noted
    assert guard.notes == ["SIGINT during the cleanup (load): noted; the cleanup went on"]
    assert guard.ledger.signal_notes() == guard.notes
    assert guard.region is Region.CLEANUP  # and so it stays to the end of the run


def test_restore_gives_the_signals_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    guard = SignalGuard(Ledger(tmp_path), phase=lambda: "x")
    guard.install()
    assert signal.getsignal(signal.SIGTERM) == guard._handle
    guard.restore()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_an_interrupted_item_is_an_error_with_the_reason_and_a_failed_cleanup_is_exit_3(tmp_path: Path) -> None:
    from releasegate.plugins.options import ReleaseOptions
    from releasegate.plugins.reporting import ReleaseReporter
    from releasegate.plugins.signals import INTERRUPTED_PROPERTY

    ledger = Ledger(tmp_path)
    ledger.start(ReleaseContext(run_id="r", version="v2", strategy="blue-green", target="local"))
    reason = "interrupted by SIGTERM during load"
    ledger.abort(reason)
    reporter = ReleaseReporter(ReleaseOptions(version="v2", strategy="blue-green", target="local", dry_run=False,
                                              run_id="r"), ledger)
    properties = [("release.stage", "load"), (INTERRUPTED_PROPERTY, reason)]
    reporter.add(pytest.TestReport("suites/load/test_load.py::test_load", ("f", 1, "t"), {}, "failed",
                                   f"InterruptedBySignal: {reason}", "call", user_properties=properties))
    [outcome] = reporter.outcomes.values()
    assert (outcome.outcome.value, outcome.message) == ("error", reason)  # not a failed check
    assert reporter.summary(2)["reason"] == reason  # not "load failed: ..."
    assert reporter.exit_code(0) == ExitCode.INTERRUPTED
    ledger.update_context(decision=Decision.ROLLED_BACK, cleanup_problem="could not undo the release: timeout")
    assert reporter.exit_code(0) == ExitCode.INTERNAL_ERROR  # "traffic was put back" would not be true


def test_an_interrupt_after_finalize_scaled_the_old_slot_down_never_sends_users_to_it(tmp_path: Path) -> None:
    """The moment between finalize's scale-down and its decision: undoing would move every user to a slot that
    serves nobody. Traffic stays on the new version (it passed every check) and the stop says so (exit 3)."""
    from tests.test_plugin_units import FakeTarget, _controller

    class ScaledDown(FakeTarget):
        def scale_down(self, slot: str) -> None:
            super().scale_down(slot)
            self.versions[slot] = None  # no pod of the old version is left

        def workload_status(self, slot: str) -> Any:
            status = super().workload_status(slot)
            return status if self.versions[slot] else type(status)(slot=slot, version=None, replicas=0,
                                                                    ready_replicas=0)

    target = ScaledDown()
    controller, _ = _controller(tmp_path, target)
    for stage in ("preflight", "provision", "switch"):
        controller.run(stage)
    target.scale_down("blue")  # what finalize did just before the signal
    problem = controller.emergency_stop("interrupted by SIGTERM during finalize")
    assert problem is not None and "slot blue is already scaled down, so traffic stays on v2" in problem
    assert target.traffic.single_slot == "green"
