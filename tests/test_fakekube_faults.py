"""Fault injection and the request log, seen through the client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.seed import service

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


@pytest.fixture
def shop(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_namespace(NS)
    fake_kube.create(service(NS, "web", "web", "blue"))
    return fake_kube


@pytest.mark.parametrize(("code", "reason"), [(500, "InternalError"), (503, "ServiceUnavailable")])
def test_server_errors_reach_the_client_then_recover(shop: FakeKube, kube_api: Any, code: int, reason: str) -> None:
    rule = shop.inject_fault(method="GET", path_regex=r"/services/web$", status=code, times=2)
    core = client.CoreV1Api(kube_api)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.read_namespaced_service("web", NS)
        assert err.value.status == code
        assert json.loads(err.value.body)["reason"] == reason
    assert core.read_namespaced_service("web", NS).metadata.name == "web"
    assert rule.hits == 2
    assert [r.fault for r in shop.requests[-3:]] == [True, True, False]


def test_throttled_write_carries_retry_after(shop: FakeKube, kube_api: Any) -> None:
    shop.inject_fault(method="PATCH", path_regex="/services", status=429, retry_after=3)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api).patch_namespaced_service("web", NS, {"metadata": {"labels": {"a": "b"}}})
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == "3"
    assert json.loads(err.value.body)["details"] == {"retryAfterSeconds": 3}


def test_throttled_read_is_retried_by_the_transport(shop: FakeKube, kube_api: Any) -> None:
    # urllib3 retries idempotent requests answered 429/503 with a Retry-After header, as it would against
    # a real apiserver's priority-and-fairness rejections: the caller only sees the second answer.
    shop.clear_requests()
    shop.inject_fault(method="GET", path_regex="/services", status=429, retry_after=1)
    assert len(client.CoreV1Api(kube_api).list_namespaced_service(NS).items) == 1
    assert [(r.status, r.fault) for r in shop.requests] == [(429, True), (200, False)]


def test_conflict_storm_on_writes_only(shop: FakeKube, kube_api: Any) -> None:
    shop.inject_fault(method="PATCH", path_regex="/services/web", status=409, times=3)
    core = client.CoreV1Api(kube_api)
    attempts = 0
    while True:
        attempts += 1
        try:
            core.patch_namespaced_service("web", NS, {"spec": {"selector": {"slot": "green"}}})
            break
        except ApiException as err:
            assert err.status == 409
            assert json.loads(err.body)["details"] == {"name": "web", "kind": "services"}
    assert attempts == 4
    assert core.read_namespaced_service("web", NS).spec.selector["slot"] == "green"


def test_latency_is_added_without_an_error(shop: FakeKube, kube_api: Any) -> None:
    shop.inject_fault(method="GET", status=None, latency_s=0.3)
    started = time.monotonic()
    client.CoreV1Api(kube_api).read_namespaced_service("web", NS)
    assert time.monotonic() - started >= 0.3


def test_request_log_proves_no_write_was_sent(shop: FakeKube, kube_api: Any) -> None:
    shop.clear_requests()
    core = client.CoreV1Api(kube_api)
    core.read_namespaced_service("web", NS)
    core.list_namespaced_pod(NS, label_selector="app=web")
    assert shop.write_requests() == []
    core.patch_namespaced_service(
        "web", NS, {"metadata": {"annotations": {"a": "b"}}}, _content_type="application/merge-patch+json"
    )
    writes = shop.write_requests()
    assert [(w.method, w.path, w.content_type, w.status) for w in writes] == [
        ("PATCH", f"/api/v1/namespaces/{NS}/services/web", "application/merge-patch+json", 200)
    ]
    assert writes[0].json() == {"metadata": {"annotations": {"a": "b"}}}
    reads = [r for r in shop.requests if r.method == "GET"]
    assert reads[1].path == f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb"
