"""Endpoints and EndpointSlices converge on a Service selector switch, as recorded."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.fakekube import FakeKube
from tests.fakekube.polling import wait_until

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


def endpoint_pods(core: client.CoreV1Api, service: str) -> set[str]:
    ep = core.read_namespaced_endpoints(service, NS)
    return {a.target_ref.name for s in ep.subsets or [] for a in s.addresses or []}


def test_selector_switch_moves_endpoints_and_slices(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_blue_green(namespace=NS, green_image="shop/web:v2")
    core, discovery = client.CoreV1Api(kube_api), client.DiscoveryV1Api(kube_api)
    green = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="slot=green").items}
    blue = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="slot=blue").items}
    assert endpoint_pods(core, "web") == blue
    ep = core.read_namespaced_endpoints("web", NS)
    assert [(p.name, p.port, p.protocol) for p in ep.subsets[0].ports] == [("http", 8080, "TCP")]
    ips = [a.ip for a in ep.subsets[0].addresses]
    assert ips == sorted(ips)
    assert ep.metadata.labels == {"app": "web"}
    slice_before = discovery.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=web").items
    assert len(slice_before) == 1

    core.patch_namespaced_service("web", NS, {"spec": {"selector": {"slot": "green"}}})
    wait_until(lambda: endpoint_pods(core, "web") == green, what="endpoints on green")

    def slice_on_green() -> Any:
        items = discovery.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=web").items
        names = {e.target_ref.name for e in items[0].endpoints or []} if items else set()
        return items[0] if names == green else None

    slice_after = wait_until(slice_on_green, what="slice on green")
    assert slice_after.metadata.name == slice_before[0].metadata.name  # updated in place
    assert slice_after.metadata.generation == slice_before[0].metadata.generation + 1
    assert all(e.conditions.ready for e in slice_after.endpoints)
    assert slice_after.address_type == "IPv4"
    assert slice_after.metadata.owner_references[0].name == "web"


def test_service_without_matching_pods_has_no_subsets(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_blue_green(namespace=NS)
    core, discovery = client.CoreV1Api(kube_api), client.DiscoveryV1Api(kube_api)
    raw = fake_kube.get_object("endpoints", NS, "web-preview")
    assert raw is not None and "subsets" not in raw
    assert core.read_namespaced_endpoints("web-preview", NS).subsets is None
    slices = fake_kube.list_objects("endpointslices", NS, "kubernetes.io/service-name=web-preview")
    assert slices[0]["endpoints"] is None and slices[0]["ports"] is None
    assert discovery.list_namespaced_endpoint_slice(NS, label_selector="kubernetes.io/service-name=web-preview").items


def test_not_ready_pods_are_not_ready_addresses(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.set_image_behaviour("v2", "never-ready")
    fake_kube.seed_blue_green(namespace=NS, green_image="shop/web:v2", wait=False)
    core = client.CoreV1Api(kube_api)

    def not_ready() -> Any:
        try:
            ep = core.read_namespaced_endpoints("web-preview", NS)
        except client.ApiException as err:
            assert err.status == 404  # the controller has not written it yet
            return None
        addresses = [a for s in ep.subsets or [] for a in s.not_ready_addresses or []]
        ready = [a for s in ep.subsets or [] for a in s.addresses or []]
        assert not ready
        return addresses if len(addresses) == 3 else None

    wait_until(not_ready, what="three not-ready addresses")
