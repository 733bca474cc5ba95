"""Driving an Argo Rollouts `Rollout` (argoproj.io/v1alpha1): set the image, follow its steps, promote or abort.

The Rollout's own controller moves it through its steps (canary) or to its pre-promotion pause (blue-green);
this driver changes the pod template the way `kubectl argo rollouts set image` does, reads where the Rollout
stopped, and sends exactly the requests of `kubectl argo rollouts promote` and `abort`. Everything goes
through `KubeApi.call` (timeouts, retries of 429/5xx, error translation); Rollouts are custom objects, read and
written with `kubernetes.client.CustomObjectsApi` and the `/status` subresource.

Sources (repository argoproj/argo-rollouts), followed literally where a request is concerned:
- `pkg/kubectl-argo-rollouts/cmd/set/set_image.go`: GET, replace the image of every init/app/ephemeral
  container named CONTAINER (or all with `*`), PUT the whole object (of the `spec.workloadRef` Deployment
  when there is one); up to 5 attempts on a 409 conflict.
- `pkg/kubectl-argo-rollouts/cmd/promote/promote.go` (`PromoteRollout`, `getPatches`): merge patches; the
  status part goes to the `status` subresource first, and only if that answers 404 (Rollouts v0.9, no status
  subresource) the "unified" spec+status patch goes to the main resource; a spec part goes to the main
  resource. `promote_patches` below is `getPatches` for the plain and the `--full` promotion.
- `pkg/kubectl-argo-rollouts/cmd/abort/abort.go` (`AbortRollout`): `{"status":{"abort":true}}` as a merge
  patch of the `status` subresource, then of the main resource if that answers 404.
- `utils/rollout/rolloututil.go` (`GetRolloutPhase`, `IsUnpausing`): a phase counts only once
  `status.observedGeneration` equals `metadata.generation` and no promotion is still being picked up.
- `utils/replicaset/canary.go` (`GetCurrentCanaryStep`, `GetCurrentSetWeight`): the current step and its
  canary weight (the last `setWeight` at or before it; 0 once aborted, 100 past the last step).
- `pkg/apis/rollouts/v1alpha1/types.go`: the field names (`pauseConditions`, `controllerPause`,
  `currentStepIndex`, `stableRS`, `currentPodHash`, `abort`, `promoteFull`, `phase`, `message`).

The kubectl plugin writes its patches as Go string constants (`{"status":{"pauseConditions":null}}`); the
Python client serialises ours with `json.dumps`, so the bytes differ in whitespace only: the JSON documents
are the same.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import AppsV1Api, CustomObjectsApi

from releasegate.core.errors import ConfigError, NotReadyError, TargetError
from releasegate.core.waiting import poll_until
from releasegate.targets.kubernetes.api import CONTENT_TYPES, KubeApi, NotFoundError, retry_on_conflict

JsonObj = dict[str, Any]

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "rollouts"
CRD_NAME = f"{PLURAL}.{GROUP}"
INSTALL_URL = "https://argo-rollouts.readthedocs.io/en/stable/installation/"

# set_image.go: maxAttempts
SET_IMAGE_ATTEMPTS = 5

# promote.go: the patch constants, as JSON documents.
UNPAUSE_PATCH: JsonObj = {"spec": {"paused": False}}
CLEAR_PAUSE_CONDITIONS_PATCH: JsonObj = {"status": {"pauseConditions": None}}
UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS_PATCH: JsonObj = {"spec": {"paused": False}, "status": {"pauseConditions": None}}
PROMOTE_FULL_PATCH: JsonObj = {"status": {"promoteFull": True}}
# abort.go: abortPatch
ABORT_PATCH: JsonObj = {"status": {"abort": True}}

# types.go: PauseReason values
CANARY_PAUSE_STEP = "CanaryPauseStep"
BLUE_GREEN_PAUSE = "BlueGreenPause"
INCONCLUSIVE_REASONS = ("InconclusiveAnalysisRun", "InconclusiveExperiment")

PAUSED = "paused"
COMPLETED = "completed"
DEGRADED = "degraded"
ABORTED = "aborted"


def clear_pause_conditions_patch_with_step(index: int) -> JsonObj:
    """promote.go: clearPauseConditionsPatchWithStep."""
    return {"status": {"pauseConditions": None, "currentStepIndex": index}}


def unpause_and_clear_pause_conditions_patch_with_step(index: int) -> JsonObj:
    """promote.go: unpauseAndClearPauseConditionsPatchWithStep."""
    return {"spec": {"paused": False}, "status": {"pauseConditions": None, "currentStepIndex": index}}


def clear_pause_conditions_and_controller_pause_patch(index: int) -> JsonObj:
    """promote.go: clearPauseConditionsAndControllerPausePatch (an inconclusive canary analysis)."""
    return {"status": {"pauseConditions": None, "controllerPause": False, "currentStepIndex": index}}


@dataclass(frozen=True)
class PromotePatches:
    """What `kubectl argo rollouts promote` sends for a Rollout as it is now (None: that request is not sent).

    `status` goes to the status subresource; `unified` replaces `spec` when the status subresource answers 404;
    `spec` goes to the main resource.
    """

    spec: JsonObj | None
    status: JsonObj | None
    unified: JsonObj | None


def _status(rollout: JsonObj) -> JsonObj:
    return dict(rollout.get("status") or {})


def _spec(rollout: JsonObj) -> JsonObj:
    return dict(rollout.get("spec") or {})


def _strategy(rollout: JsonObj) -> JsonObj:
    return dict(_spec(rollout).get("strategy") or {})


def strategy_of(rollout: JsonObj) -> str:
    """`canary` or `blueGreen`; ConfigError for a Rollout with neither."""
    strategy = _strategy(rollout)
    if strategy.get("blueGreen") is not None:
        return "blueGreen"
    if strategy.get("canary") is not None:
        return "canary"
    name = (rollout.get("metadata") or {}).get("name", "?")
    raise ConfigError(f"Rollout {name!r} has neither spec.strategy.canary nor spec.strategy.blueGreen; give it one")


def canary_steps(rollout: JsonObj) -> list[JsonObj]:
    return list((_strategy(rollout).get("canary") or {}).get("steps") or [])


def current_step_index(rollout: JsonObj) -> int | None:
    """`GetCurrentCanaryStep`'s index: status.currentStepIndex, 0 when unset; None without canary steps."""
    if _strategy(rollout).get("canary") is None or not canary_steps(rollout):
        return None
    return int(_status(rollout).get("currentStepIndex") or 0)


