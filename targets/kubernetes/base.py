"""What every Deployment-based kubernetes target shares, whatever its layout (blue-green or canary).

Connecting, the lease lock, the release state in annotations of the Service `<app>`, reading a slot's
Deployment and pods, waiting for a rollout with a stability window, waiting until a Service's EndpointSlices
list exactly the wanted pods, removing and scaling a slot. The layouts (target.py: blue-green, canary.py:
stable + canary) add how traffic moves. Every request goes through KubeApi (retries, RBAC messages) and
every write is one the API server accepts as such (explicit patch content types, resourceVersion on replace).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable
from typing import Any, Self

from kubernetes.client import AppsV1Api, CoreV1Api, DiscoveryV1Api

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, NotReadyError, TargetError
from releasegate.core.recovery import LockInfo
from releasegate.core.types import (
    LockHolder,
    MetricsScope,
    ReleaseState,
    Slot,
    WorkloadStatus,
)
from releasegate.core.waiting import poll_until
from releasegate.targets.kubernetes import rollout
from releasegate.targets.kubernetes.access import EndpointResolver
from releasegate.targets.kubernetes.api import CONTENT_TYPES, KubeApi, NotFoundError, retry_on_conflict
from releasegate.targets.kubernetes.connect import api_client
from releasegate.targets.kubernetes.layout import Layout, version_of
from releasegate.targets.kubernetes.lease import ReleaseLease

POLL_S = 0.25
ARGOCD_MARKERS = ("argocd.argoproj.io/tracking-id", "argocd.argoproj.io/instance")
ARGOCD_SNIPPET = """spec:
  ignoreDifferences:
    - group: ""
      kind: Service
      name: {service}
      jsonPointers:
        - /spec/selector
        - /metadata/annotations"""


class ArgoCDSelfHealWarning(UserWarning):
    """ArgoCD tracks the Service: with self-heal on it would revert the selector after a switch."""


class KubernetesBase:
    """The shared half of the kubernetes targets; subclasses implement check_layout and the traffic methods."""

    name = "kubernetes"

    def __init__(self, config: Config, api: KubeApi, *, resolver: EndpointResolver | None = None) -> None:
        self.config = config
        self.api = api
        self.layout = self.layout_of(config)
        self.apps = AppsV1Api(api.client)
        self.core = CoreV1Api(api.client)
        self.discovery = DiscoveryV1Api(api.client)
        self.lease = ReleaseLease(api, self.layout.lease, self.layout.app,
                                  annotation_prefix=self.layout.annotation_prefix)
        self.resolver = resolver or EndpointResolver(config, self.layout, service_port=self._service_port,
                                                     slot_service=self.slot_service)
        self.warnings: list[str] = []

    @classmethod
    def layout_of(cls, config: Config) -> Layout:
        """The object names of this layout."""
        return Layout.from_config(config)

    slot_service: Callable[[Slot], str] | None = None
    """The Service that reaches one slot alone, if the layout has one per slot (see EndpointResolver)."""

    @classmethod
    def open(cls, config: Config) -> Self:
        """Connect and check that the layout exists; ConfigError (and no write) when it does not."""
        kube = config.kubernetes
        api = KubeApi(api_client(config), namespace=kube.namespace, timeout_s=kube.request_timeout_s,
                      max_retries=kube.max_retries)
        target = cls(config, api)
        try:
            target.check_layout()
        except BaseException:
            target.close()
            raise
        return target

    def check_layout(self) -> None:
        raise NotImplementedError

    def exposes_candidate_at_provision(self) -> bool:
        """Users reach the candidate only from the first shift or switch on."""
        return False

    def prepare_image(self, version: str) -> None:
        """Images come from the cluster's registry: nothing to prepare here."""

    def describe(self) -> str:
        context = self.config.kubernetes.context or "the kubeconfig's current context"
        return (f"kubernetes API server {self.api.client.configuration.host} ({context}), "
                f"namespace {self._ns()}")

    # -- reading ------------------------------------------------------------------------------------
    def _ns(self) -> str:
        return self.layout.namespace

    def _get_deployment(self, slot: Slot) -> dict[str, Any] | None:
        try:
            deployment: dict[str, Any] = self.api.call("get", "deployments", self.apps.read_namespaced_deployment,
                                                       self.layout.deployment(slot), self._ns())
        except NotFoundError:
            return None
        return deployment

    def _apply_deployment(self, slot: Slot, deployment: dict[str, Any]) -> None:
        """Create `slot`'s Deployment, or replace it (resourceVersion of the one read, retried on conflict).

        A replacement keeps what others wrote in the existing object's annotations: Helm's ownership
        annotations, without which the next `helm upgrade` refuses to adopt it ("invalid ownership metadata").
        """
        def create_or_replace() -> None:
            existing = self._get_deployment(slot)
            if existing is None:
                self.api.call("create", "deployments", self.apps.create_namespaced_deployment, self._ns(),
                              deployment)
                return
            body = copy.deepcopy(deployment)
            body["metadata"]["annotations"] = {**(existing["metadata"].get("annotations") or {}),
                                               **(deployment["metadata"].get("annotations") or {})}
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.api.call("update", "deployments", self.apps.replace_namespaced_deployment,
                          self.layout.deployment(slot), self._ns(), body)

        retry_on_conflict(create_or_replace)

    def _get_service(self, name: str) -> dict[str, Any]:
        service: dict[str, Any] = self.api.call("get", "services", self.core.read_namespaced_service, name,
                                                self._ns())
        return service

    def _service_port(self, name: str) -> int:
        ports = self._get_service(name)["spec"].get("ports") or [{"port": 80}]
        return int(ports[0]["port"])

    def _check_namespace(self) -> None:
        try:
            self.api.call("get", "namespaces", self.core.read_namespace, self._ns())
        except NotFoundError:
            raise ConfigError(f"namespace {self._ns()!r} does not exist in this cluster; fix kubernetes.namespace "
                              "or create it (see charts/)") from None

    def _warn_about_argocd(self, service: dict[str, Any]) -> None:
        metadata = service["metadata"]
        tracked = any(key in (metadata.get("annotations") or {}) for key in ARGOCD_MARKERS) or \
            ("app.kubernetes.io/instance" in (metadata.get("labels") or {}) and \
            "argocd" in str(metadata.get("annotations") or {}))
        if tracked:
            message = (f"ArgoCD tracks Service {self._ns()}/{self.layout.service}: with self-heal on it will revert "
                       "the selector after a switch. Add to the ArgoCD Application:\n"
                       + ARGOCD_SNIPPET.format(service=self.layout.service))
            self.warnings.append(message)
            warnings.warn(ArgoCDSelfHealWarning(message), stacklevel=2)

    def _pods(self, slot: Slot) -> list[dict[str, Any]]:
        pods: dict[str, Any] = self.api.call("list", "pods", self.core.list_namespaced_pod, self._ns(),
                                             label_selector=self.layout.pod_selector(slot))
        return list(pods.get("items") or [])

    def _serving_pods(self, slot: Slot) -> set[str]:
        """The names of `slot`'s pods that are ready and not being deleted: what its endpoints should list."""
        return {pod["metadata"]["name"] for pod in self._pods(slot)
                if not pod["metadata"].get("deletionTimestamp") and not rollout.pod_problems([pod], [])}

    def _events_for(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for pod in pods[:5]:  # enough to explain a failure, bounded in requests
            answer = self.api.call("list", "events", self.core.list_namespaced_event, self._ns(),
                                   field_selector=f"involvedObject.name={pod['metadata']['name']}")
            events += answer.get("items") or []
        return events

    def workload_status(self, slot: Slot) -> WorkloadStatus:
        deployment = self._get_deployment(slot)
        if deployment is None:
            return WorkloadStatus(slot=slot, version=None, replicas=0, ready_replicas=0)
        pods = self._pods(slot)
        status = deployment.get("status") or {}
        return WorkloadStatus(slot=slot, version=version_of(deployment, self.layout),
                              replicas=int(deployment["spec"].get("replicas", 1)),
                              ready_replicas=int(status.get("readyReplicas", 0)),
                              problems=tuple(rollout.pod_problems(pods, [])), restarts=rollout.pod_restarts(pods))

    def metrics_scope(self) -> MetricsScope:
        prom = self.config.prometheus
        if not prom.url:
            raise ConfigError("the kubernetes target needs prometheus.url (the cluster's Prometheus); set it in "
                              "the config")
        return MetricsScope(prometheus_url=prom.url, app=self.layout.app, app_label=prom.app_label,
                            slot_label=prom.slot_label, version_label=prom.version_label)

    def read_release_state(self) -> ReleaseState | None:
        annotations = self._get_service(self.layout.service)["metadata"].get("annotations") or {}
        prefix = self.layout.annotation_prefix
        data = {key[len(prefix):]: value for key, value in annotations.items() if key.startswith(prefix)}
        if "run-id" not in data:
            return None
        return ReleaseState.from_dict({
            "run_id": data["run-id"], "version": data.get("version", ""),
            "previous_version": data.get("previous-version") or None, "live_slot": data.get("live-slot"),
            "live_version": data.get("live-version"), "candidate_slot": data.get("candidate-slot") or None,
            "phase": data.get("phase", "aborted"), "updated_at": float(data.get("updated-at", 0))})

    # -- acting -------------------------------------------------------------------------------------
    def acquire_lock(self, holder: LockHolder | str, ttl_s: float) -> None:
        self.lease.acquire(LockHolder.of(holder), ttl_s)

    def read_lock(self) -> LockInfo | None:
        """Who holds the release Lease (core.recovery.LockReader)."""
        return self.lease.read_lock()

    def renew_lock(self, holder: LockHolder | str, ttl_s: float) -> None:
        self.lease.renew(LockHolder.of(holder), ttl_s)

    def release_lock(self, holder: LockHolder | str) -> None:
        self.lease.release(LockHolder.of(holder))

    def record_release_state(self, state: ReleaseState) -> None:
        values = {"run-id": state.run_id, "version": state.version,
                  "previous-version": state.previous_version or "", "live-slot": state.live_slot or "",
                  "live-version": state.live_version or "", "candidate-slot": state.candidate_slot or "",
                  "phase": state.phase.value, "updated-at": f"{state.updated_at:.3f}"}
        body = {"metadata": {"annotations": {self.layout.annotation(k): v for k, v in values.items()}}}
        self.api.call("patch", "services", self.core.patch_namespaced_service, self.layout.service, self._ns(),
                      body, _content_type=CONTENT_TYPES["merge"])

    def wait_ready(self, slot: Slot, timeout_s: float) -> WorkloadStatus:
        """Until the rollout is complete and has stayed so for kubernetes.min_ready_s with no restart.

        A finished rollout alone is what `kubectl rollout status` waits for; but a pod that answers its
        probe once and then crashes counts as available for a moment. The stability window catches it
        here, with the pods' reasons, instead of as a puzzling smoke-test failure.
        """
        timeout_s = min(timeout_s, self.config.kubernetes.ready_timeout_s)
        min_ready_s = self.config.kubernetes.min_ready_s
        started = time.monotonic()
        stable_since: float | None = None
        restarts_then: int | None = None
        seen: tuple[dict[str, Any], list[dict[str, Any]]] | None = None

        def not_ready(when: str) -> NotReadyError:
            assert seen is not None
            deployment, pods = seen
            problems = rollout.pod_problems(pods, self._events_for(pods))
            ready_for_s = None if stable_since is None else time.monotonic() - stable_since
            return NotReadyError(
                f"Deployment {self.layout.deployment(slot)} ({version_of(deployment, self.layout)}) {when}: "
                f"{rollout.describe_progress(deployment)}; "
                + rollout.still_waiting_for(deployment, pods, problems, ready_for_s=ready_for_s,
                                            min_ready_s=min_ready_s))

        def available() -> WorkloadStatus | None:
            nonlocal stable_since, restarts_then, seen
            deployment = self._get_deployment(slot)
            if deployment is None:
                raise NotReadyError(f"Deployment {self.layout.deployment(slot)} disappeared while waiting for it")
            pods = self._pods(slot)
            seen = (deployment, pods)
            restarts = rollout.restart_count(pods)
            if rollout.rollout_complete(deployment) and restarts_then in (None, restarts):
                stable_since = stable_since or time.monotonic()
                restarts_then = restarts
                if time.monotonic() - stable_since >= min_ready_s:
                    return self.workload_status(slot)
            else:
                stable_since, restarts_then = None, None
            stalled = rollout.deadline_exceeded(deployment)
            if stalled:
                raise not_ready(f"progress deadline exceeded ({stalled})")
            if rollout.hopeless_reason(pods):
                waited = time.monotonic() - started
                raise not_ready(f"gave up after {waited:.0f}s, a pod will not recover by waiting")
            return None

        status = poll_until(available, timeout_s=timeout_s, interval_s=POLL_S)
        if status is None:
            raise not_ready(f"not ready after {time.monotonic() - started:.0f}s")
        return status

    def _wait_endpoints(self, wanted_pods: Callable[[], set[str]], what: str, *, serve_nothing: bool = False) -> None:
        """Until the Service's EndpointSlices list exactly the pods `wanted_pods()` names (asked again at every
        look: a pod that becomes ready meanwhile must not make the wait miss the moment it converged).

        An empty list counts only with `serve_nothing` (traffic back to an empty slot, the rollback of a first
        deploy): otherwise it is what a Service shows before its pods are ready, not convergence."""
        listed: set[str] = set()
        wanted: set[str] = set()

        def converged() -> bool | None:
            nonlocal listed, wanted
            wanted = wanted_pods()
            slices = self.api.call("list", "endpointslices", self.discovery.list_namespaced_endpoint_slice,
                                   self._ns(), label_selector=f"kubernetes.io/service-name={self.layout.service}")
            listed = {str((endpoint.get("targetRef") or {}).get("name"))
                      for item in slices.get("items") or [] for endpoint in item.get("endpoints") or []
                      if (endpoint.get("conditions") or {}).get("ready", True)}
            return True if listed == wanted and (listed or serve_nothing) else None

        timeout_s = self.config.kubernetes.endpoints_timeout_s
        if poll_until(converged, timeout_s=timeout_s, interval_s=POLL_S / 5) is None:
            raise TargetError(f"Service {self.layout.service} endpoints did not converge on {what} within "
                              f"{timeout_s:.0f}s: listed {sorted(listed)}, expected {sorted(wanted)}")

    def remove(self, slot: Slot) -> None:
        with contextlib.suppress(NotFoundError):  # already gone: removing is idempotent
            self.api.call("delete", "deployments", self.apps.delete_namespaced_deployment,
                          self.layout.deployment(slot), self._ns(), propagation_policy="Background")

    def _scale(self, slot: Slot, replicas: int) -> None:
        self.api.call("patch", "deployments/scale", self.apps.patch_namespaced_deployment_scale,
                      self.layout.deployment(slot), self._ns(), {"spec": {"replicas": replicas}},
                      _content_type=CONTENT_TYPES["merge"])

    def scale_down(self, slot: Slot) -> None:
        self._scale(slot, 0)

    def close(self) -> None:
        self.resolver.close()
        self.api.client.close()  # type: ignore[no-untyped-call]
