"""charts/canary-app: the canary layout in both traffic modes, and the runner's RBAC for exactly its requests.

Without helm: the rules file is the blue-green runner's (whose equality with the code tests/test_chart.py
checks) plus, for ALB mode, `get` and `patch` on ingresses. With helm (skipped when it is not on PATH):
`helm lint --strict` and `helm template` in both modes, the Ingress routes through `use-annotation` with the
exact annotation targets/kubernetes/alb.py writes for "all on stable", and the rendered Role, enforced by the
fake API server, lets the runner read the Ingress and set each weight, and nothing beyond.
"""

from __future__ import annotations

import json
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
from tests import charts
from tests.charts import CANARY_CHART, Obj, Triple, by_kind, load_rules, needs_helm, triples
from tests.k8s_verbs import verbs_used_by_canary_target

CHART = CANARY_CHART
RULES_FILE = CHART / "files" / "runner-rules.yaml"
ROLLOUT_RULES = CHART / "files" / "rollout-rules.yaml"
BLUE_GREEN_RULES = charts.BLUE_GREEN_CHART / "files" / "runner-rules.yaml"
INGRESS_TRIPLES = {("networking.k8s.io", "ingresses", "get"), ("networking.k8s.io", "ingresses", "patch")}
# An HPA on <app>-stable (found by list) and the canary's own HPA <app>-canary (create, update, delete).
HPA_TRIPLES = {("autoscaling", "horizontalpodautoscalers", verb) for verb in ("list", "create", "update", "delete")}


def render(*args: str) -> list[Obj]:
    return charts.render(CHART, *args)


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
    granted = triples(rules["namespaced"]) | triples(rules["alb"]) | triples(rules["loadWorkers"]) | \
        triples(rules["cluster"])
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
    ["--set", "firstDeploy=true,version=,rbac.rollout.enabled=true"],
], ids=["replicas", "alb", "alb-overrides", "first-deploy-rollout"])
def test_helm_lint_passes(values: list[str]) -> None:
    charts.helm_lint(CHART, *values)


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
def test_load_workers_add_the_job_rules_in_either_workload_mode() -> None:
    load_workers = triples(load_rules(RULES_FILE)["loadWorkers"])
    assert load_workers == triples(load_rules(BLUE_GREEN_RULES)["loadWorkers"])
    for mode in ("", ",rbac.rollout.enabled=true"):
        plain, with_jobs = (by_kind(render("--set", f"rbac.loadWorkers={on}{mode}")) for on in ("false", "true"))
        role, role_with_jobs = plain["Role", "web-releasegate-runner"], with_jobs["Role", "web-releasegate-runner"]
        assert triples(role_with_jobs["rules"]) == triples(role["rules"]) | load_workers, mode


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
    names = charts.names_by_verb(role["rules"])
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
    names = charts.names_by_verb(objects["Role", "shop-releasegate-runner"]["rules"])
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
    assert message in charts.render_fails(CHART, values)


# -- the chart against the fake API server (helm + tests/fakekube) ------------------------------------------

