"""The release lock is kept while a release runs, and lost fail-closed.

Unit tests drive the LockKeeper with a fake clock (no thread, no sleep) and the release controller with a
fake target at our own boundary. End-to-end tests run a release whose load stage lasts 30 s with a lock
TTL of 10 s, on the local target and on the fake API server, and start a second release in the middle.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from releasegate.core.config import parse_config
from releasegate.core.errors import LockLostError, TargetError
from releasegate.core.target import Target
from releasegate.core.types import (
    LiveState,
    LockHolder,
    MetricsScope,
    Promotion,
    ReleaseState,
    SwitchResult,
    TrafficSplit,
)
from releasegate.plugins import controller as controller_module
from releasegate.plugins.controller import ReleaseController
from releasegate.plugins.ledger import Ledger, ReleaseContext
from releasegate.plugins.lock_keeper import LockKeeper
from releasegate.plugins.options import ReleaseOptions
from tests.kube_cluster import ProcessCluster, process_cluster
from tests.local_cluster import TEST_PROFILES
from tests.release_project import BASE_CONFIG, ReleaseProject
from tests.waiting import wait_until

HOLDER = LockHolder(run_id="run-a", version="v2", host="build-7", pid=4242)


# -- the keeper, on a fake clock ------------------------------------------------------------------------

class FakeTime:
    """A monotonic clock that moves only when the keeper waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def waiting_until(self, stop: Callable[[], bool]) -> Callable[[float], bool]:
        def wait(seconds: float) -> bool:
            self.waits.append(seconds)
            self.now += seconds
            return stop()

        return wait


class RenewingTarget:
    """renew_lock at our boundary: each call takes the next outcome (an exception) or succeeds."""

    def __init__(self, time_: FakeTime | None = None, outcomes: list[Exception] | None = None) -> None:
        self.time = time_
        self.outcomes = list(outcomes or [])
        self.attempts: list[float] = []
        self.renewals: list[float] = []

    def renew_lock(self, holder: LockHolder, ttl_s: float) -> None:
        now = self.time.now if self.time is not None else time.monotonic()
        self.attempts.append(now)
        if self.outcomes:
            raise self.outcomes.pop(0)
        self.renewals.append(now)


def keeper_for(target: RenewingTarget, fake: FakeTime, *, ttl_s: float = 9, stop: Callable[[], bool] = lambda: False,
               on_lost: Callable[[str], None] | None = None, **kwargs: Any) -> LockKeeper:
    return LockKeeper(cast(Target, target), HOLDER, ttl_s, on_lost=on_lost or (lambda reason: None),
                      clock=fake.clock, wait=fake.waiting_until(stop), **kwargs)


def test_the_keeper_renews_every_third_of_the_ttl() -> None:
    fake = FakeTime()
    target = RenewingTarget(fake)
    keeper = keeper_for(target, fake, ttl_s=9, stop=lambda: len(target.renewals) >= 4)
    keeper.run()
    assert target.renewals == [3.0, 6.0, 9.0, 12.0]
    assert fake.waits == [3.0, 3.0, 3.0, 3.0, 3.0]
    assert keeper.lost is None and keeper.renewals == 4
    assert keeper.expires_at == 12.0 + 9  # counted from before the last renewal request


def test_failed_renewals_are_retried_and_a_late_success_keeps_the_lock(tmp_path: Path) -> None:
    fake = FakeTime()
    target = RenewingTarget(fake, [TargetError("API server unreachable"), OSError("connection reset")])
    ledger = Ledger(tmp_path)
    keeper = keeper_for(target, fake, ttl_s=9, retry_s=1, stop=lambda: len(target.renewals) >= 2,
                        on_lost=ledger.abort)
    keeper.run()
    assert target.attempts == [3.0, 4.0, 5.0, 8.0]
    assert target.renewals == [5.0, 8.0]
    assert keeper.lost is None and ledger.aborted() is None and keeper.last_error is None


