"""The blue-green layout on a cluster: object names, and the candidate Deployment derived from the live one.

An empty slot (what the charts install with `firstDeploy=true`) is a Deployment with 0 replicas that runs no
version: no version label, and an image without a tag. It keeps the pod template a first deploy derives the
candidate from, and says in the annotation `<annotation_prefix>replicas` how many replicas the app runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    app: str
    namespace: str
    service: str
    preview_service: str
    lease: str
    slot_label: str
    version_label: str
    container: str
    deployment_template: str
    annotation_prefix: str

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        kube, app = config.kubernetes, config.app.name
        return cls(app=app, namespace=kube.namespace, service=kube.service or app,
                   preview_service=kube.preview_service or f"{app}-preview",
                   lease=kube.lease_name or f"{app}-release", slot_label=kube.slot_label,
                   version_label=kube.version_label, container=kube.container,
                   deployment_template=kube.deployment_name, annotation_prefix=kube.annotation_prefix)

    def deployment(self, slot: str) -> str:
        return self.deployment_template.format(app=self.app, slot=slot)

    def annotation(self, key: str) -> str:
        return f"{self.annotation_prefix}{key}"

    def pod_selector(self, slot: str) -> str:
        return f"app={self.app},{self.slot_label}={slot}"


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    if not name:
        return containers[0]
    for container in containers:
        if container["name"] == name:
            return container
    raise ConfigError(f"deployment {deployment['metadata']['name']} has no container {name!r} "
                      f"(kubernetes.container); it has: {', '.join(c['name'] for c in containers)}")


def image_with_tag(image: str, tag: str) -> str:
    """`registry:5000/shop/web:v1@sha256:..` -> `registry:5000/shop/web:<tag>` (a digest pins the old image)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    repository = image[:colon] if colon > slash else image
    return f"{repository}:{tag}"


def image_repository(image: str) -> str:
    """`registry:5000/shop/web:v1@sha256:..` -> `registry:5000/shop/web` (what an empty slot's image is)."""
    image = image.split("@", 1)[0]
    slash, colon = image.rfind("/"), image.rfind(":")
    return image[:colon] if colon > slash else image


REPLICAS_KEY = "replicas"
"""The annotation (under kubernetes.annotation_prefix) with which an empty slot's Deployment says how many replicas
a first deploy gives the app: its own spec.replicas is 0."""


def spec_replicas(deployment: dict[str, Any]) -> int:
    return int(deployment["spec"].get("replicas", 1))


def is_empty(deployment: dict[str, Any], layout: Layout) -> bool:
    """Does this Deployment run no version at all (0 replicas, no version label, an untagged image)?"""
    return spec_replicas(deployment) == 0 and version_of(deployment, layout) is None


def check_slot(deployment: dict[str, Any], layout: Layout, chart: str) -> None:
    """ConfigError for a live Deployment a release cannot work from: pods of no known version, or an empty slot
    that does not say how many replicas a first deploy runs. Only reads; called in preflight."""
    name = f"{layout.namespace}/{deployment['metadata']['name']}"
    if version_of(deployment, layout) is None and spec_replicas(deployment) > 0:
        raise ConfigError(f"Deployment {name} runs {spec_replicas(deployment)} replica(s) of no known version (no "
                          f"{layout.version_label!r} pod label, an image without a tag); label its pod template "
                          f"{layout.version_label}=<version>, or scale it to 0 and install {chart} with "
                          "firstDeploy=true for a first deploy")
    if is_empty(deployment, layout):
        intended_replicas(deployment, layout)


def intended_replicas(deployment: dict[str, Any], layout: Layout) -> int:
    """How many replicas a first deploy gives the app: the empty slot's `<prefix>replicas` annotation."""
    key = layout.annotation(REPLICAS_KEY)
    value = str((deployment["metadata"].get("annotations") or {}).get(key) or "")
    if not value.isdigit() or int(value) < 1:
        got = f"it is {value!r}" if value else "it is missing"
        raise ConfigError(f"Deployment {layout.namespace}/{deployment['metadata']['name']} runs no version (a first "
                          f"deploy) and its annotation {key} must say how many replicas to deploy, but {got}; "
                          f"install with the chart's firstDeploy=true (it sets the annotation from `replicas`) or "
                          f"annotate it: kubectl annotate deployment {deployment['metadata']['name']} {key}=2")
    return int(value)


def version_of(deployment: dict[str, Any], layout: Layout) -> str | None:
    """The version a Deployment runs: its pod template's version label, else its image tag."""
    labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    if labels.get(layout.version_label):
        return str(labels[layout.version_label])
    image = _container(deployment, layout.container)["image"].split("@", 1)[0]
    slash, colon = image.rfind("/"), image.rfind(":")
    return image[colon + 1:] if colon > slash else None


def derive_candidate(live: dict[str, Any], layout: Layout, slot: str, version: str) -> dict[str, Any]:
    """The candidate Deployment: the live one's pod template with the new image tag and the other slot.

    Only what the API accepts on a create is kept (no status, uid, resourceVersion or managedFields).
    """
    spec = copy.deepcopy(live["spec"])
    template = spec["template"]
    template.setdefault("metadata", {}).setdefault("labels", {})
    template["metadata"]["labels"][layout.slot_label] = slot
    template["metadata"]["labels"][layout.version_label] = version
    template["metadata"].pop("creationTimestamp", None)
    selector = spec["selector"].setdefault("matchLabels", {})
    selector[layout.slot_label] = slot
    container = _container({"metadata": live["metadata"], "spec": spec}, layout.container)
    container["image"] = image_with_tag(container["image"], version)
    labels = dict(live["metadata"].get("labels") or {})
    labels[layout.slot_label] = slot
    labels[layout.version_label] = version
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": layout.deployment(slot), "namespace": layout.namespace, "labels": labels,
                     "annotations": {layout.annotation("derived-from"): live["metadata"]["name"]}},
        "spec": spec,
    }
