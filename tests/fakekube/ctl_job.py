"""The Job controller for NonIndexed Jobs, after pkg/controller/job/job_controller.go of v1.32.

What a client sees, as on a real cluster:

* Pods up to ``parallelism`` (bounded by the completions still missing), named ``<job>-<5 chars>``, with the
  template's labels and annotations, a controller ownerReference (``blockOwnerDeletion``) and the
  ``batch.kubernetes.io/job-tracking`` finalizer; ``SuccessfulCreate`` events.
* Status written through ``/status``: ``startTime``, ``active``, ``ready``, ``terminating``, and finished pods
  accounted in two writes, first listed in ``uncountedTerminatedPods``, then (once their finalizer is removed)
  moved to the ``succeeded``/``failed`` counters.
* Success once ``completions`` pods succeeded (or, without completions, one pod succeeded and none is left):
  ``SuccessCriteriaMet`` first, then ``Complete`` with ``completionTime`` once no pod is active or terminating,
  both ``CompletionsReached`` / "Reached expected number of succeeded pods"; a ``Completed`` event.
* Failure when more pods failed than ``backoffLimit`` (``restartPolicy: Never``), or the restarts of the active
  pods reach it (``OnFailure``), or ``activeDeadlineSeconds`` passed: ``FailureTarget``, the active pods deleted,
  then ``Failed`` (no completionTime); a Warning event with the reason.
* Replacement pods after a failure wait an exponential back-off (the real 10 s doubling, scaled like the
  kubelet's crash back-off).
* Pods whose Job is gone or finished lose the tracking finalizer (``syncOrphanPod``), so a cascading delete
  (Background or Foreground, through ctl_gc.py) or an Orphan delete never leaves pods stuck.

Not modelled: Indexed completion, podFailurePolicy and successPolicy rules, suspend's ``Suspended`` condition,
``ttlSecondsAfterFinished``, backoffLimitPerIndex.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import status
from .clock import Clock
from .events import EventRecorder
from .gotime import format_time, parse_time
from .registry import Registry
from .resources import BY_KIND
from .store import jcopy

JsonObj = dict[str, Any]
MANAGER = "kube-controller-manager"
COMPONENT = "job-controller"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
# k8s.io/api/batch/v1 JobStatus field order.
STATUS_ORDER = (
    "conditions", "startTime", "completionTime", "active", "succeeded", "failed", "terminating",
    "completedIndexes", "failedIndexes", "uncountedTerminatedPods", "ready",
)


def condition_true(obj: JsonObj, cond_type: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == cond_type and c.get("status") == "True" for c in conditions)


def job_finished(job: JsonObj) -> bool:
    return condition_true(job, "Complete") or condition_true(job, "Failed")


def _controller_uid(pod: JsonObj) -> str:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref.get("uid", ""))
    return ""


def _phase(pod: JsonObj) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def _ready(pod: JsonObj) -> bool:
    return condition_true(pod, "Ready")


@dataclass
class _Backoff:
    failures: int = 0
    not_before: float = 0.0


class JobController:
    # The real controller waits 10 s doubling up to 6 min before replacing a failed pod; the fake scales it like
    # the kubelet's crash-loop back-off so a test does not wait.
    BACKOFF_BASE_S = 0.1
    BACKOFF_CAP_S = 1.0

    def __init__(self, registry: Registry, recorder: EventRecorder, clock: Clock) -> None:
        self._registry = registry
        self._store = registry.store
        self._events = recorder
        self._clock = clock
        self._backoff: dict[str, _Backoff] = {}

    def sync_all(self) -> None:
        jobs = self._store.list("batch/jobs")
        for job in jobs:
            try:
                self._sync(job)
            except status.ApiError as err:
                if err.code not in (404, 409):
                    raise
        live = {j["metadata"]["uid"]: j for j in jobs}
        self._backoff = {uid: b for uid, b in self._backoff.items() if uid in live}
        self._release_orphans(live)

    # -- pods without a live, unfinished Job ------------------------------------------------------------------

    def _release_orphans(self, jobs: dict[str, JsonObj]) -> None:
        for pod in self._store.list("/pods"):
            if TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or []):
                continue
            owner = jobs.get(_controller_uid(pod))
            if owner is None or job_finished(owner):
                self._remove_finalizer(pod)

    def _remove_finalizer(self, pod: JsonObj) -> None:
        try:
            live = self._store.get("/pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            if live is None:
                return
            new = jcopy(live)
            remaining = [f for f in new["metadata"].get("finalizers") or [] if f != TRACKING_FINALIZER]
            if remaining:
                new["metadata"]["finalizers"] = remaining
            else:
                new["metadata"].pop("finalizers", None)
            self._registry.controller_update("Pod", live, new, MANAGER)
        except status.ApiError as err:
            if err.code not in (404, 409):
                raise

    # -- one Job ----------------------------------------------------------------------------------------------

    def _sync(self, job: JsonObj) -> None:
        if job_finished(job):
            return  # its pods are released by _release_orphans
        meta, spec = job["metadata"], job.get("spec") or {}
        old_status = job.get("status") or {}
        uid = meta["uid"]
        pods = [p for p in self._store.list("/pods", meta["namespace"]) if _controller_uid(p) == uid]
        running = [p for p in pods if _phase(p) not in ("Succeeded", "Failed")]
        active = [p for p in running if not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in running if p["metadata"].get("deletionTimestamp")]
        uncounted = old_status.get("uncountedTerminatedPods") or {}
        uncounted_succeeded = list(uncounted.get("succeeded") or [])
        uncounted_failed = list(uncounted.get("failed") or [])
        # Finished pods that still carry the tracking finalizer are accounted now (trackJobStatusAndRemoveFinalizers).
        finished = [
            p
            for p in pods
            if _phase(p) in ("Succeeded", "Failed") and TRACKING_FINALIZER in (p["metadata"].get("finalizers") or [])
        ]
        for pod in finished:
            pod_uid = pod["metadata"]["uid"]
            if pod_uid in uncounted_succeeded or pod_uid in uncounted_failed:
                continue
            (uncounted_succeeded if _phase(pod) == "Succeeded" else uncounted_failed).append(pod_uid)
            if _phase(pod) == "Failed":
                self._note_failure(uid)
        now = format_time(self._clock.now())
        start_time = old_status.get("startTime") or (None if spec.get("suspend") else now)
        conditions = list(old_status.get("conditions") or [])
        succeeded = int(old_status.get("succeeded", 0) or 0)
        failed = int(old_status.get("failed", 0) or 0)
        base: JsonObj = {"conditions": conditions, "startTime": start_time}

        if uncounted_succeeded or uncounted_failed:
            # First write: the finished pods listed as uncounted, so a crash between the writes never counts twice.
            first = self._status(base, active, terminating, succeeded, failed, uncounted_succeeded, uncounted_failed)
            job = self._write(job, first)
            for pod in finished:
                self._remove_finalizer(pod)
            succeeded += len(uncounted_succeeded)
            failed += len(uncounted_failed)

        target = self._terminal_target(job, active, succeeded, failed, start_time)
        if target is not None and not any(c.get("type") in ("SuccessCriteriaMet", "FailureTarget") for c in conditions):
            cond_type = "SuccessCriteriaMet" if target == COMPLETIONS_REACHED else "FailureTarget"
            conditions.append(self._condition(cond_type, target, now))
        interim = next((c for c in conditions if c.get("type") in ("SuccessCriteriaMet", "FailureTarget")), None)
        completion_time = None
        if interim is not None:
            for pod in active:  # the Job is decided: the pods still running are terminated
                self._delete_pod(job, pod)
            terminating += active
            active = []
            if not terminating:
                success = interim["type"] == "SuccessCriteriaMet"
                reason = (str(interim.get("reason", "")), str(interim.get("message", "")))
                conditions.append(self._condition("Complete" if success else "Failed", reason, now))
                if success:
                    completion_time = now
                    self._events.record(job, "Job", "Normal", "Completed", "Job completed", component=COMPONENT)
                else:
                    self._events.record(job, "Job", "Warning", reason[0], reason[1], component=COMPONENT)
        elif not meta.get("deletionTimestamp"):  # a Job being deleted is left to the garbage collector
            active = self._manage(job, active, succeeded)
        base["completionTime"] = completion_time
        self._write(job, self._status(base, active, terminating, succeeded, failed, [], []))

    def _terminal_target(
        self,
        job: JsonObj,
        active: list[JsonObj],
        succeeded: int,
        failed: int,
        start_time: str | None,
    ) -> tuple[str, str] | None:
        spec = job.get("spec") or {}
        completions = spec.get("completions")
        if completions is not None and succeeded >= int(completions):
            return COMPLETIONS_REACHED
        if completions is None and succeeded > 0 and not active:
            return COMPLETIONS_REACHED
        backoff_limit = int(spec.get("backoffLimit", 6))
        policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if failed > backoff_limit:
            return BACKOFF_LIMIT_EXCEEDED
        if policy == "OnFailure":
            restarts = sum(
                int(c.get("restartCount", 0))
                for p in active
                for c in [*((p.get("status") or {}).get("initContainerStatuses") or []),
                          *((p.get("status") or {}).get("containerStatuses") or [])]
            )
            if (backoff_limit == 0 and restarts > 0) or (backoff_limit > 0 and restarts >= backoff_limit):
                return BACKOFF_LIMIT_EXCEEDED
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and start_time and self._clock.now() - parse_time(start_time) >= timedelta(
            seconds=int(deadline)
        ):
            return DEADLINE_EXCEEDED
        return None

    def _manage(self, job: JsonObj, active: list[JsonObj], succeeded: int) -> list[JsonObj]:
        """manageJob for NonIndexed Jobs: as many active pods as parallelism and the missing completions allow."""
        spec = job.get("spec") or {}
        wanted = 0 if spec.get("suspend") else int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is not None:
            wanted = min(wanted, max(int(completions) - succeeded, 0))
        elif succeeded > 0:
            wanted = 0
        if len(active) > wanted:
            doomed = sorted(active, key=lambda p: (_ready(p), p["metadata"].get("creationTimestamp", "")))
            for pod in doomed[: len(active) - wanted]:
                self._delete_pod(job, pod)
            return doomed[len(active) - wanted :]
        backoff = self._backoff.get(job["metadata"]["uid"])
        if backoff is not None and self._clock.monotonic() < backoff.not_before:
            return active
        created = [self._create_pod(job) for _ in range(wanted - len(active))]
        return active + created

    def _note_failure(self, job_uid: str) -> None:
        backoff = self._backoff.setdefault(job_uid, _Backoff())
        delay = min(self.BACKOFF_BASE_S * (2**backoff.failures), self.BACKOFF_CAP_S)
        backoff.failures += 1
        backoff.not_before = self._clock.monotonic() + delay

    # -- writes ----------------------------------------------------------------------------------------------

    def _create_pod(self, job: JsonObj) -> JsonObj:
        meta = job["metadata"]
        template = (job.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        pod: JsonObj = {
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": [TRACKING_FINALIZER],
            },
            "spec": jcopy(template.get("spec") or {}),
        }
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        created = self._registry.controller_create("Pod", meta["namespace"], pod, MANAGER)
        self._events.record(
            job, "Job", "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component=COMPONENT
        )
        return created

    def _delete_pod(self, job: JsonObj, pod: JsonObj) -> None:
        self._registry.delete(BY_KIND["Pod"], pod["metadata"]["namespace"], pod["metadata"]["name"], {})
        self._events.record(
            job, "Job", "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", component=COMPONENT
        )

    @staticmethod
    def _condition(cond_type: str, reason: tuple[str, str], now: str) -> JsonObj:
        return {
            "type": cond_type,
            "status": "True",
            "lastProbeTime": now,
            "lastTransitionTime": now,
            "reason": reason[0],
            "message": reason[1],
        }

    @staticmethod
    def _status(
        base: JsonObj,
        active: list[JsonObj],
        terminating: list[JsonObj],
        succeeded: int,
        failed: int,
        uncounted_succeeded: list[str],
        uncounted_failed: list[str],
    ) -> JsonObj:
        uncounted: JsonObj = {}
        if uncounted_succeeded:
            uncounted["succeeded"] = uncounted_succeeded
        if uncounted_failed:
            uncounted["failed"] = uncounted_failed
        values: JsonObj = {
            **base,
            "active": len(active),
            "succeeded": succeeded,
            "failed": failed,
            "terminating": len(terminating),
            "uncountedTerminatedPods": uncounted,
            "ready": sum(1 for p in active if _ready(p)),
        }
        # omitempty: empty conditions, unset times and zero counters vanish; terminating and ready are pointers.
        return {
            k: values[k]
            for k in STATUS_ORDER
            if k in values and (values[k] or k in ("terminating", "ready", "uncountedTerminatedPods"))
        }

    def _write(self, job: JsonObj, new_status: JsonObj) -> JsonObj:
        if new_status == job.get("status"):
            return job
        new = jcopy(job)
        new["status"] = new_status
        return self._registry.controller_update("Job", job, new, MANAGER, subresource="status")
