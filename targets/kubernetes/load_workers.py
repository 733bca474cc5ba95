"""The locust workers of a distributed load as one Kubernetes Job in the app's namespace, near the service.

verifiers.load runs the locust master on this machine (`run_load(..., start_workers=launcher)`); a
LoadWorkerJob is such a launcher (verifiers.load.WorkerLauncher). For a load with N workers it creates:

- a ConfigMap `<app>-load-<id>` with the two files locust loads in a worker: the collector
  (verifiers/locust_collector.py, which imports releasegate, so the image needs it installed) and the suite's
  locustfile; mounted read-only at FILES_MOUNT;
- a Job of the same name: parallelism = completions = N pods of `kubernetes.load_worker_image` running
  `locust --worker --master-host H --master-port P -f <mount>/collector.py,<mount>/locustfile.py`, where
  H:P is `kubernetes.load_master_address` (what the pods dial to reach this machine). restartPolicy Never and
  backoffLimit 0: a worker that dies is a lost worker, which the master reports (it never silently reruns);
  activeDeadlineSeconds bounds the pods by the load's longest run, and ttlSecondsAfterFinished removes a Job
  that outlived a killed runner (the ConfigMap is owned by the Job, so the garbage collector takes it too).

The pods carry the placement of the app's Deployment (nodeSelector, tolerations, node affinity,
imagePullSecrets), so they land where the app runs. They do NOT carry the label `app=<app>`: a Service that
selects `app` (the canary layout's `<app>`) would send user traffic to them. The Job object does.

While the load runs, a thread reads the Job's pods (by the Job's selector) every POLL_S and appends what
keeps them from working (an image that cannot be pulled, a crash with the container's last log lines, a pod
that cannot be scheduled, or the Job's FailedCreate events when no pod appears) to the load's log: a load that
fails with "only k of N locust workers connected" ends with those lines.

The function a launch returns deletes the Job (Foreground: its pods go first) and the ConfigMap; calling it
again is harmless. A 404 is "already gone"; any other API error is raised once both deletes were tried.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client import AppsV1Api, BatchV1Api, CoreV1Api

from releasegate.core.checks import CheckOutcome, RecordCheck
from releasegate.core.config import Config, split_host_port
from releasegate.core.errors import ConfigError, ReleasegateError, TargetError
from releasegate.core.types import check_label_value, label_selector
from releasegate.targets.kubernetes import rollout
from releasegate.targets.kubernetes.api import KubeApi, NotFoundError
from releasegate.targets.kubernetes.connect import api_client
from releasegate.targets.kubernetes.layout import Layout

FILES_MOUNT = "/releasegate/load"
COLLECTOR_FILE = "collector.py"
LOCUSTFILE_FILE = "locustfile.py"
WORKER_CONTAINER = "locust-worker"
FILES_VOLUME = "locust-files"

TTL_AFTER_FINISHED_S = 300
"""A finished Job (and, through its owner reference, its ConfigMap) is deleted this long after it finished,
when the runner that should have deleted it was killed first. Long enough to read the pods' state by hand."""

POLL_S = 1.0
"""How often the pods of a running Job are read for reasons they do not work."""

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "releasegate.io/run"
APP_LABEL = "releasegate.io/app"
JOB_LABEL = "releasegate.io/load-job"

PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "imagePullSecrets")
"""Pod spec fields copied from the app's pod template as they are (plus affinity.nodeAffinity alone: the
app's pod (anti-)affinity names the app's own labels, which the worker pods do not have)."""

_NOT_YET_A_PROBLEM = {"ContainerCreating", "PodInitializing"}
_NAME_ID_LENGTH = 8


class WorkerRequestLike(Protocol):
    """What this launcher reads of verifiers.load.WorkerRequest (targets do not import verifiers)."""

    @property
    def count(self) -> int: ...

    @property
    def locustfile(self) -> Path: ...

    @property
    def log_path(self) -> Path: ...


@dataclass(frozen=True)
class LoadJobSettings:
    """Where and how the worker pods of one load run."""

    namespace: str
    app: str
    run_id: str
    image: str
    master_host: str  # what the pods dial: kubernetes.load_master_address
    master_port: int
    deadline_s: float  # the pods' activeDeadlineSeconds: the load's longest run with its start-up slack
    placement: Mapping[str, Any] = field(default_factory=dict)  # pod spec fields (placement_of)
    ttl_s: int = TTL_AFTER_FINISHED_S


