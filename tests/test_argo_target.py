"""The Argo Rollouts target (kubernetes.workload = "rollout") against the fake API server, over real HTTP
through the official client, with the fake's Rollout CRD and its small Argo Rollouts controller.

Golden request bodies: the literals below are the Go string constants of the kubectl plugin
(repository argoproj/argo-rollouts), sent with types.MergePatchType to the Rollout's "status" subresource:
- pkg/kubectl-argo-rollouts/cmd/promote/promote.go: clearPauseConditionsPatch, promoteFullPatch;
- pkg/kubectl-argo-rollouts/cmd/abort/abort.go: abortPatch.
They are compared as JSON documents (the Python client re-serialises bodies with json.dumps).

The releases are driven at the Target level in the release controller's order (plugins/controller.py):
open (preflight), live_state, candidate_slot, acquire_lock, record_release_state, deploy, wait_ready,
endpoints, set_traffic per step, promote, record_release_state, release_lock; and for a rollback the
controller's _undo: set_traffic(all_to(stable)), endpoints(None), remove(candidate).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from releasegate.core.config import Config, parse_config
from releasegate.core.errors import ConfigError, NotReadyError
from releasegate.core.types import LockHolder, Phase, ReleaseState, Role, TrafficSplit
from releasegate.targets.kubernetes.argo_target import ArgoRolloutTarget
from tests import charts
from tests.fakekube import FakeKube
from tests.k8s_verbs import ROOT
from tests.test_argo_rollouts import rollout_manifest, service
from tests.waiting import wait_until

NS = "shop"
APP = "web"
ROLLOUT_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/{APP}"
MERGE = "application/merge-patch+json"
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
CANARY_SERVICES = (APP, f"{APP}-stable", f"{APP}-canary")
CANARY_STRATEGY = {"canary": {"canaryService": f"{APP}-canary", "stableService": f"{APP}-stable", "steps": STEPS}}
BLUE_GREEN_STRATEGY = {"blueGreen": {"activeService": APP, "previewService": f"{APP}-preview",
                                     "autoPromotionEnabled": False}}
RULES_FILE = ROOT / "charts" / "canary-app" / "files" / "rollout-rules.yaml"

# promote.go and abort.go, verbatim.
CLEAR_PAUSE_CONDITIONS = '{"status":{"pauseConditions":null}}'
PROMOTE_FULL = '{"status":{"promoteFull":true}}'
ABORT = '{"status":{"abort":true}}'


# -- set-up ---------------------------------------------------------------------------------------------

def seed(fake: FakeKube, strategy: dict[str, Any], *, services: tuple[str, ...] = CANARY_SERVICES,
         replicas: int = 4) -> None:
    """The CRD, the Services and a Rollout at v1, Healthy; the request log starts empty."""
    fake.install_crd("rollouts.argoproj.io")
    fake.seed_namespace(NS)
    for name in services:
        fake.create(service(name))
    fake.create(rollout_manifest(strategy, replicas=replicas))
    fake.wait_for(lambda: phase(fake) == "Healthy", timeout=10)
    fake.settle()
    fake.clear_requests()


def rollout(fake: FakeKube) -> dict[str, Any]:
    obj = fake.get_object("rollouts", NS, APP)
    assert obj is not None
    return obj


def phase(fake: FakeKube) -> str:
    obj = fake.get_object("rollouts", NS, APP)
    return str(((obj or {}).get("status") or {}).get("phase", ""))


def serving_images(fake: FakeKube, service_name: str = APP) -> set[str]:
    """The images of the pods behind a Service's ready endpoints: what actually serves its traffic."""
    ips = set(fake.endpoints_ready(NS, service_name))
    return {pod["spec"]["containers"][0]["image"] for pod in fake.list_objects("pods", NS)
            if (pod.get("status") or {}).get("podIP") in ips}


def selected_hash(fake: FakeKube, service_name: str) -> str | None:
    obj = fake.get_object("services", NS, service_name)
    assert obj is not None
    return (obj["spec"].get("selector") or {}).get("rollouts-pod-template-hash")


