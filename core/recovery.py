"""After a crash: what a dead release left unfinished, whether its lock holder is provably dead, and the undo.

A runner killed with SIGKILL (a CI job cancelled past its grace period, a runner that died) leaves three
things behind on the target: the release state it recorded last (a phase other than promoted, rolled-back
or aborted), possibly a candidate workload and a traffic split, and its lock. The next release of that app
and the operator commands (`releasegate rollback|abort|status`) meet them here, through the Target protocol
only, so the plugin and the commands undo a dead release the same way.

Lock takeover without waiting out the TTL needs a proof that the holder is dead: either it ran on this host
and its pid is gone, or it has not renewed the lock for STALE_AFTER_RENEW_PERIODS renew periods (the lock
keeper renews every ttl/RENEWS_PER_TTL, plugins/lock_keeper.py). Anything short of a proof keeps today's
answer: LockHeldError, and the caller waits for the lock to expire.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from releasegate.core.errors import ConfigError, LockHeldError, TargetError
from releasegate.core.processes import pid_alive
from releasegate.core.target import Target
from releasegate.core.types import LockHolder, Phase, ReleaseState, Slot, TrafficSplit

RENEWS_PER_TTL = 3  # LockKeeper's default: a renewal every ttl/3
STALE_AFTER_RENEW_PERIODS = 2  # a lock not renewed for two renew periods has a dead (or cut off) holder

# Phases in which users never reached the candidate (unless the layout exposes it at provision): a resumed
# release can verify it again without anyone having seen an unverified version.
RECOVERED_PROPERTY = "release.recovered.summary"
"""The JUnit property of the preflight that rolled an unfinished release back first: what it did, in one line."""
RESUMABLE_PHASES = (Phase.STARTED, Phase.PROVISIONING, Phase.PROVISIONED, Phase.VERIFYING)


@dataclass(frozen=True)
class LockInfo:
    """The release lock as the target stores it: who holds it, when it was last renewed, for how long."""

    holder: LockHolder
    renewed_at: float  # wall clock (epoch seconds)
    ttl_s: float

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_s


@runtime_checkable
class LockReader(Protocol):
    """A target that can say who holds its release lock (the local and kubernetes targets)."""

    def read_lock(self) -> LockInfo | None:
        """The current holder of the release lock, or None when nobody holds it."""
        ...


def holder_is_dead(lock: LockInfo, *, now: float, this_host: str | None = None,
                   alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why `lock`'s holder is provably dead (one clause for a message), or None when it may still run.

    Same host with its pid gone is proof at once; a lock not renewed for STALE_AFTER_RENEW_PERIODS renew
    periods is proof too (its keeper would have renewed it). A pid that exists is no proof of life (it may
    have been reused), so it only ever delays a takeover until the staleness rule applies, never causes one.
    """
    holder = lock.holder
    host = this_host if this_host is not None else socket.gethostname()
    if holder.host and holder.host == host and holder.pid is not None and not alive(holder.pid):
        return f"its process {holder.pid} on {host} is gone"
    period = lock.ttl_s / RENEWS_PER_TTL
    silent = now - lock.renewed_at
    if lock.ttl_s > 0 and silent >= STALE_AFTER_RENEW_PERIODS * period:
        return (f"it has not renewed the lock for {silent:.0f}s ({STALE_AFTER_RENEW_PERIODS} renew periods of "
                f"{period:.0f}s)")
    return None


def unfinished_release(target: Target) -> ReleaseState | None:
    """The release state recorded on the target when that release never finished, else None."""
    state = target.read_release_state()
    return state if state is not None and not state.finished else None


