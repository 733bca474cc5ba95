"""`pytest --release` end to end with pytester: real pytest runs, a real local cluster, JUnit parsed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from releasegate.core.processes import can_leave_idle_scheduling
from tests.release_project import BASE_CONFIG, ReleaseProject
from tests.report_formats import assert_valid_junit, assert_valid_report
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ACTIONS = ["preflight", "provision", "switch", "finalize", "rollback"]


def test_a_good_release_promotes_switches_and_scales_the_old_slot_down(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*releasegate: v2 now serves all traffic (previous: v1); exit code 0*"])
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    assert junit.suite_properties["release.version"] == "v2"
    assert junit.suite_properties["release.previous"] == "v1"
    assert junit.suite_properties["release.strategy"] == "blue-green"
    for stage in ("preflight", "provision", "smoke", "analysis", "switch", "post_switch", "finalize"):
        assert float(junit.suite_properties[f"release.phase.{stage}_s"]) >= 0
    assert junit.order() == ["preflight", "provision", "test_smoke_sees_the_right_versions",
                             "test_analysis_sees_the_right_versions", "switch",
                             "test_post_switch_sees_the_right_versions", "finalize", "rollback"]
    assert junit.case("rollback")["outcome"] == "skipped"
    state = project.cluster_state()
    assert state["traffic"] == {"green": 100}
    assert state["slots"]["blue"]["replicas"] == 0 and state["slots"]["blue"]["pods"] == []
    assert state["lease"] is None
    assert state["release_state"]["phase"] == "promoted"
    served = httpx.get(state["service_url"] + "/version", timeout=5).headers["X-App-Version"]
    assert served == "v2"
    # The next release goes to the slot that is free now, and v2 becomes its previous version.
    result = project.release("--release", "v3")
    assert result.ret == 0, result.stdout.str()
    assert project.cluster_state()["traffic"] == {"blue": 100}
    assert project.junit().suite_properties["release.previous"] == "v2"


def test_a_failed_verification_rolls_back_and_skips_the_rest(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("analysis/test_verdict.py", """
        def test_the_candidate_is_too_slow(candidate):
            assert False, "p(95) 412ms > 300ms over 1,843 requests on /api/checkout (candidate v2)"
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    failed = junit.case("test_the_candidate_is_too_slow")
    assert failed["outcome"] == "failure"
    assert failed["message"] == "p(95) 412ms > 300ms over 1,843 requests on /api/checkout (candidate v2)"
    for skipped in ("switch", "test_post_switch_sees_the_right_versions", "finalize"):
        case = junit.case(skipped)
        assert case["outcome"] == "skipped"
        assert case["message"].startswith("release stopped: analysis failed")
    assert junit.case("rollback")["outcome"] == "passed"
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["green"]["pods"] == [] and state["slots"]["green"]["version"] is None
    assert state["release_state"]["phase"] == "rolled-back"
    assert state["lease"] is None


