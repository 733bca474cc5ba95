"""The fake API server's batch/v1 Jobs, as a v1.32 server and its job controller serve them (discovery, defaults
and the generated selector, validation, pods to parallelism, the two-step accounting of finished pods, Complete
and Failed, cascading deletes), through the official client; and ProcessRuntime running a Job's locust workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.fakekube import FakeKube
from tests.fakekube.clock import FakeClock
from tests.kube_cluster import ProcessRuntime
from tests.waiting import wait_until

NS = "shop"
UID_LABEL = "batch.kubernetes.io/controller-uid"


def job(name: str = "load", *, image: str = "busybox:1.36", restart_policy: str | None = "Never",
        **spec: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": "worker", "image": image}]}
    if restart_policy is not None:
        pod_spec["restartPolicy"] = restart_policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": "load"}}, "spec": pod_spec}, **spec}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manual(clock: FakeClock) -> Iterator[FakeKube]:
    """A fake whose controllers move only when stepped, on a clock that moves only when advanced."""
    fake = FakeKube(controllers="manual", clock=clock).start()
    try:
        fake.seed_namespace(NS)
        yield fake
    finally:
        fake.stop()
    assert not fake.errors, "fake API server bug:\n" + "\n".join(fake.errors)


@pytest.fixture
def batch(manual: FakeKube) -> Iterator[client.BatchV1Api]:
    with client.ApiClient(manual.client_configuration()) as api_client:
        yield client.BatchV1Api(api_client)


def raw(response: Any) -> Any:
    return json.loads(response.data)


def pods_of(fake: FakeKube, name: str = "load") -> list[dict[str, Any]]:
    return fake.list_objects("pods", NS, label_selector=f"batch.kubernetes.io/job-name={name}")


def job_status(fake: FakeKube, name: str = "load") -> dict[str, Any]:
    found = fake.get_object("jobs", NS, name)
    assert found is not None
    return dict(found.get("status") or {})


def test_discovery_lists_batch_v1_like_a_v1_32_server(batch: client.BatchV1Api) -> None:
    resources = {r.name: r for r in batch.get_api_resources().resources}
    assert list(resources) == ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]
    jobs = resources["jobs"]
    assert (jobs.kind, jobs.namespaced, jobs.short_names, jobs.categories, jobs.storage_version_hash) == \
        ("Job", True, None, ["all"], "mudhfqk/qZY=")
    assert resources["jobs/status"].verbs == ["get", "patch", "update"]
    groups = [g.name for g in client.ApisApi(batch.api_client).get_api_versions().groups]
    assert groups[groups.index("autoscaling") + 1] == "batch"


def test_create_applies_the_defaults_and_generates_the_selector(batch: client.BatchV1Api) -> None:
    body = job()
    body["status"] = {"succeeded": 3}
    created = raw(batch.create_namespaced_job(NS, body, _preload_content=False))
    uid = created["metadata"]["uid"]
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["labels"] == {"app": "load"}  # SetDefaults_Job: the template's labels, as sent
    spec = created["spec"]
    assert list(spec) == ["parallelism", "completions", "backoffLimit", "selector", "manualSelector", "template",
                          "completionMode", "suspend", "podReplacementPolicy"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"], spec["manualSelector"],
            spec["completionMode"], spec["suspend"], spec["podReplacementPolicy"]) == \
        (1, 1, 6, False, "NonIndexed", False, "TerminatingOrFailed")
    assert spec["selector"] == {"matchLabels": {UID_LABEL: uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "load", UID_LABEL: uid, "batch.kubernetes.io/job-name": "load", "controller-uid": uid,
        "job-name": "load"}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert created["status"] == {}  # the controller's: reset on create
    only_parallelism = raw(batch.create_namespaced_job(NS, job("wide", parallelism=3), _preload_content=False))
    assert (only_parallelism["spec"]["parallelism"], only_parallelism["spec"].get("completions")) == (3, None)


@pytest.mark.parametrize("restart_policy", ["Always", None])
def test_a_template_that_restarts_always_is_refused_as_v1_32_refuses_it(
    batch: client.BatchV1Api, restart_policy: str | None
) -> None:
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(NS, job(restart_policy=restart_policy))
    assert err.value.status == 422
    answer = json.loads(err.value.body)
    assert answer["message"] == ('Job.batch "load" is invalid: spec.template.spec.restartPolicy: '
                                 'Required value: valid values: "OnFailure", "Never"')
    assert answer["details"] == {"name": "load", "group": "batch", "kind": "Job", "causes": [
        {"reason": "FieldValueRequired", "message": 'Required value: valid values: "OnFailure", "Never"',
         "field": "spec.template.spec.restartPolicy"}]}


def test_the_template_and_the_selector_are_immutable(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job(NS, job())
    current = raw(batch.read_namespaced_job("load", NS, _preload_content=False))
    current["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    with pytest.raises(ApiException) as err:
        batch.replace_namespaced_job("load", NS, current)
    causes = json.loads(err.value.body)["details"]["causes"]
    assert [(c["field"], c["message"].endswith("field is immutable")) for c in causes] == [("spec.template", True)]
    merge = "application/merge-patch+json"
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job("load", NS, {"spec": {"selector": {"matchLabels": {"app": "load"}}}},
                                   _content_type=merge)
    fields = [c["field"] for c in json.loads(err.value.body)["details"]["causes"]]
    assert "spec.selector" in fields
    # Metadata stays writable: a label patch is no spec change, the generation stays 1.
    patched = batch.patch_namespaced_job("load", NS, {"metadata": {"labels": {"team": "qa"}}}, _content_type=merge)
    assert (patched.metadata.labels["team"], patched.metadata.generation) == ("qa", 1)


def test_pods_run_to_parallelism_and_the_job_completes(
    manual: FakeKube, batch: client.BatchV1Api, clock: FakeClock
) -> None:
    manual.set_image_behaviour("busybox:*", "complete:1")
    created = batch.create_namespaced_job(NS, job(completions=3, parallelism=2))
    manual.settle()
    pods = pods_of(manual)
    assert len(pods) == 2  # parallelism, although 3 completions are wanted
    for pod in pods:
        assert pod["metadata"]["name"].startswith("load-") and len(pod["metadata"]["name"]) == len("load-") + 5
        assert pod["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
        assert pod["metadata"]["ownerReferences"] == [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "load", "uid": created.metadata.uid,
            "controller": True, "blockOwnerDeletion": True}]
    status = job_status(manual)
    assert {k: v for k, v in status.items() if k != "startTime"} == {
        "active": 2, "terminating": 0, "uncountedTerminatedPods": {}, "ready": 2}
    clock.advance(1)  # the two pods exit 0: accounted, the third pod starts
    manual.settle()
    status = job_status(manual)
    assert (status["active"], status["succeeded"], status.get("conditions")) == (1, 2, None)
    clock.advance(1)
    manual.settle()
    done = batch.read_namespaced_job("load", NS).status
    assert (done.succeeded, done.active, done.failed, done.ready, done.terminating) == (3, None, None, 0, 0)
    assert [(c.type, c.status, c.reason, c.message) for c in done.conditions] == [
        ("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
        ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")]
    assert done.completion_time is not None and done.uncounted_terminated_pods.succeeded is None
    pods = pods_of(manual)
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded"] * 3
    assert all(not p["metadata"].get("finalizers") for p in pods)  # accounted: the tracking finalizer is gone
    finished = pods[0]["status"]
    assert finished["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert [(c["type"], c["status"], c.get("reason")) for c in finished["conditions"]] == [
        ("Initialized", "True", "PodCompleted"), ("Ready", "False", "PodCompleted"),
        ("ContainersReady", "False", "PodCompleted"), ("PodScheduled", "True", None)]
    reasons = [e["reason"] for e in manual.list_objects("events", NS) if e["involvedObject"]["kind"] == "Job"]
    assert reasons == ["SuccessfulCreate"] * 3 + ["Completed"]


def test_a_watch_sees_finished_pods_listed_as_uncounted_before_they_are_counted(
    manual: FakeKube, batch: client.BatchV1Api, clock: FakeClock
) -> None:
    manual.set_image_behaviour("busybox:*", "complete:1")
    created = batch.create_namespaced_job(NS, job())
    manual.settle()
    clock.advance(1)
    manual.settle()
    pod_uid = pods_of(manual)[0]["metadata"]["uid"]
    stream = watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=created.metadata.resource_version,
                                  timeout_seconds=1, _preload_content=False)
    steps = []
    for event in stream:
        st = event["raw_object"]["status"]
        steps.append((event["type"], st.get("active", 0), st.get("ready"), st.get("uncountedTerminatedPods"),
                      st.get("succeeded", 0), [c["type"] for c in st.get("conditions") or []]))
        if "Complete" in steps[-1][-1]:
            break
    assert steps == [
        ("MODIFIED", 1, 0, {}, 0, []),  # the pod is created, then it turns ready
        ("MODIFIED", 1, 1, {}, 0, []),
        ("MODIFIED", 0, 0, {"succeeded": [pod_uid]}, 0, []),
        ("MODIFIED", 0, 0, {}, 1, ["SuccessCriteriaMet", "Complete"]),
    ]


def test_more_failures_than_the_backoff_limit_fail_the_job(
    manual: FakeKube, batch: client.BatchV1Api, clock: FakeClock
) -> None:
    manual.set_image_behaviour("busybox:*", "fail:1")
    batch.create_namespaced_job(NS, job(backoffLimit=1))
    for _ in range(3):  # each pod fails after 1 s; the replacement waits the controller's back-off
        manual.settle()
        clock.advance(1)
    manual.settle()
    status = batch.read_namespaced_job("load", NS).status
    assert (status.failed, status.succeeded, status.active, status.completion_time) == (2, None, None, None)
    assert [(c.type, c.reason, c.message) for c in status.conditions] == [
        ("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
    assert sorted(p["status"]["phase"] for p in pods_of(manual)) == ["Failed", "Failed"]
    warnings = [(e["type"], e["reason"]) for e in manual.list_objects("events", NS) if e["reason"] != "Scheduled"]
    assert warnings[-1] == ("Warning", "BackoffLimitExceeded")


def test_on_failure_restarts_in_place_until_the_restarts_reach_the_backoff_limit(
    manual: FakeKube, batch: client.BatchV1Api, clock: FakeClock
) -> None:
    manual.set_image_behaviour("busybox:*", "fail:1")
    batch.create_namespaced_job(NS, job(restart_policy="OnFailure", backoffLimit=2))
    manual.settle()
    clock.advance(1)  # exit 1: the kubelet restarts the container (OnFailure), no new pod
    manual.settle()
    (pod,) = pods_of(manual)
    assert (pod["status"]["phase"], pod["status"]["containerStatuses"][0]["restartCount"]) == ("Running", 1)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    clock.advance(0.5)  # past the back-off: running again
    manual.settle()
    clock.advance(1)  # second exit: 2 restarts reach backoffLimit 2, the Job deletes its pod and fails
    manual.settle()
    status = batch.read_namespaced_job("load", NS).status
    assert (status.failed, status.active) == (1, None)
    assert [c.type for c in status.conditions] == ["FailureTarget", "Failed"]
    assert pods_of(manual) == []  # deleted by the Job (its log goes with it, as on a cluster)


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_a_cascading_delete_removes_the_running_pods(
    manual: FakeKube, batch: client.BatchV1Api, policy: str
) -> None:
    batch.create_namespaced_job(NS, job(parallelism=2, completions=4))  # pods that run until stopped
    manual.settle()
    assert len(pods_of(manual)) == 2
    answer = raw(batch.delete_namespaced_job("load", NS, propagation_policy=policy, _preload_content=False))
    if policy == "Foreground":  # the Job stays, with the finalizer, until its pods are gone
        assert (answer["kind"], answer["metadata"]["finalizers"]) == ("Job", ["foregroundDeletion"])
    else:
        assert (answer["kind"], answer["status"]) == ("Status", "Success")
    manual.settle()
    assert pods_of(manual) == [] and manual.get_object("jobs", NS, "load") is None


def test_a_delete_without_a_policy_orphans_the_pods_as_batch_v1_does(
    manual: FakeKube, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job())
    manual.settle()
    answer = raw(batch.delete_namespaced_job("load", NS, _preload_content=False))
    assert answer["metadata"]["finalizers"] == ["orphan"]
    manual.settle()
    assert manual.get_object("jobs", NS, "load") is None
    (pod,) = pods_of(manual)
    assert (pod["status"]["phase"], pod["metadata"].get("ownerReferences"), pod["metadata"].get("finalizers")) == \
        ("Running", None, None)


LOCUSTFILE = """
import os