def resume_refusal(earlier: ReleaseState, version: str, *, exposed_at_provision: bool) -> str | None:
    """Why `--release-resume` of `version` cannot continue `earlier` (a one-line ConfigError), or None."""
    if earlier.version != version:
        return (f"--release-resume: the unfinished release on the target is {earlier.version} (run "
                f"{earlier.run_id}, stopped at phase {earlier.phase.value}), not {version}; resume with "
                f"--release {earlier.version}, or run without --release-resume to roll it back first")
    exposed = earlier.phase not in RESUMABLE_PHASES or (exposed_at_provision and earlier.phase != Phase.STARTED)
    if exposed:
        return (f"--release-resume: run {earlier.run_id} ({earlier.version}) stopped at phase "
                f"{earlier.phase.value}, after users could reach the candidate; verifying again would leave "
                "them on an unverified version meanwhile, so it cannot be resumed; run without "
                "--release-resume to roll it back first")
    return None


@dataclass(frozen=True)
class Undo:
    """What undoing a dead release did: where traffic is now and each step taken, for one line."""

    earlier: ReleaseState
    live_slot: Slot | None
    live_version: str | None
    steps: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    def line(self, verb: str = "rolled back") -> str:
        where = (f"{self.live_version} (slot {self.live_slot})" if self.live_version
                 else "no version (it was a first deploy)")
        done = "; ".join(self.steps) if self.steps else "nothing was left to undo"
        return (f"unfinished release {self.earlier.version} (run {self.earlier.run_id}, stopped at phase "
                f"{self.earlier.phase.value}) {verb}: traffic on {where}; {done}; in {self.seconds:.2f}s")


def stable_slot_of(target: Target, candidate_slot: Slot | None, previous_version: str | None) -> Slot | None:
    """The slot that serves `previous_version` once the candidate is gone: the slot running it that is not
    the candidate's, else the layout's other slot (the kubernetes canary layout's stable, updated in place)."""
    versions = target.live_state().versions
    others = [slot for slot in versions if slot != candidate_slot]
    running = [slot for slot in others if previous_version is not None and versions[slot] == previous_version]
    if running:
        return running[0]
    return others[0] if len(others) == 1 else None


