"""What the chart tests share (tests/test_chart.py: charts/bluegreen-app, tests/test_chart_canary.py:
charts/canary-app): the runner rules files, `helm template` / `helm lint` (skipped without helm on PATH), and
installing a rendered chart into the fake API server (`chart_kube`, tests/fakekube/fixtures.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from releasegate.core.config import AppConfig, Config, KubernetesConfig
from tests.fakekube import FakeKube
from tests.fakekube.fixtures import CHART_RUNNER_TOKEN, CHART_RUNNER_USER
from tests.k8s_verbs import ROOT

__all__ = ["CHART_RUNNER_TOKEN", "CHART_RUNNER_USER"]

BLUE_GREEN_CHART = ROOT / "charts" / "bluegreen-app"
CANARY_CHART = ROOT / "charts" / "canary-app"
HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not on PATH; install it as "
                                "charts/bluegreen-app/README.md says (Testing the chart) to render the chart")
# The objects `install` creates: what a release reads and changes (RBAC is given to the fake separately).
APP_KINDS = ("Deployment", "Service", "Ingress")

Triple = tuple[str, str, str]
Obj = dict[str, Any]


def triples(rules: list[Obj]) -> set[Triple]:
    """(apiGroup, resource, verb) of every grant in RBAC rules."""
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def load_rules(path: Path) -> dict[str, list[Obj]]:
    """A rules file (files/*-rules.yaml): section name -> rules."""
    data: dict[str, list[Obj]] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def names_by_verb(rules: list[Obj]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(resource, verb) -> the resourceNames a Role confines that verb to (empty: any object)."""
    return {(rule["resources"][0], verb): tuple(rule.get("resourceNames", ()))
            for rule in rules for verb in rule["verbs"]}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def helm_lint(chart: Path, *values: str) -> None:
    result = helm("lint", "--strict", str(chart), *values)
    assert result.returncode == 0, result.stdout + result.stderr


def render(chart: Path, *args: str, namespace: str = "shop", release: str = "web") -> list[Obj]:
    """`helm template` of `chart` with `args` (e.g. "--set", "traffic=alb"): the rendered objects."""
    result = helm("template", release, str(chart), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_fails(chart: Path, values: str) -> str:
    """`helm template --set values` must fail: its stderr."""
    result = helm("template", "web", str(chart), "--set", values)
    assert result.returncode != 0
    return result.stderr


def by_kind(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def install(kube: FakeKube, objects: list[Obj], release: str = "web", namespace: str = "shop") -> None:
    """What `helm install` leaves on the cluster, for the kinds a release uses (RBAC is set separately)."""
    kube.seed_namespace(namespace)
    for obj in objects:
        if obj["kind"] in APP_KINDS:
            obj["metadata"].setdefault("annotations", {}).update(
                {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace})
            kube.create(obj)


def grant_runner(kube: FakeKube, objects: list[Obj]) -> None:
    """The rendered Role and ClusterRole, and nothing else, for the chart's runner (CHART_RUNNER_TOKEN)."""
    kube.set_rbac({CHART_RUNNER_USER: [obj for obj in objects if obj["kind"] in ("Role", "ClusterRole")]})


def runner_config(kube: FakeKube, directory: Path, **kubernetes: Any) -> Config:
    """The config of a runner with the chart's ServiceAccount token (app web, namespace shop, cluster DNS)."""
    kubeconfig = kube.write_kubeconfig(directory / "kubeconfig", namespace="shop", token=CHART_RUNNER_TOKEN)
    settings: dict[str, Any] = {"access": "cluster-dns", "max_retries": 0, "endpoints_timeout_s": 20, **kubernetes}
    return Config(app=AppConfig(name="web"), kubernetes=KubernetesConfig(kubeconfig=str(kubeconfig), namespace="shop",
                                                                       **settings))


def empty_slot(deployment: Obj, replicas: int) -> bool:
    """Is this rendered Deployment an empty slot (firstDeploy=true): 0 replicas, no version label anywhere, the
    image without a tag, and `releasegate.io/replicas` saying how many replicas the first version gets?"""
    template = deployment["spec"]["template"]
    return (deployment["spec"]["replicas"] == 0 and "version" not in deployment["metadata"]["labels"]
            and "version" not in template["metadata"]["labels"]
            and template["spec"]["containers"][0]["image"] == "releasegate-demo"
            and deployment["metadata"]["annotations"] == {"releasegate.io/replicas": str(replicas)})
