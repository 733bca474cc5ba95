"""The Kubernetes API server failing: 5xx, 429, timeouts and conflicts, through the official client over HTTP.

The fake API server's fault rules answer the real requests of the kubernetes target. Each fault either
goes away within the retry budget (and the action succeeds) or ends as one TargetError line saying what
failed, how often it was tried and what to do; traffic never moves half-way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from releasegate.core.errors import TargetError
from releasegate.core.types import TrafficSplit
from releasegate.targets.kubernetes.api import ConflictError
from releasegate.targets.kubernetes.target import KubernetesTarget
from tests.fakekube import FakeKube
from tests.test_kubernetes_target import NS, make_config, selector

pytest_plugins = ["tests.fakekube.fixtures"]


@pytest.fixture
def seeded(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_blue_green(namespace=NS, app="web", blue_image="shop/web:v1", replicas=2)
    fake_kube.clear_requests()
    return fake_kube


def open_target(tmp_path: Path, fake: FakeKube, **kubernetes: object) -> KubernetesTarget:
    return KubernetesTarget.open(make_config(tmp_path, fake, **kubernetes))


@pytest.fixture
def provisioned(tmp_path: Path, seeded: FakeKube) -> Iterator[KubernetesTarget]:
    """v2 ready in the green slot, traffic on blue; two retries allowed, so a storm of three fails fast."""
    target = open_target(tmp_path, seeded, max_retries=2)
    target.deploy("green", "v2")
    target.wait_ready("green", 10)
    seeded.clear_requests()
    yield target
    target.close()


def service_patches(fake: FakeKube) -> list[int]:
    return [r.status for r in fake.requests if r.method == "PATCH" and r.path.endswith("/services/web")]


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_storm_on_the_switch_fails_in_one_line_and_traffic_stays(provisioned: KubernetesTarget,
                                                                       seeded: FakeKube, status: int) -> None:
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=status, times=50)
    with pytest.raises(TargetError) as error:
        provisioned.promote("green", "v2")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"the Kubernetes API server failed to patch services in namespace shop with HTTP "
                              f"{status} (3 attempts over ")
    assert message.endswith("check the API server's health (kubectl get --raw /readyz) and rerun the release")
    assert service_patches(seeded) == [status] * 3  # 1 + max_retries, then no more
    assert selector(seeded) == {"app": "web", "slot": "blue"}  # nothing half-switched
    # The rollback that follows, once the server recovers, finds traffic where it was and keeps it there.
    seeded.clear_faults()
    provisioned.set_traffic(TrafficSplit.all_to("blue"))
    assert selector(seeded) == {"app": "web", "slot": "blue"}


def test_a_429_storm_honours_retry_after_then_fails_in_one_line(provisioned: KubernetesTarget,
                                                                seeded: FakeKube) -> None:
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=429, times=50, retry_after=1)
    started = time.monotonic()
    with pytest.raises(TargetError) as error:
        provisioned.promote("green", "v2")
    elapsed = time.monotonic() - started
    assert str(error.value).startswith("the Kubernetes API server kept throttling (HTTP 429 Too Many Requests) the "
                                       "request to patch services in namespace shop (3 attempts over ")
    assert "rerun later" in str(error.value) and "\n" not in str(error.value)
    assert elapsed >= 2.0  # two waits of Retry-After: 1, not an immediate hammering
    assert selector(seeded) == {"app": "web", "slot": "blue"}


def test_a_brief_5xx_and_429_spell_is_ridden_out(provisioned: KubernetesTarget, seeded: FakeKube) -> None:
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=502, times=1)
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=429, times=1, retry_after=0)
    provisioned.promote("green", "v2")
    assert service_patches(seeded) == [502, 429, 200]
    assert selector(seeded) == {"app": "web", "slot": "green"}


def test_an_api_server_that_stops_answering_times_out_at_the_request_timeout(tmp_path: Path,
                                                                             seeded: FakeKube) -> None:
    target = open_target(tmp_path, seeded, max_retries=1, request_timeout_s=0.3)
    try:
        seeded.inject_fault(method="GET", path_regex=r"/deployments/web-green$", status=None, latency_s=3, times=2)
        started = time.monotonic()
        with pytest.raises(TargetError) as error:
            target.workload_status("green")
        elapsed = time.monotonic() - started
    finally:
        target.close()
    message = str(error.value)
    assert message.startswith(f"the Kubernetes API server at {seeded.url} did not answer within 0.3s to get "
                              "deployments (2 attempts over ")
    assert message.endswith("check the API server's health, or raise kubernetes.request_timeout_s")
    assert "\n" not in message
    assert elapsed < 2.5, elapsed  # two 0.3 s timeouts and a short back-off, not the server's 3 s delays
    assert seeded.write_requests() == []


def test_a_conflict_storm_re_reads_each_time_then_names_the_other_writer(provisioned: KubernetesTarget,
                                                                         seeded: FakeKube) -> None:
    seeded.inject_fault(method="PUT", path_regex=r"/deployments/web-green$", status=409, times=50)
    with pytest.raises(ConflictError) as error:
        provisioned.deploy("green", "v3")
    message = str(error.value)
    assert message.startswith("conflict on deployments in namespace shop: ")
    assert "it changed under releasegate 5 times in a row, each time re-read and retried: another writer" in message
    assert "\n" not in message
    puts = [r for r in seeded.requests if r.method == "PUT" and r.path.endswith("/deployments/web-green")]
    gets = [r for r in seeded.requests if r.method == "GET" and r.path.endswith("/deployments/web-green")]
    assert [r.status for r in puts] == [409] * 5
    assert len(gets) >= 5  # a fresh read before every write
    green = seeded.get_object("deployments", NS, "web-green")
    assert green is not None and green["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:v2"


def test_an_api_server_that_is_down_is_one_line_after_the_retries() -> None:
    from kubernetes.client import ApiClient, Configuration, CoreV1Api

    from releasegate.targets.kubernetes.api import KubeApi
    from tests.verifiers_services import free_port

    configuration = Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    slept: list[float] = []
    with ApiClient(configuration) as client:
        api = KubeApi(client, namespace=NS, timeout_s=1, max_retries=2, sleep=slept.append)
        with pytest.raises(TargetError) as error:
            api.call("get", "namespaces", CoreV1Api(client).read_namespace, NS)
    message = str(error.value)
    assert message.startswith(f"cannot reach the Kubernetes API server at {configuration.host} to get namespaces "
                              "(3 attempts over ")
    assert "NewConnectionError" in message and "check the kubeconfig's server address" in message
    assert "\n" not in message
    assert api.requests == 3 and len(slept) == 2  # our retries only: urllib3's own are switched off