from locust import User, task

print("tag from the pod's env:", os.environ["LOAD_TAG"])


class QuietUser(User):
    @task
    def idle(self) -> None:
        pass
"""


def test_process_runtime_runs_a_locust_job_pod_with_its_configmap_and_env(tmp_path: Path) -> None:
    """The cheap end of the process runtime (G2's load Job test runs real workers against a master): a Job pod's
    `python -m locust` runs with this interpreter, reads the locustfile from the ConfigMap volume through the
    rewritten mountPath in an argument and in an env value, and its exit code 0 completes the Job."""
    runtime = ProcessRuntime(tmp_path, None)
    fake = FakeKube(pod_runtime=runtime).start()
    runtime.read_config_maps_from(fake)
    try:
        fake.seed_namespace(NS)
        body = job(image="locustio/locust:2.47.0")
        body["metadata"]["namespace"] = NS
        body["spec"]["template"]["spec"]["containers"][0].update(
            command=["python", "-m", "locust"], args=["-f", "/mnt/locust/locustfile.py", "--list"],
            env=[{"name": "LOAD_TAG", "value": "/mnt/locust/tagged-run"}],
            volumeMounts=[{"name": "locustfiles", "mountPath": "/mnt/locust"}])
        body["spec"]["template"]["spec"]["volumes"] = [{"name": "locustfiles", "configMap": {"name": "locustfiles"}}]
        fake.create(body)  # before its ConfigMap: the pod waits in ContainerCreating, as on a kubelet
        assert wait_until(lambda: pods_of(fake), timeout_s=10, what="the Job's pod")
        fake.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "locustfiles", "namespace": NS},
                     "data": {"locustfile.py": LOCUSTFILE}})
        wait_until(lambda: any(c["type"] == "Complete" for c in job_status(fake).get("conditions") or []),
                   timeout_s=30, what="the locust Job to complete")
        (pod,) = pods_of(fake)
        assert pod["status"]["phase"] == "Succeeded"
        log = (tmp_path / f"{pod['metadata']['name']}.log").read_text()
        volume = tmp_path / pod["metadata"]["name"] / "locustfiles"
        assert f"tag from the pod's env: {volume}/tagged-run" in log and "QuietUser" in log, log
        assert (volume / "locustfile.py").read_text() == LOCUSTFILE
    finally:
        fake.stop()
        runtime.close()
