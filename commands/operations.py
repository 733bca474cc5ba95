"""What each operator command does to a target: status, rollback, switch, promote, abort.

Every command that changes something takes the release lock first, as a release does: a holder proven dead
(core/recovery.py) is taken over at once; a live one refuses the command (LockHeldError, exit 4) unless
`force`, which releases that holder's lock and says so (its own lock keeper then finds the lock lost and the
release stops moving traffic). The lock is given back when the command ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from releasegate.core.errors import ConfigError, LockHeldError
from releasegate.core.recovery import (
    LockReader,
    holder_is_dead,
    take_lock,
    undo_release,
    unfinished_release,
)
from releasegate.core.target import Target
from releasegate.core.types import LockHolder, Phase, ReleaseState, Slot

OPERATOR_LOCK_TTL_S = 120.0  # a command holds the lock for seconds; a crashed one frees it soon (or at once: pid)


@dataclass(frozen=True)
class Outcome:
    """What a command did, as lines for the terminal (the first says it all)."""

    lines: list[str]


def status(target: Target) -> dict[str, Any]:
    """Live version, slot and weights, each slot's workload, the recorded release and the lock holder."""
    live = target.live_state()
    slots = {}
    for slot in sorted(live.versions):
        workload = target.workload_status(slot)
        slots[slot] = {"version": workload.version, "replicas": workload.replicas,
                       "ready_replicas": workload.ready_replicas, "problems": list(workload.problems)}
    recorded = target.read_release_state()
    now = time.time()
    lock = target.read_lock() if isinstance(target, LockReader) else None
    return {
        "app": live.app, "target": target.describe(),
        "live_version": live.live_version, "live_slot": live.live_slot,
        "traffic": dict(live.traffic.weights), "slots": slots,
        "release": None if recorded is None else {**recorded.to_dict(), "unfinished": not recorded.finished},
        "lock": None if lock is None else {
            "run_id": lock.holder.run_id, "version": lock.holder.version, "host": lock.holder.host,
            "pid": lock.holder.pid, "renewed_at": lock.renewed_at, "expires_at": lock.expires_at,
            "expired": now >= lock.expires_at, "dead": holder_is_dead(lock, now=now)},
    }


def describe_status(found: dict[str, Any]) -> list[str]:
    traffic = ", ".join(f"{slot} {weight}%" for slot, weight in sorted(found["traffic"].items()) if weight)
    live = (f"{found['live_version']} (slot {found['live_slot']})" if found["live_slot"] is not None
            else "split" if len(found["traffic"]) > 1 and all(found["traffic"].values()) else "nothing")
    lines = [f"{found['app']} on {found['target']}", f"  live     {live}; traffic {traffic or 'none'}"]
    for slot, workload in found["slots"].items():
        problems = f"  ({'; '.join(workload['problems'])})" if workload["problems"] else ""
        lines.append(f"  {slot:<8} {workload['version'] or '-'}  {workload['ready_replicas']}/{workload['replicas']} "
                     f"ready{problems}")
    release = found["release"]
    if release is None:
        lines.append("  release  none recorded")
    else:
        what = ("UNFINISHED: the next release rolls it back first; `releasegate rollback` does it now"
                if release["unfinished"] else "finished")
        lines.append(f"  release  {release['version']} (run {release['run_id']}, previous "
                     f"{release['previous_version'] or 'none'}) at phase {release['phase']}: {what}")
    lock = found["lock"]
    if lock is None:
        lines.append("  lock     free")
    else:
        holder = LockHolder(lock["run_id"], lock["version"], lock["host"], lock["pid"])
        state = ("expired" if lock["expired"] else f"holder dead: {lock['dead']}" if lock["dead"]
                 else "holder may be running")
        lines.append(f"  lock     held by {holder.held_until(lock['expires_at'], time.time())}; {state}")
    return lines


