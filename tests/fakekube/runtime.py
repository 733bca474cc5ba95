"""Pod runtimes: what the fake kubelet asks to start, probe and stop a pod.

The kubelet owns the Kubernetes side (pod status, restart counting, back-off, events); a runtime owns the
workload: it gives the pod its IP, says whether it runs and is ready, and tears it down. The default
``SimulatedRuntime`` decides by image (``set_image_behaviour``); a runtime that runs real processes on
loopback addresses can be plugged in with ``FakeKube(pod_runtime=...)``.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

JsonObj = dict[str, Any]


@dataclass(frozen=True)
class PodRuntimeStatus:
    """What a runtime reports for a pod on each kubelet tick.

    * ``running and ready``: Running, Ready.
    * ``running and not ready``: Running, not Ready; a ``message`` becomes an ``Unhealthy`` event
      (``Readiness probe failed: ...``).
    * ``not running`` with ``exit_code``: the container exited; the kubelet counts a restart, waits its
      back-off (``CrashLoopBackOff``) and calls ``restart``.
    * ``not running`` with ``reason`` (``ErrImagePull``, ``ImagePullBackOff``, ``ContainerCreating``...):
      the container is waiting for that reason.
    ``container`` names the affected container (default: all of them).
    """

    running: bool
    ready: bool
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    container: str | None = None


@runtime_checkable
class PodRuntime(Protocol):
    def start(self, pod: JsonObj) -> str:
        """Create the pod's sandbox and start its containers; return the pod IP."""
        ...

    def poll(self, pod: JsonObj) -> PodRuntimeStatus:
        """Current state of a started pod (called on every kubelet tick, keep it cheap)."""
        ...

    def restart(self, pod: JsonObj) -> None:
        """Start the exited container again (same sandbox, same IP)."""
        ...

    def stop(self, pod: JsonObj) -> None:
        """Stop everything of the pod and release its IP; must be idempotent."""
        ...


class IpPool:
    """Pod IPs 10.244.0.1, .2, ... like kwok hands them out; released IPs are reused lowest first."""

    def __init__(self, prefix: str = "10.244") -> None:
        self._prefix = prefix
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            for third in range(256):
                for fourth in range(1, 255):
                    ip = f"{self._prefix}.{third}.{fourth}"
                    if ip not in self._used:
                        self._used.add(ip)
                        return ip
        raise RuntimeError("pod IP pool exhausted")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


@dataclass(frozen=True)
class Behaviour:
    kind: str  # ready | crashloop | imagepull | never-ready | slow-ready | complete | fail
    delay_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        name, _, arg = text.partition(":")
        if name not in ("ready", "crashloop", "imagepull", "never-ready", "slow-ready", "complete", "fail"):
            raise ValueError(f"unknown pod behaviour {text!r}")
        if name in ("slow-ready", "complete", "fail"):
            return cls(name, float(arg or "1"))
        return cls(name)


def image_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


@dataclass
class _PodState:
    behaviour: Behaviour
    container: str
    image: str
    ip: str
    started_at: float
    attempt_started_at: float


