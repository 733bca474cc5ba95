"""Validation with upstream field paths and messages (the causes of 422 Invalid responses).

Values inside messages are printed like Go's ``field.Invalid`` does: ``%q`` for strings, ``%v`` for numbers,
``%#v`` for maps and structs (``map[string]string{"app":"web", "slot":"green"}``,
``v1.LabelSelector{MatchLabels:..., MatchExpressions:[]v1.LabelSelectorRequirement(nil)}``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from .selectors import (
    label_value_errors,
    qualified_name_errors,
    selector_from_object,
)

JsonObj = dict[str, Any]
Cause = dict[str, str]

_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME_RE = re.compile(r"^[-a-z0-9]+$")

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


# --------------------------------------------------------------------------------------------------------
# Go value printing and causes
# --------------------------------------------------------------------------------------------------------


def go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def go_map(value: dict[str, Any] | None) -> str:
    if value is None:
        return "map[string]string(nil)"
    inner = ", ".join(f"{go_quote(k)}:{go_quote(str(v))}" for k, v in sorted(value.items()))
    return "map[string]string{" + inner + "}"


def go_label_selector(sel: JsonObj | None) -> str:
    if sel is None:
        return "null"
    exprs = sel.get("matchExpressions")
    if exprs:
        items = ", ".join(
            "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}".format(
                go_quote(str(e.get("key", ""))),
                go_quote(str(e.get("operator", ""))),
                "[]string{" + ", ".join(go_quote(str(v)) for v in e.get("values") or []) + "}"
                if e.get("values")
                else "[]string(nil)",
            )
            for e in exprs
        )
        expr_text = "[]v1.LabelSelectorRequirement{" + items + "}"
    else:
        expr_text = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{go_map(sel.get('matchLabels'))}, MatchExpressions:{expr_text}}}"


def go_value(value: Any) -> str:
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(field: str, value: str, detail: str) -> Cause:
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {detail}", "field": field}


def required(field: str, detail: str = "") -> Cause:
    msg = f"Required value: {detail}" if detail else "Required value"
    return {"reason": "FieldValueRequired", "message": msg, "field": field}


def unsupported(field: str, value: str, supported: list[str]) -> Cause:
    listed = ", ".join(go_quote(s) for s in supported)
    return {
        "reason": "FieldValueNotSupported",
        "message": f"Unsupported value: {go_quote(value)}: supported values: {listed}",
        "field": field,
    }


def forbidden(field: str, detail: str) -> Cause:
    return {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}


def duplicate(field: str, value: str) -> Cause:
    return {"reason": "FieldValueDuplicate", "message": f"Duplicate value: {value}", "field": field}


def immutable(field: str, value: str) -> Cause:
    return invalid(field, value, "field is immutable")


# --------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------


def dns_subdomain_errors(name: str) -> list[str]:
    errs = []
    if len(name) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(name):
        errs.append(DNS1123_SUBDOMAIN_MSG)
    return errs


def dns_label_errors(name: str) -> list[str]:
    errs = []
    if len(name) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.match(name):
        errs.append(DNS1123_LABEL_MSG)
    return errs


def dns1035_errors(name: str) -> list[str]:
    errs = []
    if len(name) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL_RE.match(name):
        errs.append(DNS1035_LABEL_MSG)
    return errs


def validate_labels(labels: dict[str, Any] | None, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        for msg in qualified_name_errors(key):
            causes.append(invalid(path, go_quote(key), msg))
        for msg in label_value_errors(str(value)):
            causes.append(invalid(path, go_quote(str(value)), msg))
    return causes


def validate_annotations(annotations: dict[str, Any] | None, path: str) -> list[Cause]:
    causes: list[Cause] = []
    total = 0
    for key, value in (annotations or {}).items():
        for msg in qualified_name_errors(key.lower()):
            causes.append(invalid(path, go_quote(key), msg))
        total += len(key) + len(str(value))
    if total > 256 * 1024:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "message": "Too long: must have at most 262144 bytes",
                "field": path,
            }
        )
    return causes


def validate_meta(meta: JsonObj, name_check: str = "subdomain") -> list[Cause]:
    causes: list[Cause] = []
    name = str(meta.get("name") or "")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    else:
        check = {"subdomain": dns_subdomain_errors, "label": dns_label_errors, "dns1035": dns1035_errors}[name_check]
        for msg in check(name):
            causes.append(invalid("metadata.name", go_quote(name), msg))
    causes += validate_labels(meta.get("labels"), "metadata.labels")
    causes += validate_annotations(meta.get("annotations"), "metadata.annotations")
    return causes


def _nonnegative(value: Any, path: str) -> list[Cause]:
    if isinstance(value, int) and value < 0:
        return [invalid(path, str(value), "must be greater than or equal to 0")]
    return []


def _port_range(value: Any, path: str) -> list[Cause]:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        return [invalid(path, go_value(value), "must be between 1 and 65535, inclusive")]
    return []


def validate_containers(spec: JsonObj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        name = str(c.get("name") or "")
        if not name:
            causes.append(required(f"{cpath}.name"))
        else:
            for msg in dns_label_errors(name):
                causes.append(invalid(f"{cpath}.name", go_quote(name), msg))
            if name in seen:
                causes.append(duplicate(f"{cpath}.name", go_quote(name)))
            seen.add(name)
        if not c.get("image"):
            causes.append(required(f"{cpath}.image"))
        for j, port in enumerate(c.get("ports") or []):
            causes += _port_range(port.get("containerPort"), f"{cpath}.ports[{j}].containerPort")
            if port.get("protocol") not in (None, "TCP", "UDP", "SCTP"):
                causes.append(
                    unsupported(f"{cpath}.ports[{j}].protocol", str(port["protocol"]), ["SCTP", "TCP", "UDP"])
                )
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        causes.append(unsupported(f"{path}.restartPolicy", str(policy), ["Always", "Never", "OnFailure"]))
    return causes


def validate_template_for_controller(template: JsonObj, selector: JsonObj | None, path: str) -> list[Cause]:
    causes: list[Cause] = []
    labels = (template.get("metadata") or {}).get("labels")
    parsed = selector_from_object(selector)
    if selector and (selector.get("matchLabels") or selector.get("matchExpressions")) and not parsed.matches(labels):
        causes.append(
            invalid(f"{path}.metadata.labels", go_map(labels or {}), "`selector` does not match template `labels`")
        )
    causes += validate_labels(labels, f"{path}.labels")
    causes += validate_annotations((template.get("metadata") or {}).get("annotations"), f"{path}.annotations")
    spec = template.get("spec") or {}
    causes += validate_containers(spec, f"{path}.spec")
    if spec.get("restartPolicy", "Always") != "Always":
        causes.append(unsupported(f"{path}.spec.restartPolicy", str(spec["restartPolicy"]), ["Always"]))
    if spec.get("activeDeadlineSeconds") is not None:
        causes.append(
            forbidden(f"{path}.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicaSet is not Supported")
        )
    return causes


def _validate_selector(selector: JsonObj | None, path: str, what: str) -> list[Cause]:
    if selector is None:
        return [required(path)]
    causes = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        op = expr.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(
                unsupported(
                    f"{path}.matchExpressions[{i}].operator",
                    str(op),
                    ["DoesNotExist", "Exists", "In", "NotIn"],
                )
            )
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(invalid(path, go_label_selector(selector), f"empty selector is invalid for {what}"))
    return causes


def _percent_or_int(value: Any, path: str) -> tuple[list[Cause], bool]:
    """Returns (causes, is_zero) for a maxSurge/maxUnavailable IntOrString."""
    if isinstance(value, int):
        return _nonnegative(value, path), value == 0
    text = str(value)
    if not re.fullmatch(r"[0-9]+%", text):
        return [
            invalid(
                path,
                go_quote(text),
                "a valid percent string must be a numeric string followed by an "
                "ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                "'[0-9]+%')",
            )
        ], False
    pct = int(text[:-1])
    if pct > 100:
        return [invalid(path, go_quote(text), "must not be greater than 100%")], False
    return [], pct == 0


def validate_deployment(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    causes += _nonnegative(spec.get("replicas"), "spec.replicas")
    selector = spec.get("selector")
    causes += _validate_selector(selector, "spec.selector", "deployment")
    causes += validate_template_for_controller(spec.get("template") or {}, selector, "spec.template")
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type")
    if stype not in ("RollingUpdate", "Recreate"):
        causes.append(unsupported("spec.strategy.type", str(stype), ["Recreate", "RollingUpdate"]))
    elif stype == "Recreate" and strategy.get("rollingUpdate") is not None:
        causes.append(
            forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        )
    elif stype == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        surge_causes, surge_zero = _percent_or_int(
            rolling.get("maxSurge", "25%"), "spec.strategy.rollingUpdate.maxSurge"
        )
        unav_causes, unav_zero = _percent_or_int(
            rolling.get("maxUnavailable", "25%"), "spec.strategy.rollingUpdate.maxUnavailable"
        )
        causes += unav_causes + surge_causes
        if surge_zero and unav_zero:
            causes.append(
                invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    go_value(rolling.get("maxUnavailable")),
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += _nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    pds = spec.get("progressDeadlineSeconds")
    if isinstance(pds, int):
        causes += _nonnegative(pds, "spec.progressDeadlineSeconds")
        if pds <= int(spec.get("minReadySeconds") or 0):
            causes.append(invalid("spec.progressDeadlineSeconds", str(pds), "must be greater than minReadySeconds"))
    if old is not None:
        old_sel = (old.get("spec") or {}).get("selector")
        if selector != old_sel:
            causes.append(immutable("spec.selector", go_label_selector(selector)))
    return causes


def validate_replicaset(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    causes += _nonnegative(spec.get("replicas"), "spec.replicas")
    selector = spec.get("selector")
    causes += _validate_selector(selector, "spec.selector", "replicaset")
    causes += validate_template_for_controller(spec.get("template") or {}, selector, "spec.template")
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        causes.append(immutable("spec.selector", go_label_selector(selector)))
    return causes


_POD_MUTABLE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def validate_pod(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    causes += validate_containers(spec, "spec")
    if old is not None:
        new_spec = json.loads(json.dumps(spec))
        old_spec = json.loads(json.dumps(old.get("spec") or {}))
        for s in (new_spec, old_spec):
            for c in [*(s.get("containers") or []), *(s.get("initContainers") or [])]:
                c.pop("image", None)
            for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"):
                s.pop(key, None)
        if new_spec != old_spec:
            causes.append(forbidden("spec", _POD_MUTABLE_MSG))
    return causes


def validate_service(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {}, "dns1035")
    spec = obj.get("spec") or {}
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(unsupported("spec.type", str(stype), ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    ports = spec.get("ports") or []
    if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        name = str(port.get("name") or "")
        if len(ports) > 1 and not name:
            causes.append(required(f"{path}.name"))
        elif name:
            for msg in dns_label_errors(name):
                causes.append(invalid(f"{path}.name", go_quote(name), msg))
            if name in names:
                causes.append(duplicate(f"{path}.name", go_quote(name)))
            names.add(name)
        causes += _port_range(port.get("port"), f"{path}.port")
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            causes.append(unsupported(f"{path}.protocol", str(port.get("protocol")), ["SCTP", "TCP", "UDP"]))
        target = port.get("targetPort")
        if isinstance(target, int):
            causes += _port_range(target, f"{path}.targetPort")
        elif isinstance(target, str) and not (_IANA_SVC_NAME_RE.match(target) and len(target) <= 15):
            causes.append(
                invalid(
                    f"{path}.targetPort",
                    go_quote(target),
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                )
            )
    causes += validate_labels(spec.get("selector"), "spec.selector")
    if spec.get("sessionAffinity", "None") not in ("None", "ClientIP"):
        causes.append(unsupported("spec.sessionAffinity", str(spec["sessionAffinity"]), ["ClientIP", "None"]))
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        new_ip = spec.get("clusterIP")
        if old_ip and new_ip and new_ip != old_ip:
            causes.append(immutable("spec.clusterIP", go_quote(str(new_ip))))
    return causes


def validate_namespace(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    return validate_meta(obj.get("metadata") or {}, "label")


def validate_lease(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        causes.append(invalid("spec.leaseDurationSeconds", str(duration), "must be greater than 0"))
    causes += _nonnegative(spec.get("leaseTransitions"), "spec.leaseTransitions")
    return causes


def _ip_ok(ip: Any) -> bool:
    try:
        ipaddress.ip_address(str(ip))
        return True
    except ValueError:
        return False


def validate_endpoints(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    for i, subset in enumerate(obj.get("subsets") or []):
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(subset.get(key) or []):
                if not _ip_ok(addr.get("ip")):
                    causes.append(
                        invalid(
                            f"subsets[{i}].{key}[{j}].ip",
                            go_value(addr.get("ip")),
                            "must be a valid IP address",
                        )
                    )
        for j, port in enumerate(subset.get("ports") or []):
            causes += _port_range(port.get("port"), f"subsets[{i}].ports[{j}].port")
    return causes


def validate_endpointslice(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    address_type = obj.get("addressType")
    if not address_type:
        causes.append(required("addressType"))
    elif address_type not in ("IPv4", "IPv6", "FQDN"):
        causes.append(unsupported("addressType", str(address_type), ["FQDN", "IPv4", "IPv6"]))
    elif old is not None and address_type != old.get("addressType"):
        causes.append(immutable("addressType", go_quote(str(address_type))))
    for i, ep in enumerate(obj.get("endpoints") or []):
        addresses = ep.get("addresses") or []
        if not addresses:
            causes.append(required(f"endpoints[{i}].addresses", "must contain at least 1 address"))
        for j, addr in enumerate(addresses):
            if address_type in ("IPv4", "IPv6") and not _ip_ok(addr):
                causes.append(invalid(f"endpoints[{i}].addresses[{j}]", go_value(addr), "must be a valid IP address"))
    return causes


def validate_event(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    ref_ns = (obj.get("involvedObject") or {}).get("namespace")
    ns = (obj.get("metadata") or {}).get("namespace")
    if ref_ns and ns and ref_ns != ns:
        causes.append(invalid("involvedObject.namespace", go_quote(ref_ns), "does not match event.namespace"))
    return causes


def validate_configmap(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    for key in obj.get("data") or {}:
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
            causes.append(
                invalid(
                    "data",
                    go_quote(key),
                    "a valid config key must consist of alphanumeric "
                    "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                    "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                )
            )
    return causes


def validate_event_v1(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    """events.k8s.io/v1 create/update rules, on the stored (core) shape, with the v1 field names."""
    causes = validate_event(obj, old)
    if old is None:
        if not obj.get("eventTime"):
            causes.append(required("eventTime"))
        for core_key, v1_key in (
            ("reportingComponent", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
        ):
            if not obj.get(core_key):
                causes.append(required(v1_key))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(unsupported("type", str(obj.get("type", "")), ["Normal", "Warning"]))
    if len(str(obj.get("message", ""))) > 1024:
        causes.append(
            {"reason": "FieldValueTooLong", "message": "Too long: may not be more than 1024 bytes", "field": "note"}
        )
    return causes


# --------------------------------------------------------------------------------------------------------
# networking.k8s.io/v1 Ingress (pkg/apis/networking/validation/validation.go, registry/networking/ingress)
# --------------------------------------------------------------------------------------------------------

INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
_WILDCARD_DNS1123_RE = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
WILDCARD_DNS1123_MSG = (
    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of "
    "lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', "
    "regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")


def port_name_errors(name: str) -> list[str]:
    """``validation.IsValidPortName`` (an IANA service name)."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME_RE.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _host_errors(host: str, path: str) -> list[Cause]:
    """A DNS subdomain, or a wildcard one (``*.example.com``)."""
    if "*" in host:
        msgs = ["must be no more than 253 characters"] if len(host) > 253 else []
        msgs += [] if _WILDCARD_DNS1123_RE.match(host) else [WILDCARD_DNS1123_MSG]
    else:
        msgs = dns_subdomain_errors(host)
    return [invalid(path, go_quote(host), msg) for msg in msgs]


