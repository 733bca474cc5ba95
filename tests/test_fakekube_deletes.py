"""Deletion semantics: propagation policies, preconditions, garbage collection (``10-delete.json``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.polling import wait_until
from tests.fakekube.seed import deployment

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


@pytest.fixture
def rolled_out(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_namespace(NS)
    fake_kube.create(deployment(NS, "web", "green", "shop/web:v2", replicas=2))
    fake_kube.wait_for(lambda: fake_kube.deployment_available(NS, "web-green"))
    return fake_kube


def children(fake: FakeKube) -> tuple[int, int]:
    return len(fake.list_objects("replicasets", NS)), len(fake.list_objects("pods", NS))


def test_uid_precondition_mismatch_is_a_conflict(rolled_out: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    with pytest.raises(ApiException) as err:
        apps.delete_namespaced_deployment(
            "web-green",
            NS,
            body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid="0" * 8 + "-0000-0000-0000-" + "0" * 12)
            ),
        )
    assert err.value.status == 409
    assert json.loads(err.value.body)["details"]["kind"] == "Deployment"


def test_foreground_delete_keeps_the_owner_until_children_are_gone(rolled_out: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    uid = apps.read_namespaced_deployment("web-green", NS).metadata.uid
    rolled_out.pause_controllers()
    pending = apps.delete_namespaced_deployment(
        "web-green",
        NS,
        body=client.V1DeleteOptions(propagation_policy="Foreground", preconditions=client.V1Preconditions(uid=uid)),
    )
    pending = pending if isinstance(pending, dict) else pending.to_dict()
    assert pending["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert pending["metadata"]["deletionTimestamp"]
    assert apps.read_namespaced_deployment("web-green", NS).metadata.deletion_timestamp is not None
    rolled_out.resume_controllers()

    def gone() -> bool:
        try:
            apps.read_namespaced_deployment("web-green", NS)
        except ApiException as err:
            return err.status == 404
        return False

    wait_until(gone, what="deployment removed after its children")
    assert children(rolled_out) == (0, 0)


def test_background_delete_answers_success_and_collects_children(rolled_out: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    answer = apps.delete_namespaced_deployment("web-green", NS, propagation_policy="Background")
    answer = answer if isinstance(answer, dict) else answer.to_dict()
    assert answer["status"] == "Success"
    assert answer["details"]["kind"] == "deployments"
    wait_until(lambda: children(rolled_out) == (0, 0), what="garbage collection")


def test_orphan_delete_leaves_the_replicaset(rolled_out: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.delete_namespaced_deployment("web-green", NS, propagation_policy="Orphan")
    wait_until(lambda: rolled_out.get_object("deployments", NS, "web-green") is None, what="owner gone")
    rs = rolled_out.list_objects("replicasets", NS)
    assert len(rs) == 1 and "ownerReferences" not in rs[0]["metadata"]
    assert children(rolled_out) == (1, 2)


def test_pod_delete_is_graceful_and_the_replicaset_replaces_it(rolled_out: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    victim = core.list_namespaced_pod(NS).items[0]
    answer = core.delete_namespaced_pod(victim.metadata.name, NS)
    assert answer.metadata.deletion_grace_period_seconds == 30
    wait_until(
        lambda: (
            victim.metadata.name not in {p.metadata.name for p in core.list_namespaced_pod(NS).items}
            and len(core.list_namespaced_pod(NS).items) == 2
        ),
        what="replacement pod",
    )


def test_namespace_delete_empties_it(rolled_out: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    answer = core.delete_namespace(NS)
    answer = answer if isinstance(answer, dict) else answer.to_dict()
    assert answer["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "late"}})
    assert err.value.status == 403
    wait_until(lambda: rolled_out.get_object("namespaces", "", NS) is None, what="namespace gone")
    assert children(rolled_out) == (0, 0)
