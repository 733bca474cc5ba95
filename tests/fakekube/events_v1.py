"""events.k8s.io/v1 Events: a second view of the core/v1 Event storage, as the real apiserver serves it.

Conversion follows ``pkg/apis/events/v1``: ``involvedObject`` is ``regarding``, ``message`` is ``note``,
``reportingComponent`` is ``reportingController``, ``source``/``firstTimestamp``/``lastTimestamp``/``count``
become the ``deprecated*`` fields. Stored objects stay core-shaped, so both APIs see the same events.
"""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]

_SAME = ("reportingInstance", "action", "reason", "related", "type", "series")


def to_v1(core: JsonObj) -> JsonObj:
    out: JsonObj = {"metadata": core.get("metadata", {}), "eventTime": core.get("eventTime")}
    if core.get("series"):
        out["series"] = core["series"]
    if core.get("reportingComponent"):
        out["reportingController"] = core["reportingComponent"]
    for key in ("reportingInstance", "action", "reason"):
        if core.get(key):
            out[key] = core[key]
    out["regarding"] = core.get("involvedObject") or {}
    if core.get("related"):
        out["related"] = core["related"]
    if core.get("message"):
        out["note"] = core["message"]
    if core.get("type"):
        out["type"] = core["type"]
    out["deprecatedSource"] = core.get("source") or {}
    out["deprecatedFirstTimestamp"] = core.get("firstTimestamp")
    out["deprecatedLastTimestamp"] = core.get("lastTimestamp")
    if core.get("count"):
        out["deprecatedCount"] = core["count"]
    return out


def to_core(v1: JsonObj) -> JsonObj:
    out: JsonObj = {"metadata": v1.get("metadata", {})}
    out["involvedObject"] = v1.get("regarding") or {}
    for key in ("reason",):
        if v1.get(key):
            out[key] = v1[key]
    if v1.get("note"):
        out["message"] = v1["note"]
    out["source"] = v1.get("deprecatedSource") or {}
    out["firstTimestamp"] = v1.get("deprecatedFirstTimestamp")
    out["lastTimestamp"] = v1.get("deprecatedLastTimestamp")
    if v1.get("deprecatedCount"):
        out["count"] = v1["deprecatedCount"]
    if v1.get("type"):
        out["type"] = v1["type"]
    out["eventTime"] = v1.get("eventTime")
    for key in ("series", "action", "related"):
        if v1.get(key):
            out[key] = v1[key]
    out["reportingComponent"] = v1.get("reportingController", "")
    out["reportingInstance"] = v1.get("reportingInstance", "")
    return out


def fields(core: JsonObj) -> dict[str, str]:
    meta = core.get("metadata") or {}
    ref = core.get("involvedObject") or {}
    out = {"metadata.name": str(meta.get("name", "")), "metadata.namespace": str(meta.get("namespace", ""))}
    for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        out[f"regarding.{key}"] = str(ref.get(key, ""))
    out["reason"] = str(core.get("reason", ""))
    out["reportingController"] = str(core.get("reportingComponent", ""))
    out["type"] = str(core.get("type", ""))
    return out
