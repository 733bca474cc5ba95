"""A pluggable pod runtime: the fake kubelet asks it for IPs and readiness."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client

from tests.fakekube import FakeKube, PodRuntimeStatus
from tests.fakekube.seed import deployment

NS = "shop"


class LoopbackRuntime:
    """Stands in for a runtime of real processes: loopback IPs, readiness switched by the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, str] = {}
        self.stopped: list[str] = []
        self.ready = False
        self.next_ip = 1

    def start(self, pod: dict[str, Any]) -> str:
        with self.lock:
            ip = f"127.0.0.{self.next_ip + 10}"
            self.next_ip += 1
            self.started[pod["metadata"]["name"]] = ip
            return ip

    def poll(self, pod: dict[str, Any]) -> PodRuntimeStatus:
        return PodRuntimeStatus(
            running=True,
            ready=self.ready,
            message=None if self.ready else "Readiness probe failed: connection refused",
        )

    def restart(self, pod: dict[str, Any]) -> None:
        return None

    def stop(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.stopped.append(pod["metadata"]["name"])


def test_plugged_runtime_owns_ips_readiness_and_teardown() -> None:
    runtime = LoopbackRuntime()
    with FakeKube(pod_runtime=runtime) as fake, client.ApiClient(fake.client_configuration()) as api:
        fake.seed_namespace(NS)
        fake.create(deployment(NS, "web", "green", "shop/web:v2", replicas=2))
        fake.wait_for(lambda: len(runtime.started) == 2)
        core = client.CoreV1Api(api)
        pods = fake.wait_for(lambda: [p for p in core.list_namespaced_pod(NS).items if p.status.pod_ip])
        assert {p.status.pod_ip for p in pods} <= set(runtime.started.values())
        assert not fake.deployment_available(NS, "web-green")
        runtime.ready = True
        fake.wait_for(lambda: fake.deployment_available(NS, "web-green"))
        fake.delete_object("deployments", NS, "web-green")
        fake.wait_for(lambda: sorted(runtime.stopped) == sorted(runtime.started))
        assert not fake.errors
