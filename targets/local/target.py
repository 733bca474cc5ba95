"""The embedded local target: the Target protocol on top of a local cluster process.

With a cluster already running in the run directory (`python -m releasegate.targets.local up`), the
target attaches to it and leaves it running. Otherwise it starts an ephemeral one with the configured
initial version and stops it in close(), so a release run leaves no process behind.
"""

from __future__ import annotations

import subprocess
import time

from releasegate.core.config import Config
from releasegate.core.errors import LockLostError, TargetError
from releasegate.core.recovery import LockInfo, holder_is_dead, refuse_live_holder
from releasegate.core.target import promote_by_moving_traffic
from releasegate.core.types import (
    BLUE,
    Endpoint,
    LiveState,
    LockHolder,
    MetricsScope,
    Promotion,
    ReleaseState,
    Role,
    Slot,
    SwitchResult,
    TrafficSplit,
    WorkloadStatus,
    other_slot,
)
from releasegate.targets.local.client import LocalClusterClient, run_dir_of, start_cluster, stop_process
from releasegate.targets.local.pods import why_not_ready


class LocalTarget:
    name = "local"

    def __init__(self, config: Config, *, client: LocalClusterClient,
                 owned_process: subprocess.Popen[bytes] | None = None) -> None:
        self.config = config
        self.client = client
        self._owned_process = owned_process

    @classmethod
    def open(cls, config: Config, *, start_if_missing: bool = True) -> LocalTarget:
        """Attach to the cluster in the config's run directory, or start an ephemeral one."""
        client = LocalClusterClient.find_running(run_dir_of(config))
        if client is not None:
            return cls(config, client=client)
        if not start_if_missing:
            raise TargetError(f"no local cluster runs in {run_dir_of(config)}")
        client, process = start_cluster(config, persistent=False)
        return cls(config, client=client, owned_process=process)

    @property
    def ephemeral(self) -> bool:
        return self._owned_process is not None

    def exposes_candidate_at_provision(self) -> bool:
        """Users reach the candidate only from the first shift or switch on."""
        return False

    def prepare_image(self, version: str) -> None:
        """The local target runs the demo (or local.command) for any version: nothing to prepare."""

    def describe(self) -> str:
        state = self.client.state()
        kind = ("ephemeral local cluster (started for this run, stopped at its end)" if self.ephemeral
                else "local cluster (already running; left running)")
        return f"{kind} in {self.client.run_dir}, service {state['service_url']}, pid {state['pid']}"

    # -- reading ------------------------------------------------------------------------------------
    def live_state(self) -> LiveState:
        state = self.client.state()
        release = state.get("release_state") or {}
        return LiveState(
            app=state["app"],
            traffic=TrafficSplit({slot: int(w) for slot, w in state["traffic"].items()}),
            versions={slot: s["version"] for slot, s in state["slots"].items()},
            previous_version=release.get("previous_version"),
        )

    def workload_status(self, slot: Slot) -> WorkloadStatus:
        slot_state = self.client.state()["slots"][slot]
        problems = tuple(filter(None, (why_not_ready(pod) for pod in slot_state["pods"])))
        return WorkloadStatus(slot=slot, version=slot_state["version"], replicas=len(slot_state["pods"]),
                              ready_replicas=slot_state["ready_replicas"], problems=problems,
                              restarts=tuple((pod["name"], int(pod["restarts"])) for pod in slot_state["pods"]))

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        state = self.client.state()
        live_slot = state["live_slot"]
        versions = {slot: s["version"] for slot, s in state["slots"].items()}
        result = {Role.SERVICE: Endpoint(Role.SERVICE, state["service_url"], live_slot,
                                         versions.get(live_slot) if live_slot else None)}
        # During a canary split the baseline is the stable slot: the one with traffic that is not the candidate.
        stable = [slot for slot, weight in state["traffic"].items() if weight and slot != candidate_slot]
        baseline_slot = live_slot if live_slot is not None else (stable[0] if stable else None)
        if baseline_slot is not None and versions.get(baseline_slot) is not None:  # none on a first deploy
            result[Role.BASELINE] = Endpoint(Role.BASELINE, state["previews"][baseline_slot], baseline_slot,
                                             versions[baseline_slot])
        if candidate_slot is not None:
            result[Role.CANDIDATE] = Endpoint(Role.CANDIDATE, state["previews"][candidate_slot],
                                              candidate_slot, versions.get(candidate_slot))
        return result

    def metrics_scope(self) -> MetricsScope:
        prom = self.config.prometheus
        state = self.client.state()
        # The local cluster labels its own series app/slot/version; an external Prometheus may differ.
        # The cluster says how its pods are scraped (state.json's pod_up_metric): its own Prometheus reports each
        # pod as releasegate_pod_up; an external one, or a cluster started before that, as `up` per target.
        return MetricsScope(prometheus_url=state["prometheus_url"], app=self.config.app.name,
                            app_label=prom.app_label, slot_label=prom.slot_label,
                            version_label=prom.version_label, pod_up_metric=str(state.get("pod_up_metric", "up")))

    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        """The slot that does not serve (blue first when nothing does)."""
        return other_slot(live_slot) if live_slot is not None else BLUE

    def read_release_state(self) -> ReleaseState | None:
        data = self.client.state().get("release_state")
        return ReleaseState.from_dict(data) if data else None

    # -- acting -------------------------------------------------------------------------------------
    def read_lock(self) -> LockInfo | None:
        """Who holds the cluster's lock, when it was renewed and for how long (core.recovery.LockReader)."""
        lease = self.client.state().get("lease") or {}
        if not lease.get("holder"):
            return None
        pid = lease.get("pid")
        holder = LockHolder(run_id=str(lease["holder"]), version=str(lease.get("version") or ""),
                            host=str(lease.get("host") or ""), pid=None if pid is None else int(pid))
        return LockInfo(holder=holder, renewed_at=float(lease["renewed_at"]), ttl_s=float(lease["ttl_s"]))

    def _lock_holder(self) -> tuple[LockHolder, float] | None:
        """Who holds the cluster's lock and when it expires (wall-clock seconds), or None."""
        lock = self.read_lock()
        return None if lock is None else (lock.holder, lock.expires_at)

    def acquire_lock(self, holder: LockHolder | str, ttl_s: float) -> None:
        """Take the lock; a holder proven dead (core.recovery.holder_is_dead) is taken over at once."""
        holder = LockHolder.of(holder)
        body = {"holder": holder.run_id, "ttl_s": ttl_s, "version": holder.version, "host": holder.host,
                "pid": holder.pid}
        try:
            self.client.call("POST", "/lease/acquire", body)
            return
        except TargetError as exc:
            current = self.read_lock()
            if current is None or current.holder.run_id == holder.run_id:
                raise
            now = time.time()
            dead = holder_is_dead(current, now=now)
            if dead is None:
                raise refuse_live_holder(current, app=self.config.app.name, now=now) from exc
        # Release the dead holder's lease (a no-op unless that run still holds it: a compare-and-swap on the
        # holder), then acquire as usual: if a third release was faster, it holds the lock and we are refused.
        self.client.call("POST", "/lease/release", {"holder": current.holder.run_id})
        try:
            self.client.call("POST", "/lease/acquire", body)
        except TargetError as exc:
            other = self.read_lock()
            if other is None or other.holder.run_id == holder.run_id:
                raise
            raise refuse_live_holder(other, app=self.config.app.name, now=time.time()) from exc

    def renew_lock(self, holder: LockHolder | str, ttl_s: float) -> None:
        holder = LockHolder.of(holder)
        try:
            self.client.call("POST", "/lease/renew", {"holder": holder.run_id, "ttl_s": ttl_s})
        except TargetError:
            current = self._lock_holder()  # a TargetError too when the cluster is gone: the caller retries
            if current is None:
                raise LockLostError(f"the release lock of {self.config.app.name} was released: run "
                                    f"{holder.run_id} no longer holds it") from None
            if current[0].run_id != holder.run_id:
                other, expires_at = current
                raise LockLostError(f"the release lock of {self.config.app.name} was taken over by "
                                    f"{other.held_until(expires_at, time.time())}: run {holder.run_id} no "
                                    "longer holds it") from None
            raise

    def release_lock(self, holder: LockHolder | str) -> None:
        self.client.call("POST", "/lease/release", {"holder": LockHolder.of(holder).run_id})

    def record_release_state(self, state: ReleaseState) -> None:
        self.client.call("PUT", "/release-state", state.to_dict())

    def deploy(self, slot: Slot, version: str) -> None:
        self.client.call("POST", f"/slots/{slot}", {"version": version, "replicas": self.config.local.replicas})

    def wait_ready(self, slot: Slot, timeout_s: float) -> WorkloadStatus:
        # The target's own readiness deadline applies; the caller's (the stage's) is only the outer bound.
        timeout_s = min(timeout_s, self.config.local.ready_timeout_s)
        self.client.wait_slot_ready(slot, timeout_s, min_ready_s=self.config.local.min_ready_s)
        return self.workload_status(slot)

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        body: dict[str, object] = {"weights": dict(split.weights)}
        slot = split.single_slot
        if slot is not None and self.live_state().versions.get(slot) is None:
            body["serve_nothing"] = True  # back to the empty slot: the rollback of a first deploy
        started = time.perf_counter()
        answer = self.client.call("POST", "/traffic", body)
        elapsed_ms = (time.perf_counter() - started) * 1000
        previous = TrafficSplit({k: int(v) for k, v in answer["previous"].items()}) if answer["previous"] \
            else split
        # The router applies the new table before it answers: the round trip bounds the convergence.
        return SwitchResult(traffic=split, previous=previous, converged_ms=elapsed_ms)

    def promote(self, slot: Slot, version: str) -> Promotion:
        """Blue-green: all traffic to `slot`; the old slot stays warm until finalize scales it down."""
        return promote_by_moving_traffic(self, slot, version)

    def remove(self, slot: Slot) -> None:
        self.client.call("DELETE", f"/slots/{slot}")

    def scale_down(self, slot: Slot) -> None:
        self.client.call("POST", f"/slots/{slot}/scale", {"replicas": 0})

    def close(self) -> None:
        if self._owned_process is not None:
            stop_process(self._owned_process.pid)
            self._owned_process.wait()
            self._owned_process = None
        self.client.close()