def current_set_weight(rollout: JsonObj) -> int:
    """`GetCurrentSetWeight`: the canary weight of the current step."""
    if _status(rollout).get("abort"):
        return 0
    steps = canary_steps(rollout)
    index = current_step_index(rollout)
    if index is None or index >= len(steps):
        return 100
    for step in reversed(steps[: index + 1]):
        if "setWeight" in step:
            return int(step["setWeight"])
    return 0


def _inconclusive(rollout: JsonObj) -> bool:
    """promote.go: isInconclusive."""
    analysis = ((_status(rollout).get("canary") or {}).get("currentStepAnalysisRunStatus")) or {}
    return _strategy(rollout).get("canary") is not None and analysis.get("status") == "Inconclusive"


def promote_patches(rollout: JsonObj, *, full: bool = False) -> PromotePatches:
    """promote.go `getPatches` for `promote NAME` and `promote NAME --full` (the deprecated skip flags aside)."""
    status = _status(rollout)
    if full:
        if status.get("currentPodHash", "") != status.get("stableRS", ""):
            return PromotePatches(None, PROMOTE_FULL_PATCH, None)
        return PromotePatches(None, None, None)
    spec_patch = UNPAUSE_PATCH if _spec(rollout).get("paused") else None
    unified: JsonObj = UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS_PATCH
    status_patch: JsonObj | None = None
    paused = bool(status.get("pauseConditions"))
    steps = canary_steps(rollout)
    index = current_step_index(rollout)
    if _inconclusive(rollout) and paused and status.get("controllerPause"):
        if index is not None:
            next_index = index + 1 if index < len(steps) else index
            status_patch = clear_pause_conditions_and_controller_pause_patch(next_index)
    elif paused:
        status_patch = CLEAR_PAUSE_CONDITIONS_PATCH
    elif _strategy(rollout).get("canary") is not None and index is not None:
        # "we only want to clear pause conditions, or increment step index (never both)"
        next_index = index + 1 if index < len(steps) else index
        status_patch = clear_pause_conditions_patch_with_step(next_index)
        unified = unpause_and_clear_pause_conditions_patch_with_step(next_index)
    return PromotePatches(spec_patch, status_patch, unified)


