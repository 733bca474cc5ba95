"""The blue-green layout on a cluster: object names, and the candidate Deployment derived from the live one."""

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