class Operator:
    """Runs one command on `target` as `holder` (a run id of its own, this host and pid)."""

    def __init__(self, target: Target, *, command: str, force: bool, ready_timeout_s: float) -> None:
        self.target = target
        self.command = command
        self.force = force
        self.ready_timeout_s = ready_timeout_s
        self.holder = LockHolder.this_process(f"releasegate-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                              version="")
        self.notes: list[str] = []
        self.locked = False

    # -- the lock -----------------------------------------------------------------------------------
    def lock(self) -> None:
        try:
            self.notes += [f"{name}: {value}" for name, value in take_lock(self.target, self.holder,
                                                                           OPERATOR_LOCK_TTL_S)]
        except LockHeldError as exc:
            current = self.target.read_lock() if isinstance(self.target, LockReader) else None
            if not self.force or current is None:
                raise LockHeldError(f"{exc}; or pass --force to override it (that release then stops at its "
                                    "next lock renewal)") from None
            self.target.release_lock(current.holder)  # only that holder's lock: a compare-and-swap on the target
            self.notes.append(f"--force: released the lock of run {current.holder.describe()}, which was not "
                              "proven dead; that release stops moving traffic at its next lock renewal")
            take_lock(self.target, self.holder, OPERATOR_LOCK_TTL_S)
        self.locked = True

    def unlock(self) -> None:
        if self.locked:
            self.target.release_lock(self.holder)
            self.locked = False

    # -- the commands -------------------------------------------------------------------------------
    def rollback(self) -> Outcome:
        """Traffic back on the previous version: an unfinished release is undone (candidate removed); after a
        promoted release (or a switch) the previous version gets all traffic again, the newer slot stays warm."""
        self.lock()
        unfinished = unfinished_release(self.target)
        if unfinished is not None:
            undo = undo_release(self.target, unfinished, ready_timeout_s=self.ready_timeout_s)
            return Outcome([undo.line("rolled back"), *self.notes])
        recorded = self.target.read_release_state()
        live = self.target.live_state()
        if recorded is None or recorded.previous_version is None:
            raise ConfigError(f"no previous version of {live.app} is recorded on the target (no release or switch "
                              "has finished there, or the last one was a first deploy); there is nothing to roll "
                              "back to; use `releasegate switch --to SLOT` to move traffic by hand")
        if recorded.phase is not Phase.PROMOTED and live.live_version == recorded.previous_version:
            return Outcome([f"nothing to roll back: {live.live_version} (slot {live.live_slot}) serves all traffic; "
                            f"release {recorded.version} ended {recorded.phase.value}", *self.notes])
        undo = undo_release(self.target, recorded, ready_timeout_s=self.ready_timeout_s, remove_candidate=False)
        return Outcome([f"rolled back {recorded.version} to {undo.live_version} (slot {undo.live_slot}) in "
                        f"{undo.seconds:.2f}s: {'; '.join(undo.steps) or 'traffic was already there'}", *self.notes])

    def abort(self) -> Outcome:
        """An unfinished release undone and recorded as aborted (a live one needs --force)."""
        self.lock()
        unfinished = unfinished_release(self.target)
        if unfinished is None:
            return Outcome(["nothing to abort: no unfinished release is recorded on the target", *self.notes])
        undo = undo_release(self.target, unfinished, ready_timeout_s=self.ready_timeout_s, final_phase=Phase.ABORTED)
        return Outcome([undo.line("aborted"), *self.notes])

    def switch(self, to_slot: Slot | None) -> Outcome:
        """All traffic to `to_slot` (default: the slot that does not serve), which must run a ready version;
        recorded as a finished release so that `rollback` goes back. Refused while a release is unfinished."""
        self.lock()
        self._refuse_unfinished("switch")
        live = self.target.live_state()
        slot = to_slot or self._other_slot(live.versions, live.live_slot)
        if slot not in live.versions:
            known = ", ".join(sorted(live.versions))
            raise ConfigError(f"--to {slot!r} is not a slot of {live.app}; use one of: {known}")
        if live.live_slot == slot:
            return Outcome([f"nothing to switch: {live.live_version} (slot {slot}) serves all traffic already",
                            *self.notes])
        workload = self.target.workload_status(slot)
        if workload.version is None or not workload.ready:
            raise ConfigError(f"slot {slot} of {live.app} runs {workload.version or 'nothing'} with "
                              f"{workload.ready_replicas}/{workload.replicas} ready replicas; deploy a version there "
                              "and wait until it is ready before switching to it")
        started = time.monotonic()
        promotion = self.target.promote(slot, workload.version)
        self.target.record_release_state(ReleaseState(
            run_id=self.holder.run_id, version=workload.version, previous_version=live.live_version,
            live_slot=promotion.live_slot, live_version=workload.version, candidate_slot=slot,
            phase=Phase.PROMOTED, updated_at=time.time()))
        return Outcome([f"switched {live.app} to {workload.version} (slot {promotion.live_slot}) in "
                        f"{time.monotonic() - started:.2f}s: {promotion.switch.previous.describe()} -> "
                        f"{promotion.switch.traffic.describe()}; `releasegate rollback` goes back to "
                        f"{live.live_version}", *self.notes])

    def promote(self) -> Outcome:
        """An unfinished release finished forward by hand: its candidate, which must be ready, gets all traffic
        for good (the old slot stays warm for a rollback)."""
        self.lock()
        unfinished = unfinished_release(self.target)
        if unfinished is None or unfinished.candidate_slot is None:
            raise ConfigError("nothing to promote: no unfinished release with a candidate is recorded on the "
                              "target; use `releasegate switch --to SLOT` to move traffic to a slot")
        slot = unfinished.candidate_slot
        live = self.target.live_state()
        if live.live_slot != slot or live.live_version != unfinished.version:
            workload = self.target.workload_status(slot)
            if workload.version != unfinished.version or not workload.ready:
                raise ConfigError(f"the candidate {unfinished.version} of run {unfinished.run_id} is not ready in "
                                  f"slot {slot} ({workload.version or 'nothing'}, {workload.ready_replicas}/"
                                  f"{workload.replicas} ready); roll it back with `releasegate rollback`, or "
                                  "release it again")
            self.target.promote(slot, unfinished.version)
        after = self.target.live_state()
        self.target.record_release_state(ReleaseState(
            run_id=unfinished.run_id, version=unfinished.version, previous_version=unfinished.previous_version,
            live_slot=after.live_slot, live_version=after.live_version, candidate_slot=slot,
            phase=Phase.PROMOTED, updated_at=time.time()))
        return Outcome([f"promoted {unfinished.version} by hand (run {unfinished.run_id} stopped at phase "
                        f"{unfinished.phase.value}, before its verification finished): all traffic on slot "
                        f"{after.live_slot}; `releasegate rollback` goes back to {unfinished.previous_version}",
                        *self.notes])

    def _refuse_unfinished(self, command: str) -> None:
        unfinished = unfinished_release(self.target)
        if unfinished is not None:
            raise ConfigError(f"release {unfinished.version} (run {unfinished.run_id}) is unfinished at phase "
                              f"{unfinished.phase.value}; `releasegate rollback` or `releasegate promote` it "
                              f"before `releasegate {command}`")

    @staticmethod
    def _other_slot(versions: Mapping[Slot, str | None], live_slot: Slot | None) -> Slot:
        others = [slot for slot in sorted(versions) if slot != live_slot]
        if len(others) != 1:
            raise ConfigError(f"cannot tell which slot to switch to among {', '.join(others)}; name it with --to SLOT")
        return others[0]

