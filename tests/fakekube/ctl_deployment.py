"""The deployment controller, following ``pkg/controller/deployment`` closely.

The recorded status progression (``02``/``06``/``09`` golden files) depends on details reproduced here on
purpose: the revision annotation and ``NewReplicaSetCreated`` go out through ``/status`` in one write; a
scaling event computes status from the ReplicaSets as they were *before* scaling them (the upstream code
discards the scaled copies), so ``unavailableReplicas`` lags one write; ``Progressing`` is not re-estimated
once a rollout is complete; conditions move to the end of the list whenever they change.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import status
from .clock import Clock
from .events import EventRecorder
from .gotime import parse_time
from .registry import Registry
from .store import jcopy

JsonObj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX_REPLICAS,
}
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MANAGER = "kube-controller-manager"


# ------------------------------------------------------------------------------------------------------------
# pure helpers (deploymentutil)
# ------------------------------------------------------------------------------------------------------------


def spec_replicas(obj: JsonObj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 0) or 0)


def status_of(obj: JsonObj, key: str) -> int:
    return int((obj.get("status") or {}).get(key, 0) or 0)


def revision(rs: JsonObj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def template_hash(template: JsonObj, collision_count: int | None) -> str:
    """``ComputeHash``: FNV-32a over the template, then ``rand.SafeEncodeString`` of the decimal value."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in str(h))


def _without_hash(template: JsonObj) -> JsonObj:
    copy = jcopy(template)
    labels = (copy.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
        if not labels:
            copy["metadata"].pop("labels")
    return copy


def equal_ignore_hash(a: JsonObj, b: JsonObj) -> bool:
    return _without_hash(a) == _without_hash(b)


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1])
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def surge_and_unavailable(d: JsonObj) -> tuple[int, int]:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    replicas = spec_replicas(d)
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: JsonObj) -> int:
    return surge_and_unavailable(d)[0]


def max_unavailable(d: JsonObj) -> int:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") != "RollingUpdate" or spec_replicas(d) == 0:
        return 0
    return min(surge_and_unavailable(d)[1], spec_replicas(d))


def has_progress_deadline(d: JsonObj) -> bool:
    pds = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return pds is not None and pds != 2147483647


def get_condition(status_obj: JsonObj, cond_type: str) -> JsonObj | None:
    for cond in status_obj.get("conditions") or []:
        if cond.get("type") == cond_type:
            return cond
    return None


def set_condition(status_obj: JsonObj, cond: JsonObj) -> None:
    """``SetDeploymentCondition``: same status and reason is a no-op; a status change resets the
    transition time."""
    current = get_condition(status_obj, cond["type"])
    if current is not None and current["status"] == cond["status"] and current.get("reason") == cond.get("reason"):
        return
    if current is not None and current["status"] == cond["status"]:
        cond["lastTransitionTime"] = current["lastTransitionTime"]
    remove_condition(status_obj, cond["type"])
    status_obj.setdefault("conditions", []).append(cond)


def remove_condition(status_obj: JsonObj, cond_type: str) -> None:
    conds = [c for c in status_obj.get("conditions") or [] if c.get("type") != cond_type]
    if conds:
        status_obj["conditions"] = conds
    else:
        status_obj.pop("conditions", None)


def deployment_complete(d: JsonObj, st: JsonObj) -> bool:
    replicas = spec_replicas(d)
    return (
        int(st.get("updatedReplicas", 0)) == replicas
        and int(st.get("replicas", 0)) == replicas
        and int(st.get("availableReplicas", 0)) == replicas
        and int(st.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0))
    )


def deployment_progressing(d: JsonObj, new: JsonObj) -> bool:
    old = d.get("status") or {}
    old_old = int(old.get("replicas", 0)) - int(old.get("updatedReplicas", 0))
    new_old = int(new.get("replicas", 0)) - int(new.get("updatedReplicas", 0))
    return (
        int(new.get("updatedReplicas", 0)) > int(old.get("updatedReplicas", 0))
        or new_old < old_old
        or int(new.get("readyReplicas", 0)) > int(old.get("readyReplicas", 0))
        or int(new.get("availableReplicas", 0)) > int(old.get("availableReplicas", 0))
    )


