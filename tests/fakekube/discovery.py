"""Discovery documents, shaped like the recorded v1.32 server (``01-discovery.json``).

``/api`` and ``/api/v1`` carry no ``apiVersion``; ``/apis/<g>/<v>`` does. Subresources are listed as
entries of their own (``deployments/scale`` reports group autoscaling, version v1, kind Scale).
"""

from __future__ import annotations

from typing import Any

from .resources import STANDARD_VERBS

JsonObj = dict[str, Any]

VERSION_INFO: JsonObj = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.13",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# name -> (versions, preferred), in the order the real server lists them.
GROUPS: list[tuple[str, list[str], str]] = [
    ("apps", ["v1"], "v1"),
    ("events.k8s.io", ["v1"], "v1"),
    ("autoscaling", ["v2", "v1"], "v2"),
    ("batch", ["v1"], "v1"),
    ("networking.k8s.io", ["v1"], "v1"),
    ("policy", ["v1"], "v1"),
    ("coordination.k8s.io", ["v1"], "v1"),
    ("discovery.k8s.io", ["v1"], "v1"),
]


def _res(
    name: str,
    kind: str,
    *,
    singular: str = "",
    namespaced: bool = True,
    verbs: tuple[str, ...] = STANDARD_VERBS,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    storage_hash: str = "",
    group: str = "",
    version: str = "",
) -> JsonObj:
    entry: JsonObj = {"name": name, "singularName": singular, "namespaced": namespaced}
    if group:
        entry["group"] = group
        entry["version"] = version
    entry["kind"] = kind
    entry["verbs"] = list(verbs)
    if short:
        entry["shortNames"] = list(short)
    if categories:
        entry["categories"] = list(categories)
    if storage_hash:
        entry["storageVersionHash"] = storage_hash
    return entry


_GPU = ("get", "patch", "update")

CORE_V1_RESOURCES: list[JsonObj] = [
    _res("configmaps", "ConfigMap", singular="configmap", short=("cm",), storage_hash="qFsyl6wFWjQ="),
    _res("endpoints", "Endpoints", singular="endpoints", short=("ep",), storage_hash="fWeeMqaN/OA="),
    _res("events", "Event", singular="event", short=("ev",), storage_hash="r2yiGXH7wu8="),
    _res(
        "namespaces",
        "Namespace",
        singular="namespace",
        namespaced=False,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        short=("ns",),
        storage_hash="Q3oi5N2YM8M=",
    ),
    _res("namespaces/finalize", "Namespace", namespaced=False, verbs=("update",)),
    _res("namespaces/status", "Namespace", namespaced=False, verbs=_GPU),
    _res("pods", "Pod", singular="pod", short=("po",), categories=("all",), storage_hash="xPOwRZ+Yhw8="),
    _res("pods/attach", "PodAttachOptions", verbs=("create", "get")),
    _res("pods/binding", "Binding", verbs=("create",)),
    _res("pods/ephemeralcontainers", "Pod", verbs=_GPU),
    _res("pods/eviction", "Eviction", verbs=("create",), group="policy", version="v1"),
    _res("pods/exec", "PodExecOptions", verbs=("create", "get")),
    _res("pods/log", "Pod", verbs=("get",)),
    _res("pods/portforward", "PodPortForwardOptions", verbs=("create", "get")),
    _res("pods/proxy", "PodProxyOptions", verbs=("create", "delete", "get", "patch", "update")),
    _res("pods/status", "Pod", verbs=_GPU),
    _res(
        "services",
        "Service",
        singular="service",
        short=("svc",),
        categories=("all",),
        storage_hash="0/CO1lhkEBI=",
    ),
    _res("services/proxy", "ServiceProxyOptions", verbs=("create", "delete", "get", "patch", "update")),
    _res("services/status", "Service", verbs=_GPU),
]


