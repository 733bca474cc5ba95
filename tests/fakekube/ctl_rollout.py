"""A small Argo Rollouts controller: canary steps and pauses, blue-green promotion, status as the real one.

Once the Rollout CRD is installed (``FakeKube.install_crd("rollouts.argoproj.io")``), this moves
``argoproj.io/v1alpha1`` Rollouts the way the argo-rollouts controller does, with the status fields, reasons
and messages of its source (argoproj/argo-rollouts):

- ``pkg/apis/rollouts/v1alpha1/types.go``: field names (``currentStepIndex``, ``pauseConditions``,
  ``controllerPause``, ``abort``/``abortedAt``, ``stableRS``, ``currentPodHash``, ``canary.weights``,
  ``blueGreen.activeSelector``, ``phase``/``message``, ``observedGeneration`` as a string).
- ``rollout/canary.go``: ``rolloutCanary``, ``reconcileCanaryPause``, ``completedCurrentCanaryStep``,
  ``syncRolloutStatusCanary``; ``utils/replicaset/canary.go``: ``GetCurrentCanaryStep``,
  ``GetCurrentSetWeight``, ``DesiredReplicaCountsForCanary``.
- ``rollout/bluegreen.go``: ``reconcileBlueGreenPause``, ``isBlueGreenFastTracked``,
  ``syncRolloutStatusBlueGreen``; ``rollout/service.go``: ``switchServiceSelector`` (a strategic merge patch
  of the Service selector ``rollouts-pod-template-hash`` plus the managed-by annotation),
  ``reconcileActiveService``, ``reconcilePreviewService``, ``reconcileStableAndCanaryService`` (a canary
  Rollout's ``stableService``/``canaryService`` selectors, switched once the ReplicaSet is available).
- ``rollout/pause.go``: ``CalculatePauseStatus``, ``CompletedCanaryPauseStep``, ``CompletedBlueGreenPause``.
- ``rollout/sync.go``: ``calculateBaseStatus``, ``calculateRolloutConditions``, ``checkPausedConditions``,
  ``persistRolloutStatus``, ``shouldFullPromote``, ``promoteStable``, ``resetRolloutStatus``.
- ``utils/rollout/rolloututil.go``: ``CalculateRolloutPhase``; ``utils/conditions/conditions.go``: reasons
  and messages (``RolloutAborted``/``Rollout aborted update to revision %d``, ...).

The pods are real fake pods: a Rollout owns one ReplicaSet per pod template (``<name>-<hash>``, label
``rollouts-pod-template-hash``) that the fake's ReplicaSet controller and kubelet run, so Services select
real endpoints and "which version serves" is visible in the Endpoints. Timed pauses, scale-down delays and the
progress deadline read the fake's clock (a ``FakeClock`` can be advanced instead of waiting).

Simplified on purpose: ReplicaSets are scaled straight to their desired counts (as if maxSurge were 100%);
analysis, experiment and plugin steps complete at once as if successful (the fake has no AnalysisRuns);
previewReplicaCount, anti-affinity, ephemeral metadata, restarts, rollback windows, workloadRef, ping-pong
and the traffic routers themselves are not modelled (with ``trafficRouting`` set, the weights are only
recorded in ``status.canary.weights``, and the stable ReplicaSet stays fully scaled as upstream).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import status
from .clock import Clock
from .ctl_deployment import template_hash
from .ctl_replicaset import owned_by
from .events import EventRecorder
from .gotime import format_time, parse_time
from .registry import Registry, WriteOptions
from .resources import BY_KIND
from .selectors import selector_string
from .store import jcopy

JsonObj = dict[str, Any]

MANAGER = "rollouts-controller"
COMPONENT = "rollouts-controller"
ROLLOUTS_KEY = "argoproj.io/rollouts"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
DESIRED_REPLICAS = "rollout.argoproj.io/desired-replicas"
MANAGED_BY = "argo-rollouts.argoproj.io/managed-by-rollouts"
SCALE_DOWN_DEADLINE = "scale-down-deadline"

CANARY_PAUSE = "CanaryPauseStep"
BLUE_GREEN_PAUSE = "BlueGreenPause"
DEFAULT_PROGRESS_DEADLINE_S = 600
DEFAULT_SCALE_DOWN_DELAY_S = 30
DEFAULT_ABORT_SCALE_DOWN_DELAY_S = 30

# utils/conditions/conditions.go
AVAILABLE_REASON = "AvailableReason"
AVAILABLE_MESSAGE = "Rollout has minimum availability"
NOT_AVAILABLE_MESSAGE = "Rollout does not have minimum availability"
REPLICASET_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
ABORTED = "RolloutAborted"
ABORTED_MESSAGE = "Rollout aborted update to revision {}"
PAUSED_REASON = "RolloutPaused"
PAUSED_MESSAGE = "Rollout is paused"
RESUMED_REASON = "RolloutResumed"
RESUMED_MESSAGE = "Rollout is resumed"
RETRY_REASON = "RolloutRetry"
RETRY_MESSAGE = "Retrying Rollout after abort"
COMPLETED_REASON = "RolloutCompleted"
HEALTHY_REASON = "RolloutHealthy"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# ------------------------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------------------------


def pause_duration_s(pause: JsonObj) -> int | None:
    """``RolloutPause.DurationSeconds``: None for ``pause: {}``, -1 for an unparseable string."""
    value = pause.get("duration")
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    if text.lstrip("-").isdigit():
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return -1
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def step_string(step: JsonObj) -> str:
    """``rolloututil.CanaryStepString``."""
    if "setWeight" in step:
        return f"setWeight: {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return "pause" if duration is None else f"pause: {duration}"
    for kind in ("experiment", "analysis"):
        if kind in step:
            return kind
    return "invalid"


def current_step(ro: JsonObj) -> tuple[JsonObj | None, int | None]:
    """``GetCurrentCanaryStep``: the step at status.currentStepIndex (default 0); None past the last one."""
    steps = canary_steps(ro)
    if not ((ro.get("spec") or {}).get("strategy") or {}).get("canary") or not steps:
        return None, None
    index = int((ro.get("status") or {}).get("currentStepIndex", 0) or 0)
    if index >= len(steps):
        return None, index
    return steps[index], index


def canary_steps(ro: JsonObj) -> list[JsonObj]:
    return list((((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("steps") or [])


def current_set_weight(ro: JsonObj) -> int:
    """``GetCurrentSetWeight``: 0 when aborted, 100 past the last step, else the last setWeight so far."""
    if (ro.get("status") or {}).get("abort"):
        return 0
    step, index = current_step(ro)
    if step is None or index is None:
        return 100
    steps = canary_steps(ro)
    for i in range(index, -1, -1):
        if "setWeight" in steps[i]:
            return int(steps[i]["setWeight"])
    return 0


def step_hash(ro: JsonObj) -> str:
    """``conditions.ComputeStepHash`` (FNV-32a of the JSON steps, safe-encoded); "" for blue-green."""
    strategy = (ro.get("spec") or {}).get("strategy") or {}
    if strategy.get("blueGreen") is not None or strategy.get("canary") is None:
        return ""
    return template_hash({"steps": canary_steps(ro)}, None)


def get_condition(st: JsonObj, kind: str) -> JsonObj | None:
    for cond in st.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def set_condition(st: JsonObj, cond: JsonObj) -> bool:
    """``conditions.SetRolloutCondition``: no change for the same status and reason; the condition moves to
    the end of the list; lastTransitionTime is kept while the status stays."""
    current = get_condition(st, cond["type"])
    if current is not None and current["status"] == cond["status"] and current.get("reason") == cond["reason"]:
        return False
    if current is not None and current["status"] == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(st, cond["type"])
    st.setdefault("conditions", []).append(cond)
    return True


def remove_condition(st: JsonObj, kind: str) -> None:
    kept = [c for c in st.get("conditions") or [] if c.get("type") != kind]
    if kept:
        st["conditions"] = kept
    else:
        st.pop("conditions", None)


def get_pause_condition(st: JsonObj, reason: str) -> JsonObj | None:
    for cond in st.get("pauseConditions") or []:
        if cond.get("reason") == reason:
            return dict(cond)
    return None


def replicas_of(ro: JsonObj) -> int:
    value = (ro.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def rs_spec_replicas(rs: JsonObj | None) -> int:
    return int(((rs or {}).get("spec") or {}).get("replicas", 0) or 0)


def rs_status(rs: JsonObj | None, key: str) -> int:
    return int(((rs or {}).get("status") or {}).get(key, 0) or 0)


def rs_hash(rs: JsonObj) -> str:
    return str((rs["metadata"].get("labels") or {}).get(HASH_LABEL, ""))


def rs_revision(rs: JsonObj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def rollout_revision(ro: JsonObj) -> int:
    try:
        return int((ro["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def rollout_phase(ro: JsonObj, st: JsonObj) -> tuple[str, str]:
    """``rolloututil.CalculateRolloutPhase`` for a spec and a (new) status."""
    spec = ro.get("spec") or {}
    strategy = spec.get("strategy") or {}
    for cond in st.get("conditions") or []:
        if cond.get("type") == "InvalidSpec":
            return "Degraded", f"InvalidSpec: {cond.get('message', '')}"
        if cond.get("reason") in (ABORTED, TIMED_OUT):
            return "Degraded", f"{cond['reason']}: {cond.get('message', '')}"
    if spec.get("paused"):
        return "Paused", "manually paused"
    for pause in st.get("pauseConditions") or []:
        return "Paused", str(pause.get("reason", ""))
    current_hash = st.get("currentPodHash", "")
    fully_promoted = st.get("stableRS", "") == current_hash
    if int(st.get("updatedReplicas", 0)) < replicas_of(ro):
        return "Progressing", "more replicas need to be updated"
    if int(st.get("availableReplicas", 0)) < int(st.get("updatedReplicas", 0)):
        return "Progressing", "updated replicas are still becoming available"
    if strategy.get("blueGreen") is not None:
        active = (st.get("blueGreen") or {}).get("activeSelector", "")
        if not active or active != current_hash:
            return "Progressing", "active service cutover pending"
        if not st.get("stableRS") or not fully_promoted:
            return "Progressing", "waiting for post-promotion verification to complete"
    elif strategy.get("canary") is not None:
        if strategy["canary"].get("trafficRouting") is None and int(st.get("replicas", 0)) > int(
            st.get("updatedReplicas", 0)
        ):
            return "Progressing", "old replicas are pending termination"
        if not st.get("stableRS") or not fully_promoted:
            return "Progressing", "waiting for all steps to complete"
    return "Healthy", ""


# ------------------------------------------------------------------------------------------------------------
# the pause context (rollout/pause.go)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class PauseContext:
    old: JsonObj  # the Rollout's status as read at the start of the sync
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    clear: bool = False
    add_abort: bool = False
    remove_abort: bool = False
    abort_message: str = ""

    def is_aborted(self) -> bool:
        if self.remove_abort:
            return False
        return self.add_abort or bool(self.old.get("abort"))

    def calculate(self, st: JsonObj, now: str) -> None:
        """``CalculatePauseStatus``: abort wins; otherwise pause conditions minus removed plus added."""
        aborted_at = self.old.get("abortedAt") or now
        if self.add_abort or (not self.remove_abort and self.old.get("abort")):
            st["abort"] = True
            st["abortedAt"] = aborted_at
            return
        if self.clear:
            return
        controller_pause = bool(self.old.get("controllerPause"))
        conditions = [c for c in self.old.get("pauseConditions") or [] if c.get("reason") not in self.remove]
        existing = {c.get("reason") for c in self.old.get("pauseConditions") or []}
        for reason in self.add:
            if reason not in existing:
                conditions.append({"reason": reason, "startTime": now})
                existing.add(reason)
                controller_pause = True
        if not conditions:
            return
        if controller_pause:
            st["controllerPause"] = True
        st["pauseConditions"] = conditions


@dataclass
class _Sync:
    ro: JsonObj
    old: JsonObj  # status as read
    hash: str
    all_rss: list[JsonObj]
    new_rs: JsonObj
    stable_rs: JsonObj | None  # the ReplicaSet of status.stableRS (may be new_rs)
    pause: PauseContext
    now: datetime

    @property
    def spec(self) -> JsonObj:
        return dict(self.ro.get("spec") or {})

    @property
    def replicas(self) -> int:
        return replicas_of(self.ro)

    def stable_exists(self) -> bool:
        """``CheckStableRSExists``: a stable ReplicaSet other than the new one."""
        return self.stable_rs is not None and self.stable_rs["metadata"]["name"] != self.new_rs["metadata"]["name"]

    def other_rss(self) -> list[JsonObj]:
        skip = {self.new_rs["metadata"]["name"]}
        if self.stable_rs is not None:
            skip.add(self.stable_rs["metadata"]["name"])
        return [rs for rs in self.all_rss if rs["metadata"]["name"] not in skip]


# ------------------------------------------------------------------------------------------------------------
# the controller
# ------------------------------------------------------------------------------------------------------------


class RolloutController:
    def __init__(self, registry: Registry, recorder: EventRecorder, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._events = recorder
        self._clock = clock

    def sync_all(self) -> None:
        for ro in self._store.list(ROLLOUTS_KEY):
            if ro["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync(self._registry._served(BY_KIND["Rollout"], ro))
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    # -- common -------------------------------------------------------------------------------------------

    def _sync(self, ro: JsonObj) -> None:
        strategy = (ro.get("spec") or {}).get("strategy") or {}
        if strategy.get("canary") is None and strategy.get("blueGreen") is None:
            return  # InvalidSpec upstream; not modelled
        old = jcopy(ro.get("status") or {})
        template = (ro.get("spec") or {}).get("template") or {}
        pod_hash = template_hash(template, old.get("collisionCount"))
        namespace = ro["metadata"]["namespace"]
        uid = ro["metadata"]["uid"]
        all_rss = [rs for rs in self._store.list("apps/replicasets", namespace) if owned_by(rs, uid)]
        new_rs = next((rs for rs in all_rss if rs_hash(rs) == pod_hash), None)
        if new_rs is None:
            new_rs, ro = self._create_replicaset(ro, template, pod_hash, all_rss)
            all_rss.append(new_rs)
        stable_hash = old.get("stableRS", "")
        stable_rs = next((rs for rs in all_rss if stable_hash and rs_hash(rs) == stable_hash), None)
        c = _Sync(ro, old, pod_hash, all_rss, new_rs, stable_rs, PauseContext(old), self._clock.now())
        if strategy.get("canary") is not None:
            self._rollout_canary(c)
        else:
            self._rollout_blue_green(c)

    def _create_replicaset(
        self, ro: JsonObj, template: JsonObj, pod_hash: str, all_rss: list[JsonObj]
    ) -> tuple[JsonObj, JsonObj]:
        meta = ro["metadata"]
        revision = max([rs_revision(rs) for rs in all_rss] + [0]) + 1
        tmeta = dict(template.get("metadata") or {})
        labels = {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash}
        selector = jcopy((ro.get("spec") or {}).get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        body: JsonObj = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {REVISION: str(revision), DESIRED_REPLICAS: str(replicas_of(ro))},
                "ownerReferences": [
                    {
                        "apiVersion": "argoproj.io/v1alpha1",
                        "kind": "Rollout",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "replicas": 0,
                "selector": selector,
                "template": {**jcopy(template), "metadata": {**tmeta, "labels": labels}},
            },
        }
        min_ready = (ro.get("spec") or {}).get("minReadySeconds")
        if min_ready:
            body["spec"]["minReadySeconds"] = min_ready
        created = self._registry.controller_create("ReplicaSet", meta["namespace"], body, MANAGER)
        self._event(ro, "Normal", "NewReplicaSetCreated", f"Created ReplicaSet {created['metadata']['name']} "
                    f"(revision {revision})")
        if rollout_revision(ro) != revision:
            # syncRevision: the Rollout carries the revision of its newest ReplicaSet.
            new = jcopy(ro)
            new["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            ro = self._registry.controller_update("Rollout", ro, new, MANAGER)
        return created, ro

    def _event(self, ro: JsonObj, kind: str, reason: str, message: str) -> None:
        self._events.record(ro, "Rollout", kind, reason, message, component=COMPONENT)

    def _scale(self, c: _Sync, rs: JsonObj, replicas: int) -> bool:
        current = rs_spec_replicas(rs)
        if current == replicas:
            return False
        live = self._store.get("apps/replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
        if live is None:
            return False
        new = jcopy(live)
        new["spec"]["replicas"] = replicas
        new["metadata"].setdefault("annotations", {})[DESIRED_REPLICAS] = str(c.replicas)
        if replicas == 0:
            new["metadata"]["annotations"].pop(SCALE_DOWN_DEADLINE, None)
        self._registry.controller_update("ReplicaSet", live, new, MANAGER)
        self._event(
            c.ro,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {'up' if replicas > current else 'down'} ReplicaSet {rs['metadata']['name']} "
            f"(revision {rs_revision(rs)}) from {current} to {replicas}",
        )
        return True

    def _base_status(self, c: _Sync) -> JsonObj:
        """``calculateBaseStatus`` (plus the Paused/Resumed conditions of ``checkPausedConditions``)."""
        st: JsonObj = {
            "currentPodHash": c.hash,
            "replicas": sum(rs_status(rs, "replicas") for rs in c.all_rss),
            "updatedReplicas": rs_status(c.new_rs, "replicas"),
            "readyReplicas": sum(rs_status(rs, "readyReplicas") for rs in c.all_rss),
            "canary": {},
            "blueGreen": {},
        }
        if c.old.get("collisionCount") is not None:
            st["collisionCount"] = c.old["collisionCount"]
        if c.old.get("conditions"):
            st["conditions"] = jcopy(c.old["conditions"])
        if c.old.get("promoteFull") and c.old.get("stableRS", "") != c.hash:
            st["promoteFull"] = True
        self._paused_conditions(c, st)
        return st

    def _condition(self, kind: str, cond_status: str, reason: str, message: str, c: _Sync) -> JsonObj:
        now = format_time(c.now)
        return {"type": kind, "status": cond_status, "lastUpdateTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}

    def _paused_conditions(self, c: _Sync, st: JsonObj) -> None:
        progressing = get_condition(c.old, "Progressing")
        prog_paused = progressing is not None and progressing.get("reason") == PAUSED_REASON
        is_paused = bool(c.old.get("pauseConditions")) or bool(c.spec.get("paused"))
        abort_cond = progressing is not None and progressing.get("reason") == ABORTED
        if is_paused != prog_paused and not abort_cond:
            reason, message = (PAUSED_REASON, PAUSED_MESSAGE) if is_paused else (RESUMED_REASON, RESUMED_MESSAGE)
            set_condition(st, self._condition("Progressing", "Unknown", reason, message, c))
        if not c.old.get("abort") and abort_cond:
            set_condition(st, self._condition("Progressing", "Unknown", RETRY_REASON, RETRY_MESSAGE, c))
        paused = get_condition(c.old, "Paused")
        paused_true = paused is not None and paused.get("status") == "True"
        if is_paused != paused_true and not abort_cond:
            cond_status = "True" if is_paused else "False"
            set_condition(st, self._condition("Paused", cond_status, PAUSED_REASON, PAUSED_MESSAGE, c))

    def _healthy(self, c: _Sync, st: JsonObj) -> bool:
        """``conditions.RolloutHealthy``."""
        strategy = c.spec.get("strategy") or {}
        replicas = c.replicas
        completed = True
        if strategy.get("blueGreen") is not None:
            bg = st.get("blueGreen") or {}
            completed = bg.get("activeSelector") == st["currentPodHash"] and (
                not strategy["blueGreen"].get("previewService") or bg.get("previewSelector") == st["currentPodHash"]
            )
        if strategy.get("canary") is not None:
            steps = canary_steps(c.ro)
            all_steps = not steps or st.get("currentStepIndex") is None or st["currentStepIndex"] == len(steps)
            stable = bool(st.get("stableRS")) and st.get("stableRS") == st["currentPodHash"]
            completed = all_steps and stable and int(st.get("replicas", 0)) == replicas
        return (
            int(st.get("updatedReplicas", 0)) == replicas
            and int(st.get("availableReplicas", 0)) == replicas
            and c.old.get("observedGeneration") == str(c.ro["metadata"].get("generation", 0))
            and completed
        )

    def _progressing(self, c: _Sync, st: JsonObj) -> bool:
        """``conditions.RolloutProgressing``."""
        old = c.old
        strategy = c.spec.get("strategy") or {}
        specific = False
        if strategy.get("blueGreen") is not None:
            old_bg, new_bg = old.get("blueGreen") or {}, st.get("blueGreen") or {}
            specific = old_bg.get("activeSelector") != new_bg.get("activeSelector") or old_bg.get(
                "previewSelector"
            ) != new_bg.get("previewSelector")
        if strategy.get("canary") is not None:
            step_moved = (
                st.get("currentStepIndex") is not None
                and old.get("currentStepIndex") is not None
                and st["currentStepIndex"] != old["currentStepIndex"]
            )
            specific = (
                st.get("stableRS", "") != old.get("stableRS", "")
                or step_moved
                or st.get("currentStepHash", "") != old.get("currentStepHash", "")
            )
        old_old = int(old.get("replicas", 0)) - int(old.get("updatedReplicas", 0))
        new_old = int(st.get("replicas", 0)) - int(st.get("updatedReplicas", 0))
        return (
            int(st.get("updatedReplicas", 0)) != int(old.get("updatedReplicas", 0))
            or new_old < old_old
            or int(st.get("readyReplicas", 0)) > int(old.get("readyReplicas", 0))
            or int(st.get("availableReplicas", 0)) > int(old.get("availableReplicas", 0))
            or specific
        )

    def _timed_out(self, c: _Sync, st: JsonObj) -> bool:
        """``conditions.RolloutTimedOut`` (progress is not estimated while paused)."""
        cond = get_condition(st, "Progressing")
        if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
            return False
        if cond.get("reason") == TIMED_OUT:
            return True
        if c.old.get("pauseConditions") or c.spec.get("paused"):
            return False
        deadline = int(c.spec.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_S))
        return parse_time(str(cond.get("lastUpdateTime"))) + timedelta(seconds=deadline) < c.now

    def _indefinite_step(self, c: _Sync) -> bool:
        step, _ = current_step(c.ro)
        return step is not None and any(k in step for k in ("experiment", "analysis", "pause"))

    def _calculate_conditions(self, c: _Sync, st: JsonObj) -> None:
        """``calculateRolloutConditions``."""
        is_paused = bool(c.old.get("pauseConditions")) or bool(c.spec.get("paused"))
        aborted = c.pause.is_aborted()
        new_rs_name = c.new_rs["metadata"]["name"]
        became_unhealthy = False
        healthy = self._healthy(c, st)
        if not is_paused and healthy:
            set_condition(st, self._condition("Healthy", "True", HEALTHY_REASON, "Rollout is healthy", c))
        elif get_condition(c.old, "Healthy") is not None:
            cond = self._condition("Healthy", "False", HEALTHY_REASON, "Rollout is not healthy", c)
            became_unhealthy = set_condition(st, cond)
        if aborted:
            message = ABORTED_MESSAGE.format(rollout_revision(c.ro))
            if c.pause.abort_message:
                message = f"{message}: {c.pause.abort_message}"
            if set_condition(st, self._condition("Progressing", "False", ABORTED, message, c)):
                self._event(c.ro, "Warning", ABORTED, message)
        else:
            current = get_condition(c.old, "Progressing")
            if healthy:
                message = f'ReplicaSet "{new_rs_name}" has successfully progressed.'
                set_condition(st, self._condition("Progressing", "True", NEW_RS_AVAILABLE, message, c))
            elif self._progressing(c, st) or became_unhealthy:
                cond = self._condition("Progressing", "True", REPLICASET_UPDATED,
                                       f'ReplicaSet "{new_rs_name}" is progressing.', c)
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(st, "Progressing")
                set_condition(st, cond)
            elif not self._indefinite_step(c) and self._timed_out(c, st):
                message = f'ReplicaSet "{new_rs_name}" has timed out progressing.'
                changed = set_condition(st, self._condition("Progressing", "False", TIMED_OUT, message, c))
                if c.spec.get("progressDeadlineAbort") and (changed or not c.pause.is_aborted()):
                    c.pause.add_abort = True
                    c.pause.abort_message = message
        strategy = c.spec.get("strategy") or {}
        if strategy.get("blueGreen") is not None:
            active = self._rs_by_hash(c, (st.get("blueGreen") or {}).get("activeSelector", ""))
            available = active is not None and self._saturated(c, active)
        else:
            available = sum(rs_status(rs, "availableReplicas") for rs in c.all_rss) >= c.replicas
        if available:
            set_condition(st, self._condition("Available", "True", AVAILABLE_REASON, AVAILABLE_MESSAGE, c))
        else:
            set_condition(st, self._condition("Available", "False", AVAILABLE_REASON, NOT_AVAILABLE_MESSAGE, c))
        completed = bool(st.get("stableRS")) and st.get("stableRS") == st["currentPodHash"]
        cond = self._condition("Completed", "True" if completed else "False", COMPLETED_REASON, COMPLETED_REASON, c)
        set_condition(st, cond)

    def _persist(self, c: _Sync, st: JsonObj) -> None:
        """``calculateRolloutConditions`` + ``persistRolloutStatus``: one status write when anything changed."""
        self._calculate_conditions(c, st)
        now = format_time(c.now)
        c.pause.calculate(st, now)
        st["observedGeneration"] = str(c.ro["metadata"].get("generation", 0))
        st["phase"], message = rollout_phase(c.ro, st)
        if message:
            st["message"] = message
        for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "HPAReplicas"):
            if not st.get(key):
                st.pop(key, None)
        for key in ("stableRS", "selector", "currentStepHash"):
            if not st.get(key):
                st.pop(key, None)
        if st == c.old:
            return
        new = jcopy(c.ro)
        new["status"] = st
        self._registry.controller_update("Rollout", c.ro, new, MANAGER, subresource="status")
        was_paused, is_paused = bool(c.old.get("pauseConditions")), bool(st.get("pauseConditions"))
        if was_paused != is_paused:
            if is_paused:
                self._event(c.ro, "Normal", PAUSED_REASON,
                            f"{PAUSED_MESSAGE} ({st['pauseConditions'][0]['reason']})")
            elif not st.get("abortedAt"):
                self._event(c.ro, "Normal", RESUMED_REASON, RESUMED_MESSAGE)

    def _promote_stable(self, c: _Sync, st: JsonObj, reason: str) -> None:
        """``promoteStable``."""
        c.pause.clear = True
        c.pause.remove_abort = True
        st.pop("promoteFull", None)
        if (c.spec.get("strategy") or {}).get("canary") is not None:
            steps = canary_steps(c.ro)
            if steps:
                st["currentStepIndex"] = len(steps)
            else:
                st.pop("currentStepIndex", None)
        if st.get("stableRS", "") != st["currentPodHash"]:
            st["stableRS"] = st["currentPodHash"]
            self._event(c.ro, "Normal", COMPLETED_REASON, f"Rollout completed update to revision "
                        f"{rollout_revision(c.ro)} ({st['currentPodHash']}): {reason}")

    def _reset(self, c: _Sync, st: JsonObj) -> None:
        """``resetRolloutStatus``."""
        c.pause.clear = True
        c.pause.remove_abort = True
        st.pop("promoteFull", None)
        if canary_steps(c.ro):
            st["currentStepIndex"] = 0
        else:
            st.pop("currentStepIndex", None)

    def _rs_by_hash(self, c: _Sync, pod_hash: str) -> JsonObj | None:
        return next((rs for rs in c.all_rss if pod_hash and rs_hash(rs) == pod_hash), None)

    def _saturated(self, c: _Sync, rs: JsonObj) -> bool:
        """``annotations.IsSaturated``."""
        return rs_spec_replicas(rs) == c.replicas and rs_status(rs, "availableReplicas") == c.replicas

    def _scale_down_delayed(self, c: _Sync, rs: JsonObj, delay_s: int) -> bool:
        """``scaleDownDelayHelper``: annotate a scale-down deadline, scale to 0 once it passed."""
        if rs_spec_replicas(rs) == 0:
            return False
        if delay_s <= 0:
            return self._scale(c, rs, 0)
        deadline = (rs["metadata"].get("annotations") or {}).get(SCALE_DOWN_DEADLINE)
        if deadline is None:
            live = self._store.get("apps/replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
            if live is not None:
                new = jcopy(live)
                when = format_time(c.now + timedelta(seconds=delay_s))
                new["metadata"].setdefault("annotations", {})[SCALE_DOWN_DEADLINE] = when
                self._registry.controller_update("ReplicaSet", live, new, MANAGER)
            return False
        if parse_time(deadline) <= c.now:
            return self._scale(c, rs, 0)
        return False

    # -- canary -------------------------------------------------------------------------------------------

    def _template_or_steps_changed(self, c: _Sync) -> bool:
        """``PodTemplateOrStepsChanged`` (never on the very first sync: currentPodHash is still empty)."""
        if c.old.get("currentStepHash") and c.old["currentStepHash"] != step_hash(c.ro):
            return True
        return bool(c.old.get("currentPodHash")) and c.old["currentPodHash"] != c.hash

    def _canary_counts(self, c: _Sync) -> tuple[int, int]:
        """``DesiredReplicaCountsForCanary`` with ``GetCanaryReplicasOrWeight``."""
        replicas = c.replicas
        if c.old.get("promoteFull") or c.old.get("currentPodHash") == c.old.get("stableRS"):
            weight = 100
        else:
            weight = current_set_weight(c.ro)
        new = math.ceil(replicas * weight / 100)
        stable = math.ceil(replicas * (1 - weight / 100))
        if not c.stable_exists():
            new, stable = replicas, 0
        if (c.spec.get("strategy") or {}).get("canary", {}).get("trafficRouting") is not None:
            stable = replicas
        return new, stable

    def _rollout_canary(self, c: _Sync) -> None:
        steps = canary_steps(c.ro)
        step_count = len(steps)
        if not self._template_or_steps_changed(c):
            if not self._reconcile_stable_and_canary_service(c):
                return  # upstream: the sync fails (Service not found) until the named Services exist
            scaled = self._reconcile_canary_replicasets(c)
            if not scaled:
                self._reconcile_canary_pause(c)
        st = self._base_status(c)
        st["availableReplicas"] = sum(rs_status(rs, "availableReplicas") for rs in c.all_rss)
        st["HPAReplicas"] = sum(rs_status(rs, "replicas") for rs in c.all_rss)
        st["selector"] = selector_string(c.spec.get("selector"))
        st["stableRS"] = c.old.get("stableRS", "")
        st["currentStepHash"] = step_hash(c.ro)
        _, index = current_step(c.ro)
        if self._template_or_steps_changed(c):
            self._reset(c, st)
            if step_count and c.old.get("stableRS") == c.hash:
                self._event(c.ro, "Normal", "SkipSteps", "Rollback to stable ReplicaSets")
                st["currentStepIndex"] = step_count
            self._persist(c, st)
            return
        if c.old.get("promoteFull"):
            c.pause.clear = True
            c.pause.remove_abort = True
            if step_count:
                index = step_count
        reason = self._should_full_promote_canary(c)
        if reason:
            self._promote_stable(c, st, reason)
            self._canary_weights(c, st)
            self._persist(c, st)
            return
        if c.pause.is_aborted():
            if step_count:
                st["currentStepIndex"] = step_count if st.get("stableRS") == c.hash else 0
            self._canary_weights(c, st)
            self._persist(c, st)
            return
        step, _ = current_step(c.ro)
        if index is not None and step is not None and self._completed_canary_step(c, step):
            index += 1
            self._event(c.ro, "Normal", "RolloutStepCompleted",
                        f"Rollout step {index}/{step_count} completed ({step_string(step)})")
            c.pause.remove.append(CANARY_PAUSE)
        if index is not None:
            st["currentStepIndex"] = index
        self._canary_weights(c, st)
        self._persist(c, st)

    def _reconcile_stable_and_canary_service(self, c: _Sync) -> bool:
        """``reconcileStableAndCanaryService`` (rollout/service.go, for every canary Rollout, basic or with
        trafficRouting): ``ensureSVCTargets`` points ``stableService`` at the stable ReplicaSet and
        ``canaryService`` at the new one, each only once that ReplicaSet is available
        (``IsReplicaSetAvailable``: scaled up and every replica available). False when a named Service is
        missing (upstream the sync ends with that error)."""
        canary = (c.spec.get("strategy") or {}).get("canary") or {}
        namespace = c.ro["metadata"]["namespace"]
        for key, rs in (("stableService", c.stable_rs), ("canaryService", c.new_rs)):
            name = str(canary.get(key) or "")
            if rs is None or not name:
                continue
            svc = self._service(namespace, name)
            if svc is None:
                return False
            current = ((svc.get("spec") or {}).get("selector") or {}).get(HASH_LABEL, "")
            wanted = rs_hash(rs)
            if current == wanted:
                continue
            replicas = rs_spec_replicas(rs)
            if not (replicas != 0 and rs_status(rs, "availableReplicas") != 0
                    and replicas <= rs_status(rs, "availableReplicas")):
                continue  # "delaying service switch ...: ReplicaSet not fully available"
            self._switch_selector(c, svc, wanted)
        return True

    def _canary_weights(self, c: _Sync, st: JsonObj) -> None:
        """``status.canary.weights``: recorded only with trafficRouting (what the router was told)."""
        canary = (c.spec.get("strategy") or {}).get("canary") or {}
        if canary.get("trafficRouting") is None:
            return
        fully_promoted = st.get("stableRS") == c.hash
        weight = 0 if fully_promoted or c.pause.is_aborted() else current_set_weight(c.ro)
        st["canary"]["weights"] = {
            "canary": {"weight": weight, "serviceName": canary.get("canaryService", ""), "podTemplateHash": c.hash},
            "stable": {
                "weight": 100 - weight,
                "serviceName": canary.get("stableService", ""),
                "podTemplateHash": st.get("stableRS", ""),
            },
        }

    def _reconcile_canary_replicasets(self, c: _Sync) -> bool:
        """``reconcileCanaryReplicaSets``: stable first, then the new ReplicaSet, then the others."""
        if c.spec.get("paused"):
            return False
        desired_new, desired_stable = self._canary_counts(c)
        if c.stable_exists() and c.stable_rs is not None and self._scale(c, c.stable_rs, desired_stable):
            return True
        if self._scale(c, c.new_rs, desired_new):
            return True
        scaled = False
        for rs in c.other_rss():
            scaled = self._scale(c, rs, 0) or scaled
        return scaled

    def _reconcile_canary_pause(self, c: _Sync) -> None:
        """``reconcileCanaryPause``: a pause step adds the CanaryPauseStep condition once."""
        if c.spec.get("paused") or c.old.get("promoteFull"):
            return
        step, _ = current_step(c.ro)
        if step is None or "pause" not in step:
            return
        if get_pause_condition(c.old, CANARY_PAUSE) is None and not c.old.get("controllerPause"):
            c.pause.add.append(CANARY_PAUSE)

    def _at_desired_counts(self, c: _Sync) -> bool:
        """``AtDesiredReplicaCountsForCanary``."""
        desired_new, desired_stable = self._canary_counts(c)
        if rs_spec_replicas(c.new_rs) != desired_new or rs_status(c.new_rs, "availableReplicas") != desired_new:
            return False
        stable = c.stable_rs if c.stable_exists() else None
        if stable is None or rs_spec_replicas(stable) != desired_stable:
            return False
        if rs_status(stable, "availableReplicas") != desired_stable:
            return False
        return sum(rs_status(rs, "availableReplicas") for rs in c.other_rss()) == 0

    def _completed_canary_step(self, c: _Sync, step: JsonObj) -> bool:
        """``completedCurrentCanaryStep``."""
        if c.spec.get("paused"):
            return False
        if "pause" in step:
            cond = get_pause_condition(c.old, CANARY_PAUSE)
            if c.old.get("controllerPause") and cond is None:
                return True  # a person (or `kubectl argo rollouts promote`) cleared the pause condition
            duration = pause_duration_s(step.get("pause") or {})
            if duration is not None and cond is not None:
                return parse_time(cond["startTime"]) + timedelta(seconds=duration) < c.now
            return False
        if "setWeight" in step or "setCanaryScale" in step:
            return self._at_desired_counts(c)
        # analysis, experiment, setHeaderRoute, setMirrorRoute, plugin: no AnalysisRuns in the fake.
        return True

    def _should_full_promote_canary(self, c: _Sync) -> str:
        """``shouldFullPromote`` for canary."""
        if c.stable_rs is None:
            return "Initial deploy"
        if c.pause.is_aborted():
            return ""
        if rs_status(c.new_rs, "availableReplicas") != c.replicas:
            return ""
        if c.old.get("promoteFull"):
            return "Full promotion requested"
        steps = canary_steps(c.ro)
        _, index = current_step(c.ro)
        if not steps or index == len(steps):
            return f"Completed all {len(steps)} canary steps"
        return ""

    # -- blue-green ---------------------------------------------------------------------------------------

    def _service(self, namespace: str, name: str) -> JsonObj | None:
        return self._store.get("/services", namespace, name) if name else None

    def _switch_selector(self, c: _Sync, svc: JsonObj, pod_hash: str) -> None:
        """``switchServiceSelector``: a strategic merge patch, with the managed-by annotation the first time."""
        selector = dict((svc.get("spec") or {}).get("selector") or {})
        managed = MANAGED_BY in (svc["metadata"].get("annotations") or {})
        old_hash = selector.get(HASH_LABEL, "")
        if HASH_LABEL in selector and old_hash == pod_hash and managed:
            return
        doc: JsonObj = {"spec": {"selector": {HASH_LABEL: pod_hash}}}
        if not managed:
            doc = {"metadata": {"annotations": {MANAGED_BY: c.ro["metadata"]["name"]}}, **doc}
        meta = svc["metadata"]
        result = self._registry.patch(
            BY_KIND["Service"], meta["namespace"], meta["name"], "strategic", doc, WriteOptions(manager=MANAGER)
        )
        svc.clear()
        svc.update(result.obj)
        self._event(c.ro, "Normal", "SwitchService",
                    f"Switched selector for service '{meta['name']}' from '{old_hash}' to '{pod_hash}'")

    def _fast_tracked(self, c: _Sync, active_hash: str) -> bool:
        """``isBlueGreenFastTracked``."""
        if SCALE_DOWN_DEADLINE in (c.new_rs["metadata"].get("annotations") or {}):
            return True
        if c.old.get("promoteFull"):
            return True
        return not active_hash or active_hash == c.hash

    def _needs_controller_pause(self, c: _Sync) -> bool:
        bg = (c.spec.get("strategy") or {}).get("blueGreen") or {}
        if bg.get("autoPromotionEnabled") is False:
            return True
        return int(bg.get("autoPromotionSeconds", 0) or 0) > 0

    def _completed_blue_green_pause(self, c: _Sync) -> bool:
        """``CompletedBlueGreenPause``."""
        if c.pause.add:
            return False
        if not self._needs_controller_pause(c):
            return True
        bg = (c.spec.get("strategy") or {}).get("blueGreen") or {}
        cond = get_pause_condition(c.old, BLUE_GREEN_PAUSE)
        if bg.get("autoPromotionEnabled") is not False:
            seconds = int(bg.get("autoPromotionSeconds", 0) or 0)
            if seconds == 0:
                return True
            if cond is not None:
                return parse_time(cond["startTime"]) + timedelta(seconds=seconds) < c.now
            return False
        if c.old.get("controllerPause"):
            return cond is None
        return False

    def _ready_for_pause(self, c: _Sync) -> bool:
        return rs_status(c.new_rs, "availableReplicas") == c.replicas

    def _rollout_blue_green(self, c: _Sync) -> None:
        bg = (c.spec.get("strategy") or {}).get("blueGreen") or {}
        namespace = c.ro["metadata"]["namespace"]
        active = self._service(namespace, str(bg.get("activeService", "")))
        preview = self._service(namespace, str(bg.get("previewService", "")))
        if active is None or (bg.get("previewService") and preview is None):
            return  # upstream: an error condition until the Services exist; not modelled
        halted = bool(c.spec.get("paused"))
        if preview is not None and not halted:
            self._switch_selector(c, preview, c.hash)
        changed = bool(c.old.get("currentPodHash")) and c.old["currentPodHash"] != c.hash
        if not changed:
            self._reconcile_blue_green_replicasets(c, active)
            self._reconcile_blue_green_pause(c, active)
            self._reconcile_active_service(c, active, halted)
        self._sync_status_blue_green(c, active, preview, changed)

    def _reconcile_blue_green_replicasets(self, c: _Sync, active: JsonObj) -> None:
        active_hash = ((active.get("spec") or {}).get("selector") or {}).get(HASH_LABEL, "")
        active_rs = self._rs_by_hash(c, active_hash)
        if active_rs is not None:
            self._scale(c, active_rs, c.replicas)
        bg = (c.spec.get("strategy") or {}).get("blueGreen") or {}
        if c.pause.is_aborted() and active_rs is not c.new_rs:
            delay = int(bg.get("abortScaleDownDelaySeconds", DEFAULT_ABORT_SCALE_DOWN_DELAY_S))
            if delay > 0:
                self._scale_down_delayed(c, c.new_rs, delay)
        else:
            self._scale(c, c.new_rs, c.replicas)
        referenced = {active_hash, c.old.get("stableRS", ""), c.hash}
        delay = int(bg.get("scaleDownDelaySeconds", DEFAULT_SCALE_DOWN_DELAY_S))
        for rs in c.all_rss:
            if rs_hash(rs) not in referenced:
                self._scale_down_delayed(c, rs, delay)

    def _reconcile_blue_green_pause(self, c: _Sync, active: JsonObj) -> None:
        """``reconcileBlueGreenPause``."""
        if c.old.get("abort") or not self._ready_for_pause(c) or c.spec.get("paused"):
            return
        active_hash = ((active.get("spec") or {}).get("selector") or {}).get(HASH_LABEL, "")
        if self._fast_tracked(c, active_hash) or not self._needs_controller_pause(c):
            c.pause.remove.append(BLUE_GREEN_PAUSE)
            return
        if get_pause_condition(c.old, BLUE_GREEN_PAUSE) is not None:
            if self._completed_blue_green_pause(c):
                c.pause.remove.append(BLUE_GREEN_PAUSE)
        elif not c.old.get("controllerPause"):
            c.pause.add.append(BLUE_GREEN_PAUSE)

    def _reconcile_active_service(self, c: _Sync, active: JsonObj, halted: bool) -> None:
        """``reconcileActiveService``: the switch happens once the pause is over (or was never needed)."""
        if halted or not self._ready_for_pause(c) or not self._saturated(c, c.new_rs):
            return
        active_hash = ((active.get("spec") or {}).get("selector") or {}).get(HASH_LABEL, "")
        new_hash = active_hash
        if self._fast_tracked(c, active_hash) or self._completed_blue_green_pause(c):
            new_hash = c.hash
        if c.old.get("abort"):
            new_hash = c.old.get("stableRS", "")
        if new_hash:
            self._switch_selector(c, active, new_hash)

    def _sync_status_blue_green(self, c: _Sync, active: JsonObj, preview: JsonObj | None, changed: bool) -> None:
        """``syncRolloutStatusBlueGreen``."""
        st = self._base_status(c)
        st["stableRS"] = c.old.get("stableRS", "")
        if changed:
            self._reset(c, st)
        if c.old.get("promoteFull"):
            c.pause.clear = True
            c.pause.remove_abort = True
        bg_status: JsonObj = {}
        preview_hash = ((preview or {}).get("spec") or {}).get("selector", {}).get(HASH_LABEL, "")
        active_hash = ((active.get("spec") or {}).get("selector") or {}).get(HASH_LABEL, "")
        if preview_hash:
            bg_status["previewSelector"] = preview_hash
        if active_hash:
            bg_status["activeSelector"] = active_hash
        st["blueGreen"] = bg_status
        reason = self._should_full_promote_blue_green(c, st)
        if reason:
            self._promote_stable(c, st, reason)
        active_rs = self._rs_by_hash(c, active_hash)
        if active_rs is not None:
            st["HPAReplicas"] = rs_status(active_rs, "replicas")
            st["selector"] = selector_string((active_rs.get("spec") or {}).get("selector"))
            st["availableReplicas"] = rs_status(active_rs, "availableReplicas")
            st["readyReplicas"] = rs_status(active_rs, "readyReplicas")
        else:
            st["HPAReplicas"] = sum(rs_status(rs, "replicas") for rs in c.all_rss)
            st["selector"] = selector_string(c.spec.get("selector"))
            st["availableReplicas"] = sum(rs_status(rs, "availableReplicas") for rs in c.all_rss)
        self._persist(c, st)

    def _should_full_promote_blue_green(self, c: _Sync, st: JsonObj) -> str:
        if c.stable_rs is None:
            return "Initial deploy"
        active = (st.get("blueGreen") or {}).get("activeSelector", "")
        if not active:
            return "Initial deploy"
        if active != st["currentPodHash"]:
            return ""
        if c.old.get("promoteFull"):
            return "Full promotion requested"
        if c.pause.is_aborted():
            return ""
        return "Completed blue-green update"
