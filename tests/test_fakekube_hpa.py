"""The fake API server's autoscaling/v2 HorizontalPodAutoscalers, as a v1.32 server serves them (defaults,
status subresource, validation, delete Status), through the official client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube

NS = "shop"


def hpa(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-stable"},
                     "maxReplicas": 20, **spec}}


@pytest.fixture
def auto(fake_kube: FakeKube, kube_api: Any) -> client.AutoscalingV2Api:
    fake_kube.seed_namespace(NS)
    return client.AutoscalingV2Api(kube_api)


def test_discovery_lists_autoscaling_v2_like_a_v1_32_server(auto: client.AutoscalingV2Api) -> None:
    resources = {r.name: r for r in auto.get_api_resources().resources}
    assert list(resources) == ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]
    hpas = resources["horizontalpodautoscalers"]
    assert (hpas.kind, hpas.namespaced, hpas.short_names, hpas.categories) == \
        ("HorizontalPodAutoscaler", True, ["hpa"], ["all"])


def test_create_applies_the_defaults_and_resets_the_status(auto: client.AutoscalingV2Api) -> None:
    body = hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    body["status"] = {"currentReplicas": 7, "desiredReplicas": 7}
    created = json.loads(auto.create_namespaced_horizontal_pod_autoscaler(NS, body, _preload_content=False).data)
    assert created["metadata"]["generation"] == 1
    assert created["spec"]["minReplicas"] == 1
    assert created["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert created["spec"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    assert created["status"] == {"desiredReplicas": 0}  # status is the controller's: reset on create


def test_the_status_is_written_through_its_subresource_only(auto: client.AutoscalingV2Api) -> None:
    auto.create_namespaced_horizontal_pod_autoscaler(NS, hpa())
    merge = "application/merge-patch+json"
    auto.patch_namespaced_horizontal_pod_autoscaler("web", NS, {"status": {"currentReplicas": 3}},
                                                    _content_type=merge)
    assert auto.read_namespaced_horizontal_pod_autoscaler("web", NS).status.current_replicas is None
    auto.patch_namespaced_horizontal_pod_autoscaler_status("web", NS, {"status": {"currentReplicas": 3}},
                                                           _content_type=merge)
    read = auto.read_namespaced_horizontal_pod_autoscaler("web", NS)
    assert (read.status.current_replicas, read.metadata.generation) == (3, 1)
    changed = auto.patch_namespaced_horizontal_pod_autoscaler("web", NS, {"spec": {"maxReplicas": 30}},
                                                              _content_type=merge)
    assert (changed.metadata.generation, changed.status.current_replicas) == (2, 3)


@pytest.mark.parametrize(("spec", "causes"), [
    ({"minReplicas": 0}, [("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1")]),
    ({"minReplicas": 5, "maxReplicas": 3},
     [("spec.maxReplicas", "Invalid value: 3: must be greater than or equal to `minReplicas`")]),
    ({"maxReplicas": 0}, [("spec.maxReplicas", "Invalid value: 0: must be greater than 0"),
                          ("spec.maxReplicas", "Invalid value: 0: must be greater than or equal to `minReplicas`")]),
    ({"scaleTargetRef": {"kind": "Deployment", "name": ""}}, [("spec.scaleTargetRef.name", "Required value")]),
])
def test_an_invalid_spec_is_a_422_with_the_upstream_causes(auto: client.AutoscalingV2Api, spec: dict[str, Any],
                                                           causes: list[tuple[str, str]]) -> None:
    with pytest.raises(ApiException) as error:
        auto.create_namespaced_horizontal_pod_autoscaler(NS, hpa("bad", **spec))
    assert error.value.status == 422
    body = json.loads(error.value.body)
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "HorizontalPodAutoscaler" and body["details"]["group"] == "autoscaling"
    assert [(c["field"], c["message"]) for c in body["details"]["causes"]] == causes


def test_delete_answers_a_status_and_a_second_delete_404(auto: client.AutoscalingV2Api) -> None:
    auto.create_namespaced_horizontal_pod_autoscaler(NS, hpa())
    deleted = json.loads(auto.delete_namespaced_horizontal_pod_autoscaler("web", NS, _preload_content=False).data)
    assert (deleted["kind"], deleted["status"]) == ("Status", "Success")
    with pytest.raises(ApiException) as error:
        auto.delete_namespaced_horizontal_pod_autoscaler("web", NS)
    assert error.value.status == 404
    assert json.loads(error.value.body)["message"] == \
        'horizontalpodautoscalers.autoscaling "web" not found'