def rollout_writes(fake: FakeKube) -> list[tuple[str, str, Any]]:
    """Every write to the Rollout: (method, path suffix, body) with the image alone for a PUT.

    A PUT refused with 409 (the Rollouts controller wrote the object between the read and the write) is left out:
    the client reads again and sends it anew, and which writes race the controller is a matter of timing."""
    out: list[tuple[str, str, Any]] = []
    for r in fake.write_requests():
        if not r.path.startswith(ROLLOUT_PATH) or r.status == 409:
            continue
        suffix = r.path[len(ROLLOUT_PATH):] or "/"
        if r.method == "PUT":
            out.append(("PUT", suffix, r.json()["spec"]["template"]["spec"]["containers"][0]["image"]))
        else:
            assert r.content_type == MERGE, r
            out.append((r.method, suffix, r.json()))
    return out


def golden(body: str) -> tuple[str, str, Any]:
    return ("PATCH", "/status", json.loads(body))


def make_config(tmp_path: Path, fake: FakeKube, *, strategy: str = "canary", token: str = "admin-token",
                steps: list[int] | None = None, **kubernetes: Any) -> Config:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", context="fake", namespace=NS, token=token)
    section = {"kubeconfig": str(kubeconfig), "namespace": NS, "workload": "rollout",
               "service_url": "http://{service}.example", "preview_url": "http://{preview_service}.example",
               "baseline_url": "http://{app}-{slot}.example", "ready_timeout_s": 15, "endpoints_timeout_s": 15,
               "min_ready_s": 0.1, **kubernetes}
    return parse_config({"app": {"name": APP}, "release": {"strategy": strategy},
                         "canary": {"steps": steps or [10, 50, 100]}, "kubernetes": section,
                         "prometheus": {"url": "http://prom.example"}},
                        source="test config", base_dir=tmp_path, project_root=tmp_path)


def open_target(config: Config) -> ArgoRolloutTarget:
    target = ArgoRolloutTarget.open(config)
    target.poll_interval_s = target.driver.poll_interval_s = 0.02  # the fake's controllers tick every 10 ms
    return target


@pytest.fixture
def canary(fake_kube: FakeKube) -> FakeKube:
    seed(fake_kube, CANARY_STRATEGY)
    return fake_kube


@pytest.fixture
def canary_target(tmp_path: Path, canary: FakeKube) -> Iterator[ArgoRolloutTarget]:
    target = open_target(make_config(tmp_path, canary))
    yield target
    target.close()


HOLDER = LockHolder("run-1", "v2", "ci", 42)


def state(phase: Phase, *, switched: bool = False) -> ReleaseState:
    return ReleaseState(run_id="run-1", version="v2", previous_version="v1",
                        live_slot="canary" if switched else "stable", live_version="v2" if switched else "v1",
                        candidate_slot="canary", phase=phase, updated_at=1.0)


def provision(target: ArgoRolloutTarget, fake: FakeKube) -> None:
    """preflight's reads and the lock, then provision, as the release controller runs them."""
    live = target.live_state()
    assert (live.live_slot, live.live_version) == ("stable", "v1")
    assert target.candidate_slot(live.live_slot) == "canary"
    assert target.read_release_state() is None
    target.acquire_lock(HOLDER, 60)
    target.record_release_state(state(Phase.STARTED))
    target.deploy("canary", "v2")
    status = target.wait_ready("canary", 15)
    assert (status.slot, status.version, status.replicas, status.ready_replicas) == ("canary", "v2", 1, 1)


# -- preflight: bad input is one ConfigError line and not one write --------------------------------------

