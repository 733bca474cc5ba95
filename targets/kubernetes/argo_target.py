"""The Target protocol for an app that is an Argo Rollouts Rollout (`kubernetes.workload = "rollout"`).

releasegate does not build the layout here: the Rollout's own controller moves pods and Services, and this
target drives it the way a person with the kubectl plugin would (argo.py: `set image`, `promote`, `abort`,
with the plugin's exact requests). What it adds is the order, the waits and the verification in between.

Slots
- canary Rollout: `stable` (the Rollout's stable ReplicaSet, `status.stableRS`) and `canary` (the ReplicaSet of
  the current pod template while an update runs). The candidate slot is always `canary`.
- blue-green Rollout: `active` (the ReplicaSet behind `activeService`) and `preview` (the new ReplicaSet
  behind `previewService`). The candidate slot is always `preview`.

The release, stage by stage
- preflight (`open`): only reads. The Rollout must exist and use the run's strategy. Canary: its setWeight
  steps must equal `canary.steps`, each setWeight below 100 must be followed at once by an indefinite
  `pause: {}` (that pause is where releasegate runs the step's analysis), and `canaryService` and
  `stableService` must be set (the smoke stage reaches the candidate alone, the analysis the stable version
  alone). Blue-green: `autoPromotionEnabled: false` (else the Rollout switches before any verification) and
  a `previewService`. The app's Service (canary: `kubernetes.service`, default the app name; blue-green: the
  `activeService`) carries the release-state annotations.
- provision (`deploy` + `wait_ready`): a new image tag on the Rollout; its controller then starts the update
  and we wait for its first indefinite pause (canary) or its pre-promotion pause (blue-green).
  Exposure, honestly: a canary Rollout applies its first `setWeight` by itself as soon as the image changes.
  With `setWeight: 10` first, about 10% of users reach the candidate from provision on, while the smoke
  stage still runs; releasegate cannot hold that back without changing the Rollout's steps. (Without
  trafficRouting the real share is the canary's share of ready pods: 1 of 5 pods for 4 replicas at 10%,
  which `set_traffic` reports as the effective weight.) A blue-green Rollout exposes nothing before promote.
- shift (`set_traffic`, canary only): at the pause whose setWeight is the step's weight there is nothing to
  do; otherwise `promote` (the plugin's request) until the Rollout pauses after that setWeight. At 100 the
  Rollout runs its last step and completes: the candidate becomes its stable ReplicaSet.
- promote: `promote --full` (canary: skips whatever steps remain) or `promote` (blue-green: ends the
  BlueGreenPause, the Rollout switches activeService), then wait until the Rollout is Healthy with the new
  version as its stable ReplicaSet and the app's Service lists only its pods. Nothing is left to retire:
  Argo Rollouts scales the old ReplicaSet down itself (`Promotion.retired_slot` is None).
- rollback before promote (`set_traffic(all_to(stable))`, `remove(candidate)`): `abort` (the plugin's
  request); the stable ReplicaSet takes all traffic again. `remove` then puts the stable image back into the
  Rollout, which Argo Rollouts treats as a rollback to stable (no steps, `SkipSteps`), so the Rollout is
  Healthy again instead of staying Degraded with the rejected image in its spec.
- rollback after promote (`promote(stable, previous_version)`, and `set_traffic(all_to(stable))` after a
  canary that completed at setWeight 100): the previous image is set again and promoted with `--full`, so
  it rolls out without the steps (the old ReplicaSet was scaled down by the Rollout; its pods start again).

The Rollout's own `spec.template` must be used (no `workloadRef`), and the version is the image tag of
`kubernetes.container` (a version label in the pod template would not change with `set image`).

Consequences of the exposure at provision for the rest of releasegate (not handled here): a `--dry-run` of a
canary Rollout still gives users the first step's share while the candidate is verified; the shipped smoke
check `test_users_still_reach_the_previous_version` fails (rightly); and the release controller counts
exposure from the first shift, not from provision.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, NotReadyError, TargetError
from releasegate.core.types import (
    Endpoint,
    LiveState,
    Promotion,
    Role,
    Slot,
    SwitchResult,
    TrafficSplit,
    WorkloadStatus,
)
from releasegate.core.waiting import poll_until
from releasegate.targets.kubernetes import argo, rollout
from releasegate.targets.kubernetes.access import EndpointResolver
from releasegate.targets.kubernetes.api import KubeApi, NotFoundError
from releasegate.targets.kubernetes.argo import RolloutDriver, RolloutStop
from releasegate.targets.kubernetes.base import KubernetesBase
from releasegate.targets.kubernetes.layout import image_with_tag

JsonObj = dict[str, Any]

STABLE, CANARY = "stable", "canary"
ACTIVE, PREVIEW = "active", "preview"
HASH_LABEL = "rollouts-pod-template-hash"  # v1alpha1.DefaultRolloutUniqueLabelKey
POLL_S = 0.25


def _meta(obj: JsonObj) -> JsonObj:
    return dict(obj.get("metadata") or {})


def _containers(obj: JsonObj) -> list[JsonObj]:
    return list((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])


def tag_of(image: str) -> str | None:
    """`registry:5000/shop/web:v2@sha256:..` -> `v2`; None without a tag."""
    image = image.split("@", 1)[0]
    slash, colon = image.rfind("/"), image.rfind(":")
    return image[colon + 1:] if colon > slash else None


def _is_indefinite_pause(step: JsonObj | None) -> bool:
    pause = (step or {}).get("pause")
    return isinstance(pause, dict) and pause.get("duration") is None


def _describe_step(step: JsonObj | None) -> str:
    if step is None:
        return "nothing (the last step)"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return "pause {}" if duration is None else f"pause with duration {duration}"
    return ", ".join(f"{key}" for key in step) or "an empty step"


def _available(rs: JsonObj | None) -> int:
    return int(((rs or {}).get("status") or {}).get("availableReplicas") or 0)


class ArgoRolloutTarget(KubernetesBase):
    """A Rollout driven through its own steps (canary) or its pre-promotion pause (blue-green)."""

    def __init__(self, config: Config, api: KubeApi, *, resolver: EndpointResolver | None = None,
                 poll_interval_s: float = POLL_S) -> None:
        super().__init__(config, api, resolver=resolver)
        self.rollout_name = config.kubernetes.rollout_name or config.app.name
        self.driver = RolloutDriver(api, poll_interval_s=poll_interval_s)
        self.poll_interval_s = poll_interval_s
        self.strategy = ""  # "canary" | "blueGreen", read in check_layout
        self.container = ""
        self.stable_service = ""  # canary: stableService; blue-green: activeService
        self.candidate_service = ""  # canary: canaryService; blue-green: previewService
        # The stable image when this target deployed the candidate: what a rollback puts back after a canary
        # that completed at its last setWeight (100), when the Rollout no longer knows the old version.
        self._restore_image: str | None = None
        # The version this target deployed, until promote: after a canary's last step (setWeight 100) the
        # Rollout has made it its stable ReplicaSet, but for the release it is still the candidate at 100%.
        self._candidate_version: str | None = None

    # -- slots --------------------------------------------------------------------------------------
    @property
    def canary(self) -> bool:
        return self.strategy == "canary"

    @property
    def live_slot_name(self) -> Slot:
        return STABLE if self.canary else ACTIVE

    @property
    def candidate_slot_name(self) -> Slot:
        return CANARY if self.canary else PREVIEW

    def exposes_candidate_at_provision(self) -> bool:
        """A canary Rollout applies its first setWeight as soon as the image changes (basic canary scales
        pods by the weight; Argo's setCanaryScale, which could hold traffic back, needs a traffic router)."""
        return self.canary

    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        """`canary` for a canary Rollout, `preview` for a blue-green one, whatever serves now."""
        return self.candidate_slot_name

    def _where(self) -> str:
        return f"Rollout {self._ns()}/{self.rollout_name}"

    def describe(self) -> str:
        strategy = f" ({self.strategy})" if self.strategy else ""
        return f"{super().describe()}, {self._where()}{strategy}"

    # -- preflight ----------------------------------------------------------------------------------
    def check_layout(self) -> None:
        """The Rollout, its strategy and steps, and its Services; only reads are sent."""
        self._check_namespace()
        ro = self.driver.read(self.rollout_name)
        self.strategy = argo.strategy_of(ro)
        wanted = self.config.release.strategy
        if wanted == "canary" and not self.canary:
            raise ConfigError(f"{self._where()} uses the blueGreen strategy but the release strategy is canary; "
                              "run with --strategy blue-green (release.strategy = \"blue-green\") or give the "
                              "Rollout spec.strategy.canary")
        if wanted == "blue-green" and self.canary:
            raise ConfigError(f"{self._where()} uses the canary strategy but the release strategy is blue-green; "
                              "run with --strategy canary (release.strategy = \"canary\") or give the Rollout "
                              "spec.strategy.blueGreen")
        spec = dict(ro.get("spec") or {})
        if spec.get("workloadRef"):
            raise ConfigError(f"{self._where()} references a Deployment (spec.workloadRef); releasegate drives "
                              "Rollouts with their own spec.template: move the pod template into the Rollout")
        self.container = self._container_name(ro)
        if tag_of(self._template_image(ro)) is None:
            raise ConfigError(f"the image {self._template_image(ro)!r} of container {self.container!r} in "
                              f"{self._where()} has no tag; releasegate reads the version from the tag")
        if self.canary:
            self._check_canary(ro)
            service = self.layout.service
        else:
            service, preview = self._check_blue_green(ro)
            self.layout = dataclasses.replace(self.layout, service=service, preview_service=preview)
        self.layout = dataclasses.replace(self.layout, preview_service=self.candidate_service)
        for name in dict.fromkeys((service, self.stable_service, self.candidate_service)):
            try:
                self._get_service(name)
            except NotFoundError:
                raise ConfigError(f"Service {self._ns()}/{name} (named by {self._where()} or kubernetes.service) "
                                  "does not exist; create it or fix the name") from None
        self.resolver.close()
        slot_services = {self.live_slot_name: self.stable_service, self.candidate_slot_name: self.candidate_service}
        self.resolver = EndpointResolver(self.config, self.layout, service_port=self._service_port,
                                         slot_service=slot_services.__getitem__)

    def _check_canary(self, ro: JsonObj) -> None:
        steps = argo.canary_steps(ro)
        weights = [int(step["setWeight"]) for step in steps if "setWeight" in step]
        configured = list(self.config.canary.steps)
        if weights != configured:
            raise ConfigError(f"canary.steps {configured} differ from the setWeight steps {weights} of "
                              f"{self._where()}; releasegate runs each step's analysis at the Rollout's own "
                              f"pauses, so make them equal (canary.steps = {weights}, or change the Rollout)")
        for index, step in enumerate(steps):
            if "setWeight" not in step or int(step["setWeight"]) >= 100:
                continue
            following = steps[index + 1] if index + 1 < len(steps) else None
            if not _is_indefinite_pause(following):
                raise ConfigError(f"step {index} of {self._where()} (setWeight {step['setWeight']}) is followed by "
                                  f"{_describe_step(following)}; releasegate runs that step's analysis while the "
                                  "Rollout waits, so put `- pause: {}` right after it")
        canary = dict((dict(ro.get("spec") or {}).get("strategy") or {}).get("canary") or {})
        missing = [key for key in ("canaryService", "stableService") if not canary.get(key)]
        if missing:
            raise ConfigError(f"{self._where()} sets no spec.strategy.canary.{' nor .'.join(missing)}; the smoke "
                              "stage must reach the candidate alone and the analysis the stable version alone: "
                              "create a Service for each and name them there")
        self.stable_service = str(canary["stableService"])
        self.candidate_service = str(canary["canaryService"])

    def _check_blue_green(self, ro: JsonObj) -> tuple[str, str]:
        blue_green = dict((dict(ro.get("spec") or {}).get("strategy") or {}).get("blueGreen") or {})
        if blue_green.get("autoPromotionEnabled") is not False:
            raise ConfigError(f"{self._where()} promotes by itself (spec.strategy.blueGreen.autoPromotionEnabled "
                              "is not false): it would switch the active Service before any verification; set "
                              "autoPromotionEnabled: false")
        active, preview = argo.blue_green_services(ro)
        if preview is None:
            raise ConfigError(f"{self._where()} has no spec.strategy.blueGreen.previewService; the smoke stage must "
                              "reach the candidate alone: create a preview Service and name it there")
        self.stable_service, self.candidate_service = active, preview
        return active, preview

    def _container_name(self, ro: JsonObj) -> str:
        containers = _containers(ro)
        names = [str(c.get("name")) for c in containers]
        wanted = self.config.kubernetes.container
        if not wanted:
            if not names:
                raise ConfigError(f"{self._where()} has no containers in spec.template")
            return names[0]
        if wanted not in names:
            raise ConfigError(f"{self._where()} has no container {wanted!r} (kubernetes.container); it has: "
                              f"{', '.join(names)}")
        return wanted

    # -- reading ------------------------------------------------------------------------------------
    def _read(self) -> JsonObj:
        return self.driver.read(self.rollout_name)

    def _template_image(self, obj: JsonObj) -> str:
        container = self.container or (_containers(obj)[0]["name"] if _containers(obj) else "")
        for entry in _containers(obj):
            if entry.get("name") == container:
                return str(entry.get("image", ""))
        return ""

    def _version(self, obj: JsonObj | None) -> str | None:
        return tag_of(self._template_image(obj)) if obj else None

    def _replicasets(self, ro: JsonObj) -> dict[str, JsonObj]:
        """The Rollout's ReplicaSets by pod-template hash (owned by its uid)."""
        match = ((ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(match.items()))
        listing = self.api.call("list", "replicasets", self.apps.list_namespaced_replica_set, self._ns(),
                                label_selector=selector)
        uid = _meta(ro).get("uid")
        owned: dict[str, JsonObj] = {}
        for rs in listing.get("items") or []:
            if any(ref.get("uid") == uid for ref in _meta(rs).get("ownerReferences") or []):
                owned[str((_meta(rs).get("labels") or {}).get(HASH_LABEL, ""))] = rs
        return owned

    @staticmethod
    def _hashes(ro: JsonObj) -> tuple[str, str]:
        """(stable, current) pod-template hashes from the Rollout's status."""
        status = dict(ro.get("status") or {})
        return str(status.get("stableRS") or ""), str(status.get("currentPodHash") or "")

    def _live_hash(self, ro: JsonObj) -> str:
        """The ReplicaSet users reach: canary the stable one; blue-green the one the active Service selects."""
        stable, _ = self._hashes(ro)
        if self.canary:
            return stable
        return str(((ro.get("status") or {}).get("blueGreen") or {}).get("activeSelector") or stable)

    def _updating(self, ro: JsonObj) -> bool:
        """An update runs: a candidate ReplicaSet other than the live one, not aborted."""
        live = self._live_hash(ro)
        _, current = self._hashes(ro)
        return bool(live and current and current != live and not (ro.get("status") or {}).get("abort"))

    @staticmethod
    def _routed(ro: JsonObj) -> bool:
        """The canary Rollout has a traffic router (spec.strategy.canary.trafficRouting)."""
        canary = (((ro.get("spec") or {}).get("strategy") or {}).get("canary")) or {}
        return canary.get("trafficRouting") is not None

    def _effective_weight(self, ro: JsonObj, rss: dict[str, JsonObj]) -> int:
        """The candidate's real share of the app Service's traffic, in percent.

        With trafficRouting, what the router was told (`status.canary.weights.canary.weight`); without it (basic
        canary) the Service divides by ready pods, so the canary's share of the available pods.
        """
        if self._routed(ro):
            weights = (((ro.get("status") or {}).get("canary") or {}).get("weights")) or {}
            return int((weights.get("canary") or {}).get("weight") or 0)
        stable, current = self._hashes(ro)
        candidate = _available(rss.get(current)) if current != stable else 0
        total = candidate + _available(rss.get(stable))
        return round(100 * candidate / total) if total else 0

    def live_state(self) -> LiveState:
        ro = self._read()
        rss = self._replicasets(ro)
        live_hash = self._live_hash(ro)
        live_version = self._version(rss.get(live_hash)) or self._version(ro)
        candidate_version = self._version(ro) if self._updating(ro) else None
        versions: dict[Slot, str | None] = {self.live_slot_name: live_version,
                                            self.candidate_slot_name: candidate_version}
        traffic = TrafficSplit.all_to(self.live_slot_name)
        if self.canary and candidate_version is not None:
            weight = self._effective_weight(ro, rss)
            traffic = TrafficSplit.split(STABLE, CANARY, weight)
        elif self.canary and self._completed_by_last_step(ro, live_version):
            versions[CANARY] = live_version
            traffic = TrafficSplit.split(STABLE, CANARY, 100)
        annotations = self._get_service(self.layout.service)["metadata"].get("annotations") or {}
        return LiveState(app=self.layout.app, traffic=traffic, versions=versions,
                         previous_version=annotations.get(self.layout.annotation("previous-version")))

    def _completed_by_last_step(self, ro: JsonObj, stable_version: str | None) -> bool:
        """The candidate this target deployed became the stable ReplicaSet through the Rollout's last step
        (setWeight 100), and promote has not run yet: the release still has it at 100% as a candidate."""
        return (self._candidate_version is not None and stable_version == self._candidate_version
                and not (ro.get("status") or {}).get("abort"))

    def _slot_hash(self, ro: JsonObj, slot: Slot) -> str | None:
        if slot == self.live_slot_name:
            return self._live_hash(ro) or None
        if slot == self.candidate_slot_name:
            return self._hashes(ro)[1] if self._updating(ro) else None
        raise ConfigError(f"{slot!r} is not a slot of {self._where()}; its slots are {self.live_slot_name} "
                          f"and {self.candidate_slot_name}")

    def _pods_of(self, ro: JsonObj, pod_hash: str) -> list[JsonObj]:
        match = ((ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = {**match, HASH_LABEL: pod_hash}
        pods = self.api.call("list", "pods", self.core.list_namespaced_pod, self._ns(),
                             label_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        return list(pods.get("items") or [])

    def workload_status(self, slot: Slot) -> WorkloadStatus:
        ro = self._read()
        pod_hash = self._slot_hash(ro, slot)
        rs = self._replicasets(ro).get(pod_hash) if pod_hash else None
        if rs is None or pod_hash is None:
            return WorkloadStatus(slot=slot, version=None, replicas=0, ready_replicas=0)
        pods = self._pods_of(ro, pod_hash)
        return WorkloadStatus(slot=slot, version=self._version(rs),
                              replicas=int((rs.get("spec") or {}).get("replicas") or 0),
                              ready_replicas=int((rs.get("status") or {}).get("readyReplicas") or 0),
                              problems=tuple(rollout.pod_problems(pods, [])), restarts=rollout.pod_restarts(pods))

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        """Candidate: canaryService / previewService; baseline: stableService / activeService; service: the
        app's Service (canary) or activeService (blue-green)."""
        state = self.live_state()
        baseline = self.live_slot_name if candidate_slot != self.live_slot_name else None
        return self.resolver.endpoints(state, candidate_slot, baseline_slot=baseline)

    # -- acting -------------------------------------------------------------------------------------
    def _timeout(self) -> float:
        return self.config.kubernetes.ready_timeout_s

    def deploy(self, slot: Slot, version: str) -> None:
        """The new image tag on the Rollout (`kubectl argo rollouts set image`); its controller does the rest."""
        if slot != self.candidate_slot_name:
            raise ConfigError(f"the candidate of {self._where()} runs in slot {self.candidate_slot_name}, not {slot}")
        ro = self._read()
        rss = self._replicasets(ro)
        stable_rs = rss.get(self._live_hash(ro))
        self._restore_image = self._template_image(stable_rs) if stable_rs else self._template_image(ro)
        self._candidate_version = version
        self.driver.set_image(self.rollout_name, self.container, image_with_tag(self._template_image(ro), version))

    def wait_ready(self, slot: Slot, timeout_s: float) -> WorkloadStatus:
        """Until the Rollout waits for releasegate: its first indefinite pause (canary) or its BlueGreenPause,
        with the candidate Service (canaryService / previewService) selecting the candidate's pods.

        Raises NotReadyError with the Rollout's message and the pods' problems when it degrades (progress
        deadline) or the deadline falls; TargetError when it completed without pausing (the candidate then
        serves every user unverified: the Rollout's steps were changed since preflight).
        """
        if slot != self.candidate_slot_name:
            raise ConfigError(f"the candidate of {self._where()} runs in slot {self.candidate_slot_name}, not {slot}")
        timeout_s = min(timeout_s, self.config.kubernetes.ready_timeout_s)
        deadline = time.monotonic() + timeout_s
        after: int | None = None
        while True:
            try:
                stop = self.driver.wait_for_pause(self.rollout_name, max(0.0, deadline - time.monotonic()),
                                                  after_step=after)
            except NotReadyError:
                raise self._not_ready(f"{self._where()} did not pause for verification within {timeout_s:g}s") \
                    from None
            if stop.state in (argo.ABORTED, argo.DEGRADED):
                raise self._not_ready(f"{self._where()} is {stop.state}")
            if stop.completed:
                raise TargetError(f"{self._where()} completed its update without pausing: the candidate already "
                                  "serves all users, unverified; restore the Rollout's pause steps")
            if stop.indefinite:
                break
            after = stop.step_index  # a timed pause: the Rollout goes on by itself
        self._wait_selector(self.candidate_service, stop.current_pod_hash, deadline)
        return self.workload_status(slot)

    def _not_ready(self, why: str) -> NotReadyError:
        """`why`, the Rollout's phase and message, and each candidate pod's reason with its latest warning."""
        ro = self._read()
        phase, message = argo.rollout_phase(ro)
        _, current = self._hashes(ro)
        pods = self._pods_of(ro, current) if current else []
        problems = rollout.pod_problems(pods, self._events_for(pods))
        return NotReadyError(f"{why} ({phase}" + (f": {message}" if message else "") + ")"
                             + (f"; {'; '.join(problems)}" if problems else ""))

    def _wait_selector(self, service: str, pod_hash: str, deadline: float) -> None:
        """Until the Rollout points `service` at the ReplicaSet `pod_hash` (it does once that one is available)."""
        seen: list[str] = []

        def selected() -> bool | None:
            selector = self._get_service(service)["spec"].get("selector") or {}
            seen[:] = [str(selector.get(HASH_LABEL, ""))]
            return True if seen[0] == pod_hash else None

        if poll_until(selected, timeout_s=max(0.0, deadline - time.monotonic()),
                      interval_s=self.poll_interval_s) is None:
            raise NotReadyError(f"Service {self._ns()}/{service} still selects {HASH_LABEL}="
                                f"{seen[0] if seen else '?'}, not the candidate's {pod_hash}; {self._where()} "
                                "has not switched it")

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        """Canary: move the Rollout to the pause after `setWeight: w` (promoting through earlier pauses), or
        abort for all traffic on the stable slot. Blue-green: only all traffic to the active slot (abort)."""
        unknown = set(split.weights) - {self.live_slot_name, self.candidate_slot_name}
        if unknown:
            raise ConfigError(f"{', '.join(sorted(unknown))} is not a slot of {self._where()}; its slots are "
                              f"{self.live_slot_name} and {self.candidate_slot_name}")
        previous = self.live_state().traffic
        started = time.monotonic()
        weight = split.weights.get(self.candidate_slot_name, 0)
        if weight == 0:
            self._back_to_stable()
        elif not self.canary:
            raise ConfigError(f"{self._where()} is blue-green: its candidate gets traffic only by promote")
        else:
            self._advance_to(weight)
        ro = self._read()
        rss = self._replicasets(ro)
        self._wait_service_endpoints(ro, rss)
        traffic = TrafficSplit.all_to(self.live_slot_name)
        if self.canary and self._updating(ro):
            traffic = TrafficSplit.split(STABLE, CANARY, self._effective_weight(ro, rss))
        elif self.canary and weight == 100:
            traffic = TrafficSplit.split(STABLE, CANARY, 100)  # the last step completed the Rollout
        return SwitchResult(traffic=traffic, previous=previous, converged_ms=(time.monotonic() - started) * 1000)

    def _advance_to(self, weight: int) -> None:
        """Promote through indefinite pauses (and wait through timed ones) until the Rollout pauses at the step
        whose setWeight is `weight` (or completes, for 100)."""
        ro = self._read()
        weights = [int(step["setWeight"]) for step in argo.canary_steps(ro) if "setWeight" in step]
        if weight not in weights:
            raise ConfigError(f"canary weight {weight} is not a setWeight step of {self._where()} ({weights})")
        deadline = time.monotonic() + self._timeout()
        stop = argo.describe_stop(ro)
        while True:
            if stop is None:
                stop = self.driver.wait_for_pause(self.rollout_name, max(0.0, deadline - time.monotonic()))
            stop.raise_for_failure()
            if stop.completed:
                if weight == 100 and stop.current_pod_hash == stop.stable_pod_hash:
                    return
                raise TargetError(f"{self._where()} is not updating (it completed); it cannot move to "
                                  f"setWeight {weight}")
            if stop.weight > weight:
                raise TargetError(f"{self._where()} is already past setWeight {weight} (at step {stop.step_index}, "
                                  f"weight {stop.weight})")
            if stop.indefinite and stop.weight == weight:
                return
            if stop.indefinite:
                self.driver.promote(self.rollout_name)
            stop = self.driver.wait_for_pause(self.rollout_name, max(0.0, deadline - time.monotonic()),
                                              after_step=stop.step_index)

    def _back_to_stable(self) -> None:
        """All traffic on the stable ReplicaSet: abort a running update; after a canary that completed at its
        last step (the candidate is the stable ReplicaSet now), roll the previous image out again."""
        ro = self._read()
        if self._updating(ro):
            self.driver.abort(self.rollout_name)
            self._wait_aborted()
            return
        if (ro.get("status") or {}).get("abort"):
            self._wait_aborted()
            return
        if self._restore_image and self._template_image(ro) != self._restore_image:
            self._roll_out(self._restore_image)

    def _wait_aborted(self) -> None:
        """Until the Rollout shows the abort and the stable ReplicaSet alone serves: canary, the canary scaled
        to 0 (and a router's canary weight 0); blue-green, the active Service on the stable ReplicaSet."""
        last: list[str] = []

        def back_on_stable() -> bool | None:
            ro = self._read()
            stop = argo.describe_stop(ro)
            rss = self._replicasets(ro)
            stable, current = self._hashes(ro)
            replicas = int((ro.get("spec") or {}).get("replicas", 1) or 0)
            candidate_pods = _available(rss.get(current)) if current != stable else 0
            last[:] = [f"{stop.state if stop else 'moving'}, candidate pods available {candidate_pods}, stable "
                       f"{_available(rss.get(stable))}/{replicas}"]
            done = stop is not None and stop.state == argo.ABORTED and _available(rss.get(stable)) >= replicas
            if self.canary:
                # With a traffic router the weight is what counts (the canary keeps its pods for
                # abortScaleDownDelaySeconds); without one, the Service divides by pods, so none may be left.
                done = done and self._effective_weight(ro, rss) == 0 and (self._routed(ro) or candidate_pods == 0)
            else:
                # The preview keeps its pods for abortScaleDownDelaySeconds; users are on the active Service.
                done = done and self._live_hash(ro) == stable
            return True if done else None

        if poll_until(back_on_stable, timeout_s=self._timeout(), interval_s=self.poll_interval_s) is None:
            raise TargetError(f"{self._where()} did not return to its stable ReplicaSet within "
                              f"{self._timeout():g}s after the abort ({last[0] if last else 'never read'})")

    def _roll_out(self, image: str) -> RolloutStop:
        """Set `image` and promote it fully past every step; returns once the Rollout is Healthy with it."""
        updated = self.driver.set_image(self.rollout_name, self.container, image)
        generation = int(_meta(updated).get("generation") or 0)

        def observed() -> JsonObj | None:
            ro = self._read()
            seen = str((ro.get("status") or {}).get("observedGeneration") or "0")
            return ro if seen.isdigit() and int(seen) >= generation else None

        ro = poll_until(observed, timeout_s=self._timeout(), interval_s=self.poll_interval_s)
        if ro is None:
            raise TargetError(f"the Argo Rollouts controller did not pick up the image {image} on {self._where()} "
                              f"within {self._timeout():g}s; is it running?")
        stable, current = self._hashes(ro)
        if stable != current:  # the same image as the stable ReplicaSet is a rollback to stable: no steps
            self.driver.promote(self.rollout_name, full=True)
        return self._wait_completed(tag_of(image) or "")

    def _wait_completed(self, version: str) -> RolloutStop:
        """Until the Rollout is Healthy with `version` as its stable ReplicaSet (TargetError if it aborts)."""
        last: list[str] = []

        def completed() -> RolloutStop | None:
            ro = self._read()
            stop = argo.describe_stop(ro)
            phase, message = argo.rollout_phase(ro)
            last[:] = [f"{phase}" + (f": {message}" if message else "")]
            if stop is None:
                return None
            if stop.state in (argo.ABORTED, argo.DEGRADED):
                stop.raise_for_failure()
            if stop.completed and stop.current_pod_hash == stop.stable_pod_hash and self._version(ro) == version:
                return stop
            return None

        stop = poll_until(completed, timeout_s=self._timeout(), interval_s=self.poll_interval_s)
        if stop is None:
            raise NotReadyError(f"{self._where()} did not complete with {version} within {self._timeout():g}s: "
                                f"{last[0] if last else 'never read'}")
        return stop

    def _wait_service_endpoints(self, ro: JsonObj, rss: dict[str, JsonObj]) -> None:
        """Until the app's Service lists exactly the ready pods of the ReplicaSets that have replicas."""
        if self._routed(ro):
            return  # a traffic router splits by weight; the Service keeps every pod
        hashes = {h for h, rs in rss.items() if int((rs.get("spec") or {}).get("replicas") or 0) > 0}
        if not self.canary:
            hashes = {self._live_hash(ro)}

        def wanted() -> set[str]:
            return {pod["metadata"]["name"] for h in sorted(hashes) for pod in self._pods_of(ro, h)
                    if not pod["metadata"].get("deletionTimestamp") and not rollout.pod_problems([pod], [])}

        self._wait_endpoints(wanted, f"the pods of {self._where()} ({', '.join(sorted(hashes))})")

    def promote(self, slot: Slot, version: str) -> Promotion:
        """All traffic to `version` for good, as the Rollout's stable ReplicaSet.

        Canary: `promote --full` (the remaining steps are skipped: every configured step was verified). Blue-green:
        `promote` (ends the BlueGreenPause; the Rollout switches activeService). When the Rollout does not run
        `version` (a rollback after promote: `promote(stable, previous_version)`), that image is set again and
        promoted fully. Returns once the Rollout is Healthy and the app's Service lists only the new pods.
        """
        if slot not in (self.live_slot_name, self.candidate_slot_name):
            raise ConfigError(f"{slot!r} is not a slot of {self._where()}")
        previous = self.live_state().traffic
        started = time.monotonic()
        ro = self._read()
        if self._version(ro) != version:
            self._roll_out(image_with_tag(self._template_image(ro), version))
            what = f"{version} rolled out again on {self._where()} (promote --full)"
        else:
            stable, current = self._hashes(ro)
            if stable != current:
                self.driver.promote(self.rollout_name, full=self.canary)
            self._wait_completed(version)
            what = f"{self._where()} promoted: {version} is its stable ReplicaSet"
        self._candidate_version = None  # promoted (or rolled back by promote): no candidate any more
        ro = self._read()
        self._wait_service_endpoints(ro, self._replicasets(ro))
        switch = SwitchResult(traffic=TrafficSplit.all_to(self.live_slot_name), previous=previous,
                              converged_ms=(time.monotonic() - started) * 1000)
        return Promotion(switch=switch, live_slot=self.live_slot_name, retired_slot=None, detail=what)

    def remove(self, slot: Slot) -> None:
        """Take the candidate away: abort the update if it still runs, then put the stable image back into the
        Rollout (a rollback to stable: no steps), so that it is Healthy again. Idempotent."""
        if slot != self.candidate_slot_name:
            raise ConfigError(f"only the candidate slot {self.candidate_slot_name} of {self._where()} can be "
                              f"removed, not {slot}")
        ro = self._read()
        stable, current = self._hashes(ro)
        if not stable or stable == current:
            return  # no candidate: never deployed, or already rolled back
        if not (ro.get("status") or {}).get("abort"):
            self.driver.abort(self.rollout_name)
        self._wait_aborted()
        ro = self._read()
        stable_rs = self._replicasets(ro).get(self._live_hash(ro))
        if stable_rs is None:
            raise TargetError(f"{self._where()} has no stable ReplicaSet {self._live_hash(ro)!r} to return to")
        self._roll_out(self._template_image(stable_rs))

    def scale_down(self, slot: Slot) -> None:
        """Nothing to do: Argo Rollouts scales an old ReplicaSet down itself (scaleDownDelaySeconds), and this
        target never hands finalize a slot to retire (Promotion.retired_slot is None)."""