# ------------------------------------------------------------------------------------------------------------
# the controller
# ------------------------------------------------------------------------------------------------------------


class DeploymentController:
    def __init__(self, registry: Registry, recorder: EventRecorder, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._events = recorder
        self._clock = clock
        self._rs_touched = False

    # -- plumbing -----------------------------------------------------------------------------------------

    def _now(self) -> str:
        return self._registry.timestamp()

    def _condition(self, cond_type: str, cond_status: str, reason: str, message: str) -> JsonObj:
        now = self._now()
        return {
            "type": cond_type,
            "status": cond_status,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    def _owned_rs(self, d: JsonObj) -> list[JsonObj]:
        uid = d["metadata"]["uid"]
        owned = [
            rs
            for rs in self._store.list("apps/replicasets", d["metadata"]["namespace"])
            if any(
                ref.get("uid") == uid and ref.get("controller") for ref in rs["metadata"].get("ownerReferences") or []
            )
        ]
        owned.sort(key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]))
        return owned

    def _write_status(self, d: JsonObj, mutate: Callable[[JsonObj], None]) -> JsonObj:
        new = jcopy(d)
        mutate(new)
        return self._registry.controller_update("Deployment", d, new, MANAGER, subresource="status")

    def _scale_rs(self, rs: JsonObj, replicas: int, d: JsonObj) -> JsonObj:
        """``scaleReplicaSetAndRecordEvent``: returns the updated RS (callers decide whether to use it)."""
        desired = str(spec_replicas(d))
        max_reps = str(spec_replicas(d) + max_surge(d))
        annotations = rs["metadata"].get("annotations") or {}
        old = spec_replicas(rs)
        if old == replicas and annotations.get(DESIRED) == desired and annotations.get(MAX_REPLICAS) == max_reps:
            return rs
        new = jcopy(rs)
        new["spec"]["replicas"] = replicas
        new["metadata"].setdefault("annotations", {}).update({DESIRED: desired, MAX_REPLICAS: max_reps})
        updated = self._registry.controller_update("ReplicaSet", rs, new, MANAGER)
        self._rs_touched = True
        if old != replicas:
            direction = "up" if replicas > old else "down"
            self._events.record(
                d,
                "Deployment",
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {rs['metadata']['name']} from {old} to {replicas}",
                component="deployment-controller",
            )
        return updated

    # -- entry points -------------------------------------------------------------------------------------

    def sync_all(self) -> None:
        for d in self._store.list("apps/deployments"):
            try:
                self.sync(d)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    def sync(self, d: JsonObj) -> None:
        # A write to a ReplicaSet re-queues the Deployment upstream (informer event); emulate that with up to
        # two more passes, each on fresh objects.
        for _ in range(3):
            self._rs_touched = False
            fresh = self._store.get("apps/deployments", d["metadata"]["namespace"], d["metadata"]["name"])
            if fresh is None or fresh["metadata"]["uid"] != d["metadata"]["uid"]:
                return
            self._sync_once(fresh)
            if not self._rs_touched:
                return

    def _sync_once(self, d: JsonObj) -> None:
        rss = self._owned_rs(d)
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = self._split(d, rss)
            self._sync_status(d, old_rss + ([new_rs] if new_rs else []), new_rs)
            return
        if d["spec"].get("paused"):
            d = self._check_paused(d)
            self._sync_scale(d, rss)
            return
        d = self._check_paused(d)
        if self._is_scaling_event(d, rss):
            self._sync_scale(d, rss)
        elif (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            self._rollout_recreate(d, rss)
        else:
            self._rollout_rolling(d, rss)

    def _check_paused(self, d: JsonObj) -> JsonObj:
        if not has_progress_deadline(d):
            return d
        cond = get_condition(d.get("status") or {}, "Progressing")
        paused = bool(d["spec"].get("paused"))
        if paused and (cond is None or cond.get("reason") != "DeploymentPaused"):
            new_cond = self._condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
            return self._write_status(d, lambda n: set_condition(n.setdefault("status", {}), new_cond))
        if not paused and cond is not None and cond.get("reason") == "DeploymentPaused":
            new_cond = self._condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
            return self._write_status(d, lambda n: set_condition(n.setdefault("status", {}), new_cond))
        return d

    # -- replica set bookkeeping --------------------------------------------------------------------------

    def _split(self, d: JsonObj, rss: list[JsonObj]) -> tuple[JsonObj | None, list[JsonObj]]:
        template = d["spec"]["template"]
        new_rs = next((rs for rs in rss if equal_ignore_hash(rs["spec"]["template"], template)), None)
        return new_rs, [rs for rs in rss if rs is not new_rs]

    def _is_scaling_event(self, d: JsonObj, rss: list[JsonObj]) -> bool:
        new_rs, old_rss = self._split(d, rss)
        for rs in [*old_rss, *([new_rs] if new_rs else [])]:
            if spec_replicas(rs) == 0:
                continue
            desired = (rs["metadata"].get("annotations") or {}).get(DESIRED)
            if desired is not None and int(desired) != spec_replicas(d):
                return True
        return False

    def _copy_annotations(self, d: JsonObj, rs: JsonObj) -> bool:
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key in _NOT_COPIED:
                continue
            if annotations.get(key) != value:
                annotations[key] = value
                changed = True
        return changed

    def _set_rs_annotations(self, d: JsonObj, rs: JsonObj, new_revision: int, exists: bool) -> bool:
        changed = self._copy_annotations(d, rs)
        annotations = rs["metadata"].setdefault("annotations", {})
        old_revision = annotations.get(REVISION)
        if old_revision is None or int(old_revision) < new_revision:
            annotations[REVISION] = str(new_revision)
            changed = True
        if not exists:
            annotations[DESIRED] = str(spec_replicas(d))
            annotations[MAX_REPLICAS] = str(spec_replicas(d) + max_surge(d))
            changed = True
        return changed

    def _new_rs_replicas(self, d: JsonObj, all_rss: list[JsonObj], new_rs: JsonObj | None) -> int:
        new_count = spec_replicas(new_rs) if new_rs else 0
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            return spec_replicas(d)
        current = sum(spec_replicas(rs) for rs in all_rss)
        max_total = spec_replicas(d) + max_surge(d)
        if current >= max_total:
            return new_count
        scale_up = min(max_total - current, spec_replicas(d) - new_count)
        return new_count + scale_up

    def _get_all(self, d: JsonObj, rss: list[JsonObj], create: bool) -> tuple[JsonObj, JsonObj | None, list[JsonObj]]:
        """``getAllReplicaSetsAndSyncRevision``: returns (deployment, new RS or None, old RSs)."""
        new_rs, old_rss = self._split(d, rss)
        new_revision = max((revision(rs) for rs in old_rss), default=0) + 1
        if new_rs is not None:
            rs_copy = jcopy(new_rs)
            if self._set_rs_annotations(d, rs_copy, new_revision, exists=True):
                new_rs = self._registry.controller_update("ReplicaSet", new_rs, rs_copy, MANAGER)
                self._rs_touched = True
            rev = (new_rs["metadata"].get("annotations") or {}).get(REVISION, "")
            need_update = (d["metadata"].get("annotations") or {}).get(REVISION) != rev
            cond = get_condition(d.get("status") or {}, "Progressing")
            if need_update or (has_progress_deadline(d) and cond is None):
                found = self._condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{new_rs["metadata"]["name"]}"',
                )

                def mutate(n: JsonObj) -> None:
                    n["metadata"].setdefault("annotations", {})[REVISION] = rev
                    if has_progress_deadline(n) and get_condition(n.get("status") or {}, "Progressing") is None:
                        set_condition(n.setdefault("status", {}), found)

                d = self._write_status(d, mutate)
            return d, new_rs, old_rss
        if not create:
            return d, None, old_rss
        template = jcopy(d["spec"]["template"])
        collision = (d.get("status") or {}).get("collisionCount")
        pod_hash = template_hash(template, collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = jcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        meta = d["metadata"]
        rs: JsonObj = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if d["spec"].get("minReadySeconds"):
            rs["spec"]["minReadySeconds"] = d["spec"]["minReadySeconds"]
        replicas = self._new_rs_replicas(d, old_rss, None)
        rs["spec"]["replicas"] = replicas
        self._set_rs_annotations(d, rs, new_revision, exists=False)
        try:
            created = self._registry.controller_create("ReplicaSet", meta["namespace"], rs, MANAGER)
        except status.ApiError as err:
            if err.code != 409:
                raise
            # A ReplicaSet of that name with another template: bump collisionCount and retry next round.
            d = self._write_status(d, lambda n: n["status"].__setitem__("collisionCount", int(collision or 0) + 1))
            return d, None, old_rss
        self._rs_touched = True
        if replicas > 0:
            self._events.record(
                d,
                "Deployment",
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
                component="deployment-controller",
            )
        created_cond = self._condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{created["metadata"]["name"]}"',
        )

        def mutate_created(n: JsonObj) -> None:
            n["metadata"].setdefault("annotations", {})[REVISION] = str(new_revision)
            if has_progress_deadline(n):
                set_condition(n.setdefault("status", {}), created_cond)

        d = self._write_status(d, mutate_created)
        return d, created, old_rss

    # -- status ---------------------------------------------------------------------------------------------

    def _calculate_status(self, all_rss: list[JsonObj], new_rs: JsonObj | None, d: JsonObj) -> JsonObj:
        available = sum(status_of(rs, "availableReplicas") for rs in all_rss)
        total = sum(spec_replicas(rs) for rs in all_rss)
        new_status: JsonObj = {
            "observedGeneration": int(d["metadata"].get("generation", 0)),
            "replicas": sum(status_of(rs, "replicas") for rs in all_rss),
            "updatedReplicas": status_of(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(status_of(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        new_status = {k: v for k, v in new_status.items() if v}
        old = d.get("status") or {}
        if old.get("conditions"):
            new_status["conditions"] = jcopy(old["conditions"])
        if old.get("collisionCount") is not None:
            new_status["collisionCount"] = old["collisionCount"]
        if available >= spec_replicas(d) - max_unavailable(d):
            cond = self._condition(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
        else:
            cond = self._condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        set_condition(new_status, cond)
        return new_status

    def _sync_status(self, d: JsonObj, all_rss: list[JsonObj], new_rs: JsonObj | None) -> JsonObj:
        new_status = self._calculate_status(all_rss, new_rs, d)
        if new_status == (d.get("status") or {}):
            return d
        return self._write_status(d, lambda n: n.__setitem__("status", new_status))

    def _timed_out(self, d: JsonObj) -> bool:
        if not has_progress_deadline(d):
            return False
        cond = get_condition(d.get("status") or {}, "Progressing")
        if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
            return False
        if cond.get("reason") == "ProgressDeadlineExceeded":
            return True
        started: datetime = parse_time(cond["lastUpdateTime"])
        deadline = int(d["spec"]["progressDeadlineSeconds"])
        return (self._clock.now() - started).total_seconds() > deadline

    def _sync_rollout_status(self, d: JsonObj, all_rss: list[JsonObj], new_rs: JsonObj | None) -> JsonObj:
        new_status = self._calculate_status(all_rss, new_rs, d)
        if not has_progress_deadline(d):
            remove_condition(new_status, "Progressing")
        current = get_condition(d.get("status") or {}, "Progressing")
        is_complete = (
            int(new_status.get("replicas", 0)) == int(new_status.get("updatedReplicas", 0))
            and current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
        )
        name = new_rs["metadata"]["name"] if new_rs else ""
        if has_progress_deadline(d) and not is_complete:
            if deployment_complete(d, new_status):
                msg = (
                    f'ReplicaSet "{name}" has successfully progressed.'
                    if new_rs
                    else (f'Deployment "{d["metadata"]["name"]}" has successfully progressed.')
                )
                set_condition(new_status, self._condition("Progressing", "True", "NewReplicaSetAvailable", msg))
            elif deployment_progressing(d, new_status):
                msg = (
                    f'ReplicaSet "{name}" is progressing.'
                    if new_rs
                    else (f'Deployment "{d["metadata"]["name"]}" is progressing.')
                )
                cond = self._condition("Progressing", "True", "ReplicaSetUpdated", msg)
                if current is not None:
                    if current["status"] == "True":
                        cond["lastTransitionTime"] = current["lastTransitionTime"]
                    remove_condition(new_status, "Progressing")
                set_condition(new_status, cond)
            elif self._timed_out(d):
                msg = (
                    f'ReplicaSet "{name}" has timed out progressing.'
                    if new_rs
                    else (f'Deployment "{d["metadata"]["name"]}" has timed out progressing.')
                )
                set_condition(new_status, self._condition("Progressing", "False", "ProgressDeadlineExceeded", msg))
        if new_status == (d.get("status") or {}):
            return d
        return self._write_status(d, lambda n: n.__setitem__("status", new_status))

    # -- strategies -----------------------------------------------------------------------------------------

    def _sync_scale(self, d: JsonObj, rss: list[JsonObj]) -> None:
        """``dc.sync``: scaling event or paused deployment."""
        d, new_rs, old_rss = self._get_all(d, rss, create=False)
        self._scale(d, new_rs, old_rss)
        all_rss = old_rss + ([new_rs] if new_rs else [])
        self._sync_status(d, all_rss, new_rs)

    def _scale(self, d: JsonObj, new_rs: JsonObj | None, old_rss: list[JsonObj]) -> None:
        all_rss = old_rss + ([new_rs] if new_rs else [])
        active = [rs for rs in all_rss if spec_replicas(rs) > 0]
        target: JsonObj | None = None
        if len(active) == 1:
            target = active[0]
        elif not active:
            target = new_rs or (
                max(old_rss, key=lambda r: r["metadata"].get("creationTimestamp", "")) if old_rss else None
            )
        if target is not None:
            if spec_replicas(target) != spec_replicas(d) or self._annotations_stale(target, d):
                self._scale_rs(target, spec_replicas(d), d)
            return
        if (
            new_rs is not None
            and spec_replicas(new_rs) == spec_replicas(d)
            and status_of(new_rs, "availableReplicas") == spec_replicas(d)
        ):
            for rs in old_rss:
                if spec_replicas(rs) > 0:
                    self._scale_rs(rs, 0, d)
            return
        if (d["spec"].get("strategy") or {}).get("type") != "RollingUpdate":
            return
        # Proportional scaling: spread the difference over the active ReplicaSets by size.
        total = sum(spec_replicas(rs) for rs in active)
        allowed = spec_replicas(d) + max_surge(d) if spec_replicas(d) > 0 else 0
        to_add = allowed - total
        if to_add == 0 or total == 0:
            return
        ordered = sorted(
            active,
            key=lambda r: (-spec_replicas(r), r["metadata"].get("creationTimestamp", "")),
            reverse=to_add < 0,
        )
        shares = {rs["metadata"]["name"]: int(spec_replicas(rs) * to_add / total) for rs in ordered}
        leftover = to_add - sum(shares.values())
        if ordered:
            shares[ordered[0]["metadata"]["name"]] += leftover
        for rs in ordered:
            new_size = max(spec_replicas(rs) + shares[rs["metadata"]["name"]], 0)
            self._scale_rs(rs, new_size, d)

    @staticmethod
    def _annotations_stale(rs: JsonObj, d: JsonObj) -> bool:
        annotations = rs["metadata"].get("annotations") or {}
        return annotations.get(DESIRED) != str(spec_replicas(d))

    def _rollout_rolling(self, d: JsonObj, rss: list[JsonObj]) -> None:
        d, new_rs, old_rss = self._get_all(d, rss, create=True)
        if new_rs is None:
            return
        all_rss = [*old_rss, new_rs]
        if self._reconcile_new(d, all_rss, new_rs):
            self._sync_rollout_status(d, all_rss, new_rs)
            return
        if self._reconcile_old(d, all_rss, [rs for rs in old_rss if spec_replicas(rs) > 0], new_rs):
            self._sync_rollout_status(d, all_rss, new_rs)
            return
        if deployment_complete(d, d.get("status") or {}):
            self._cleanup(d, old_rss)
        self._sync_rollout_status(d, all_rss, new_rs)

    def _reconcile_new(self, d: JsonObj, all_rss: list[JsonObj], new_rs: JsonObj) -> bool:
        if spec_replicas(new_rs) == spec_replicas(d):
            return False
        if spec_replicas(new_rs) > spec_replicas(d):
            self._scale_rs(new_rs, spec_replicas(d), d)
            return True
        count = self._new_rs_replicas(d, all_rss, new_rs)
        if count == spec_replicas(new_rs):
            return False
        self._scale_rs(new_rs, count, d)
        return True

    def _reconcile_old(self, d: JsonObj, all_rss: list[JsonObj], old_rss: list[JsonObj], new_rs: JsonObj) -> bool:
        old_count = sum(spec_replicas(rs) for rs in old_rss)
        if old_count == 0:
            return False
        all_count = sum(spec_replicas(rs) for rs in all_rss)
        min_available = spec_replicas(d) - max_unavailable(d)
        new_unavailable = spec_replicas(new_rs) - status_of(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        old_rss = sorted(old_rss, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
        cleaned = 0
        updated: list[JsonObj] = []
        for rs in old_rss:
            if (
                cleaned >= max_scaled_down
                or spec_replicas(rs) == 0
                or spec_replicas(rs) == status_of(rs, "availableReplicas")
            ):
                updated.append(rs)
                continue
            count = min(max_scaled_down - cleaned, spec_replicas(rs) - status_of(rs, "availableReplicas"))
            updated.append(self._scale_rs(rs, spec_replicas(rs) - count, d))
            cleaned += count
        all_now = [*updated, new_rs]
        available = sum(status_of(rs, "availableReplicas") for rs in all_now)
        scaled = 0
        if available > min_available:
            to_scale = available - min_available
            for rs in updated:
                if scaled >= to_scale:
                    break
                if spec_replicas(rs) == 0:
                    continue
                count = min(spec_replicas(rs), to_scale - scaled)
                self._scale_rs(rs, spec_replicas(rs) - count, d)
                scaled += count
        return cleaned + scaled > 0

    def _rollout_recreate(self, d: JsonObj, rss: list[JsonObj]) -> None:
        d, new_rs, old_rss = self._get_all(d, rss, create=False)
        all_rss = old_rss + ([new_rs] if new_rs else [])
        scaled_down = False
        for rs in old_rss:
            if spec_replicas(rs) > 0:
                self._scale_rs(rs, 0, d)
                scaled_down = True
        if scaled_down:
            self._sync_rollout_status(d, all_rss, new_rs)
            return
        old_uids = {rs["metadata"]["uid"] for rs in old_rss}
        for pod in self._store.list("/pods", d["metadata"]["namespace"], copy=False):
            owners = {ref.get("uid") for ref in pod["metadata"].get("ownerReferences") or []}
            if owners & old_uids and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                self._sync_rollout_status(d, all_rss, new_rs)
                return
        if new_rs is None:
            d, new_rs, old_rss = self._get_all(d, rss, create=True)
            if new_rs is None:
                return
            all_rss = [*old_rss, new_rs]
        if spec_replicas(new_rs) != spec_replicas(d):
            self._scale_rs(new_rs, spec_replicas(d), d)
        if deployment_complete(d, d.get("status") or {}):
            self._cleanup(d, old_rss)
        self._sync_rollout_status(d, all_rss, new_rs)

    def _cleanup(self, d: JsonObj, old_rss: list[JsonObj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        diff = len(cleanable) - int(limit)
        if diff <= 0:
            return
        for rs in sorted(cleanable, key=revision)[:diff]:
            if spec_replicas(rs) != 0 or status_of(rs, "replicas") != 0:
                continue
            res = self._registry_res("ReplicaSet")
            with contextlib.suppress(status.ApiError):
                self._registry.delete(res, rs["metadata"]["namespace"], rs["metadata"]["name"], {})

    @staticmethod
    def _registry_res(kind: str) -> Any:
        from .resources import BY_KIND

        return BY_KIND[kind]
