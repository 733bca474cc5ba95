"""Is a Deployment's rollout finished, and if not, why: what a person would read in kubectl describe."""

from __future__ import annotations

from typing import Any

# Waiting reasons that will not cure themselves by waiting out the whole deadline.
HOPELESS_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                    "CreateContainerError"}
CRASHLOOP_RESTARTS = 3


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """kubectl rollout status' rule: the controller saw this generation and every replica is new and available."""
    spec_replicas = int(deployment["spec"].get("replicas", 1))
    status = deployment.get("status") or {}
    return (int(status.get("observedGeneration", 0)) >= int(deployment["metadata"].get("generation", 0))
            and int(status.get("updatedReplicas", 0)) == spec_replicas
            and int(status.get("replicas", 0)) == spec_replicas
            and int(status.get("availableReplicas", 0)) == spec_replicas)


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return str(condition.get("message") or "progress deadline exceeded")
    return None


def describe_progress(deployment: dict[str, Any]) -> str:
    status = deployment.get("status") or {}
    replicas = int(deployment["spec"].get("replicas", 1))
    return (f"{status.get('updatedReplicas', 0)}/{replicas} updated, {status.get('availableReplicas', 0)}/"
            f"{replicas} available")


def still_waiting_for(deployment: dict[str, Any], pods: list[dict[str, Any]], problems: list[str], *,
                      ready_for_s: float | None, min_ready_s: float) -> str:
    """What a wait was still waiting for when its deadline fell, in words that match what the pods show.

    `ready_for_s`: how long the rollout has been complete with no restart (None: it is not complete).
    """
    if problems:
        return "; ".join(problems)
    if not pods:
        return "no pod was created"
    ready = sum(_ready(pod) for pod in pods)
    if ready_for_s is not None:
        replicas = int(deployment["spec"].get("replicas", 1))
        return (f"{ready}/{replicas} pods ready but not yet for min_ready_s={min_ready_s:g}s "
                f"(ready for {ready_for_s:.1f}s)")
    status = deployment.get("status") or {}
    return (f"all {len(pods)} pods ready, but the Deployment does not count the rollout as complete yet "
            f"(observed generation {status.get('observedGeneration', 0)} of "
            f"{deployment['metadata'].get('generation', 0)}, {status.get('replicas', 0)} replicas in total)")


def pod_problems(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """One line per pod that is not ready, with the container's reason and the pod's latest warning event."""
    latest_warning: dict[str, str] = {}
    for event in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        if event.get("type") == "Warning":
            name = (event.get("involvedObject") or {}).get("name", "")
            latest_warning[name] = f"{event.get('reason')}: {event.get('message', '').strip()}"
    lines = []
    for pod in pods:
        name = pod["metadata"]["name"]
        if _ready(pod):
            continue
        reason = _container_reason(pod) or f"phase {(pod.get('status') or {}).get('phase', 'Pending')}, not ready"
        warning = latest_warning.get(name)
        lines.append(f"pod {name}: {reason}" + (f" (event {warning})" if warning else ""))
    return lines


def restart_count(pods: list[dict[str, Any]]) -> int:
    return sum(count for _, count in pod_restarts(pods))


def pod_restarts(pods: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
    """(pod name, restarts of all its containers) for each pod: WorkloadStatus.restarts."""
    return tuple((str(pod["metadata"]["name"]),
                  sum(int(status.get("restartCount", 0))
                      for status in (pod.get("status") or {}).get("containerStatuses") or []))
                 for pod in pods)


def hopeless_reason(pods: list[dict[str, Any]]) -> str | None:
    """A reason to stop waiting early: an image that cannot be pulled, a container in a crash loop."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in HOPELESS_WAITING:
                return f"pod {pod['metadata']['name']}: {reason}: {waiting.get('message', '').strip()}"
            if reason == "CrashLoopBackOff" and int(status.get("restartCount", 0)) >= CRASHLOOP_RESTARTS:
                return f"pod {pod['metadata']['name']}: {_container_reason(pod)}"
    return None


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _container_reason(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        waiting = state.get("waiting")
        last = (status.get("lastState") or {}).get("terminated") or {}
        if waiting:
            text = f"{waiting.get('reason')}"
            if last:
                text += f", last exit code {last.get('exitCode')} ({last.get('reason', 'Error')})"
            text += f", {status.get('restartCount', 0)} restart(s)"
            if waiting.get("message"):
                text += f": {waiting['message'].strip()}"
            return text
        if state.get("running") and not status.get("ready"):
            return f"container {status.get('name')} running but readiness probe failing"
    return None
