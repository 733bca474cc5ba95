"""The Argo Rollouts driver against the fake API server (Rollout CRD + a small Argo Rollouts controller).

Golden request bodies: `kubectl argo rollouts promote` and `abort` send Go string constants; the literals
below are those constants, copied from the plugin's source (repository argoproj/argo-rollouts):
- pkg/kubectl-argo-rollouts/cmd/promote/promote.go: clearPauseConditionsPatch, unpausePatch,
  promoteFullPatch, unpauseAndClearPauseConditionsPatch, clearPauseConditionsPatchWithStep,
  unpauseAndClearPauseConditionsPatchWithStep, clearPauseConditionsAndControllerPausePatch; all sent with
  types.MergePatchType, the status part to the "status" subresource.
- pkg/kubectl-argo-rollouts/cmd/abort/abort.go: abortPatch, MergePatchType, "status" subresource first.
They are compared as JSON documents (the Python client re-serialises bodies with json.dumps).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApisApi, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from releasegate.core.errors import ConfigError, NotReadyError, TargetError
from releasegate.targets.kubernetes import argo
from releasegate.targets.kubernetes.api import KubeApi
from releasegate.targets.kubernetes.argo import RolloutDriver, RolloutStop, promote_patches
from tests.fakekube import FakeClock, FakeKube
from tests.waiting import wait_until

NS = "shop"
APP = "web"
ROLLOUT_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/{APP}"
MERGE = "application/merge-patch+json"
CANARY_STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]

# promote.go, verbatim (Go string constants; %d filled in where the plugin formats one).
CLEAR_PAUSE_CONDITIONS = '{"status":{"pauseConditions":null}}'
UNPAUSE = '{"spec":{"paused":false}}'
PROMOTE_FULL = '{"status":{"promoteFull":true}}'
UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS = '{"spec":{"paused":false},"status":{"pauseConditions":null}}'
CLEAR_PAUSE_CONDITIONS_WITH_STEP = '{"status":{"pauseConditions":null, "currentStepIndex":%d}}'
UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS_WITH_STEP = '{"spec":{"paused":false},"status":{"pauseConditions":null, "currentStepIndex":%d}}'  # noqa: E501
CLEAR_PAUSE_CONDITIONS_AND_CONTROLLER_PAUSE = '{"status":{"pauseConditions":null, "controllerPause":false, "currentStepIndex":%d}}'  # noqa: E501
# abort.go, verbatim.
ABORT = '{"status":{"abort":true}}'


# -- set-up ---------------------------------------------------------------------------------------------

def rollout_manifest(strategy: dict[str, Any], *, image: str = "shop/web:v1", replicas: int = 4,
                     **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": APP, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
            "strategy": strategy,
            **spec,
        },
    }


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}}


def seed(fake: FakeKube, strategy: dict[str, Any], *, services: tuple[str, ...] = (APP,), **spec: Any) -> None:
    """The CRD, the Services and a Rollout at v1, waited for until Healthy; the request log starts empty."""
    fake.install_crd("rollouts.argoproj.io")
    fake.seed_namespace(NS)
    for name in services:
        fake.create(service(name))
    fake.create(rollout_manifest(strategy, **spec))
    fake.wait_for(lambda: phase(fake) == "Healthy", timeout=10)
    fake.settle()  # until the controllers write nothing more: no conflict can surprise the first request
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


def replicasets(fake: FakeKube) -> dict[str, int]:
    """Spec replicas by image of the Rollout's ReplicaSets."""
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
            for rs in fake.list_objects("replicasets", NS)}


def rollout_as_read(fake: FakeKube, resource_version: str) -> dict[str, Any]:
    """The Rollout as the fake served it at a resourceVersion (from its store's watch history)."""
    for event in fake.store.events_after(0, "argoproj.io/rollouts"):
        if event.obj["metadata"]["resourceVersion"] == resource_version:
            return fake.registry._served(fake.registry_res("rollouts"), event.obj)  # type: ignore[no-any-return]
    raise AssertionError(f"no Rollout with resourceVersion {resource_version}")


def writes(fake: FakeKube) -> list[tuple[str, str, str, Any]]:
    return [(r.method, r.path, r.content_type, r.json()) for r in fake.write_requests()]


