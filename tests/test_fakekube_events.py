"""Events: kubelet/controller events in core/v1, and the events.k8s.io/v1 view of the same storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.seed import deployment

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


@pytest.fixture
def rolled_out(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_namespace(NS)
    fake_kube.create(deployment(NS, "web", "blue", "shop/web:v1", replicas=1))
    fake_kube.wait_for(lambda: fake_kube.deployment_available(NS, "web-blue"))
    return fake_kube


def test_controller_events_as_recorded(rolled_out: FakeKube, kube_api: Any) -> None:
    events = client.CoreV1Api(kube_api).list_namespaced_event(NS).items
    by_reason = {e.reason: e for e in events}
    assert set(by_reason) == {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled"}
    scaling = by_reason["ScalingReplicaSet"]
    assert scaling.message.startswith("Scaled up replica set web-blue-") and scaling.message.endswith("from 0 to 1")
    assert (scaling.source.component, scaling.count, scaling.type) == ("deployment-controller", 1, "Normal")
    assert scaling.event_time is None and scaling.reporting_instance == ""
    scheduled = by_reason["Scheduled"]
    assert scheduled.first_timestamp is None and scheduled.count is None and scheduled.action == "Binding"
    assert scheduled.message.endswith(" to kwok-node-0")


def test_events_k8s_io_view_shares_the_storage(rolled_out: FakeKube, kube_api: Any) -> None:
    events_v1 = client.EventsV1Api(kube_api)
    # Controller events have no eventTime: the v1 view serialises "eventTime": null, which the client's
    # typed model refuses (as it would against a real cluster), so read the raw JSON.
    listed = json.loads(events_v1.list_namespaced_event(NS, _preload_content=False).data)
    assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"
    scaling = next(i for i in listed["items"] if i.get("reason") == "ScalingReplicaSet")
    assert scaling["eventTime"] is None and scaling["deprecatedCount"] == 1
    assert scaling["regarding"]["kind"] == "Deployment" and scaling["reportingController"] == "deployment-controller"
    with pytest.raises(ValueError):
        events_v1.list_namespaced_event(NS)

    created = events_v1.create_namespaced_event(
        NS,
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="switched"),
            event_time=datetime(2026, 11, 27, 16, 8, 34, 276781, tzinfo=UTC),
            reporting_controller="releasegate",
            reporting_instance="runner-1",
            action="Switch",
            reason="TrafficSwitched",
            type="Normal",
            note="web now serves v2",
            regarding=client.V1ObjectReference(kind="Service", name="web", namespace=NS),
        ),
    )
    assert created.note == "web now serves v2"
    core = client.CoreV1Api(kube_api).read_namespaced_event("switched", NS)
    assert (core.message, core.reporting_component, core.involved_object.kind) == (
        "web now serves v2",
        "releasegate",
        "Service",
    )
    with pytest.raises(ApiException) as err:
        events_v1.create_namespaced_event(
            NS,
            {"metadata": {"name": "incomplete"}, "eventTime": "2026-11-27T16:08:34.276781Z", "type": "Normal"},
        )
    assert err.value.status == 422
    assert json.loads(err.value.body)["message"].startswith('Event.events.k8s.io "incomplete" is invalid: [')
