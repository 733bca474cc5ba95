"""Scheduler + kubelet for one simulated node, shaped like the recorded kwok node.

Scheduling binds a pod to ``kwok-node-0`` (``Scheduled`` event). The kubelet then starts it through the
pod runtime and turns what the runtime reports into pod status the way kwok/kubelet write it (condition
order Initialized, Ready, ContainersReady, PodScheduled; ``lastProbeTime: null``; ``imageID: ""``), counts
restarts with a crash-loop back-off, and writes the kubelet's Warning events (BackOff, Failed, Unhealthy)
so a client can tell *why* a pod is not ready. At most one pod per owner starts per round, so a rollout
becomes ready one pod per status write, as in the recording.
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
        new_status: JsonObj = {
            "phase": phase,
            "conditions": [
                self._cond(record, "Initialized", True, now),
                self._cond(record, "Ready", all_ready, now, unready),
                self._cond(record, "ContainersReady", all_ready, now, unready),
                self._cond(record, "PodScheduled", True, now),
            ],
            "hostIP": HOST_IP,
            "podIP": record.ip,
            "podIPs": [{"ip": record.ip}],
            "startTime": record.started_at,
            "containerStatuses": statuses,
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
        }
        if new_status == pod.get("status"):
            return
        new = jcopy(pod)
        new["status"] = new_status
        self._registry.controller_update("Pod", pod, new, MANAGER, subresource="status")

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