def test_open_refuses_steps_that_differ_from_the_rollouts_naming_both(tmp_path: Path, canary: FakeKube) -> None:
    with pytest.raises(ConfigError) as error:
        ArgoRolloutTarget.open(make_config(tmp_path, canary, steps=[5, 50, 100]))
    assert str(error.value).startswith("canary.steps [5, 50, 100] differ from the setWeight steps [10, 50, 100] of "
                                       "Rollout shop/web; ")
    assert error.value.exit_code == 4 and "\n" not in str(error.value)
    assert canary.write_requests() == []


@pytest.mark.parametrize(("steps", "found"), [
    ([{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 100}], "pause with duration 1m"),
    ([{"setWeight": 10}, {"setWeight": 100}], "setWeight"),
    ([{"setWeight": 10}], "nothing (the last step)"),
], ids=["timed-pause", "no-pause", "last-step"])
def test_open_refuses_a_set_weight_without_an_indefinite_pause_after_it(
        tmp_path: Path, fake_kube: FakeKube, steps: list[dict[str, Any]], found: str) -> None:
    seed(fake_kube, {"canary": {**CANARY_STRATEGY["canary"], "steps": steps}})
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    with pytest.raises(ConfigError, match=r"^step 0 of Rollout shop/web \(setWeight 10\) is followed by "
                                          + found.replace("(", r"\(").replace(")", r"\)")
                                          + r"; .* put `- pause: \{\}` right after it$"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube, steps=weights))
    assert fake_kube.write_requests() == []


def test_open_refuses_a_canary_rollout_without_its_own_services(tmp_path: Path, fake_kube: FakeKube) -> None:
    seed(fake_kube, {"canary": {"steps": STEPS}}, services=(APP,))
    with pytest.raises(ConfigError, match=r"^Rollout shop/web sets no spec.strategy.canary.canaryService nor "
                                          r".stableService; the smoke stage must reach the candidate alone"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube))
    assert fake_kube.write_requests() == []


def test_open_refuses_a_missing_service_of_the_rollout(tmp_path: Path, fake_kube: FakeKube) -> None:
    seed(fake_kube, CANARY_STRATEGY, services=CANARY_SERVICES)
    fake_kube.delete_object("services", NS, f"{APP}-canary")
    with pytest.raises(ConfigError, match=r"^Service shop/web-canary \(named by Rollout shop/web or "
                                          r"kubernetes.service\) does not exist; create it or fix the name$"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube))


def test_open_refuses_a_strategy_mismatch(tmp_path: Path, canary: FakeKube) -> None:
    with pytest.raises(ConfigError, match=r"^Rollout shop/web uses the canary strategy but the release strategy is "
                                          r"blue-green; run with --strategy canary"):
        ArgoRolloutTarget.open(make_config(tmp_path, canary, strategy="blue-green"))
    assert canary.write_requests() == []


def test_open_refuses_a_blue_green_rollout_that_promotes_itself(tmp_path: Path, fake_kube: FakeKube) -> None:
    seed(fake_kube, {"blueGreen": {"activeService": APP, "previewService": f"{APP}-preview"}},
         services=(APP, f"{APP}-preview"), replicas=2)
    with pytest.raises(ConfigError, match=r"^Rollout shop/web promotes by itself .*autoPromotionEnabled: false$"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube, strategy="blue-green"))
    with pytest.raises(ConfigError, match=r"^Rollout shop/web uses the blueGreen strategy but the release strategy "
                                          r"is canary"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube, strategy="canary"))
    assert fake_kube.write_requests() == []


def test_open_names_a_missing_rollout(tmp_path: Path, fake_kube: FakeKube) -> None:
    fake_kube.install_crd("rollouts.argoproj.io")
    fake_kube.seed_namespace(NS)
    with pytest.raises(ConfigError, match=r"^Rollout 'shop-web' not found in namespace shop; create it"):
        ArgoRolloutTarget.open(make_config(tmp_path, fake_kube, rollout_name="shop-web"))
    assert fake_kube.write_requests() == []


# -- a whole canary release: 10 -> 50 -> 100 -> promoted --------------------------------------------------