def rollout_phase(rollout: JsonObj) -> tuple[str, str]:
    """`GetRolloutPhase`: the controller's phase and message, once it saw this generation and any promotion."""
    status = _status(rollout)
    observed = str(status.get("observedGeneration", ""))
    generation = int((rollout.get("metadata") or {}).get("generation") or 0)
    if observed.isdigit() and int(observed) < generation:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", "waiting for rollout to unpause"
    if status.get("phase"):
        return str(status["phase"]), str(status.get("message") or "")
    return "Progressing", "waiting for the Argo Rollouts controller to report a phase"


def blue_green_services(rollout: JsonObj) -> tuple[str, str | None]:
    """The active Service and the preview Service (None when the Rollout has none) of a blue-green Rollout."""
    blue_green = _strategy(rollout).get("blueGreen") or {}
    if not blue_green.get("activeService"):
        name = (rollout.get("metadata") or {}).get("name", "?")
        raise ConfigError(f"Rollout {name!r} is not a blue-green Rollout with spec.strategy.blueGreen.activeService")
    return str(blue_green["activeService"]), (str(blue_green["previewService"])
                                              if blue_green.get("previewService") else None)


@dataclass(frozen=True)
class RolloutStop:
    """Where a Rollout stopped moving: at a pause, completed, degraded or aborted.

    `step_index` is the canary step the Rollout is at (None for blue-green); `weight` the canary weight of that
    step (the last setWeight at or before it); `indefinite` says a pause waits for a promotion (`pause: {}`,
    a blue-green Rollout with `autoPromotionEnabled: false`, an inconclusive analysis, `spec.paused`) rather
    than for a duration. `message` is the Rollout's own (`status.message`).
    """

    state: str  # PAUSED | COMPLETED | DEGRADED | ABORTED
    name: str
    strategy: str
    phase: str
    message: str
    step_index: int | None = None
    step_count: int = 0
    weight: int = 0
    indefinite: bool = False
    pause_reasons: tuple[str, ...] = ()
    current_pod_hash: str = ""
    stable_pod_hash: str = ""

    @property
    def paused(self) -> bool:
        return self.state == PAUSED

    @property
    def completed(self) -> bool:
        return self.state == COMPLETED

    def raise_for_failure(self) -> None:
        """TargetError for an aborted Rollout, NotReadyError for a degraded one; nothing otherwise."""
        if self.state == ABORTED:
            raise TargetError(f"Rollout {self.name} was aborted: {self.message or self.phase}")
        if self.state == DEGRADED:
            raise NotReadyError(f"Rollout {self.name} is degraded: {self.message or self.phase}")


