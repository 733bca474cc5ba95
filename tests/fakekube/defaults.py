"""Defaulting, as ``SetDefaults_*`` and the admission plugins apply it on every write.

Only fields a client round-trips are covered: what a Deployment, ReplicaSet, Pod, Service, Namespace or
Endpoints POST returns in the golden exchanges (``02``/``03``/``08``).
"""

from __future__ import annotations

import copy
from typing import Any

JsonObj = dict[str, Any]

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.rsplit(":", 1)[1] == "latest":
        return "Always"
    return "IfNotPresent"


def _default_probe(probe: JsonObj | None) -> None:
    if not isinstance(probe, dict):
        return
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    http = probe.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _default_container(container: JsonObj) -> None:
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    container.setdefault("resources", {})
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(probe))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", image_pull_policy(str(container.get("image", ""))))


def default_pod_spec(spec: JsonObj) -> None:
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if isinstance(container, dict):
            _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret", "projected", "downwardAPI"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _default_template(template: JsonObj) -> None:
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    default_pod_spec(template.setdefault("spec", {}))


def default_deployment(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _default_template(spec.setdefault("template", {}))
    strategy = spec.get("strategy") or {}
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec["strategy"] = strategy
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    obj.setdefault("status", {})


def default_replicaset(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _default_template(spec.setdefault("template", {}))
    obj.setdefault("status", {}).setdefault("replicas", 0)


def qos_class(spec: JsonObj) -> str:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests_seen = limits_seen = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        requests_seen |= bool(req)
        limits_seen |= bool(lim)
        for name in ("cpu", "memory"):
            if name not in lim or req.get(name, lim.get(name)) != lim.get(name):
                guaranteed = False
    if not requests_seen and not limits_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def admit_pod(obj: JsonObj, token_volume_suffix: str) -> None:
    """Pod-only defaults added by admission (ServiceAccount, DefaultTolerationSeconds, Priority)."""
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    if spec.get("automountServiceAccountToken", True) is not False:
        volumes = spec.setdefault("volumes", [])
        if not any(
            m.get("mountPath") == SA_MOUNT_PATH
            for c in spec.get("containers") or []
            for m in c.get("volumeMounts") or []
        ):
            name = f"kube-api-access-{token_volume_suffix}"
            volumes.append(
                {
                    "name": name,
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                }
            )
            for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                container.setdefault("volumeMounts", []).append(
                    {"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH}
                )
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key and t.get("effect") in (None, "NoExecute") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(spec))


def default_service(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def default_namespace(obj: JsonObj) -> None:
    meta = obj.setdefault("metadata", {})
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
    obj.setdefault("spec", {})
    obj.setdefault("status", {}).setdefault("phase", "Active")


def create_namespace(obj: JsonObj) -> None:
    """Only on create: the ``kubernetes`` finalizer the namespace controller removes when it is empty."""
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def default_endpoints(obj: JsonObj) -> None:
    for subset in obj.get("subsets") or []:
        for port in subset.get("ports") or []:
            port.setdefault("protocol", "TCP")


def default_endpointslice(obj: JsonObj) -> None:
    for port in obj.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_ingress(obj: JsonObj) -> None:
    """networking/v1 has no Ingress defaults; Go always writes the non-pointer ``status.loadBalancer``."""
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


# pkg/apis/autoscaling/v2/defaults.go: GenerateHPAScaleUpRules / GenerateHPAScaleDownRules.
HPA_SCALE_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                             {"type": "Percent", "value": 100, "periodSeconds": 15}]}
HPA_SCALE_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                  "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def default_hpa(obj: JsonObj) -> None:
    """``SetDefaults_HorizontalPodAutoscaler`` (autoscaling/v2): minReplicas 1, a CPU utilization of 80% when no
    metric is given, and a given ``behavior`` completed with the default scale-up and scale-down rules."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    obj.setdefault("status", {}).setdefault("desiredReplicas", 0)  # no omitempty: a new HPA reads 0
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    behavior = spec.get("behavior")
    if behavior is not None:
        for key, rules in (("scaleUp", HPA_SCALE_UP), ("scaleDown", HPA_SCALE_DOWN)):
            given = behavior.get(key) or {}
            behavior[key] = {field: given.get(field, copy.deepcopy(value)) for field, value in rules.items()}


# k8s.io/api/batch/v1 JobSpec field order: what Go serialises, so a served Job reads like a real one.
JOB_SPEC_ORDER = (
    "parallelism", "completions", "activeDeadlineSeconds", "podFailurePolicy", "successPolicy", "backoffLimit",
    "backoffLimitPerIndex", "maxFailedIndexes", "selector", "manualSelector", "template", "ttlSecondsAfterFinished",
    "completionMode", "suspend", "podReplacementPolicy", "managedBy",
)
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"


def _job_spec_in_go_order(spec: JsonObj) -> JsonObj:
    ordered = {k: spec[k] for k in JOB_SPEC_ORDER if k in spec}
    return {**ordered, **{k: v for k, v in spec.items() if k not in ordered}}


def default_job(obj: JsonObj) -> None:
    """``SetDefaults_Job`` of pkg/apis/batch/v1/defaults.go (v1.32, JobPodReplacementPolicy on by default)."""
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    template = spec.setdefault("template", {})
    template_labels = (template.get("metadata") or {}).get("labels")
    meta = obj.setdefault("metadata", {})
    if template_labels is not None and not meta.get("labels"):
        meta["labels"] = dict(template_labels)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        for pattern in rule.get("onPodConditions") or []:
            pattern.setdefault("status", "True")
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
    spec.setdefault("manualSelector", False)
    _default_template(template)
    spec["template"] = {"metadata": template.pop("metadata"), **template}  # Go order: metadata, then spec
    obj["spec"] = _job_spec_in_go_order(spec)
    obj.setdefault("status", {})


def generate_job_selector(obj: JsonObj) -> None:
    """``generateSelectorIfNeeded`` of the Job strategy's PrepareForCreate: unless ``manualSelector``, the pod
    template gets the job-name and controller-uid labels (legacy and ``batch.kubernetes.io/`` ones; a label the
    user set is kept, validation then rejects a wrong value) and the selector matches the controller uid."""
    spec = obj["spec"]
    if spec.get("manualSelector"):
        return
    meta = obj["metadata"]
    tmeta = spec["template"].setdefault("metadata", {})
    labels = tmeta.setdefault("labels", {})
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, meta.get("name", ""))
    for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
        labels.setdefault(key, meta.get("uid", ""))
    tmeta["labels"] = dict(sorted(labels.items()))  # Go writes map keys sorted
    selector = spec.get("selector") or {}
    match_labels = selector.get("matchLabels") or {}
    match_labels.setdefault(CONTROLLER_UID_LABEL, meta.get("uid", ""))
    selector["matchLabels"] = dict(sorted(match_labels.items()))
    spec["selector"] = selector
    obj["spec"] = _job_spec_in_go_order(spec)


DEFAULTERS = {
    "Deployment": default_deployment,
    "ReplicaSet": default_replicaset,
    "Service": default_service,
    "Namespace": default_namespace,
    "Endpoints": default_endpoints,
    "EndpointSlice": default_endpointslice,
    "Ingress": default_ingress,
    "HorizontalPodAutoscaler": default_hpa,
    "Job": default_job,
}


def apply_defaults(kind: str, obj: JsonObj) -> None:
    if kind == "Pod":
        default_pod_spec(obj.setdefault("spec", {}))
        return
    fn = DEFAULTERS.get(kind)
    if fn is not None:
        fn(obj)