def golden(method: str, path: str, body: str) -> tuple[str, str, str, Any]:
    return (method, path, MERGE, json.loads(body))


@pytest.fixture
def canary(fake_kube: FakeKube) -> FakeKube:
    seed(fake_kube, {"canary": {"steps": CANARY_STEPS}})
    return fake_kube


@pytest.fixture
def driver(kube_api: Any) -> RolloutDriver:
    return RolloutDriver(KubeApi(kube_api, namespace=NS, timeout_s=5, max_retries=2), poll_interval_s=0.02)


def at_first_pause(fake: FakeKube, driver: RolloutDriver) -> RolloutStop:
    driver.set_image(APP, "web", "shop/web:v2")
    stop = driver.wait_for_pause(APP, timeout_s=10)
    fake.settle()
    fake.clear_requests()
    return stop


# -- golden request bodies ------------------------------------------------------------------------------

def test_promote_sends_the_plugins_status_patch(canary: FakeKube, driver: RolloutDriver) -> None:
    at_first_pause(canary, driver)
    driver.promote(APP)
    assert [(r.method, r.path) for r in canary.requests] == [("GET", ROLLOUT_PATH), ("PATCH", f"{ROLLOUT_PATH}/status")]
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", CLEAR_PAUSE_CONDITIONS)]
    assert [r.status for r in canary.requests] == [200, 200]


def test_promote_full_sends_the_plugins_promote_full_patch(canary: FakeKube, driver: RolloutDriver) -> None:
    at_first_pause(canary, driver)
    driver.promote(APP, full=True)
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", PROMOTE_FULL)]
    stop = driver.wait_for_pause(APP, timeout_s=10, after_step=1)
    assert stop.completed and stop.step_index == 5  # promoteFull skips the remaining steps and pauses
    wait_until(lambda: serving_images(canary) == {"shop/web:v2"}, timeout_s=10, what="only v2 behind the Service")


def test_promote_full_of_a_fully_promoted_rollout_sends_nothing(canary: FakeKube, driver: RolloutDriver) -> None:
    driver.promote(APP, full=True)
    assert canary.write_requests() == []


def test_promote_of_a_manually_paused_rollout_unpauses_the_spec_too(canary: FakeKube,
                                                                   driver: RolloutDriver) -> None:
    at_first_pause(canary, driver)
    paused = rollout(canary)
    paused["spec"]["paused"] = True
    canary.apply(paused)
    canary.clear_requests()
    driver.promote(APP)
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", CLEAR_PAUSE_CONDITIONS),
                              golden("PATCH", ROLLOUT_PATH, UNPAUSE)]


def test_promote_without_a_status_subresource_sends_the_unified_patch(canary: FakeKube,
                                                                    driver: RolloutDriver) -> None:
    """Rollouts v0.9 served no status subresource: the 404 makes the plugin patch spec and status at once."""
    at_first_pause(canary, driver)
    canary.inject_fault(method="PATCH", path_regex=r"/rollouts/web/status$", status=404)
    driver.promote(APP)
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", CLEAR_PAUSE_CONDITIONS),
                              golden("PATCH", ROLLOUT_PATH, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS)]


def test_abort_sends_the_plugins_patch(canary: FakeKube, driver: RolloutDriver) -> None:
    at_first_pause(canary, driver)
    driver.abort(APP)
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", ABORT)]
    assert [r.method for r in canary.requests] == ["PATCH"]  # abort.go reads nothing first


def test_abort_without_a_status_subresource_patches_the_rollout(canary: FakeKube, driver: RolloutDriver) -> None:
    at_first_pause(canary, driver)
    canary.inject_fault(method="PATCH", path_regex=r"/rollouts/web/status$", status=404)
    driver.abort(APP)
    assert writes(canary) == [golden("PATCH", f"{ROLLOUT_PATH}/status", ABORT), golden("PATCH", ROLLOUT_PATH, ABORT)]


def _as_rollout(status: dict[str, Any], *, paused: bool = False, strategy: str = "canary") -> dict[str, Any]:
    spec_strategy = {"canary": {"steps": CANARY_STEPS}} if strategy == "canary" else {
        "blueGreen": {"activeService": APP, "autoPromotionEnabled": False}}
    manifest = rollout_manifest(spec_strategy, paused=paused)
    manifest["status"] = status
    return manifest


