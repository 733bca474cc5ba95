"""Whole `pytest --release` runs with `kubernetes.workload = "rollout"`: the fake API server with its Argo
Rollouts controller, the Rollout's pods running as real demo processes (tests/kube_cluster.py's runtime and
kube-proxy), the shipped suites unchanged, the runner holding only charts/canary-app/files/rollout-rules.yaml.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakekube import FakeKube
from tests.kube_cluster import RUNNER_TOKEN, RUNNER_USER, KubeProxy, ProcessRuntime
from tests.local_cluster import PROJECT_ROOT, TEST_PROFILES
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_canary_release import CANARY, CANARY_VARS
from tests.test_release_suites import FAST_VARS

pytestmark = pytest.mark.slow
NS, APP = "shop", "demo"
# 10 replicas: at 10% the Rollout runs ceil(10 * 10%) = 1 canary pod beside ceil(10 * 90%) = 9 stable ones,
# so the pods' share is the step's weight exactly (utils/replicaset/canary.go, DesiredReplicaCountsForCanary).
REPLICAS = 10
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
CANARY_STRATEGY = {"canary": {"canaryService": f"{APP}-canary", "stableService": f"{APP}-stable", "steps": STEPS}}
BLUE_GREEN_STRATEGY = {"blueGreen": {"activeService": APP, "previewService": f"{APP}-preview",
                                     "autoPromotionEnabled": False}}


def rollout_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROJECT_ROOT / "charts/canary-app/files/rollout-rules.yaml").read_text())
    return [*rules["namespaced"], *rules["cluster"]]


@dataclass
class RolloutCluster:
    fake: FakeKube
    runtime: ProcessRuntime
    proxy: KubeProxy
    kubeconfig: Path
    canary: bool

    def config_toml(self) -> str:
        urls = self.proxy.urls
        strategy = "canary" if self.canary else "blue-green"
        candidate, baseline = (f"{APP}-canary", f"{APP}-stable") if self.canary else (f"{APP}-preview", APP)
        return (f'[app]\nname = "{APP}"\n\n[release]\ntarget = "kubernetes"\nstrategy = "{strategy}"\n'
                f'keep_warm_s = 0.5\nrequired_stages = ["smoke", "analysis"]\n\n'
                f'[prometheus]\nurl = "{self.proxy.prometheus_url}"\n\n'
                f'[kubernetes]\nkubeconfig = "{self.kubeconfig}"\nnamespace = "{NS}"\nworkload = "rollout"\n'
                f'access = "url"\nservice_url = "{urls[APP]}"\npreview_url = "{urls[candidate]}"\n'
                f'baseline_url = "{urls[baseline]}"\n'
                f"ready_timeout_s = 60\nendpoints_timeout_s = 30\nmin_ready_s = 2\n")

    def rollout(self) -> dict[str, Any]:
        obj = self.fake.get_object("rollouts", NS, APP)
        assert obj is not None
        return obj

    def serving_versions(self, service: str = APP) -> set[str]:
        ips = set(self.fake.endpoints_ready(NS, service))
        return {ProcessRuntime.version(pod) for pod in self.fake.list_objects("pods", NS)
                if (pod.get("status") or {}).get("podIP") in ips}


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}}


def _rollout(strategy: dict[str, Any], replicas: int) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": APP, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": APP}},
                     "template": {"metadata": {"labels": {"app": APP}},
                                  "spec": {"containers": [{"name": APP, "image": f"shop/{APP}:v1",
                                                           "ports": [{"containerPort": 8080}]}]}},
                     "strategy": strategy}}


@contextlib.contextmanager
def rollout_cluster(workdir: Path, *, canary: bool = True) -> Iterator[RolloutCluster]:
    """The Rollout `demo` at v1 (Healthy, every pod a process), the runner bound to the rollout rules."""
    services = (APP, f"{APP}-stable", f"{APP}-canary") if canary else (APP, f"{APP}-preview")
    replicas = REPLICAS if canary else 2
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    runtime = ProcessRuntime(workdir, profiles)
    fake = FakeKube(pod_runtime=runtime, tokens={"admin-token": "admin", RUNNER_TOKEN: RUNNER_USER}).start()
    proxy: KubeProxy | None = None
    try:
        fake.install_crd("rollouts.argoproj.io")
        fake.seed_namespace(NS)
        for name in services:
            fake.create(_service(name))
        fake.create(_rollout(CANARY_STRATEGY if canary else BLUE_GREEN_STRATEGY, replicas))
        fake.wait_for(lambda: ((fake.get_object("rollouts", NS, APP) or {}).get("status") or {}).get("phase")
                      == "Healthy" and len(fake.endpoints_ready(NS, services[1])) == replicas, timeout=60)
        proxy = KubeProxy(fake, NS, list(services), workdir, APP).start()
        fake.set_rbac({RUNNER_USER: rollout_rules()})
        kubeconfig = Path(fake.write_kubeconfig(workdir / "kubeconfig", namespace=NS, token=RUNNER_TOKEN))
        ips = {p["ip"] for p in runtime.pods() if p["alive"]}
        deadline = time.monotonic() + 30
        while not proxy.prometheus_scrapes(ips):  # the same wait-with-deadline as tests/kube_cluster.py
            assert time.monotonic() < deadline, "Prometheus did not scrape the seeded pods"
            time.sleep(0.2)
        yield RolloutCluster(fake, runtime, proxy, kubeconfig, canary)
    finally:
        if proxy is not None:
            proxy.stop()
        fake.stop()
        runtime.close()


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[RolloutCluster]:
    canary = getattr(request, "param", "canary") == "canary"
    with rollout_cluster(tmp_path_factory.mktemp("rollout-cluster"), canary=canary) as cluster:
        yield cluster


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cluster: RolloutCluster) -> ReleaseProject:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    (project.path / "releasegate.toml").write_text(cluster.config_toml() + FAST_VARS.format(post_switch_s=3)
                                                   + CANARY_VARS + CANARY)
    if not cluster.canary:
        return project
    # The side-by-side comparison is the blue-green analysis; here each step's own analysis decides.
    (project.path / "suites" / "analysis" / "test_compare.py").unlink()
    return project


def _properties(case: dict[str, Any]) -> dict[str, str]:
    return {str(name): str(value) for name, value in case["properties"]}


def test_a_canary_rollout_release_runs_the_rollouts_steps_and_promotes(project: ReleaseProject,
                                                                       cluster: RolloutCluster) -> None:
    cluster.fake.clear_requests()
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    assert _properties(junit.case("preflight"))["release.candidate_slot"] == "canary"
    # Users reach the candidate from provision on (the Rollout's first setWeight): the shipped check says so.
    early = junit.case("test_users_still_reach_the_previous_version")
    assert early["outcome"] == "skipped" and "as soon as the candidate is deployed" in early["message"], early
    names = junit.order()
    shares = []
    for weight in (10, 50, 100):
        shift = _properties(junit.case(f"shift[{weight}%]"))
        assert shift["release.shift.effective_weight"] == str(weight), shift
        analysis = names.index(f"test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up[{weight}%]")
        assert names.index(f"shift[{weight}%]") < analysis
        checks = _properties(junit.cases[analysis])
        share = float(checks[f"check.share of v2 == {weight}% ± 2pp.value"].rstrip("%"))
        assert abs(share - weight) <= 2, (weight, share)
        shares.append(f"{weight}% -> {share:g}%")
    print(f"\nArgo canary Rollout, share of v2 measured through the app Service per step: {', '.join(shares)}")
    assert names.index("shift[100%]") < names.index("promote") < names.index("finalize")
    status = cluster.rollout()["status"]
    assert (status["phase"], status["stableRS"]) == ("Healthy", status["currentPodHash"])
    assert cluster.serving_versions() == {"v2"}
    assert not [r for r in cluster.fake.requests if r.status == 403]
    rollout_writes = [(r.method, r.path.rsplit("/", 1)[-1]) for r in cluster.fake.write_requests()
                      if "/rollouts/" in r.path]
    # set image, then the plugin's promote at 10 -> 50 and 50 -> 100; step 100 completed the Rollout.
    assert rollout_writes == [("PUT", APP), ("PATCH", "status"), ("PATCH", "status")], rollout_writes


def test_a_bad_canary_rollout_is_aborted_at_the_first_step(project: ReleaseProject,
                                                          cluster: RolloutCluster) -> None:
    # Without the load stage, the candidate's errors are first seen on users' traffic at 10%.
    (project.path / "suites" / "load" / "test_load.py").unlink()
    v1_hash = cluster.rollout()["status"]["stableRS"]
    result = project.release("--release", "v2-errors")
    assert result.ret == 1, result.stdout.str()
    junit = project.junit()
    rollback = _properties(junit.case("rollback"))
    assert rollback["release.rollback.reason"].startswith("analysis[10%] failed: "), rollback
    assert junit.case("shift[50%]")["outcome"] == "skipped" and junit.case("promote")["outcome"] == "skipped"
    failing = junit.case("test_the_split_gives_the_candidate_its_share_and_both_versions_hold_up[10%]")
    # The candidate's requests: its share of the step's load through the service (the error-rate checks of
    # both versions share one property name, so that one cannot say whose count it holds).
    checks = _properties(failing)
    share_key = "check.share of v2-errors == 10% ± 2pp"
    served = round(float(checks[f"{share_key}.value"].rstrip("%")) / 100 * int(checks[f"{share_key}.samples"]))
    print(f"\nArgo canary Rollout v2-errors: {float(rollback['release.rollback.to_stable_s']):.2f}s from the failing "
          f"check to all traffic on stable; the candidate served {served} requests of the step's load (users "
          "reached it from provision on, before shift[10%]: see argo_target.py)")
    status = cluster.rollout()["status"]
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", v1_hash, v1_hash)
    assert "abort" not in status
    assert cluster.serving_versions() == {"v1"}
    aborts = [r.json() for r in cluster.fake.write_requests() if r.path.endswith(f"/rollouts/{APP}/status")
              and r.json() == {"status": {"abort": True}}]
    assert len(aborts) == 1
    assert not [r for r in cluster.fake.requests if r.status == 403]
    # Exposure is counted from provision, when the Rollout's first setWeight gave users the candidate.
    assert float(rollback["release.rollback.exposed_s"]) > float(rollback["release.rollback.to_stable_s"])
    assert float(rollback["release.rollback.exposed_s"]) >= float(
        _properties(junit.case("provision"))["release.provision.ready_s"])


def test_a_dry_run_of_a_canary_rollout_is_refused_before_anything_changes(project: ReleaseProject,
                                                                           cluster: RolloutCluster) -> None:
    cluster.fake.clear_requests()
    result = project.release("--release", "v2", "--release-dry-run")
    assert result.ret == 4, result.stdout.str()
    assert "--release-dry-run cannot keep users off the candidate" in project.junit().case("preflight")["text"]
    assert cluster.fake.write_requests() == []


@pytest.mark.parametrize("cluster", ["blue-green"], indirect=True)
def test_a_blue_green_rollout_release_promotes_through_the_preview(project: ReleaseProject,
                                                                   cluster: RolloutCluster) -> None:
    v1_hash = cluster.rollout()["status"]["stableRS"]
    cluster.fake.clear_requests()
    result = project.release("--release", "v2")
    assert result.ret == 0, result.stdout.str()
    junit = project.junit()
    assert junit.suite_properties["release.decision"] == "promoted"
    # Users stayed on v1 until the switch: the shipped smoke check passed here, and compare ran on both.
    assert junit.case("test_users_still_reach_the_previous_version")["outcome"] == "passed"
    assert junit.case("test_candidate_is_no_worse_than_baseline")["outcome"] == "passed"
    assert _properties(junit.case("preflight"))["release.candidate_slot"] == "preview"
    status = cluster.rollout()["status"]
    assert status["phase"] == "Healthy" and status["stableRS"] == status["currentPodHash"] != v1_hash
    assert status["blueGreen"]["activeSelector"] == status["currentPodHash"]
    assert cluster.serving_versions() == {"v2"}
    rollout_writes = [(r.method, r.path.rsplit("/", 1)[-1], r.json() if r.method == "PATCH" else None)
                      for r in cluster.fake.write_requests() if "/rollouts/" in r.path]
    assert rollout_writes == [("PUT", APP, None), ("PATCH", "status", {"status": {"pauseConditions": None}})]
    assert not [r for r in cluster.fake.requests if r.status == 403]