def test_a_canary_rollout_release_runs_through_its_steps_and_promotes(canary: FakeKube,
                                                                      canary_target: ArgoRolloutTarget) -> None:
    target = canary_target
    v1_hash = rollout(canary)["status"]["stableRS"]
    provision(target, canary)
    v2_hash = rollout(canary)["status"]["currentPodHash"]
    # Exposure from provision on: the Rollout applied its first setWeight by itself.
    assert rollout(canary)["status"]["currentStepIndex"] == 1
    live = target.live_state()
    assert live.traffic == TrafficSplit.split("stable", "canary", 20)  # 1 canary pod beside 4 stable ones
    assert (live.versions["stable"], live.versions["canary"]) == ("v1", "v2")
    assert (selected_hash(canary, f"{APP}-canary"), selected_hash(canary, f"{APP}-stable")) == (v2_hash, v1_hash)
    endpoints = target.endpoints("canary")
    assert {role: (e.url, e.slot, e.version) for role, e in endpoints.items()} == {
        Role.CANDIDATE: ("http://web-canary.example", "canary", "v2"),
        Role.BASELINE: ("http://web-stable.example", "stable", "v1"),
        Role.SERVICE: ("http://web.example", None, None),
    }
    canary.clear_requests()

    target.record_release_state(state(Phase.SHIFTING, switched=True))
    at_10 = target.set_traffic(TrafficSplit.split("stable", "canary", 10))
    assert at_10.traffic.weights == {"stable": 80, "canary": 20}  # the effective weight: 1 of 5 ready pods
    assert rollout_writes(canary) == []  # already paused after setWeight 10: nothing to send

    at_50 = target.set_traffic(TrafficSplit.split("stable", "canary", 50))
    assert at_50.traffic.weights == {"stable": 50, "canary": 50} and at_50.previous.weights["canary"] == 20
    assert rollout(canary)["status"]["currentStepIndex"] == 3
    assert serving_images(canary) == {"shop/web:v1", "shop/web:v2"}

    at_100 = target.set_traffic(TrafficSplit.split("stable", "canary", 100))
    assert at_100.traffic.weights == {"stable": 0, "canary": 100}
    assert serving_images(canary) == {"shop/web:v2"}  # the endpoints converged before set_traffic returned
    # The last step made v2 the Rollout's stable ReplicaSet; until promote it is still the candidate at 100%.
    assert target.live_state().traffic == TrafficSplit.split("stable", "canary", 100)
    assert target.endpoints("canary")[Role.CANDIDATE].version == "v2"

    promotion = target.promote("canary", "v2")
    assert (promotion.live_slot, promotion.retired_slot) == ("stable", None)
    assert promotion.detail == "Rollout shop/web promoted: v2 is its stable ReplicaSet"
    # Two promotions, each the plugin's request; the step at 100 completed the Rollout, so promote sent nothing.
    assert rollout_writes(canary) == [golden(CLEAR_PAUSE_CONDITIONS), golden(CLEAR_PAUSE_CONDITIONS)]

    status = rollout(canary)["status"]
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", v2_hash, v2_hash)
    assert target.live_state().traffic == TrafficSplit.all_to("stable")
    assert target.live_state().versions == {"stable": "v2", "canary": None}
    # Fully promoted, Argo Rollouts points both Services at the new stable ReplicaSet.
    wait_until(lambda: selected_hash(canary, f"{APP}-stable") == selected_hash(canary, f"{APP}-canary") == v2_hash,
               timeout_s=10, what="the stable and canary Services on v2")
    after = target.endpoints("stable")
    assert (after[Role.CANDIDATE].version, after[Role.SERVICE].version) == ("v2", "v2") and Role.BASELINE not in after
    # finalize: nothing retired, release state and lock.
    target.record_release_state(state(Phase.PROMOTED, switched=True))
    target.release_lock(HOLDER)
    recorded = target.read_release_state()
    assert recorded is not None and recorded.phase is Phase.PROMOTED
    assert not [r for r in canary.requests if r.status >= 400]


