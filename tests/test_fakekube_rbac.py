"""RBAC mode: rules shaped like a Role decide; everything else is the apiserver's 403."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.seed import deployment, service

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"

RELEASE_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "releasegate", "namespace": NS},
    "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"], "resourceNames": ["web"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
    ],
}


@pytest.fixture
def fake_kube() -> Any:
    tokens = {
        "admin-token": "admin",
        "norights-token": "releasegate-norights",
        "release-token": "releasegate",
    }
    fake = FakeKube(tokens=tokens, rbac={"releasegate": RELEASE_ROLE}).start()
    fake.seed_namespace(NS)
    fake.create(deployment(NS, "web", "blue", "shop/web:v1", replicas=1))
    fake.create(service(NS, "web", "web", "blue"))
    fake.create(service(NS, "web-preview", "web", "green"))
    yield fake
    fake.stop()
    assert not fake.errors


def forbidden(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as err:
        call()
    assert err.value.status == 403
    parsed: dict[str, Any] = json.loads(err.value.body)
    return parsed


def test_role_rules_allow_exactly_what_they_list(fake_kube: FakeKube, kube_api_factory: Any) -> None:
    api = kube_api_factory("release-token")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    assert apps.read_namespaced_deployment("web-blue", NS).metadata.name == "web-blue"
    apps.patch_namespaced_deployment_scale("web-blue", NS, {"spec": {"replicas": 2}})
    assert core.read_namespaced_service("web", NS).metadata.name == "web"
    body = forbidden(lambda: core.read_namespaced_service("web-preview", NS))
    assert body["message"] == (
        'services "web-preview" is forbidden: User "releasegate" cannot get resource "services" '
        'in API group "" '
        'in the namespace "shop"'
    )
    assert body["details"] == {"name": "web-preview", "kind": "services"}
    body = forbidden(lambda: apps.delete_namespaced_deployment("web-blue", NS))
    assert "cannot delete resource" in body["message"]
    body = forbidden(lambda: core.list_namespaced_pod(NS))
    assert body["message"].startswith("pods is forbidden: ")
    body = forbidden(
        lambda: apps.replace_namespaced_deployment_scale(
            "web-blue", NS, {"metadata": {"name": "web-blue"}, "spec": {"replicas": 1}}
        )
    )
    assert 'cannot update resource "deployments/scale" in API group "apps"' in body["message"]


def test_user_without_bindings_and_anonymous(fake_kube: FakeKube, kube_api_factory: Any) -> None:
    norights = client.AppsV1Api(kube_api_factory("norights-token"))
    body = forbidden(lambda: norights.read_namespaced_deployment("web-blue", NS))
    assert body["details"] == {"name": "web-blue", "group": "apps", "kind": "deployments"}
    # Discovery stays readable for any authenticated user.
    assert client.AppsV1Api(kube_api_factory("norights-token")).get_api_resources().group_version == "apps/v1"
    anonymous_config = fake_kube.client_configuration()
    anonymous_config.api_key = {}
    with client.ApiClient(anonymous_config) as anonymous:
        body = forbidden(lambda: client.AppsV1Api(anonymous).read_namespaced_deployment("web-blue", NS))
    assert 'User "system:anonymous"' in body["message"]
    admin = client.AppsV1Api(kube_api_factory("admin-token"))
    assert admin.read_namespaced_deployment("web-blue", NS).metadata.name == "web-blue"


def test_rbac_can_be_switched_off(fake_kube: FakeKube, kube_api_factory: Any) -> None:
    norights = client.CoreV1Api(kube_api_factory("norights-token"))
    forbidden(lambda: norights.list_namespaced_service(NS))
    fake_kube.set_rbac(None)
    assert len(norights.list_namespaced_service(NS).items) == 2
