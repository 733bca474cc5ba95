"""ALB mode: the action annotation targets/kubernetes/alb.py writes, byte for byte, and its round trip.

The golden strings are what Argo Rollouts' getForwardActionString writes for a Rollout with stableService
`shop-stable`, canaryService `shop-canary` and servicePort 80 (rollout/trafficrouting/alb/alb.go with the
types of utils/ingress/ingress.go; alb_test.go's actionTemplateWithExperiments shows the same compact form).
The bodies then go through the official client to the fake API server as JSON merge patches on an Ingress.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from releasegate.core.errors import ConfigError
from releasegate.targets.kubernetes.alb import (
    MERGE_PATCH,
    action_annotation_key,
    annotation_patch,
    check_ingress,
    forward_action,
    managed_actions,
    read_weights,
)
from tests.fakekube import FakeKube

NS = "shop"
KEY = "alb.ingress.kubernetes.io/actions.shop"
MANAGED = "releasegate.io/managed-alb-actions"

GOLDEN = {
    10: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
        '{"ServiceName":"shop-canary","ServicePort":"80","Weight":10},'
        '{"ServiceName":"shop-stable","ServicePort":"80","Weight":90}]}}',
    50: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
        '{"ServiceName":"shop-canary","ServicePort":"80","Weight":50},'
        '{"ServiceName":"shop-stable","ServicePort":"80","Weight":50}]}}',
    100: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
         '{"ServiceName":"shop-canary","ServicePort":"80","Weight":100},'
         '{"ServiceName":"shop-stable","ServicePort":"80","Weight":0}]}}',
    # After an abort: everything back on stable, the canary's 0 written out (argo-rollouts#491).
    0: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
       '{"ServiceName":"shop-canary","ServicePort":"80","Weight":0},'
       '{"ServiceName":"shop-stable","ServicePort":"80","Weight":100}]}}',
}
GOLDEN_STICKY = {
    10: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
        '{"ServiceName":"shop-canary","ServicePort":"80","Weight":10},'
        '{"ServiceName":"shop-stable","ServicePort":"80","Weight":90}],'
        '"TargetGroupStickinessConfig":{"Enabled":true,"DurationSeconds":3600}}}',
    50: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
        '{"ServiceName":"shop-canary","ServicePort":"80","Weight":50},'
        '{"ServiceName":"shop-stable","ServicePort":"80","Weight":50}],'
        '"TargetGroupStickinessConfig":{"Enabled":true,"DurationSeconds":3600}}}',
    100: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
         '{"ServiceName":"shop-canary","ServicePort":"80","Weight":100},'
         '{"ServiceName":"shop-stable","ServicePort":"80","Weight":0}],'
         '"TargetGroupStickinessConfig":{"Enabled":true,"DurationSeconds":3600}}}',
    0: '{"Type":"forward","ForwardConfig":{"TargetGroups":['
       '{"ServiceName":"shop-canary","ServicePort":"80","Weight":0},'
       '{"ServiceName":"shop-stable","ServicePort":"80","Weight":100}],'
       '"TargetGroupStickinessConfig":{"Enabled":true,"DurationSeconds":3600}}}',
}
STEPS = [10, 50, 100]  # a canary release's steps; 0 is the abort


def ingress(*, port: dict[str, Any] | None = None, service: str = "shop", annotations: dict[str, str] | None = None,
            class_name: str | None = "alb") -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"host": "shop.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": service, "port": port or {"name": "use-annotation"}}}}]}}]}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    metadata: dict[str, Any] = {"name": "shop", "namespace": NS}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


# -- the annotation body (golden) ----------------------------------------------------------------------------

@pytest.mark.parametrize("weight", [10, 50, 100, 0], ids=["step-10", "step-50", "step-100", "after-abort"])
def test_forward_action_equals_argo_rollouts_json(weight: int) -> None:
    assert forward_action("shop-stable", "shop-canary", 80, weight) == GOLDEN[weight]


@pytest.mark.parametrize("weight", [10, 50, 100, 0], ids=["step-10", "step-50", "step-100", "after-abort"])
def test_forward_action_with_stickiness_equals_argo_rollouts_json(weight: int) -> None:
    assert forward_action("shop-stable", "shop-canary", 80, weight, stickiness_s=3600) == GOLDEN_STICKY[weight]


def test_every_weight_is_written_and_they_add_up_to_100() -> None:
    for weight in range(101):
        groups = json.loads(forward_action("shop-stable", "shop-canary", 80, weight))["ForwardConfig"]["TargetGroups"]
        assert [(g["ServiceName"], g["Weight"]) for g in groups] == [("shop-canary", weight),
                                                                     ("shop-stable", 100 - weight)]
        assert all(isinstance(g["ServicePort"], str) for g in groups)


def test_a_named_service_port_is_written_as_the_name() -> None:
    groups = json.loads(forward_action("shop-stable", "shop-canary", "http", 10))["ForwardConfig"]["TargetGroups"]
    assert {g["ServicePort"] for g in groups} == {"http"}


@pytest.mark.parametrize("weight", [-1, 101, True, 10.0, "10"])
def test_a_weight_outside_0_to_100_is_refused(weight: Any) -> None:
    with pytest.raises(ValueError, match=re.escape("not a whole percent in 0..100")):
        forward_action("shop-stable", "shop-canary", 80, weight)


@pytest.mark.parametrize(("args", "message"), [
    (("shop", "shop", 80), "the stable and canary services are the same"),
    (("Shop-Stable", "shop-canary", 80), "is not a Service name"),
    (("shop-stable", "shop-canary", 0), "not in 1..65535"),
    (("shop-stable", "shop-canary", ""), "service port is empty"),
])
def test_bad_names_and_ports_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forward_action(*args, 10)


@pytest.mark.parametrize("seconds", [0, 604801, -5])
def test_stickiness_outside_the_aws_range_is_a_config_error(seconds: int) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"ALB target group stickiness of {seconds} s is outside "
                                                    "1..604800 s (7 days)")):
        forward_action("shop-stable", "shop-canary", 80, 10, stickiness_s=seconds)


def test_stickiness_bounds_are_accepted() -> None:
    for seconds in (1, 604800):
        action = json.loads(forward_action("shop-stable", "shop-canary", 80, 10, stickiness_s=seconds))
        assert action["ForwardConfig"]["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": seconds}


# -- the merge patch -----------------------------------------------------------------------------------------

def test_annotation_patch_sets_the_action_and_the_bookkeeping_only() -> None:
    assert annotation_patch("shop", GOLDEN[10]) == {"metadata": {"annotations": {
        KEY: GOLDEN[10], MANAGED: '["alb.ingress.kubernetes.io/actions.shop"]'}}}


def test_annotation_patch_with_another_prefix_and_state_prefix() -> None:
    patch = annotation_patch("shop", GOLDEN[0], "alb.example.io/", state_prefix="acme.io/release-")
    assert patch == {"metadata": {"annotations": {
        "alb.example.io/actions.shop": GOLDEN[0], "acme.io/release-managed-alb-actions":
            '["alb.example.io/actions.shop"]'}}}


def test_annotation_patch_keeps_the_actions_recorded_before() -> None:
    current = ingress(annotations={MANAGED: '["alb.ingress.kubernetes.io/actions.cart"]'})
    patch = annotation_patch("shop", GOLDEN[50], current=current)
    assert patch["metadata"]["annotations"][MANAGED] == \
        '["alb.ingress.kubernetes.io/actions.cart","alb.ingress.kubernetes.io/actions.shop"]'
    assert managed_actions({"metadata": {"annotations": patch["metadata"]["annotations"]}}) == [
        "alb.ingress.kubernetes.io/actions.cart", "alb.ingress.kubernetes.io/actions.shop"]


def test_a_broken_bookkeeping_annotation_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"Ingress shop/shop: annotation {MANAGED} is not a JSON list of annotation keys ('shop:x'); delete it, "
            "releasegate writes it again")):
        annotation_patch("shop", GOLDEN[10], current=ingress(annotations={MANAGED: "shop:x"}))


def test_annotation_patch_refuses_a_key_the_api_server_would_refuse() -> None:
    long_name = "s" * 56  # actions.<56 characters> is 64 > 63
    with pytest.raises(ConfigError, match="give the Service a name of at most 55 characters"):
        annotation_patch(long_name, GOLDEN[10])
    assert action_annotation_key("s" * 55).endswith("/actions." + "s" * 55)
    with pytest.raises(ValueError, match="is not JSON"):
        annotation_patch("shop", "{not json")


# -- preflight -----------------------------------------------------------------------------------------------

def test_an_alb_ingress_with_use_annotation_passes_without_a_warning() -> None:
    assert check_ingress(ingress(), "shop") is None
    assert check_ingress(ingress(class_name=None, annotations={"kubernetes.io/ingress.class": "alb"}), "shop") is None


def test_an_ingress_without_the_service_in_its_rules_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        check_ingress(ingress(service="cart"), "shop")
    assert str(err.value) == (
        "Ingress shop/shop does not have service `shop` in rules; its use-annotation backends are: cart, so no ALB "
        "listener rule reads the weights in alb.ingress.kubernetes.io/actions.shop; add a rule whose backend is "
        "`service: {name: shop, port: {name: use-annotation}}` (charts/canary-app renders it with traffic=alb)")
    assert "\n" not in str(err.value)


def test_an_ingress_routing_to_the_service_by_port_number_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        check_ingress(ingress(port={"number": 80}), "shop")
    assert str(err.value) == (
        "Ingress shop/shop routes to service `shop` by port 80 (spec.rules[0].http.paths[0].backend.service.port), "
        "not by the port name `use-annotation`, so the AWS Load Balancer Controller forwards to the Service "
        "directly and ignores the weights in alb.ingress.kubernetes.io/actions.shop; set that rule's backend to "
        "`service: {name: shop, port: {name: use-annotation}}` (charts/canary-app renders it with traffic=alb)")
    with pytest.raises(ConfigError, match="by port name `http`"):
        check_ingress(ingress(port={"name": "http"}), "shop")


def test_an_ingress_with_no_rules_is_refused() -> None:
    empty = {"metadata": {"name": "shop", "namespace": NS}, "spec": {"defaultBackend": {"service": {
        "name": "shop", "port": {"name": "use-annotation"}}}}}
    with pytest.raises(ConfigError, match=r"^Ingress shop/shop does not have service `shop` in rules, so no ALB"):
        check_ingress(empty, "shop")


def test_a_custom_annotation_prefix_is_named_in_the_message() -> None:
    with pytest.raises(ConfigError, match=re.escape("the weights in custom.io/actions.shop")):
        check_ingress(ingress(service="cart"), "shop", "custom.io")


@pytest.mark.parametrize(("kwargs", "warning"), [
    ({"class_name": "nginx"},
     "Ingress shop/shop has ingressClassName `nginx`, not `alb`: the weights in alb.ingress.kubernetes.io/actions.shop "
     "only take effect under the AWS Load Balancer Controller; ignore this if IngressClass `nginx` has controller "
     "ingress.k8s.aws/alb"),
    ({"class_name": None, "annotations": {"kubernetes.io/ingress.class": "nginx"}},
     "Ingress shop/shop has the annotation kubernetes.io/ingress.class: nginx, not `alb`: the weights in "
     "alb.ingress.kubernetes.io/actions.shop only take effect under the AWS Load Balancer Controller"),
    ({"class_name": None},
     "Ingress shop/shop names no ingress class (spec.ingressClassName): the weights in "
     "alb.ingress.kubernetes.io/actions.shop only take effect if the cluster's default IngressClass has controller "
     "ingress.k8s.aws/alb; set spec.ingressClassName: alb"),
])
def test_an_ingress_that_is_not_an_alb_one_gives_a_warning(kwargs: dict[str, Any], warning: str) -> None:
    assert check_ingress(ingress(**kwargs), "shop") == warning


def test_the_ingress_class_name_to_expect_can_be_changed() -> None:
    assert check_ingress(ingress(class_name="alb-internal"), "shop", ingress_class="alb-internal") is None


# -- reading the weights back --------------------------------------------------------------------------------

@pytest.mark.parametrize("weight", [10, 50, 100, 0])
def test_read_weights_round_trips_forward_action(weight: int) -> None:
    patched = ingress(annotations=annotation_patch("shop", GOLDEN[weight])["metadata"]["annotations"])
    assert read_weights(patched, "shop") == {"shop-canary": weight, "shop-stable": 100 - weight}
    sticky = ingress(annotations={KEY: GOLDEN_STICKY[weight]})
    assert read_weights(sticky, "shop") == {"shop-canary": weight, "shop-stable": 100 - weight}


def test_read_weights_reads_the_controller_documentation_form() -> None:
    # Go's encoding/json matches keys case-insensitively, so the lower-camel form of the AWS docs works too.
    documented = json.dumps({"type": "forward", "forwardConfig": {"targetGroups": [
        {"serviceName": "shop-canary", "servicePort": 80, "weight": 20},
        {"serviceName": "shop-stable", "servicePort": "80", "weight": 80}]}})
    assert read_weights(ingress(annotations={KEY: documented}), "shop") == {"shop-canary": 20, "shop-stable": 80}
    arn = json.dumps({"type": "forward", "targetGroupARN": "arn:aws:elasticloadbalancing:tg/x"})
    assert read_weights(ingress(annotations={KEY: arn}), "shop") == {"arn:aws:elasticloadbalancing:tg/x": 100}


def test_read_weights_without_the_annotation_is_empty() -> None:
    assert read_weights(ingress(), "shop") == {}
    assert read_weights(ingress(annotations={KEY: GOLDEN[10]}), "cart") == {}


@pytest.mark.parametrize(("value", "message"), [
    ("{oops", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"Type":"redirect","RedirectConfig":{"StatusCode":"HTTP_301"}}', "is a 'redirect' action, not a forward action"),
    ('{"Type":"forward","ForwardConfig":{"TargetGroups":[]}}', "has no ForwardConfig.TargetGroups"),
    ('{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServiceName":"shop-canary","ServicePort":"80"},'
     '{"ServiceName":"shop-stable","ServicePort":"80","Weight":100}]}}',
     "gives target group `shop-canary` no integer Weight (None); write every weight explicitly, 0 included "
     "(argo-rollouts#491)"),
    ('{"Type":"forward","ForwardConfig":{"TargetGroups":[{"ServicePort":"80","Weight":1}]}}',
     "has a target group with no ServiceName or TargetGroupARN"),
])
def test_read_weights_refuses_what_the_controller_could_not_use(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"Ingress shop/shop: annotation {KEY} ") + ".*"
                       + re.escape(message)):
        read_weights(ingress(annotations={KEY: value}), "shop")


# -- through the official client to the fake API server ------------------------------------------------------

@pytest.fixture
def shop_ingress(fake_kube: FakeKube, kube_api: Any) -> dict[str, Any]:
    fake_kube.seed_namespace(NS)
    body = ingress(annotations={"alb.ingress.kubernetes.io/target-type": "ip", KEY: GOLDEN[0]})
    response = client.NetworkingV1Api(kube_api).create_namespaced_ingress(NS, body, _preload_content=False)
    assert response.status == 201
    created: dict[str, Any] = json.loads(response.data)
    return created


def patch_ingress(api_client: Any, body: Any) -> Any:
    return client.NetworkingV1Api(api_client).patch_namespaced_ingress(
        "shop", NS, body, _preload_content=False, _content_type=MERGE_PATCH)


def test_weights_patched_through_the_client_land_verbatim(fake_kube: FakeKube, kube_api: Any,
                                                           shop_ingress: dict[str, Any]) -> None:
    assert shop_ingress["metadata"]["generation"] == 1
    assert shop_ingress["status"] == {"loadBalancer": {}}
    assert read_weights(shop_ingress, "shop") == {"shop-canary": 0, "shop-stable": 100}
    assert check_ingress(shop_ingress, "shop") is None
    versions = [shop_ingress["metadata"]["resourceVersion"]]
    for weight in [*STEPS, 0]:  # the three steps, then an abort
        fake_kube.clear_requests()
        body = annotation_patch("shop", forward_action("shop-stable", "shop-canary", 80, weight))
        response = patch_ingress(kube_api, body)
        assert response.status == 200
        patched = json.loads(response.data)
        annotations = patched["metadata"]["annotations"]
        assert annotations == {"alb.ingress.kubernetes.io/target-type": "ip", KEY: GOLDEN[weight],
                               MANAGED: '["alb.ingress.kubernetes.io/actions.shop"]'}
        assert read_weights(patched, "shop") == {"shop-canary": weight, "shop-stable": 100 - weight}
        # Only annotations changed: same spec, same generation, a new resourceVersion.
        assert patched["spec"] == shop_ingress["spec"] and patched["metadata"]["generation"] == 1
        versions.append(patched["metadata"]["resourceVersion"])
        [request] = fake_kube.write_requests()
        assert (request.method, request.path) == ("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/shop")
        assert request.content_type == "application/merge-patch+json"
        assert request.json() == body
        read = client.NetworkingV1Api(kube_api).read_namespaced_ingress("shop", NS, _preload_content=False)
        assert json.loads(read.data)["metadata"]["annotations"][KEY] == GOLDEN[weight]
    assert len(set(versions)) == len(versions)
    # The same weights again: a no-op, as on a real server (same resourceVersion, no event).
    again = json.loads(patch_ingress(kube_api, annotation_patch("shop", GOLDEN[0])).data)
    assert again["metadata"]["resourceVersion"] == versions[-1]


def test_the_patch_keeps_another_apps_bookkeeping(kube_api: Any, shop_ingress: dict[str, Any]) -> None:
    other = {"metadata": {"annotations": {MANAGED: '["alb.ingress.kubernetes.io/actions.cart"]'}}}
    current = json.loads(patch_ingress(kube_api, other).data)
    patched = json.loads(patch_ingress(kube_api, annotation_patch("shop", GOLDEN[10], current=current)).data)
    assert managed_actions(patched) == ["alb.ingress.kubernetes.io/actions.cart", KEY]


# -- the fake serves networking.k8s.io/v1 Ingress as a v1.32 server does ------------------------------------

def raw_post(api_client: Any, path: str, body: Any) -> Any:
    """The client's transport without its typed models (which refuse an Ingress path without pathType)."""
    params = api_client.param_serialize(method="POST", resource_path=path, body=body,
                                        header_params={"Content-Type": "application/json",
                                                       "Accept": "application/json"},
                                        auth_settings=["BearerToken"])
    response = api_client.call_api(*params)
    response.read()
    return response


