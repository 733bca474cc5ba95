"""Runs the controllers in deterministic rounds, in a background thread or stepped by hand.

A round is: deployments -> rollouts (argoproj.io, once installed) -> replicasets (pods) -> scheduler/kubelet ->
replicasets (status) -> jobs (pods and status) -> endpoints -> garbage collector. Each controller reads fresh
objects, so one round moves the whole system one step, and ``settle()`` runs rounds until one writes nothing.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

from .clock import Clock
from .ctl_deployment import DeploymentController
from .ctl_endpoints import EndpointsController
from .ctl_gc import GarbageCollector
from .ctl_job import JobController
from .ctl_replicaset import ReplicaSetController
from .ctl_rollout import RolloutController
from .events import EventRecorder
from .kubelet import Kubelet
from .registry import Registry
from .runtime import PodRuntime


class ControllerManager:
    IDLE_TICK_S = 0.05

    def __init__(self, registry: Registry, runtime: PodRuntime, clock: Clock, *, tick_s: float = 0.01) -> None:
        self.registry = registry
        self.recorder = EventRecorder(registry, clock)
        self.deployments = DeploymentController(registry, self.recorder, clock)
        self.rollouts = RolloutController(registry, self.recorder, clock)
        self.replicasets = ReplicaSetController(registry, self.recorder, clock)
        self.kubelet = Kubelet(registry, self.recorder, runtime, clock)
        self.jobs = JobController(registry, self.recorder, clock)
        self.endpoints = EndpointsController(registry, clock)
        self.gc = GarbageCollector(registry)
        self.tick_s = tick_s
        self.errors: list[str] = []
        self._round_lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    @property
    def steps(self) -> list[Callable[[], None]]:
        return [
            self.deployments.sync_all,
            self.rollouts.sync_all,
            self.replicasets.manage,
            self.kubelet.sync,
            self.replicasets.update_status,
            self.jobs.sync_all,
            self.endpoints.sync,
            self.gc.sync,
        ]

    def run_round(self) -> bool:
        """One round; returns whether anything was written."""
        with self._round_lock:
            before = self.registry.store.writes
            for step in self.steps:
                try:
                    step()
                except Exception:  # a controller bug must fail the test, not kill the loop silently
                    self.errors.append(traceback.format_exc())
            self.rounds += 1
            return self.registry.store.writes != before

    def settle(self, *, timeout: float = 10.0, max_rounds: int = 10_000) -> int:
        """Run rounds until one writes nothing; returns the number of rounds run."""
        deadline = time.monotonic() + timeout
        for n in range(1, max_rounds + 1):
            if not self.run_round():
                return n
            if time.monotonic() > deadline:
                break
        raise TimeoutError(f"controllers did not settle within {timeout}s / {max_rounds} rounds")

    # -- background loop ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fakekube-controllers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        store = self.registry.store
        while not self._stop.is_set():
            if self._paused.is_set():
                self._stop.wait(self.tick_s)
                continue
            if self.run_round():
                self._stop.wait(self.tick_s)
            else:
                # Idle: sleep until someone writes, but still tick every IDLE_TICK_S for time-driven work
                # (slow-ready delays, crash-loop back-off, progress deadlines).
                store.wait_for_change(store.writes, self.IDLE_TICK_S)

    def pause(self) -> None:
        self._paused.set()
        with self._round_lock:  # wait for a running round to finish
            pass

    def resume(self) -> None:
        self._paused.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._paused.is_set()

    def stop(self) -> None:
        self._stop.set()
        self.registry.store.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._round_lock:
            self.kubelet.stop_all()
