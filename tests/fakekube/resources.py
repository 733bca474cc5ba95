"""The resource types the fake serves, with the facts their REST strategies encode upstream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import events_v1

JsonObj = dict[str, Any]

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def _meta_fields(obj: JsonObj) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return {"metadata.name": str(meta.get("name", "")), "metadata.namespace": str(meta.get("namespace", ""))}


def _pod_fields(obj: JsonObj) -> dict[str, str]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out = _meta_fields(obj)
    out.update(
        {
            "spec.nodeName": str(spec.get("nodeName", "")),
            "spec.restartPolicy": str(spec.get("restartPolicy", "")),
            "spec.schedulerName": str(spec.get("schedulerName", "")),
            "spec.serviceAccountName": str(spec.get("serviceAccountName", "")),
            "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
            "status.phase": str(status.get("phase", "")),
            "status.podIP": str(status.get("podIP", "")),
            "status.podIPs": str(status.get("podIP", "")),
            "status.nominatedNodeName": str(status.get("nominatedNodeName", "")),
        }
    )
    return out


def _event_fields(obj: JsonObj) -> dict[str, str]:
    ref = obj.get("involvedObject") or {}
    out = _meta_fields(obj)
    for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        out[f"involvedObject.{key}"] = str(ref.get(key, ""))
    out["reason"] = str(obj.get("reason", ""))
    out["reportingComponent"] = str(obj.get("reportingComponent", ""))
    out["source"] = str((obj.get("source") or {}).get("component", ""))
    out["type"] = str(obj.get("type", ""))
    return out


def _service_fields(obj: JsonObj) -> dict[str, str]:
    out = _meta_fields(obj)
    spec = obj.get("spec") or {}
    out["spec.clusterIP"] = str(spec.get("clusterIP", ""))
    out["spec.type"] = str(spec.get("type", ""))
    return out


def _namespace_fields(obj: JsonObj) -> dict[str, str]:
    out = _meta_fields(obj)
    out["status.phase"] = str((obj.get("status") or {}).get("phase", ""))
    return out


def _replicaset_fields(obj: JsonObj) -> dict[str, str]:
    out = _meta_fields(obj)
    out["status.replicas"] = str((obj.get("status") or {}).get("replicas", 0))
    return out


def _job_fields(obj: JsonObj) -> dict[str, str]:
    """``JobToSelectableFields``: the metadata fields plus ``status.successful`` (the succeeded count)."""
    out = _meta_fields(obj)
    out["status.successful"] = str(int((obj.get("status") or {}).get("succeeded", 0) or 0))
    return out


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    storage_hash: str = ""
    subresources: tuple[str, ...] = ()
    # "none": never set; "spec": bumps on spec change; "spec+annotations": Deployment's rule (annotations
    # are copied to ReplicaSets, so they count); "always": any change (EndpointSlice).
    generation: str = "none"
    has_status: bool = False
    allow_create_on_update: bool = False
    return_deleted_object: bool = False
    schema_key: str = ""
    fields: Callable[[JsonObj], dict[str, str]] = field(default=_meta_fields)
    # A second API over another resource's storage (events.k8s.io/v1 over core/v1 Events): where it is
    # stored, the stored (core) schema, and the conversions to and from the stored shape.
    storage_key: str = ""
    storage_schema_key: str = ""
    inbound: Callable[[JsonObj], JsonObj] | None = None
    outbound: Callable[[JsonObj], JsonObj] | None = None
    validator: str = ""
    # A custom resource (crds.py): served only once its CRD is installed, kept as sent (no typed schema), with
    # the apiextensions-apiserver strategies (status dropped on create, no strategic merge patch).
    custom: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return self.storage_key or f"{self.group}/{self.plural}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def supports_field(self, name: str) -> bool:
        return name in self.fields({})


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        singular="namespace",
        short_names=("ns",),
        storage_hash="Q3oi5N2YM8M=",
        subresources=("status", "finalize"),
        has_status=True,
        schema_key="Namespace",
        fields=_namespace_fields,
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        singular="pod",
        short_names=("po",),
        categories=("all",),
        storage_hash="xPOwRZ+Yhw8=",
        subresources=("status",),
        has_status=True,
        schema_key="Pod",
        fields=_pod_fields,
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        singular="service",
        short_names=("svc",),
        categories=("all",),
        storage_hash="0/CO1lhkEBI=",
        subresources=("status",),
        has_status=True,
        schema_key="Service",
        fields=_service_fields,
        return_deleted_object=True,
    ),
    ResourceType(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        singular="endpoints",
        short_names=("ep",),
        storage_hash="fWeeMqaN/OA=",
        allow_create_on_update=True,
        schema_key="Endpoints",
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        singular="event",
        short_names=("ev",),
        storage_hash="r2yiGXH7wu8=",
        allow_create_on_update=True,
        schema_key="Event",
        fields=_event_fields,
    ),
    ResourceType(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        singular="configmap",
        short_names=("cm",),
        storage_hash="qFsyl6wFWjQ=",
        schema_key="ConfigMap",
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        singular="deployment",
        short_names=("deploy",),
        categories=("all",),
        storage_hash="8aSe+NMegvE=",
        subresources=("status", "scale"),
        generation="spec+annotations",
        has_status=True,
        schema_key="Deployment",
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        singular="replicaset",
        short_names=("rs",),
        categories=("all",),
        storage_hash="P1RzHs8/mWQ=",
        subresources=("status", "scale"),
        generation="spec",
        has_status=True,
        schema_key="ReplicaSet",
        fields=_replicaset_fields,
    ),
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        singular="endpointslice",
        storage_hash="qgS0xkrxYAI=",
        generation="always",
        schema_key="EndpointSlice",
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        singular="lease",
        storage_hash="gqkMMb/YqFM=",
        allow_create_on_update=True,
        schema_key="Lease",
    ),
    # pkg/registry/networking/ingress/strategy.go: generation 1 on create and +1 on a spec change, status
    # reset on create and kept on update (its own subresource), no create on update, a Status on delete.
    ResourceType(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        singular="ingress",
        short_names=("ing",),
        storage_hash="39NQlfNR+bo=",
        subresources=("status",),
        generation="spec",
        has_status=True,
        schema_key="Ingress",
    ),
    # pkg/registry/autoscaling/horizontalpodautoscaler/strategy.go: status reset on create and kept on update
    # (its own subresource), generation moved by spec changes; served as autoscaling/v2 only (v1 answers 404).
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        singular="horizontalpodautoscaler",
        short_names=("hpa",),
        categories=("all",),
        storage_hash="qwQve8ut294=",
        subresources=("status",),
        generation="spec",
        has_status=True,
        schema_key="HorizontalPodAutoscaler",
    ),
    # pkg/registry/batch/job/strategy.go: status reset on create and kept on update (its own subresource),
    # generation 1 on create and +1 on a spec change; a DELETE without propagationPolicy orphans the pods
    # (DefaultGarbageCollectionPolicy is OrphanDependents for batch/v1, registry.delete applies it).
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        singular="job",
        categories=("all",),
        storage_hash="mudhfqk/qZY=",
        subresources=("status",),
        generation="spec",
        has_status=True,
        schema_key="Job",
        fields=_job_fields,
    ),
)

# Custom resources, served once their CustomResourceDefinition is installed (crds.py, FakeKube.install_crd).
# argoproj.io/v1alpha1 Rollout: the CRD of argo-rollouts (manifests/crds/rollout-crd.yaml) has the status (and
# scale) subresource, so metadata.generation moves with spec only; storage hash as StorageVersionHash computes it.
CUSTOM_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "Rollout",
        singular="rollout",
        short_names=("ro",),
        storage_hash="T0mdNo50nFA=",
        subresources=("status",),
        generation="spec",
        has_status=True,
        custom=True,
    ),
)

BY_KEY: dict[str, ResourceType] = {r.key: r for r in (*RESOURCES, *CUSTOM_RESOURCES)}
BY_KIND: dict[str, ResourceType] = {r.kind: r for r in (*RESOURCES, *CUSTOM_RESOURCES)}

EVENTS_V1 = ResourceType(
    "events.k8s.io",
    "v1",
    "events",
    "Event",
    singular="event",
    short_names=("ev",),
    storage_hash="r2yiGXH7wu8=",
    allow_create_on_update=True,
    schema_key="events.k8s.io/Event",
    fields=events_v1.fields,
    storage_key="/events",
    storage_schema_key="Event",
    inbound=events_v1.to_core,
    outbound=events_v1.to_v1,
    validator="events.k8s.io/Event",
)
# Served paths that are views over another resource's storage: (group, plural) -> resource.
VIEWS: dict[tuple[str, str], ResourceType] = {("events.k8s.io", "events"): EVENTS_V1}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    view = VIEWS.get((group, plural))
    if view is not None:
        return view if view.version == version else None
    res = BY_KEY.get(f"{group}/{plural}")
    if res is None or res.version != version:
        return None
    return res


def resource_for(kind_or_plural: str) -> ResourceType:
    """Friendly lookup for the Python API: ``"deployments"``, ``"Deployment"`` or ``"apps/deployments"``."""
    if kind_or_plural in BY_KIND:
        return BY_KIND[kind_or_plural]
    if kind_or_plural in BY_KEY:
        return BY_KEY[kind_or_plural]
    for res in BY_KEY.values():
        if kind_or_plural in (res.plural, res.singular, *res.short_names):
            return res
    raise KeyError(f"unknown resource {kind_or_plural!r}")