def test_discovery_lists_networking_v1_like_a_v1_32_server(fake_kube: FakeKube, kube_api: Any) -> None:
    groups = [g.name for g in client.ApisApi(kube_api).get_api_versions().groups]
    assert groups.index("autoscaling") < groups.index("networking.k8s.io") < groups.index("policy")
    resources = {r.name: r for r in client.NetworkingV1Api(kube_api).get_api_resources().resources}
    assert list(resources) == ["ingressclasses", "ingresses", "ingresses/status", "networkpolicies"]
    ingresses = resources["ingresses"]
    assert (ingresses.kind, ingresses.namespaced, ingresses.short_names, ingresses.storage_version_hash) == \
        ("Ingress", True, ["ing"], "39NQlfNR+bo=")


def test_ingress_status_bodies_and_codes(fake_kube: FakeKube, kube_api: Any, shop_ingress: dict[str, Any]) -> None:
    net = client.NetworkingV1Api(kube_api)
    with pytest.raises(ApiException) as err:
        net.read_namespaced_ingress("nope", NS)
    assert err.value.status == 404
    assert json.loads(err.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'ingresses.networking.k8s.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "networking.k8s.io", "kind": "ingresses"}, "code": 404}
    with pytest.raises(ApiException) as err:
        net.create_namespaced_ingress(NS, ingress())
    assert err.value.status == 409
    assert json.loads(err.value.body)["message"] == 'ingresses.networking.k8s.io "shop" already exists'
    stale = {"metadata": {"resourceVersion": "1", "annotations": {"x": "y"}}}
    with pytest.raises(ApiException) as err:
        patch_ingress(kube_api, stale)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"

    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
    no_path_type = ingress()
    no_path_type["metadata"]["name"] = "bad"
    del no_path_type["spec"]["rules"][0]["http"]["paths"][0]["pathType"]
    response = raw_post(kube_api, path, no_path_type)
    assert response.status == 422
    invalid = json.loads(response.data)
    assert invalid["message"] == ('Ingress.networking.k8s.io "bad" is invalid: spec.rules[0].http.paths[0].pathType: '
                                  "Required value: pathType must be specified")
    assert invalid["details"] == {"name": "bad", "group": "networking.k8s.io", "kind": "Ingress", "causes": [
        {"reason": "FieldValueRequired", "message": "Required value: pathType must be specified",
         "field": "spec.rules[0].http.paths[0].pathType"}]}
    both_ports = ingress(port={"name": "use-annotation", "number": 80})
    both_ports["metadata"]["name"] = "bad"
    response = raw_post(kube_api, path, both_ports)
    assert response.status == 422
    assert json.loads(response.data)["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": 'Invalid value: "": cannot set both port name & port number',
         "field": "spec.rules[0].http.paths[0].backend"}]


def test_spec_changes_bump_the_generation_and_legacy_class_warns(fake_kube: FakeKube, kube_api: Any,
                                                                  shop_ingress: dict[str, Any]) -> None:
    changed = json.loads(patch_ingress(kube_api, {"spec": {"ingressClassName": "alb-internal"}}).data)
    assert changed["metadata"]["generation"] == 2
    legacy = ingress(class_name=None, annotations={"kubernetes.io/ingress.class": "alb"})
    legacy["metadata"]["name"] = "legacy"
    response = client.NetworkingV1Api(kube_api).create_namespaced_ingress(NS, legacy, _preload_content=False)
    assert response.status == 201
    assert response.headers["Warning"] == ('299 - "annotation \\"kubernetes.io/ingress.class\\" is deprecated, '
                                           "please use 'spec.ingressClassName' instead\"")
