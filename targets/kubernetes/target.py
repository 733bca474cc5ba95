"""The Target protocol on a Kubernetes cluster, in the blue-green layout of charts/bluegreen-app.

Deployments `<app>-blue` and `<app>-green` carry a slot label; the Service `<app>` selects the live slot
and `<app>-preview` the candidate. Release state is kept in annotations on the Service, the lock in a
Lease (both in base.py, shared with the canary layout of canary.py).

First deploy: the chart installed with `firstDeploy=true` leaves the live slot empty (layout.py: 0 replicas, no
version, the annotation `releasegate.io/replicas`). The live state then says no version serves; the candidate is
derived from the empty slot's pod template and gets the annotated replica count; a rollback points the Service
back at the empty slot, so nothing serves, as before the release.
"""

from __future__ import annotations

import time

from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.target import promote_by_moving_traffic
from releasegate.core.types import (
    BLUE,
    Endpoint,
    LiveState,
    Promotion,
    Role,
    Slot,
    SwitchResult,
    TrafficSplit,
    other_slot,
)
from releasegate.targets.kubernetes.api import CONTENT_TYPES, NotFoundError
from releasegate.targets.kubernetes.base import ArgoCDSelfHealWarning, KubernetesBase
from releasegate.targets.kubernetes.layout import check_slot, derive_candidate, intended_replicas, is_empty, version_of

__all__ = ["ArgoCDSelfHealWarning", "KubernetesTarget"]

SLOTS = ("blue", "green")


class KubernetesTarget(KubernetesBase):
    def check_layout(self) -> None:
        """Namespace, Service and the live Deployment must exist; only reads are sent."""
        self._check_namespace()
        try:
            service = self._get_service(self.layout.service)
        except NotFoundError:
            raise ConfigError(f"Service {self._ns()}/{self.layout.service} does not exist; install the app with "
                              "charts/bluegreen-app or set kubernetes.service") from None
        slot = (service["spec"].get("selector") or {}).get(self.layout.slot_label)
        if slot not in SLOTS:
            raise ConfigError(f"Service {self._ns()}/{self.layout.service} does not select a slot (selector "
                              f"{service['spec'].get('selector')}); it must hold {self.layout.slot_label}=blue|green")
        live = self._get_deployment(slot)
        if live is None:
            raise ConfigError(f"Deployment {self._ns()}/{self.layout.deployment(slot)} (the live slot {slot}) "
                              "does not exist; install the app with charts/bluegreen-app (with firstDeploy=true "
                              "when no version runs yet) or fix kubernetes.deployment_name")
        check_slot(live, self.layout, "charts/bluegreen-app")
        self._warn_about_argocd(service)

    def live_state(self) -> LiveState:
        service = self._get_service(self.layout.service)
        live_slot = (service["spec"].get("selector") or {}).get(self.layout.slot_label)
        if live_slot not in SLOTS:
            raise TargetError(f"Service {self._ns()}/{self.layout.service} selects no slot any more (selector "
                              f"{service['spec'].get('selector')}); someone changed it outside a release")
        versions: dict[Slot, str | None] = {}
        for slot in SLOTS:
            deployment = self._get_deployment(slot)
            versions[slot] = version_of(deployment, self.layout) if deployment else None
        annotations = service["metadata"].get("annotations") or {}
        return LiveState(app=self.layout.app, traffic=TrafficSplit.all_to(live_slot), versions=versions,
                         previous_version=annotations.get(self.layout.annotation("previous-version")))

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        state = self.live_state()
        return self.resolver.endpoints(state, candidate_slot)

    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        """The slot that does not serve (blue first when nothing does)."""
        return other_slot(live_slot) if live_slot is not None else BLUE

    # -- acting -------------------------------------------------------------------------------------
    def deploy(self, slot: Slot, version: str) -> None:
        live_slot = other_slot(slot)
        live = self._get_deployment(live_slot)
        if live is None:
            raise ConfigError(f"Deployment {self._ns()}/{self.layout.deployment(live_slot)} does not exist; the "
                              "candidate is derived from it")
        candidate = derive_candidate(live, self.layout, slot, version)
        if is_empty(live, self.layout):  # a first deploy: the empty slot says how many replicas the app runs
            candidate["spec"]["replicas"] = intended_replicas(live, self.layout)

        self._apply_deployment(slot, candidate)
        # The preview Service always points at the candidate slot.
        self.api.call("patch", "services", self.core.patch_namespaced_service, self.layout.preview_service,
                      self._ns(), {"spec": {"selector": {self.layout.slot_label: slot}}},
                      _content_type=CONTENT_TYPES["strategic"])

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        slot = split.single_slot
        if slot is None:
            raise ConfigError("the kubernetes blue-green target moves all traffic at once; weighted splits need "
                              "the canary strategy")
        previous = self.live_state().traffic
        started = time.monotonic()
        self.api.call("patch", "services", self.core.patch_namespaced_service, self.layout.service, self._ns(),
                      {"spec": {"selector": {self.layout.slot_label: slot}}},
                      _content_type=CONTENT_TYPES["strategic"])
        deployment = self._get_deployment(slot)
        empty = deployment is None or is_empty(deployment, self.layout)  # a first deploy's rollback: nothing serves
        self._wait_endpoints(lambda: self._serving_pods(slot), f"slot {slot}", serve_nothing=empty)
        converged_ms = (time.monotonic() - started) * 1000
        return SwitchResult(traffic=split, previous=previous, converged_ms=converged_ms)

    def promote(self, slot: Slot, version: str) -> Promotion:
        """Blue-green: all traffic to `slot`; the old slot stays warm until finalize scales it down."""
        return promote_by_moving_traffic(self, slot, version)
