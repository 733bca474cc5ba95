"""Locust workers as a Kubernetes Job (targets/kubernetes/load_workers.py; issue 12 item 5, on Kubernetes).

- unit: the Job and ConfigMap a load's WorkerRequest becomes, the placement copied from the app's Deployment,
  the config's checks (exit 4 at load), the pods' failure reasons, a stop that is safe to call twice and
  reports what it could not delete;
- against the fake API server, through the official client: the launcher creates the Job and the ConfigMap
  and its stop deletes both; a load whose worker pods cannot pull their image fails with the pods' reasons;
- end to end on the process cluster (tests/kube_cluster.py): a load with 2 workers as a Job, merged counts
  equal to the workers' shares, and the Job and its pods gone afterwards.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient

from releasegate.core.checks import CheckOutcome, Verdict
from releasegate.core.config import AppConfig, Config, KubernetesConfig, load_config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.types import Endpoint, Role
from releasegate.plugins.fixtures import LoadRunner, SuiteFixtures
from releasegate.plugins.ledger import Ledger, ReleaseContext
from releasegate.targets.kubernetes.api import KubeApi, NotFoundError
from releasegate.targets.kubernetes.load_workers import (
    FILES_MOUNT,
    JOB_LABEL,
    LoadJobSettings,
    LoadWorkerJob,
    WorkerJobs,
    configmap_manifest,
    job_manifest,
    job_name,
    placement_of,
    worker_pod_problems,
)
from releasegate.verifiers import load as load_module
from releasegate.verifiers.load import COLLECTOR, STARTUP_GRACE_S, LoadError, LoadProfile, run_load
from tests.fakekube import FakeKube
from tests.fakekube.seed import blue_green_objects
from tests.kube_cluster import ProcessRuntime
from tests.verifiers_services import PROJECT_ROOT, demo_service, free_port, write_profiles
from tests.waiting import wait_until

SHOP_LOCUSTFILE = PROJECT_ROOT / "suites" / "load" / "locustfile.py"
PLACEMENT = {"nodeSelector": {"pool": "shop"},
             "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"}]}
SETTINGS = LoadJobSettings(namespace="shop", app="web", run_id="20261203-101500-a1b2c3", image="reg/locust:2",
                           master_host="10.0.0.5", master_port=5557, deadline_s=95.5, placement=PLACEMENT)


@dataclass(frozen=True)
class Request:
    """What the launcher reads of verifiers.load.WorkerRequest."""

    count: int
    locustfile: Path
    log_path: Path


# -- manifests ----------------------------------------------------------------------------------------------

def test_a_worker_request_becomes_one_job_of_n_pods_with_the_locust_files_mounted() -> None:
    name = job_name("web", "0123abcd")
    job = job_manifest(name, SETTINGS, 3)
    assert name == "web-load-0123abcd"
    assert job["metadata"] == {"name": name, "namespace": "shop", "labels": {
        "app": "web", "app.kubernetes.io/managed-by": "releasegate", "releasegate.io/run": "20261203-101500-a1b2c3",
        "releasegate.io/app": "web", JOB_LABEL: name}}
    spec = job["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (3, 3, 0)
    assert (spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (96, 300)
    pod = spec["template"]
    # The Service <app> of the canary layout selects `app`: the workers must never be its endpoints.
    assert "app" not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][JOB_LABEL] == name
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["nodeSelector"] == {"pool": "shop"} and pod["spec"]["tolerations"] == PLACEMENT["tolerations"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == "reg/locust:2"
    assert container["command"] == [
        "locust", "--worker", "--master-host", "10.0.0.5", "--master-port", "5557",
        "-f", f"{FILES_MOUNT}/collector.py,{FILES_MOUNT}/locustfile.py", "--loglevel", "WARNING"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["volumeMounts"] == [{"name": "locust-files", "mountPath": FILES_MOUNT, "readOnly": True}]
    assert pod["spec"]["volumes"] == [{"name": "locust-files", "configMap": {"name": name}}]

    owner = {"metadata": {"name": name, "uid": "uid-1"}}
    configmap = configmap_manifest(name, SETTINGS, {"collector.py": "c", "locustfile.py": "l"}, owner=owner)
    assert configmap["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "uid-1"}]
    assert configmap["data"] == {"collector.py": "c", "locustfile.py": "l"}


def test_job_names_are_dns_labels_even_for_long_app_names() -> None:
    name = job_name("Checkout_Service." + "x" * 80, "0123abcd")
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert name.endswith("-load-0123abcd") and name.startswith("checkout-service-x")


def test_placement_is_copied_from_the_apps_pod_template_without_its_pod_affinity() -> None:
    node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}
    deployment = {"spec": {"template": {"spec": {
        **PLACEMENT, "imagePullSecrets": [{"name": "regcred"}], "containers": [{"name": "app"}],
        "affinity": {"nodeAffinity": node_affinity, "podAntiAffinity": {"preferred": "app=web"}}}}}}
    assert placement_of(deployment) == {**PLACEMENT, "imagePullSecrets": [{"name": "regcred"}],
                                        "affinity": {"nodeAffinity": node_affinity}}
    assert placement_of(None) == {}


# -- configuration: exit 4 at load ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kubernetes", "message"), [
    ('load_worker_image = "reg/locust:2"',
     "kubernetes.load_worker_image is set but kubernetes.load_master_address is empty: the worker pods must dial "
     "this machine's locust master; set load_master_address to the host:port they reach it at"),
    ('load_worker_image = "reg/locust:2"\nload_master_address = "ci-runner"',
     "kubernetes.load_master_address = 'ci-runner' is not host:port; give the address the worker pods dial"),
    ('load_worker_image = "reg/locust 2"\nload_master_address = "10.0.0.5:5557"',
     "kubernetes.load_worker_image = 'reg/locust 2' is not an image reference"),
])
def test_bad_load_worker_settings_are_one_config_error(tmp_path: Path, kubernetes: str, message: str) -> None:
    path = tmp_path / "releasegate.toml"
    path.write_text(f"[kubernetes]\n{kubernetes}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_workers_stay_local_processes_by_default() -> None:
    kube = KubernetesConfig()
    assert (kube.load_worker_image, kube.load_master_address) == ("", "")


# -- the pods' reasons ---------------------------------------------------------------------------------------

def pod(name: str, phase: str = "Pending", *, waiting: dict[str, str] | None = None,
        terminated: dict[str, Any] | None = None, conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": waiting} if waiting else {"terminated": terminated} if terminated else {
        "running": {}}
    return {"metadata": {"name": name}, "status": {"phase": phase, "conditions": conditions or [],
                                                   "containerStatuses": [{"name": "locust-worker", "state": state}]}}


def test_worker_pod_problems_name_pull_crash_and_scheduling_failures_only() -> None:
    pods = [
        pod("w-pull", waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg/nope"'}),
        pod("w-crash", "Failed", terminated={"exitCode": 1, "reason": "Error", "message":
                                             "Traceback\nModuleNotFoundError: No module named 'releasegate'"}),
        pod("w-unscheduled", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available: 3 Insufficient cpu."}]),
        pod("w-creating", waiting={"reason": "ContainerCreating"}),
        pod("w-done", "Succeeded", terminated={"exitCode": 0, "reason": "Completed"}),
        pod("w-running", "Running"),
    ]
    assert worker_pod_problems(pods, []) == [
        'pod w-pull: ImagePullBackOff, 0 restart(s): Back-off pulling image "reg/nope"',
        "pod w-crash: exited with code 1 (Error): Traceback | ModuleNotFoundError: No module named 'releasegate'",
        "pod w-unscheduled: cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
    ]


# -- launch and stop at our boundary (KubeApi.call) ----------------------------------------------------------

class ScriptedApi:
    """KubeApi at our own boundary: records each call and answers from a script (an exception is raised)."""

    timeout_s = 1.0

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.client = ApiClient()  # the generated API classes want one; nothing is sent through it
        self.answers = answers
        self.calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []

    def call(self, verb: str, resource: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls.append((verb, resource, args, kwargs))
        script = self.answers.get((verb, resource), [None])
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def verbs(self) -> list[tuple[str, str]]:
        return [(verb, resource) for verb, resource, _, _ in self.calls]


CREATED_JOB = {"metadata": {"name": "web-load-0123abcd", "uid": "uid-1"},
               "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "uid-1"}}}}


def launch(api: ScriptedApi, tmp_path: Path) -> LoadWorkerJob:
    job = LoadWorkerJob(cast(KubeApi, api), SETTINGS, COLLECTOR, unique=lambda: "0123abcd", poll_s=3600)
    job(Request(count=2, locustfile=SHOP_LOCUSTFILE, log_path=tmp_path / "locust.stderr"))
    return job


def test_stop_deletes_the_job_then_the_configmap_and_a_second_stop_does_nothing(tmp_path: Path) -> None:
    api = ScriptedApi({("create", "jobs"): [CREATED_JOB], ("delete", "configmaps"): [NotFoundError("gone")]})
    job = launch(api, tmp_path)
    assert api.verbs() == [("create", "jobs"), ("create", "configmaps")]
    configmap = api.calls[1][2][1]
    assert configmap["data"] == {"collector.py": COLLECTOR.read_text(encoding="utf-8"),
                                 "locustfile.py": SHOP_LOCUSTFILE.read_text(encoding="utf-8")}
    job.stop()
    job.stop()
    assert api.verbs()[2:] == [("delete", "jobs"), ("delete", "configmaps")]  # a 404 is "already gone"
    assert api.calls[2][2] == ("web-load-0123abcd", "shop") and api.calls[2][3] == {"propagation_policy": "Foreground"}


def test_a_failed_delete_is_reported_and_tried_again_by_the_next_stop(tmp_path: Path) -> None:
    api = ScriptedApi({("create", "jobs"): [CREATED_JOB],
                       ("delete", "jobs"): [TargetError("HTTP 500 etcdserver: request timed out"), None]})
    job = launch(api, tmp_path)
    with pytest.raises(TargetError, match=re.escape(
            "could not delete the load workers' jobs shop/web-load-0123abcd: HTTP 500 etcdserver: request timed "
            "out; delete them with `kubectl -n shop delete job,configmap web-load-0123abcd`")):
        job.stop()
    assert api.verbs()[2:] == [("delete", "jobs"), ("delete", "configmaps")]  # the ConfigMap was still deleted
    job.stop()
    assert api.verbs()[4:] == [("delete", "jobs")]


def test_a_failed_launch_deletes_what_it_created(tmp_path: Path) -> None:
    api = ScriptedApi({("create", "jobs"): [CREATED_JOB], ("create", "configmaps"): [TargetError("quota exceeded")]})
    with pytest.raises(TargetError, match="quota exceeded"):
        launch(api, tmp_path)
    assert api.verbs() == [("create", "jobs"), ("create", "configmaps"), ("delete", "jobs")]


def test_the_pods_reasons_go_to_the_loads_log_once_each(tmp_path: Path) -> None:
    pull = pod("web-load-0123abcd-x1", waiting={"reason": "ErrImagePull", "message": "not found"})
    api = ScriptedApi({("create", "jobs"): [CREATED_JOB], ("list", "pods"): [{"items": [pull]}],
                       ("list", "events"): [{"items": []}]})
    job = launch(api, tmp_path)
    job.look()
    job.look()
    assert (tmp_path / "locust.stderr").read_text(encoding="utf-8") == (
        "load worker Job shop/web-load-0123abcd: pod web-load-0123abcd-x1: ErrImagePull, 0 restart(s): not found\n")
    pods_call = next(call for call in api.calls if call[:2] == ("list", "pods"))
    assert pods_call[3] == {"label_selector": "batch.kubernetes.io/controller-uid=uid-1"}  # the Job's selector
    job.stop()


def test_the_loads_check_source_names_the_job() -> None:
    job = LoadWorkerJob(cast(KubeApi, ScriptedApi({})), SETTINGS, COLLECTOR, unique=lambda: "0123abcd")
    seen: list[CheckOutcome] = []
    job.noting_job(seen.append)(CheckOutcome(
        check="p(95) < 300ms", verdict=Verdict.PASS, value=0.1, display_value="100ms", threshold="300ms",
        subject="all endpoints", source="locust suites/load/locustfile.py, 4 users, master with 2 workers",
        window="5s", samples=500, message="ok"))
    assert seen[0].source == ("locust suites/load/locustfile.py, 4 users, master with 2 workers, workers as Job "
                              "shop/web-load-0123abcd")


# -- against the fake API server, through the official client ------------------------------------------------

def kube(kube_api: ApiClient) -> KubeApi:
    return KubeApi(kube_api, namespace="shop", timeout_s=5, max_retries=0)


def gone(fake_kube: FakeKube, name: str) -> bool:
    """No Job, ConfigMap or pod of the load's Job is left."""
    return (fake_kube.get_object("jobs", "shop", name) is None
            and fake_kube.get_object("configmaps", "shop", name) is None
            and not fake_kube.list_objects("pods", "shop", label_selector=f"{JOB_LABEL}={name}"))