@pytest.mark.parametrize(
    ("status", "paused", "strategy", "spec", "status_patch", "unified"),
    [
        ({"pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}],
          "controllerPause": True, "currentStepIndex": 1}, False, "canary",
         None, CLEAR_PAUSE_CONDITIONS, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS),
        ({"currentStepIndex": 2}, False, "canary",
         None, CLEAR_PAUSE_CONDITIONS_WITH_STEP % 3, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS_WITH_STEP % 3),
        ({"currentStepIndex": 5}, True, "canary",
         UNPAUSE, CLEAR_PAUSE_CONDITIONS_WITH_STEP % 5, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS_WITH_STEP % 5),
        ({"pauseConditions": [{"reason": "InconclusiveAnalysisRun", "startTime": "2026-01-01T00:00:00Z"}],
          "controllerPause": True, "currentStepIndex": 1,
          "canary": {"currentStepAnalysisRunStatus": {"name": "a", "status": "Inconclusive"}}}, False, "canary",
         None, CLEAR_PAUSE_CONDITIONS_AND_CONTROLLER_PAUSE % 2, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS),
        ({"pauseConditions": [{"reason": "BlueGreenPause", "startTime": "2026-01-01T00:00:00Z"}],
          "controllerPause": True}, False, "blueGreen",
         None, CLEAR_PAUSE_CONDITIONS, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS),
        ({}, True, "blueGreen", UNPAUSE, None, UNPAUSE_AND_CLEAR_PAUSE_CONDITIONS),
    ],
    ids=["canary-pause", "canary-mid-step", "manually-paused-after-last-step", "inconclusive", "blue-green-pause",
         "blue-green-manually-paused"],
)
def test_promote_patches_are_the_plugins_get_patches(status: dict[str, Any], paused: bool, strategy: str,
                                                     spec: str | None, status_patch: str | None,
                                                     unified: str) -> None:
    patches = promote_patches(_as_rollout(status, paused=paused, strategy=strategy))
    assert patches.spec == (json.loads(spec) if spec else None)
    assert patches.status == (json.loads(status_patch) if status_patch else None)
    assert patches.unified == json.loads(unified)


def test_set_image_puts_the_rollout_back_with_only_the_image_changed(canary: FakeKube,
                                                                      driver: RolloutDriver) -> None:
    driver.set_image(APP, "web", "shop/web:v2")
    # set_image.go: Get, then Update of the whole object as read, resourceVersion included (a concurrent
    # change is a 409, and the plugin starts over).
    assert [(r.method, r.path) for r in canary.requests] == [("GET", ROLLOUT_PATH), ("PUT", ROLLOUT_PATH)]
    read, sent = canary.requests[0], canary.requests[1].json()
    assert sent["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:v2"
    sent["spec"]["template"]["spec"]["containers"][0]["image"] = "shop/web:v1"
    assert read.status == 200 and sent["metadata"]["resourceVersion"]
    assert sent == rollout_as_read(canary, sent["metadata"]["resourceVersion"])


def test_set_image_of_an_unknown_container_is_a_config_error(canary: FakeKube, driver: RolloutDriver) -> None:
    with pytest.raises(ConfigError, match=r'^unable to find container named "api" in Rollout web'):
        driver.set_image(APP, "api", "shop/web:v2")
    assert canary.write_requests() == []


def test_set_image_tries_again_after_a_conflict(canary: FakeKube, driver: RolloutDriver) -> None:
    canary.inject_fault(method="PUT", path_regex=r"/rollouts/web$", status=409, times=2)
    driver.set_image(APP, "web", "shop/web:v2")
    assert [r.status for r in canary.requests if r.method == "PUT"] == [409, 409, 200]


# -- whole releases on the fake ---------------------------------------------------------------------------

def test_canary_rollout_release_moves_through_its_steps(canary: FakeKube, driver: RolloutDriver) -> None:
    driver.set_image(APP, "web", "shop/web:v2")

    first = driver.wait_for_pause(APP, timeout_s=10)
    assert (first.state, first.step_index, first.weight, first.indefinite) == ("paused", 1, 10, True)
    assert first.pause_reasons == ("CanaryPauseStep",) and first.message == "CanaryPauseStep"
    assert replicasets(canary) == {"shop/web:v1": 4, "shop/web:v2": 1}  # ceil(4 * 10%), ceil(4 * 90%)
    wait_until(lambda: serving_images(canary) == {"shop/web:v1", "shop/web:v2"}, timeout_s=10,
               what="both versions behind the Service at 10%")
    driver.promote(APP)

    second = driver.wait_for_pause(APP, timeout_s=10, after_step=first.step_index)
    assert (second.state, second.step_index, second.weight, second.indefinite) == ("paused", 3, 50, True)
    assert replicasets(canary) == {"shop/web:v1": 2, "shop/web:v2": 2}
    driver.promote(APP)

    done = driver.wait_for_pause(APP, timeout_s=10, after_step=second.step_index)
    assert (done.state, done.phase, done.step_index, done.weight) == ("completed", "Healthy", 5, 100)
    assert done.current_pod_hash == done.stable_pod_hash != first.stable_pod_hash
    done.raise_for_failure()
    wait_until(lambda: serving_images(canary) == {"shop/web:v2"}, timeout_s=10, what="only v2 behind the Service")
    status = rollout(canary)["status"]
    assert "pauseConditions" not in status and "controllerPause" not in status and "abort" not in status
    # Two promotions, each exactly the plugin's request; the image change was one PUT.
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in canary.write_requests()] == [
        ("PUT", APP), ("PATCH", "status"), ("PATCH", "status")]


