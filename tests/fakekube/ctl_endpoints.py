"""Endpoints and EndpointSlice controllers, as recorded in ``03``/``04``.

Endpoints: the Service's port *name* with the *target* port, addresses sorted by IP (as strings, like
upstream's ``bytes.Compare``), not-ready pods under ``notReadyAddresses``, no ``subsets`` key at all when
nothing matches, the Service's labels copied. EndpointSlices: one slice per Service (``generateName
<svc>-``), updated in place (the store bumps its generation), ``endpoints: null, ports: null`` when empty.
"""

from __future__ import annotations

import contextlib
from typing import Any

from . import status
from .clock import Clock
from .registry import Registry
from .resources import BY_KIND
from .selectors import selector_from_map
from .store import jcopy

JsonObj = dict[str, Any]

TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"


def _ready(pod: JsonObj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _resolve_port(svc_port: JsonObj, pod: JsonObj) -> int | None:
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == svc_port.get("protocol", "TCP"):
                return int(port["containerPort"])
    return None


def _target_ref(pod: JsonObj) -> JsonObj:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}


class EndpointsController:
    def __init__(self, registry: Registry, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._clock = clock

    def sync(self) -> None:
        services = self._store.list("/services")
        wanted = set()
        for svc in services:
            meta = svc["metadata"]
            if meta.get("deletionTimestamp") or not (svc.get("spec") or {}).get("selector"):
                continue
            wanted.add((meta["namespace"], meta["name"]))
            pods = [
                p
                for p in self._store.list("/pods", meta["namespace"])
                if selector_from_map(svc["spec"]["selector"]).matches(p["metadata"].get("labels"))
                and (p.get("status") or {}).get("podIP")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            try:
                self._sync_endpoints(svc, pods)
                self._sync_slice(svc, pods)
            except status.ApiError as err:
                if err.code not in (404, 409, 403):
                    raise
        # Endpoints of deleted Services go away (their slices follow the ownerReference via the GC).
        for ep in self._store.list("/endpoints"):
            meta = ep["metadata"]
            if (meta["namespace"], meta["name"]) not in wanted and (meta.get("annotations") or {}).get(TRIGGER):
                owner = self._store.peek("/services", meta["namespace"], meta["name"])
                if owner is None or not (owner.get("spec") or {}).get("selector"):
                    with contextlib.suppress(status.ApiError):
                        self._registry.delete(BY_KIND["Endpoints"], meta["namespace"], meta["name"], {})

    def _labels(self, svc: JsonObj) -> dict[str, str]:
        labels = dict(svc["metadata"].get("labels") or {})
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels[HEADLESS] = ""
        return labels

    def _sync_endpoints(self, svc: JsonObj, pods: list[JsonObj]) -> None:
        meta = svc["metadata"]
        publish = bool(svc["spec"].get("publishNotReadyAddresses"))
        groups: dict[str, JsonObj] = {}
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ports = []
            for sp in svc["spec"].get("ports") or []:
                resolved = _resolve_port(sp, pod)
                if resolved is None:
                    continue
                entry: JsonObj = {}
                if sp.get("name"):
                    entry["name"] = sp["name"]
                entry["port"] = resolved
                entry["protocol"] = sp.get("protocol", "TCP")
                if sp.get("appProtocol"):
                    entry["appProtocol"] = sp["appProtocol"]
                ports.append(entry)
            key = repr(sorted((p.get("name", ""), p["port"]) for p in ports))
            group = groups.setdefault(key, {"addresses": [], "notReadyAddresses": [], "ports": ports})
            address = {
                "ip": pod["status"]["podIP"],
                "nodeName": pod["spec"].get("nodeName", ""),
                "targetRef": _target_ref(pod),
            }
            if not address["nodeName"]:
                del address["nodeName"]
            (group["addresses"] if _ready(pod) or publish else group["notReadyAddresses"]).append(address)
        subsets = []
        for group in groups.values():
            subset: JsonObj = {}
            for key in ("addresses", "notReadyAddresses"):
                if group[key]:
                    subset[key] = sorted(group[key], key=lambda a: (a["ip"], a["targetRef"]["uid"]))
            if not subset:
                continue
            if group["ports"]:
                subset["ports"] = sorted(group["ports"], key=lambda p: (p.get("name", ""), p["port"]))
            subsets.append(subset)
        current = self._store.get("/endpoints", meta["namespace"], meta["name"])
        labels = self._labels(svc)
        if current is None:
            body: JsonObj = {
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "annotations": {TRIGGER: self._registry.timestamp()},
                },
            }
            if labels:
                body["metadata"]["labels"] = labels
            if subsets:
                body["subsets"] = subsets
            self._registry.controller_create("Endpoints", meta["namespace"], body, "kube-controller-manager")
            return
        if current.get("subsets", []) == subsets and (current["metadata"].get("labels") or {}) == labels:
            return
        new = jcopy(current)
        new["metadata"]["labels"] = labels
        new["metadata"].setdefault("annotations", {})[TRIGGER] = self._registry.timestamp()
        if subsets:
            new["subsets"] = subsets
        else:
            new.pop("subsets", None)
        self._registry.controller_update("Endpoints", current, new, "kube-controller-manager")

    def _sync_slice(self, svc: JsonObj, pods: list[JsonObj]) -> None:
        meta = svc["metadata"]
        endpoints = []
        ports: list[JsonObj] | None = None
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            ready = _ready(pod)
            endpoint: JsonObj = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {
                    "ready": ready and not terminating,
                    "serving": ready,
                    "terminating": terminating,
                },
                "targetRef": _target_ref(pod),
            }
            if pod["spec"].get("nodeName"):
                endpoint["nodeName"] = pod["spec"]["nodeName"]
            endpoints.append(endpoint)
            if ports is None:
                ports = []
                for sp in svc["spec"].get("ports") or []:
                    resolved = _resolve_port(sp, pod)
                    if resolved is not None:
                        entry: JsonObj = {
                            "name": sp.get("name", ""),
                            "protocol": sp.get("protocol", "TCP"),
                            "port": resolved,
                        }
                        if sp.get("appProtocol"):
                            entry["appProtocol"] = sp["appProtocol"]
                        ports.append(entry)
        labels = {**self._labels(svc), MANAGED_BY: SLICE_CONTROLLER, SERVICE_NAME: meta["name"]}
        existing = [
            s
            for s in self._store.list("discovery.k8s.io/endpointslices", meta["namespace"])
            if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) == meta["name"]
            and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == SLICE_CONTROLLER
        ]
        body_endpoints = endpoints or None
        body_ports = ports if endpoints else None
        if not existing:
            body: JsonObj = {
                "metadata": {
                    "generateName": f"{meta['name']}-",
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {TRIGGER: self._registry.timestamp()},
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "addressType": "IPv4",
                "endpoints": body_endpoints,
                "ports": body_ports,
            }
            self._registry.controller_create("EndpointSlice", meta["namespace"], body, "endpointslice-controller")
            return
        current = existing[0]
        for extra in existing[1:]:
            self._registry.delete(BY_KIND["EndpointSlice"], meta["namespace"], extra["metadata"]["name"], {})
        if (
            current.get("endpoints") == body_endpoints
            and current.get("ports") == body_ports
            and (current["metadata"].get("labels") or {}) == labels
        ):
            return
        new = jcopy(current)
        new["endpoints"] = body_endpoints
        new["ports"] = body_ports
        new["metadata"]["labels"] = labels
        new["metadata"].setdefault("annotations", {})[TRIGGER] = self._registry.timestamp()
        self._registry.controller_update("EndpointSlice", current, new, "endpointslice-controller")
