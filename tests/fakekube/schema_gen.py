"""Regenerate ``schema.json`` from the official client's models (developer tool, not used at run time).

The fake API server must know every field of the types it serves, to drop unknown fields with a
``Warning`` header, to reject them under ``fieldValidation=Strict`` and to reject wrongly typed values the
way the real decoder does. Writing that schema by hand would drift; the ``kubernetes`` client ships it as
``openapi_types``/``attribute_map`` on each model. The server itself stays standard-library only and reads
the generated JSON.

Run: ``python -m tests.fakekube.schema_gen`` (needs the ``kubernetes`` package).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOTS = {
    "Namespace": "V1Namespace",
    "Deployment": "V1Deployment",
    "ReplicaSet": "V1ReplicaSet",
    "Pod": "V1Pod",
    "Service": "V1Service",
    "Endpoints": "V1Endpoints",
    "EndpointSlice": "V1EndpointSlice",
    "Event": "CoreV1Event",
    "events.k8s.io/Event": "EventsV1Event",
    "Lease": "V1Lease",
    "Scale": "V1Scale",
    "ConfigMap": "V1ConfigMap",
    "DeleteOptions": "V1DeleteOptions",
    "Ingress": "V1Ingress",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "Job": "V1Job",
}

# Go types whose JSON form differs from what the Python model says (both are "datetime" there).
MICROTIME_FIELDS = {
    ("V1LeaseSpec", "acquireTime"),
    ("V1LeaseSpec", "renewTime"),
    ("CoreV1Event", "eventTime"),
    ("EventsV1Event", "eventTime"),
}
# IntOrString fields are typed "object" in the models; everything else typed "object" is free-form.
INT_OR_STRING_FIELDS = {
    ("V1ServicePort", "targetPort"),
    ("V1RollingUpdateDeployment", "maxSurge"),
    ("V1RollingUpdateDeployment", "maxUnavailable"),
    ("V1HTTPGetAction", "port"),
    ("V1TCPSocketAction", "port"),
}

# resource.Quantity is a string in the models but the decoder also accepts a JSON number.
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
    ("V1ContainerStatus", "allocatedResources"),
    ("V2MetricTarget", "averageValue"),
    ("V2MetricTarget", "value"),
    ("V2MetricValueStatus", "averageValue"),
    ("V2MetricValueStatus", "value"),
}


def _convert(owner: str, field: str, py_type: str, out: dict[str, Any]) -> Any:
    list_match = re.fullmatch(r"[Ll]ist\[(.+)\]", py_type)
    if list_match:
        return {"list": _convert(owner, field, list_match.group(1), out)}
    dict_match = re.fullmatch(r"[Dd]ict\[str, (.+)\]", py_type)
    if dict_match:
        return {"map": _convert(owner, field, dict_match.group(1), out)}
    if py_type == "datetime":
        return "microtime" if (owner, field) in MICROTIME_FIELDS else "time"
    if py_type == "object":
        return "int-or-string" if (owner, field) in INT_OR_STRING_FIELDS else "any"
    if py_type == "str" and (owner, field) in QUANTITY_FIELDS:
        return "quantity"
    if py_type in {"str", "int", "bool", "float", "date", "bytes"}:
        return {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}.get(py_type, "string")
    _walk(py_type, out)
    return {"ref": py_type}


def _walk(model_name: str, out: dict[str, Any]) -> None:
    if model_name in out:
        return
    from kubernetes.client import models

    cls = getattr(models, model_name)
    out[model_name] = {}
    fields: dict[str, Any] = {}
    for attr, py_type in cls.openapi_types.items():
        json_name = cls.attribute_map[attr]
        fields[json_name] = _convert(model_name, json_name, py_type, out)
    out[model_name] = fields


def main() -> None:
    types: dict[str, Any] = {}
    for model in ROOTS.values():
        _walk(model, types)
    doc = {"roots": ROOTS, "types": dict(sorted(types.items()))}
    target = Path(__file__).with_name("schema.json")
    target.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"wrote {target} ({len(types)} types)")


if __name__ == "__main__":
    main()