def test_promote_after_the_last_configured_step_sends_the_plugins_promote_full(
        tmp_path: Path, fake_kube: FakeKube) -> None:
    seed(fake_kube, {"canary": {**CANARY_STRATEGY["canary"], "steps": STEPS[:4]}})
    target = open_target(make_config(tmp_path, fake_kube, steps=[10, 50]))
    try:
        provision(target, fake_kube)
        target.set_traffic(TrafficSplit.split("stable", "canary", 10))
        target.set_traffic(TrafficSplit.split("stable", "canary", 50))
        fake_kube.clear_requests()
        promotion = target.promote("canary", "v2")
    finally:
        target.close()
    assert rollout_writes(fake_kube) == [golden(PROMOTE_FULL)]
    assert promotion.switch.traffic == TrafficSplit.all_to("stable")
    assert rollout(fake_kube)["status"]["phase"] == "Healthy"
    assert serving_images(fake_kube) == {"shop/web:v2"}


def test_a_candidate_that_never_becomes_ready_is_reported_with_its_pods_reason(
        canary: FakeKube, canary_target: ArgoRolloutTarget) -> None:
    canary.set_image_behaviour("shop/web:v2", "never-ready")
    v1_hash = rollout(canary)["status"]["stableRS"]
    canary_target.deploy("canary", "v2")
    with pytest.raises(NotReadyError, match=r"^Rollout shop/web did not pause for verification within 1s "
                                            r"\(Progressing: more replicas need to be updated\); pod web-[a-z0-9]+-"
                                            r"[a-z0-9]+: container web running but readiness probe failing \(event "
                                            r"Unhealthy: Readiness probe failed"):
        canary_target.wait_ready("canary", 1)
    # Argo Rollouts points the canary Service at a ReplicaSet only once it is available: never, here.
    assert selected_hash(canary, f"{APP}-canary") == v1_hash
    canary_target.remove("canary")  # the rollback: abort, then the stable image back
    assert rollout(canary)["status"]["phase"] == "Healthy"
    assert rollout_writes(canary)[1:] == [golden(ABORT), ("PUT", "/", "shop/web:v1")]


# -- aborts and rollbacks ----------------------------------------------------------------------------------

def test_an_abort_at_step_10_sends_the_plugins_abort_and_returns_to_stable(canary: FakeKube,
                                                                          canary_target: ArgoRolloutTarget) -> None:
    target = canary_target
    v1_hash = rollout(canary)["status"]["stableRS"]
    provision(target, canary)
    target.set_traffic(TrafficSplit.split("stable", "canary", 10))
    canary.clear_requests()

    # The release controller's _undo: all traffic back in one move, then the candidate removed.
    back = target.set_traffic(TrafficSplit.all_to("stable"))
    assert back.traffic == TrafficSplit.all_to("stable") and back.previous.weights["canary"] == 20
    assert rollout_writes(canary) == [golden(ABORT)]
    assert serving_images(canary) == {"shop/web:v1"}  # converged before set_traffic returned
    assert rollout(canary)["status"]["phase"] == "Degraded"
    endpoints = target.endpoints(None)
    assert endpoints[Role.SERVICE].version == "v1" and Role.CANDIDATE not in endpoints

    target.remove("canary")
    assert rollout_writes(canary) == [golden(ABORT), ("PUT", "/", "shop/web:v1")]
    status = rollout(canary)["status"]
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", v1_hash, v1_hash)
    assert "abort" not in status
    target.remove("canary")  # idempotent: nothing more is sent
    assert len(rollout_writes(canary)) == 2
    assert target.live_state().traffic == TrafficSplit.all_to("stable")