GROUP_VERSION_RESOURCES: dict[str, list[JsonObj]] = {
    "apps/v1": [
        _res(
            "controllerrevisions",
            "ControllerRevision",
            singular="controllerrevision",
            storage_hash="85nkx63pcBU=",
        ),
        _res(
            "daemonsets",
            "DaemonSet",
            singular="daemonset",
            short=("ds",),
            categories=("all",),
            storage_hash="dd7pWHUlMKQ=",
        ),
        _res("daemonsets/status", "DaemonSet", verbs=_GPU),
        _res(
            "deployments",
            "Deployment",
            singular="deployment",
            short=("deploy",),
            categories=("all",),
            storage_hash="8aSe+NMegvE=",
        ),
        _res("deployments/scale", "Scale", verbs=_GPU, group="autoscaling", version="v1"),
        _res("deployments/status", "Deployment", verbs=_GPU),
        _res(
            "replicasets",
            "ReplicaSet",
            singular="replicaset",
            short=("rs",),
            categories=("all",),
            storage_hash="P1RzHs8/mWQ=",
        ),
        _res("replicasets/scale", "Scale", verbs=_GPU, group="autoscaling", version="v1"),
        _res("replicasets/status", "ReplicaSet", verbs=_GPU),
        _res(
            "statefulsets",
            "StatefulSet",
            singular="statefulset",
            short=("sts",),
            categories=("all",),
            storage_hash="H+vl74LkKdo=",
        ),
        _res("statefulsets/scale", "Scale", verbs=_GPU, group="autoscaling", version="v1"),
        _res("statefulsets/status", "StatefulSet", verbs=_GPU),
    ],
    "coordination.k8s.io/v1": [
        _res("leases", "Lease", singular="lease", storage_hash="gqkMMb/YqFM="),
    ],
    "discovery.k8s.io/v1": [
        _res("endpointslices", "EndpointSlice", singular="endpointslice", storage_hash="qgS0xkrxYAI="),
    ],
    # As a v1.32 server lists it; only ingresses (+status) are served, the rest answer 404 like any unserved type.
    "networking.k8s.io/v1": [
        _res(
            "ingressclasses",
            "IngressClass",
            singular="ingressclass",
            namespaced=False,
            storage_hash="l/iqIbDgFyQ=",
        ),
        _res("ingresses", "Ingress", singular="ingress", short=("ing",), storage_hash="39NQlfNR+bo="),
        _res("ingresses/status", "Ingress", verbs=_GPU),
        _res(
            "networkpolicies",
            "NetworkPolicy",
            singular="networkpolicy",
            short=("netpol",),
            storage_hash="YpfwF18m1G8=",
        ),
    ],
    "events.k8s.io/v1": [
        _res("events", "Event", singular="event", short=("ev",), storage_hash="r2yiGXH7wu8="),
    ],
    "autoscaling/v1": [
        _res(
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            singular="horizontalpodautoscaler",
            short=("hpa",),
            categories=("all",),
            storage_hash="qwQve8ut294=",
        ),
        _res("horizontalpodautoscalers/status", "HorizontalPodAutoscaler", verbs=_GPU),
    ],
    "autoscaling/v2": [
        _res(
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            singular="horizontalpodautoscaler",
            short=("hpa",),
            categories=("all",),
            storage_hash="qwQve8ut294=",
        ),
        _res("horizontalpodautoscalers/status", "HorizontalPodAutoscaler", verbs=_GPU),
    ],
    # As a v1.32 server lists it; only jobs (+status) are served, cronjobs answer 404 like any unserved type.
    "batch/v1": [
        _res(
            "cronjobs",
            "CronJob",
            singular="cronjob",
            short=("cj",),
            categories=("all",),
            storage_hash="sd5LIXh4Fjs=",
        ),
        _res("cronjobs/status", "CronJob", verbs=_GPU),
        _res("jobs", "Job", singular="job", categories=("all",), storage_hash="mudhfqk/qZY="),
        _res("jobs/status", "Job", verbs=_GPU),
    ],
    "policy/v1": [
        _res(
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            singular="poddisruptionbudget",
            short=("pdb",),
            storage_hash="6BGBu0kpHtk=",
        ),
        _res("poddisruptionbudgets/status", "PodDisruptionBudget", verbs=_GPU),
    ],
}


def api_versions(server_address: str) -> JsonObj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def core_resource_list() -> JsonObj:
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_V1_RESOURCES}


def _group(name: str, versions: list[str], preferred: str) -> JsonObj:
    return {
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred},
    }


def group_list() -> JsonObj:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(*g) for g in GROUPS]}


def group(name: str) -> JsonObj | None:
    for gname, versions, preferred in GROUPS:
        if gname == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(gname, versions, preferred)}
    return None


def known_group_version(group_name: str, version: str) -> bool:
    return any(g == group_name and version in versions for g, versions, _ in GROUPS)


def resource_list(group_name: str, version: str) -> JsonObj | None:
    resources = GROUP_VERSION_RESOURCES.get(f"{group_name}/{version}")
    if resources is None:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group_name}/{version}",
        "resources": resources,
    }
