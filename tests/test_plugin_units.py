"""Fast unit tests of the release logic, with fakes at our own boundary (as pytest-xdist tests its
DSession with mock nodes): stage ordering, the xdist scheduler, the exit code, the controller's sequence.

The end-to-end tests (test_release_plugin.py and others) run the same logic through real releases.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from releasegate.core.config import parse_config
from releasegate.core.errors import ExitCode, LockHeldError, NotReadyError
from releasegate.core.target import Target
from releasegate.core.types import (
    Endpoint,
    LiveState,
    LockHolder,
    MetricsScope,
    Promotion,
    ReleaseState,
    Role,
    Slot,
    SwitchResult,
    TrafficSplit,
    WorkloadStatus,
    other_slot,
)
from releasegate.plugins.controller import ReleaseController
from releasegate.plugins.items import INDEX_KEY, STAGE_KEY, ActionItem, order_items
from releasegate.plugins.ledger import Decision, ItemRecord, Ledger, Outcome, ReleaseContext
from releasegate.plugins.options import ReleaseOptions
from releasegate.plugins.prometheus_gate import await_first_scrape
from releasegate.plugins.reporting import ReleaseReporter
from releasegate.plugins.scheduler import StageScheduling
from releasegate.plugins.stages import blue_green_stages

# -- stage ordering ------------------------------------------------------------------------------------


def _suites(pytester: pytest.Pytester, files: dict[str, str]) -> tuple[pytest.Session, list[pytest.Item]]:
    for relative, source in files.items():
        path = pytester.path / "suites" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    items, _ = pytester.inline_genitems(str(pytester.path / "suites"), "-p", "no:cacheprovider")
    return items[0].session, items


def _never_run(item: ActionItem) -> None:
    raise AssertionError("ordering never runs an action")


def test_items_run_in_stage_order_with_the_actions_between_the_stages(pytester: pytest.Pytester) -> None:
    session, items = _suites(pytester, {
        "post_switch/test_after.py": "def test_after(): pass\n",
        "analysis/test_slo.py": "def test_slo(): pass\ndef test_compare(): pass\n",
        "smoke/test_smoke.py": "def test_smoke(): pass\n",
    })
    ordered, counts = order_items(session, items, blue_green_stages(), pytester.path / "suites", _never_run)
    assert [item.name for item in ordered] == [
        "preflight", "provision", "test_smoke", "test_slo", "test_compare", "switch", "test_after",
        "finalize", "rollback"]
    assert [item.stash[INDEX_KEY] for item in ordered] == list(range(9))
    assert ordered[0].nodeid == "release::preflight"
    assert counts == {"smoke": 1, "load": 0, "analysis": 2, "post_switch": 1}


def test_the_marker_moves_a_test_and_a_test_in_no_stage_is_a_usage_error(pytester: pytest.Pytester) -> None:
    session, items = _suites(pytester, {
        "smoke/test_smoke.py": """
            import pytest

            @pytest.mark.stage("post_switch")
            def test_marked(): pass
            def test_plain(): pass
        """,
    })
    ordered, _ = order_items(session, items, blue_green_stages(), pytester.path / "suites", _never_run)
    assert {item.name: item.stash[STAGE_KEY].name for item in ordered if not isinstance(item, ActionItem)} == {
        "test_marked": "post_switch", "test_plain": "smoke"}

    session, items = _suites(pytester, {"test_loose.py": "def test_loose(): pass\n"})
    with pytest.raises(pytest.UsageError, match=r"belong to no stage, e.g. suites/test_loose.py::test_loose"):
        order_items(session, items, blue_green_stages(), pytester.path / "suites", _never_run)


# -- the xdist scheduler with mock nodes ----------------------------------------------------------------


@dataclass
class MockGateway:
    id: str


@dataclass(eq=False)  # hashable by identity, as the scheduler keys its dicts by node
class MockNode:
    """What StageScheduling uses of an xdist WorkerController."""

    gateway: MockGateway
    sent: list[int] = field(default_factory=list)
    shut_down: bool = False

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.shut_down
        self.sent += indices

    def shutdown(self) -> None:
        self.shut_down = True


COLLECTION = ["release::preflight", "release::provision", "suites/smoke/test_a.py::test_1",
              "suites/smoke/test_a.py::test_2", "suites/analysis/test_b.py::test_3", "release::switch",
              "suites/post_switch/test_c.py::test_4", "release::finalize", "release::rollback"]


def _started(pytester: pytest.Pytester, tmp_path: Path) -> tuple[StageScheduling, list[MockNode], Ledger]:
    """A scheduler for two workers that have started and not collected yet."""
    ledger = Ledger(tmp_path / "ledger")
    scheduler = StageScheduling(pytester.parseconfig("--tx=2*popen"), ledger)
    nodes = [MockNode(MockGateway("gw0")), MockNode(MockGateway("gw1"))]
    for node in nodes:
        scheduler.add_node(node)
    return scheduler, nodes, ledger


def _scheduler(pytester: pytest.Pytester, tmp_path: Path) -> tuple[StageScheduling, list[MockNode], Ledger]:
    scheduler, nodes, ledger = _started(pytester, tmp_path)
    for node in nodes:
        scheduler.add_node_collection(node, COLLECTION)
    return scheduler, nodes, ledger


def test_every_action_goes_to_one_worker_and_the_tests_are_spread(pytester: pytest.Pytester,
                                                                   tmp_path: Path) -> None:
    scheduler, (gw0, gw1), ledger = _scheduler(pytester, tmp_path)
    assert scheduler.collection_is_completed
    scheduler.schedule()
    actions = [i for i, nodeid in enumerate(COLLECTION) if nodeid.startswith("release::")]
    assert set(actions) <= set(gw0.sent)
    assert not set(actions) & set(gw1.sent)
    assert sorted(gw0.sent + gw1.sent) == list(range(len(COLLECTION)))  # each item exactly once
    assert gw0.sent == sorted(gw0.sent) and gw1.sent == sorted(gw1.sent)  # in stage order
    assert gw1.sent  # verification really is spread
    assert gw0.shut_down and gw1.shut_down  # all at once: a worker holds its last item until shutdown
    assert not scheduler.tests_finished
    for node in (gw0, gw1):
        for index in list(node.sent):
            scheduler.mark_test_complete(node, index)
    assert scheduler.tests_finished
    assert ledger.aborted() is None


def test_the_first_worker_to_collect_starts_the_actions_before_the_others_have_collected(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    scheduler, (gw0, gw1), ledger = _started(pytester, tmp_path)
    assert not scheduler.collection_is_completed
    scheduler.add_node_collection(gw1, COLLECTION)  # gw1 is faster: preflight and provision start on it now
    assert scheduler.collection_is_completed
    scheduler.schedule()
    actions = [i for i, nodeid in enumerate(COLLECTION) if nodeid.startswith("release::")]
    assert set(actions) <= set(gw1.sent) and gw1.shut_down
    assert gw0.sent == [] and not gw0.shut_down
    for index in list(gw1.sent):  # gw1 done before gw0 collected: the run is not finished
        scheduler.mark_test_complete(gw1, index)
    assert not scheduler.tests_finished
    scheduler.add_node_collection(gw0, COLLECTION)
    scheduler.schedule()
    assert gw0.sent and gw0.shut_down and not set(actions) & set(gw0.sent)
    assert sorted(gw0.sent + gw1.sent) == list(range(len(COLLECTION)))  # each item exactly once
    for index in list(gw0.sent):
        scheduler.mark_test_complete(gw0, index)
    assert scheduler.tests_finished and ledger.aborted() is None


def test_a_worker_that_dies_before_it_collected_aborts_the_release(pytester: pytest.Pytester,
                                                                   tmp_path: Path) -> None:
    scheduler, (gw0, gw1), ledger = _started(pytester, tmp_path)
    scheduler.add_node_collection(gw0, COLLECTION)
    scheduler.schedule()
    assert scheduler.remove_node(gw1) is None
    assert ledger.aborted() == "worker gw1 died before it collected the items"
    for index in list(gw0.sent):  # its share never runs; the run ends once the rest has
        scheduler.mark_test_complete(gw0, index)
    assert scheduler.tests_finished


def test_a_worker_that_dies_with_items_pending_aborts_the_release(pytester: pytest.Pytester,
                                                                  tmp_path: Path) -> None:
    scheduler, (_, gw1), ledger = _scheduler(pytester, tmp_path)
    scheduler.schedule()
    crashed = scheduler.remove_node(gw1)
    assert crashed == COLLECTION[gw1.sent[0]]
    assert ledger.aborted() == f"worker gw1 died while running {crashed}"


def test_workers_that_collected_different_items_abort_the_release(pytester: pytest.Pytester,
                                                                   tmp_path: Path) -> None:
    scheduler, (gw0, gw1), ledger = _started(pytester, tmp_path)
    scheduler.add_node_collection(gw0, COLLECTION)
    scheduler.add_node_collection(gw1, COLLECTION[:-1])
    scheduler.schedule()
    assert ledger.aborted() == "xdist workers collected different items"


# -- the exit code --------------------------------------------------------------------------------------


def _options(*, dry_run: bool = False) -> ReleaseOptions:
    return ReleaseOptions(version="v2", strategy="blue-green", target="fake", dry_run=dry_run, run_id="run-a")


def _ledger(tmp_path: Path, **context: Any) -> Ledger:
    ledger = Ledger(tmp_path / "ledger")
    ledger.start(ReleaseContext(run_id="run-a", version="v2", strategy="blue-green", target="fake"))
    if context:
        ledger.update_context(**context)
    return ledger


def _report(nodeid: str, outcome: str = "passed", when: str = "call") -> pytest.TestReport:
    longrepr: Any = ("file", 1, "Skipped: why") if outcome == "skipped" else (
        "failure text" if outcome == "failed" else None)
    return pytest.TestReport(nodeid, ("file", 1, nodeid), {}, outcome, longrepr, when,  # type: ignore[arg-type]
                             user_properties=[("release.stage", "smoke")])


def _reporter(tmp_path: Path, reports: list[pytest.TestReport], *, dry_run: bool = False,
              **context: Any) -> ReleaseReporter:
    reporter = ReleaseReporter(_options(dry_run=dry_run), _ledger(tmp_path, **context))
    for report in reports:
        reporter.add(report)
    return reporter


@pytest.mark.parametrize(("reports", "context", "pytest_status", "expected"), [
    ([_report("t::ok"), _report("release::rollback", "skipped")], {"decision": Decision.PROMOTED}, 0,
     ExitCode.PROMOTED),
    ([_report("t::ok"), _report("t::bad", "failed")], {"decision": Decision.ROLLED_BACK}, 1,
     ExitCode.VERIFICATION_FAILED),
    ([_report("t::ok"), _report("t::fixture", "failed", when="setup")], {"decision": Decision.ROLLED_BACK}, 1,
     ExitCode.VERIFICATION_FAILED),
    ([_report("t::bad", "failed"), _report("release::rollback", "failed")], {}, 1, ExitCode.INTERNAL_ERROR),
    ([_report("t::ok")], {"usage_error": "1 test(s) belong to no stage"}, 4, ExitCode.USAGE_ERROR),
    ([_report("t::ok")], {}, 2, ExitCode.INTERRUPTED),
    ([_report("release::preflight")], {}, 0, ExitCode.NO_VERIFICATION),  # no verification passed
    ([_report("t::ok")], {}, 0, ExitCode.NO_VERIFICATION),  # passed, but nothing promoted it
], ids=["promoted", "failed", "fixture-error", "rollback-failed", "usage-error", "interrupted",
        "only-actions", "not-promoted"])
def test_exit_codes(tmp_path: Path, reports: list[pytest.TestReport], context: dict[str, Any],
                    pytest_status: int, expected: ExitCode) -> None:
    assert _reporter(tmp_path, reports, **context).exit_code(pytest_status) == expected


def test_an_abort_in_the_ledger_is_an_interrupt_whatever_pytest_says(tmp_path: Path) -> None:
    reporter = _reporter(tmp_path, [_report("t::ok")], decision=Decision.ROLLED_BACK)
    reporter.ledger.abort("release lock lost: taken over by run-b")
    assert reporter.exit_code(0) == ExitCode.INTERRUPTED


def test_a_dry_run_that_verified_exits_0_and_reports_not_promoted(tmp_path: Path) -> None:
    reporter = _reporter(tmp_path, [_report("t::ok")], dry_run=True, decision=Decision.NOT_PROMOTED)
    assert reporter.exit_code(0) == ExitCode.PROMOTED
    assert reporter.summary(0)["decision"] == "not-promoted"


def test_the_summary_says_why_the_first_failure_stopped_the_release(tmp_path: Path) -> None:
    reports = [_report("t::ok"), _report("t::bad", "failed"), _report("t::later", "skipped")]
    summary = _reporter(tmp_path, reports, decision=Decision.ROLLED_BACK, previous_version="v1").summary(1)
    assert summary["reason"] == "smoke failed: failure text"
    assert [t["outcome"] for t in summary["tests"]] == ["passed", "failed", "skipped"]
    assert (summary["previous"], summary["decision"], summary["exit_code"]) == ("v1", "rolled-back", 1)


# -- the controller's sequence against a fake target ----------------------------------------------------


class FakeTarget:
    """The Target protocol in memory: blue serves v1; every call is recorded."""

    name = "fake"

    def __init__(self, *, ready: bool = True, lock_holder: str | None = None) -> None:
        self.calls: list[str] = []
        self.traffic = TrafficSplit.all_to("blue")
        self.versions: dict[Slot, str | None] = {"blue": "v1", "green": None}
        self.ready = ready
        self.lock_holder = lock_holder
        self.states: list[str] = []

    def describe(self) -> str:
        return "fake cluster"

    def live_state(self) -> LiveState:
        return LiveState(app="demo", traffic=self.traffic, versions=dict(self.versions))

    def workload_status(self, slot: Slot) -> WorkloadStatus:
        return WorkloadStatus(slot=slot, version=self.versions[slot], replicas=2, ready_replicas=2)

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        live = self.traffic.single_slot
        result = {Role.SERVICE: Endpoint(Role.SERVICE, "http://service", live, self.versions.get(live or ""))}
        if live:
            result[Role.BASELINE] = Endpoint(Role.BASELINE, f"http://{live}", live, self.versions[live])
        if candidate_slot:
            result[Role.CANDIDATE] = Endpoint(Role.CANDIDATE, f"http://{candidate_slot}", candidate_slot,
                                              self.versions[candidate_slot])
        return result

    def metrics_scope(self) -> MetricsScope:
        return MetricsScope(prometheus_url="http://prometheus", app="demo")

    def read_release_state(self) -> ReleaseState | None:
        return None

    def prepare_image(self, version: str) -> None:
        self.calls.append(f"prepare_image {version}")

    def acquire_lock(self, holder: LockHolder, ttl_s: float) -> None:
        if self.lock_holder and self.lock_holder != holder.run_id:
            raise LockHeldError(f"lock held by {self.lock_holder}")
        self.lock_holder = holder.run_id
        self.calls.append("acquire_lock")

    def renew_lock(self, holder: LockHolder, ttl_s: float) -> None:
        pass

    def release_lock(self, holder: LockHolder) -> None:
        if self.lock_holder == holder.run_id:
            self.lock_holder = None
            self.calls.append("release_lock")

    def record_release_state(self, state: ReleaseState) -> None:
        self.states.append(state.phase.value)

    def deploy(self, slot: Slot, version: str) -> None:
        self.versions[slot] = version
        self.calls.append(f"deploy {slot} {version}")

    def wait_ready(self, slot: Slot, timeout_s: float) -> WorkloadStatus:
        self.calls.append(f"wait_ready {slot}")
        if not self.ready:
            raise NotReadyError(f"slot {slot} not ready: readiness probe failing")
        return self.workload_status(slot)

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        previous, self.traffic = self.traffic, split
        self.calls.append(f"set_traffic {split.describe()}")
        return SwitchResult(traffic=split, previous=previous, converged_ms=1.0)

    def exposes_candidate_at_provision(self) -> bool:

        return False


    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        return other_slot(live_slot) if live_slot else "blue"

    def promote(self, slot: Slot, version: str) -> Promotion:
        return Promotion(switch=self.set_traffic(TrafficSplit.all_to(slot)), live_slot=slot,
                         retired_slot=other_slot(slot))

    def remove(self, slot: Slot) -> None:
        self.versions[slot] = None
        self.calls.append(f"remove {slot}")

    def scale_down(self, slot: Slot) -> None:
        self.calls.append(f"scale_down {slot}")

    def close(self) -> None:
        self.calls.append("close")


class ExposedAtProvision(FakeTarget):
    def exposes_candidate_at_provision(self) -> bool:
        return True


class FakePrometheus:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def check_reachable(self, url: str) -> None:
        self.asked.append(f"reachable {url}")

    def wait_until_scraped(self, scope: MetricsScope, version: str, replicas: int) -> None:
        self.asked.append(f"scraped {version} x{replicas}")


def _controller(tmp_path: Path, target: FakeTarget) -> tuple[ReleaseController, FakePrometheus]:
    # No version header: the switch confirmation (real HTTP requests) is off for this fake.
    config = parse_config({"release": {"keep_warm_s": 0, "version_header": ""}}, source="test config",
                          base_dir=tmp_path, project_root=tmp_path)
    prometheus = FakePrometheus()
    controller = ReleaseController(config, _options(), _ledger(tmp_path),
                                   target_factory=lambda config, kind: cast(Target, target), prometheus=prometheus)
    return controller, prometheus


def test_a_good_release_acts_once_per_stage_in_order(tmp_path: Path) -> None:
    target = FakeTarget()
    controller, prometheus = _controller(tmp_path, target)
    for stage in ("preflight", "provision", "switch", "finalize"):
        controller.run(stage)
    assert controller.rollback([]).skipped == "release promoted; nothing to roll back"
    controller.close()
    assert target.calls == ["prepare_image v2", "acquire_lock", "deploy green v2", "wait_ready green",
                            "set_traffic green 100%", "scale_down blue", "release_lock", "close"]
    assert prometheus.asked == ["reachable http://prometheus"]  # the first scrape: see the next test
    assert target.states == ["started", "provisioning", "verifying", "switching", "switched", "finalizing",
                             "promoted"]
    context = controller.ledger.read_context()
    assert (context.decision, context.previous_version, context.candidate_slot) == (Decision.PROMOTED, "v1",
                                                                                    "green")
    assert context.endpoints[Role.SERVICE].slot == "green"


def test_provision_leaves_the_wait_for_the_first_scrape_to_the_first_stage_after_smoke(tmp_path: Path) -> None:
    """The smoke stage runs while Prometheus finds the candidate: provision says how many pods it must
    scrape, and the first item after the smoke stage waits for them (once per process, in the runtime)."""
    target = FakeTarget()
    controller, prometheus = _controller(tmp_path, target)
    controller.run("preflight")
    controller.run("provision")
    assert prometheus.asked == ["reachable http://prometheus"]
    assert controller.ledger.read_context().first_scrape_of == 2
    assert await_first_scrape(controller.ledger, prometheus) is not None
    assert prometheus.asked == ["reachable http://prometheus", "scraped v2 x2"]
    controller.close()


def test_a_candidate_users_reach_from_provision_on_is_scraped_before_provision_ends(tmp_path: Path) -> None:
    """A canary Rollout's first step sends users to the candidate at provision: each of their requests must be
    counted, so provision itself waits, and nothing is left to the stages after it."""
    target = ExposedAtProvision()
    controller, prometheus = _controller(tmp_path, target)
    controller.run("preflight")
    result = controller.run("provision")
    assert prometheus.asked == ["reachable http://prometheus", "scraped v2 x2"]
    assert "release.provision.first_scrape_s" in dict(result.properties)
    assert controller.ledger.read_context().first_scrape_of is None
    assert await_first_scrape(controller.ledger, prometheus) is None
    assert prometheus.asked == ["reachable http://prometheus", "scraped v2 x2"]
    controller.close()


def test_a_failed_verification_removes_the_candidate_and_never_moves_traffic(tmp_path: Path) -> None:
    target = FakeTarget()
    controller, _ = _controller(tmp_path, target)
    controller.run("preflight")
    controller.run("provision")
    failure = ItemRecord(index=3, nodeid="t::bad", stage="analysis", outcome=Outcome.FAILED,
                         message="error_rate 4.6% > 1%", started=0, finished=1)
    result = controller.rollback([failure])
    assert ("release.rollback.reason", "analysis failed: error_rate 4.6% > 1%") in result.properties
    assert not any(call.startswith("set_traffic") for call in target.calls)
    assert target.calls[-2:] == ["remove green", "release_lock"]
    assert controller.ledger.read_context().decision is Decision.ROLLED_BACK


def test_a_failure_after_the_switch_puts_traffic_back_first(tmp_path: Path) -> None:
    target = FakeTarget()
    controller, _ = _controller(tmp_path, target)
    for stage in ("preflight", "provision", "switch"):
        controller.run(stage)
    controller.rollback([])
    assert target.calls[-4:] == ["set_traffic green 100%", "set_traffic blue 100%", "remove green",
                                 "release_lock"]
    assert target.traffic == TrafficSplit.all_to("blue")


def test_a_candidate_that_is_not_ready_is_removed_on_rollback(tmp_path: Path) -> None:
    target = FakeTarget(ready=False)
    controller, prometheus = _controller(tmp_path, target)
    controller.run("preflight")
    with pytest.raises(NotReadyError, match="readiness probe failing"):
        controller.run("provision")
    controller.rollback([])
    assert "remove green" in target.calls
    assert prometheus.asked == ["reachable http://prometheus"]  # never waited for a scrape


def test_a_held_lock_stops_preflight_before_anything_changes(tmp_path: Path) -> None:
    target = FakeTarget(lock_holder="run-b")
    controller, _ = _controller(tmp_path, target)
    with pytest.raises(LockHeldError, match="run-b"):
        controller.run("preflight")
    assert controller.rollback([]).skipped == "nothing was provisioned; nothing to roll back"
    assert target.calls == ["prepare_image v2"]
    assert target.states == []


def test_a_restart_since_ready_is_seen_and_a_scale_change_is_not() -> None:
    from releasegate.core.types import WorkloadStatus

    ready = WorkloadStatus(slot="green", version="v2", replicas=2, ready_replicas=2,
                           restarts=(("demo-green-0", 0), ("demo-green-1", 2)))
    same = WorkloadStatus(slot="green", version="v2", replicas=3, ready_replicas=3,
                          restarts=(("demo-green-0", 0), ("demo-green-1", 2), ("demo-green-2", 5)))
    crashed = WorkloadStatus(slot="green", version="v2", replicas=1, ready_replicas=1,
                             restarts=(("demo-green-1", 3),))
    assert same.restarted_since(ready) == []  # a new pod's restarts are its own, not a crash under test
    assert crashed.restarted_since(ready) == ["demo-green-1 restarted 1 time(s)"]
