"""Deployment rollouts, scaling and pod behaviours as a client sees them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fakekube import FakeKube
from tests.fakekube.polling import wait_until
from tests.fakekube.seed import deployment

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


@pytest.fixture
def shop(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_namespace(NS)
    return fake_kube


def conditions(dep: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions or []}


def available(apps: client.AppsV1Api, name: str) -> Any:
    dep = apps.read_namespaced_deployment(name, NS)
    st = dep.status
    done = (
        st.observed_generation == dep.metadata.generation
        and (st.updated_replicas or 0) == dep.spec.replicas
        and (st.available_replicas or 0) == dep.spec.replicas
        and (st.replicas or 0) == dep.spec.replicas
    )
    return dep if done else None


def pods_of(core: client.CoreV1Api, slot: str) -> list[Any]:
    return list(core.list_namespaced_pod(NS, label_selector=f"app=web,slot={slot}").items)


def test_rollout_reaches_available_with_the_recorded_progression(shop: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    created = apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    assert created.status.to_dict() == {key: None for key in created.status.to_dict()}  # status: {}
    dep = wait_until(lambda: available(apps, "web-blue"), what="web-blue available")
    assert conditions(dep) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    assert dep.status.unavailable_replicas is None
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    rs = apps.list_namespaced_replica_set(NS, label_selector="app=web,slot=blue").items
    assert len(rs) == 1
    hash_label = rs[0].metadata.labels["pod-template-hash"]
    assert rs[0].metadata.name == f"web-blue-{hash_label}"
    assert rs[0].metadata.owner_references[0].uid == dep.metadata.uid
    pods = pods_of(client.CoreV1Api(kube_api), "blue")
    assert len(pods) == 3
    for pod in pods:
        assert pod.metadata.name.startswith(f"web-blue-{hash_label}-")
        assert len(pod.metadata.name) == len(f"web-blue-{hash_label}-") + 5
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip.startswith("10.244.")
        assert pod.metadata.labels["pod-template-hash"] == hash_label


def test_template_change_rolls_out_a_new_replicaset(shop: FakeKube, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    wait_until(lambda: available(apps, "web-blue"), what="first rollout")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "shop/web:v2"}]}}}}
    patched = apps.patch_namespaced_deployment("web-blue", NS, patch)
    assert patched.metadata.generation == 2
    dep = wait_until(lambda: available(apps, "web-blue"), what="second rollout")
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    rss = {
        r.metadata.annotations["deployment.kubernetes.io/revision"]: r
        for r in apps.list_namespaced_replica_set(NS).items
    }
    assert rss["1"].spec.replicas == 0 and rss["2"].spec.replicas == 3
    images = {
        p.spec.containers[0].image
        for p in wait_until(
            lambda: (
                [p for p in pods_of(client.CoreV1Api(kube_api), "blue")]
                if all(p.spec.containers[0].image == "shop/web:v2" for p in pods_of(client.CoreV1Api(kube_api), "blue"))
                else None
            ),
            what="old pods gone",
        )
    }
    assert images == {"shop/web:v2"}
    reasons = [
        e.reason
        for e in client.CoreV1Api(kube_api)
        .list_namespaced_event(NS, field_selector="involvedObject.kind=Deployment,involvedObject.name=web-blue")
        .items
    ]
    assert reasons.count("ScalingReplicaSet") >= 3


@pytest.mark.parametrize("target", [5, 1, 0])
def test_scaling_through_the_scale_subresource(shop: FakeKube, kube_api: Any, target: int) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "blue", "shop/web:v1"))
    wait_until(lambda: available(apps, "web-blue"), what="rollout")
    scale = apps.read_namespaced_deployment_scale("web-blue", NS)
    assert scale.status.selector == "app=web,slot=blue"
    assert scale.status.replicas == 3
    scale.spec.replicas = target
    apps.replace_namespaced_deployment_scale("web-blue", NS, scale)
    with pytest.raises(client.ApiException) as stale:
        apps.replace_namespaced_deployment_scale("web-blue", NS, scale)
    assert stale.value.status == 409
    dep = wait_until(lambda: available(apps, "web-blue"), what=f"scaled to {target}")
    assert (dep.status.replicas or 0) == target
    assert (
        len(
            wait_until(
                lambda: [1] if len(pods_of(client.CoreV1Api(kube_api), "blue")) == target else None,
                what="pod count",
            )
            or []
        )
        == 1
    )
    if target == 0:
        assert dep.status.available_replicas is None  # zero counters are omitted
        assert conditions(dep)["Available"] == ("True", "MinimumReplicasAvailable")


def wait_pod(core: client.CoreV1Api, predicate: Any, what: str) -> Any:
    return wait_until(lambda: next((p for p in pods_of(core, "green") if predicate(p)), None), what=what, timeout_s=5)


def reasons_for(core: client.CoreV1Api, pod: Any) -> dict[str, str]:
    events = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod.metadata.name}").items
    return {e.reason: e.message for e in events}


def test_crashloop_pod_shows_backoff_restarts_and_events(shop: FakeKube, kube_api: Any) -> None:
    shop.set_image_behaviour("v2-crash", "crashloop")
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "green", "shop/web:v2-crash", replicas=1))
    pod = wait_pod(
        core,
        lambda p: (
            (p.status.container_statuses or [None])[0] is not None
            and p.status.container_statuses[0].restart_count >= 2
            and p.status.container_statuses[0].state.waiting is not None
        ),
        "crash loop",
    )
    cs = pod.status.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.state.waiting.message.startswith("back-off ")
    assert cs.last_state.terminated.exit_code == 1
    assert cs.ready is False and pod.status.phase == "Running"
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "ContainersNotReady")
    events = reasons_for(core, pod)
    assert events["BackOff"].startswith("Back-off restarting failed container web in pod ")
    dep = apps.read_namespaced_deployment("web-green", NS)
    assert conditions(dep)["Available"] == ("False", "MinimumReplicasUnavailable")


def test_imagepull_pod_waits_with_pull_errors(shop: FakeKube, kube_api: Any) -> None:
    shop.set_image_behaviour("shop/web:missing", "imagepull")
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "green", "shop/web:missing", replicas=1))
    pod = wait_pod(
        core,
        lambda p: (
            p.status.container_statuses
            and p.status.container_statuses[0].state.waiting is not None
            and p.status.container_statuses[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
        ),
        "image pull failure",
    )
    assert pod.status.phase == "Pending"
    events = wait_until(
        lambda: reasons_for(core, pod) if "Failed" in reasons_for(core, pod) else None, what="Failed event"
    )
    assert 'Failed to pull image "shop/web:missing"' in events["Failed"] or events["Failed"].startswith("Error: ")


def test_never_ready_pod_runs_unready_with_probe_events(shop: FakeKube, kube_api: Any) -> None:
    shop.set_image_behaviour("v2", "never-ready")
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(NS, deployment(NS, "web", "green", "shop/web:v2", replicas=1))
    pod = wait_pod(core, lambda p: p.status.phase == "Running", "running pod")
    assert pod.status.container_statuses[0].ready is False
    assert pod.status.container_statuses[0].state.running is not None
    events = wait_until(
        lambda: reasons_for(core, pod) if "Unhealthy" in reasons_for(core, pod) else None,
        what="Unhealthy event",
    )
    assert events["Unhealthy"] == "Readiness probe failed: HTTP probe failed with statuscode: 503"


def test_slow_ready_pod_becomes_ready_after_its_delay(kube_api: Any) -> None:
    from tests.fakekube import FakeClock

    clock = FakeClock()
    with FakeKube(clock=clock, controllers="manual") as fake:
        fake.seed_namespace(NS)
        fake.set_image_behaviour("v2", "slow-ready:30")
        fake.create(deployment(NS, "web", "green", "shop/web:v2", replicas=1))
        fake.settle()
        pod = fake.list_objects("pods", NS)[0]
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["containerStatuses"][0]["ready"] is False
        clock.advance(31)
        fake.settle()
        pod = fake.list_objects("pods", NS)[0]
        assert pod["status"]["containerStatuses"][0]["ready"] is True
        assert fake.deployment_available(NS, "web-green")


def test_progress_deadline_exceeded_is_reported(kube_api: Any) -> None:
    from tests.fakekube import FakeClock

    clock = FakeClock()
    with FakeKube(clock=clock, controllers="manual") as fake:
        fake.seed_namespace(NS)
        fake.set_image_behaviour("v2", "never-ready")
        body = deployment(NS, "web", "green", "shop/web:v2", replicas=1)
        body["spec"]["progressDeadlineSeconds"] = 60
        fake.create(body)
        fake.settle()
        clock.advance(61)
        fake.settle()
        dep = fake.get_object("deployments", NS, "web-green")
        assert dep is not None
        progressing = next(c for c in dep["status"]["conditions"] if c["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
        assert progressing["message"].endswith("has timed out progressing.")