def undo_release(target: Target, earlier: ReleaseState, *, ready_timeout_s: float,
                 final_phase: Phase = Phase.ROLLED_BACK, remove_candidate: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> Undo:
    """Put all traffic back on `earlier.previous_version` and remove `earlier`'s candidate (unless
    `remove_candidate` is False: an operator's rollback of a promoted release keeps it warm to switch back to).

    Idempotent: a crash in the middle of it is undone by the next call. The caller holds the lock. Records
    ROLLING_BACK before the first change and `final_phase` after the last, under `earlier`'s run id, so the
    record keeps describing that release. Raises TargetError when traffic does not end up where it must.
    """
    started = clock()
    previous, candidate = earlier.previous_version, earlier.candidate_slot
    target.record_release_state(_record(earlier, Phase.ROLLING_BACK, earlier.live_slot, earlier.live_version))
    steps: list[str] = []
    stable = stable_slot_of(target, candidate, previous)
    if previous is not None:
        if stable is None:
            raise TargetError(f"cannot tell which slot served {previous} before run {earlier.run_id}: the target "
                              f"runs {dict(target.live_state().versions)}; put traffic back by hand")
        status = target.workload_status(stable)
        if status.version != previous:
            # Replaced in place (the kubernetes canary layout's promotion): roll the old version out again.
            target.promote(stable, previous)
            steps.append(f"{previous} rolled out again on {stable}")
        elif not status.ready:
            # Scaled down by a finalize that did not get to record its end: bring it back before traffic.
            target.deploy(stable, previous)
            target.wait_ready(stable, ready_timeout_s)
            steps.append(f"{stable} ({previous}) scaled up again")
        live = target.live_state()
        if live.traffic.weights.get(stable, 0) != 100:
            switch = target.set_traffic(TrafficSplit.all_to(stable))
            steps.append(f"traffic {switch.previous.describe()} -> {switch.traffic.describe()} "
                         f"in {switch.converged_ms:.0f}ms")
    if remove_candidate and candidate is not None and candidate != stable:
        candidate_status = target.workload_status(candidate)
        if candidate_status.replicas or candidate_status.version:
            target.remove(candidate)
            steps.append(f"candidate slot {candidate} ({candidate_status.version or earlier.version}) removed")
    live = target.live_state()
    if previous is not None and (live.live_slot != stable or live.live_version != previous):
        raise TargetError(f"after undoing run {earlier.run_id}, traffic is {live.traffic.describe()} with versions "
                          f"{dict(live.versions)}, not all on {previous} (slot {stable}); put it back by hand")
    target.record_release_state(_record(earlier, final_phase, live.live_slot, live.live_version))
    return Undo(earlier=earlier, live_slot=live.live_slot, live_version=live.live_version, steps=tuple(steps),
                seconds=clock() - started)


def _record(earlier: ReleaseState, phase: Phase, live_slot: Slot | None, live_version: str | None) -> ReleaseState:
    return ReleaseState(run_id=earlier.run_id, version=earlier.version, previous_version=earlier.previous_version,
                        live_slot=live_slot, live_version=live_version, candidate_slot=earlier.candidate_slot,
                        phase=phase, updated_at=time.time())


@dataclass(frozen=True)
class TakeOver:
    """How a new release dealt with an unfinished one before its own preflight: a line and JUnit properties."""

    line: str
    properties: tuple[tuple[str, str], ...]


def take_over_unfinished(target: Target, earlier: ReleaseState, holder: LockHolder, *, ttl_s: float,
                         version: str, resume: bool, ready_timeout_s: float) -> TakeOver:
    """A new release found `earlier` unfinished: take the lock (a dead holder's at once, else LockHeldError:
    that release is still running), then roll it back, or with `resume` keep it and continue.

    On return the caller holds the lock. ConfigError (exit 4, nothing changed but the lock, which the caller
    gives back) when resuming is not safe.
    """
    taken = take_lock(target, holder, ttl_s)
    if resume:
        refusal = resume_refusal(earlier, version, exposed_at_provision=target.exposes_candidate_at_provision())
        if refusal is not None:
            raise ConfigError(refusal)
        line = (f"resuming release {earlier.version} (run {earlier.run_id} stopped at phase {earlier.phase.value}, "
                "before users reached the candidate): traffic stays where it is, the candidate is provisioned "
                "and verified again")
        return TakeOver(line, (("release.resumed", line), *taken))
    undo = undo_release(target, earlier, ready_timeout_s=ready_timeout_s)
    line = undo.line("rolled back first") + " (--release-resume continues it instead, where that is safe)"
    return TakeOver(line, ((RECOVERED_PROPERTY, line), ("release.recovered.run_id", earlier.run_id),
                           ("release.recovered.phase", earlier.phase.value),
                           ("release.recovered.seconds", f"{undo.seconds:.2f}"), *taken))


def take_lock(target: Target, holder: LockHolder, ttl_s: float) -> tuple[tuple[str, str], ...]:
    """acquire_lock, saying whose lock was taken over and on what proof (a JUnit property), if any."""
    before = target.read_lock() if isinstance(target, LockReader) else None
    now = time.time()
    target.acquire_lock(holder, ttl_s)
    if before is None or before.holder.run_id == holder.run_id:
        return ()
    proof = "its lock had expired" if now >= before.expires_at else holder_is_dead(before, now=now)
    return (("release.lock.taken_over", f"run {before.holder.describe()}: {proof}"),)


def refuse_live_holder(lock: LockInfo, *, app: str, now: float) -> LockHeldError:
    """The one-line refusal when a live (or not provably dead) release holds the lock."""
    return LockHeldError(f"another release of {app} is in progress: lock held by "
                         f"{lock.holder.held_until(lock.expires_at, now)} unless renewed; wait for it to finish, "
                         "or for the lock to expire if that release died")