def job_name(app: str, unique: str) -> str:
    """`<app>-load-<unique>`: a DNS label of at most 63 characters (a long app name is shortened)."""
    base = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-") or "app"
    suffix = f"-load-{unique}"
    return base[:63 - len(suffix)].rstrip("-") + suffix


def new_job_id() -> str:
    return uuid.uuid4().hex[:_NAME_ID_LENGTH]


def worker_command(settings: LoadJobSettings) -> list[str]:
    """One worker pod's command: the collector beside the locustfile, both from the mounted ConfigMap."""
    return ["locust", "--worker", "--master-host", settings.master_host, "--master-port", str(settings.master_port),
            "-f", f"{FILES_MOUNT}/{COLLECTOR_FILE},{FILES_MOUNT}/{LOCUSTFILE_FILE}", "--loglevel", "WARNING"]


def _labels(settings: LoadJobSettings, name: str) -> dict[str, str]:
    """The pods' labels: which releasegate run and which Job they belong to, never the Service's `app`."""
    return {MANAGED_BY: "releasegate", RUN_LABEL: _label_value(settings.run_id),
            APP_LABEL: _label_value(settings.app), JOB_LABEL: name}


def _label_value(text: str) -> str:
    """`text` as a label value: at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")
    return check_label_value(value or "unknown", source="load worker label")


def configmap_manifest(name: str, settings: LoadJobSettings, files: Mapping[str, str],
                       owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ConfigMap with the worker's locust files; `owner`: the created Job, whose deletion takes it along."""
    metadata: dict[str, Any] = {"name": name, "namespace": settings.namespace,
                                "labels": {"app": settings.app, **_labels(settings, name)}}
    if owner is not None:
        # No blockOwnerDeletion: setting it needs update on jobs/finalizers, and nothing waits on it.
        metadata["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"]}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(files)}


