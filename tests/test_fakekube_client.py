"""CRUD, selectors, patch types and conflicts through the official ``kubernetes`` client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.seed import deployment, service

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


@pytest.fixture
def shop(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_namespace(NS)
    return fake_kube


def body(exc: ApiException) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(exc.body)
    return parsed


def test_kubeconfig_written_by_the_fake_loads_with_the_client(fake_kube: FakeKube, tmp_path: Path) -> None:
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    api_client = config.new_client_from_config(config_file=str(path))
    try:
        version = client.VersionApi(api_client).get_code()
        assert (version.major, version.minor) == ("1", "32")
        _contexts, current = config.list_kube_config_contexts(config_file=str(path))
        assert current["context"]["namespace"] == NS
        namespaces = client.CoreV1Api(api_client).list_namespace()
        assert "default" in [n.metadata.name for n in namespaces.items]
    finally:
        api_client.close()


def test_load_kube_config_sets_up_the_default_client(fake_kube: FakeKube, tmp_path: Path) -> None:
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
    saved = client.Configuration.get_default_copy()
    try:
        config.load_kube_config(config_file=str(path))
        with client.ApiClient() as api_client:
            groups = client.ApisApi(api_client).get_api_versions()
            assert "apps" in [g.name for g in groups.groups]
            assert fake_kube.requests[-1].headers["Authorization"] == "Bearer admin-token"
    finally:
        client.Configuration.set_default(saved)


def test_create_get_list_by_selector(shop: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    created = apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    assert created.metadata.generation == 1
    assert isinstance(created.metadata.resource_version, str)
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "green", "shop/web:v2"))
    got = apps.read_namespaced_deployment("web-blue", NS)
    assert got.metadata.uid == created.metadata.uid
    green = apps.list_namespaced_deployment(NS, label_selector="app=web,slot=green")
    assert [d.metadata.name for d in green.items] == ["web-green"]
    both = apps.list_namespaced_deployment(NS, label_selector="slot in (blue,green),app")
    assert [d.metadata.name for d in both.items] == ["web-blue", "web-green"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS, label_selector="slot!=blue").items] == [
        "web-green"
    ]
    assert apps.list_namespaced_deployment(NS, label_selector="!app").items == []
    by_name = apps.list_namespaced_deployment(NS, field_selector="metadata.name=web-blue")
    assert [d.metadata.name for d in by_name.items] == ["web-blue"]
    with pytest.raises(ApiException) as bad:
        apps.list_namespaced_deployment(NS, label_selector="slot=v2!")
    assert bad.value.status == 400
    assert body(bad.value)["message"] == "found '!', expected: ',' or 'end of string'"


def test_get_missing_is_404_with_resource_details(shop: FakeKube, kube_api: Any) -> None:
    with pytest.raises(ApiException) as err:
        client.AppsV1Api(kube_api).read_namespaced_deployment("nope", NS)
    assert err.value.status == 404
    assert body(err.value)["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        ("application/strategic-merge-patch+json", {"spec": {"selector": {"slot": "green"}}}),
        ("application/merge-patch+json", {"spec": {"selector": {"slot": "green"}}}),
        (
            "application/json-patch+json",
            [
                {"op": "test", "path": "/spec/selector/slot", "value": "blue"},
                {"op": "replace", "path": "/spec/selector/slot", "value": "green"},
            ],
        ),
    ],
)
def test_patch_service_selector_with_each_content_type(
    shop: FakeKube,
    kube_api: Any,
    content_type: str,
    patch: Any,
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    patched = core.patch_namespaced_service("web", NS, patch, _content_type=content_type)
    assert patched.spec.selector == {"app": "web", "slot": "green"}
    assert shop.requests[-1].content_type == content_type


def test_server_side_apply_conflict_and_force(shop: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    applied = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web", "slot": "green"}},
    }
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service(
            "web", NS, applied, field_manager="releasegate", _content_type="application/apply-patch+yaml"
        )
    assert err.value.status == 409
    causes = body(err.value)["details"]["causes"]
    assert causes[0]["reason"] == "FieldManagerConflict" and causes[0]["field"] == ".spec.selector"
    forced = core.patch_namespaced_service(
        "web",
        NS,
        applied,
        field_manager="releasegate",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert forced.spec.selector["slot"] == "green"


def test_annotation_patches_and_noop_keep_resource_version(shop: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    svc = core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service(
            "web",
            NS,
            [{"op": "add", "path": "/metadata/annotations/releasegate.io~1live", "value": "v2"}],
            _content_type="application/json-patch+json",
        )
    assert err.value.status == 422
    first = core.patch_namespaced_service(
        "web",
        NS,
        {"metadata": {"annotations": {"releasegate.io/live": "v2"}}},
        _content_type="application/merge-patch+json",
    )
    assert first.metadata.annotations == {"releasegate.io/live": "v2"}
    assert first.metadata.resource_version != svc.metadata.resource_version
    again = core.patch_namespaced_service(
        "web",
        NS,
        {"metadata": {"annotations": {"releasegate.io/live": "v2"}}},
        _content_type="application/merge-patch+json",
    )
    assert again.metadata.resource_version == first.metadata.resource_version
    removed = core.patch_namespaced_service(
        "web",
        NS,
        {"metadata": {"annotations": {"releasegate.io/live": None}}},
        _content_type="application/merge-patch+json",
    )
    assert removed.metadata.annotations is None


def test_wrong_patch_shapes_and_types(shop: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service(
            "web",
            NS,
            [{"op": "replace", "path": "/spec/type", "value": "x"}],
            _content_type="application/merge-patch+json",
        )
    assert err.value.status == 400
    assert body(err.value)["message"].startswith("error decoding patch: ")
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_service("web", NS, {"spec": {}}, _content_type="application/json")
    assert err.value.status == 415


def test_replace_with_stale_resource_version_conflicts(shop: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    read = apps.read_namespaced_deployment("web-blue", NS)
    apps.patch_namespaced_deployment("web-blue", NS, {"metadata": {"annotations": {"touched": "yes"}}})
    read.metadata.annotations = {"releasegate.io/note": "stale write"}
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("web-blue", NS, read)
    assert err.value.status == 409
    assert body(err.value)["reason"] == "Conflict"
    # The deployment controller keeps writing status meanwhile, so even a fresh read can lose the race:
    # a correct client re-reads and retries on 409, as against a real cluster.
    for _attempt in range(20):
        fresh = apps.read_namespaced_deployment("web-blue", NS)
        fresh.spec.replicas = 5
        try:
            replaced = apps.replace_namespaced_deployment("web-blue", NS, fresh)
            break
        except ApiException as err:
            assert err.status == 409
    assert replaced.spec.replicas == 5
    assert replaced.metadata.generation == fresh.metadata.generation + 1


def test_validation_errors_are_422_with_causes(shop: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    bad = deployment(NS, "web", "blue", "shop/web:v1")
    bad["spec"]["template"]["metadata"]["labels"]["slot"] = "green"
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(NS, bad)
    assert err.value.status == 422
    details = body(err.value)["details"]
    assert details["kind"] == "Deployment" and details["causes"][0]["field"] == "spec.template.metadata.labels"
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "web-blue",
            NS,
            {
                "spec": {
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {"metadata": {"labels": {"app": "x"}}},
                }
            },
        )
    assert err.value.status == 422
    assert "field is immutable" in body(err.value)["message"]


def raw_call(api_client: Any, method: str, path: str, body: Any, query: list[tuple[str, str]]) -> Any:
    """The client's own transport, bypassing the typed models (which refuse unknown fields client-side)."""
    params = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=query,
        body=body,
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*params)
    response.read()
    return response


