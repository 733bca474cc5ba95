"""The protocol every target implements: what a release strategy needs from where releases happen.

A strategy never asks how a target does a thing: the local target moves a router, the kubernetes target
patches a Service selector. Every method that changes something is called once per release, by the
release controller, in stage order; the read-only ones may be called from any process.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from releasegate.core.types import (
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


@runtime_checkable
class Target(Protocol):
    """Where releases happen. Methods raise ConfigError on bad input and TargetError when acting fails."""

    name: str

    def describe(self) -> str:
        """One line saying which cluster this is (run directory, API server and namespace, ...), for the
        terminal and the reports: a reader must see where a release acted."""
        ...

    # -- reading ---------------------------------------------------------------------------------
    def live_state(self) -> LiveState:
        """Which versions run in which slot, and how traffic is split between them."""
        ...

    def workload_status(self, slot: Slot) -> WorkloadStatus:
        """The pods of one slot: version, replicas, ready replicas, problems seen."""
        ...

    def endpoints(self, candidate_slot: Slot | None) -> dict[Role, Endpoint]:
        """URLs for the candidate (preview, that slot alone), the baseline (live slot alone), the service."""
        ...

    def metrics_scope(self) -> MetricsScope:
        """Where Prometheus is and which labels tell slot and version apart."""
        ...

    def read_release_state(self) -> ReleaseState | None:
        """The last release state recorded on the target, if any."""
        ...

    def candidate_slot(self, live_slot: Slot | None) -> Slot:
        """Where a candidate runs while `live_slot` serves users (None: nothing serves yet, a first deploy).
        Blue-green layouts answer the other slot; the canary layouts a fixed `canary` slot."""
        ...

    def exposes_candidate_at_provision(self) -> bool:
        """True when provisioning itself gives users a share of the candidate: a canary Rollout runs its first
        setWeight as soon as its image changes. The controller then counts exposure from provision on, and
        refuses a dry run (it could not keep users off the candidate). Every other layout: False."""
        ...

    # -- acting (release controller only) -------------------------------------------------------
    def prepare_image(self, version: str) -> None:
        """Make `version`'s image available where the target runs it (kind builds and loads it);
        called in preflight, before the lock, so a broken build changes nothing. Most targets: no-op."""
        ...

    def acquire_lock(self, holder: LockHolder, ttl_s: float) -> None:
        """Take the per-app release lock for `ttl_s` seconds, storing who holds it (run, version, host, pid).

        Raises LockHeldError when another release holds a lock that has not expired; its one-line message
        names that holder's run, version, host, pid and the lock's expiry (UTC time and seconds left).
        """
        ...

    def renew_lock(self, holder: LockHolder, ttl_s: float) -> None:
        """Extend `holder`'s lock to `ttl_s` seconds from now (compare-and-swap: never takes the lock).

        Raises LockLostError when `holder` no longer holds the lock (another release took it over after
        it expired, or it was released): the lock is lost. Raises TargetError when the target could not
        be asked; the caller may retry until the lock would expire.
        """
        ...

    def release_lock(self, holder: LockHolder) -> None:
        """Give the lock back (a no-op when `holder` does not hold it)."""
        ...

    def record_release_state(self, state: ReleaseState) -> None:
        """Write the release state durably so a later run sees where this one stopped."""
        ...

    def deploy(self, slot: Slot, version: str) -> None:
        """Create or replace the workload of `slot` running `version`; returns without waiting."""
        ...

    def wait_ready(self, slot: Slot, timeout_s: float) -> WorkloadStatus:
        """Wait until every replica of `slot` is ready; raise NotReadyError with the reason at the deadline."""
        ...

    def set_traffic(self, split: TrafficSplit) -> SwitchResult:
        """Move traffic atomically; returns once the change took effect (and how long that took)."""
        ...

    def promote(self, slot: Slot, version: str) -> Promotion:
        """All traffic to `version`, which runs in `slot`, for good; returns once the service serves it.

        Blue-green layouts move all traffic to `slot` and leave the old slot warm for finalize to scale
        down. The kubernetes canary layout updates the stable workload to `version`, waits for its rollout,
        puts all traffic on it and removes the canary: nothing is left to retire, and a later rollback is
        `promote(slot, previous_version)` (the old version rolls out again).
        """
        ...

    def remove(self, slot: Slot) -> None:
        """Delete a slot's workload (rollback of a candidate); in-flight requests finish first."""
        ...

    def scale_down(self, slot: Slot) -> None:
        """Scale a slot to zero replicas (finalize after the keep-warm delay), keeping its definition."""
        ...

    def close(self) -> None:
        """Free what the target object holds (connections, an ephemeral local cluster)."""
        ...


def promote_by_moving_traffic(target: Target, slot: Slot, version: str) -> Promotion:
    """`Target.promote` of the two-slot layouts (the local router, the blue-green Service): all traffic to
    `slot`; the other slot, if it runs a version, stays warm until finalize scales it down."""
    old_slot = other_slot(slot)
    had_old_version = target.live_state().versions.get(old_slot) is not None
    switch = target.set_traffic(TrafficSplit.all_to(slot))
    return Promotion(switch=switch, live_slot=slot, retired_slot=old_slot if had_old_version else None,
                     detail=f"all traffic to {slot} ({version})")