def test_a_rollback_after_promote_rolls_the_previous_version_out_again(canary: FakeKube,
                                                                        canary_target: ArgoRolloutTarget) -> None:
    target = canary_target
    provision(target, canary)
    for weight in (10, 50, 100):
        target.set_traffic(TrafficSplit.split("stable", "canary", weight))
    promotion = target.promote("canary", "v2")
    canary.clear_requests()

    again = target.promote(promotion.live_slot, "v1")  # the controller's _undo after a failed post_switch
    assert again.live_slot == "stable" and again.detail == "v1 rolled out again on Rollout shop/web (promote --full)"
    assert rollout_writes(canary) == [("PUT", "/", "shop/web:v1"), golden(PROMOTE_FULL)]
    assert serving_images(canary) == {"shop/web:v1"}
    assert target.live_state().versions == {"stable": "v1", "canary": None}
    target.remove("canary")  # nothing left to remove
    assert len(rollout_writes(canary)) == 2


def test_a_failure_at_100_puts_the_previous_version_back(canary: FakeKube,
                                                         canary_target: ArgoRolloutTarget) -> None:
    """At setWeight 100 the Rollout completes (v2 is its stable ReplicaSet): an abort could not bring v1 back."""
    target = canary_target
    provision(target, canary)
    for weight in (10, 50, 100):
        target.set_traffic(TrafficSplit.split("stable", "canary", weight))
    canary.clear_requests()
    back = target.set_traffic(TrafficSplit.all_to("stable"))
    assert back.traffic == TrafficSplit.all_to("stable")
    assert rollout_writes(canary) == [("PUT", "/", "shop/web:v1"), golden(PROMOTE_FULL)]
    assert serving_images(canary) == {"shop/web:v1"}
    assert target.live_state().versions["stable"] == "v1"


# -- blue-green Rollouts --------------------------------------------------------------------------------

@pytest.fixture
def blue_green(fake_kube: FakeKube) -> FakeKube:
    seed(fake_kube, BLUE_GREEN_STRATEGY, services=(APP, f"{APP}-preview"), replicas=2)
    return fake_kube


@pytest.fixture
def blue_green_target(tmp_path: Path, blue_green: FakeKube) -> Iterator[ArgoRolloutTarget]:
    target = open_target(make_config(tmp_path, blue_green, strategy="blue-green"))
    yield target
    target.close()


def provision_blue_green(target: ArgoRolloutTarget, fake: FakeKube) -> str:
    live = target.live_state()
    assert (live.live_slot, live.live_version) == ("active", "v1")
    assert target.candidate_slot(live.live_slot) == "preview"
    target.acquire_lock(HOLDER, 60)
    target.deploy("preview", "v2")
    status = target.wait_ready("preview", 15)
    assert (status.slot, status.version, status.replicas, status.ready_replicas) == ("preview", "v2", 2, 2)
    wait_until(lambda: serving_images(fake, f"{APP}-preview") == {"shop/web:v2"}, timeout_s=10,
               what="the preview Service on v2")
    assert serving_images(fake) == {"shop/web:v1"}
    return str(rollout(fake)["status"]["currentPodHash"])


def test_a_blue_green_rollout_promotes_with_the_plugins_request(blue_green: FakeKube,
                                                                blue_green_target: ArgoRolloutTarget) -> None:
    target = blue_green_target
    v2_hash = provision_blue_green(target, blue_green)
    assert target.live_state().versions == {"active": "v1", "preview": "v2"}
    endpoints = target.endpoints("preview")
    assert {role: (e.url, e.slot, e.version) for role, e in endpoints.items()} == {
        Role.CANDIDATE: ("http://web-preview.example", "preview", "v2"),
        Role.BASELINE: ("http://web-active.example", "active", "v1"),
        Role.SERVICE: ("http://web.example", "active", "v1"),
    }
    blue_green.clear_requests()

    promotion = target.promote("preview", "v2")
    assert rollout_writes(blue_green) == [golden(CLEAR_PAUSE_CONDITIONS)]
    assert (promotion.live_slot, promotion.retired_slot) == ("active", None)
    assert selected_hash(blue_green, APP) == v2_hash
    assert serving_images(blue_green) == {"shop/web:v2"}
    assert target.live_state().versions == {"active": "v2", "preview": None}