def test_unknown_fields_warn_or_fail_strict(shop: FakeKube, kube_api: Any) -> None:
    typo = deployment(NS, "web", "blue", "shop/web:v1")
    typo["spec"]["replicaz"] = 3
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    strict = raw_call(kube_api, "POST", path, typo, [("fieldValidation", "Strict")])
    assert strict.status == 400
    assert 'strict decoding error: unknown field "spec.replicaz"' in json.loads(strict.data)["message"]
    dry = raw_call(kube_api, "POST", path, typo, [("dryRun", "All")])
    assert dry.status == 201
    assert dry.getheader("Warning") == '299 - "unknown field \\"spec.replicaz\\""'
    assert "resourceVersion" not in json.loads(dry.data)["metadata"]
    assert shop.get_object("deployments", NS, "web-blue") is None


def test_delete_and_namespace_checks(shop: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(NS, service(NS, "web", "web", "blue"))
    deleted = core.delete_namespaced_service("web", NS)
    assert deleted.metadata.name == "web"  # Services return the deleted object
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_service("web", NS)
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("nope", service("nope", "web", "web", "blue"))
    assert err.value.status == 404
    assert body(err.value)["message"] == 'namespaces "nope" not found'


def test_bad_token_is_401(shop: FakeKube, kube_api_factory: Any) -> None:
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api_factory("not-a-token")).list_namespaced_pod(NS)
    assert err.value.status == 401
    assert "details" not in body(err.value)


def test_pagination_with_limit_and_continue(shop: FakeKube, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    for i in range(5):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm-{i}"}, "data": {"k": str(i)}})
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"]
    assert rest.metadata._continue is None
