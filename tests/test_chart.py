"""charts/bluegreen-app: the runner's RBAC equals what the kubernetes target requests, and the chart renders
the blue-green layout the target expects.

The RBAC checks need no helm: the rules live in a plain YAML file that the chart includes with
`.Files.Get`, and their (apiGroup, resource, verb) set is compared with the one tests/k8s_verbs.py reads
from releasegate.targets/kubernetes/*.py. The rendering checks run the real `helm template` / `helm lint` and skip
when helm is not on PATH (the install step is in the chart's README, "Testing the chart").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from releasegate.core.errors import ConfigError
from releasegate.core.types import ReleaseState, TrafficSplit
from tests import charts
from tests.charts import (
    BLUE_GREEN_CHART,
    Obj,
    by_kind,
    grant_runner,
    helm_lint,
    install,
    load_rules,
    names_by_verb,
    needs_helm,
    render_fails,
    triples,
)
from tests.k8s_verbs import (
    api_calls_in,
    api_calls_of_target,
    blue_green_modules,
    cluster_scoped_resources,
    verbs_used_by_target,
)

CHART = BLUE_GREEN_CHART
RULES_FILE = CHART / "files" / "runner-rules.yaml"


def rules_file() -> dict[str, list[Obj]]:
    return load_rules(RULES_FILE)


def render(*args: str) -> list[Obj]:
    return charts.render(CHART, *args)


# -- the extractor itself: it must see every request, and refuse what it cannot check ----------------------

def test_extractor_sees_every_api_call_in_the_target() -> None:
    calls = api_calls_of_target()
    written = sum(len(re.findall(r"\bapi\.call\(", path.read_text(encoding="utf-8")))
                  for path in blue_green_modules())
    assert len(calls) == written > 0
    # A few anchors, so a broken path parser cannot pass by returning nonsense consistently.
    by_method = {c.method: (c.api_group, c.resource, c.verb, c.namespaced) for c in calls}
    assert by_method["patch_namespaced_deployment_scale"] == ("apps", "deployments/scale", "patch", True)
    assert by_method["read_namespace"] == ("", "namespaces", "get", False)
    assert by_method["replace_namespaced_lease"] == ("coordination.k8s.io", "leases", "update", True)
    assert by_method["list_namespaced_endpoint_slice"] == ("discovery.k8s.io", "endpointslices", "list", True)


def test_extractor_rejects_a_label_that_disagrees_with_the_client_method(tmp_path: Path) -> None:
    module = tmp_path / "mislabelled.py"
    module.write_text("from kubernetes.client import AppsV1Api\n\n"
                      "def f(api, apps: AppsV1Api):\n"
                      "    api.call('get', 'deployments', apps.delete_namespaced_deployment, 'x', 'ns')\n")
    expected = "says get deployments but AppsV1Api.delete_namespaced_deployment sends delete deployments"
    with pytest.raises(ValueError, match=re.escape(expected)):
        api_calls_in(module)


def test_extractor_rejects_a_request_that_bypasses_api_call(tmp_path: Path) -> None:
    module = tmp_path / "bypass.py"
    module.write_text("from kubernetes.client import CoreV1Api\n\n"
                      "def f(core: CoreV1Api):\n"
                      "    return core.list_namespaced_secret('ns')\n")
    with pytest.raises(ValueError, match=re.escape("list_namespaced_secret is used outside api.call")):
        api_calls_in(module)


# -- the rules file (no helm) -------------------------------------------------------------------------------

def test_runner_rules_equal_the_requests_of_the_kubernetes_target() -> None:
    rules = rules_file()
    granted = triples(rules["namespaced"]) | triples(rules["loadWorkers"]) | triples(rules["cluster"])
    used = verbs_used_by_target()
    assert granted - used == set(), "granted but never requested: remove from files/runner-rules.yaml"
    assert used - granted == set(), "requested but not granted: add to files/runner-rules.yaml"


def test_cluster_scoped_resources_are_granted_by_the_cluster_rules_only() -> None:
    rules = rules_file()
    cluster = cluster_scoped_resources()
    assert cluster == {"namespaces"}
    assert {resource for _, resource, _ in triples(rules["cluster"])} == cluster
    assert not {resource for _, resource, _ in triples(rules["namespaced"])} & cluster


def test_runner_rules_have_no_wildcards_and_one_resource_per_rule() -> None:
    for section, rules in rules_file().items():
        for rule in rules:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, (section, rule)
            assert len(rule["resources"]) == 1, (section, rule)  # the chart picks resourceNames per resource
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], (section, rule)


def test_chart_metadata_and_default_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["apiVersion"], chart["name"]) == ("v2", "bluegreen-app")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["rbac"]["create"] is True and values["rbac"]["namespaceRead"] is True
    assert values["rbac"]["portForward"] is False
    assert values["serviceMonitor"]["enabled"] is False
    assert values["labels"] == {"slot": "slot", "version": "version"}
    assert values["containerPort"] == 8080 and values["service"]["port"] == 80
    # The template reads the rules file by this exact path.
    assert '.Files.Get "files/runner-rules.yaml"' in (CHART / "templates" / "_helpers.tpl").read_text()


# -- rendering with real helm -------------------------------------------------------------------------------

@needs_helm
@pytest.mark.parametrize("values", [[], ["--set", "serviceMonitor.enabled=true,rbac.portForward=true,"
                                               "idle.enabled=false,liveSlot=green"],
                                    ["--set", "firstDeploy=true,version="]])
def test_helm_lint_passes(values: list[str]) -> None:
    helm_lint(CHART, *values)


@needs_helm
def test_default_render_is_the_layout_the_kubernetes_target_expects() -> None:
    objects = by_kind(render())
    assert set(objects) == {
        ("Deployment", "web-blue"), ("Deployment", "web-green"),
        ("Service", "web"), ("Service", "web-preview"),
        ("ServiceAccount", "web-releasegate"), ("Role", "web-releasegate-runner"),
        ("RoleBinding", "web-releasegate-runner"), ("ClusterRole", "releasegate:shop:web-namespace-read"),
        ("ClusterRoleBinding", "releasegate:shop:web-namespace-read")}
    for slot, replicas in (("blue", 2), ("green", 0)):
        deployment = objects["Deployment", f"web-{slot}"]
        assert deployment["metadata"]["namespace"] == "shop"
        spec = deployment["spec"]
        assert spec["replicas"] == replicas
        assert spec["selector"] == {"matchLabels": {"app": "web", "slot": slot}}
        labels = spec["template"]["metadata"]["labels"]
        assert {key: labels[key] for key in ("app", "slot", "version")} == \
            {"app": "web", "slot": slot, "version": "v1"}
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"] == "releasegate-demo:v1"
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # The version env follows the label, so a Deployment releasegate derives reports its own version.
        env = {e["name"]: e for e in container["env"]}
        assert env["APP_VERSION"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['version']"
    service, preview = objects["Service", "web"], objects["Service", "web-preview"]
    assert service["spec"]["selector"] == {"app": "web", "slot": "blue"}
    assert preview["spec"]["selector"] == {"app": "web", "slot": "green"}
    for svc in (service, preview):
        assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


@needs_helm
def test_rendered_role_and_cluster_role_grant_exactly_what_the_target_requests() -> None:
    objects = by_kind(render())
    role = objects["Role", "web-releasegate-runner"]
    cluster_role = objects["ClusterRole", "releasegate:shop:web-namespace-read"]
    # Load workers as a Job (rbac.loadWorkers) are opt-in: the default Role has everything else.
    assert triples(role["rules"]) | triples(cluster_role["rules"]) == \
        verbs_used_by_target() - triples(rules_file()["loadWorkers"])
    assert triples(cluster_role["rules"]) == {("", "namespaces", "get")}
    # Verbs on one named object are confined to the app's own objects.
    names = names_by_verb(role["rules"])
    assert names["deployments", "get"] == names["deployments", "update"] == ("web-blue", "web-green")
    assert names["deployments/scale", "patch"] == ("web-blue", "web-green")
    assert names["services", "patch"] == names["services", "get"] == ("web", "web-preview")
    assert names["leases", "update"] == ("web-release",)
    assert names["deployments", "create"] == names["leases", "create"] == names["pods", "list"] == ()
    assert cluster_role["rules"][0]["resourceNames"] == ["shop"]
    for binding, role_kind in ((objects["RoleBinding", "web-releasegate-runner"], "Role"),
                               (objects["ClusterRoleBinding", "releasegate:shop:web-namespace-read"],
                                "ClusterRole")):
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "web-releasegate", "namespace": "shop"}]


@needs_helm
def test_load_workers_add_exactly_jobs_and_configmaps_create_and_delete() -> None:
    objects = by_kind(render("--set", "rbac.loadWorkers=true"))
    role = objects["Role", "web-releasegate-runner"]
    cluster_role = objects["ClusterRole", "releasegate:shop:web-namespace-read"]
    assert triples(role["rules"]) | triples(cluster_role["rules"]) == verbs_used_by_target()
    assert triples(rules_file()["loadWorkers"]) == {
        ("batch", "jobs", "create"), ("batch", "jobs", "delete"), ("", "configmaps", "create"),
        ("", "configmaps", "delete")}
    names = names_by_verb(role["rules"])
    assert names["jobs", "delete"] == names["configmaps", "delete"] == ()  # each load's Job has a new name


@needs_helm
def test_render_with_overrides() -> None:
    objects = by_kind(render(
        "--set", "app=shop,liveSlot=green,idle.enabled=false,version=v7,image.repository=reg.example/shop",
        "--set", "rbac.portForward=true,rbac.namespaceRead=false,rbac.serviceAccount.name=ci-runner",
        "--set", "serviceMonitor.enabled=true,serviceMonitor.labels.release=kps"))
    assert ("Deployment", "shop-blue") not in objects  # the idle slot is omitted
    green = objects["Deployment", "shop-green"]
    assert green["spec"]["replicas"] == 2
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/shop:v7"
    assert green["spec"]["template"]["metadata"]["labels"]["version"] == "v7"
    assert objects["Service", "shop"]["spec"]["selector"] == {"app": "shop", "slot": "green"}
    assert objects["Service", "shop-preview"]["spec"]["selector"] == {"app": "shop", "slot": "blue"}
    assert not [key for key in objects if key[0].startswith("Cluster")]
    role = objects["Role", "shop-releasegate-runner"]
    extra = triples(role["rules"]) - verbs_used_by_target()
    assert extra == {("", "pods", "get"), ("", "pods/portforward", "get"), ("", "pods/portforward", "create")}
    assert objects["RoleBinding", "shop-releasegate-runner"]["subjects"][0]["name"] == "ci-runner"
    # Metrics: a headless Service over both slots, and a ServiceMonitor copying the pod labels onto series.
    metrics = objects["Service", "shop-metrics"]
    assert metrics["spec"]["clusterIP"] == "None" and metrics["spec"]["selector"] == {"app": "shop"}
    monitor = objects["ServiceMonitor", "shop"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app": "shop", "app.kubernetes.io/component": "metrics"}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {(r["sourceLabels"][0], r["targetLabel"]) for r in endpoint["relabelings"]} == {
        ("__meta_kubernetes_pod_label_app", "app"), ("__meta_kubernetes_pod_label_slot", "slot"),
        ("__meta_kubernetes_pod_label_version", "version")}
    # Only the metrics Service matches the ServiceMonitor: no pod is scraped twice.
    matching = [name for (kind, name), obj in objects.items() if kind == "Service"
                and obj["metadata"]["labels"].get("app.kubernetes.io/component") == "metrics"]
    assert matching == ["shop-metrics"]


@needs_helm
def test_custom_label_keys_reach_selectors_env_and_relabelings() -> None:
    objects = by_kind(render("--set", "labels.slot=color,serviceMonitor.enabled=true",
                             "--set-string", "labels.version=app\\.kubernetes\\.io/version"))
    blue = objects["Deployment", "web-blue"]
    assert blue["spec"]["selector"]["matchLabels"] == {"app": "web", "color": "blue"}
    assert blue["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    env = {e["name"]: e for e in blue["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["APP_VERSION"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['app.kubernetes.io/version']"
    assert objects["Service", "web"]["spec"]["selector"] == {"app": "web", "color": "blue"}
    relabel = {r["targetLabel"]: r["sourceLabels"][0]
               for r in objects["ServiceMonitor", "web"]["spec"]["endpoints"][0]["relabelings"]}
    # seriesLabels still name the pod keys `slot`/`version`; a user with custom keys sets them too.
    assert relabel["slot"] == "__meta_kubernetes_pod_label_slot"
    objects = by_kind(render(
        "--set", "serviceMonitor.enabled=true",
        "--set-string", "serviceMonitor.seriesLabels.version=app\\.kubernetes\\.io/version"))
    relabel = {r["targetLabel"]: r["sourceLabels"][0]
               for r in objects["ServiceMonitor", "web"]["spec"]["endpoints"][0]["relabelings"]}
    assert relabel["version"] == "__meta_kubernetes_pod_label_app_kubernetes_io_version"


@needs_helm
def test_rbac_can_be_turned_off() -> None:
    kinds = {kind for kind, _ in by_kind(render("--set", "rbac.create=false"))}
    assert kinds == {"Deployment", "Service"}


@needs_helm
@pytest.mark.parametrize(("values", "message"), [
    ("liveSlot=purple", 'slot "purple" is neither blue nor green'),
    ("app=Shop_1", 'app "Shop_1" is not a DNS-1123 label'),
    ("version=", "version is empty"),
])
def test_bad_values_fail_with_a_clear_message(values: str, message: str) -> None:
    assert message in render_fails(CHART, values)


# -- the chart against the fake API server (helm + tests/fakekube) ------------------------------------------

@needs_helm
def test_upgrade_keeps_what_releasegate_changed(chart_kube: Any, tmp_path: Path) -> None:
    """`helm upgrade` after a release of v2 to green must not move traffic back or revive blue."""
    install(chart_kube, render("--set", "rbac.create=false"))
    # What releasegate leaves after releasing v2: green runs v2 and serves, blue is scaled down.
    service = chart_kube.get_object("services", "shop", "web")
    service["spec"]["selector"]["slot"] = "green"
    chart_kube.apply(service)
    green = chart_kube.get_object("deployments", "shop", "web-green")
    green["spec"]["replicas"] = 2
    green["spec"]["template"]["metadata"]["labels"]["version"] = "v2"
    green["spec"]["template"]["spec"]["containers"][0]["image"] = "releasegate-demo:v2"
    chart_kube.apply(green)
    blue = chart_kube.get_object("deployments", "shop", "web-blue")
    blue["spec"]["replicas"] = 0
    chart_kube.apply(blue)
    kubeconfig = chart_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")
    chart_kube.clear_requests()

    # --dry-run=server makes `lookup` read the cluster, as `helm upgrade` does; the fake serves no OpenAPI.
    upgrade = ["--set", "rbac.create=false,replicas=3", "--dry-run=server", "--disable-openapi-validation",
               "--kubeconfig", str(kubeconfig)]
    objects = by_kind(render(*upgrade))
    assert objects["Service", "web"]["spec"]["selector"] == {"app": "web", "slot": "green"}
    assert objects["Service", "web-preview"]["spec"]["selector"]["slot"] == "green"
    green_spec = objects["Deployment", "web-green"]["spec"]
    assert green_spec["replicas"] == 3  # the live slot gets `replicas`
    assert green_spec["template"]["metadata"]["labels"]["version"] == "v2"
    assert green_spec["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v2"
    blue_spec = objects["Deployment", "web-blue"]["spec"]
    assert blue_spec["replicas"] == 0 and blue_spec["template"]["metadata"]["labels"]["version"] == "v1"
    assert [r for r in chart_kube.requests if r.is_write] == []

    # preserveReleaseState=false: the values win (documented: the upgrade moves traffic back).
    objects = by_kind(render(*upgrade, "--set", "preserveReleaseState=false"))
    assert objects["Service", "web"]["spec"]["selector"]["slot"] == "blue"


@needs_helm
def test_rendered_rbac_is_enough_for_a_whole_blue_green_cycle(chart_kube: Any, tmp_path: Path) -> None:
    """The chart's Role and ClusterRole, enforced by the fake API server, let the target do every step."""
    from releasegate.targets.kubernetes.target import KubernetesTarget

    objects = render()
    install(chart_kube, objects)
    grant_runner(chart_kube, objects)
    chart_kube.wait_for(lambda: chart_kube.deployment_available("shop", "web-blue"), timeout=10)
    config = charts.runner_config(chart_kube, tmp_path)

    target = KubernetesTarget.open(config)  # reads the namespace: the ClusterRole's rule
    try:
        assert target.live_state().live_slot == "blue"
        target.acquire_lock("run-1", 60)
        target.record_release_state(ReleaseState.from_dict({
            "run_id": "run-1", "version": "v2", "previous_version": "v1", "live_slot": "blue",
            "live_version": "v1", "candidate_slot": "green", "phase": "provisioning", "updated_at": 1.0}))
        target.deploy("green", "v2")
        assert target.wait_ready("green", 20).ready_replicas == 2
        target.set_traffic(TrafficSplit.all_to("green"))
        target.scale_down("blue")
        target.remove("blue")  # what a rollback does to a candidate; here only the verb matters
        target.release_lock("run-1")
        assert target.live_state().live_slot == "green"
    finally:
        target.close()

    # The restriction is real: an object that is not the app's is out of reach.
    chart_kube.create({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": "other", "namespace": "shop"},
                      "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}})
    other_kube = config.kubernetes.model_copy(update={"service": "other"})
    other = config.model_copy(update={"kubernetes": other_kube})
    with pytest.raises(ConfigError, match="RBAC forbids get on services"):
        KubernetesTarget.open(other)


@needs_helm
def test_without_namespace_read_preflight_names_the_missing_rule(chart_kube: Any, tmp_path: Path) -> None:
    objects = render("--set", "rbac.namespaceRead=false")
    install(chart_kube, objects)
    grant_runner(chart_kube, [obj for obj in objects if obj["kind"] == "Role"])
    from releasegate.targets.kubernetes.target import KubernetesTarget

    with pytest.raises(ConfigError, match="RBAC forbids get on namespaces"):
        KubernetesTarget.open(charts.runner_config(chart_kube, tmp_path))


@needs_helm
def test_first_deploy_installs_empty_slots_a_release_deploys_with_the_chart_replicas(chart_kube: Any,
                                                                                  tmp_path: Path) -> None:
    """firstDeploy=true: both slots empty, the Services and RBAC as usual; the target (under the rendered Role)
    reads no live version and deploys `replicas` pods; a later `helm upgrade` keeps what the release did."""
    from releasegate.targets.kubernetes.target import KubernetesTarget

    objects = render("--set", "firstDeploy=true,replicas=3")
    rendered = by_kind(objects)
    assert all(charts.empty_slot(rendered["Deployment", f"web-{slot}"], 3) for slot in ("blue", "green"))
    assert rendered["Service", "web"]["spec"]["selector"] == {"app": "web", "slot": "blue"}
    install(chart_kube, objects)
    grant_runner(chart_kube, objects)
    target = KubernetesTarget.open(charts.runner_config(chart_kube, tmp_path, min_ready_s=0.1))
    try:
        assert (target.live_state().live_version, target.candidate_slot("blue")) == (None, "green")
        target.deploy("green", "v1")
        assert target.wait_ready("green", 20).ready_replicas == 3
        target.set_traffic(TrafficSplit.all_to("green"))
    finally:
        target.close()
    kubeconfig = chart_kube.write_kubeconfig(tmp_path / "admin", namespace="shop")
    chart_kube.set_rbac(None)  # helm's discovery as the admin; the fake's RBAC mode serves only what rules name
    upgrade = by_kind(render("--set", "firstDeploy=true,replicas=3,rbac.create=false", "--dry-run=server",
                             "--disable-openapi-validation", "--kubeconfig", str(kubeconfig)))
    green = upgrade["Deployment", "web-green"]
    assert (green["spec"]["replicas"], green["metadata"]["labels"]["version"]) == (3, "v1")
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] == "releasegate-demo:v1"
    assert upgrade["Service", "web"]["spec"]["selector"]["slot"] == "green"
    assert charts.empty_slot(upgrade["Deployment", "web-blue"], 3)
