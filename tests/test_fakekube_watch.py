"""Watches through ``kubernetes.watch.Watch``: initial state, live changes, bookmarks, 410 Expired."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.seed import deployment, service

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


def test_watch_sees_initial_state_then_changes(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    patched = threading.Event()
    for event in w.stream(core.list_namespaced_service, NS, timeout_seconds=5):
        seen.append((event["type"], event["object"].spec.selector["slot"]))
        if not patched.is_set():
            patched.set()
            core.patch_namespaced_service("web", NS, {"spec": {"selector": {"slot": "green"}}})
            core.patch_namespaced_service("web", NS, {"spec": {"selector": {"slot": "green"}}})  # no-op
        elif event["type"] == "MODIFIED":
            w.stop()
    assert seen == [("ADDED", "blue"), ("MODIFIED", "green")]


def test_watch_from_list_resource_version_and_bookmarks(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    apps = client.AppsV1Api(kube_api)
    listed = apps.list_namespaced_deployment(NS)
    fake_kube.create(deployment(NS, "web", "blue", "shop/web:v1", replicas=1))
    fake_kube.wait_for(lambda: fake_kube.deployment_available(NS, "web-blue"))
    events = []
    w = watch.Watch()
    # With timeoutSeconds=3 the server sends its pre-timeout BOOKMARK 2 s before the deadline.
    for event in w.stream(
        apps.list_namespaced_deployment,
        NS,
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        events.append(event)
        if event["type"] == "BOOKMARK":
            w.stop()
    types = [e["type"] for e in events]
    assert types[0] == "ADDED" and types[-1] == "BOOKMARK"
    assert set(types[1:-1]) == {"MODIFIED"}
    last = events[-2]["object"]
    assert last.status.available_replicas == 1
    assert int(events[-1]["raw_object"]["metadata"]["resourceVersion"]) >= int(last.metadata.resource_version)


def test_too_old_resource_version_is_an_expired_error_event(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    apps = client.AppsV1Api(kube_api)
    old = apps.list_namespaced_deployment(NS).metadata.resource_version
    fake_kube.create(deployment(NS, "web", "blue", "shop/web:v1", replicas=1))
    fake_kube.compact()
    raw = apps.list_namespaced_deployment(
        NS, watch=True, resource_version=old, timeout_seconds=2, _preload_content=False
    )
    assert raw.status == 200
    line = raw.data.decode().strip()
    assert '"type":"ERROR"' in line and '"code":410' in line and '"reason":"Expired"' in line
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(apps.list_namespaced_deployment, NS, resource_version=old, timeout_seconds=2))
    assert err.value.status == 410


def test_watch_list_ends_initial_events_with_a_bookmark(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    fake_kube.create(deployment(NS, "web", "blue", "shop/web:v1", replicas=1))
    apps = client.AppsV1Api(kube_api)
    events = []
    w = watch.Watch()
    for event in w.stream(
        apps.list_namespaced_deployment,
        NS,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        events.append(event)
        if event["type"] == "BOOKMARK":
            w.stop()
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["raw_object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_label_selector_watch_sends_deleted_when_an_object_leaves(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg", "labels": {"team": "a"}}})
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.patch_namespaced_config_map("cfg", NS, {"metadata": {"labels": {"team": "b"}}})
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map,
            NS,
            label_selector="team=a",
            resource_version=rv,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["DELETED"]
