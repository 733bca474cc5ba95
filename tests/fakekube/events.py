"""Events as the controllers, the scheduler and the kubelet write them (core/v1, aggregated by count)."""

from __future__ import annotations

import contextlib
from typing import Any

from . import status
from .clock import Clock
from .gotime import format_microtime, format_time
from .registry import Registry
from .resources import BY_KIND

JsonObj = dict[str, Any]


def object_reference(obj: JsonObj, kind: str, api_version: str, field_path: str = "") -> JsonObj:
    meta = obj["metadata"]
    ref: JsonObj = {"kind": kind}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    ref.update(
        {
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": api_version,
            "resourceVersion": meta.get("resourceVersion", ""),
        }
    )
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class EventRecorder:
    def __init__(self, registry: Registry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock
        # (namespace, involved uid, type, reason, message, component) -> event name, for count aggregation
        self._seen: dict[tuple[str, ...], str] = {}
        self._last_ns = 0

    def _name(self, base: str) -> str:
        nanos = int(self._clock.now().timestamp() * 1e9)
        nanos = max(nanos, self._last_ns + 1)
        self._last_ns = nanos
        return f"{base}.{nanos:x}"

    def record(
        self,
        obj: JsonObj,
        kind: str,
        event_type: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str = "",
        field_path: str = "",
    ) -> None:
        res = BY_KIND[kind]
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta["uid"], event_type, reason, message, component)
        now = format_time(self._clock.now())
        existing_name = self._seen.get(key)
        if existing_name is not None:
            current = self._registry.store.get("/events", namespace, existing_name)
            if current is not None:
                new = dict(current)
                new["count"] = int(current.get("count", 1)) + 1
                new["lastTimestamp"] = now
                with contextlib.suppress(status.ApiError):
                    self._registry.controller_update("Event", current, new, component)
                return
        source: JsonObj = {"component": component}
        if host:
            source["host"] = host
        event = {
            "metadata": {"name": self._name(meta["name"]), "namespace": namespace},
            "involvedObject": object_reference(obj, kind, res.group_version, field_path),
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host,
        }
        try:
            created = self._registry.controller_create("Event", namespace, event, component)
        except status.ApiError:
            return
        self._seen[key] = created["metadata"]["name"]

    def scheduled(self, pod: JsonObj, node: str) -> None:
        """The scheduler writes through events.k8s.io/v1: no counts, MicroTime eventTime, an action."""
        meta = pod["metadata"]
        event = {
            "metadata": {"name": self._name(meta["name"]), "namespace": meta["namespace"]},
            "involvedObject": object_reference(pod, "Pod", "v1"),
            "reason": "Scheduled",
            "message": f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
            "source": {},
            "firstTimestamp": None,
            "lastTimestamp": None,
            "type": "Normal",
            "eventTime": format_microtime(self._clock.now()),
            "action": "Binding",
            "reportingComponent": "default-scheduler",
            "reportingInstance": "default-scheduler-fakekube",
        }
        with contextlib.suppress(status.ApiError):
            self._registry.controller_create("Event", meta["namespace"], event, "kube-scheduler")
