"""Whole canary releases with `--release-target kubernetes` (replica mode) on the fake API server, pods running
as real processes behind a kube-proxy on loopback (tests/kube_cluster.py, charts/canary-app's layout).

Two stable replicas and steps 50/100: Argo Rollouts' counts give 1 canary + 1 stable pod at 50% and 2 + 0 at
100%, so the effective weights equal the requested ones and the shipped per-step share check applies as is.
The runner has exactly the canary chart's rules (replica mode), enforced by the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import charts
from tests.kube_cluster import ProcessCluster, process_cluster
from tests.local_cluster import PROJECT_ROOT, TEST_PROFILES
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_canary_release import CANARY_VARS
from tests.test_release_suites import FAST_VARS

pytestmark = pytest.mark.slow
NS, APP = "shop", "demo"
STEPS = """
[canary]
steps = [50, 100]
step_window_s = 2
"""


def runner_rules() -> list[dict[str, Any]]:
    rules = charts.load_rules(PROJECT_ROOT / "charts/canary-app/files/runner-rules.yaml")
    return [*rules["namespaced"], *rules["cluster"]]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ProcessCluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    empty = getattr(request, "param", None) == "first-deploy"
    with process_cluster(workdir, profiles=profiles, namespace=NS, app=APP, runner_rules=runner_rules(),
                         layout="canary", empty=empty) as cluster:
        yield cluster


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cluster: ProcessCluster) -> ReleaseProject:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    # The side-by-side comparison is the blue-green analysis; here the steps' own analysis decides.
    (project.path / "suites" / "analysis" / "test_compare.py").unlink()
    (project.path / "releasegate.toml").write_text(cluster.config_toml() + FAST_VARS.format(post_switch_s=3)
                                                   + CANARY_VARS + STEPS)
    return project


def properties(project: ReleaseProject, case: str) -> dict[str, str]:
    return dict(project.junit().case(case)["properties"])


def deployment(cluster: ProcessCluster, slot: str) -> dict[str, Any] | None:
    return cluster.fake.get_object("deployments", NS, f"{APP}-{slot}")


def test_a_canary_release_promotes_then_a_bad_one_aborts(project: ReleaseProject, cluster: ProcessCluster) -> None:
    result = project.release("--release", "v2", "--release-strategy", "canary")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    for weight in (50, 100):
        shift = properties(project, f"shift[{weight}%]")
        assert (shift["release.shift.requested_weight"], shift["release.shift.effective_weight"]) == \
            (str(weight), str(weight))
    stable = deployment(cluster, "stable")
    assert stable is not None
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert stable["spec"]["replicas"] == 2
    assert deployment(cluster, "canary") is None  # the promotion replaced stable in place and removed it
    assert "updated in place to v2" in properties(project, "promote")["release.switch.detail"]
    assert not [r for r in cluster.fake.requests if r.status == 403]  # the chart's rules sufficed

    # A version that fails under users' traffic. Without the load stage its errors are first seen at the first
    # step (50%): the release aborts there, all traffic back on stable (v2) in one move, the canary removed.
    (project.path / "suites" / "load" / "test_load.py").unlink()  # the locustfile stays: the steps use it
    config = project.path / "releasegate.toml"
    config.write_text(config.read_text().replace("[release]\n",
                                                 '[release]\nrequired_stages = ["smoke", "analysis"]\n'))
    cluster.fake.clear_requests()
    result = project.release("--release", "v2-errors", "--release-strategy", "canary")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "rolled-back"
    assert junit.suite_properties["release.reason"].startswith("analysis[50%] failed: ")
    assert junit.case("shift[50%]")["outcome"] == "passed"
    assert junit.case("shift[100%]")["outcome"] == "skipped"
    rollback = properties(project, "rollback")
    to_stable_s = float(rollback["release.rollback.to_stable_s"])
    exposed_s = float(rollback["release.rollback.exposed_s"])
    print(f"\nkubernetes canary v2-errors: users reached the canary for {exposed_s:.2f}s (first shift to all traffic "
          f"on stable), {to_stable_s:.2f}s from the failing check; {rollback['release.rollback.reason']}")
    assert 0 <= to_stable_s < exposed_s
    # The abort's first write to <app> narrowed it to stable, before any replica moved.
    writes = [r for r in cluster.fake.write_requests() if r.status < 300]
    abort_at = max(i for i, r in enumerate(writes) if r.method == "PATCH" and r.path.split("?")[0].endswith(
        f"/services/{APP}") and (r.json().get("spec") or {}).get("selector") == {"slot": "stable"})
    assert "/deployments/" in writes[abort_at + 1].path
    service = cluster.fake.get_object("services", NS, APP)
    assert service is not None and service["spec"]["selector"] == {"app": APP, "slot": "stable"}
    assert deployment(cluster, "canary") is None
    stable = deployment(cluster, "stable")
    assert stable is not None and stable["spec"]["replicas"] == 2
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert service["metadata"]["annotations"]["releasegate.io/phase"] == "rolled-back"


@pytest.mark.parametrize("cluster", ["first-deploy"], indirect=True)
def test_a_first_canary_deploy_to_an_empty_namespace_is_verified_and_promoted(project: ReleaseProject,
                                                                             cluster: ProcessCluster) -> None:
    """charts/canary-app with firstDeploy=true: demo-stable empty. No shift (nothing to split with); v1 runs on a
    canary of the annotated 2 pods, is verified at every step, and promote takes demo-stable from 0 to 2 pods."""
    result = project.release("--release", "v1", "--release-strategy", "canary")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert (junit.suite_properties["release.decision"], junit.suite_properties["release.previous"]) == ("promoted", "")
    for weight in (50, 100):
        assert junit.case(f"shift[{weight}%]")["outcome"] == "skipped"
        assert junit.case(f"test_candidate_success_rate[{weight}%]")["outcome"] == "passed"
    assert junit.case("test_users_still_reach_the_previous_version")["outcome"] == "passed"
    assert dict(junit.case("provision")["properties"])["release.provision.replicas"] == "2/2"
    stable = deployment(cluster, "stable")
    assert stable is not None and stable["spec"]["replicas"] == 2
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "v1"
    assert deployment(cluster, "canary") is None
    assert "updated in place to v1 (2 replicas)" in properties(project, "promote")["release.switch.detail"]
    assert not [r for r in cluster.fake.requests if r.status == 403]
