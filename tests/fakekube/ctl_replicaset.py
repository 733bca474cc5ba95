"""The ReplicaSet controller: pods to match ``spec.replicas``, then status from those pods.

The two halves run at different points of a controller round (pods are created before the kubelet runs,
status is computed after), which is what makes a rollout advance one ready pod per write like the
recorded kwok cluster did.
"""

from __future__ import annotations

from typing import Any

from . import status
from .clock import Clock
from .events import EventRecorder
from .gotime import parse_time
from .registry import Registry
from .resources import BY_KIND
from .selectors import selector_from_object
from .store import jcopy

JsonObj = dict[str, Any]
MANAGER = "kube-controller-manager"


def owned_by(obj: JsonObj, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def pod_ready(pod: JsonObj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def ready_since(pod: JsonObj) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime") or "")
    return ""


def active_pod(pod: JsonObj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not pod["metadata"].get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def _deletion_rank(pod: JsonObj) -> tuple[Any, ...]:
    """``controller.ActivePods`` ordering: the pods to delete first sort first."""
    st = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(st.get("phase")), 0)
    restarts = sum(int(c.get("restartCount", 0)) for c in st.get("containerStatuses") or [])
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_rank,
        1 if pod_ready(pod) else 0,
        # more recently ready first, more restarts first, newer first
        tuple(-ord(ch) for ch in ready_since(pod)),
        -restarts,
        tuple(-ord(ch) for ch in pod["metadata"].get("creationTimestamp", "")),
        pod["metadata"]["name"],
    )


class ReplicaSetController:
    def __init__(self, registry: Registry, recorder: EventRecorder, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._events = recorder
        self._clock = clock

    def _pods(self, rs: JsonObj) -> list[JsonObj]:
        uid = rs["metadata"]["uid"]
        return [p for p in self._store.list("/pods", rs["metadata"]["namespace"]) if owned_by(p, uid) and active_pod(p)]

    def manage(self) -> None:
        for rs in self._store.list("apps/replicasets"):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._manage_one(rs)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    def _manage_one(self, rs: JsonObj) -> None:
        pods = self._pods(rs)
        diff = len(pods) - int(rs["spec"].get("replicas", 0) or 0)
        if diff < 0:
            template = rs["spec"].get("template") or {}
            tmeta = template.get("metadata") or {}
            for _ in range(-diff):
                pod: JsonObj = {
                    "metadata": {
                        "generateName": f"{rs['metadata']['name']}-",
                        "namespace": rs["metadata"]["namespace"],
                        "labels": dict(tmeta.get("labels") or {}),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": rs["metadata"]["name"],
                                "uid": rs["metadata"]["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": jcopy(template.get("spec") or {}),
                }
                if tmeta.get("annotations"):
                    pod["metadata"]["annotations"] = dict(tmeta["annotations"])
                created = self._registry.controller_create("Pod", rs["metadata"]["namespace"], pod, MANAGER)
                self._events.record(
                    rs,
                    "ReplicaSet",
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {created['metadata']['name']}",
                    component="replicaset-controller",
                )
        elif diff > 0:
            victims = sorted(pods, key=_deletion_rank)[:diff]
            for pod in victims:
                self._registry.delete(BY_KIND["Pod"], pod["metadata"]["namespace"], pod["metadata"]["name"], {})
                self._events.record(
                    rs,
                    "ReplicaSet",
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                )

    def update_status(self) -> None:
        for rs in self._store.list("apps/replicasets"):
            try:
                self._status_one(rs)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    def _status_one(self, rs: JsonObj) -> None:
        pods = self._pods(rs)
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        labelled = selector_from_object({"matchLabels": template_labels})
        min_ready = int(rs["spec"].get("minReadySeconds", 0) or 0)
        now = self._clock.now()
        ready = [p for p in pods if pod_ready(p)]
        available = [
            p for p in ready if min_ready == 0 or (now - parse_time(ready_since(p))).total_seconds() >= min_ready
        ]
        new_status: JsonObj = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(1 for p in pods if labelled.matches(p["metadata"].get("labels"))),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": int(rs["metadata"].get("generation", 1)),
        }
        new_status = {k: v for k, v in new_status.items() if v or k == "replicas"}
        old = rs.get("status") or {}
        if old.get("conditions"):
            new_status["conditions"] = old["conditions"]
        if new_status == old:
            return
        new = jcopy(rs)
        new["status"] = new_status
        self._registry.controller_update("ReplicaSet", rs, new, MANAGER, subresource="status")
