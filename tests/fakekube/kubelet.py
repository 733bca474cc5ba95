"""Scheduler + kubelet for one simulated node, shaped like the recorded kwok node.

Scheduling binds a pod to ``kwok-node-0`` (``Scheduled`` event). The kubelet then starts it through the
pod runtime and turns what the runtime reports into pod status the way kwok/kubelet write it (condition
order Initialized, Ready, ContainersReady, PodScheduled; ``lastProbeTime: null``; ``imageID: ""``), counts
restarts with a crash-loop back-off, and writes the kubelet's Warning events (BackOff, Failed, Unhealthy)
so a client can tell *why* a pod is not ready. At most one pod per owner starts per round, so a rollout
becomes ready one pod per status write, as in the recording.

A container that exits is restarted (with back-off) under ``restartPolicy: Always``, and under ``OnFailure``
when its exit code is not 0. Otherwise the pod is finished, as the kubelet's ``getPhase`` decides: phase
``Succeeded`` (exit 0) or ``Failed``, the container ``terminated`` (reason ``Completed`` or ``Error``), Ready and
ContainersReady False with reason ``PodCompleted``/``PodFailed`` (``GeneratePodReadyCondition``), Initialized with
reason ``PodCompleted`` for a succeeded pod. A finished pod is never started again; it keeps its IP in status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import status
from .clock import Clock
from .events import EventRecorder
from .gotime import format_time
from .registry import Registry
from .resources import BY_KIND
from .runtime import PodRuntime, PodRuntimeStatus
from .store import jcopy

JsonObj = dict[str, Any]

NODE_NAME = "kwok-node-0"
HOST_IP = "10.244.255.1"
MANAGER = "kubelet"


def go_duration(seconds: float) -> str:
    secs = int(seconds)
    if secs < 60:
        return f"{secs}s"
    return f"{secs // 60}m{secs % 60}s"


@dataclass
class _PodRecord:
    pod: JsonObj
    ip: str
    started_at: str
    restart_count: int = 0
    backoff_step: int = 0
    backoff_until: float = 0.0
    crashed: bool = False
    last_terminated: JsonObj | None = None
    attempt_started: str = ""
    last_reason: str = ""
    last_probe_event: float = -1e9
    transitions: dict[str, str] = field(default_factory=dict)
    # Set once the pod is finished (run-to-completion containers): "Succeeded" or "Failed".
    final_phase: str = ""
    final_state: JsonObj | None = None


class Kubelet:
    # Crash-loop back-off of the fake, in real seconds: base doubling up to the cap. Messages show the real
    # kubelet's 10s/20s/.../5m0s steps so clients parse what they would see on a cluster.
    BACKOFF_BASE_S = 0.1
    BACKOFF_CAP_S = 1.0
    PROBE_EVENT_INTERVAL_S = 0.5

    def __init__(self, registry: Registry, recorder: EventRecorder, runtime: PodRuntime, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._events = recorder
        self._runtime = runtime
        self._clock = clock
        self._records: dict[str, _PodRecord] = {}

    # -- round entry point -----------------------------------------------------------------------------------

    def sync(self) -> None:
        pods = self._store.list("/pods")
        live_uids = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._records if u not in live_uids]:
            record = self._records.pop(uid)
            self._runtime.stop(record.pod)
        started_owners: set[str] = set()
        for pod in pods:
            try:
                self._sync_pod(pod, started_owners)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise

    def stop_all(self) -> None:
        for record in self._records.values():
            self._runtime.stop(record.pod)
        self._records.clear()

    def _sync_pod(self, pod: JsonObj, started_owners: set[str]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            record = self._records.pop(uid, None)
            if record is not None:
                self._runtime.stop(record.pod)
            if self._reports_killed(pod):
                # A finalizer (the Job controller's) waits for the terminal phase: the killed container ends the
                # pod Failed, as the kubelet (or, for a pod that never ran, the pod GC) reports it.
                now = format_time(self._clock.now())
                ip = str((pod.get("status") or {}).get("podIP", ""))
                record = record or _PodRecord(pod=pod, ip=ip, started_at=now, attempt_started=now)
                record.final_phase = "Failed"
                record.final_state = {"exitCode": 143, "reason": "Error", "startedAt": record.attempt_started,
                                      "finishedAt": now}
                self._write_final_status(pod, record)
            if not meta.get("finalizers"):
                self._registry.finalize_delete(BY_KIND["Pod"], pod)
            return
        if not (pod.get("spec") or {}).get("nodeName"):
            pod = self._bind(pod)
        record = self._records.get(uid)
        if record is None:
            owner = next((r.get("uid") for r in meta.get("ownerReferences") or []), uid)
            if owner in started_owners:
                return
            started_owners.add(owner)
            ip = self._runtime.start(pod)
            now = format_time(self._clock.now())
            record = _PodRecord(pod=pod, ip=ip, started_at=now, attempt_started=now)
            self._records[uid] = record
        record.pod = pod
        if record.final_phase:
            self._write_final_status(pod, record)
            return
        self._update(pod, record, self._runtime.poll(pod))

    # -- scheduling ------------------------------------------------------------------------------------------

    def _bind(self, pod: JsonObj) -> JsonObj:
        new = jcopy(pod)
        new["spec"]["nodeName"] = NODE_NAME
        now = format_time(self._clock.now())
        new.setdefault("status", {})["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        ]
        bound = self._registry.controller_replace("Pod", pod, new, "kube-scheduler")
        self._events.scheduled(bound, NODE_NAME)
        return bound

    # -- status ----------------------------------------------------------------------------------------------

    def _update(self, pod: JsonObj, record: _PodRecord, st: PodRuntimeStatus) -> None:
        mono = self._clock.monotonic()
        now = format_time(self._clock.now())
        containers = (pod.get("spec") or {}).get("containers") or []
        affected = st.container
        if not st.running and st.exit_code is not None and not record.crashed and self._finishes(pod, st):
            record.final_phase = "Succeeded" if st.exit_code == 0 else "Failed"
            record.final_state = {
                "exitCode": st.exit_code,
                "reason": "Completed" if st.exit_code == 0 else (st.reason or "Error"),
                "startedAt": record.attempt_started,
                "finishedAt": now,
            }
            self._write_final_status(pod, record)
            return
        if not st.running and st.exit_code is not None and not record.crashed:
            record.crashed = True
            record.restart_count += 1
            delay = min(self.BACKOFF_BASE_S * (2**record.backoff_step), self.BACKOFF_CAP_S)
            record.backoff_until = mono + delay
            record.backoff_step += 1
            record.last_terminated = {
                "exitCode": st.exit_code,
                "reason": st.reason or "Error",
                "startedAt": record.attempt_started,
                "finishedAt": now,
            }
            name = affected or (containers[0]["name"] if containers else "")
            self._events.record(
                pod,
                "Pod",
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {name} in pod "
                f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                component="kubelet",
                host=NODE_NAME,
                field_path=f"spec.containers{{{name}}}",
            )
        elif record.crashed and mono >= record.backoff_until:
            record.crashed = False
            record.attempt_started = now
            self._runtime.restart(pod)
            st = self._runtime.poll(pod)
        self._emit_events(pod, record, st, containers)
        statuses = []
        all_ready = True
        for container in containers:
            name = container["name"]
            hit = affected is None or affected == name
            state, ready = self._container_state(pod, record, st if hit else PodRuntimeStatus(True, True), name)
            all_ready &= ready
            cs: JsonObj = {
                "name": name,
                "state": state,
                "lastState": {"terminated": dict(record.last_terminated)} if hit and record.last_terminated else {},
                "ready": ready,
                "restartCount": record.restart_count if hit else 0,
                "image": container.get("image", ""),
                "imageID": "",
            }
            statuses.append(cs)
        started = st.running or record.restart_count > 0
        phase = "Running" if started else "Pending"
        unready = [c["name"] for c in statuses if not c["ready"]]
        conditions = [
            self._cond(record, "Initialized", True, now),
            self._cond(record, "Ready", all_ready, now, unready),
            self._cond(record, "ContainersReady", all_ready, now, unready),
            self._cond(record, "PodScheduled", True, now),
        ]
        self._store_status(pod, record, phase, conditions, statuses)

    def _store_status(
        self, pod: JsonObj, record: _PodRecord, phase: str, conditions: list[JsonObj], statuses: list[JsonObj]
    ) -> None:
        """Write the pod's status in the kubelet's shape (a no-op when nothing changed)."""
        new_status: JsonObj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": HOST_IP,
            "podIP": record.ip,
            "podIPs": [{"ip": record.ip}],
            "startTime": record.started_at,
            "containerStatuses": statuses,
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
        }
        if not record.ip:  # killed before it ever ran
            del new_status["podIP"], new_status["podIPs"]
        if new_status == pod.get("status"):
            return
        new = jcopy(pod)
        new["status"] = new_status
        self._registry.controller_update("Pod", pod, new, MANAGER, subresource="status")

    @staticmethod
    def _reports_killed(pod: JsonObj) -> bool:
        """Whether a deleted pod is reported with a Failed phase: only a pod not finished yet, that something still
        waits on (finalizers), and that is not restarted (restartPolicy Always pods keep the fake's historical
        behaviour: they vanish with their last status)."""
        return (
            (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and bool(pod["metadata"].get("finalizers"))
            and (pod.get("spec") or {}).get("restartPolicy", "Always") != "Always"
        )

    @staticmethod
    def _finishes(pod: JsonObj, st: PodRuntimeStatus) -> bool:
        """Whether this exit ends the pod: no restart under Never, nor under OnFailure after exit code 0. The
        runtimes report a pod as a whole, so only a single-container pod (or a whole-pod exit) finishes."""
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and st.exit_code != 0):
            return False
        return st.container is None or len(spec.get("containers") or []) == 1

    def _write_final_status(self, pod: JsonObj, record: _PodRecord) -> None:
        now = format_time(self._clock.now())
        phase = record.final_phase
        reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        terminated = dict(record.final_state or {})
        initialized = self._cond(record, "Initialized", True, now)
        if phase == "Succeeded":
            initialized["reason"] = "PodCompleted"
        statuses = [
            {
                "name": container["name"],
                "state": {"terminated": terminated},
                "lastState": {"terminated": dict(record.last_terminated)} if record.last_terminated else {},
                "ready": False,
                "restartCount": record.restart_count,
                "image": container.get("image", ""),
                "imageID": "",
            }
            for container in (pod.get("spec") or {}).get("containers") or []
        ]
        conditions = [
            initialized,
            {**self._cond(record, "Ready", False, now), "reason": reason},
            {**self._cond(record, "ContainersReady", False, now), "reason": reason},
            self._cond(record, "PodScheduled", True, now),
        ]
        self._store_status(pod, record, phase, conditions, statuses)

    def _cond(
        self, record: _PodRecord, cond_type: str, ok: bool, now: str, unready: list[str] | None = None
    ) -> JsonObj:
        value = "True" if ok else "False"
        key = f"{cond_type}={value}"
        since = record.transitions.get(key)
        if since is None:
            record.transitions = {k: v for k, v in record.transitions.items() if not k.startswith(f"{cond_type}=")}
            record.transitions[key] = since = now
        cond: JsonObj = {
            "type": cond_type,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        if not ok and unready is not None:
            cond["reason"] = "ContainersNotReady"
            cond["message"] = f"containers with unready status: [{' '.join(unready)}]"
        return cond

    def _container_state(
        self, pod: JsonObj, record: _PodRecord, st: PodRuntimeStatus, name: str
    ) -> tuple[JsonObj, bool]:
        meta = pod["metadata"]
        if record.crashed:
            step = max(record.backoff_step - 1, 0)
            shown = go_duration(min(10 * (2**step), 300))
            message = (
                f"back-off {shown} restarting failed container={name} "
                f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"
            )
            return {"waiting": {"reason": "CrashLoopBackOff", "message": message}}, False
        if st.running:
            return {"running": {"startedAt": record.attempt_started}}, st.ready
        waiting: JsonObj = {"reason": st.reason or "ContainerCreating"}
        if st.message:
            waiting["message"] = st.message
        return {"waiting": waiting}, False

    def _emit_events(self, pod: JsonObj, record: _PodRecord, st: PodRuntimeStatus, containers: list[JsonObj]) -> None:
        name = st.container or (containers[0]["name"] if containers else "")
        field_path = f"spec.containers{{{name}}}"
        image = next((c.get("image", "") for c in containers if c.get("name") == name), "")
        reason = "" if st.running else (st.reason or "")
        if reason != record.last_reason:
            record.last_reason = reason
            if reason == "ErrImagePull":
                self._kubelet_event(pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path)
                self._kubelet_event(
                    pod,
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": {st.message or "not found"}',
                    field_path,
                )
                self._kubelet_event(pod, "Warning", "Failed", "Error: ErrImagePull", field_path)
            elif reason == "ImagePullBackOff":
                self._kubelet_event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', field_path)
                self._kubelet_event(pod, "Warning", "Failed", "Error: ImagePullBackOff", field_path)
        if st.running and not st.ready and st.message:
            mono = self._clock.monotonic()
            if mono - record.last_probe_event >= self.PROBE_EVENT_INTERVAL_S:
                record.last_probe_event = mono
                self._kubelet_event(pod, "Warning", "Unhealthy", st.message, field_path)

    def _kubelet_event(self, pod: JsonObj, event_type: str, reason: str, message: str, field_path: str) -> None:
        self._events.record(
            pod,
            "Pod",
            event_type,
            reason,
            message,
            component="kubelet",
            host=NODE_NAME,
            field_path=field_path,
        )