def describe_stop(rollout: JsonObj) -> RolloutStop | None:
    """Where the Rollout stopped, or None while it is still moving (or the controller has not caught up)."""
    name = str((rollout.get("metadata") or {}).get("name", ""))
    strategy = strategy_of(rollout)
    status = _status(rollout)
    phase, message = rollout_phase(rollout)
    steps = canary_steps(rollout)
    index = current_step_index(rollout)
    common: JsonObj = {
        "name": name,
        "strategy": strategy,
        "phase": phase,
        "message": message,
        "step_index": index,
        "step_count": len(steps),
        "weight": current_set_weight(rollout) if strategy == "canary" else 0,
        "current_pod_hash": str(status.get("currentPodHash", "")),
        "stable_pod_hash": str(status.get("stableRS", "")),
    }
    if phase == "Degraded":
        aborted = bool(status.get("abort")) or message.startswith("RolloutAborted")
        return RolloutStop(ABORTED if aborted else DEGRADED, **common)
    if status.get("abort"):
        return None  # an abort the controller has not acted on yet: the phase it shows is stale
    if phase == "Healthy":
        return RolloutStop(COMPLETED, **common)
    if phase != "Paused":
        return None
    reasons = tuple(str(c.get("reason", "")) for c in status.get("pauseConditions") or [])
    indefinite = bool(_spec(rollout).get("paused")) or any(r in INCONCLUSIVE_REASONS for r in reasons)
    if strategy == "canary" and CANARY_PAUSE_STEP in reasons and index is not None and index < len(steps):
        pause = steps[index].get("pause")
        indefinite = indefinite or (isinstance(pause, dict) and pause.get("duration") is None)
    if strategy == "blueGreen" and BLUE_GREEN_PAUSE in reasons:
        blue_green = _strategy(rollout).get("blueGreen") or {}
        indefinite = indefinite or blue_green.get("autoPromotionEnabled") is False
    if _spec(rollout).get("paused"):
        reasons = (*reasons, "manually paused")
    return RolloutStop(PAUSED, indefinite=indefinite, pause_reasons=reasons, **common)


def with_image(obj: JsonObj, container: str, image: str) -> JsonObj:
    """set_image.go `newRolloutSetImage`: a copy with the image of every matching container replaced."""
    updated = copy.deepcopy(obj)
    pod_spec = ((updated.get("spec") or {}).get("template") or {}).get("spec") or {}
    found = False
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for entry in pod_spec.get(field) or []:
            if entry.get("name") == container or container == "*":
                entry["image"] = image
                found = True
    if not found:
        kind = updated.get("kind", "object")
        name = (updated.get("metadata") or {}).get("name", "?")
        raise ConfigError(f'unable to find container named "{container}" in {kind} {name}; '
                          "set kubernetes.container to one of its containers")
    return updated