def test_the_launcher_creates_the_job_and_its_configmap_and_stop_deletes_both(
        fake_kube: FakeKube, tmp_path: Path) -> None:
    """From the config, as the suite fixtures open it: the kubeconfig's client, the placement of the candidate's
    Deployment, the Job and ConfigMap created through the official client, and both deleted by the stop."""
    fake_kube.seed_namespace("shop")
    for obj in blue_green_objects("shop", "web", "blue", "shop/web:v1", None, 1, 8080, True):  # empty: no pods
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"].update(PLACEMENT)
        fake_kube.create(obj)
    config = Config(app=AppConfig(name="web"), kubernetes=KubernetesConfig(
        kubeconfig=str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")), namespace="shop",
        load_worker_image="reg/locust:2", load_master_address="10.0.0.5:5557"))
    with WorkerJobs(config, run_id="r1", slot="blue", collector=COLLECTOR).open(deadline_s=60) as job:
        assert job.settings.placement == PLACEMENT and (job.settings.master_host, job.settings.master_port) == \
            ("10.0.0.5", 5557)
        stop = job(Request(count=2, locustfile=SHOP_LOCUSTFILE, log_path=tmp_path / "locust.stderr"))
        stored = fake_kube.get_object("jobs", "shop", job.name)
        assert stored is not None
        assert stored["spec"]["parallelism"] == stored["spec"]["completions"] == 2
        assert stored["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "shop"}
        configmap = fake_kube.get_object("configmaps", "shop", job.name)
        assert configmap is not None
        assert configmap["data"]["locustfile.py"] == SHOP_LOCUSTFILE.read_text(encoding="utf-8")
        assert [owner["uid"] for owner in configmap["metadata"]["ownerReferences"]] == [stored["metadata"]["uid"]]
        stop()
        stop()  # harmless: both are being deleted or gone
    wait_until(lambda: gone(fake_kube, job.name), timeout_s=10, what="the Job, its pods and its ConfigMap gone")


def test_worker_pods_that_cannot_pull_fail_the_load_with_their_reasons(
        fake_kube: FakeKube, kube_api: ApiClient, tmp_path: Path) -> None:
    fake_kube.seed_namespace("shop")
    fake_kube.set_image_behaviour("reg/locust-missing:*", "imagepull")
    settings = replace(SETTINGS, image="reg/locust-missing:2", placement={})
    job = LoadWorkerJob(kube(kube_api), settings, COLLECTOR, poll_s=0.2)
    profile = LoadProfile(SHOP_LOCUSTFILE, users=2, spawn_rate=100, duration_s=2, min_requests=1, workers=2,
                          master=f"127.0.0.1:{free_port()}", workers_timeout_s=2)
    with pytest.raises(LoadError) as caught:
        run_load(profile, "http://127.0.0.1:9", start_workers=job)
    message = str(caught.value)
    assert "only 0 of 2 locust workers connected to the master" in message, message
    assert re.search(rf"load worker Job shop/{job.name}: pod {job.name}-\w+: (ErrImagePull|ImagePullBackOff)",
                     message), message
    wait_until(lambda: gone(fake_kube, job.name), timeout_s=10, what="the Job, its pods and its ConfigMap gone")


# -- the suite fixtures' wiring ------------------------------------------------------------------------------

@dataclass
class OpenedJob:
    """A WorkerJobs stand-in: what LoadRunner opened, and the launcher it got."""

    listen_address: str = "0.0.0.0:5557"
    deadline_s: float | None = None

    @contextlib.contextmanager
    def open(self, deadline_s: float) -> Iterator[LoadWorkerJob]:
        self.deadline_s = deadline_s
        yield LoadWorkerJob(cast(KubeApi, ScriptedApi({})), SETTINGS, COLLECTOR, unique=lambda: "0123abcd")


def test_load_runner_runs_workers_as_the_job_only_when_the_target_gives_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(load_module, "run_load", lambda profile, endpoint, **kwargs: runs.append(
        {"profile": profile, **kwargs}))
    endpoints = {Role.CANDIDATE: Endpoint(role=Role.CANDIDATE, url="http://127.0.0.1:9", slot="green", version="v2")}
    jobs = OpenedJob()
    runner = LoadRunner(endpoints, lambda outcome: None, PROJECT_ROOT, worker_jobs=cast(WorkerJobs, jobs))
    runner.run(SHOP_LOCUSTFILE, workers=2, duration_s=5, max_duration_s=20, workers_timeout_s=10)
    runner.run(SHOP_LOCUSTFILE, duration_s=5)  # one process: no Job
    LoadRunner(endpoints, lambda outcome: None, PROJECT_ROOT).run(SHOP_LOCUSTFILE, workers=2)  # local workers
    job_run, single, local = runs
    assert job_run["profile"].master == "0.0.0.0:5557" and isinstance(job_run["start_workers"], LoadWorkerJob)
    assert jobs.deadline_s == 20 + 10 + STARTUP_GRACE_S
    assert single["start_workers"] is None and local["start_workers"] is None and local["profile"].master == ""


@pytest.mark.parametrize(("target", "image", "wired"), [
    ("kubernetes", "reg/locust:2", True), ("kubernetes", "", False), ("local", "reg/locust:2", False)])
def test_suite_fixtures_open_worker_jobs_on_the_kubernetes_target_with_an_image(
        target: str, image: str, wired: bool) -> None:
    config = Config(app=AppConfig(name="web"), kubernetes=KubernetesConfig(
        namespace="shop", load_worker_image=image, load_master_address="10.0.0.5:5557" if image else ""))
    context = ReleaseContext(run_id="r1", version="v2", strategy="blue-green", target=target,
                             live_slot="blue", candidate_slot="green")
    ledger = cast(Ledger, type("StubLedger", (), {"read_context": lambda self: context})())
    jobs = SuiteFixtures(ledger, config)._worker_jobs()
    assert (jobs == WorkerJobs(config, run_id="r1", slot="green", collector=COLLECTOR)) if wired else jobs is None
    if jobs is not None:
        assert jobs.listen_address == "0.0.0.0:5557"


# -- end to end: locust workers as Job pods that are real processes ------------------------------------------

def test_a_load_with_two_workers_as_a_job_merges_their_counts_and_leaves_nothing(tmp_path: Path) -> None:
    """The process cluster's runtime (tests/kube_cluster.py) runs each Job pod's `locust --worker` with the
    ConfigMap's files; the master here merges both workers' counts, and the stop removes Job, pods and files."""
    runtime = ProcessRuntime(tmp_path / "pods", None)
    (tmp_path / "pods").mkdir()
    fake = FakeKube(pod_runtime=runtime).start()
    runtime.read_config_maps_from(fake)
    try:
        fake.seed_namespace("shop")
        port = free_port()
        config = Config(app=AppConfig(name="web"), kubernetes=KubernetesConfig(
            kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")), namespace="shop",
            load_worker_image="reg/locust:2", load_master_address=f"127.0.0.1:{port}"))
        profile = LoadProfile(SHOP_LOCUSTFILE, users=4, spawn_rate=100, duration_s=1, min_requests=1, workers=2,
                              master=f"127.0.0.1:{port}", workers_timeout_s=30)
        with demo_service("v1", write_profiles(tmp_path), slot="blue") as service, \
                WorkerJobs(config, run_id="e2e", slot="blue", collector=COLLECTOR).open(deadline_s=90) as job:
            result = run_load(profile, service.endpoint(), start_workers=job)
        assert len(result.worker_requests) == 2 and all(n > 0 for n in result.worker_requests.values())
        assert sum(result.worker_requests.values()) == result.requests > 0
        wait_until(lambda: gone(fake, job.name), timeout_s=15, what="the Job, its pods and its ConfigMap gone")
        assert not [p for p in runtime.pods() if p["alive"]], "a worker process outlived its pod"
    finally:
        fake.stop()
        runtime.close()
