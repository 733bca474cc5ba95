"""The fake itself: no leaked threads or sockets, discovery shapes, request recording of a watch."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from kubernetes import client, watch

from tests.fakekube import FakeKube

pytest_plugins = ["tests.fakekube.fixtures"]


def test_stop_leaves_no_threads_or_listening_socket() -> None:
    baseline = {t.ident for t in threading.enumerate()}
    fake = FakeKube().start()
    port = int(fake.url.rsplit(":", 1)[1])
    with client.ApiClient(fake.client_configuration()) as api:
        core = client.CoreV1Api(api)
        core.list_namespace()
        w = watch.Watch()
        for _event in w.stream(core.list_namespace, timeout_seconds=30):
            w.stop()  # hang up mid-stream: the server must notice and free the handler
        fake.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        fake.create(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "shop/web:v1"}]},
                    },
                },
            }
        )
        fake.wait_for(lambda: fake.deployment_available("shop", "web"))
    fake.stop()
    leftovers = [t for t in threading.enumerate() if t.ident not in baseline and t.is_alive()]
    assert leftovers == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert not fake.errors


def test_discovery_documents(fake_kube: FakeKube, kube_api: Any) -> None:
    assert client.CoreApi(kube_api).get_api_versions().versions == ["v1"]
    core_resources = {r.name for r in client.CoreV1Api(kube_api).get_api_resources().resources}
    assert {"pods", "pods/status", "services", "endpoints", "events", "namespaces"} <= core_resources
    apps = client.AppsV1Api(kube_api).get_api_resources()
    scale = next(r for r in apps.resources if r.name == "deployments/scale")
    assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
    groups = {g.name for g in client.ApisApi(kube_api).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "discovery.k8s.io"} <= groups
    leases = client.CoordinationV1Api(kube_api).get_api_resources()
    assert [r.name for r in leases.resources] == ["leases"]


def test_unknown_group_is_plain_text_404(fake_kube: FakeKube, kube_api: Any) -> None:
    response = kube_api.call_api(
        *kube_api.param_serialize(
            method="GET", resource_path="/apis/nope.example.com/v1/things", auth_settings=["BearerToken"]
        )
    )
    response.read()
    assert response.status == 404
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert response.data == b"404 page not found\n"


def test_watch_requests_are_recorded(fake_kube: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    list(watch.Watch().stream(core.list_namespace, timeout_seconds=1))
    recorded = [r for r in fake_kube.requests if r.watch]
    assert len(recorded) == 1
    assert recorded[0].status == 200
    assert "watch=True" in recorded[0].path or "watch=true" in recorded[0].path
    assert fake_kube.write_requests() == []
