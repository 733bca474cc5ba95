"""The shipped suites (suites/) run by `pytest --release` against the local target with real Prometheus.

These are the release decisions the product exists for: a good version promoted, a version with 5%
errors rolled back with the measured rate in JUnit, a version that fails after the switch switched back,
and the fail-closed paths (Prometheus gone mid-run, too few requests).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local_cluster import DEMO_SEED
from tests.release_project import ReleaseProject, copy_shipped_suites

pytestmark = pytest.mark.slow

# Short stages: the suites read their durations from [vars].
FAST_VARS = """
[vars]
load_users = 5
load_duration_s = 3
load_min_requests = 50
analysis_window_s = 30
analysis_min_requests = 50
compare_users = 3
compare_duration_s = 3
compare_min_requests = 30
# Tests share two cores with other tests: tails are the machine's, so compare them loosely.
compare_latency_tolerance = 1.0
compare_p95_tolerance = 1.0
compare_p99_tolerance = 2.0
# p99 of a thousand requests is the machine's worst stall of the minute, not the version's: leave it out.
compare_quantiles = [0.5, 0.95]
compare_error_tolerance_pp = 2
post_switch_users = 5
post_switch_duration_s = {post_switch_s}
post_switch_min_requests = 50
"""


QUICK_SLOS = 'slos = ["p(95) < 300ms", "error_rate < 2%"]\n'
"""For tests of other things than the shipped SLOs' decisions: 0 errors in 280 requests show < 2% (600 for
< 1%), so a release decides in a fraction of the time; a 5% error rate still fails it (by 400 requests)."""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseProject]:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    project.write_config(FAST_VARS.format(post_switch_s=4))
    try:
        yield project
    finally:
        project.stop_background_cluster()


def test_the_shipped_suites_promote_a_good_version(project: ReleaseProject) -> None:
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    load = dict(junit.case("test_candidate_meets_its_slos_under_load")["properties"])
    assert load["check.error_rate < 1%.verdict"] == "pass"
    assert int(load["check.error_rate < 1%.samples"]) >= 50
    slo = dict(junit.case("test_candidate_success_rate")["properties"])
    assert slo["check.success_rate >= 99%.verdict"] == "pass"
    assert "http_requests_total" in slo["check.success_rate >= 99%.source"]
    assert project.cluster_state()["traffic"] == {"green": 100}


def test_a_version_with_5_percent_errors_is_rolled_back(project: ReleaseProject) -> None:
    project.start_background_cluster()
    result = project.release("--release", "v2-errors")
    assert result.ret == 1
    # The pod is seeded (DEMO_SEED): its first 13 requests never fail, so smoke passes, and its error rate
    # over any load of 50 to 10,000 requests after them is 2-9%: the load stage fails, with that rate.
    green_logs = [path.read_text() for path in (project.path / "run" / "logs").glob("demo-green-*.log")]
    assert green_logs and all(f"seed {DEMO_SEED}; " in log for log in green_logs), green_logs
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert junit.case("test_items_and_checkout_work")["outcome"] == "passed"
    failure = junit.case("test_candidate_meets_its_slos_under_load")
    assert failure["outcome"] == "failure"
    first_line = failure["message"].splitlines()[0]
    assert first_line.startswith("error_rate ") and "% > 1% over " in first_line, first_line
    # Decided by its bound within seconds: the load stopped there.
    assert " requests on all endpoints (candidate v2-errors): lower bound " in first_line, first_line
    measured = float(first_line.split()[1].rstrip("%"))
    assert 2 <= measured <= 10, measured
    assert junit.case("switch")["outcome"] == "skipped"
    # The end-of-run table (plugins/progress.py): the failed phase, then the check with its own line.
    result.stdout.fnmatch_lines(["*- release phases -*", "load *failed *1 test", "checks that did not pass:",
                                 "load *fail *test_candidate_meets_its_slos_under_load: error_rate*",
                                 "releasegate: v2-errors was rolled back*"])
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["green"]["pods"] == []
    # Traffic never left v1: the router answered no user request from the candidate.
    metrics = project.client()._http.get(state["admin_url"] + "/metrics").text
    assert 'listener="service",slot="green"' not in metrics


def test_a_version_failing_after_the_switch_is_switched_back(project: ReleaseProject) -> None:
    # The errors begin when the first post_switch test sends the candidate SIGUSR1, never by a timer that
    # the stages before the switch could outrun on a slow machine; the post_switch load then stops early.
    project.write_config(FAST_VARS.format(post_switch_s=30))
    project.start_background_cluster()
    project.write_late_failure_trigger(pods_parent=project.cluster_state()["pid"])
    result = project.release("--release", "v2-late-failure")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    assert junit.case("test_candidate_meets_its_slos_under_load")["outcome"] == "passed"
    assert junit.case("switch")["outcome"] == "passed"
    assert junit.case("test_the_late_failure_begins_after_the_switch")["outcome"] == "passed"
    failure = junit.case("test_service_holds_up_under_load")
    assert failure["outcome"] == "failure" and failure["message"].startswith("error_rate ")
    reason = dict(junit.case("rollback")["properties"])["release.rollback.reason"]
    assert reason.startswith("post_switch failed: error_rate")
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}
    assert state["slots"]["blue"]["version"] == "v1"
    assert state["slots"]["green"]["pods"] == []


def test_prometheus_stopped_mid_run_never_promotes(project: ReleaseProject) -> None:
    project.write_suite("load/test_stop_prometheus.py", """
        import json, os, signal, pathlib

        def test_prometheus_goes_away(candidate):
            state = json.loads(pathlib.Path("run/state.json").read_text())
            os.kill(state["prometheus_pid"], signal.SIGKILL)
    """)
    project.start_background_cluster()
    result = project.release("--release", "v2")
    assert result.ret == 1
    junit = project.junit()
    slo = junit.case("test_candidate_success_rate")
    assert slo["outcome"] == "failure"
    assert slo["message"].startswith("Prometheus at http://127.0.0.1:"), slo["message"]
    assert "is unreachable (connection refused or host unknown)" in slo["message"]
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert project.cluster_state()["traffic"] == {"blue": 100}


def test_a_load_below_its_minimum_sample_count_is_no_data_and_fails(project: ReleaseProject) -> None:
    # A fixed window (max = min): a minimum that cannot be met would otherwise extend the load to its maximum.
    project.write_config(FAST_VARS.format(post_switch_s=4).replace(
        "load_min_requests = 50", "load_min_requests = 1000000\nload_max_duration_s = 3"))
    result = project.release("--release", "v2")
    assert result.ret == 1
    failure = project.junit().case("test_candidate_meets_its_slos_under_load")
    assert failure["message"].startswith("NO DATA: p(95) < 300ms: only "), failure["message"]
    assert "fewer than the minimum 1,000,000" in failure["message"]
    assert project.junit().suite_properties["release.decision"] == "rolled-back"