def test_abort_at_the_first_step_degrades_with_the_stable_version_serving(canary: FakeKube,
                                                                          driver: RolloutDriver) -> None:
    stop = at_first_pause(canary, driver)
    assert stop.step_index == 1
    driver.abort(APP)

    aborted = driver.wait_for_pause(APP, timeout_s=10)
    assert (aborted.state, aborted.phase) == ("aborted", "Degraded")
    assert aborted.message == "RolloutAborted: Rollout aborted update to revision 2"
    assert aborted.weight == 0 and aborted.step_index == 0  # canary.go: an aborted update restarts at step 0
    with pytest.raises(TargetError, match=r"^Rollout web was aborted: RolloutAborted: Rollout aborted update"):
        aborted.raise_for_failure()
    wait_until(lambda: replicasets(canary) == {"shop/web:v1": 4, "shop/web:v2": 0}, timeout_s=10,
               what="the canary ReplicaSet scaled to 0")
    wait_until(lambda: serving_images(canary) == {"shop/web:v1"}, timeout_s=10,
               what="only the stable v1 pods behind the Service")
    status = rollout(canary)["status"]
    assert status["abort"] is True and status["abortedAt"]
    assert status["stableRS"] == aborted.stable_pod_hash != status["currentPodHash"]


def test_blue_green_rollout_pauses_before_promotion_and_promote_switches(fake_kube: FakeKube,
                                                                        driver: RolloutDriver) -> None:
    seed(fake_kube, {"blueGreen": {"activeService": APP, "previewService": f"{APP}-preview",
                                   "autoPromotionEnabled": False}}, services=(APP, f"{APP}-preview"), replicas=2)
    v1_hash = rollout(fake_kube)["status"]["stableRS"]
    assert argo.blue_green_services(driver.read(APP)) == (APP, f"{APP}-preview")
    driver.set_image(APP, "web", "shop/web:v2")

    paused = driver.wait_for_pause(APP, timeout_s=10)
    assert (paused.state, paused.strategy, paused.step_index, paused.indefinite) == ("paused", "blueGreen", None,
                                                                                      True)
    assert paused.pause_reasons == ("BlueGreenPause",)
    v2_hash = paused.current_pod_hash
    assert fake_kube.get_object("services", NS, APP)["spec"]["selector"] == {   # type: ignore[index]
        "app": APP, "rollouts-pod-template-hash": v1_hash}
    wait_until(lambda: serving_images(fake_kube, f"{APP}-preview") == {"shop/web:v2"}, timeout_s=10,
               what="the preview Service on v2")
    assert serving_images(fake_kube) == {"shop/web:v1"}
    fake_kube.clear_requests()

    driver.promote(APP)
    assert writes(fake_kube) == [golden("PATCH", f"{ROLLOUT_PATH}/status", CLEAR_PAUSE_CONDITIONS)]
    done = driver.wait_for_pause(APP, timeout_s=10)
    assert (done.state, done.current_pod_hash, done.stable_pod_hash) == ("completed", v2_hash, v2_hash)
    assert fake_kube.get_object("services", NS, APP)["spec"]["selector"] == {   # type: ignore[index]
        "app": APP, "rollouts-pod-template-hash": v2_hash}
    wait_until(lambda: serving_images(fake_kube) == {"shop/web:v2"}, timeout_s=10, what="the active Service on v2")


