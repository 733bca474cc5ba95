"""Exact canary weights through the AWS Load Balancer Controller's action annotation (`kubernetes.traffic = "alb"`).

The Ingress routes its rule to the Service `<app>` with the port *name* `use-annotation`; the controller then
reads the rule's action from the annotation `alb.ingress.kubernetes.io/actions.<app>`: a forward action with
two weighted target groups, the Services `<app>-canary` and `<app>-stable`. Writing that annotation moves
traffic to exact weights, whatever the replica counts.

The JSON is byte for byte what Argo Rollouts writes, so an Ingress moved from one tool to the other reads the
same, and so the format is one the controller is known to accept:

* argoproj/argo-rollouts `rollout/trafficrouting/alb/alb.go`, `getForwardActionString`: the canary target
  group first with the desired weight, then the stable one with `100 - desired`; the optional stickiness
  config, refused outside 1..604800 s; `json.Marshal`, so compact JSON in struct field order.
* argoproj/argo-rollouts `utils/ingress/ingress.go`: the types `ALBAction` {Type, ForwardConfig},
  `ALBForwardConfig` {TargetGroups, TargetGroupStickinessConfig `omitempty`}, `ALBTargetGroup`
  {ServiceName, ServicePort (a string), Weight `*int64`} and `ALBTargetGroupStickinessConfig`
  {Enabled, DurationSeconds}; `HasRuleWithService` (the "ingress does not have service `%s` in rules" check);
  `rollouts.argoproj.io/managed-alb-annotations`, the bookkeeping of which annotations a Rollout manages.
  Weight is a pointer so that 0 is written: with `int64,omitempty` a zero weight vanished and the action was
  invalid (argo-rollouts#491). Here the weight is always written.

Pure functions: the target reads the Ingress, calls these, and sends `annotation_patch(...)` as a JSON merge
patch (`application/merge-patch+json`), which changes only the two annotations named in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from releasegate.core.errors import ConfigError

ALB_ANNOTATION_PREFIX = "alb.ingress.kubernetes.io"
USE_ANNOTATION = "use-annotation"
ALB_INGRESS_CLASS = "alb"
ALB_CONTROLLER = "ingress.k8s.aws/alb"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
# Our bookkeeping, under kubernetes.annotation_prefix, like Argo's rollouts.argoproj.io/managed-alb-annotations.
MANAGED_ACTIONS = "managed-alb-actions"
DEFAULT_STATE_PREFIX = "releasegate.io/"
MERGE_PATCH = "application/merge-patch+json"
# AWS ELBv2 TargetGroupStickinessConfig.DurationSeconds, as alb.go checks it.
STICKINESS_RANGE_S = (1, 604800)

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _go_json(value: Any) -> str:
    """What Go's json.Marshal writes for these values: compact, in field order (names here are ASCII)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _check_service_name(name: str, what: str) -> None:
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035_LABEL.match(name):
        raise ValueError(f"{what} {name!r} is not a Service name (a DNS-1035 label of at most 63 characters)")


def forward_action(stable_service: str, canary_service: str, port: int | str, canary_weight: int, *,
                   stickiness_s: int | None = None) -> str:
    """The action annotation's value: forward `canary_weight`% to the canary Service, the rest to the stable one.

    Exactly the string of Argo Rollouts' `getForwardActionString` (rollout/trafficrouting/alb/alb.go) with the
    types of utils/ingress/ingress.go, for one port and no experiment destinations: canary first, stable
    `100 - canary_weight`, `ServicePort` a string, `Weight` an integer that is always present (0 included,
    argo-rollouts#491), and `TargetGroupStickinessConfig` only when `stickiness_s` is given.

    `canary_weight` outside 0..100 or a malformed name or port is a caller bug (ValueError); a stickiness
    duration outside 1..604800 s is a configuration error (ConfigError), as alb.go refuses it.
    """
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight {canary_weight!r} is not a whole percent in 0..100")
    _check_service_name(stable_service, "stable service")
    _check_service_name(canary_service, "canary service")
    if stable_service == canary_service:
        raise ValueError(f"the stable and canary services are the same ({stable_service!r})")
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise ValueError(f"service port {port!r} is neither a number nor a port name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise ValueError(f"service port {port} is not in 1..65535")
    if isinstance(port, str) and not port:
        raise ValueError("service port is empty")
    service_port = str(port)  # strconv.Itoa(int(port)) in alb.go; the controller also takes a port name
    target_groups = [
        {"ServiceName": canary_service, "ServicePort": service_port, "Weight": canary_weight},
        {"ServiceName": stable_service, "ServicePort": service_port, "Weight": 100 - canary_weight},
    ]
    forward: dict[str, Any] = {"TargetGroups": target_groups}
    if stickiness_s is not None:
        low, high = STICKINESS_RANGE_S
        if isinstance(stickiness_s, bool) or not isinstance(stickiness_s, int) or not low <= stickiness_s <= high:
            raise ConfigError(f"ALB target group stickiness of {stickiness_s!r} s is outside {low}..{high} s (7 days), "
                              "the range AWS accepts; set a whole number of seconds in that range, or none")
        forward["TargetGroupStickinessConfig"] = {"Enabled": True, "DurationSeconds": stickiness_s}
    return _go_json({"Type": "forward", "ForwardConfig": forward})


def action_annotation_key(action_name: str, annotation_prefix: str = ALB_ANNOTATION_PREFIX) -> str:
    """`alb.ingress.kubernetes.io/actions.<action_name>`; a ConfigError when the API server would refuse the key."""
    prefix = annotation_prefix.rstrip("/")
    name = f"actions.{action_name}"
    if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix):
        raise ConfigError(f"the ALB annotation prefix {annotation_prefix!r} is not a DNS subdomain; use the "
                          f"controller's --annotations-prefix (default {ALB_ANNOTATION_PREFIX})")
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        raise ConfigError(f"the annotation key {prefix}/{name} is not valid: the part after '/' must be at most "
                          "63 characters of letters, digits, '-', '_' and '.'; give the Service a name of at most "
                          f"{63 - len('actions.')} characters")
    return f"{prefix}/{name}"