@needs_helm
def test_rendered_role_lets_the_runner_set_every_weight_and_no_more(chart_kube: Any) -> None:
    objects = render(*ALB)
    charts.install(chart_kube, objects)  # the fake validates the rendered Ingress as a v1.32 server does
    charts.grant_runner(chart_kube, objects)
    chart_kube.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "other", "namespace": "shop"},
                      "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {
                          "name": "other", "port": {"number": 80}}}}})
    with client.ApiClient(chart_kube.client_configuration(charts.CHART_RUNNER_TOKEN)) as runner:
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
    live = chart_kube.get_object("ingresses", "shop", "web")
    rendered = by_kind(objects)["Ingress", "web"]
    assert live["spec"] == rendered["spec"]
    assert live["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"


@needs_helm
def test_upgrade_keeps_the_weights_and_versions_releasegate_set(chart_kube: Any, tmp_path: Path) -> None:
    charts.install(chart_kube, render(*ALB, "--set", "rbac.create=false"))
    # A release in progress: canary v2 on 2 pods with 50% of the ALB's traffic.
    canary = chart_kube.get_object("deployments", "shop", "web-canary")
    canary["spec"]["replicas"] = 2
    canary["spec"]["template"]["metadata"]["labels"]["version"] = "v2"
    canary["spec"]["template"]["spec"]["containers"][0]["image"] = "releasegate-demo:v2"
    chart_kube.apply(canary)
    ingress = chart_kube.get_object("ingresses", "shop", "web")
    ingress["metadata"]["annotations"].update(
        annotation_patch("web", forward_action("web-stable", "web-canary", 80, 50))["metadata"]["annotations"])
    chart_kube.apply(ingress)
    kubeconfig = chart_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")
    chart_kube.clear_requests()

    # --dry-run=server makes `lookup` read the cluster, as `helm upgrade` does; the fake serves no OpenAPI.
    upgrade = [*ALB, "--set", "rbac.create=false,replicas=3", "--dry-run=server", "--disable-openapi-validation",
               "--kubeconfig", str(kubeconfig)]
    objects = by_kind(render(*upgrade))
    assert read_weights(objects["Ingress", "web"], "web") == {"web-canary": 50, "web-stable": 50}
    canary_spec = objects["Deployment", "web-canary"]["spec"]
    assert canary_spec["replicas"] == 2
    assert canary_spec["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v2"
    assert objects["Deployment", "web-stable"]["spec"]["replicas"] == 3
    assert [r for r in chart_kube.requests if r.is_write] == []

    # preserveReleaseState=false: the values win (documented: the upgrade moves traffic back to stable).
    objects = by_kind(render(*upgrade, "--set", "preserveReleaseState=false"))
    assert read_weights(objects["Ingress", "web"], "web") == {"web-canary": 0, "web-stable": 100}
    assert objects["Deployment", "web-canary"]["spec"]["replicas"] == 0


# -- first deploy and the Argo Rollouts runner -------------------------------------------------------------

@needs_helm
def test_first_deploy_installs_an_empty_stable_a_release_verifies_at_the_chart_replicas(chart_kube: Any,
                                                                                     tmp_path: Path) -> None:
    """firstDeploy=true: both Deployments empty, Services, Ingress and RBAC as usual; the canary target (under the
    rendered Role) reads no live version and provisions the canary at `replicas` pods for a first deploy."""
    from releasegate.targets.kubernetes.canary import KubernetesCanaryTarget

    objects = render(*ALB, "--set", "firstDeploy=true,replicas=3")
    rendered = by_kind(objects)
    assert all(charts.empty_slot(rendered["Deployment", f"web-{slot}"], 3) for slot in ("stable", "canary"))
    assert set(rendered) == APP_OBJECTS | RUNNER_OBJECTS | {("Ingress", "web")}
    charts.install(chart_kube, objects)
    charts.grant_runner(chart_kube, objects)
    target = KubernetesCanaryTarget.open(charts.runner_config(chart_kube, tmp_path, traffic="alb", min_ready_s=0.1))
    try:
        state = target.live_state()
        assert (state.live_slot, state.live_version) == ("stable", None)
        target.deploy("canary", "v1")
        assert target.wait_ready("canary", 20).ready_replicas == 3
    finally:
        target.close()


def test_rollout_rules_are_a_file_of_their_own_with_the_same_shape() -> None:
    rules = load_rules(ROLLOUT_RULES)
    assert set(rules) == {"namespaced", "cluster"}
    assert triples(rules["cluster"]) == triples(load_rules(RULES_FILE)["cluster"])
    for rule in rules["namespaced"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"} and len(rule["resources"]) == 1, rule


@needs_helm
@pytest.mark.parametrize("traffic", ["replicas", "alb"])
def test_rbac_rollout_grants_exactly_the_rollout_rules_on_the_apps_objects(traffic: str) -> None:
    """rbac.rollout.enabled: the Role is files/rollout-rules.yaml and nothing more (no Deployment, HPA or Ingress
    right, whatever the traffic mode), confined to the Rollout and the app's Services where a name can be given."""
    objects = by_kind(render("--set", f"traffic={traffic},rbac.rollout.enabled=true",
                             "--set", "rbac.rollout.name=shop-rollout,rbac.rollout.services[0]=web-preview"))
    rules = load_rules(ROLLOUT_RULES)
    role = objects["Role", "web-releasegate-runner"]
    cluster_role = objects["ClusterRole", "releasegate:shop:web-namespace-read"]
    assert triples(role["rules"]) == triples(rules["namespaced"])
    assert triples(cluster_role["rules"]) == triples(rules["cluster"])
    names = charts.names_by_verb(role["rules"])
    assert names["rollouts", "get"] == names["rollouts", "update"] == names["rollouts/status", "patch"] == \
        ("shop-rollout",)
    assert names["services", "patch"] == ("web", "web-stable", "web-canary", "web-preview")
    assert names["leases", "update"] == ("web-release",)
    assert names["replicasets", "list"] == names["leases", "create"] == ()