class RolloutDriver:
    """Set image, wait for pauses, promote and abort one namespace's Rollouts (requests as the kubectl plugin)."""

    def __init__(self, api: KubeApi, *, poll_interval_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.custom = CustomObjectsApi(api.client)
        self.apps = AppsV1Api(api.client)
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._sleep = sleep

    @property
    def namespace(self) -> str:
        return self.api.namespace

    # -- reads --------------------------------------------------------------------------------------------

    def read(self, name: str) -> JsonObj:
        """The Rollout as the API serves it; ConfigError when it (or the Rollout CRD) does not exist."""
        try:
            rollout: JsonObj = self.api.call("get", PLURAL, self.custom.get_namespaced_custom_object,
                                             GROUP, VERSION, self.namespace, PLURAL, name)
        except NotFoundError:
            raise self._missing(name) from None
        return rollout

    def _missing(self, name: str) -> ConfigError:
        """A 404 for a Rollout: is the CRD missing (the group is not served), or only this Rollout?"""
        try:
            listing = self.api.call("get", f"{GROUP}/{VERSION} discovery", self.custom.get_api_resources,
                                    GROUP, VERSION)
        except NotFoundError:
            listing = None
        if not any(r.get("name") == PLURAL for r in (listing or {}).get("resources") or []):
            return ConfigError(f"the Argo Rollouts CRD {CRD_NAME} is not installed in this cluster; install Argo "
                               f'Rollouts ({INSTALL_URL}) or drop kubernetes.workload = "rollout"')
        return ConfigError(f"Rollout {name!r} not found in namespace {self.namespace}; create it (or fix the app "
                           f'name) or drop kubernetes.workload = "rollout"')

    def wait_for_pause(self, name: str, timeout_s: float, *, after_step: int | None = None) -> RolloutStop:
        """Poll until the Rollout pauses, completes, degrades or is aborted; return where it stopped.

        A canary pause at step `after_step` or before is not reported (pass the step of the last pause to wait
        past a timed pause). NotReadyError, with the Rollout's phase and message, when `timeout_s` passes first.
        """
        last: list[JsonObj] = []

        def check() -> RolloutStop | None:
            rollout = self.read(name)
            last[:] = [rollout]
            stop = describe_stop(rollout)
            if stop is None:
                return None
            if (stop.paused and after_step is not None and stop.step_index is not None
                    and stop.step_index <= after_step):
                return None
            return stop

        stop = poll_until(check, timeout_s=timeout_s, interval_s=self.poll_interval_s, clock=self._clock,
                          sleep=self._sleep)
        if stop is None:
            phase, message = rollout_phase(last[0]) if last else ("unknown", "")
            raise NotReadyError(f"Rollout {name} neither paused nor finished within {timeout_s:g}s: "
                                f"{phase}" + (f": {message}" if message else ""))
        return stop

    # -- writes -------------------------------------------------------------------------------------------

    def set_image(self, name: str, container: str, image: str) -> JsonObj:
        """`kubectl argo rollouts set image NAME CONTAINER=IMAGE`: GET, replace the image, PUT (the workloadRef
        Deployment instead, when the Rollout has one); a 409 conflict starts over, 5 attempts in all."""

        def attempt() -> JsonObj:
            rollout = self.read(name)
            workload = _spec(rollout).get("workloadRef")
            if workload:
                deployment_name = str(workload.get("name", ""))
                deployment = self.api.call("get", "deployments", self.apps.read_namespaced_deployment,
                                           deployment_name, self.namespace)
                updated: JsonObj = self.api.call("update", "deployments", self.apps.replace_namespaced_deployment,
                                                 deployment_name, self.namespace,
                                                 with_image(deployment, container, image))
                return updated
            replaced: JsonObj = self.api.call("update", PLURAL, self.custom.replace_namespaced_custom_object,
                                              GROUP, VERSION, self.namespace, PLURAL, name,
                                              with_image(rollout, container, image))
            return replaced

        return retry_on_conflict(attempt, attempts=SET_IMAGE_ATTEMPTS)

    def promote(self, name: str, *, full: bool = False) -> JsonObj:
        """`kubectl argo rollouts promote NAME [--full]`: the requests of promote.go `PromoteRollout`."""
        rollout = self.read(name)
        patches = promote_patches(rollout, full=full)
        spec_patch = patches.spec
        if patches.status is not None:
            try:
                rollout = self._merge_patch(name, patches.status, subresource="status")
            except NotFoundError:
                # Rollouts v0.9 has no status subresource: one patch of spec and status together.
                spec_patch = patches.unified
        if spec_patch is not None:
            try:
                rollout = self._merge_patch(name, spec_patch)
            except NotFoundError:
                raise self._missing(name) from None
        return rollout

    def abort(self, name: str) -> JsonObj:
        """`kubectl argo rollouts abort NAME`: abort.go `AbortRollout` (status subresource, then main resource)."""
        try:
            return self._merge_patch(name, ABORT_PATCH, subresource="status")
        except NotFoundError:
            pass
        try:
            return self._merge_patch(name, ABORT_PATCH)
        except NotFoundError:
            raise self._missing(name) from None

    def _merge_patch(self, name: str, body: JsonObj, *, subresource: str = "") -> JsonObj:
        if subresource == "status":
            function = self.custom.patch_namespaced_custom_object_status
        else:
            function = self.custom.patch_namespaced_custom_object
        resource = f"{PLURAL}/{subresource}" if subresource else PLURAL
        patched: JsonObj = self.api.call("patch", resource, function, GROUP, VERSION, self.namespace, PLURAL, name,
                                         body, _content_type=CONTENT_TYPES["merge"])
        return patched