def _ingress_name(ingress: Mapping[str, Any]) -> str:
    meta = ingress.get("metadata") or {}
    name = str(meta.get("name") or "?")
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else name


def _annotations(ingress: Mapping[str, Any]) -> Mapping[str, Any]:
    return (ingress.get("metadata") or {}).get("annotations") or {}


def _backends(ingress: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(field path, service backend) of every rule path, in order (networking.k8s.io/v1 shape)."""
    found = []
    for i, rule in enumerate((ingress.get("spec") or {}).get("rules") or []):
        for j, path in enumerate(((rule or {}).get("http") or {}).get("paths") or []):
            service = ((path or {}).get("backend") or {}).get("service")
            if isinstance(service, Mapping):
                found.append((f"spec.rules[{i}].http.paths[{j}].backend.service", service))
    return found


def check_ingress(ingress: Mapping[str, Any], service_name: str, annotation_prefix: str = ALB_ANNOTATION_PREFIX,
                  *, ingress_class: str = ALB_INGRESS_CLASS) -> str | None:
    """Preflight for ALB mode: a ConfigError unless a rule routes to `service_name` through the action annotation.

    Mirrors Argo Rollouts' check before it sets a weight ("ingress does not have service `%s` in rules",
    `HasRuleWithService` in utils/ingress/ingress.go), and is stricter: the backend must also use the port
    name `use-annotation`, since with a real port the controller forwards to the Service itself and the
    weights in the annotation have no effect. Returns a warning (or None) when the Ingress does not look like
    one the AWS Load Balancer Controller serves (ingressClassName, else the legacy class annotation).
    """
    where = f"Ingress {_ingress_name(ingress)}"
    key = action_annotation_key(service_name, annotation_prefix)
    fix = (f"set that rule's backend to `service: {{name: {service_name}, port: {{name: {USE_ANNOTATION}}}}}` "
           "(charts/canary-app renders it with traffic=alb)")
    backends = _backends(ingress)
    ours = [(path, svc) for path, svc in backends if svc.get("name") == service_name]
    if not ours:
        elsewhere = sorted({str(svc.get("name")) for _, svc in backends
                            if (svc.get("port") or {}).get("name") == USE_ANNOTATION})
        found = f"; its {USE_ANNOTATION} backends are: {', '.join(elsewhere)}" if elsewhere else ""
        raise ConfigError(f"{where} does not have service `{service_name}` in rules{found}, so no ALB listener "
                          f"rule reads the weights in {key}; add a rule whose backend is "
                          f"`service: {{name: {service_name}, port: {{name: {USE_ANNOTATION}}}}}` "
                          "(charts/canary-app renders it with traffic=alb)")
    if not any((svc.get("port") or {}).get("name") == USE_ANNOTATION for _, svc in ours):
        path, svc = ours[0]
        port = svc.get("port") or {}
        shown = f"port name `{port['name']}`" if port.get("name") else f"port {port.get('number')}"
        raise ConfigError(f"{where} routes to service `{service_name}` by {shown} ({path}.port), not by the port "
                          f"name `{USE_ANNOTATION}`, so the AWS Load Balancer Controller forwards to the Service "
                          f"directly and ignores the weights in {key}; {fix}")
    spec = ingress.get("spec") or {}
    class_name = spec.get("ingressClassName")
    legacy = _annotations(ingress).get(LEGACY_CLASS_ANNOTATION)
    if class_name:
        if class_name != ingress_class:
            return (f"{where} has ingressClassName `{class_name}`, not `{ingress_class}`: the weights in {key} only "
                    f"take effect under the AWS Load Balancer Controller; ignore this if IngressClass "
                    f"`{class_name}` has controller {ALB_CONTROLLER}")
        return None
    if legacy:
        if legacy != ingress_class:
            return (f"{where} has the annotation {LEGACY_CLASS_ANNOTATION}: {legacy}, not `{ingress_class}`: the "
                    f"weights in {key} only take effect under the AWS Load Balancer Controller")
        return None
    return (f"{where} names no ingress class (spec.ingressClassName): the weights in {key} only take effect if "
            f"the cluster's default IngressClass has controller {ALB_CONTROLLER}; set "
            f"spec.ingressClassName: {ingress_class}")


def managed_actions(ingress: Mapping[str, Any], *, state_prefix: str = DEFAULT_STATE_PREFIX) -> list[str]:
    """The action annotation keys releasegate recorded as its own on this Ingress (its bookkeeping annotation)."""
    raw = _annotations(ingress).get(f"{state_prefix}{MANAGED_ACTIONS}")
    if not raw:
        return []
    try:
        keys = json.loads(raw)
    except json.JSONDecodeError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"Ingress {_ingress_name(ingress)}: annotation {state_prefix}{MANAGED_ACTIONS} is not a "
                          f"JSON list of annotation keys ({raw!r}); delete it, releasegate writes it again")
    return list(keys)


def annotation_patch(action_name: str, action_json: str, annotation_prefix: str = ALB_ANNOTATION_PREFIX, *,
                     state_prefix: str = DEFAULT_STATE_PREFIX,
                     current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON merge patch (`application/merge-patch+json`) that sets one action annotation on an Ingress.

    It sets `<annotation_prefix>/actions.<action_name>` to `action_json` and `<state_prefix>managed-alb-actions`
    to a JSON list of the action keys releasegate manages there (like Argo's managed-alb-annotations); with
    `current` (the Ingress as read), keys recorded there before are kept. Every other annotation and the spec
    are left alone: a merge patch replaces only the keys it names.
    """
    key = action_annotation_key(action_name, annotation_prefix)
    try:
        json.loads(action_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the action for {key} is not JSON: {exc}") from None
    managed = set(managed_actions(current, state_prefix=state_prefix)) if current is not None else set()
    managed.add(key)
    annotations = {key: action_json, f"{state_prefix}{MANAGED_ACTIONS}": _go_json(sorted(managed))}
    return {"metadata": {"annotations": annotations}}


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """Go's encoding/json matches field names case-insensitively: `forwardConfig` (the AWS docs) = `ForwardConfig`."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def read_weights(ingress: Mapping[str, Any], action_name: str,
                 annotation_prefix: str = ALB_ANNOTATION_PREFIX) -> dict[str, int]:
    """The weights of the forward action `action_name` on this Ingress: {Service name (or target group ARN): weight}.

    Empty when the annotation is absent. Reads what forward_action writes and the lower-camel form of the
    controller's documentation (`{"type":"forward","forwardConfig":{"targetGroups":[...]}}`). A value the
    controller could not use (not JSON, not a forward action, a target group without a weight) is a
    ConfigError naming the Ingress, the key and the fix.
    """
    key = action_annotation_key(action_name, annotation_prefix)
    raw = _annotations(ingress).get(key)
    if raw is None:
        return {}
    where = f"Ingress {_ingress_name(ingress)}: annotation {key}"
    fix = "fix or delete the annotation; releasegate rewrites it at the next traffic change"
    try:
        action = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where} is not JSON ({exc}); {fix}") from None
    if not isinstance(action, Mapping):
        raise ConfigError(f"{where} is not a JSON object; {fix}")
    kind = _field(action, "Type")
    if kind != "forward":
        raise ConfigError(f"{where} is a {kind!r} action, not a forward action with weighted target groups; {fix}")
    forward = _field(action, "ForwardConfig")
    if forward is None and isinstance(_field(action, "TargetGroupARN"), str):
        return {_field(action, "TargetGroupARN"): 100}  # the simple form: one target group takes everything
    groups = _field(forward, "TargetGroups") if isinstance(forward, Mapping) else None
    if not isinstance(groups, list) or not groups:
        raise ConfigError(f"{where} has no ForwardConfig.TargetGroups; {fix}")
    weights: dict[str, int] = {}
    for group in groups:
        if not isinstance(group, Mapping):
            raise ConfigError(f"{where} has a target group that is not an object ({group!r}); {fix}")
        name = _field(group, "ServiceName") or _field(group, "TargetGroupARN") or _field(group, "TargetGroupName")
        weight = _field(group, "Weight")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} has a target group with no ServiceName or TargetGroupARN; {fix}")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ConfigError(f"{where} gives target group `{name}` no integer Weight ({weight!r}); write every "
                              "weight explicitly, 0 included (argo-rollouts#491)")
        if weights.setdefault(name, weight) != weight:
            raise ConfigError(f"{where} gives target group `{name}` two weights ({weights[name]} and {weight}); {fix}")
    return weights