class SimulatedRuntime:
    """The default runtime: behaviours chosen by image, timed with the FakeKube clock."""

    # How long a crash-looping container runs before it exits, and one ErrImagePull/ImagePullBackOff cycle.
    CRASH_AFTER_S = 0.05
    PULL_CYCLE_S = 1.0

    def __init__(self, monotonic: Callable[[], float], ip_pool: IpPool | None = None) -> None:
        self._monotonic = monotonic
        self._ips = ip_pool or IpPool()
        self._rules: list[tuple[str, Behaviour]] = []
        self._pods: dict[str, _PodState] = {}
        self._lock = threading.Lock()

    def set_image_behaviour(self, pattern: str, behaviour: str) -> None:
        parsed = Behaviour.parse(behaviour)
        with self._lock:
            self._rules.insert(0, (pattern, parsed))

    def behaviour_for(self, image: str) -> Behaviour:
        with self._lock:
            rules = list(self._rules)
        tag = image_tag(image)
        for pattern, behaviour in rules:
            if pattern in (image, tag) or fnmatch.fnmatchcase(image, pattern) or fnmatch.fnmatchcase(tag, pattern):
                return behaviour
        return Behaviour("ready")

    def _pick(self, pod: JsonObj) -> tuple[Behaviour, str, str]:
        chosen: tuple[Behaviour, str, str] | None = None
        for container in (pod.get("spec") or {}).get("containers") or []:
            image = str(container.get("image", ""))
            behaviour = self.behaviour_for(image)
            if chosen is None or (chosen[0].kind == "ready" and behaviour.kind != "ready"):
                chosen = (behaviour, str(container.get("name", "")), image)
        return chosen or (Behaviour("ready"), "", "")

    def start(self, pod: JsonObj) -> str:
        uid = pod["metadata"]["uid"]
        behaviour, container, image = self._pick(pod)
        now = self._monotonic()
        with self._lock:
            state = self._pods.get(uid)
            if state is None:
                state = _PodState(behaviour, container, image, self._ips.allocate(), now, now)
                self._pods[uid] = state
        return state.ip

    def restart(self, pod: JsonObj) -> None:
        with self._lock:
            state = self._pods.get(pod["metadata"]["uid"])
            if state is not None:
                state.attempt_started_at = self._monotonic()

    def poll(self, pod: JsonObj) -> PodRuntimeStatus:
        with self._lock:
            state = self._pods.get(pod["metadata"]["uid"])
        if state is None:
            return PodRuntimeStatus(running=False, ready=False, reason="ContainerCreating")
        now = self._monotonic()
        kind = state.behaviour.kind
        if kind == "ready":
            return PodRuntimeStatus(running=True, ready=True)
        if kind == "slow-ready":
            return PodRuntimeStatus(running=True, ready=now - state.started_at >= state.behaviour.delay_s)
        if kind == "never-ready":
            return PodRuntimeStatus(
                running=True,
                ready=False,
                message="Readiness probe failed: HTTP probe failed with statuscode: 503",
                container=state.container,
            )
        if kind in ("complete", "fail"):
            # A run-to-completion container: Running (and Ready, it has no probe) for delay_s, then it exits.
            if now - state.attempt_started_at < state.behaviour.delay_s:
                return PodRuntimeStatus(running=True, ready=True)
            if kind == "complete":
                return PodRuntimeStatus(running=False, ready=False, exit_code=0, reason="Completed")
            return PodRuntimeStatus(running=False, ready=False, exit_code=1, reason="Error", container=state.container)
        if kind == "crashloop":
            if now - state.attempt_started_at < self.CRASH_AFTER_S:
                return PodRuntimeStatus(running=True, ready=False, container=state.container)
            return PodRuntimeStatus(running=False, ready=False, exit_code=1, reason="Error", container=state.container)
        # imagepull: the first try fails with ErrImagePull, then ImagePullBackOff until the next retry.
        elapsed = (now - state.started_at) % self.PULL_CYCLE_S
        ref = state.image if "/" in state.image.split(":")[0] else f"library/{state.image}"
        if elapsed < self.PULL_CYCLE_S * 0.2:
            return PodRuntimeStatus(
                running=False,
                ready=False,
                reason="ErrImagePull",
                message=(
                    f'failed to pull and unpack image "docker.io/{ref}": failed to resolve reference '
                    f'"docker.io/{ref}": docker.io/{ref}: not found'
                ),
                container=state.container,
            )
        return PodRuntimeStatus(
            running=False,
            ready=False,
            reason="ImagePullBackOff",
            message=f'Back-off pulling image "{state.image}"',
            container=state.container,
        )

    def stop(self, pod: JsonObj) -> None:
        with self._lock:
            state = self._pods.pop(pod["metadata"]["uid"], None)
        if state is not None:
            self._ips.release(state.ip)