def test_blue_green_abort_keeps_the_active_service_on_the_stable_version(fake_kube: FakeKube,
                                                                         driver: RolloutDriver) -> None:
    seed(fake_kube, {"blueGreen": {"activeService": APP, "autoPromotionEnabled": False}}, replicas=2)
    v1_hash = rollout(fake_kube)["status"]["stableRS"]
    driver.set_image(APP, "web", "shop/web:v2")
    assert driver.wait_for_pause(APP, timeout_s=10).paused
    driver.abort(APP)
    aborted = driver.wait_for_pause(APP, timeout_s=10)
    assert (aborted.state, aborted.message) == ("aborted", "RolloutAborted: Rollout aborted update to revision 2")
    assert rollout(fake_kube)["status"]["blueGreen"]["activeSelector"] == v1_hash
    assert serving_images(fake_kube) == {"shop/web:v1"}


# -- timed pauses and a degraded Rollout, on the fake's clock -----------------------------------------------

@pytest.fixture
def clocked(kube_api_factory: Any) -> Iterator[tuple[FakeKube, FakeClock, RolloutDriver]]:
    clock = FakeClock()
    fake = FakeKube(clock=clock).start()
    try:
        api = kube_api_factory(fake=fake)
        yield fake, clock, RolloutDriver(KubeApi(api, namespace=NS, timeout_s=5, max_retries=2),
                                         poll_interval_s=0.02)
    finally:
        fake.stop()
    assert not fake.errors, "fake API server bug:\n" + "\n".join(fake.errors)


def test_a_timed_pause_is_reported_as_timed_and_ends_on_the_clock(
        clocked: tuple[FakeKube, FakeClock, RolloutDriver]) -> None:
    fake, clock, driver = clocked
    seed(fake, {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]}})
    driver.set_image(APP, "web", "shop/web:v2")
    timed = driver.wait_for_pause(APP, timeout_s=10)
    assert (timed.state, timed.step_index, timed.weight, timed.indefinite) == ("paused", 1, 25, False)
    clock.advance(30)
    with pytest.raises(NotReadyError, match=r"^Rollout web neither paused nor finished within 0.3s: Paused: "
                                            r"CanaryPauseStep$"):
        driver.wait_for_pause(APP, timeout_s=0.3, after_step=timed.step_index)
    clock.advance(31)
    done = driver.wait_for_pause(APP, timeout_s=10, after_step=timed.step_index)
    assert (done.state, done.step_index) == ("completed", 3)
    assert fake.write_requests()[-1].method == "PUT"  # nothing but the image change: the clock did the rest


def test_a_canary_that_never_becomes_ready_degrades_at_its_progress_deadline(
        clocked: tuple[FakeKube, FakeClock, RolloutDriver]) -> None:
    fake, clock, driver = clocked
    fake.set_image_behaviour("shop/web:v2", "never-ready")
    seed(fake, {"canary": {"steps": CANARY_STEPS}}, progressDeadlineSeconds=30)
    driver.set_image(APP, "web", "shop/web:v2")
    # The last progress the controller can see: the canary pod exists (and will never be ready). The deadline
    # counts from there, so the clock moves only once the Rollout's status shows it.
    wait_until(lambda: rollout(fake)["status"].get("updatedReplicas") == 1, timeout_s=10,
               what="the canary pod to be created")
    clock.advance(31)
    stop = driver.wait_for_pause(APP, timeout_s=10)
    assert (stop.state, stop.phase, stop.step_index) == ("degraded", "Degraded", 0)
    assert stop.message.startswith('ProgressDeadlineExceeded: ReplicaSet "web-')
    assert stop.message.endswith('" has timed out progressing.')
    with pytest.raises(NotReadyError, match=r"^Rollout web is degraded: ProgressDeadlineExceeded: "):
        stop.raise_for_failure()


# -- missing Rollout, missing CRD -----------------------------------------------------------------------