def _path_segment_errors(value: str) -> list[str]:
    """``path.IsValidPathSegmentName``."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def _ingress_backend(backend: JsonObj, path: str) -> list[Cause]:
    resource, service = backend.get("resource"), backend.get("service")
    if resource is not None and service is not None:
        return [invalid(path, '""', "cannot set both resource and service backends")]
    causes: list[Cause] = []
    if resource is not None:
        group = resource.get("apiGroup")
        if group is not None:
            causes += [invalid(f"{path}.resource.apiGroup", go_quote(group), m) for m in dns_subdomain_errors(group)]
        for key in ("kind", "name"):
            value = str(resource.get(key) or "")
            if not value:
                causes.append(required(f"{path}.resource.{key}", f"{key} is required"))
            causes += [invalid(f"{path}.resource.{key}", go_quote(value), m) for m in _path_segment_errors(value)]
        return causes
    if service is None:
        return [invalid(path, '""', "resource or service backend is required")]
    name = str(service.get("name") or "")
    if not name:
        causes.append(required(f"{path}.service.name"))
    causes += [invalid(f"{path}.service.name", go_quote(name), m) for m in (dns1035_errors(name) if name else [])]
    port = service.get("port") or {}
    port_name, port_number = str(port.get("name") or ""), port.get("number") or 0
    if port_name and port_number:
        causes.append(invalid(path, '""', "cannot set both port name & port number"))
    elif port_name:
        causes += [invalid(f"{path}.service.port.name", go_quote(port_name), m) for m in port_name_errors(port_name)]
    elif port_number:
        causes += _port_range(port_number, f"{path}.service.port.number")
    else:
        causes.append(required(path, "port name or number is required"))
    return causes


def _ingress_path(http_path: JsonObj, path: str) -> list[Cause]:
    path_type = http_path.get("pathType")
    if path_type is None:
        return [required(f"{path}.pathType", "pathType must be specified")]
    value = str(http_path.get("path") or "")
    causes: list[Cause] = []
    if path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            causes.append(invalid(f"{path}.path", go_quote(value), "must be an absolute path"))
        causes += [invalid(f"{path}.path", go_quote(value), f"must not contain '{seq}'")
                   for seq in _INVALID_PATH_SEQUENCES if seq in value]
        causes += [invalid(f"{path}.path", go_quote(value), f"cannot end with '{suffix}'")
                   for suffix in _INVALID_PATH_SUFFIXES if value.endswith(suffix)]
    elif path_type == "ImplementationSpecific":
        if value and not value.startswith("/"):
            causes.append(invalid(f"{path}.path", go_quote(value), "must be an absolute path"))
    else:
        causes.append(unsupported(f"{path}.pathType", str(path_type), _PATH_TYPES))
    return causes + _ingress_backend(http_path.get("backend") or {}, f"{path}.backend")


def validate_ingress(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    """``ValidateIngressCreate`` / ``ValidateIngressUpdate`` (update: without the create-only class check)."""
    meta = obj.get("metadata") or {}
    causes = validate_meta(meta)
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    if not rules and spec.get("defaultBackend") is None:
        causes.append(
            invalid("spec", "[]networking.IngressRule(nil)", "either `defaultBackend` or `rules` must be specified")
        )
    if spec.get("defaultBackend") is not None:
        causes += _ingress_backend(spec["defaultBackend"], "spec.defaultBackend")
    for i, rule in enumerate(rules):
        host = str(rule.get("host") or "")
        if host and _ip_ok(host):
            causes.append(invalid(f"spec.rules[{i}].host", go_quote(host), "must be a DNS name, not an IP address"))
        if host:
            causes += _host_errors(host, f"spec.rules[{i}].host")
        http = rule.get("http")
        if http is not None:
            paths = http.get("paths") or []
            if not paths:
                causes.append(required(f"spec.rules[{i}].http.paths"))
            for j, http_path in enumerate(paths):
                causes += _ingress_path(http_path, f"spec.rules[{i}].http.paths[{j}]")
    for i, tls in enumerate(spec.get("tls") or []):
        for j, host in enumerate(tls.get("hosts") or []):
            causes += _host_errors(str(host), f"spec.tls[{i}].hosts[{j}]")
        secret = str(tls.get("secretName") or "")
        if secret:
            causes += [invalid(f"spec.tls[{i}].secretName", go_quote(secret), m) for m in dns_subdomain_errors(secret)]
    class_name = spec.get("ingressClassName")
    if class_name is not None:
        causes += [invalid("spec.ingressClassName", go_quote(class_name), m) for m in dns_subdomain_errors(class_name)]
    annotation = (meta.get("annotations") or {}).get(INGRESS_CLASS_ANNOTATION)
    if old is None and annotation is not None and class_name is not None and annotation != class_name:
        causes.append(
            invalid(
                f"annotations.{INGRESS_CLASS_ANNOTATION}",
                go_quote(annotation),
                "must match `ingressClassName` when both are specified",
            )
        )
    return causes


def ingress_warnings_on_create(obj: JsonObj) -> list[str]:
    """``ingressStrategy.WarningsOnCreate``: the legacy class annotation without ``spec.ingressClassName``."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if INGRESS_CLASS_ANNOTATION in annotations and (obj.get("spec") or {}).get("ingressClassName") is None:
        return [
            f"annotation {go_quote(INGRESS_CLASS_ANNOTATION)} is deprecated, please use 'spec.ingressClassName' instead"
        ]
    return []


