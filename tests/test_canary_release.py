"""Canary releases on the local target: weighted steps through the router, analysis at each step.

The router splits by exact weights (smooth weighted round-robin), so the candidate's measured share of a
load through the service is the step's weight to within a request or two. Also here: a canary dry run,
and a first deploy (nothing served before it), which the same suites verify.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from releasegate.plugins.fixtures import FIRST_DEPLOY_NO_BASELINE
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_release_suites import FAST_VARS, QUICK_SLOS

pytestmark = pytest.mark.slow

CANARY = """
[canary]
steps = [10, 50, 100]
step_window_s = 2
"""

CANARY_VARS = """canary_users = 10
canary_step_load_s = 3
canary_min_requests = 100
canary_success_tolerance_pp = 5
""" + QUICK_SLOS


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseProject]:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    project.write_config(FAST_VARS.format(post_switch_s=3) + CANARY_VARS + CANARY)
    try:
        yield project
    finally:
        project.stop_background_cluster()


def _properties(case: dict[str, object]) -> dict[str, str]:
    return dict(case["properties"])  # type: ignore[call-overload]


def test_a_good_version_goes_through_every_step_and_is_promoted(project: ReleaseProject) -> None:
    project.start_background_cluster()
    result = project.release("--release", "v2", "--release-strategy", "canary")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.strategy"] == "canary"
    assert junit.suite_properties["release.decision"] == "promoted"
    names = junit.order()
    # Every step: its shift, then its analysis (the step is in the test id).
    for weight in (10, 50, 100):
        shift = names.index(f"shift[{weight}%]")
        analysis = names.index(f"test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up[{weight}%]")
        assert shift < analysis
        assert _properties(junit.case(f"shift[{weight}%]"))["release.shift.effective_weight"] == str(weight)
        checks = _properties(junit.cases[analysis])
        share = float(checks[f"check.share of v2 == {weight}% ± 2pp.value"].rstrip("%"))
        assert abs(share - weight) <= 2, (weight, share)
        # The same step from Prometheus, in the same test after the load: the pods' counters over the
        # step's window.
        prometheus = junit.cases[analysis]
        assert prometheus["outcome"] == "passed", prometheus
        measured = checks
        key = f"check.prometheus share of v2 == {weight}% ± 2pp"
        assert measured[f"{key}.verdict"] == "pass"
        prometheus_share = float(measured[f"{key}.value"].rstrip("%"))
        counted, sent = int(measured[f"{key}.samples"]), int(checks[f"check.share of v2 == {weight}% ± 2pp.samples"])
        assert abs(prometheus_share - weight) <= 2 and counted >= 100, (weight, measured)
        # Whole requests, no extrapolation: the window holds the step's load and nothing else (give or take
        # the requests in flight when locust stopped its 5 users, which a pod may have answered).
        assert abs(counted - sent) <= 5, (weight, counted, sent)
        comparison = "check.success_rate vs baseline ± 5pp"
        if weight < 100:
            assert measured[f"{comparison}.verdict"] == "pass", measured
            assert measured[f"{comparison}.value"] == "100%"
            assert measured["check.p(95) vs baseline.verdict"] == "pass", measured
        else:  # at 100% the stable version serves nobody: nothing to compare with
            assert f"{comparison}.verdict" not in measured
        print(f"step {weight}%: Prometheus share of v2 {prometheus_share:.1f}% of {counted} requests over "
              f"{measured[f'{key}.window']}; the load's own share {share:.1f}% of {sent} requests")
        compare = junit.case(f"test_candidate_is_no_worse_than_baseline[{weight}%]")
        assert compare["outcome"] == "skipped" and "canary: the step's split" in compare["message"], compare
    assert names.index("shift[100%]") < names.index("promote") < names.index("finalize")
    # The requested and the effective weight, side by side, in the terminal and in the report.
    result.stdout.fnmatch_lines(["releasegate: shift[[]10%[]]: requested 10%, effective 10% (blue 90%, green 10%)"])
    report = (project.path / "reports" / "latest" / "release-report.md").read_text()
    assert "| shift[50%] | 50% | 50% | blue 50%, green 50% |" in report, report
    state = project.cluster_state()
    assert state["traffic"] == {"green": 100}
    assert state["slots"]["blue"]["pods"] == []  # the old version scaled down after keep-warm


def test_a_bad_version_is_stopped_at_the_first_step_and_traffic_goes_back_to_stable(
        project: ReleaseProject) -> None:
    # Without the load stage, the candidate's errors are first seen on real traffic at 10%.
    shutil.rmtree(project.path / "suites" / "load")
    (project.path / "suites" / "load").mkdir()
    (project.path / "releasegate.toml").write_text(
        (project.path / "releasegate.toml").read_text().replace("[release]\n", "[release]\nrequired_stages = "
                                                                "[\"smoke\", \"analysis\"]\n"))
    project.write_suite("load/locustfile.py", _shipped_locustfile())
    project.start_background_cluster()
    result = project.release("--release", "v2-errors", "--release-strategy", "canary")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert junit.suite_properties["release.reason"].startswith("analysis[10%] failed: ")
    assert junit.case("shift[50%]")["outcome"] == "skipped"
    assert junit.case("promote")["outcome"] == "skipped"
    rollback = _properties(junit.case("rollback"))
    to_stable_s, exposed_s = float(rollback["release.rollback.to_stable_s"]), float(
        rollback["release.rollback.exposed_s"])
    failing = junit.case("test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up[10%]")
    # The candidate's requests: its share of the step's load through the service (the error-rate checks of
    # both versions share one property name, so that one cannot say whose count it holds).
    checks = _properties(failing)
    share_key = "check.share of v2-errors == 10% ± 2pp"
    served = round(float(checks[f"{share_key}.value"].rstrip("%")) / 100 * int(checks[f"{share_key}.samples"]))
    print(f"canary v2-errors: users reached the candidate for {exposed_s:.2f}s (first request to all traffic "
          f"on stable), {to_stable_s:.2f}s from the failing check; the candidate served {served} requests")
    assert 0 <= to_stable_s < exposed_s
    assert project.cluster_state()["traffic"] == {"blue": 100}
    assert project.cluster_state()["slots"]["green"]["pods"] == []


def test_a_first_deploy_is_verified_by_the_suites_and_then_gets_all_traffic(project: ReleaseProject) -> None:
    project.start_background_cluster("--empty")
    assert project.cluster_state()["slots"]["blue"]["pods"] == []  # nothing serves
    result = project.release("--release", "v1")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    assert junit.suite_properties["release.previous"] == ""
    # The absolute checks ran and passed on the candidate; the comparison had nothing to compare with.
    for name in ("test_candidate_success_rate", "test_candidate_latency", "test_candidate_is_the_release_version",
                 "test_users_still_reach_the_previous_version"):
        matches = [case for case in junit.cases if case["name"].startswith(name)]
        assert matches and all(case["outcome"] == "passed" for case in matches), (name, matches)
    compare = junit.case("test_candidate_is_no_worse_than_baseline")
    assert compare["outcome"] == "skipped" and FIRST_DEPLOY_NO_BASELINE[:40] in compare["message"], compare
    state = project.cluster_state()
    assert state["traffic"] == {"green": 100}
    assert state["slots"]["green"]["version"] == "v1"


def test_a_canary_dry_run_analyses_every_step_on_the_candidate_and_never_moves_traffic(
        project: ReleaseProject) -> None:
    project.start_background_cluster()
    result = project.release("--release", "v2", "--release-strategy", "canary", "--release-dry-run")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    for weight in (10, 50, 100):
        assert junit.case(f"shift[{weight}%]")["outcome"] == "skipped"
        slo = junit.case(f"test_candidate_success_rate[{weight}%]")
        assert slo["outcome"] == "passed", slo
    assert junit.case("promote")["outcome"] == "skipped"
    state = project.cluster_state()
    assert state["traffic"] == {"blue": 100}  # never moved
    assert state["slots"]["green"]["pods"] == []  # the candidate is removed after a dry run


def _shipped_locustfile() -> str:
    from tests.local_cluster import PROJECT_ROOT

    return (PROJECT_ROOT / "suites" / "load" / "locustfile.py").read_text()
