"""charts/canary-app: the canary layout in both traffic modes, and the runner's RBAC for exactly its requests.

Without helm: the rules file is the blue-green runner's (whose equality with the code tests/test_chart.py
checks) plus, for ALB mode, `get` and `patch` on ingresses. With helm (skipped when it is not on PATH):
`helm lint --strict` and `helm template` in both modes, the Ingress routes through `use-annotation` with the
exact annotation targets/kubernetes/alb.py writes for "all on stable", and the rendered Role, enforced by the
fake API server, lets the runner read the Ingress and set each weight, and nothing beyond.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiException

from releasegate.targets.kubernetes.alb import (
    ALB_ANNOTATION_PREFIX,
    ALB_INGRESS_CLASS,
    MERGE_PATCH,
    USE_ANNOTATION,
    annotation_patch,
    check_ingress,
    forward_action,
    read_weights,
)
from tests.k8s_verbs import ROOT, verbs_used_by_canary_target

CHART = ROOT / "charts" / "canary-app"
RULES_FILE = CHART / "files" / "runner-rules.yaml"
BLUE_GREEN_RULES = ROOT / "charts" / "bluegreen-app" / "files" / "runner-rules.yaml"
HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not on PATH; install it as "
                                "charts/bluegreen-app/README.md says (Testing the chart) to render the chart")
INGRESS_TRIPLES = {("networking.k8s.io", "ingresses", "get"), ("networking.k8s.io", "ingresses", "patch")}
# An HPA on <app>-stable (found by list) and the canary's own HPA <app>-canary (create, update, delete).
HPA_TRIPLES = {("autoscaling", "horizontalpodautoscalers", verb) for verb in ("list", "create", "update", "delete")}

Triple = tuple[str, str, str]
Obj = dict[str, Any]


def triples(rules: list[Obj]) -> set[Triple]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def load_rules(path: Path) -> dict[str, list[Obj]]:
    data: dict[str, list[Obj]] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def blue_green_triples() -> set[Triple]:
    rules = load_rules(BLUE_GREEN_RULES)
    return triples(rules["namespaced"]) | triples(rules["cluster"])


# -- the rules file (no helm) -------------------------------------------------------------------------------

def test_rules_are_the_blue_green_runners_plus_hpas_and_ingress_get_and_patch_for_alb() -> None:
    canary, blue_green = load_rules(RULES_FILE), load_rules(BLUE_GREEN_RULES)
    assert set(canary) == set(blue_green) | {"alb"}
    for section in blue_green:
        extra = HPA_TRIPLES if section == "namespaced" else set()
        assert triples(canary[section]) == triples(blue_green[section]) | extra, section
    assert triples(canary["alb"]) == INGRESS_TRIPLES


def test_rules_equal_the_requests_of_the_canary_target() -> None:
    """Read from the code (tests/k8s_verbs.py): targets/kubernetes/canary.py and the modules it shares."""
    rules = load_rules(RULES_FILE)
    granted = triples(rules["namespaced"]) | triples(rules["alb"]) | triples(rules["cluster"])
    used = verbs_used_by_canary_target()
    assert granted - used == set(), "granted but never requested: remove from files/runner-rules.yaml"
    assert used - granted == set(), "requested but not granted: add to files/runner-rules.yaml"


def test_rules_have_no_wildcards_and_one_resource_per_rule() -> None:
    for section, rules in load_rules(RULES_FILE).items():
        for rule in rules:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, (section, rule)
            assert len(rule["resources"]) == 1, (section, rule)
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], (section, rule)


def test_chart_metadata_and_default_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["apiVersion"], chart["name"]) == ("v2", "canary-app")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["traffic"] == "replicas"
    assert values["canary"] == {"replicas": 0, "version": ""}
    assert values["ingress"]["className"] == ALB_INGRESS_CLASS
    assert values["ingress"]["annotationPrefix"] == ALB_ANNOTATION_PREFIX
    assert values["rbac"]["create"] is True and values["rbac"]["portForward"] is False
    assert '.Files.Get "files/runner-rules.yaml"' in (CHART / "templates" / "_helpers.tpl").read_text()


# -- rendering with real helm -------------------------------------------------------------------------------

def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def render(*args: str, namespace: str = "shop", release: str = "web") -> list[Obj]:
    result = helm("template", release, str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


ALB = ("--set", "traffic=alb")
RUNNER_OBJECTS = {("ServiceAccount", "web-releasegate"), ("Role", "web-releasegate-runner"),
                  ("RoleBinding", "web-releasegate-runner"), ("ClusterRole", "releasegate:shop:web-namespace-read"),
                  ("ClusterRoleBinding", "releasegate:shop:web-namespace-read")}
APP_OBJECTS = {("Deployment", "web-stable"), ("Deployment", "web-canary"), ("Service", "web"),
               ("Service", "web-stable"), ("Service", "web-canary")}


@needs_helm
@pytest.mark.parametrize("values", [
    [], list(ALB),
    ["--set", "traffic=alb,serviceMonitor.enabled=true,rbac.portForward=true,ingress.host=shop.example.com,"
              "ingress.name=edge,service.port=8080,canary.replicas=1,canary.version=v2"],
], ids=["replicas", "alb", "alb-overrides"])
def test_helm_lint_passes(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_replicas_mode_renders_both_deployments_behind_one_service_and_no_ingress() -> None:
    objects = by_kind(render())
    assert set(objects) == APP_OBJECTS | RUNNER_OBJECTS
    for slot, replicas in (("stable", 2), ("canary", 0)):
        spec = objects["Deployment", f"web-{slot}"]["spec"]
        assert spec["replicas"] == replicas
        assert spec["selector"] == {"matchLabels": {"app": "web", "slot": slot}}
        labels = spec["template"]["metadata"]["labels"]
        assert {key: labels[key] for key in ("app", "slot", "version")} == {"app": "web", "slot": slot, "version": "v1"}
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"] == "releasegate-demo:v1"
        env = {e["name"]: e for e in container["env"]}
        assert env["APP_VERSION"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['version']"
    assert objects["Service", "web"]["spec"]["selector"] == {"app": "web"}
    assert objects["Service", "web-stable"]["spec"]["selector"] == {"app": "web", "slot": "stable"}
    assert objects["Service", "web-canary"]["spec"]["selector"] == {"app": "web", "slot": "canary"}
    for name in ("web", "web-stable", "web-canary"):
        assert objects["Service", name]["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    role = objects["Role", "web-releasegate-runner"]
    cluster_role = objects["ClusterRole", "releasegate:shop:web-namespace-read"]
    assert triples(role["rules"]) | triples(cluster_role["rules"]) == blue_green_triples() | HPA_TRIPLES


@needs_helm
def test_alb_mode_renders_an_ingress_through_use_annotation_with_all_traffic_on_stable() -> None:
    objects = by_kind(render(*ALB))
    assert set(objects) == APP_OBJECTS | RUNNER_OBJECTS | {("Ingress", "web")}
    ingress = objects["Ingress", "web"]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "alb"
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"] == {"service": {"name": "web", "port": {"name": USE_ANNOTATION}}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations == {
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/actions.web": forward_action("web-stable", "web-canary", 80, 0)}
    assert annotations["alb.ingress.kubernetes.io/actions.web"] == (
        '{"Type":"forward","ForwardConfig":{"TargetGroups":['
        '{"ServiceName":"web-canary","ServicePort":"80","Weight":0},'
        '{"ServiceName":"web-stable","ServicePort":"80","Weight":100}]}}')
    assert check_ingress(ingress, "web") is None  # preflight passes, no warning
    assert read_weights(ingress, "web") == {"web-canary": 0, "web-stable": 100}
    # The ALB's target groups are exactly the Services the action names.
    assert objects["Service", "web-canary"]["spec"]["selector"]["slot"] == "canary"
    assert objects["Service", "web-stable"]["spec"]["selector"]["slot"] == "stable"


@needs_helm
def test_alb_mode_role_adds_exactly_get_and_patch_on_this_ingress() -> None:
    objects = by_kind(render(*ALB))
    role = objects["Role", "web-releasegate-runner"]
    cluster_role = objects["ClusterRole", "releasegate:shop:web-namespace-read"]
    assert triples(role["rules"]) | triples(cluster_role["rules"]) == \
        blue_green_triples() | INGRESS_TRIPLES | HPA_TRIPLES
    names = {(rule["resources"][0], verb): tuple(rule.get("resourceNames", ()))
             for rule in role["rules"] for verb in rule["verbs"]}
    assert names["ingresses", "get"] == names["ingresses", "patch"] == ("web",)
    assert names["deployments", "get"] == names["deployments/scale", "patch"] == ("web-stable", "web-canary")
    assert names["services", "patch"] == ("web", "web-stable", "web-canary")
    assert names["leases", "update"] == ("web-release",)
    assert names["horizontalpodautoscalers", "update"] == names["horizontalpodautoscalers", "delete"] == \
        ("web-canary",)
    assert names["horizontalpodautoscalers", "list"] == names["horizontalpodautoscalers", "create"] == ()
    assert names["deployments", "create"] == names["pods", "list"] == ()
    assert cluster_role["rules"][0]["resourceNames"] == ["shop"]


@needs_helm
def test_alb_mode_with_overrides() -> None:
    objects = by_kind(render(
        "--set", "traffic=alb,app=shop,service.port=8080,ingress.name=edge,ingress.host=shop.example.com",
        "--set", "ingress.className=alb-internal,ingress.annotationPrefix=alb.example.io",
        "--set", "canary.replicas=1,canary.version=v2,version=v1,rbac.portForward=true"))
    ingress = objects["Ingress", "edge"]
    assert ingress["spec"]["rules"][0]["host"] == "shop.example.com"
    assert ingress["spec"]["ingressClassName"] == "alb-internal"
    assert ingress["metadata"]["annotations"]["alb.example.io/actions.shop"] == \
        forward_action("shop-stable", "shop-canary", 8080, 0)
    assert check_ingress(ingress, "shop", "alb.example.io", ingress_class="alb-internal") is None
    assert "alb-internal" in str(check_ingress(ingress, "shop", "alb.example.io"))
    canary = objects["Deployment", "shop-canary"]["spec"]
    assert canary["replicas"] == 1
    assert canary["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v2"
    names = {(rule["resources"][0], verb): tuple(rule.get("resourceNames", ()))
             for rule in objects["Role", "shop-releasegate-runner"]["rules"] for verb in rule["verbs"]}
    assert names["ingresses", "patch"] == ("edge",)
    assert names["pods/portforward", "create"] == ()


@needs_helm
def test_rbac_can_be_turned_off() -> None:
    assert {kind for kind, _ in by_kind(render(*ALB, "--set", "rbac.create=false"))} == \
        {"Deployment", "Service", "Ingress"}


@needs_helm
@pytest.mark.parametrize(("values", "message"), [
    ("traffic=istio", 'traffic "istio" is neither replicas nor alb'),
    ("app=1shop", 'app "1shop" is not a DNS-1035 label'),
    ("app=" + "s" * 56, "is longer than 55 characters"),
    ("version=", "version is empty"),
])
def test_bad_values_fail_with_a_clear_message(values: str, message: str) -> None:
    result = helm("template", "web", str(CHART), "--set", values)
    assert result.returncode != 0
    assert message in result.stderr


# -- the chart against the fake API server (helm + tests/fakekube) ------------------------------------------

RUNNER_TOKEN = "runner-token"
RUNNER_USER = "system:serviceaccount:shop:web-releasegate"


@pytest.fixture
def fake_kube() -> Iterator[Any]:
    from tests.fakekube import FakeKube

    with FakeKube(tokens={"admin-token": "admin", RUNNER_TOKEN: RUNNER_USER}) as kube:
        yield kube


def install(kube: Any, objects: list[Obj], release: str = "web", namespace: str = "shop") -> None:
    """What `helm install` leaves on the cluster, for the kinds the fake serves (RBAC is set separately)."""
    kube.seed_namespace(namespace)
    for obj in objects:
        if obj["kind"] in ("Deployment", "Service", "Ingress"):
            obj["metadata"].setdefault("annotations", {}).update(
                {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace})
            kube.create(obj)


@needs_helm
def test_rendered_role_lets_the_runner_set_every_weight_and_no_more(fake_kube: Any) -> None:
    objects = render(*ALB)
    install(fake_kube, objects)  # the fake validates the rendered Ingress as a v1.32 server does
    fake_kube.set_rbac({RUNNER_USER: [obj for obj in objects if obj["kind"] in ("Role", "ClusterRole")]})
    fake_kube.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "other", "namespace": "shop"},
                      "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {
                          "name": "other", "port": {"number": 80}}}}})
    with client.ApiClient(fake_kube.client_configuration(RUNNER_TOKEN)) as runner:
        net = client.NetworkingV1Api(runner)
        read = json.loads(net.read_namespaced_ingress("web", "shop", _preload_content=False).data)
        assert check_ingress(read, "web") is None
        for weight in (10, 50, 100, 0):
            body = annotation_patch("web", forward_action("web-stable", "web-canary", 80, weight), current=read)
            read = json.loads(net.patch_namespaced_ingress("web", "shop", body, _preload_content=False,
                                                           _content_type=MERGE_PATCH).data)
            assert read_weights(read, "web") == {"web-canary": weight, "web-stable": 100 - weight}
        for forbidden in (lambda: net.read_namespaced_ingress("other", "shop"),
                          lambda: net.patch_namespaced_ingress("other", "shop", body, _content_type=MERGE_PATCH),
                          lambda: net.delete_namespaced_ingress("web", "shop"),
                          lambda: net.list_namespaced_ingress("shop")):
            with pytest.raises(ApiException) as err:
                forbidden()
            assert err.value.status == 403
    # Helm's other annotations and the spec are untouched.
    live = fake_kube.get_object("ingresses", "shop", "web")
    rendered = by_kind(objects)["Ingress", "web"]
    assert live["spec"] == rendered["spec"]
    assert live["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"


@needs_helm
def test_upgrade_keeps_the_weights_and_versions_releasegate_set(fake_kube: Any, tmp_path: Path) -> None:
    install(fake_kube, render(*ALB, "--set", "rbac.create=false"))
    # A release in progress: canary v2 on 2 pods with 50% of the ALB's traffic.
    canary = fake_kube.get_object("deployments", "shop", "web-canary")
    canary["spec"]["replicas"] = 2
    canary["spec"]["template"]["metadata"]["labels"]["version"] = "v2"
    canary["spec"]["template"]["spec"]["containers"][0]["image"] = "releasegate-demo:v2"
    fake_kube.apply(canary)
    ingress = fake_kube.get_object("ingresses", "shop", "web")
    ingress["metadata"]["annotations"].update(
        annotation_patch("web", forward_action("web-stable", "web-canary", 80, 50))["metadata"]["annotations"])
    fake_kube.apply(ingress)
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")
    fake_kube.clear_requests()

    # --dry-run=server makes `lookup` read the cluster, as `helm upgrade` does; the fake serves no OpenAPI.
    upgrade = [*ALB, "--set", "rbac.create=false,replicas=3", "--dry-run=server", "--disable-openapi-validation",
               "--kubeconfig", str(kubeconfig)]
    objects = by_kind(render(*upgrade))
    assert read_weights(objects["Ingress", "web"], "web") == {"web-canary": 50, "web-stable": 50}
    canary_spec = objects["Deployment", "web-canary"]["spec"]
    assert canary_spec["replicas"] == 2
    assert canary_spec["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v2"
    assert objects["Deployment", "web-stable"]["spec"]["replicas"] == 3
    assert [r for r in fake_kube.requests if r.is_write] == []

    # preserveReleaseState=false: the values win (documented: the upgrade moves traffic back to stable).
    objects = by_kind(render(*upgrade, "--set", "preserveReleaseState=false"))
    assert read_weights(objects["Ingress", "web"], "web") == {"web-canary": 0, "web-stable": 100}
    assert objects["Deployment", "web-canary"]["spec"]["replicas"] == 0