def test_a_post_switch_failure_switches_traffic_back(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("post_switch/test_after.py", """
        import httpx

        def test_users_get_the_new_version_and_it_breaks(service, release):
            served = httpx.get(service.url + "/version", timeout=5).headers["X-App-Version"]
            assert served == release.version  # traffic really was on the candidate
            assert False, "error_rate 50% >= 1% after the switch"
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1
    junit = project.junit()
    assert junit.case("switch")["outcome"] == "passed"
    assert junit.case("finalize")["outcome"] == "skipped"
    assert dict(junit.case("rollback")["properties"])["release.rollback.reason"].startswith(
        "post_switch failed: error_rate 50%")
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["blue"]["version"] == "v1" and state["slots"]["blue"]["ready_replicas"] == 1
    assert state["slots"]["green"]["pods"] == []


def test_an_empty_required_stage_provisions_nothing_and_exits_5(project: ReleaseProject) -> None:
    project.write_suite("smoke/test_smoke.py", "def test_ok(candidate):\n    pass\n")
    (project.path / "suites" / "analysis").mkdir()
    result = project.release("--release", "v2")
    assert result.ret == 5
    result.stdout.fnmatch_lines(["*why: required stage(s) analysis have no test*suites/analysis/*"])
    assert project.junit().suite_properties["release.decision"] == "not-promoted"
    assert not (project.path / "run" / "state.json").exists()


def test_a_failing_fixture_stops_the_release(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("smoke/conftest.py", """
        import pytest

        @pytest.fixture
        def database():
            raise RuntimeError("cannot reach the test database")
    """)
    project.write_suite("smoke/test_db.py", "def test_orders(database):\n    pass\n")
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1
    junit = project.junit()
    assert junit.case("test_orders")["outcome"] == "error"
    assert junit.case("switch")["outcome"] == "skipped"
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert project.cluster_state()["traffic"] == {"blue": 100}


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (["--release", "v2", "--release-strategy", "rainbow"], "",
         "ERROR: --release-strategy 'rainbow' is not a strategy; use one of: blue-green, canary"),
        (["--release", "v2!"], "", "ERROR: --release: version 'v2!' is not a valid Kubernetes label value*"),
        (["--release", "v2"], "[local]\nreplica = 3\n", "ERROR: *releasegate.toml: unknown key 'local.replica'*"),
        (["--release", "v2"], "[release\n", "ERROR: *releasegate.toml: not valid TOML*"),
        (["--release", "v2"], "[release]\nkeep_warm_s = -1\n",
         "ERROR: *releasegate.toml: release.keep_warm_s = -1 is invalid*"),
        # The suites' [vars]: caught before anything starts, not at the load stage.
        (["--release", "v2"], '[vars]\nslos = ["p(95) < 300ms", "p(95) < 300 mss"]\n',
         "ERROR: releasegate.toml: *vars* slos*1*: *'p(95) < 300 mss'*"),
        (["--release", "v2"], '[vars]\nload_duration_s = "15 s"\n',
         "ERROR: releasegate.toml: *vars* load_duration_s = '15 s' must be a number of seconds*"),
    ],
    ids=["unknown-strategy", "invalid-version", "unknown-key", "malformed-config", "bad-value", "bad-slo",
         "bad-duration"],
)
def test_bad_input_is_exit_4_with_one_line_and_starts_nothing(
        project: ReleaseProject, args: list[str], config: str, expected: str) -> None:
    project.minimal_suites()
    if config:
        (project.path / "releasegate.toml").write_text(config)
    result = project.release(*args)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()
    result.stderr.fnmatch_lines([expected])
    assert not (project.path / "run").exists()
    assert not (project.path / "reports").exists()


def test_a_test_without_a_stage_is_a_usage_error(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("test_loose.py", "def test_where_do_i_go():\n    pass\n")
    result = project.release("--release", "v2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*1 test(s) belong to no stage, e.g. suites/test_loose.py::test_where_do_i_go*"])
    assert not (project.path / "run").exists()
    # The run had started a release (it has a run id): its report says why it stopped.
    assert_valid_report(project.path / "reports" / "latest" / "release-report.json")
    report = json.loads((project.path / "reports" / "latest" / "release-report.json").read_text())
    assert report["exit_code"] == 4 and report["decision"] == "not-promoted"
    assert "1 test(s) belong to no stage" in report["reason"]
    markdown = (project.path / "reports" / "latest" / "release-report.md").read_text()
    assert "why: 1 test(s) belong to no stage" in markdown


def test_collect_only_runs_no_release_and_writes_no_report(project: ReleaseProject) -> None:
    project.minimal_suites()
    result = project.release("--release", "v2", "--collect-only")
    assert result.ret == 0, result.stdout.str()
    # The action items are counted with the tests: 3 tests + preflight, provision, switch, finalize, rollback.
    result.stdout.fnmatch_lines(["collected 8 items"])
    assert not (project.path / "reports").exists()
    assert not (project.path / "run").exists()


def test_a_release_names_the_running_cluster_it_used_whatever_folder_its_config_is_in(
        project: ReleaseProject) -> None:
    project.minimal_suites()
    project.start_background_cluster()
    elsewhere = project.path.parent / f"{project.path.name}-configs"
    elsewhere.mkdir()
    (elsewhere / "my.toml").write_text((project.path / "releasegate.toml").read_text())
    (elsewhere / "profiles.toml").write_text((project.path / "profiles.toml").read_text())
    result = project.release("--release", "v3", f"--release-config={elsewhere / 'my.toml'}")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*releasegate: v3 now serves all traffic (previous: v1); exit code 0*",
        f"*releasegate: target: local cluster (already running; left running) in {project.path / 'run'}*",
    ])
    assert project.cluster_state()["traffic"] == {"green": 100}
    assert project.cluster_state()["slots"]["green"]["version"] == "v3"
    assert not (elsewhere / "run").exists()
    detail = project.junit().suite_properties["release.target_detail"]
    assert detail.startswith(f"local cluster (already running; left running) in {project.path / 'run'}")


def test_a_candidate_that_never_gets_ready_fails_at_the_targets_readiness_deadline(
        project: ReleaseProject) -> None:
    project.minimal_suites()
    text = (project.path / "releasegate.toml").read_text().replace("ready_timeout_s = 20", "ready_timeout_s = 3")
    (project.path / "releasegate.toml").write_text(text + "\n[stages]\nprovision = 120\n")
    project.start_background_cluster()
    result = project.release("--release", "v2-never-ready")
    assert result.ret == 1, result.stdout.str()
    provision = project.junit().case("provision")
    assert provision["outcome"] == "failure"
    # The target's readiness deadline (3 s), not the stage's (120 s), and the readiness failure as the reason.
    assert "not ready after 3.0s" in provision["message"]
    assert "readiness" in provision["message"] and "overran its deadline" not in provision["message"]
    assert float(project.junit().suite_properties["release.phase.provision_s"]) < 60
    assert project.cluster_state()["traffic"] == {"blue": 100}
    assert project.cluster_state()["slots"]["green"]["pods"] == []


def test_the_stage_marker_moves_a_test(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_suite("checks/test_marked.py", """
        import pytest

        @pytest.mark.stage("post_switch")
        def test_marked(service, release):
            assert service.version == release.version
    """)
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    order = project.junit().order()
    assert order.index("switch") < order.index("test_marked") < order.index("finalize")


def test_dry_run_verifies_and_never_touches_traffic(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.start_background_cluster()
    result = project.release("--release", "v2", "--release-dry-run")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "not-promoted"
    assert junit.suite_properties["release.dry_run"] == "true"
    assert junit.case("switch")["outcome"] == "skipped"
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["green"]["pods"] == []


def test_a_stage_that_overruns_its_deadline_fails(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.write_config("[stages]\nsmoke = 2\n")
    project.write_suite("smoke/test_hang.py", """
        import threading

        def test_waits_forever(candidate):
            threading.Event().wait()
    """)
    result = project.release("--release", "v2")
    assert result.ret == 1
    case = project.junit().case("test_waits_forever")
    assert case["message"] == "stage smoke overran its deadline of 2s (stages.smoke)"
    assert project.no_cluster_left()


def test_a_second_release_of_the_same_app_is_refused(project: ReleaseProject) -> None:
    project.minimal_suites()
    project.start_background_cluster()
    project.client().call("POST", "/lease/acquire", {"holder": "run-of-someone-else", "ttl_s": 600})
    result = project.release("--release", "v2")
    assert result.ret == 4
    preflight = project.junit().case("preflight")
    assert "lock held by run-of-someone-else" in preflight["message"]
    state = project.cluster_state()
    assert state["slots"]["green"]["pods"] == [] and state["traffic"] == {"blue": 100}
    assert state["lease"]["holder"] == "run-of-someone-else"


def test_releasing_the_live_version_again_is_exit_4(project: ReleaseProject) -> None:
    project.minimal_suites()
    result = project.release("--release", "v1")
    assert result.ret == 4
    assert "v1 already serves all traffic" in project.junit().case("preflight")["message"]


def test_ctrl_c_leaves_traffic_on_the_verified_version(project: ReleaseProject) -> None:
    project.minimal_suites()
    marker = project.path / "smoke-started"
    project.write_suite("smoke/test_slow.py", f"""
        import pathlib, threading

        def test_waits_for_the_interrupt(candidate):
            pathlib.Path({str(marker)!r}).write_text("started")
            threading.Event().wait()
    """)
    project.start_background_cluster()
    process = subprocess.Popen([sys.executable, "-m", "pytest", "--release", "v2"], cwd=project.path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(marker.exists, timeout_s=60, what="the smoke test to start")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, output
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["green"]["pods"] == []
    assert state["lease"] is None
    assert json.loads((project.path / "reports" / "latest" / "release-report.json").read_text())["exit_code"] == 2
    assert_valid_report(project.path / "reports" / "latest" / "release-report.json")
    assert_valid_junit(project.path / "reports" / "latest" / "junit.xml")


def test_under_xdist_stages_stay_ordered_and_actions_run_once(project: ReleaseProject) -> None:
    timeline = project.path / "timeline"
    timeline.mkdir()
    for stage in ("smoke", "analysis", "post_switch"):
        project.write_suite(f"{stage}/test_{stage}.py", f"""
            import os, time, pathlib, pytest

            @pytest.mark.parametrize("n", range(4))
            def test_{stage}(candidate, release, n):
                start = time.time()
                for _ in range(20000):
                    pass
                pathlib.Path({str(timeline)!r}, f"{stage}-{{n}}").write_text(
                    f"{stage} {{start}} {{time.time()}} {{os.environ['PYTEST_XDIST_WORKER']}}")
        """)
    project.start_background_cluster()
    result = project.release("--release", "v2", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    records = [path.read_text().split() for path in timeline.iterdir()]
    spans = {stage: (min(float(r[1]) for r in records if r[0] == stage),
                     max(float(r[2]) for r in records if r[0] == stage)) for stage in ("smoke", "analysis")}
    assert spans["smoke"][1] <= spans["analysis"][0]
    assert {r[3] for r in records} == {"gw0", "gw1"}  # verification really was spread over both workers
    assert [c["name"] for c in junit.cases].count("provision") == 1
    assert project.cluster_state()["traffic"] == {"green": 100}
    # The HTML report is written on the controller, with every worker's items on its timeline.
    page = (project.path / "reports" / "latest" / "release-report.html").read_text()
    assert "Release v2: PROMOTED" in page and page.count("test_analysis[") >= 4


def write_worker_marks_conftest(project: ReleaseProject, marks: Path, *, at_configure: str, hooks: str) -> None:
    """A conftest for the release project that writes marks into `marks` from the run's xdist workers: WORKER is
    the worker's id there (None in the controller, whatever PYTEST_XDIST_WORKER an outer xdist run left in the
    environment); `at_configure` runs in each worker's pytest_configure, `hooks` adds hook functions."""
    configure = textwrap.indent(textwrap.dedent(at_configure).strip(), " " * 8)
    project.pytester.makeconftest(f"""
import atexit, os, pathlib, time

MARKS = pathlib.Path({str(marks)!r})
WORKER = None

def pytest_configure(config):
    global WORKER
    if hasattr(config, "workerinput"):
        WORKER = config.workerinput["workerid"]
{configure}
""" + textwrap.dedent(hooks))


def test_under_xdist_a_worker_done_with_its_items_exits_while_the_action_worker_still_finalizes(
        project: ReleaseProject) -> None:
    # finalize keeps the old slot warm for 4 s: workers that finished post_switch have that long to exit.
    (project.path / "releasegate.toml").write_text(BASE_CONFIG.replace("keep_warm_s = 0.5", "keep_warm_s = 4"))
    project.minimal_suites()
    marks = project.path / "marks"
    marks.mkdir()
    write_worker_marks_conftest(project, marks, at_configure="""
        # the interpreter's exit, after xdist's message to leave
        atexit.register(lambda: (MARKS / f"exit-{WORKER}").write_text(repr(time.time())))
    """, hooks="""
        def pytest_runtest_logfinish(nodeid):
            if WORKER and nodeid.endswith("::finalize"):  # the worker that ran it (the controller hears of it too)
                (MARKS / "finalize").write_text(f"{time.time()!r} {WORKER}")
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2", "-n", "3")
    assert result.ret == 0, result.stdout.str()
    finalized, action_worker = (marks / "finalize").read_text().split()
    exits = {path.name.removeprefix("exit-"): float(path.read_text()) for path in marks.glob("exit-*")}
    assert sorted(exits) == ["gw0", "gw1", "gw2"]  # every worker exited before pytest did
    early = {worker: at for worker, at in exits.items() if worker != action_worker}
    assert all(at < float(finalized) for at in early.values()), (early, finalized)
    assert exits[action_worker] > float(finalized)


def test_under_xdist_workers_after_the_first_start_idle_and_run_every_item_at_normal_priority(
        project: ReleaseProject) -> None:
    if not can_leave_idle_scheduling():
        pytest.skip("this user may not return a thread from SCHED_IDLE (no CAP_SYS_NICE, RLIMIT_NICE < 20)")
    project.minimal_suites()
    marks = project.path / "marks"
    marks.mkdir()
    write_worker_marks_conftest(project, marks, at_configure="""
        (MARKS / f"configure-{WORKER}").write_text(str(os.sched_getscheduler(0)))
    """, hooks="""
        def pytest_runtest_logstart(nodeid):
            if WORKER:  # the worker that runs the item (the controller hears of it too)
                (MARKS / f"item-{nodeid.rsplit('::', 1)[-1]}").write_text(str(os.sched_getscheduler(0)))
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2", "-n", "3")
    assert result.ret == 0, result.stdout.str()
    at_configure = {path.name.removeprefix("configure-"): int(path.read_text()) for path in marks.glob("configure-*")}
    assert at_configure == {"gw0": os.SCHED_OTHER, "gw1": os.SCHED_IDLE, "gw2": os.SCHED_IDLE}
    at_items = {path.name.removeprefix("item-"): int(path.read_text()) for path in marks.glob("item-*")}
    assert {"preflight", "provision", "switch", "finalize", "test_smoke_sees_the_right_versions",
            "test_post_switch_sees_the_right_versions"} <= set(at_items)
    assert set(at_items.values()) == {os.SCHED_OTHER}, at_items


def test_without_release_the_plugin_is_inert(project: ReleaseProject) -> None:
    project.write_suite("smoke/test_plain.py", "def test_plain():\n    pass\n")
    result = project.pytester.runpytest_subprocess("suites")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 passed*"])
    result.stdout.no_fnmatch_line("*release::*")
    assert not (project.path / "run").exists()
