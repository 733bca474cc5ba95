"""The kubernetes canary target (charts/canary-app's layout) against the fake API server, through the official
client over real HTTP: replica weights as Argo Rollouts counts them, the pod template carried to the canary,
promote, abort, rollback after a promotion, an HPA on stable, and ALB weights in the Ingress annotation.

Pods here are simulated (tests/fakekube's kubelet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from releasegate.core.config import Config, parse_config
from releasegate.core.errors import ConfigError
from releasegate.core.types import Phase, ReleaseState, Role, TrafficSplit
from releasegate.targets.kubernetes.canary import (
    KubernetesCanaryTarget,
    canary_stable_counts,
    effective_weight,
    traffic_routed_canary_count,
)
from tests.fakekube import FakeKube

NS = "shop"
APP = "web"
ACTION_KEY = f"alb.ingress.kubernetes.io/actions.{APP}"
# The pod template a platform team gives its apps: all of it must reach the canary.
POD_SPEC = {
    "nodeSelector": {"workload": "application"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "application", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"app": APP}}}}]}},
}
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def make_config(tmp_path: Path, fake: FakeKube, **kubernetes: Any) -> Config:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", context="fake", namespace=NS)
    section = {"kubeconfig": str(kubeconfig), "namespace": NS, "service_url": "http://web.example",
               "preview_url": "http://web-canary.example", "baseline_url": "http://web-stable.example",
               "ready_timeout_s": 20, "endpoints_timeout_s": 20, "min_ready_s": 0.1, **kubernetes}
    return parse_config({"app": {"name": APP}, "release": {"strategy": "canary"}, "kubernetes": section,
                         "prometheus": {"url": "http://prom.example"}},
                        source="test config", base_dir=tmp_path, project_root=tmp_path)


def seed(fake: FakeKube, replicas: int, *, ingress: bool = False) -> FakeKube:
    pod_spec = {**POD_SPEC}
    fake.seed_canary(namespace=NS, app=APP, image="shop/web:v1", replicas=replicas, pod_spec=pod_spec,
                     ingress=ingress)
    stable = fake.get_object("deployments", NS, f"{APP}-stable")
    assert stable is not None
    stable["spec"]["template"]["spec"]["containers"][0]["resources"] = RESOURCES
    fake.apply(stable)
    fake.wait_for(lambda: fake.deployment_available(NS, f"{APP}-stable"), timeout=10)
    fake.clear_requests()
    return fake


@pytest.fixture
def open_target(tmp_path: Path) -> Iterator[Any]:
    opened: list[KubernetesCanaryTarget] = []

    def open_(fake: FakeKube, **kubernetes: Any) -> KubernetesCanaryTarget:
        target = KubernetesCanaryTarget.open(make_config(tmp_path, fake, **kubernetes))
        opened.append(target)
        return target

    yield open_
    for target in opened:
        target.close()


def replicas(fake: FakeKube, slot: str) -> int | None:
    deployment = fake.get_object("deployments", NS, f"{APP}-{slot}")
    return None if deployment is None else int(deployment["spec"]["replicas"])


def selector(fake: FakeKube) -> dict[str, str]:
    service = fake.get_object("services", NS, APP)
    assert service is not None
    return dict(service["spec"]["selector"])


def endpoint_slots(fake: FakeKube) -> list[str]:
    """The slot of every ready pod the Service `<app>` lists, sorted."""
    pods = {pod["status"].get("podIP"): pod["metadata"]["labels"]["slot"] for pod in fake.list_objects("pods", NS)}
    return sorted(pods[ip] for ip in fake.endpoints_ready(NS, APP))


def version_served(fake: FakeKube, slot: str) -> tuple[str, str]:
    deployment = fake.get_object("deployments", NS, f"{APP}-{slot}")
    assert deployment is not None
    template = deployment["spec"]["template"]
    return template["metadata"]["labels"]["version"], template["spec"]["containers"][0]["image"]


# -- Argo Rollouts' arithmetic ------------------------------------------------------------------------------

# argoproj/argo-rollouts utils/replicaset/canary_test.go, TestApproximateWeightedCanaryStableReplicaCounts
# (replicas 10, maxSurge 1): weight -> (canary, stable).
@pytest.mark.parametrize(("weight", "expected"), [
    (0, (0, 10)), (1, (1, 10)), (10, (1, 9)), (18, (2, 9)), (19, (2, 9)), (20, (2, 8)), (23, (2, 8)),
    (24, (3, 8)), (25, (3, 8)), (50, (5, 5)), (99, (10, 1)), (100, (10, 0))])
def test_replica_counts_equal_argo_rollouts(weight: int, expected: tuple[int, int]) -> None:
    assert canary_stable_counts(10, weight, max_surge=1) == expected


@pytest.mark.parametrize(("total", "weight", "surge", "expected"), [
    (3, 10, 1, (1, 3)),  # 1 of 3 is 33% away by 23 points, 1 of 4 by 15: Argo surges to 4 pods (25%)
    (3, 10, 0, (1, 2)),  # no surge: 1 of 3 (33%), never 0 for a weight in 1..99
    (3, 50, 1, (2, 2)),  # 1.5 is a tie at 3 pods: the surge option 2 of 4 is exact
    (5, 10, 1, (1, 5)), (1, 50, 0, (1, 0)), (0, 50, 1, (0, 0))])
def test_replica_counts_for_small_deployments(total: int, weight: int, surge: int,
                                              expected: tuple[int, int]) -> None:
    assert canary_stable_counts(total, weight, surge) == expected


def test_traffic_routed_counts_and_effective_weight() -> None:
    assert [traffic_routed_canary_count(10, w) for w in (0, 10, 50, 100)] == [0, 1, 5, 10]
    assert traffic_routed_canary_count(3, 10) == 1
    assert [effective_weight(1, 9), effective_weight(1, 3), effective_weight(1, 2), effective_weight(0, 0)] == \
        [10, 25, 33, 0]


# -- replica mode ---------------------------------------------------------------------------------------------

def test_ten_replicas_at_10_percent_give_one_canary_pod(fake_kube: FakeKube, open_target: Any) -> None:
    seed(fake_kube, 10)
    target = open_target(fake_kube)
    assert target.live_state().traffic == TrafficSplit.all_to("stable")
    assert target.candidate_slot("stable") == "canary"
    assert fake_kube.write_requests() == []  # opening only reads

    target.deploy("canary", "v2")
    status = target.wait_ready("canary", 20)
    assert (status.replicas, status.ready_replicas, status.version) == (1, 1, "v2")
    # Provisioned, but kept out of <app>: users see only stable until the first shift.
    assert selector(fake_kube) == {"app": APP, "slot": "stable"}
    fake_kube.wait_for(lambda: endpoint_slots(fake_kube) == ["stable"] * 10, timeout=10)
    assert target.live_state().traffic == TrafficSplit.all_to("stable")
    endpoints = target.endpoints("canary")
    assert (endpoints[Role.CANDIDATE].url, endpoints[Role.CANDIDATE].version) == ("http://web-canary.example", "v2")
    assert (endpoints[Role.BASELINE].slot, endpoints[Role.BASELINE].version) == ("stable", "v1")

    result = target.set_traffic(TrafficSplit.split("stable", "canary", 10))
    print(f"10 replicas at 10%: effective {result.traffic.describe()} in {result.converged_ms:.0f} ms")
    assert dict(result.traffic.weights) == {"stable": 90, "canary": 10}
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (1, 9)
    assert selector(fake_kube) == {"app": APP}
    assert endpoint_slots(fake_kube) == ["canary"] + ["stable"] * 9  # converged when set_traffic returned
    assert dict(target.live_state().traffic.weights) == {"stable": 90, "canary": 10}
    assert dict(result.previous.weights) == {"stable": 100}
    patches = [r for r in fake_kube.write_requests() if r.method == "PATCH"]
    assert patches and all(r.content_type in ("application/strategic-merge-patch+json",
                                              "application/merge-patch+json") for r in patches)


def test_three_replicas_at_10_percent_report_the_effective_weight(fake_kube: FakeKube, open_target: Any) -> None:
    seed(fake_kube, 3)
    target = open_target(fake_kube)
    target.deploy("canary", "v2")
    target.wait_ready("canary", 20)
    result = target.set_traffic(TrafficSplit.split("stable", "canary", 10))
    print(f"3 replicas at 10%: effective {result.traffic.describe()}")
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (1, 3)  # Argo surges by one
    assert dict(result.traffic.weights) == {"stable": 75, "canary": 25}
    assert endpoint_slots(fake_kube) == ["canary", "stable", "stable", "stable"]


def test_the_canary_keeps_the_pod_template(fake_kube: FakeKube, open_target: Any) -> None:
    seed(fake_kube, 2)
    target = open_target(fake_kube)
    target.deploy("canary", "v2")
    canary = fake_kube.get_object("deployments", NS, f"{APP}-canary")
    stable = fake_kube.get_object("deployments", NS, f"{APP}-stable")
    assert canary is not None and stable is not None
    spec = canary["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"workload": "application"}
    assert spec["tolerations"] == POD_SPEC["tolerations"]
    assert spec["affinity"] == POD_SPEC["affinity"]
    assert spec["containers"][0]["resources"] == RESOURCES
    assert spec["containers"][0]["image"] == "shop/web:v2"
    assert canary["spec"]["selector"]["matchLabels"] == {"app": APP, "slot": "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {"app": APP, "slot": "canary", "version": "v2"}
    assert canary["spec"]["replicas"] == 1
    # Everything else of the pod spec is stable's, byte for byte.
    strip = ("containers",)
    assert {k: v for k, v in spec.items() if k not in strip} == \
        {k: v for k, v in stable["spec"]["template"]["spec"].items() if k not in strip}


def test_steps_then_promote_updates_stable_in_place_and_removes_the_canary(fake_kube: FakeKube,
                                                                           open_target: Any) -> None:
    seed(fake_kube, 10)
    target = open_target(fake_kube)
    target.deploy("canary", "v2")
    target.wait_ready("canary", 20)
    effective = {w: dict(target.set_traffic(TrafficSplit.split("stable", "canary", w)).traffic.weights)
                 for w in (10, 50, 100)}
    assert effective == {10: {"stable": 90, "canary": 10}, 50: {"stable": 50, "canary": 50}, 100: {"canary": 100}}
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (10, 0)
    assert target.live_state().live_slot == "canary"

    promotion = target.promote("canary", "v2")  # as the controller calls it: the slot the candidate runs in
    assert (promotion.live_slot, promotion.retired_slot) == ("stable", None)
    assert promotion.switch.traffic == TrafficSplit.all_to("stable")
    assert dict(promotion.switch.previous.weights) == {"canary": 100}
    assert "web-stable updated in place to v2 (10 replicas)" in promotion.detail
    assert version_served(fake_kube, "stable") == ("v2", "shop/web:v2")
    assert replicas(fake_kube, "stable") == 10
    assert replicas(fake_kube, "canary") is None  # removed
    assert endpoint_slots(fake_kube) == ["stable"] * 10
    state = target.live_state()
    assert (state.live_slot, state.live_version, state.versions["canary"]) == ("stable", "v2", None)
    after = target.endpoints("stable")  # what the controller publishes after the promotion
    assert (after[Role.CANDIDATE].url, after[Role.CANDIDATE].version) == ("http://web-stable.example", "v2")
    assert Role.BASELINE not in after and after[Role.SERVICE].url == "http://web.example"
    stable = fake_kube.get_object("deployments", NS, f"{APP}-stable")
    assert stable is not None and stable["spec"]["template"]["spec"]["nodeSelector"] == {"workload": "application"}

    # The controller's rollback after a promotion: the old version rolls out again, in place.
    rollback = target.promote("stable", "v1")
    assert rollback.live_slot == "stable"
    assert version_served(fake_kube, "stable") == ("v1", "shop/web:v1")
    assert target.live_state().live_version == "v1"
    target.remove("canary")  # what the controller does next: idempotent
    assert fake_kube.errors == []


def test_abort_puts_all_traffic_back_on_stable_and_removes_the_canary(fake_kube: FakeKube,
                                                                      open_target: Any) -> None:
    seed(fake_kube, 4)
    target = open_target(fake_kube)
    target.deploy("canary", "v2-errors")
    target.wait_ready("canary", 20)
    target.set_traffic(TrafficSplit.split("stable", "canary", 50))
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (2, 2)
    assert endpoint_slots(fake_kube) == ["canary", "canary", "stable", "stable"]
    fake_kube.clear_requests()

    result = target.set_traffic(TrafficSplit.all_to("stable"))
    assert result.traffic == TrafficSplit.all_to("stable")
    writes = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in fake_kube.write_requests()]
    # One move: the Service drops the canary first, then the replicas follow.
    assert writes[0] == ("PATCH", ["services", APP])
    assert selector(fake_kube) == {"app": APP, "slot": "stable"}
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (0, 4)
    fake_kube.wait_for(lambda: endpoint_slots(fake_kube) == ["stable"] * 4, timeout=10)
    target.remove("canary")
    target.remove("canary")  # idempotent
    assert replicas(fake_kube, "canary") is None
    state = target.live_state()
    assert state.traffic == TrafficSplit.all_to("stable")
    assert state.versions == {"stable": "v1", "canary": None}


def record_first_deploy(target: KubernetesCanaryTarget, phase: Phase) -> None:
    """What the controller writes before each action of a first deploy (no previous version)."""
    target.record_release_state(ReleaseState(run_id="run-1", version="v1", previous_version=None, live_slot="stable",
                                             live_version=None, candidate_slot="canary", phase=phase, updated_at=1.0))


def test_a_first_deploy_verifies_a_full_size_canary_promotes_it_and_rolls_back_to_empty(fake_kube: FakeKube,
                                                                                        open_target: Any) -> None:
    fake_kube.seed_canary(namespace=NS, app=APP, image="shop/web:v1", replicas=3, pod_spec=POD_SPEC, empty=True)
    target = open_target(fake_kube)  # preflight accepts the empty layout
    state = target.live_state()
    assert (state.live_slot, state.live_version, dict(state.versions)) == ("stable", None, {"stable": None,
                                                                                          "canary": None})
    target.deploy("canary", "v1")
    assert target.wait_ready("canary", 20).ready_replicas == 3  # the annotated count: verified at its full size
    assert version_served(fake_kube, "canary") == ("v1", "shop/web:v1")
    canary = fake_kube.get_object("deployments", NS, f"{APP}-canary")
    assert canary is not None and canary["spec"]["template"]["spec"]["tolerations"] == POD_SPEC["tolerations"]
    assert endpoint_slots(fake_kube) == []  # users reach nothing before the promotion
    assert Role.BASELINE not in target.endpoints("canary")

    record_first_deploy(target, Phase.SWITCHING)
    promotion = target.promote("canary", "v1")
    assert "web-stable updated in place to v1 (3 replicas)" in promotion.detail
    assert version_served(fake_kube, "stable") == ("v1", "shop/web:v1")
    assert replicas(fake_kube, "canary") is None and endpoint_slots(fake_kube) == ["stable"] * 3
    stable = fake_kube.get_object("deployments", NS, f"{APP}-stable")
    assert stable is not None and stable["spec"]["template"]["spec"]["nodeSelector"] == {"workload": "application"}
    assert target.live_state().live_version == "v1"

    # The controller's rollback after a promotion that had no previous version: all traffic to stable, which
    # goes back to what the chart installed (0 replicas, no version label, the untagged image).
    record_first_deploy(target, Phase.ROLLING_BACK)
    assert target.set_traffic(TrafficSplit.all_to("stable")).traffic == TrafficSplit.all_to("stable")
    stable = fake_kube.get_object("deployments", NS, f"{APP}-stable")
    assert stable is not None and stable["spec"]["replicas"] == 0
    assert "version" not in stable["spec"]["template"]["metadata"]["labels"]
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web"
    assert fake_kube.endpoints_ready(NS, APP) == []
    target.remove("canary")
    assert target.live_state().live_version is None
    assert fake_kube.errors == []


def test_bad_slots_are_config_errors(fake_kube: FakeKube, open_target: Any) -> None:
    seed(fake_kube, 2)
    target = open_target(fake_kube)
    with pytest.raises(ConfigError, match="deploys candidates to the canary slot"):
        target.deploy("green", "v2")
    with pytest.raises(ConfigError, match="has the slots stable and canary, not blue"):
        target.set_traffic(TrafficSplit.split("blue", "canary", 10))
    with pytest.raises(ConfigError, match="has the slots stable and canary, not 'green'"):
        target.promote("green", "v2")
    assert fake_kube.write_requests() == []


# -- HPA ------------------------------------------------------------------------------------------------------

def test_an_hpa_on_stable_sets_the_total_and_the_canary_gets_its_own(fake_kube: FakeKube, kube_api: Any,
                                                                     open_target: Any) -> None:
    seed(fake_kube, 4)
    auto = client.AutoscalingV2Api(kube_api)
    auto.create_namespaced_horizontal_pod_autoscaler(NS, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web-stable-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{APP}-stable"},
                 "minReplicas": 2, "maxReplicas": 20}})
    # What the HPA controller reports: it runs 10 replicas now (its scale-up has not reached the Deployment yet).
    auto.patch_namespaced_horizontal_pod_autoscaler_status(
        "web-stable-hpa", NS, {"status": {"currentReplicas": 10, "desiredReplicas": 10}},
        _content_type="application/merge-patch+json")
    target = open_target(fake_kube)
    target.deploy("canary", "v2")
    target.wait_ready("canary", 20)

    def canary_hpa() -> dict[str, Any]:
        return json.loads(auto.read_namespaced_horizontal_pod_autoscaler(f"{APP}-canary", NS,
                                                                         _preload_content=False).data)

    result = target.set_traffic(TrafficSplit.split("stable", "canary", 10))
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (1, 9)  # shares of the HPA's 10
    assert dict(result.traffic.weights) == {"stable": 90, "canary": 10}
    hpa = canary_hpa()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-canary"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}

    target.set_traffic(TrafficSplit.split("stable", "canary", 50))
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (5, 5)
    assert (canary_hpa()["spec"]["minReplicas"], canary_hpa()["spec"]["maxReplicas"]) == (5, 10)

    target.set_traffic(TrafficSplit.all_to("stable"))
    assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (0, 10)
    with pytest.raises(ApiException) as gone:
        canary_hpa()
    assert gone.value.status == 404
    names = [item.metadata.name for item in auto.list_namespaced_horizontal_pod_autoscaler(NS).items]
    assert names == ["web-stable-hpa"]  # the app's own HPA is never touched


# -- ALB mode ---------------------------------------------------------------------------------------------------

# Argo Rollouts' forward action (alb.py), canary first, the weight 0 written explicitly (argo-rollouts#491).
GOLDEN = {
    10: '{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-canary","ServicePort":"80",'
        '"Weight":10},{"ServiceName":"web-stable","ServicePort":"80","Weight":90}]}}',
    50: '{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-canary","ServicePort":"80",'
        '"Weight":50},{"ServiceName":"web-stable","ServicePort":"80","Weight":50}]}}',
    100: '{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-canary","ServicePort":"80",'
         '"Weight":100},{"ServiceName":"web-stable","ServicePort":"80","Weight":0}]}}',
    0: '{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"web-canary","ServicePort":"80",'
       '"Weight":0},{"ServiceName":"web-stable","ServicePort":"80","Weight":100}]}}',
}


def ingress_annotations(fake: FakeKube) -> dict[str, str]:
    ingress = fake.get_object("ingresses", NS, APP)
    assert ingress is not None
    return dict(ingress["metadata"]["annotations"])


def test_alb_weights_are_argo_rollouts_annotation_bodies(fake_kube: FakeKube, open_target: Any) -> None:
    seed(fake_kube, 10, ingress=True)
    target = open_target(fake_kube, traffic="alb")
    assert target.warnings == []
    target.deploy("canary", "v2")
    target.wait_ready("canary", 20)
    for weight, canary_pods in ((10, 1), (50, 5), (100, 10)):
        result = target.set_traffic(TrafficSplit.split("stable", "canary", weight))
        annotations = ingress_annotations(fake_kube)
        assert annotations[ACTION_KEY] == GOLDEN[weight]
        assert annotations["releasegate.io/managed-alb-actions"] == f'["{ACTION_KEY}"]'
        assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"  # the others stay
        expected = TrafficSplit.split("stable", "canary", weight) if weight < 100 else TrafficSplit.all_to("canary")
        assert result.traffic == expected  # exact: the effective weight is the requested one
        # Argo with traffic routing: the canary at ceil(total * weight), stable keeps all its replicas.
        assert (replicas(fake_kube, "canary"), replicas(fake_kube, "stable")) == (canary_pods, 10)
        # Only the ALB splits: in-cluster callers of <app> stay on stable for the whole release.
        assert selector(fake_kube) == {"app": APP, "slot": "stable"}
    assert target.live_state().traffic == TrafficSplit.all_to("canary")

    target.set_traffic(TrafficSplit.all_to("stable"))  # abort
    assert ingress_annotations(fake_kube)[ACTION_KEY] == GOLDEN[0]
    assert replicas(fake_kube, "canary") == 0
    assert target.live_state().traffic == TrafficSplit.all_to("stable")
    patches = [r for r in fake_kube.write_requests() if r.method == "PATCH" and "/ingresses/" in r.path]
    assert len(patches) == 4 and {r.content_type for r in patches} == {"application/merge-patch+json"}
    assert json.loads(patches[-1].body) == {"metadata": {"annotations": {
        ACTION_KEY: GOLDEN[0], "releasegate.io/managed-alb-actions": f'["{ACTION_KEY}"]'}}}


def test_alb_promote_writes_weight_0_after_stable_runs_the_new_version(fake_kube: FakeKube,
                                                                       open_target: Any) -> None:
    seed(fake_kube, 2, ingress=True)
    target = open_target(fake_kube, traffic="alb")
    target.deploy("canary", "v2")
    target.wait_ready("canary", 20)
    target.set_traffic(TrafficSplit.split("stable", "canary", 100))
    promotion = target.promote("canary", "v2")
    assert promotion.switch.traffic == TrafficSplit.all_to("stable")
    assert ingress_annotations(fake_kube)[ACTION_KEY] == GOLDEN[0]
    assert version_served(fake_kube, "stable") == ("v2", "shop/web:v2")
    assert replicas(fake_kube, "canary") is None


def test_alb_preflight_refuses_an_ingress_without_use_annotation(fake_kube: FakeKube, tmp_path: Path) -> None:
    seed(fake_kube, 2, ingress=True)
    ingress = fake_kube.get_object("ingresses", NS, APP)
    assert ingress is not None
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": 80}
    fake_kube.apply(ingress)
    fake_kube.clear_requests()
    with pytest.raises(ConfigError) as error:
        KubernetesCanaryTarget.open(make_config(tmp_path, fake_kube, traffic="alb"))
    message = str(error.value)
    assert error.value.exit_code == 4 and "\n" not in message
    assert message == (
        "Ingress shop/web routes to service `web` by port 80 (spec.rules[0].http.paths[0].backend.service.port), "
        "not by the port name `use-annotation`, so the AWS Load Balancer Controller forwards to the Service "
        f"directly and ignores the weights in {ACTION_KEY}; set that rule's backend to "
        "`service: {name: web, port: {name: use-annotation}}` (charts/canary-app renders it with traffic=alb)")
    assert fake_kube.write_requests() == []


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda fake: fake.delete_object("ingresses", NS, APP), r"^Ingress shop/web does not exist, so "
                                                            r"kubernetes.traffic = 'alb' has no weights to set"),
    (lambda fake: fake.delete_object("services", NS, f"{APP}-canary"),
     r"^Service shop/web-canary \(the canary slot alone\) does not exist; install the app with charts/canary-app"),
    (lambda fake: fake.delete_object("deployments", NS, f"{APP}-stable"),
     r"^Deployment shop/web-stable does not exist; install the app with charts/canary-app"),
], ids=["no-ingress", "no-canary-service", "no-stable-deployment"])
def test_a_missing_object_is_a_config_error_and_nothing_is_written(fake_kube: FakeKube, tmp_path: Path,
                                                                   break_it: Any, expected: str) -> None:
    seed(fake_kube, 2, ingress=True)
    break_it(fake_kube)
    fake_kube.clear_requests()
    with pytest.raises(ConfigError, match=expected):
        KubernetesCanaryTarget.open(make_config(tmp_path, fake_kube, traffic="alb"))
    assert fake_kube.write_requests() == []


def test_a_blue_green_service_is_not_taken_for_the_canary_layout(fake_kube: FakeKube, tmp_path: Path) -> None:
    seed(fake_kube, 2)
    service = fake_kube.get_object("services", NS, APP)
    assert service is not None
    service["spec"]["selector"] = {"app": APP, "slot": "blue"}
    fake_kube.apply(service)
    with pytest.raises(ConfigError, match="selects slot=blue, which is not the canary layout"):
        KubernetesCanaryTarget.open(make_config(tmp_path, fake_kube))
