"""Decode request bodies the way the apiserver's JSON decoder does.

One walk over the body against ``schema.json`` (generated from the client's models by ``schema_gen``):

* collects unknown fields (``spec.replicaz``) for the ``Warning`` header or a Strict-mode 400;
* rejects wrongly typed values with Go's ``json: cannot unmarshal ...`` message;
* parses ``metav1.Time``/``MicroTime`` (400 on a bad format, exactly like the golden Lease exchanges);
* normalises to what Go would serialise back: ``null`` and empty maps/lists of ``omitempty`` fields vanish,
  non-pointer structs and non-``omitempty`` fields appear with their zero value (``creationTimestamp: null``
  in a pod template, ``status: {}`` on a fresh Deployment, ``resources: {}`` on a container).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .gotime import RFC3339_MICRO, GoTimeError, format_microtime, format_time, go_parse, parse_time

JsonObj = dict[str, Any]

# Fields serialised even when zero/nil (no ``omitempty``), with the value Go writes for "absent".
ZERO_FILLED: dict[tuple[str, str], Any] = {
    ("V1ObjectMeta", "creationTimestamp"): None,
    ("V1PodSpec", "containers"): None,
    ("V1EndpointSlice", "endpoints"): None,
    ("V1EndpointSlice", "ports"): None,
    ("V1EndpointSlice", "addressType"): "",
    ("CoreV1Event", "firstTimestamp"): None,
    ("CoreV1Event", "lastTimestamp"): None,
    ("CoreV1Event", "eventTime"): None,
    ("CoreV1Event", "reportingComponent"): "",
    ("CoreV1Event", "reportingInstance"): "",
    ("EventsV1Event", "eventTime"): None,
    ("EventsV1Event", "deprecatedFirstTimestamp"): None,
    ("EventsV1Event", "deprecatedLastTimestamp"): None,
    ("V1PodCondition", "lastProbeTime"): None,
    ("V1PodCondition", "lastTransitionTime"): None,
    ("V1ContainerStatus", "image"): "",
    ("V1ContainerStatus", "imageID"): "",
    ("V1ContainerStatus", "ready"): False,
    ("V1ContainerStatus", "restartCount"): 0,
    ("V1ReplicaSetStatus", "replicas"): 0,
    ("V1ScaleStatus", "replicas"): 0,
    ("V1DeploymentSpec", "selector"): None,
    # autoscaling/v2 HorizontalPodAutoscaler: `maxReplicas`, `desiredReplicas`, the target's kind and name and a
    # metric target's type have no omitempty (k8s.io/api/autoscaling/v2/types.go).
    ("V2HorizontalPodAutoscalerSpec", "maxReplicas"): 0,
    ("V2HorizontalPodAutoscalerStatus", "desiredReplicas"): 0,
    ("V2CrossVersionObjectReference", "kind"): "",
    ("V2CrossVersionObjectReference", "name"): "",
    ("V2MetricTarget", "type"): "",
    ("V2MetricSpec", "type"): "",
    ("V1ReplicaSetSpec", "selector"): None,
}

# Non-pointer struct fields: Go always serialises them, as ``{}`` at least.
STRUCT_FILLED: set[tuple[str, str]] = {
    *(
        (t, f)
        for t in ("V1Deployment", "V1ReplicaSet", "V1Pod", "V1Service", "V1Namespace", "V1Scale", "V1Ingress", "V1Job")
        for f in ("metadata", "spec", "status")
    ),
    ("V1Lease", "metadata"),
    ("V1Lease", "spec"),
    ("V1Endpoints", "metadata"),
    ("V1EndpointSlice", "metadata"),
    ("V1ConfigMap", "metadata"),
    ("CoreV1Event", "metadata"),
    ("CoreV1Event", "involvedObject"),
    ("CoreV1Event", "source"),
    ("EventsV1Event", "metadata"),
    ("EventsV1Event", "regarding"),
    ("EventsV1Event", "deprecatedSource"),
    ("V1DeploymentSpec", "template"),
    ("V1DeploymentSpec", "strategy"),
    ("V1ReplicaSetSpec", "template"),
    ("V1JobSpec", "template"),
    ("V1PodTemplateSpec", "metadata"),
    ("V1PodTemplateSpec", "spec"),
    ("V1Container", "resources"),
    ("V1ContainerStatus", "state"),
    ("V1ContainerStatus", "lastState"),
    ("V1ServiceStatus", "loadBalancer"),
    ("V1IngressStatus", "loadBalancer"),
    ("V2HorizontalPodAutoscaler", "metadata"),
    ("V2HorizontalPodAutoscaler", "spec"),
    ("V2HorizontalPodAutoscaler", "status"),
    ("V2HorizontalPodAutoscalerSpec", "scaleTargetRef"),
    ("V2ResourceMetricSource", "target"),
}

# Strings that keep their value even when empty (no ``omitempty``).
EMPTY_STRING_KEPT = {k for k, v in ZERO_FILLED.items() if v == ""}

INT64_FIELDS = {
    "generation",
    "observedGeneration",
    "deletionGracePeriodSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "expirationSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
}


@dataclass
class DecodeResult:
    obj: JsonObj
    unknown: list[str] = field(default_factory=list)


class DecodeError(ValueError):
    """A body the Go decoder would refuse; the message is the decoder's own text."""