WARNINGS_ON_CREATE = {"Ingress": ingress_warnings_on_create}


# --------------------------------------------------------------------------------------------------------
# autoscaling/v2 HorizontalPodAutoscaler (pkg/apis/autoscaling/validation/validation.go,
# validateHorizontalPodAutoscalerSpec and ValidateCrossVersionObjectReference; HPAScaleToZero off, so 1)
# --------------------------------------------------------------------------------------------------------


def validate_hpa(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    causes = validate_meta(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    min_replicas, max_replicas = spec.get("minReplicas"), int(spec.get("maxReplicas") or 0)
    if min_replicas is not None and int(min_replicas) < 1:
        causes.append(invalid("spec.minReplicas", str(min_replicas), "must be greater than or equal to 1"))
    if max_replicas < 1:
        causes.append(invalid("spec.maxReplicas", str(max_replicas), "must be greater than 0"))
    if min_replicas is not None and max_replicas < int(min_replicas):
        causes.append(invalid("spec.maxReplicas", str(max_replicas), "must be greater than or equal to `minReplicas`"))
    ref = spec.get("scaleTargetRef") or {}
    for key in ("kind", "name"):
        value = str(ref.get(key) or "")
        if not value:
            causes.append(required(f"spec.scaleTargetRef.{key}"))
        causes += [invalid(f"spec.scaleTargetRef.{key}", go_quote(value), m) for m in _path_segment_errors(value)]
    return causes


# --------------------------------------------------------------------------------------------------------
# batch/v1 Job (pkg/apis/batch/validation/validation.go: ValidateJob, validateGeneratedSelector, validateJobSpec,
# ValidateJobSpecUpdate; options as pkg/registry/batch/job/strategy.go sets them for v1.32)
# --------------------------------------------------------------------------------------------------------

_JOB_LABELS_PATH = "spec.template.metadata.labels"


def _has_label(labels: dict[str, Any], key: str, expected: str) -> list[Cause]:
    """``ValidateHasLabel``: the generated label must be there with the Job's own value."""
    if key not in labels:
        return [required(f"{_JOB_LABELS_PATH}[{key}]", expected)]
    if labels[key] != expected:
        return [invalid(f"{_JOB_LABELS_PATH}[{key}]", go_map(labels), f"must be '{expected}'")]
    return []


def _job_generated_selector(obj: JsonObj, require_prefixed: bool) -> list[Cause]:
    from .defaults import CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL

    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if spec.get("manualSelector") or selector is None:
        return []
    meta = obj.get("metadata") or {}
    uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
    causes: list[Cause] = [] if uid else [required("metadata.uid")]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    causes += _has_label(labels, LEGACY_CONTROLLER_UID_LABEL, uid) + _has_label(labels, LEGACY_JOB_NAME_LABEL, name)
    expected = {LEGACY_CONTROLLER_UID_LABEL: uid, LEGACY_JOB_NAME_LABEL: name}
    if require_prefixed:
        causes += _has_label(labels, CONTROLLER_UID_LABEL, uid) + _has_label(labels, JOB_NAME_LABEL, name)
        expected.update({CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name})
    if not selector_from_object(selector).matches(expected):
        causes.append(invalid("spec.selector", go_label_selector(selector), "`selector` not auto-generated"))
    return causes


def _job_spec(spec: JsonObj) -> list[Cause]:
    causes: list[Cause] = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
                "backoffLimitPerIndex", "maxFailedIndexes"):
        causes += _nonnegative(spec.get(key), f"spec.{key}")
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        causes.append(unsupported("spec.completionMode", str(mode), ["NonIndexed", "Indexed"]))
    if mode == "Indexed" and spec.get("completions") is None:
        causes.append(required("spec.completions", "when completion mode is Indexed"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement not in ("Failed", "TerminatingOrFailed"):
        causes.append(unsupported("spec.podReplacementPolicy", str(replacement), ["Failed", "TerminatingOrFailed"]))
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    causes += validate_labels(tmeta.get("labels"), "spec.template.metadata.labels")
    causes += validate_annotations(tmeta.get("annotations"), "spec.template.metadata.annotations")
    tspec = template.get("spec") or {}
    causes += validate_containers(tspec, "spec.template.spec")
    policy = tspec.get("restartPolicy") or ""
    if policy in ("Always", ""):
        # A template without restartPolicy was defaulted to Always, hence "Required" for both.
        causes.append(required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    elif policy not in ("OnFailure", "Never"):
        causes.append(unsupported("spec.template.spec.restartPolicy", str(policy), ["OnFailure", "Never"]))
    elif spec.get("podFailurePolicy") is not None and policy != "Never":
        causes.append(invalid("spec.template.spec.restartPolicy", go_quote(str(policy)),
                              'only "Never" is supported when podFailurePolicy is specified'))
    selector = spec.get("selector")
    if selector is None:
        causes.append(required("spec.selector"))
    else:
        causes += validate_labels(selector.get("matchLabels"), "spec.selector.matchLabels")
        if not selector_from_object(selector).matches(tmeta.get("labels")):
            causes.append(invalid(_JOB_LABELS_PATH, go_map(tmeta.get("labels") or {}),
                                  "`selector` does not match template `labels`"))
    return causes


def validate_job(obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    from .defaults import CONTROLLER_UID_LABEL, JOB_NAME_LABEL

    spec = obj.get("spec") or {}
    # RequirePrefixedLabels: always on create; on update only if the old template had both prefixed labels.
    require_prefixed = True
    if old is not None:
        old_labels = (((old.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        require_prefixed = JOB_NAME_LABEL in old_labels and CONTROLLER_UID_LABEL in old_labels
    causes = validate_meta(obj.get("metadata") or {})
    causes += _job_generated_selector(obj, require_prefixed)
    causes += _job_spec(spec)
    if old is None:
        return causes
    old_spec = old.get("spec") or {}
    # ValidateJobSpecUpdate validates the spec a second time before the immutability checks.
    causes += _job_spec(spec)
    if spec.get("completions") != old_spec.get("completions"):
        causes.append(immutable("spec.completions", go_value(spec.get("completions"))))
    if spec.get("selector") != old_spec.get("selector"):
        causes.append(immutable("spec.selector", go_label_selector(spec.get("selector"))))
    if spec.get("template") != old_spec.get("template"):
        # The real message prints the whole internal core.PodTemplateSpec with %#v (pointers as addresses).
        causes.append(immutable("spec.template", "core.PodTemplateSpec{...}"))
    for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy"):
        if spec.get(key) != old_spec.get(key):
            causes.append(immutable(f"spec.{key}", go_value(spec.get(key))))
    return causes


def warnings_on_create(kind: str, obj: JsonObj) -> list[str]:
    fn = WARNINGS_ON_CREATE.get(kind)
    return fn(obj) if fn else []


VALIDATORS = {
    "Deployment": validate_deployment,
    "ReplicaSet": validate_replicaset,
    "Pod": validate_pod,
    "Service": validate_service,
    "Namespace": validate_namespace,
    "Lease": validate_lease,
    "Endpoints": validate_endpoints,
    "EndpointSlice": validate_endpointslice,
    "Event": validate_event,
    "ConfigMap": validate_configmap,
    "events.k8s.io/Event": validate_event_v1,
    "Ingress": validate_ingress,
    "HorizontalPodAutoscaler": validate_hpa,
    "Job": validate_job,
}


def validate(kind: str, obj: JsonObj, old: JsonObj | None) -> list[Cause]:
    fn = VALIDATORS.get(kind)
    return fn(obj, old) if fn else validate_meta(obj.get("metadata") or {})
