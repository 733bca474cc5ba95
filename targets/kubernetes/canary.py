"""The Target protocol on a Kubernetes cluster, in the canary layout of charts/canary-app.

Deployments `<app>-stable` and `<app>-canary` (pod labels app, slot=stable|canary, version); the Service
`<app>` selects `app`, so both; `<app>-stable` and `<app>-canary` select one slot each. Release state is kept
in annotations on `<app>`, the lock in the Lease `<app>-release` (base.py, shared with the blue-green layout).

How traffic moves (`kubernetes.traffic`):

* `replicas` (no mesh): the canary's weight is its share of the ready pods behind `<app>`. The replica counts
  for a weight are Argo Rollouts' for a canary without traffic routing: argoproj/argo-rollouts
  `utils/replicaset/canary.go`, `approximateWeightedCanaryStableReplicaCounts` (called by
  `CalculateReplicaCountsForBasicCanary`): of the options ceil/floor of `total * weight / 100` canary pods out
  of `total` or (when the Deployment may surge) `total + 1`, the one closest to the weight; zero canary pods
  only at 0% (or one replica and no surge), ties kept on the first option. 10 replicas at 10% gives 1 canary
  and 9 stable pods (10%); 3 replicas at 10% gives 1 canary and 3 stable (25%). What is reported is the
  effective weight: the canary's share of the pods the Service's EndpointSlices list once they converged.
  Argo reaches those counts in maxSurge/maxUnavailable paces; here the side that grows is scaled first and
  must be ready before the other shrinks, so capacity never dips below the total.
* `alb`: exact weights in the AWS Load Balancer Controller's action annotation on the Ingress (alb.py, Argo's
  format). The canary runs Argo's count for a traffic-routed canary, `trafficWeightToReplicas`
  (ceil(total * weight / 100)), and stable keeps every replica (Argo without dynamicStableScale); the canary is
  scaled up and ready before the weight moves to it, and the weight leaves it before it shrinks.

Exposure before the first shift: the Service `<app>` selects both slots, so a ready canary pod would take
user traffic from provisioning on, before its smoke tests. To prevent that, provisioning first narrows `<app>`'s
selector to `slot=stable` (a strategic merge patch), and only the first replica-mode shift widens it to `app`
again; in ALB mode `<app>` stays on stable for the whole release, so in-cluster callers never reach the canary
and the ALB's weights are the only split. All traffic back to stable (an abort) narrows it again in the same
move, before the canary is scaled down: its pods leave the endpoints at once.

An HPA that targets `<app>-stable` (autoscaling/v2): the replica arithmetic uses its `status.currentReplicas`
as the total, and the canary gets an HPA `<app>-canary` of its own: the stable HPA's metrics and behavior,
`minReplicas` the canary's count for the step (so it never drops below the weight) and `maxReplicas` the
stable maximum scaled to the weight. It is deleted when the canary goes (abort, remove, promote).

First deploy: the chart installed with `firstDeploy=true` leaves `<app>-stable` empty (layout.py: 0 replicas, no
version, the annotation `releasegate.io/replicas` with the app's replica count). Nothing serves, so there is no
split to make: the canary is provisioned with that whole count (it is verified at the size it will run at),
promote updates `<app>-stable` in place from 0 to that count with the new version and removes the canary. A
rollback after the promotion (all traffic to stable while the recorded release state says no version served
before) puts `<app>-stable` back to empty: 0 replicas, no version label, the untagged image.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings
from typing import Any

from kubernetes.client import AutoscalingV2Api, NetworkingV1Api

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.types import (
    Endpoint,
    LiveState,
    Promotion,
    Role,
    Slot,
    SwitchResult,
    TrafficSplit,
)
from releasegate.targets.kubernetes import alb
from releasegate.targets.kubernetes.access import EndpointResolver
from releasegate.targets.kubernetes.api import CONTENT_TYPES, KubeApi, NotFoundError, retry_on_conflict
from releasegate.targets.kubernetes.base import KubernetesBase
from releasegate.targets.kubernetes.layout import (
    Layout,
    check_slot,
    derive_candidate,
    image_repository,
    image_with_tag,
    intended_replicas,
    is_empty,
    version_of,
)

STABLE: Slot = "stable"
CANARY: Slot = "canary"
SLOTS = (STABLE, CANARY)
# Enough for the smoke tests on the canary's own Service and for Prometheus to see the version.
PROVISION_REPLICAS = 1
# The total the canary's shares are computed from, recorded on the canary Deployment at provisioning, because
# the stable Deployment shrinks while the canary grows.
TOTAL_KEY = "total-replicas"


class ALBIngressWarning(UserWarning):
    """The Ingress does not look like one the AWS Load Balancer Controller serves."""


def canary_stable_counts(total: int, weight: int, max_surge: int) -> tuple[int, int]:
    """(canary, stable) replicas for `weight`% of `total` without traffic routing, as Argo Rollouts counts them.

    argoproj/argo-rollouts utils/replicaset/canary.go, `approximateWeightedCanaryStableReplicaCounts`, line for
    line: options in its order, the first one with the smallest |canary*100/total' - weight| wins.
    """
    if total == 0:
        return 0, 0
    ceil_count = math.ceil(total * weight / 100)
    floor_count = math.floor(total * weight / 100)

    def tied(replicas: int) -> bool:  # floorCeilingTied: ceil and floor equally far from the weight
        return math.modf(replicas * (weight / 100))[0] == 0.5

    zero_allowed = weight in (0, 100) or (total == 1 and max_surge == 0)
    options: list[tuple[int, int]] = []
    if ceil_count < total or zero_allowed:
        options.append((ceil_count, total))
    if not tied(total) and (floor_count != 0 or zero_allowed):
        options.append((floor_count, total))
    if max_surge > 0:
        options.append((ceil_count, total + 1))
        if not tied(total + 1) and (floor_count != 0 or zero_allowed):
            options.append((floor_count, total + 1))
    if not options:
        return 0, total
    best = options[0]
    for option in options[1:]:
        if abs(option[0] * 100 / option[1] - weight) < abs(best[0] * 100 / best[1] - weight):
            best = option
    return best[0], best[1] - best[0]


def traffic_routed_canary_count(total: int, weight: int) -> int:
    """Argo's `trafficWeightToReplicas` (utils/replicaset/canary.go): ceil(total * weight / 100)."""
    return math.ceil(total * weight / 100)