@cache
def _schema() -> JsonObj:
    doc: JsonObj = json.loads(Path(__file__).with_name("schema.json").read_text())
    return doc


def root_type(kind_key: str) -> str:
    # "" is the schema key of a custom resource (crds.py): no typed schema, so no root type either.
    return str(_schema()["roots"][kind_key]) if kind_key else ""


def type_fields(type_name: str) -> JsonObj:
    return dict(_schema()["types"].get(type_name, {}))


def field_spec(type_name: str, name: str) -> Any:
    return _schema()["types"].get(type_name, {}).get(name)


def go_struct_name(type_name: str) -> str:
    for prefix in ("CoreV1", "EventsV1", "V1"):
        if type_name.startswith(prefix):
            return type_name[len(prefix) :]
    return type_name


def _go_type(spec: Any, fname: str) -> str:
    if isinstance(spec, dict):
        if "ref" in spec:
            return "v1." + go_struct_name(spec["ref"])
        if "list" in spec:
            return "[]" + _go_type(spec["list"], fname)
        if "map" in spec:
            return "map[string]" + _go_type(spec["map"], fname)
    return {
        "string": "string",
        "integer": "int64" if fname in INT64_FIELDS else "int32",
        "boolean": "bool",
        "number": "float64",
        "time": "v1.Time",
        "microtime": "v1.MicroTime",
        "int-or-string": "intstr.IntOrString",
        "quantity": "resource.Quantity",
    }.get(str(spec), "interface {}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}" if isinstance(value, float) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Walker:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def type_error(self, value: Any, owner: str, dotted: str, spec: Any, fname: str) -> DecodeError:
        return DecodeError(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field "
            f"{go_struct_name(owner)}.{dotted} of type {_go_type(spec, fname)}"
        )

    def struct(self, obj: Any, type_name: str, path: str, dotted: str, owner: str, fname: str) -> JsonObj:
        if not isinstance(obj, dict):
            raise self.type_error(obj, owner, dotted, {"ref": type_name}, fname)
        fields = type_fields(type_name)
        out: JsonObj = {}
        for key, value in obj.items():
            spec = fields.get(key)
            sub_path = f"{path}.{key}" if path else key
            sub_dotted = f"{dotted}.{key}" if dotted else key
            if spec is None:
                # apiVersion/kind are read before the typed decode and never "unknown".
                if key not in ("apiVersion", "kind") or path:
                    self.unknown.append(sub_path)
                continue
            if value is None:
                if (type_name, key) in ZERO_FILLED:
                    out[key] = None
                continue
            converted = self.value(value, spec, sub_path, sub_dotted, type_name, key)
            empty_collection = isinstance(converted, dict | list) and not converted and not _is_ref(spec)
            if empty_collection and (type_name, key) not in ZERO_FILLED:
                continue
            if converted == "" and spec == "string" and (type_name, key) not in EMPTY_STRING_KEPT:
                continue
            out[key] = converted
        for (tname, key), zero in ZERO_FILLED.items():
            if tname == type_name and key not in out and key in fields:
                out[key] = zero
        for tname, key in STRUCT_FILLED:
            if tname == type_name and key not in out:
                out[key] = self.struct({}, fields[key]["ref"], f"{path}.{key}" if path else key, key, type_name, key)
        return out

    def value(self, value: Any, spec: Any, path: str, dotted: str, owner: str, fname: str) -> Any:
        if isinstance(spec, dict):
            if "ref" in spec:
                return self.struct(value, spec["ref"], path, dotted, owner, fname)
            if "list" in spec:
                if not isinstance(value, list):
                    raise self.type_error(value, owner, dotted, spec, fname)
                items: list[Any] = []
                for i, item in enumerate(value):
                    if item is None:
                        items.append(None)
                        continue
                    items.append(self.value(item, spec["list"], f"{path}[{i}]", dotted, owner, fname))
                return items
            if "map" in spec:
                if not isinstance(value, dict):
                    raise self.type_error(value, owner, dotted, spec, fname)
                return {
                    str(k): self.value(v, spec["map"], f"{path}[{k}]", dotted, owner, fname)
                    for k, v in value.items()
                    if v is not None
                }
        if spec == "string":
            if not isinstance(value, str):
                raise self.type_error(value, owner, dotted, spec, fname)
            return value
        if spec == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.type_error(value, owner, dotted, spec, fname)
            return value
        if spec == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.type_error(value, owner, dotted, spec, fname)
            return value
        if spec == "boolean":
            if not isinstance(value, bool):
                raise self.type_error(value, owner, dotted, spec, fname)
            return value
        if spec == "int-or-string":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise self.type_error(value, owner, dotted, spec, fname)
            return value
        if spec == "quantity":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise self.type_error(value, owner, dotted, spec, fname)
            if isinstance(value, float) and not value.is_integer():
                return f"{round(value * 1000)}m"
            return str(int(value)) if isinstance(value, int | float) else value
        if spec in ("time", "microtime"):
            if not isinstance(value, str):
                raise self.type_error(value, owner, dotted, spec, fname)
            try:
                if spec == "microtime":
                    return format_microtime(go_parse(value, RFC3339_MICRO))
                return format_time(parse_time(value))
            except GoTimeError as err:
                raise DecodeError(str(err)) from None
        return value


def _is_ref(spec: Any) -> bool:
    return isinstance(spec, dict) and "ref" in spec


def decode(body: Any, kind_key: str) -> DecodeResult:
    """Decode a full object of the given root kind; raises DecodeError with the Go decoder's message."""
    walker = _Walker()
    if not kind_key:
        return _decode_untyped(body, walker)
    type_name = root_type(kind_key)
    if not isinstance(body, dict):
        raise DecodeError(
            f"json: cannot unmarshal {_json_type(body)} into Go value of type {go_struct_name(type_name)}"
        )
    obj = walker.struct(body, type_name, "", "", type_name, "")
    if "apiVersion" in body:
        obj = {"apiVersion": body["apiVersion"], **obj}
    if "kind" in body:
        obj = {"kind": body["kind"], **obj}
    return DecodeResult(obj, walker.unknown)


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _decode_untyped(body: Any, walker: _Walker) -> DecodeResult:
    """A custom resource, decoded as unstructured JSON: kept as sent except ``metadata`` (always an ObjectMeta)
    and JSON nulls (pruned, as for a CRD field that is not ``nullable``)."""
    if not isinstance(body, dict):
        raise DecodeError(f"json: cannot unmarshal {_json_type(body)} into Go value of type map[string]interface {{}}")
    obj: JsonObj = {}
    for key, value in body.items():
        if key == "metadata" and value is not None:
            obj[key] = walker.struct(value, "V1ObjectMeta", key, key, "V1ObjectMeta", key)
        elif value is not None:
            obj[key] = _pruned(value)
    return DecodeResult(obj, walker.unknown)


def zero_object(kind_key: str) -> JsonObj:
    """The Go zero value of a kind as JSON: what a watch BOOKMARK carries."""
    if not kind_key:
        return {}
    return _Walker().struct({}, root_type(kind_key), "", "", root_type(kind_key), "")