def test_a_lock_that_cannot_be_renewed_before_it_expires_is_lost_and_aborts(tmp_path: Path) -> None:
    fake = FakeTime()
    target = RenewingTarget(fake, [TargetError("API server unreachable")] * 100)
    ledger = Ledger(tmp_path)
    keeper = keeper_for(target, fake, ttl_s=9, retry_s=1,
                        on_lost=lambda reason: ledger.abort(f"release lock lost: {reason}"))
    keeper.run()  # returns by itself once the lock is lost
    assert target.attempts == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert fake.now == 9.0  # the first instant the lock may have expired, not a moment later
    assert keeper.lost == ("run run-a could not renew its release lock within the lock's TTL of 9s (last error: "
                           "TargetError: API server unreachable); another release may hold it now")
    assert ledger.aborted() == f"release lock lost: {keeper.lost}"


def test_a_lock_taken_over_is_lost_at_once(tmp_path: Path) -> None:
    fake = FakeTime()
    taken = LockLostError("lease shop/demo-release was taken over by run-b (version v3, host build-8, pid 99) "
                          "until 2026-12-02 03:00:10 UTC (10s left): run run-a no longer holds the release lock")
    target = RenewingTarget(fake, [taken])
    ledger = Ledger(tmp_path)
    keeper = keeper_for(target, fake, on_lost=ledger.abort)
    keeper.run()
    assert target.attempts == [3.0]
    assert keeper.lost == str(taken) and ledger.aborted() == str(taken)


def test_a_loss_seen_while_stopping_does_not_abort(tmp_path: Path) -> None:
    # The controller stops the keeper before it releases the lock: what happens to the lock then is not a loss.
    fake = FakeTime()
    ledger = Ledger(tmp_path)
    keeper: LockKeeper | None = None

    class ReleasedMeanwhile(RenewingTarget):
        def renew_lock(self, holder: LockHolder, ttl_s: float) -> None:
            assert keeper is not None
            keeper.stop()
            raise LockLostError("the release lock of demo was released: run run-a no longer holds it")

    keeper = keeper_for(ReleasedMeanwhile(fake), fake, on_lost=ledger.abort)
    keeper.run()
    assert keeper.lost is None and ledger.aborted() is None


def frozen_clock() -> float:
    """For keepers on a real thread: their lock never expires however slowly the thread is scheduled."""
    return 0.0


def test_stop_stops_the_thread() -> None:
    target = RenewingTarget()
    keeper = LockKeeper(cast(Target, target), HOLDER, ttl_s=0.03, on_lost=lambda reason: None,
                        clock=frozen_clock).start()
    wait_until(lambda: len(target.renewals) >= 3, timeout_s=10, what="three renewals")
    keeper.stop()
    assert not keeper.running
    renewals = len(target.renewals)
    assert keeper.renewals == renewals and keeper.lost is None
    # A keeper waiting for its next renewal stops at once, not after its interval.
    idle = LockKeeper(cast(Target, RenewingTarget()), HOLDER, ttl_s=3600, on_lost=lambda reason: None,
                      clock=frozen_clock).start()
    started = time.monotonic()
    idle.stop()
    assert not idle.running and time.monotonic() - started < 5 and idle.renewals == 0


# -- the controller: renews while it runs, moves no traffic once the lock is lost ------------------------

class LockTarget:
    """The Target protocol at our boundary, for the controller's lock handling only."""

    name = "fake"

    def __init__(self, renew_error: Exception | None = None) -> None:
        self.renew_error = renew_error
        self.events: list[str] = []

    def prepare_image(self, version: str) -> None:
        pass

    def live_state(self) -> LiveState:
        return LiveState(app="demo", traffic=TrafficSplit.all_to("blue"), versions={"blue": "v1", "green": None})

    def read_release_state(self) -> ReleaseState | None:
        return None

    def metrics_scope(self) -> MetricsScope:
        return MetricsScope(prometheus_url="http://prometheus.invalid", app="demo")

    def describe(self) -> str:
        return "a fake target"

    def acquire_lock(self, holder: LockHolder, ttl_s: float) -> None:
        self.events.append(f"acquire {holder.run_id} {holder.version} {holder.pid} {ttl_s:g}")

    def renew_lock(self, holder: LockHolder, ttl_s: float) -> None:
        self.events.append("renew")
        if self.renew_error is not None:
            raise self.renew_error

    def release_lock(self, holder: LockHolder) -> None:
        self.events.append(f"release {holder.run_id}")

    def record_release_state(self, state: ReleaseState) -> None:
        pass

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        self.events.append("set_traffic")
        return SwitchResult(traffic=split, previous=TrafficSplit.all_to("blue"), converged_ms=1.0)

    def exposes_candidate_at_provision(self) -> bool:

        return False


    def candidate_slot(self, live_slot: str | None) -> str:
        return "green"

    def promote(self, slot: str, version: str) -> Promotion:
        return Promotion(switch=self.set_traffic(TrafficSplit.all_to(slot)), live_slot=slot, retired_slot="blue")

    def scale_down(self, slot: str) -> None:
        self.events.append("scale_down")

    def close(self) -> None:
        self.events.append("close")