def max_surge_of(deployment: dict[str, Any]) -> int:
    """The Deployment's maxSurge in pods (default 25%, percentages rounded up as the Deployment controller does);
    0 for the Recreate strategy."""
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    replicas = int(deployment["spec"].get("replicas", 1))
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def effective_weight(canary_pods: int, stable_pods: int) -> int:
    """The canary's share of the pods behind the Service, in whole percent rounded half up."""
    total = canary_pods + stable_pods
    return 0 if total == 0 else int(100 * canary_pods / total + 0.5)


class KubernetesCanaryTarget(KubernetesBase):
    def __init__(self, config: Config, api: KubeApi, *, resolver: EndpointResolver | None = None) -> None:
        super().__init__(config, api, resolver=resolver)
        self.autoscaling = AutoscalingV2Api(api.client)
        self.networking = NetworkingV1Api(api.client)
        self.mode = config.kubernetes.traffic
        self.ingress_name = config.kubernetes.ingress or self.layout.app

    @classmethod
    def layout_of(cls, config: Config) -> Layout:
        """Deployments `<app>-stable`/`<app>-canary`; the candidate's own Service is `<app>-canary`."""
        layout = Layout.from_config(config)
        return dataclasses.replace(layout, preview_service=config.kubernetes.preview_service or f"{layout.app}-canary")

    def slot_service(self, slot: Slot) -> str:
        """`<app>-stable` or `<app>-canary`: one slot alone (the baseline and the candidate; the ALB's targets)."""
        return f"{self.layout.app}-{slot}"

    # -- reading ------------------------------------------------------------------------------------
    def check_layout(self) -> None:
        """Namespace, the three Services, the stable Deployment and (ALB) an Ingress that uses the action
        annotation must exist; only reads are sent."""
        self._check_namespace()
        install = "install the app with charts/canary-app"
        try:
            service = self._get_service(self.layout.service)
        except NotFoundError:
            raise ConfigError(f"Service {self._ns()}/{self.layout.service} does not exist; {install} or set "
                              "kubernetes.service") from None
        selected = (service["spec"].get("selector") or {}).get(self.layout.slot_label)
        if selected not in (None, STABLE):
            raise ConfigError(f"Service {self._ns()}/{self.layout.service} selects {self.layout.slot_label}="
                              f"{selected}, which is not the canary layout (it selects app={self.layout.app}, or "
                              f"{self.layout.slot_label}=stable between releases); {install} or release with the "
                              "blue-green strategy")
        for slot in SLOTS:
            try:
                self._get_service(self.slot_service(slot))
            except NotFoundError:
                raise ConfigError(f"Service {self._ns()}/{self.slot_service(slot)} (the {slot} slot alone) does not "
                                  f"exist; {install}") from None
        stable = self._get_deployment(STABLE)
        if stable is None:
            raise ConfigError(f"Deployment {self._ns()}/{self.layout.deployment(STABLE)} does not exist; {install} "
                              "(with firstDeploy=true when no version runs yet) or fix kubernetes.deployment_name")
        check_slot(stable, self.layout, "charts/canary-app")
        if self.mode == "alb":
            warning = alb.check_ingress(self._get_ingress(), self.layout.service)
            if warning:
                self.warnings.append(warning)
                warnings.warn(ALBIngressWarning(warning), stacklevel=2)
        self._warn_about_argocd(service)

    def _get_ingress(self) -> dict[str, Any]:
        try:
            ingress: dict[str, Any] = self.api.call("get", "ingresses", self.networking.read_namespaced_ingress,
                                                    self.ingress_name, self._ns())
        except NotFoundError:
            raise ConfigError(f"Ingress {self._ns()}/{self.ingress_name} does not exist, so kubernetes.traffic = "
                              "'alb' has no weights to set; install the app with charts/canary-app --set "
                              "traffic=alb, or set kubernetes.ingress to the Ingress that routes to "
                              f"{self.layout.service}") from None
        return ingress

    @staticmethod
    def _replicas(deployment: dict[str, Any] | None) -> int:
        return int(deployment["spec"].get("replicas", 1)) if deployment else 0

    @staticmethod
    def _ready(deployment: dict[str, Any] | None) -> int:
        return int((deployment.get("status") or {}).get("readyReplicas", 0)) if deployment else 0

    def _pinned(self, service: dict[str, Any]) -> bool:
        """Does `<app>` select the stable slot only (the canary kept out of it)?"""
        return (service["spec"].get("selector") or {}).get(self.layout.slot_label) == STABLE

    def live_state(self) -> LiveState:
        service = self._get_service(self.layout.service)
        stable, canary = self._get_deployment(STABLE), self._get_deployment(CANARY)
        canary_runs = self._replicas(canary) > 0
        # Nothing serves before a first deploy: a stable Deployment with no replicas and no canary.
        stable_serves = stable is not None and (self._replicas(stable) > 0 or canary_runs)
        versions: dict[Slot, str | None] = {
            STABLE: version_of(stable, self.layout) if stable is not None and stable_serves else None,
            CANARY: version_of(canary, self.layout) if canary is not None and canary_runs else None}
        if self.mode == "alb":
            weight = self._alb_weight(self._get_ingress())
        elif self._pinned(service) or not canary_runs:
            weight = 0
        else:
            weight = effective_weight(self._ready(canary), self._ready(stable))
        annotations = service["metadata"].get("annotations") or {}
        return LiveState(app=self.layout.app, traffic=self._split(weight), versions=versions,
                         previous_version=annotations.get(self.layout.annotation("previous-version")))

    def _alb_weight(self, ingress: dict[str, Any]) -> int:
        weights = alb.read_weights(ingress, self.layout.service)
        if not weights:
            return 0  # no action annotation yet: the chart's default is all on stable
        canary, stable = weights.get(self.slot_service(CANARY), 0), weights.get(self.slot_service(STABLE), 0)
        if canary + stable != 100:
            raise TargetError(f"Ingress {self._ns()}/{self.ingress_name} forwards {weights} by its action annotation, "
                              f"not 100% between {self.slot_service(STABLE)} and {self.slot_service(CANARY)}; "
                              "someone changed it outside a release")
        return canary

    @staticmethod
    def _split(canary_weight: int) -> TrafficSplit:
        if canary_weight >= 100:
            return TrafficSplit.all_to(CANARY)
        if canary_weight <= 0:
            return TrafficSplit.all_to(STABLE)
        return TrafficSplit.split(STABLE, CANARY, canary_weight)

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        """Candidate `<app>-<slot>` (the canary's own Service), baseline `<app>-stable`, service `<app>`."""
        state = self.live_state()
        if candidate_slot == STABLE:
            # After a promotion the new version is stable's: the candidate is `<app>-stable` (the canary's Service
            # selects nothing any more), and there is no other version to compare with.
            result = self.resolver.endpoints(state, None, STABLE)
            result[Role.CANDIDATE] = dataclasses.replace(result.pop(Role.BASELINE), role=Role.CANDIDATE)
            return result
        baseline = STABLE if candidate_slot == CANARY and state.versions.get(STABLE) else None
        return self.resolver.endpoints(state, candidate_slot, baseline)

    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        """Always the canary: the stable slot is updated in place when the candidate is promoted."""
        return CANARY

    # -- acting -------------------------------------------------------------------------------------
    def _select_stable_only(self, stable_only: bool) -> None:
        """Narrow `<app>` to the stable slot, or widen it to the app's pods again (the chart's selector)."""
        value = STABLE if stable_only else None  # null deletes the key in a strategic merge patch
        self.api.call("patch", "services", self.core.patch_namespaced_service, self.layout.service, self._ns(),
                      {"spec": {"selector": {self.layout.slot_label: value}}},
                      _content_type=CONTENT_TYPES["strategic"])

    def _total(self, canary: dict[str, Any] | None, stable: dict[str, Any]) -> int:
        """The replicas the weights are shares of: recorded on the canary, else (a first deploy) the empty stable's
        annotation, else the stable HPA's, else stable's."""
        recorded = ((canary or {}).get("metadata", {}).get("annotations") or {}).get(self.layout.annotation(TOTAL_KEY))
        if recorded and recorded.isdigit() and int(recorded) > 0:
            return int(recorded)
        if is_empty(stable, self.layout):
            return intended_replicas(stable, self.layout)
        hpa = self._stable_hpa(self._hpas())
        current = int((hpa or {}).get("status", {}).get("currentReplicas") or 0)
        return current or max(1, self._replicas(stable))

    def deploy(self, slot: Slot, version: str) -> None:
        if slot != CANARY:
            raise ConfigError(f"the kubernetes canary layout deploys candidates to the {CANARY} slot, not {slot!r}")
        stable = self._get_deployment(STABLE)
        if stable is None:
            raise ConfigError(f"Deployment {self._ns()}/{self.layout.deployment(STABLE)} does not exist; the canary "
                              "is derived from it")
        # First: keep the canary's pods out of <app> until the first shift (see the module docstring).
        self._select_stable_only(True)
        self._delete_canary_hpa()  # a leftover of an interrupted release would scale the new canary
        total = self._total(None, stable)
        candidate = derive_candidate(stable, self.layout, CANARY, version)
        # A first deploy has no split to grow through: the candidate runs, and is verified at, its full size.
        candidate["spec"]["replicas"] = total if is_empty(stable, self.layout) else PROVISION_REPLICAS
        candidate["metadata"]["annotations"][self.layout.annotation(TOTAL_KEY)] = str(total)

        self._apply_deployment(CANARY, candidate)

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        """Give the canary `split`'s share; returns the EFFECTIVE split once the endpoints show it."""
        unknown = set(split.weights) - set(SLOTS)
        if unknown:
            raise ConfigError(f"the kubernetes canary layout has the slots {STABLE} and {CANARY}, not "
                              f"{', '.join(sorted(unknown))}")
        weight = int(split.weights.get(CANARY, 0))
        previous = self.live_state().traffic
        started = time.monotonic()
        if weight == 0 and self._first_deploy_in_progress():
            traffic = self._serve_nothing()
        else:
            traffic = self._alb_traffic(weight) if self.mode == "alb" else self._replica_traffic(weight)
        return SwitchResult(traffic=traffic, previous=previous, converged_ms=(time.monotonic() - started) * 1000)

    def _first_deploy_in_progress(self) -> bool:
        """Does the release state on `<app>` say a release is running that no version served before?"""
        state = self.read_release_state()
        return state is not None and not state.finished and state.previous_version is None

    def _serve_nothing(self) -> TrafficSplit:
        """All traffic back to stable when stable ran nothing before this release: the rollback of a first deploy.
        `<app>` selects stable only, the canary goes to 0 and `<app>-stable` back to empty (0 replicas, no version),
        as the chart installed it; returns once `<app>` lists no ready endpoint."""
        stable, canary = self._deployments()
        if self.mode == "alb":
            self._write_alb_weight(0)
        self._select_stable_only(True)
        self._delete_canary_hpa()
        if canary is not None and self._replicas(canary) > 0:
            self._scale(CANARY, 0)
        if not is_empty(stable, self.layout):
            retry_on_conflict(lambda: self._update_stable(None, 0))
        self._wait_endpoints(set, "no pod (no version served before this first deploy)", serve_nothing=True)
        return TrafficSplit.all_to(STABLE)

    def _update_stable(self, version: str | None, replicas: int) -> None:
        """Replace `<app>-stable` with `version` (image tag and version label; None: empty, an untagged image and no
        label) at `replicas`, keeping the rest of its pod template."""
        current, _ = self._deployments()
        body = copy.deepcopy(current)
        body.pop("status", None)
        body["spec"]["replicas"] = replicas
        template = body["spec"]["template"]
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        containers = template["spec"]["containers"]
        container = next((c for c in containers if c["name"] == self.layout.container), containers[0]) \
            if self.layout.container else containers[0]
        if version is None:
            labels.pop(self.layout.version_label, None)
            (body["metadata"].get("labels") or {}).pop(self.layout.version_label, None)
            container["image"] = image_repository(container["image"])
        else:
            labels[self.layout.version_label] = version
            body["metadata"].setdefault("labels", {})[self.layout.version_label] = version
            container["image"] = image_with_tag(container["image"], version)
        self.api.call("update", "deployments", self.apps.replace_namespaced_deployment,
                      self.layout.deployment(STABLE), self._ns(), body)

    def _deployments(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        stable = self._get_deployment(STABLE)
        if stable is None:
            raise TargetError(f"Deployment {self._ns()}/{self.layout.deployment(STABLE)} disappeared during the "
                              "release")
        return stable, self._get_deployment(CANARY)

    def _require_canary(self, canary: dict[str, Any] | None, weight: int) -> dict[str, Any]:
        if canary is None:
            raise TargetError(f"cannot give {weight}% to the canary: Deployment {self._ns()}/"
                              f"{self.layout.deployment(CANARY)} does not exist (provision deploys it first)")
        return canary

    def _ready_timeout(self) -> float:
        return self.config.kubernetes.ready_timeout_s

    def _replica_traffic(self, weight: int) -> TrafficSplit:
        stable, canary = self._deployments()
        total = self._total(canary, stable)
        if weight == 0:
            self._all_to_stable_by_replicas(stable, canary, total)
            return TrafficSplit.all_to(STABLE)
        canary = self._require_canary(canary, weight)
        canary_count, stable_count = canary_stable_counts(total, weight, max_surge_of(stable))
        # The side that grows first, and ready, before the other shrinks: capacity never dips below the total.
        if canary_count >= self._replicas(canary):
            self._scale_and_wait(CANARY, canary_count)
            self._scale_and_wait(STABLE, stable_count)
        else:
            self._scale_and_wait(STABLE, stable_count)
            self._scale_and_wait(CANARY, canary_count)
        self._autoscale_canary(canary_count, weight)
        self._select_stable_only(False)
        serving: dict[Slot, set[str]] = {}

        def wanted() -> set[str]:
            serving.update({slot: self._serving_pods(slot) for slot in SLOTS})
            return serving[CANARY] | serving[STABLE]

        self._wait_endpoints(wanted, f"the ready pods of both slots ({canary_count} canary, {stable_count} stable)")
        return self._split(effective_weight(len(serving[CANARY]), len(serving[STABLE])))

    def _scale_and_wait(self, slot: Slot, replicas: int) -> None:
        deployment = self._get_deployment(slot)
        if deployment is not None and self._replicas(deployment) != replicas:
            self._scale(slot, replicas)
        self.wait_ready(slot, self._ready_timeout())

    def _all_to_stable_by_replicas(self, stable: dict[str, Any], canary: dict[str, Any] | None, total: int) -> None:
        """Abort in replica mode, one move: `<app>` selects stable only (the canary's pods leave its endpoints at
        once), then stable back to the total and the canary to zero."""
        self._select_stable_only(True)
        if self._replicas(stable) != total:
            self._scale(STABLE, total)
        self._delete_canary_hpa()
        if canary is not None and self._replicas(canary) > 0:
            self._scale(CANARY, 0)
        self._wait_endpoints(lambda: self._serving_pods(STABLE), "the stable pods")
        self.wait_ready(STABLE, self._ready_timeout())

    def _alb_traffic(self, weight: int) -> TrafficSplit:
        stable, canary = self._deployments()
        total = self._total(canary, stable)
        if weight == 0:
            self._write_alb_weight(0)  # written explicitly (argo-rollouts#491), before the canary shrinks
            self._delete_canary_hpa()
            if canary is not None and self._replicas(canary) > 0:
                self._scale(CANARY, 0)
            if self._replicas(stable) != total:
                self._scale_and_wait(STABLE, total)
            return TrafficSplit.all_to(STABLE)
        canary = self._require_canary(canary, weight)
        canary_count = traffic_routed_canary_count(total, weight)
        if canary_count > self._replicas(canary):  # pods first, then the weight
            self._scale_and_wait(CANARY, canary_count)
        self._autoscale_canary(canary_count, weight)
        self._write_alb_weight(weight)
        if canary_count < self._replicas(canary):  # the weight first, then the pods
            self._scale_and_wait(CANARY, canary_count)
        return self._split(weight)

    def _write_alb_weight(self, weight: int) -> None:
        """The forward action with `weight`% to `<app>-canary`, as a JSON merge patch of the Ingress annotation."""
        stable_service, canary_service = self.slot_service(STABLE), self.slot_service(CANARY)
        action = alb.forward_action(stable_service, canary_service, self._service_port(stable_service), weight)

        # A merge patch names only the two annotations: no resourceVersion, so no conflict with other writers.
        body = alb.annotation_patch(self.layout.service, action, state_prefix=self.layout.annotation_prefix,
                                    current=self._get_ingress())
        written: dict[str, Any] = self.api.call("patch", "ingresses", self.networking.patch_namespaced_ingress,
                                                self.ingress_name, self._ns(), body,
                                                _content_type=CONTENT_TYPES["merge"])
        if self._alb_weight(written) != weight:
            raise TargetError(f"Ingress {self._ns()}/{self.ingress_name} does not hold weight {weight} for "
                              f"{canary_service} after the patch; something else writes its action annotation")

    # -- HPA ----------------------------------------------------------------------------------------
    def _hpas(self) -> list[dict[str, Any]]:
        answer = self.api.call("list", "horizontalpodautoscalers",
                               self.autoscaling.list_namespaced_horizontal_pod_autoscaler, self._ns())
        return list(answer.get("items") or [])

    def _targets(self, hpa: dict[str, Any], slot: Slot) -> bool:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        return ref.get("kind") == "Deployment" and ref.get("name") == self.layout.deployment(slot) and \
            str(ref.get("apiVersion", "apps/v1")).startswith("apps/")

    def _stable_hpa(self, hpas: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((hpa for hpa in hpas if self._targets(hpa, STABLE)), None)

    def _canary_hpa_name(self) -> str:
        return self.layout.deployment(CANARY)

    def _autoscale_canary(self, canary_count: int, weight: int) -> None:
        """With an HPA on stable, the canary's own: min = its count for this weight, max = stable's max scaled."""
        hpas = self._hpas()
        stable_hpa = self._stable_hpa(hpas)
        if stable_hpa is None:
            return
        spec = copy.deepcopy(stable_hpa["spec"])
        spec["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                  "name": self.layout.deployment(CANARY)}
        spec["minReplicas"] = max(1, canary_count)
        spec["maxReplicas"] = max(spec["minReplicas"], math.ceil(int(spec.get("maxReplicas", 1)) * weight / 100))
        labels = dict(stable_hpa["metadata"].get("labels") or {})
        labels[self.layout.slot_label] = CANARY
        body: dict[str, Any] = {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": self._canary_hpa_name(), "namespace": self._ns(), "labels": labels,
                         "annotations": {self.layout.annotation("derived-from"): stable_hpa["metadata"]["name"],
                                         self.layout.annotation("weight"): str(weight)}},
            "spec": spec}
        existing = next((hpa for hpa in hpas if hpa["metadata"]["name"] == self._canary_hpa_name()), None)
        if existing is None:
            self.api.call("create", "horizontalpodautoscalers",
                          self.autoscaling.create_namespaced_horizontal_pod_autoscaler, self._ns(), body)
            return
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        self.api.call("update", "horizontalpodautoscalers",
                      self.autoscaling.replace_namespaced_horizontal_pod_autoscaler, self._canary_hpa_name(),
                      self._ns(), body)

    def _delete_canary_hpa(self) -> None:
        with contextlib.suppress(NotFoundError):  # none: nothing to do
            self.api.call("delete", "horizontalpodautoscalers",
                          self.autoscaling.delete_namespaced_horizontal_pod_autoscaler, self._canary_hpa_name(),
                          self._ns())

    # -- the end of a release -----------------------------------------------------------------------
    def promote(self, slot: Slot, version: str) -> Promotion:
        """Update `<app>-stable` in place to `version`, wait for its rollout, all traffic to it, remove the canary.

        `slot` is where `version` runs now: the canary (the controller promotes the candidate), or stable (the
        rollback of a promotion, `promote("stable", previous_version)`, rolls the old version out again). Either
        way the version ends up on `<app>-stable`, which the returned Promotion names as live.
        """
        if slot not in SLOTS:
            raise ConfigError(f"the kubernetes canary layout has the slots {STABLE} and {CANARY}, not {slot!r}")
        previous = self.live_state().traffic
        started = time.monotonic()
        stable, canary = self._deployments()
        total = self._total(canary, stable)
        retry_on_conflict(lambda: self._update_stable(version, total))
        self.wait_ready(STABLE, self._ready_timeout())
        if self.mode == "alb":
            self._write_alb_weight(0)
        self._select_stable_only(True)
        self._delete_canary_hpa()
        self.remove(CANARY)
        self._wait_endpoints(lambda: self._serving_pods(STABLE), f"the stable pods ({version})")
        switch = SwitchResult(traffic=TrafficSplit.all_to(STABLE), previous=previous,
                              converged_ms=(time.monotonic() - started) * 1000)
        return Promotion(switch=switch, live_slot=STABLE, retired_slot=None,
                         detail=f"{self.layout.deployment(STABLE)} updated in place to {version} ({total} replicas), "
                                f"{self.layout.deployment(CANARY)} removed")

    def remove(self, slot: Slot) -> None:
        if slot == CANARY:
            self._delete_canary_hpa()
        super().remove(slot)