def job_manifest(name: str, settings: LoadJobSettings, count: int) -> dict[str, Any]:
    """`count` locust worker pods as one Job (see the module docstring for each setting's reason)."""
    pod_labels = _labels(settings, name)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a worker talks to the master and the service, never the API
        "containers": [{
            "name": WORKER_CONTAINER,
            "image": settings.image,
            "command": worker_command(settings),
            # A crashed worker's last log lines become its termination message: the reason reaches the
            # runner through `pods list`, without a grant to read logs.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": FILES_VOLUME, "mountPath": FILES_MOUNT, "readOnly": True}],
        }],
        "volumes": [{"name": FILES_VOLUME, "configMap": {"name": name}}],
        **settings.placement,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": {"app": settings.app, **pod_labels}},
        "spec": {
            "parallelism": count,
            "completions": count,
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(settings.deadline_s)),
            "ttlSecondsAfterFinished": settings.ttl_s,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def placement_of(deployment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pod spec fields that put the workers where `deployment`'s pods run (PLACEMENT_FIELDS)."""
    if deployment is None:
        return {}
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    placement = {key: spec[key] for key in PLACEMENT_FIELDS if spec.get(key)}
    node_affinity = (spec.get("affinity") or {}).get("nodeAffinity")
    if node_affinity:
        placement["affinity"] = {"nodeAffinity": node_affinity}
    return placement


def worker_pod_problems(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """One line per worker pod that has failed or will not start; pods that start or run normally, or that
    finished with exit code 0 (the master told them to quit), have none."""
    lines = []
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") == "Succeeded":
            continue
        name = pod["metadata"]["name"]
        if terminated := _failed_container(status):
            message = str(terminated.get("message") or "").strip()
            lines.append(f"pod {name}: exited with code {terminated.get('exitCode')} "
                         f"({terminated.get('reason') or 'Error'})" + (f": {_last_lines(message)}" if message else ""))
        elif unscheduled := _unschedulable(status):
            lines.append(f"pod {name}: cannot be scheduled: {unscheduled}")
        elif status.get("phase") == "Failed":
            lines.append(f"pod {name}: failed ({status.get('reason') or 'Failed'}): "
                         f"{str(status.get('message') or '').strip()}")
        elif _waiting_on_a_problem(status):
            lines += rollout.pod_problems([pod], events)
    return lines


def _failed_container(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and int(terminated.get("exitCode", 0)) != 0:
            return terminated  # type: ignore[no-any-return]
    return None


def _unschedulable(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "no node fits")
    return None


def _waiting_on_a_problem(status: Mapping[str, Any]) -> bool:
    return any(((container.get("state") or {}).get("waiting") or {}).get("reason") not in (None, *_NOT_YET_A_PROBLEM)
               for container in status.get("containerStatuses") or [])


def _last_lines(text: str, lines: int = 3) -> str:
    return " | ".join(text.splitlines()[-lines:])


class LoadWorkerJob:
    """A WorkerLauncher (verifiers.load): the workers of one load as the Job `name` (one launch per instance)."""

    def __init__(self, api: KubeApi, settings: LoadJobSettings, collector: Path, *,
                 unique: Callable[[], str] = new_job_id, poll_s: float = POLL_S) -> None:
        self.api = api
        self.settings = settings
        self.collector = collector
        self.name = job_name(settings.app, unique())  # known before the load: its records name it
        self.poll_s = poll_s
        self.batch = BatchV1Api(api.client)
        self.core = CoreV1Api(api.client)
        self._launched = False
        self._left: list[str] = []  # what a stop still has to delete: "jobs", "configmaps"
        self._watch: _PodWatch | None = None

    def describe(self) -> str:
        """`workers as Job shop/web-load-1a2b3c4d`: added to the source of the load's checks."""
        return f"workers as Job {self.settings.namespace}/{self.name}"

    def noting_job(self, record: RecordCheck) -> RecordCheck:
        """`record`, with each outcome's source saying where the workers ran."""
        def note(outcome: CheckOutcome) -> None:
            record(replace(outcome, source=f"{outcome.source}, {self.describe()}"))
        return note

    def __call__(self, request: WorkerRequestLike) -> Callable[[], None]:
        if self._launched:
            raise TargetError(f"load worker Job {self.name} was launched already; make one LoadWorkerJob per load")
        self._launched = True
        files = {COLLECTOR_FILE: self.collector.read_text(encoding="utf-8"),
                 LOCUSTFILE_FILE: Path(request.locustfile).read_text(encoding="utf-8")}
        namespace = self.settings.namespace
        try:
            # The Job first, so the ConfigMap can name it as its owner: whatever removes the Job (this stop, its
            # TTL) removes the files too. The kubelet retries the mount until the ConfigMap exists, moments later.
            job = self.api.call("create", "jobs", self.batch.create_namespaced_job, namespace,
                                job_manifest(self.name, self.settings, request.count))
            self._left.append("jobs")
            self.api.call("create", "configmaps", self.core.create_namespaced_config_map, namespace,
                          configmap_manifest(self.name, self.settings, files, owner=job))
            self._left.append("configmaps")
            self._watch = _PodWatch(self, _selector_of(job), Path(request.log_path))
            self._watch.start()
        except BaseException:
            with contextlib.suppress(ReleasegateError):  # the launch's own error is the one to report
                self.stop()
            raise
        return self.stop

    def look(self) -> None:
        """Append what keeps the pods from working to the load's log now (the launch's thread does every poll_s)."""
        if self._watch is not None:
            self._watch.look()

    def stop(self) -> None:
        """Delete the Job (its pods first) and the ConfigMap; already gone is fine. A second call does nothing
        unless the first failed, and then tries again what is left."""
        if self._watch is not None:
            self._watch.stop()
        problems = []
        for resource in list(self._left):
            try:
                with contextlib.suppress(NotFoundError):
                    if resource == "jobs":
                        self.api.call("delete", "jobs", self.batch.delete_namespaced_job, self.name,
                                      self.settings.namespace, propagation_policy="Foreground")
                    else:
                        self.api.call("delete", "configmaps", self.core.delete_namespaced_config_map, self.name,
                                      self.settings.namespace)
                self._left.remove(resource)
            except ReleasegateError as exc:
                problems.append(f"{resource} {self.settings.namespace}/{self.name}: {exc}")
        if problems:
            raise TargetError("could not delete the load workers' " + "; ".join(problems) + "; delete them with "
                              f"`kubectl -n {self.settings.namespace} delete job,configmap {self.name}` (the Job's "
                              f"ttlSecondsAfterFinished={self.settings.ttl_s} removes a finished one by itself)")

    def pods(self, selector: str) -> list[dict[str, Any]]:
        answer = self.api.call("list", "pods", self.core.list_namespaced_pod, self.settings.namespace,
                               label_selector=selector)
        return list(answer.get("items") or [])

    def events(self, name: str) -> list[dict[str, Any]]:
        """The events of one object (a pod, or the Job: FailedCreate when a quota or policy refuses its pods)."""
        answer = self.api.call("list", "events", self.core.list_namespaced_event, self.settings.namespace,
                               field_selector=f"involvedObject.name={name}")
        return list(answer.get("items") or [])


def _selector_of(job: Mapping[str, Any]) -> str:
    """The label selector the API server gave the Job (its pods' controller-uid): exactly the Job's pods."""
    match_labels = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels")
    if not match_labels:
        raise TargetError(f"the API server created Job {job['metadata']['name']} without spec.selector.matchLabels; "
                          "its pods cannot be found (a Job with manualSelector is not what releasegate creates)")
    return label_selector(match_labels, source="load worker Job selector")


class _PodWatch:
    """Appends each new reason the Job's pods do not work to the load's log (read when the load fails)."""

    def __init__(self, job: LoadWorkerJob, selector: str, log_path: Path) -> None:
        self.job = job
        self.selector = selector
        self.log_path = log_path
        self.seen: set[tuple[str, str]] = set()  # (pod or event name, phase or reason) already written
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-job-{job.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.job.api.timeout_s + self.job.poll_s)

    def _run(self) -> None:
        while not self._stopping.wait(self.job.poll_s):
            try:
                self.look()
            except ReleasegateError as exc:  # the diagnosis is a help, not the verdict: say why it ends
                self._write([f"reading the pods of load worker Job {self.job.name} failed, no more pod reasons "
                             f"will follow: {exc}"])
                return

    def look(self) -> None:
        """One look at the pods (and, while there are none, at the Job's events)."""
        pods = self.job.pods(self.selector)
        lines: list[str] = []
        if not pods:
            for event in self.job.events(self.job.name):
                key = (str(event.get("reason")), str(event.get("message", "")).strip())
                if event.get("type") == "Warning" and key not in self.seen:
                    self.seen.add(key)
                    lines.append(f"Job: {key[0]}: {key[1]}")
            self._write(lines)
            return
        fresh = [pod for pod in pods if (pod["metadata"]["name"], _phase(pod)) not in self.seen
                 and worker_pod_problems([pod], [])]
        for pod in fresh[:3]:  # enough to explain a failure, bounded in requests
            self.seen.add((pod["metadata"]["name"], _phase(pod)))
            lines += worker_pod_problems([pod], self.job.events(pod["metadata"]["name"]))
        self._write(lines)

    def _write(self, lines: list[str]) -> None:
        # OSError: the load is over and its log removed (a stop that gave up waiting for this thread).
        if lines:
            with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as log:
                log.writelines(f"load worker Job {self.job.settings.namespace}/{self.job.name}: {line}\n"
                               for line in lines)


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


# -- from a config: what the suite fixtures open for each distributed load --------------------------------

@dataclass(frozen=True)
class WorkerJobs:
    """The Job launcher of the kubernetes target, opened per load from the config (in any xdist worker)."""

    config: Config
    run_id: str
    slot: str | None  # the Deployment whose placement the workers copy: the candidate's, else the live one
    collector: Path

    @property
    def master_address(self) -> tuple[str, int]:
        """What the pods dial: kubernetes.load_master_address (checked when the config was loaded)."""
        address = split_host_port(self.config.kubernetes.load_master_address)
        if address is None:
            raise ConfigError("kubernetes.load_master_address must be the host:port the worker pods dial to reach "
                              "this machine's locust master, e.g. \"10.0.0.5:5557\"")
        return address

    @property
    def listen_address(self) -> str:
        """Where the master listens when the load names no `master`: every interface, the dialled port."""
        return f"0.0.0.0:{self.master_address[1]}"

    @contextlib.contextmanager
    def open(self, deadline_s: float) -> Iterator[LoadWorkerJob]:
        """A LoadWorkerJob on its own API client, closed when the load is over (after its stop ran)."""
        kube = self.config.kubernetes
        api = KubeApi(api_client(self.config), namespace=kube.namespace, timeout_s=kube.request_timeout_s,
                      max_retries=kube.max_retries)
        try:
            host, port = self.master_address
            settings = LoadJobSettings(namespace=kube.namespace, app=self.config.app.name, run_id=self.run_id,
                                       image=kube.load_worker_image, master_host=host, master_port=port,
                                       deadline_s=deadline_s, placement=self._placement(api))
            yield LoadWorkerJob(api, settings, self.collector)
        finally:
            api.client.close()  # type: ignore[no-untyped-call]

    def _placement(self, api: KubeApi) -> dict[str, Any]:
        if self.slot is None or self.config.kubernetes.workload != "deployment":
            return {}  # an Argo Rollout's pods: no Deployment to copy from; the workers go where they fit
        apps = AppsV1Api(api.client)
        name = Layout.from_config(self.config).deployment(self.slot)
        with contextlib.suppress(NotFoundError):
            deployment = api.call("get", "deployments", apps.read_namespaced_deployment, name,
                                  self.config.kubernetes.namespace)
            return placement_of(deployment)
        return {}
