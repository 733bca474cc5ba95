"""The release controller: every change to the target, once per release, in stage order.

Only the process that runs the action items creates a controller (the single pytest process, or the
xdist worker the scheduler gives every action to). Verification items never touch it: they read the
release context from the ledger.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.progress import ProgressCallback, ProgressSnapshot
from releasegate.core.recovery import take_over_unfinished, unfinished_release
from releasegate.core.target import Target
from releasegate.core.types import (
    Endpoint,
    LockHolder,
    Phase,
    Promotion,
    ReleaseState,
    Role,
    TrafficSplit,
    WorkloadStatus,
)
from releasegate.core.waiting import poll_until
from releasegate.plugins.ledger import Decision, ItemRecord, Ledger, Outcome
from releasegate.plugins.lock_keeper import LockKeeper
from releasegate.plugins.options import ReleaseOptions
from releasegate.plugins.prometheus_gate import LivePrometheusGate, PrometheusGate
from releasegate.plugins.stages import Stage
from releasegate.plugins.targets import open_target
from releasegate.verifiers.probe import ProbeSettings, probed_change

if TYPE_CHECKING:  # verifiers/watch.py imports scipy: only when a release runs its preflight
    from releasegate.verifiers.watch import WatchedSlo, WatchOutcome


@dataclass
class ActionResult:
    """What an action item reports: JUnit properties and a line for the terminal."""

    properties: list[tuple[str, str]] = field(default_factory=list)
    skipped: str | None = None  # the reason, when the action had nothing to do


class ReleaseController:
    def __init__(self, config: Config, options: ReleaseOptions, ledger: Ledger,
                 target_factory: Callable[[Config, str], Target] = open_target,
                 prometheus: PrometheusGate | None = None) -> None:
        self.config = config
        self.options = options
        self.ledger = ledger
        self._target_factory = target_factory
        self.prometheus = prometheus or LivePrometheusGate(config.prometheus)
        self.target: Target | None = None
        self.live_slot: str | None = None
        self.candidate_slot: str | None = None
        self.previous_version: str | None = None
        self.provisioned = False
        self.switched = False  # traffic moved off the live version (a switch, or a canary shift)
        self.last_shift_at: float | None = None
        self.back_on_stable_at = 0.0
        self.first_exposed_at: float | None = None  # when users first reached the candidate
        self.locked = False
        self.lock_holder = LockHolder.this_process(options.run_id, options.version)
        self.lock_keeper: LockKeeper | None = None
        self.promotion: Promotion | None = None  # set once the new version serves all traffic
        self.candidate_at_ready: WorkloadStatus | None = None  # its pods' restarts when verification began
        self.watch_slos: tuple[WatchedSlo, ...] = ()  # release.watch_slos, parsed in preflight
        self.switched_back_by_watch: list[tuple[str, str]] | None = None  # finalize's switch back, for rollback
        self.on_progress: ProgressCallback | None = None  # the running action's live line (plugins/progress.py)

    # -- helpers ------------------------------------------------------------------------------------
    def _target(self) -> Target:
        if self.target is None:
            raise TargetError("preflight did not connect to the target; no action can run")
        return self.target

    def _record(self, phase: Phase) -> None:
        """Write the release state on the target (before and after each action): a later run reads it."""
        state = ReleaseState(
            run_id=self.options.run_id, version=self.options.version, previous_version=self.previous_version,
            live_slot=self.live_slot if not self.switched else self.candidate_slot,
            live_version=self.previous_version if not self.switched else self.options.version,
            candidate_slot=self.candidate_slot, phase=phase, updated_at=time.time())
        self._target().record_release_state(state)

    def _publish(self, endpoints: dict[Role, Endpoint], **context: Any) -> None:
        """Tell the verification items (any process) where the candidate, baseline and service are now."""
        self.ledger.update_context(**context, endpoints=dict(endpoints))

    def run(self, stage: Stage | str) -> ActionResult:
        """The action of one stage (`shift` takes its step's weight)."""
        if isinstance(stage, Stage) and stage.name == "shift":
            assert stage.step is not None
            return self.shift(stage.step)
        action: Callable[[], ActionResult] = getattr(self, stage if isinstance(stage, str) else stage.name)
        return action()

    # -- actions ------------------------------------------------------------------------------------
    def preflight(self) -> ActionResult:
        """Connect, read what serves users, refuse what cannot work, take the lock. Changes nothing else."""
        from releasegate.verifiers.watch import parse_watch_slos

        self.watch_slos = parse_watch_slos(self.config.release.watch_slos)  # ConfigError before anything
        # The target's layout depends on the strategy; the command line's choice wins over the file's.
        release = self.config.release.model_copy(update={"strategy": self.options.strategy})
        opening = time.monotonic()
        self.target = self._target_factory(self.config.model_copy(update={"release": release}),
                                           self.options.target)
        target_open_s = time.monotonic() - opening  # an ephemeral local cluster starts here
        target = self.target
        # Said first, before anything can fail: the reader must know which cluster the run looked at.
        self.ledger.update_context(target_detail=target.describe())
        # A killed run's unfinished release is dealt with before anything else (core/recovery.py): its lock
        # taken over once its holder is proven dead, then rolled back (or, with --release-resume, continued).
        unfinished = unfinished_release(target)
        recovered: tuple[tuple[str, str], ...] = ()
        if unfinished is not None:
            self.locked = True  # from the takeover on: a failure below must give the lock back
            recovered = take_over_unfinished(target, unfinished, self.lock_holder, ttl_s=self.config.release.lock_ttl_s,
                                             version=self.options.version, resume=self.options.resume,
                                             ready_timeout_s=self.config.stages.provision).properties
        live = target.live_state()
        if live.live_slot is None:
            raise TargetError(f"traffic of {live.app} is split ({live.traffic.describe()}); finish or roll back "
                              "that release before starting another")
        if live.live_version == self.options.version:
            raise ConfigError(f"{self.options.version} already serves all traffic of {live.app} (slot "
                              f"{live.live_slot}); there is nothing to release")
        self.live_slot = live.live_slot
        self.candidate_slot = target.candidate_slot(live.live_slot)
        self.previous_version = live.live_version
        if self.options.dry_run and target.exposes_candidate_at_provision():
            raise ConfigError(f"--release-dry-run cannot keep users off the candidate on {target.describe()}: "
                              "its first canary step sends them a share as soon as the new version is deployed; "
                              "release without --release-dry-run, or verify on a layout that provisions "
                              "without traffic (kubernetes.workload = \"deployment\")")
        scope = target.metrics_scope()
        self.prometheus.check_reachable(scope.prometheus_url)
        # Targets that build images (kind) do it now: a broken build stops the release before the lock.
        target.prepare_image(self.options.version)
        ttl_s, asked_at = self.config.release.lock_ttl_s, time.monotonic()
        target.acquire_lock(self.lock_holder, ttl_s)
        self.locked = True
        # Renewed every ttl/3 while the release runs; a lost lock aborts the release (see _require_lock).
        self.lock_keeper = LockKeeper(target, self.lock_holder, ttl_s, acquired_at=asked_at,
                                      on_lost=lambda reason: self.ledger.abort(f"release lock lost: {reason}"))
        self.lock_keeper.start()
        self._record(Phase.STARTED)
        self.ledger.update_context(
            previous_version=self.previous_version, live_slot=self.live_slot,
            candidate_slot=self.candidate_slot,
            metrics_scope=scope)
        properties = [("release.live_slot", self.live_slot), ("release.previous", str(self.previous_version)),
                      ("release.candidate_slot", self.candidate_slot),
                      ("release.target_detail", target.describe()),
                      ("release.preflight.target_open_s", f"{target_open_s:.2f}")]
        return ActionResult([*properties, *recovered])

    def provision(self) -> ActionResult:
        target, slot = self._target(), self.candidate_slot
        assert slot is not None
        self._record(Phase.PROVISIONING)
        started = time.monotonic()
        self.provisioned = True  # from here on a rollback must remove the candidate
        exposed = target.exposes_candidate_at_provision()
        if exposed:  # users get the first step's share from now on: that is when their exposure begins
            self.first_exposed_at = time.time()
            self.ledger.update_context(exposed_at_provision=True)
        target.deploy(slot, self.options.version)
        deployed = time.monotonic()
        status = target.wait_ready(slot, self.config.stages.provision)
        ready = time.monotonic()
        scrape_parts: list[tuple[str, str]] = []
        if exposed:  # every request of the users' share must be counted: Prometheus reads the pods first
            self.prometheus.wait_until_scraped(target.metrics_scope(), self.options.version, status.ready_replicas)
            scrape_parts.append(("release.provision.first_scrape_s", f"{time.monotonic() - ready:.2f}"))
        self.candidate_at_ready = target.workload_status(slot)  # restarts from here on stop the release
        ready_s = time.monotonic() - started
        endpoints = target.endpoints(slot)
        # Otherwise the smoke stage runs while Prometheus finds the pods; the first load, analysis or traffic
        # change waits for it (plugins/prometheus_gate.await_first_scrape).
        self._publish(endpoints, first_scrape_of=None if exposed else status.ready_replicas)
        self._record(Phase.VERIFYING)
        # Where provisioning spends its time (the report's phase parts): the deploy call, the pods' start
        # and readiness (min_ready_s included), and the wait for Prometheus's first scrape of every pod when
        # provision waits for it.
        return ActionResult([("release.provision.ready_s", f"{ready_s:.2f}"),
                             ("release.provision.deploy_s", f"{deployed - started:.2f}"),
                             ("release.provision.readiness_s", f"{ready - deployed:.2f}"),
                             *scrape_parts,
                             ("release.provision.replicas", f"{status.ready_replicas}/{status.replicas}"),
                             ("release.candidate_url", endpoints[Role.CANDIDATE].url)])

    def switch(self, action: str = "switch") -> ActionResult:
        if self.options.dry_run:
            return ActionResult(skipped="dry run: traffic stays where it is")
        target, slot = self._target(), self.candidate_slot
        assert slot is not None
        self._require_lock()
        self._require_no_restarts()
        self._record(Phase.SWITCHING)
        self.switched = True  # set before the move: a failure half-way must still be undone
        with self._probed(action, self.options.version) as probed:
            self.promotion = target.promote(slot, self.options.version)
            result = self.promotion.switch
            endpoints = target.endpoints(self.promotion.live_slot)
            self._publish(endpoints, switched=True)
            served_ms = self._confirm_served(endpoints[Role.SERVICE].url, self.options.version)
        self._record(Phase.SWITCHED)
        properties = [("release.switch.converged_ms", f"{result.converged_ms:.1f}"),
                      ("release.switch.traffic", result.traffic.describe())]
        if self.promotion.detail:
            properties.append(("release.switch.detail", self.promotion.detail))
        if served_ms is not None:
            properties.append(("release.switch.served_ms", f"{served_ms:.1f}"))
        return ActionResult(properties + probed)

    # -- canary -------------------------------------------------------------------------------------
    def shift(self, weight: int) -> ActionResult:
        """Canary: give the candidate `weight` percent of the service's traffic, the stable version the rest.

        The step before must have lasted its whole window (canary.step_window_s) with every check passing;
        a failed check stops the release before this action runs.
        """
        if self.options.dry_run:
            return ActionResult(skipped=f"dry run: traffic stays on {self.previous_version}; the analysis runs on "
                                        "the candidate's own endpoint")
        if self.previous_version is None:
            return ActionResult(skipped="first deploy: no version serves yet, so there is nothing to split traffic "
                                        "with; the candidate gets all traffic at promote, after every step's checks")
        target, stable, canary = self._target(), self.live_slot, self.candidate_slot
        assert stable is not None and canary is not None
        self._wait_step_window()
        self._require_lock()
        self._require_no_restarts()
        self._record(Phase.SHIFTING)
        self.switched = True  # from here on a rollback must move traffic back
        with self._probed("shift", None) as probed:  # a split: no single version is expected
            result = target.set_traffic(TrafficSplit.split(stable, canary, weight))
        step_started_at = time.time()  # the split is in effect: the step's window starts here
        self.last_shift_at = time.monotonic()
        self.first_exposed_at = self.first_exposed_at or time.time()
        effective = result.traffic.weights.get(canary, 0)
        # The analysis measures the share the target really gives (pod counts round; see the JUnit), over
        # the step's window in Prometheus: from the moment the target said the split is in effect.
        self._publish(target.endpoints(canary), switched=False, canary_weight=effective,
                      step_started_at=step_started_at)
        return ActionResult([("release.shift.requested_weight", str(weight)),
                             ("release.shift.effective_weight", str(effective)),
                             ("release.shift.traffic", result.traffic.describe()),
                             ("release.shift.converged_ms", f"{result.converged_ms:.1f}"), *probed])

    def promote(self) -> ActionResult:
        """Canary: after the last step's window, all traffic to the new version (like a blue-green switch)."""
        if self.options.dry_run:
            return ActionResult(skipped="dry run: traffic stays where it is")
        self._wait_step_window()
        return self.switch("promote")

    def _wait_step_window(self) -> None:
        """The rest of the last step's window; a failure or an interrupt meanwhile stops the wait."""
        if self.last_shift_at is None:
            return
        shifted_at, window = self.last_shift_at, float(self.config.canary.step_window_s)
        left = window - (time.monotonic() - shifted_at)

        def aborted() -> str | None:
            elapsed = time.monotonic() - shifted_at
            if self.on_progress is not None and elapsed < window:  # a long idle wait, shown on the live line
                self.on_progress(ProgressSnapshot("step window", elapsed, window))
            return self.ledger.aborted()

        reason = poll_until(aborted, timeout_s=max(0.0, left), interval_s=0.2)
        if reason is not None:
            raise TargetError(f"release aborted during the canary step: {reason}")

    def _probed(self, action: str, expected_version: str | None, *,
                may_fail: bool = True) -> contextlib.AbstractContextManager[list[tuple[str, str]]]:
        """A probe through the public service around one traffic change (verifiers/probe.py): the yielded
        list holds its JUnit properties `release.<action>.probe.*` once the change is done.

        A failed probe request fails the action on the local target, whose router is ours to keep from
        dropping a request (the release then rolls back); elsewhere (kube-proxy, an ALB) it is reported
        only. A rollback (`may_fail` False) only reports: failing it would say the release could not be
        undone, while traffic is back on the old version. Off on a first deploy (no user was served
        before) and without release.version_header, like the switch's confirmation: without it the probe
        cannot tell when the change reached users.
        """
        settings = self.config.release
        if not settings.version_header or self.previous_version is None:
            return contextlib.nullcontext([])
        target = self._target()
        return probed_change(target.endpoints(None)[Role.SERVICE].url, action,
                             ProbeSettings(path=settings.version_path, version_header=settings.version_header),
                             expected_version=expected_version, fail_closed=may_fail and target.name == "local")

    def _confirm_served(self, service_url: str, version: str) -> float | None:
        """Wait until the public service answers as `version` N times in a row; the time it took, in ms.

        None when the check is off (release.version_header empty). Fails the switch at its deadline.
        """
        settings = self.config.release
        if not settings.version_header:
            return None
        started = time.monotonic()
        last = "no answer"
        with httpx.Client(base_url=service_url, timeout=5.0, trust_env=False) as client:
            def answers_in_a_row() -> bool | None:
                nonlocal last
                for _ in range(settings.confirm_responses):
                    try:
                        served = client.get(settings.version_path).headers.get(settings.version_header)
                        last = f"{settings.version_header}: {served}"
                    except httpx.HTTPError as exc:
                        served, last = None, type(exc).__name__
                    if served != version:
                        return None
                return True

            if poll_until(answers_in_a_row, timeout_s=self.config.stages.switch, interval_s=0.05) is None:
                raise TargetError(
                    f"the service at {service_url} still does not answer as {version} "
                    f"{self.config.stages.switch:g}s after the switch (last answer: {last}); traffic is "
                    "not where the target says it is")
        return (time.monotonic() - started) * 1000

    def finalize(self) -> ActionResult:
        if self.options.dry_run:
            return ActionResult(skipped="dry run: nothing to finalize")
        target = self._target()
        self._record(Phase.FINALIZING)
        keep_warm = self.config.release.keep_warm_s
        # The old version stays warm so that a rollback within this delay is instant; meanwhile the new
        # version is watched, and a decisive breach switches traffic back (WatchBreach, exit 1).
        watched = self._wait_keep_warm(keep_warm)
        self._require_lock()
        if self.promotion is None:
            raise TargetError("finalize found no promotion to finish; the switch did not complete")
        old_slot = self.promotion.retired_slot
        if old_slot is not None:
            target.scale_down(old_slot)
        self._record(Phase.PROMOTED)
        self.ledger.update_context(decision=Decision.PROMOTED)
        self._release_lock()
        retired = f"{old_slot} ({self.previous_version})" if old_slot else "nothing (the promotion replaced it)"
        return ActionResult([("release.finalize.keep_warm_s", f"{keep_warm:g}"),
                             ("release.finalize.scaled_down", retired), *watched])

    def _wait_keep_warm(self, seconds: float) -> list[tuple[str, str]]:
        """Keep-warm: watch the new version for release.bake_s of it, then wait out the rest; an abort stops
        both (TargetError). Returns the watch's JUnit properties; raises WatchBreach after a switch back."""
        started = time.monotonic()
        watched = self._watch_after_switch()
        left = seconds - (time.monotonic() - started)
        aborted = poll_until(self.ledger.aborted, timeout_s=max(0.0, left), interval_s=0.2)
        if aborted is not None:
            raise TargetError(f"release aborted during the keep-warm delay: {aborted}")
        return watched

    def _watch_after_switch(self) -> list[tuple[str, str]]:
        from releasegate.verifiers.watch import WatchStatus, prometheus_counts, watch

        settings, prefix = self.config.release, "release.finalize.watch"
        if not settings.watch_s or not self.watch_slos:
            return [(f"{prefix}.outcome", "off (release.bake_s = 0 or no release.watch_slos)")]
        if self.previous_version is None:
            return [(f"{prefix}.outcome", "off (a first deploy: no previous version to switch back to)")]
        # Counted from the switch: requests the verification sent the candidate directly do not count.
        switched = [r.finished for r in self.ledger.finished_items().values() if r.stage in ("switch", "promote")]
        since = max(switched, default=time.time())
        interval = settings.watch_interval_s or (self.config.local.scrape_interval_s
                                                 if self.options.target == "local" else 5.0)
        source = prometheus_counts(self._target().metrics_scope(), timeout_s=self.config.prometheus.timeout_s,
                                   version=self.options.version, since=since)
        try:
            outcome = watch(source, self.watch_slos, duration_s=settings.watch_s, interval_s=interval,
                            alpha=settings.watch_alpha, aborted=self.ledger.aborted, on_progress=self.on_progress)
        finally:
            source.metrics.close()
        properties = [(f"{prefix}.slos", ", ".join(slo.text for slo in self.watch_slos)),
                      (f"{prefix}.bake_s", f"{settings.watch_s:g}"), (f"{prefix}.interval_s", f"{interval:g}"),
                      (f"{prefix}.alpha", f"{settings.watch_alpha:g}"), *outcome.properties(prefix)]
        if outcome.status is WatchStatus.ABORTED:
            raise TargetError(f"release aborted during the keep-warm delay: {outcome.aborted}")
        if outcome.breach is not None:
            self._switch_back(outcome, properties, source.describe(), since)
        return properties

    def _switch_back(self, outcome: WatchOutcome, properties: list[tuple[str, str]], source: str,
                     since: float) -> None:
        """A decisive breach: traffic back to the old version, still warm, by the rollback's own _undo."""
        from releasegate.verifiers.watch import WatchBreach

        assert outcome.breach_at is not None
        looked_at = time.time() - (time.monotonic() - outcome.breach_at)  # the breaching look, wall clock
        with self._probed("finalize.switch_back", self.previous_version, may_fail=False) as probed:
            self._undo()
        properties += probed
        self.ledger.update_context(decision=Decision.ROLLED_BACK)
        to_old_s = self.back_on_stable_at - looked_at
        back_to = f"{self.previous_version} (slot {self.live_slot})"
        check = outcome.breach_outcome(subject=self.options.version, source=source,
                                       window=f"{looked_at - since:.1f}s since the switch")
        message = f"watch after the switch: {check.message}; switched back to {back_to} {to_old_s:.2f}s after that look"
        properties.append(("release.finalize.watch.time_to_switch_back_s", f"{to_old_s:.2f}"))
        # The finalize item carries the watch's properties (WatchBreach.properties); the rollback item says
        # that the watch switched back already.
        self.switched_back_by_watch = [("release.rollback.reason", f"finalize failed: {message}"),
                                       ("release.rollback.to_stable_s", f"{to_old_s:.2f}")]
        raise WatchBreach([replace(check, message=message)], properties)

    def rollback(self, failures: list[ItemRecord]) -> ActionResult:
        """Put everything back as it was before this release; skipped when the release was promoted."""
        if self.switched_back_by_watch is not None:  # finalize's watch switched back already (see finalize)
            return ActionResult(self.switched_back_by_watch)
        if self.ledger.read_context().decision is Decision.PROMOTED:
            return ActionResult(skipped="release promoted; nothing to roll back")
        if self.options.dry_run and not failures and self.provisioned:
            self._undo()
            self.ledger.update_context(decision=Decision.NOT_PROMOTED)
            return ActionResult([("release.rollback.reason", "dry run: candidate removed after verification")])
        if not self.provisioned:
            self._release_lock()
            self.ledger.update_context(decision=Decision.NOT_PROMOTED)
            return ActionResult(skipped="nothing was provisioned; nothing to roll back")
        users_saw_it = self.switched or self.first_exposed_at is not None
        # Only a rollback that moves traffic is probed: removing a candidate nobody reached changes nothing.
        with (self._probed("rollback", self.previous_version, may_fail=False) if self.switched
              else contextlib.nullcontext([])) as probed:
            self._undo()
        undecided = bool(failures) and all(f.outcome is Outcome.INCONCLUSIVE for f in failures)
        self.ledger.update_context(decision=Decision.INCONCLUSIVE if undecided else Decision.ROLLED_BACK)
        why = failures[0] if failures else None
        reason = f"{why.stage} failed: {why.message}" if why else "release did not complete"
        properties = [("release.rollback.reason", reason)]
        if why is not None and users_saw_it:
            # From the failing check's end to all traffic on the stable version: what users were exposed to.
            properties.append(("release.rollback.to_stable_s", f"{self.back_on_stable_at - why.finished:.2f}"))
        if self.first_exposed_at is not None and users_saw_it:
            properties.append(("release.rollback.exposed_s", f"{self.back_on_stable_at - self.first_exposed_at:.2f}"))
        return ActionResult(properties + probed)

    def _undo(self) -> None:
        target = self._target()
        self._record(Phase.ROLLING_BACK)
        if self.switched and self.live_slot is not None:
            promotion = self.promotion
            if promotion is not None and promotion.retired_slot is None and self.previous_version is not None:
                # The promotion replaced the old version in place (kubernetes canary): roll it out again.
                target.promote(promotion.live_slot, self.previous_version)
            else:
                if promotion is not None and promotion.retired_slot is not None and \
                        target.workload_status(promotion.retired_slot).ready_replicas == 0:
                    # An interrupt between finalize's scale-down and its decision: moving users to a slot that
                    # serves nobody would be an outage. The new version passed every check; a person decides.
                    raise TargetError(f"the previous version's slot {promotion.retired_slot} is already scaled "
                                      f"down, so traffic stays on {self.options.version} (slot {promotion.live_slot})")
                target.set_traffic(TrafficSplit.all_to(self.live_slot))  # one move, whatever the step was
            self.back_on_stable_at = time.time()
            self.switched, self.promotion = False, None
            endpoints = target.endpoints(None)
            self._publish(endpoints, switched=False, canary_weight=None, step_started_at=None)
            if self.previous_version is not None:
                self._confirm_served(endpoints[Role.SERVICE].url, self.previous_version)
        if self.candidate_slot is not None:
            target.remove(self.candidate_slot)
            if self.first_exposed_at is not None and not self.back_on_stable_at:
                self.back_on_stable_at = time.time()  # exposed at provision: removing it ends the exposure
        self.provisioned = False
        self._record(Phase.ROLLED_BACK)
        self._release_lock()

    def _require_lock(self) -> None:
        """Traffic moves only while this release holds the lock: fail closed once the keeper lost it."""
        lost = self.lock_keeper.lost if self.lock_keeper is not None else None
        if lost:
            raise TargetError(f"the release lock was lost, so traffic stays where it is: {lost}")

    def _require_no_restarts(self) -> None:
        """Traffic moves only to a candidate that stayed up through its verification: a pod that crashed and
        came back may have passed every check since (its restart hid the failure), so fail closed."""
        slot = self.candidate_slot
        if self.candidate_at_ready is None or slot is None:
            return
        restarted = self._target().workload_status(slot).restarted_since(self.candidate_at_ready)
        if restarted:
            raise TargetError(f"candidate {self.options.version} restarted during its verification "
                              f"({'; '.join(restarted)}), so traffic stays where it is: a version that crashes "
                              "under test is not promoted; see the pod's logs and last exit")

    def _release_lock(self) -> None:
        if self.lock_keeper is not None:
            self.lock_keeper.stop()  # first: no renewal may race the release
        if self.locked:
            self._target().release_lock(self.lock_holder)
            self.locked = False

    # -- the end of the run ------------------------------------------------------------------------
    def emergency_stop(self, reason: str) -> str | None:
        """After an interrupt or a crash: leave traffic on the verified live version, best effort.

        Returns a line describing a problem when something could not be undone.
        """
        if self.target is None:
            return None
        if self.ledger.read_context().decision is not None:
            return None
        try:
            if self.provisioned or self.switched:
                self._undo()
                self.ledger.update_context(decision=Decision.ROLLED_BACK, interrupted=reason)
            else:
                self._release_lock()
                self.ledger.update_context(decision=Decision.NOT_PROMOTED, interrupted=reason)
        except Exception as exc:
            return f"could not undo the release after {reason}: {exc}"
        return None

    def close(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):
                self._release_lock()
            self.target.close()
            self.target = None
