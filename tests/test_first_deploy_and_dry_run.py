"""A first deploy (nothing serves yet) and a canary dry run, on the local target with the shipped suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from releasegate.plugins.fixtures import FIRST_DEPLOY_NO_BASELINE
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_canary_release import CANARY, CANARY_VARS
from tests.test_release_suites import FAST_VARS

pytestmark = pytest.mark.slow


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseProject]:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    project.write_config(FAST_VARS.format(post_switch_s=3) + CANARY_VARS + CANARY)
    try:
        yield project
    finally:
        project.stop_background_cluster()


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