class ReachablePrometheus:
    """The controller's Prometheus checks, always satisfied: these tests are about the lock."""

    def check_reachable(self, url: str) -> None:
        pass

    def wait_until_scraped(self, scope: object, version: str, replicas: int) -> None:
        pass


def controller_for(tmp_path: Path, target: LockTarget, monkeypatch: pytest.MonkeyPatch) -> ReleaseController:
    config = parse_config({"release": {"lock_ttl_s": 0.3, "keep_warm_s": 0}}, source="test config",
                          base_dir=tmp_path, project_root=tmp_path)
    options = ReleaseOptions(version="v2", strategy="blue-green", target="fake", dry_run=False, run_id="run-a")
    ledger = Ledger(tmp_path / "ledger")
    ledger.start(ReleaseContext(run_id="run-a", version="v2", strategy="blue-green", target="fake"))
    controller = ReleaseController(config, options, ledger, target_factory=lambda config, kind: cast(Target, target),
                                   prometheus=ReachablePrometheus())
    # The controller's keeper renews on its thread every 0.1 s; its lock must not expire on a busy machine.
    monkeypatch.setattr(controller_module, "LockKeeper", functools.partial(LockKeeper, clock=frozen_clock))
    return controller


def test_the_controller_renews_the_lock_until_it_releases_it(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = LockTarget()
    controller = controller_for(tmp_path, target, monkeypatch)
    controller.preflight()
    assert target.events[0] == f"acquire run-a v2 {controller.lock_holder.pid} 0.3"
    assert controller.lock_holder == LockHolder.this_process("run-a", "v2")
    wait_until(lambda: target.events.count("renew") >= 3, timeout_s=10, what="three renewals (every 0.1 s)")
    controller.close()
    assert controller.lock_keeper is not None and not controller.lock_keeper.running
    assert target.events[-2:] == ["release run-a", "close"]  # no renewal after the release
    assert controller.ledger.aborted() is None


def test_the_controller_moves_no_traffic_once_the_lock_is_lost(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    taken = "lease shop/demo-release was taken over by run-b: run run-a no longer holds the release lock"
    target = LockTarget(renew_error=LockLostError(taken))
    controller = controller_for(tmp_path, target, monkeypatch)
    controller.preflight()
    keeper = controller.lock_keeper
    assert keeper is not None
    wait_until(lambda: keeper.lost, timeout_s=60, what="the keeper to see the lock lost")
    assert controller.ledger.aborted() == f"release lock lost: {taken}"
    controller.provisioned = True
    with pytest.raises(TargetError, match=f"^the release lock was lost, so traffic stays where it is: {taken}$"):
        controller.switch()
    with pytest.raises(TargetError, match=r"lock (was )?lost"):  # refused before the old version is scaled down
        controller.finalize()
    assert "set_traffic" not in target.events and "scale_down" not in target.events
    controller.close()


# -- end to end: TTL 10 s, a load stage of 30 s, a second release in the middle --------------------------

TTL_S = 10
LOAD_S = 30

LOAD_SUITE = """
import pathlib, time

def test_the_load_stage_runs(candidate):
    started = time.monotonic()
    pathlib.Path({started!r}).write_text(str(time.time()))
    deadline = started + 180
    # Runs at least {load_s} s, and until the outer test has seen the second release refused.
    while not (pathlib.Path({go!r}).exists() and time.monotonic() - started >= {load_s}):
        assert time.monotonic() < deadline, "the outer test never let the load stage finish"
        time.sleep(0.1)
"""

HELD_MESSAGE = (r"another release of demo is in progress: {lock} held by {run_id} \(version v2, host {host}, pid "
                r"{pid}\) until (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \((\d+)s left\) unless renewed; wait for it "
                r"to finish, or for the lock to expire if that release died")


def write_load_suite(project: ReleaseProject, load_s: float = LOAD_S) -> tuple[Path, Path]:
    started, go = project.path / "load-started", project.path / "load-may-finish"
    project.write_suite("load/test_hold.py", LOAD_SUITE.format(started=str(started), go=str(go), load_s=load_s))
    return started, go


def start_release(project: ReleaseProject, version: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pytest", "--release", version], cwd=project.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, output


def assert_refused(project: ReleaseProject, *, lock: str, run_id: str, pid: int) -> str:
    """The second release: exit 4, one line naming version, host, pid and expiry of the first."""
    before = time.time()
    second = project.release("--release", "v3")
    after = time.time()
    assert second.ret == 4, second.stdout.str()
    text = project.junit().case("preflight")["text"]  # the whole line (the message attribute may be cut)
    pattern = HELD_MESSAGE.format(lock=lock, run_id=re.escape(run_id), host=re.escape(socket.gethostname()),
                                  pid=pid)
    match = re.search(pattern, text)
    assert match is not None, text
    # The expiry was read while the second release ran, from a lock renewed every TTL/3 (whole seconds shown).
    until = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    left = int(match.group(2))
    assert before - 1 <= until <= after + TTL_S and 0 < left <= TTL_S
    assert before - 2 <= until - left <= after + 1
    return match.group(0)


@pytest.mark.slow
def test_a_long_release_keeps_its_lock_on_the_local_target(project: ReleaseProject) -> None:
    (project.path / "releasegate.toml").write_text(BASE_CONFIG.replace("lock_ttl_s = 120", f"lock_ttl_s = {TTL_S}"))
    project.minimal_suites()
    started, go = write_load_suite(project)
    project.start_background_cluster()
    first = start_release(project, "v2")
    try:
        wait_until(started.exists, timeout_s=120, what="the first release's load stage to start")

        def renewed_past_its_first_expiry() -> dict[str, Any] | None:
            lease = project.cluster_state()["lease"]
            assert lease is not None, "the first release lost its lock"
            return lease if lease["renewed_at"] > lease["acquired_at"] + TTL_S else None

        # Without renewal the lock would have expired by now, and the second release would take it over.
        lease = wait_until(renewed_past_its_first_expiry, timeout_s=120, what="a renewal past the TTL")
        assert not lease["expired"]
        message = assert_refused(project, lock="lock", run_id=lease["holder"], pid=first.pid)
        state = project.cluster_state()
        assert state["lease"]["holder"] == lease["holder"] and state["traffic"] == {"blue": 100}
        go.write_text("go")
        code, output = finish(first)
    finally:
        go.write_text("go")
        if first.poll() is None:
            first.kill()
    assert code == 0, output
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    held_s = float(junit.suite_properties["release.phase.load_s"])
    assert held_s >= LOAD_S
    state = project.cluster_state()
    assert state["traffic"] == {"green": 100} and state["lease"] is None
    print(f"\nlocal: TTL {TTL_S}s, load stage {held_s:.1f}s, lock kept; second release refused: {message}")


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    with process_cluster(workdir, profiles=profiles, namespace="shop", app="demo") as cluster:
        yield cluster


@pytest.mark.slow
def test_a_long_release_keeps_its_lease_on_the_fake_api_server(project: ReleaseProject,
                                                               cluster: ProcessCluster) -> None:
    config = cluster.config_toml().replace("keep_warm_s = 0.5\n", f"keep_warm_s = 0.5\nlock_ttl_s = {TTL_S}\n")
    assert f"lock_ttl_s = {TTL_S}" in config
    (project.path / "releasegate.toml").write_text(config)
    project.minimal_suites()
    started, go = write_load_suite(project)
    cluster.fake.clear_requests()

    def lease() -> dict[str, Any]:
        obj = cluster.fake.get_object("leases", "shop", "demo-release")
        assert obj is not None
        return obj

    first = start_release(project, "v2")
    try:
        wait_until(started.exists, timeout_s=120, what="the first release's load stage to start")

        def renewed_past_its_first_expiry() -> dict[str, Any] | None:
            spec = lease()["spec"]
            assert spec.get("holderIdentity"), "the first release lost its lease"
            acquired = datetime.fromisoformat(spec["acquireTime"]).timestamp()
            return spec if datetime.fromisoformat(spec["renewTime"]).timestamp() > acquired + TTL_S else None

        spec = wait_until(renewed_past_its_first_expiry, timeout_s=120, what="a renewal past the TTL")
        annotations = lease()["metadata"]["annotations"]
        assert annotations["releasegate.io/holder-version"] == "v2"
        assert annotations["releasegate.io/holder-pid"] == str(first.pid)
        assert annotations["releasegate.io/holder-host"] == socket.gethostname()
        message = assert_refused(project, lock="lease shop/demo-release is", run_id=spec["holderIdentity"],
                                 pid=first.pid)
        assert lease()["spec"]["holderIdentity"] == spec["holderIdentity"]
        service = cluster.fake.get_object("services", "shop", "demo")
        assert service is not None and service["spec"]["selector"]["slot"] == "blue"
        go.write_text("go")
        code, output = finish(first)
    finally:
        go.write_text("go")
        if first.poll() is None:
            first.kill()
    assert code == 0, output
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    held_s = float(junit.suite_properties["release.phase.load_s"])
    assert held_s >= LOAD_S
    assert "holderIdentity" not in lease()["spec"]  # released at the end
    writes = [r for r in cluster.fake.write_requests() if "/leases" in r.path]
    assert writes and all(r.status < 300 for r in writes)
    renewals = [r for r in writes if r.method == "PUT" and r.json()["spec"].get("holderIdentity")]
    assert len(renewals) >= LOAD_S // (TTL_S / 3) - 1
    print(f"\nkubernetes: TTL {TTL_S}s, load stage {held_s:.1f}s, {len(renewals)} renewals of the Lease, "
          f"{len(writes)} Lease writes, none refused; second release refused: {message}")


@pytest.mark.slow
def test_a_release_whose_lock_is_lost_stops_and_rolls_back(project: ReleaseProject) -> None:
    (project.path / "releasegate.toml").write_text(BASE_CONFIG.replace("lock_ttl_s = 120", f"lock_ttl_s = {TTL_S}"))
    project.minimal_suites()
    started, go = write_load_suite(project, load_s=0)
    project.start_background_cluster()
    first = start_release(project, "v2")
    try:
        wait_until(started.exists, timeout_s=120, what="the first release's load stage to start")
        run_id = project.cluster_state()["lease"]["holder"]
        # Someone removes the lock under the running release (an operator, a cleanup job): its next
        # renewal finds it gone, and the release stops instead of switching without a lock.
        project.client().call("POST", "/lease/release", {"holder": run_id})
        abort = project.path / ".releasegate" / "runs" / run_id / "abort.json"
        wait_until(abort.exists, timeout_s=60, what="the keeper to abort the release")
        go.write_text("go")
        code, output = finish(first)
    finally:
        go.write_text("go")
        if first.poll() is None:
            first.kill()
    assert code == 2, output  # stopped, traffic left on the verified version
    junit = project.junit()
    reason = (f"release stopped: release lock lost: the release lock of demo was released: run {run_id} no longer "
              "holds it")
    for skipped in ("test_analysis_sees_the_right_versions", "switch", "finalize"):
        assert junit.case(skipped)["outcome"] == "skipped"
        assert junit.case(skipped)["message"] == reason
    assert junit.case("rollback")["outcome"] == "passed"
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100} and state["slots"]["green"]["pods"] == []
    assert state["release_state"]["phase"] == "rolled-back" and state["lease"] is None