def test_a_missing_rollout_is_a_config_error(fake_kube: FakeKube, driver: RolloutDriver) -> None:
    fake_kube.install_crd("rollouts.argoproj.io")
    fake_kube.seed_namespace(NS)
    for call in (lambda: driver.read(APP), lambda: driver.promote(APP), lambda: driver.abort(APP),
                 lambda: driver.set_image(APP, "web", "shop/web:v2"), lambda: driver.wait_for_pause(APP, 1)):
        with pytest.raises(ConfigError, match=r"^Rollout 'web' not found in namespace shop; create it") as error:
            call()
        assert "\n" not in str(error.value)
    assert [r.status for r in fake_kube.write_requests()] == [404, 404]  # abort: status, then the main resource


def test_without_the_rollout_crd_every_call_is_a_config_error(fake_kube: FakeKube, driver: RolloutDriver) -> None:
    fake_kube.seed_namespace(NS)
    with pytest.raises(ConfigError, match=r"^the Argo Rollouts CRD rollouts.argoproj.io is not installed in this "
                                          r"cluster; install Argo Rollouts \(https://"):
        driver.read(APP)
    with pytest.raises(ConfigError, match="is not installed"):
        driver.abort(APP)


# -- the fake serves Rollouts like a CRD ----------------------------------------------------------------

def test_the_fake_serves_rollouts_only_once_the_crd_is_installed(fake_kube: FakeKube, kube_api: Any) -> None:
    apis, custom = ApisApi(kube_api), CustomObjectsApi(kube_api)
    assert "argoproj.io" not in [g.name for g in apis.get_api_versions().groups]
    with pytest.raises(ApiException) as missing:
        custom.get_api_resources("argoproj.io", "v1alpha1")
    assert missing.value.status == 404 and missing.value.body == "404 page not found\n"

    fake_kube.install_crd("rollouts.argoproj.io")
    groups = apis.get_api_versions().groups
    assert groups[-1].name == "argoproj.io" and groups[-1].preferred_version.group_version == "argoproj.io/v1alpha1"
    resources = custom.get_api_resources("argoproj.io", "v1alpha1", _preload_content=False)
    assert json.loads(resources.data)["resources"] == [
        {"name": "rollouts", "singularName": "rollout", "namespaced": True, "kind": "Rollout",
         "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
         "shortNames": ["ro"], "storageVersionHash": "T0mdNo50nFA="},
        {"name": "rollouts/status", "singularName": "", "namespaced": True, "kind": "Rollout",
         "verbs": ["get", "patch", "update"]},
    ]


def test_deleting_a_rollout_deletes_its_replicasets_and_pods(canary: FakeKube, kube_api: Any) -> None:
    assert replicasets(canary) == {"shop/web:v1": 4}
    CustomObjectsApi(kube_api).delete_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", APP)
    wait_until(lambda: not canary.list_objects("replicasets", NS) and not canary.list_objects("pods", NS),
               timeout_s=10, what="the garbage collector to delete the Rollout's ReplicaSets and pods")


def test_the_fake_applies_the_crd_strategies_to_rollouts(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.install_crd("rollouts.argoproj.io")
    fake_kube.seed_namespace(NS)
    fake_kube.pause_controllers()
    custom = CustomObjectsApi(kube_api)
    manifest = rollout_manifest({"canary": {"steps": CANARY_STEPS}})
    created = custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts",
                                                     {**manifest, "status": {"phase": "Healthy"}})
    assert "status" not in created and created["metadata"]["generation"] == 1  # status dropped on create
    status = custom.patch_namespaced_custom_object_status(
        "argoproj.io", "v1alpha1", NS, "rollouts", APP, {"status": {"abort": True}, "spec": {"paused": True}},
        _content_type=MERGE)
    assert status["status"] == {"abort": True} and "paused" not in status["spec"]  # only status, via /status
    assert status["metadata"]["generation"] == 1
    spec = custom.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", APP, {"status": {"abort": False}, "spec": {"paused": True}},
        _content_type=MERGE)
    assert spec["status"] == {"abort": True} and spec["spec"]["paused"] is True
    assert spec["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as strategic:
        custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", APP,
                                              {"spec": {"paused": False}},
                                              _content_type="application/strategic-merge-patch+json")
    assert strategic.value.status == 415
    assert json.loads(strategic.value.body)["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json")