def test_a_blue_green_rollout_rollback_aborts_and_returns_to_healthy(blue_green: FakeKube,
                                                                     blue_green_target: ArgoRolloutTarget) -> None:
    target = blue_green_target
    v1_hash = rollout(blue_green)["status"]["stableRS"]
    provision_blue_green(target, blue_green)
    blue_green.clear_requests()

    target.remove("preview")  # the controller's _undo before the switch
    assert rollout_writes(blue_green) == [golden(ABORT), ("PUT", "/", "shop/web:v1")]
    status = rollout(blue_green)["status"]
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", v1_hash, v1_hash)
    assert selected_hash(blue_green, APP) == v1_hash
    assert serving_images(blue_green) == {"shop/web:v1"}


# -- RBAC: the rules file covers exactly what the target sends ----------------------------------------------

def rules_file() -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return data


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def request_triple(method: str, path: str) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], RBAC verb) of a resource request; None for discovery."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return None
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    named = len(rest) >= 2
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}[method]
    return group, resource, verb


# Requests only a failure or an old Argo Rollouts sends (events: why a pod is not ready; a patch of the main
# Rollout resource: promote of a manually paused Rollout, or Rollouts v0.9 without a status subresource).
FAILURE_PATHS_ONLY = {("", "events", "list"), ("argoproj.io", "rollouts", "patch")}


@pytest.mark.parametrize("source", ["rules-file", pytest.param("chart", marks=charts.needs_helm)])
def test_releases_under_the_rollout_rules_are_granted_and_use_every_rule(tmp_path: Path, source: str) -> None:
    """Under the rules of files/rollout-rules.yaml, and under charts/canary-app's Role rendered from them with
    rbac.rollout.enabled (confined by resourceNames to the Rollout, the app's Services and its Lease)."""
    rules = rules_file()
    role = [{"kind": "Role", "metadata": {"namespace": NS}, "rules": rules["namespaced"]},
            {"kind": "ClusterRole", "rules": rules["cluster"]}]
    if source == "chart":
        rendered = charts.render(charts.CANARY_CHART, "--set", "rbac.rollout.enabled=true", namespace=NS, release=APP)
        role = [obj for obj in rendered if obj["kind"] in ("Role", "ClusterRole")]
        assert [rule for obj in role for rule in obj["rules"] if "resourceNames" in rule]  # the chart confines
    tokens = {"admin-token": "admin", "rollout-token": "releasegate-rollout"}
    fake = FakeKube(tokens=tokens, rbac={"releasegate-rollout": role}).start()
    try:
        seed(fake, CANARY_STRATEGY)
        target = open_target(make_config(tmp_path, fake, token="rollout-token"))
        try:
            provision(target, fake)
            target.endpoints("canary")
            for weight in (10, 50):
                target.set_traffic(TrafficSplit.split("stable", "canary", weight))
            target.set_traffic(TrafficSplit.all_to("stable"))  # a failure at 50: the controller's _undo
            target.remove("canary")
            target.deploy("canary", "v2")  # a second release, promoted this time
            target.wait_ready("canary", 15)
            target.set_traffic(TrafficSplit.split("stable", "canary", 100))
            target.promote("canary", "v2")
            target.promote("stable", "v1")  # and rolled back after promote
            target.record_release_state(state(Phase.ROLLED_BACK))
            target.release_lock(HOLDER)
        finally:
            target.close()
        assert not [(r.method, r.path, r.status) for r in fake.requests if r.status == 403]
        used = {t for r in fake.requests if (t := request_triple(r.method, r.path)) is not None}
    finally:
        fake.stop()
    assert not fake.errors, fake.errors
    granted = triples(rules["namespaced"]) | triples(rules["cluster"])
    assert used - granted == set(), "requested but not granted: add to files/rollout-rules.yaml"
    assert granted - used == FAILURE_PATHS_ONLY, "granted but never requested: remove from files/rollout-rules.yaml"
